// detail::import_hook — how the cache learns of imports.
//
// While it lives: builtins.__import__ and importlib.import_module call the
// originals, then note what was imported by whom (a dependency when the
// importer's top-level code runs, plus the names `from x import name`
// bound); source files load through TrackedSourceLoader, which reports the
// bytes it compiles; and a LoadGuard first on sys.meta_path applies the load
// policy (module roots, strict permissions, `modhost.load` audit events)
// before any code of a module runs. Recording never makes an import fail.
// One per process; its destructor puts every original back.
#pragma once

#include <pybind11/pytypes.h>

#include <functional>
#include <string>
#include <utility>

#include "modules/cache_options.h"

namespace modhost::detail {

struct python_helpers;
class registry;

class import_hook {
 public:
  import_hook(const python_helpers& helpers, registry& registry, const cache_options& options);
  ~import_hook();
  import_hook(const import_hook&) = delete;
  import_hook& operator=(const import_hook&) = delete;

  // Announces a load or reload (audit `event`) and enforces the load policy
  // on `origin`; raises ImportError (python_error) if the policy refuses.
  void check_load(const std::string& name, pybind11::handle origin, const char* event) const;
  // No import is running on any thread: a reload may start.
  static bool idle() noexcept;
  // Called (under the GIL, with the import's exception kept aside) after an
  // import raised: the cache releases what modules whose first import failed
  // had acquired (modules/acquisitions.h).
  void after_failed_import(std::function<void()> callback) { after_failed_import_ = std::move(callback); }

  // Called by the hooks (under the GIL): `name` was imported by the module
  // whose globals these are.
  void record_import(PyObject* name, PyObject* globals, PyObject* fromlist, PyObject* level);

 private:
  // The replacements of builtins.__import__ and importlib.import_module (vectorcall).
  static PyObject* import_(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames);
  static PyObject* import_module(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames);
  // note_source(name, path, source_bytes), called by TrackedSourceLoader.
  static PyObject* note_source(PyObject*, PyObject* const* args, Py_ssize_t nargs);
  bool runs_top_level(const std::string& importer, PyObject* globals);
  void failed_import() noexcept;  // runs after_failed_import_

  const python_helpers& helpers_;
  registry& registry_;
  pybind11::object check_;  // make_policy()'s check(name, origin, event)
  pybind11::object guard_;  // the LoadGuard on sys.meta_path
  pybind11::object original_import_;
  pybind11::object original_import_module_;
  std::function<void()> after_failed_import_;
};

}  // namespace modhost::detail
