// modhost shutdown — the end of a process with plugins loaded: what modhost
// manages is taken down by modhost, before Python's own shutdown.
//
// Python's exit joins the non-daemon threads (threading._shutdown), runs the
// atexit callbacks, then finalizes. A plugin's thread acquired through
// modhost.acquire is stopped only by its release, so the join would wait for
// it forever; a C++ host's map of plugin callbacks registered through
// attach_release would hold Python objects past finalization. So the
// interpreter (interpreter/interpreter.cpp) calls unload_at_exit() first.
// Every function needs the GIL.
#pragma once

#include <string>
#include <vector>

namespace modhost {

class module_cache;

// Unloads, as module_cache::unload does, every tracked module that modhost
// manages: one with live acquisitions (modhost.acquire, attach_release) or an
// __unload__. Dependents go before their dependencies (a imports b: a
// first), each one's acquisitions released newest first, then its
// __unload__ called. Nothing may keep the exit waiting: holders are not
// looked for (a module other modules still reference is unloaded all the
// same), a release or an __unload__ that raises is printed through
// sys.unraisablehook and the rest goes on, and nothing released is acquired
// again. Last, whatever is still acquired (a module that could not be
// unloaded) is released too. Other modules (the stdlib, site-packages,
// modules without either) are left to Python's finalization, as python3
// leaves them. Returns one line per module that could not be unloaded (an
// audit hook vetoed it, it was being reloaded): "'plug' was not unloaded:
// PermissionError: ...". Never throws for a module's failure.
std::vector<std::string> unload_at_exit(module_cache& cache);

}  // namespace modhost
