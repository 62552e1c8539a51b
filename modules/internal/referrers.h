// detail::find_referrers — who keeps a set of modules, or their code, alive.
#pragma once

#include <pybind11/pytypes.h>

#include <cstdint>
#include <string>
#include <vector>

namespace modhost::detail {

struct referrer_query {
  // The modules examined together (a module and its submodules): name -> module.
  std::vector<std::pair<std::string, pybind11::object>> modules;
  // "plug.on_event" for each live C++ handle into them (gc cannot see these).
  std::vector<std::string> cpp_handles;
  // References to each module object that the cache accounts for elsewhere
  // (sys.modules, the cache, the parent package's attribute), same order.
  std::vector<std::int64_t> accounted_refs;
  // () -> the callables atexit will call, and () -> sys.addaudithook's hooks
  // or None (python_helpers): the interpreter keeps both where gc cannot
  // look. Empty: those hooks are not examined.
  pybind11::object atexit_callbacks;
  pybind11::object audit_hooks;
};

// Readable descriptions of every holder found outside the examined modules:
//   "module 'app' global 'plug'"
//   "module 'app' global 'hook' (function plug.hook)"
//   "module 'app' global 'handlers' (list holding function plug.hook)"
//   "thread main frame plug.run"
//   "thread worker frame app.work local 'w' (instance of plug.Widget)"
//   "instance of plug.Widget held by a dict"
//   "C++ handle plug.on_event"
//   "signal handler for SIGUSR1 (function plug.on_signal)"
//   "atexit callback (functools.partial of function plug.goodbye)"
//   "audit hook (function plug.audit)"
//   "sys.excepthook (function plug.hook)", "threading.setprofile hook (...)"
//   "trace function of thread worker (method plug.Tracer.trace)"
//   "2 other references to module 'plug' (from C++ or an object the scan does not reach)"
// Holders inside the examined modules (their own globals, their parent
// package's attribute for them) are not referrers. Needs the GIL.
std::vector<std::string> find_referrers(const referrer_query& query);

// "main", the threading.Thread's name, or "tid N" for a thread Python did not start.
std::string thread_name(long long ident);

}  // namespace modhost::detail
