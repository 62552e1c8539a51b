#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/shutdown.h"

#include <algorithm>
#include <exception>

#include "modules/cpython/python_error.h"
#include "modules/internal/acquisition_ledger.h"
#include "modules/internal/cache_access.h"
#include "modules/internal/import_graph.h"
#include "modules/internal/registry.h"
#include "modules/internal/request_checks.h"
#include "modules/internal/unload.h"
#include "modules/module_cache.h"

namespace py = pybind11;

namespace modhost {

namespace {

constexpr const char* during_exit = "exit";

// Every tracked module, dependents before their dependencies: the reverse of
// the order in which their code would run again. Taken over all of them, so
// that an edge through a module modhost leaves alone (a imports m imports b)
// still orders a before b.
std::vector<std::string> exit_order(detail::registry& modules, const std::vector<std::string>& names) {
  std::vector<std::string> order;
  auto units = modules.graph().reload_order(names, false);
  for (auto unit = units.rbegin(); unit != units.rend(); ++unit)
    for (auto name = unit->rbegin(); name != unit->rend(); ++name) order.push_back(*name);
  return order;
}

// `module` defines __unload__, read from its __dict__: a lazy module stays lazy.
bool defines_unload_hook(PyObject* module) {
  return PyModule_Check(module) && PyDict_GetItemString(PyModule_GetDict(module), "__unload__");  // borrowed
}

// What modhost takes down itself at exit: a module unload() could take
// (not sys, the import machinery, a built-in or extension module) that holds
// acquisitions or defines __unload__.
bool managed(detail::registry& modules, detail::acquisition_ledger& ledger, const std::string& name) {
  detail::cache_entry* entry = modules.lookup(name);
  if (!entry || detail::refusal_reason(name) || !is_reloadable(entry->kind)) return false;
  if (ledger.holds(name)) return true;
  return defines_unload_hook(entry->module.ptr());
}

// A module in sys.modules defines __unload__.
bool any_unload_hook() {
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  PyObject *key = nullptr, *module = nullptr;
  for (Py_ssize_t pos = 0; PyDict_Next(modules, &pos, &key, &module);)
    if (defines_unload_hook(module)) return true;
  return false;
}

}  // namespace

std::vector<std::string> unload_at_exit(module_cache& cache) {
  std::vector<std::string> not_unloaded;
  auto& modules = detail::cache_access::modules(cache);
  auto& ledger = detail::cache_access::ledger(cache);
  // Most programs leave nothing for modhost to take down: then nothing is
  // settled either (that reads every imported source and runs the cache's
  // Python helpers, which would double `modhost -c pass`).
  if (ledger.holders().empty() && !any_unload_hook()) return not_unloaded;
  std::vector<std::string> names = cache.modules();  // also settles the imports not yet recorded
  detail::registry::call_scope counted(modules);  // as a cache call: no autoreload under it
  detail::release_orphans(ledger, modules.reloading());
  for (const auto& name : exit_order(modules, names)) {
    if (!modules.find_tracked(name)) continue;  // went with its package
    try {
      if (!managed(modules, ledger, name)) continue;
      std::vector<std::string> owners = ledger.holders_under(name);
      bool reloading = std::any_of(owners.begin(), owners.end(), [&](const auto& n) { return modules.reloading().count(n); });
      if (!reloading) {  // released for good: at exit nothing is acquired again
        detail::released_acquisitions released(ledger, owners, during_exit);
        released.keep();
      }
      (void)detail::unload(modules, modules.helpers(), name, /*force=*/true, /*at_exit=*/true);
    } catch (const python_error& e) {
      not_unloaded.push_back("'" + name + "' was not unloaded: " + e.what());
    } catch (py::error_already_set& e) {
      not_unloaded.push_back("'" + name + "' was not unloaded: " + e.what());
    } catch (const std::exception& e) {
      not_unloaded.push_back("'" + name + "' was not unloaded: " + e.what());
    }
  }
  // What is still acquired (a module that was not unloaded, one being
  // reloaded) goes too: its thread would keep the exit waiting.
  detail::release_all(ledger, during_exit);
  return not_unloaded;
}

}  // namespace modhost
