// detail unload, refcount, referrers — removing a module only when nothing
// still runs or holds its code (Erlang's soft purge), and saying who does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "modules/module_types.h"

namespace modhost::detail {

class python_helpers;
class registry;

// References to the module beyond sys.modules, the cache and its parent
// package's attribute.
std::int64_t refcount(registry& modules, const std::string& name);
// Who keeps the module, one of its submodules, or their code alive.
std::vector<std::string> referrers(registry& modules, const std::string& name);
// See module_cache::unload. `at_exit` (the interpreter's exit,
// modules/shutdown.h): holders are not looked for (nothing may keep the exit
// waiting), and an __unload__ that raises goes to sys.unraisablehook (with
// its own traceback, no modhost frame) without stopping the unload.
unload_report unload(registry& modules, const python_helpers& helpers, const std::string& name, bool force,
                     bool at_exit = false);

}  // namespace modhost::detail
