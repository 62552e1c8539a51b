#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/acquisitions.h"

#include <filesystem>
#include <memory>
#include <utility>

#include "modules/cpython/reference.h"
#include "modules/cpython/translate_errors.h"
#include "modules/internal/acquisition_ledger.h"
#include "modules/internal/cache_access.h"
#include "modules/internal/registry.h"
#include "modules/internal/request_checks.h"
#include "modules/module_cache.h"

namespace py = pybind11;

namespace modhost {

namespace {

using detail::cache_entry;
using detail::raise_error;

// An acquisition's release would never run for these: refuse to record it.
void check_owner(const cache_entry& entry) {
  if (const char* reason = detail::refusal_reason(entry.name))
    raise_error(PyExc_ValueError, "module '" + entry.name + "' is never reloaded or unloaded (" + reason +
                                      "), so what it acquires would never be released; pass module= naming "
                                      "the plugin it belongs to");
  if (!is_reloadable(entry.kind))
    raise_error(PyExc_ValueError, std::string(to_string(entry.kind)) + " module '" + entry.name +
                                      "' is never reloaded or unloaded, so what it acquires would never be released");
}

// The module whose code is calling: the innermost Python frame's globals
// must be the namespace of a tracked module.
cache_entry& calling_module(detail::registry& modules, const char* call) {
  PyObject* globals = PyEval_GetGlobals();  // borrowed: the innermost Python frame's
  std::string hint = std::string(call) + " was called from code of no tracked module";
  if (!globals) raise_error(PyExc_ValueError, hint + " (no Python code is running); pass module=");
  PyObject* name = PyDict_GetItemString(globals, "__name__");  // borrowed
  if (!name || !PyUnicode_Check(name))
    raise_error(PyExc_ValueError, hint + " (its globals have no __name__); pass module=");
  std::string n = py::str(name);
  cache_entry* entry = modules.reloading().count(n) ? modules.find_tracked(n) : modules.lookup(n);
  if (!entry || PyModule_GetDict(entry->module.ptr()) != globals)
    raise_error(PyExc_ValueError, hint + " (code with __name__ '" + n +
                                      "' whose globals are not that module's namespace, e.g. exec()); pass module=");
  check_owner(*entry);
  return *entry;
}

cache_entry& owner(detail::registry& modules, const std::string& module, const char* call) {
  if (module.empty()) return calling_module(modules, call);
  cache_entry& entry = *modules.require(module);
  check_owner(entry);
  return entry;
}

// "plug.py:12": where the innermost Python frame is.
std::string calling_place() {
  PyFrameObject* frame = PyEval_GetFrame();  // borrowed
  if (!frame) return "<C++>";
  auto code = steal(PyFrame_GetCode(frame));  // new reference
  py::object file = code.attr("co_filename");
  return std::filesystem::path(py::str(file).cast<std::string>()).filename().string() + ":" +
         std::to_string(PyFrame_GetLineNumber(frame));
}

// "plug.stop_worker", or the repr of a callable that has no qualified name.
std::string callable_name(py::handle callable) {
  py::object qualname = py::getattr(callable, "__qualname__", py::none());
  py::object module = py::getattr(callable, "__module__", py::none());
  if (py::isinstance<py::str>(qualname)) {
    std::string name = py::str(qualname);
    return py::isinstance<py::str>(module) ? py::str(module).cast<std::string>() + "." + name : name;
  }
  return py::repr(callable);
}

// `release` will be called with one argument: say so now, not at the next reload.
void check_callables(py::handle acquire, py::handle release) {
  if (!PyCallable_Check(acquire.ptr()))
    raise_error(PyExc_TypeError, "modhost.acquire: acquire must be callable, not " +
                                     std::string(Py_TYPE(acquire.ptr())->tp_name));
  if (!PyCallable_Check(release.ptr()))
    raise_error(PyExc_TypeError, "modhost.acquire: release must be callable, not " +
                                     std::string(Py_TYPE(release.ptr())->tp_name));
  py::object signature;
  try {
    signature = py::module_::import("inspect").attr("signature")(release);
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_ValueError) && !e.matches(PyExc_TypeError)) throw;
    return;  // no signature to check (some built-ins): it is called all the same
  }
  try {
    signature.attr("bind")(py::none());
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;
    raise_error(PyExc_TypeError, "modhost.acquire: release " + callable_name(release) + py::str(signature).cast<std::string>() +
                                     " must take one argument, what acquire() returned (e.g. lambda _: ...)");
  }
}

// Tells the incarnation of a module that acquired something from a later one
// imported under the same name.
py::object weak_reference_to(const cache_entry& entry) {
  return steal_or_throw(PyWeakref_NewRef(entry.module.ptr(), nullptr));  // new reference
}

// A script's acquisition: the result of the latest acquire(), for release.
struct script_acquisition {
  py::object acquire;
  py::object release;
  py::object result;
};

}  // namespace

py::object acquire(module_cache& cache, py::object acquire_fn, py::object release_fn, const std::string& module) {
  return translate_errors([&] {
    auto& modules = detail::cache_access::modules(cache);
    cache_entry& entry = owner(modules, module, "modhost.acquire");
    detail::acquisition item;
    item.module = entry.name;
    item.owner = weak_reference_to(entry);
    check_callables(acquire_fn, release_fn);
    std::string description = callable_name(acquire_fn) + "() at " + calling_place() + ", released by " +
                              callable_name(release_fn);
    auto state = std::make_shared<script_acquisition>(script_acquisition{acquire_fn, release_fn, py::none()});
    auto& ledger = detail::cache_access::ledger(cache);
    detail::release_orphans(ledger, modules.reloading());  // an earlier incarnation's go first
    state->result = acquire_fn();
    item.description = std::move(description);
    item.release = [state] {
      py::object result = std::exchange(state->result, py::none());
      state->release(result);
    };
    item.reacquire = [state] { state->result = state->acquire(); };
    ledger.record(std::move(item));
    return state->result;
  });
}

void attach_release(module_cache& cache, const std::string& what, std::function<void()> acquire,
                    std::function<void()> release, const std::string& module) {
  translate_errors([&] {
    auto& modules = detail::cache_access::modules(cache);
    auto& ledger = detail::cache_access::ledger(cache);
    detail::acquisition item;
    cache_entry& entry = owner(modules, module, "modhost::attach_release");
    item.module = entry.name;
    item.owner = weak_reference_to(entry);
    item.description = what + " at " + calling_place() + ", released by the host";
    detail::release_orphans(ledger, modules.reloading());  // an earlier incarnation's go first
    acquire();
    item.release = std::move(release);
    item.reacquire = std::move(acquire);
    ledger.record(std::move(item));
  });
}

std::vector<std::string> acquired(module_cache& cache, const std::string& module) {
  return translate_errors([&] {
    detail::cache_access::modules(cache).require(module);
    return detail::cache_access::ledger(cache).describe(module);
  });
}

}  // namespace modhost
