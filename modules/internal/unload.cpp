#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/unload.h"

#include <algorithm>
#include <chrono>

#include "modules/cpython/python_error.h"
#include "modules/cpython/translate_errors.h"
#include "modules/internal/python_helpers.h"
#include "modules/internal/referrers.h"
#include "modules/internal/registry.h"
#include "modules/internal/request_checks.h"

namespace py = pybind11;

namespace modhost::detail {

namespace {

// The file's mtime is less than two seconds old (wall clock, as file times are).
bool changed_recently(const fingerprint& print) {
  auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  return now_ns - print.mtime_ns < 2'000'000'000;
}

// The module and its loaded submodules, deepest first (a submodule goes
// before its package).
std::vector<std::string> with_submodules(registry& modules, const std::string& name) {
  std::vector<std::string> names{name};
  std::string prefix = name + ".";
  for (const auto& other : modules.names())
    if (other.compare(0, prefix.size(), prefix) == 0) names.push_back(other);
  std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    auto depth = [](const std::string& s) { return std::count(s.begin(), s.end(), '.'); };
    return depth(a) != depth(b) ? depth(a) > depth(b) : a < b;
  });
  return names;
}

// The parent package's attribute that import binds to a submodule.
bool parent_attribute_holds(const std::string& name, PyObject* module) {
  auto dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  PyObject* parent = PyDict_GetItemString(PyImport_GetModuleDict(), name.substr(0, dot).c_str());  // borrowed
  if (!parent || !PyModule_Check(parent)) return false;
  PyObject* value = PyDict_GetItemString(PyModule_GetDict(parent), name.substr(dot + 1).c_str());  // borrowed
  return value == module;
}

referrer_query query_for(registry& modules, const std::vector<std::string>& names) {
  referrer_query query;
  for (const auto& n : names) {
    cache_entry* entry = modules.lookup(n);
    if (!entry) continue;
    query.modules.emplace_back(n, entry->module);
    bool parent_examined = false;
    auto dot = n.rfind('.');
    if (dot != std::string::npos)
      parent_examined = std::find(names.begin(), names.end(), n.substr(0, dot)) != names.end();
    // sys.modules, the cache, the query itself, and the parent's attribute
    // (when the parent is not examined too: then its dict counts as internal).
    query.accounted_refs.push_back(3 + (!parent_examined && parent_attribute_holds(n, entry->module.ptr()) ? 1 : 0));
  }
  query.atexit_callbacks = modules.helpers()->atexit_callbacks;
  query.audit_hooks = modules.helpers()->audit_hooks;
  for (auto* slot : modules.handles()) {
    if (!slot->function) continue;
    if (std::find(names.begin(), names.end(), slot->module) != names.end())
      query.cpp_handles.push_back(slot->module + "." + slot->attribute);
  }
  return query;
}

// At exit: calls the module's __unload__ (looked up in its __dict__, as
// call_unload_hook does) straight from C++, so a failure's traceback holds
// the user's frames only; the failure goes to sys.unraisablehook ("Exception
// ignored in: <function __unload__ ...>", as python3 reports an exception in
// __del__) and the exit goes on.
void call_unload_hook_reporting(py::handle module) {
  if (!PyModule_Check(module.ptr())) return;
  PyObject* hook = PyDict_GetItemString(PyModule_GetDict(module.ptr()), "__unload__");  // borrowed
  if (!hook) return;
  auto held = py::reinterpret_borrow<py::object>(hook);  // the call may delete it from the namespace
  auto result = py::reinterpret_steal<py::object>(PyObject_CallNoArgs(held.ptr()));  // new reference
  if (!result) PyErr_WriteUnraisable(held.ptr());  // prints the traceback, clears the error
}

// Marks names as being unloaded for exactly the unload's lifetime.
class unloading_claim {
 public:
  unloading_claim(registry& modules, const std::vector<std::string>& names) : modules_(modules), names_(names) {
    for (const auto& n : names_) modules_.unloading().insert(n);
  }
  ~unloading_claim() {
    for (const auto& n : names_) modules_.unloading().erase(n);
  }
  unloading_claim(const unloading_claim&) = delete;
  unloading_claim& operator=(const unloading_claim&) = delete;

 private:
  registry& modules_;
  std::vector<std::string> names_;
};

}  // namespace

std::vector<std::string> referrers(registry& modules, const std::string& name) {
  modules.require(name);
  auto query = query_for(modules, with_submodules(modules, name));
  return translate_errors([&] { return find_referrers(query); });
}

std::int64_t refcount(registry& modules, const std::string& name) {
  PyObject* module = modules.require(name)->module.ptr();
  std::int64_t count = Py_REFCNT(module) - 2;  // sys.modules and the cache
  if (parent_attribute_holds(name, module)) --count;
  return count;
}

unload_report unload(registry& modules, const python_helpers& helpers, const std::string& name, bool force,
                     bool at_exit) {
  cache_entry* entry = modules.require(name);
  if (const char* reason = refusal_reason(name))
    raise_error(PyExc_ValueError, "modhost refuses to unload '" + name + "': " + reason);
  if (!is_reloadable(entry->kind))
    raise_error(PyExc_ValueError, "cannot unload " + std::string(to_string(entry->kind)) + " module '" + name +
                                      "': its code stays in the process until it exits");
  std::vector<std::string> names = with_submodules(modules, name);
  for (const auto& n : names)  // unload('importlib') would take importlib._bootstrap with it
    if (const char* reason = refusal_reason(n))
      raise_error(PyExc_ValueError,
                  "modhost refuses to unload '" + name + "': its submodule '" + n + "' goes with it, and " + reason);
  for (const auto& n : names) {
    if (modules.reloading().count(n))
      raise_error(PyExc_RuntimeError, "cannot unload '" + n + "' while it is being reloaded");
    if (modules.unloading().count(n))
      raise_error(PyExc_RuntimeError,
                  "unload of '" + n + "' requested while '" + n + "' is being unloaded (from its own __unload__?)");
  }
  // Claimed before any Python code runs (the referrer scan, the audit hooks,
  // __unload__): a reload another thread requests meanwhile is refused.
  unloading_claim claim(modules, names);
  entry = modules.require(name);  // finding the submodules may have run Python code

  unload_report report;
  auto weak = py::reinterpret_steal<py::object>(PyWeakref_NewRef(entry->module.ptr(), nullptr));  // new reference
  if (!weak) PyErr_Clear();
  {
    auto query = query_for(modules, names);
    if (!at_exit) {  // a heap-wide scan per module, and at exit nobody waits for holders to let go
      auto holders = translate_errors([&] { return find_referrers(query); });
      if (!holders.empty() && !force) throw module_in_use_error(name, std::move(holders));
      report.lingering = std::move(holders);
    }
    for (const auto& [n, module] : query.modules) {
      cache_entry* e = modules.lookup(n);
      if (PySys_Audit("modhost.unload", "ss", n.c_str(), e ? e->path.c_str() : "") < 0)
        throw python_error::fetch();  // vetoed by an audit hook: nothing is unloaded
    }
    for (const auto& [n, module] : query.modules) {  // their own goodbyes; one that raises stops the unload
      if (at_exit)
        call_unload_hook_reporting(module);
      else
        helpers->call_unload_hook(module);
    }
  }
  PyObject* sys_modules = PyImport_GetModuleDict();  // borrowed
  for (const auto& n : names) {
    cache_entry* e = modules.lookup(n);
    if (!e) continue;
    // A later import must compile the source again: a bytecode cache written
    // for an edit that kept size and mtime would bring back stale code. The
    // .pyc checks the source's size and whole-second mtime only, so it also
    // goes when the source changed within the last two seconds: an edit
    // right after the unload (a plugin rewritten and loaded again) could
    // keep both, and the import would run the unloaded code again.
    if (e->kind == module_kind::source || e->kind == module_kind::package)
      if (e->print && (compare_file(*e->print, e->path) == file_change::changed || changed_recently(*e->print)))
        helpers->drop_bytecode_cache(e->path.string());
    if (parent_attribute_holds(n, e->module.ptr())) {
      auto dot = n.rfind('.');
      PyObject* parent = PyDict_GetItemString(sys_modules, n.substr(0, dot).c_str());  // borrowed
      PyDict_DelItemString(PyModule_GetDict(parent), n.substr(dot + 1).c_str());
    }
    PyDict_DelItemString(sys_modules, n.c_str());
    PyErr_Clear();
    for (auto* slot : modules.handles())
      if (slot->module == n) slot->function = py::object();
    modules.forget(n);
    report.unloaded.push_back(n);
  }
  // Calling the weakref (not PyWeakref_GetObject, deprecated since 3.13)
  // gives None once the module died.
  report.freed = weak && weak().is_none();
  return report;
}

}  // namespace modhost::detail
