// detail::import_hook — how the cache learns of imports, without replacing
// anything python3 users can see.
//
// One C audit hook (PySys_AddAuditHook) watches two events CPython raises
// anyway: "exec", which importlib raises for the code object of every module
// it executes (source and .pyc alike; runpy for __main__), and "import" with
// a path, raised before an extension module is loaded. builtins.__import__,
// importlib.import_module, sys.meta_path, sys.path_hooks and the loaders stay
// python3's own, and no Python frame of modhost runs during an import.
//
// A loader of another kind (pytest's assertion rewriter, a plugin system's)
// that calls exec(code, module.__dict__) itself raises the same "exec"; its
// module is found by the file the code was compiled from (module_of_file).
//
// At "exec", before any of the module's code runs, the hook applies the load
// policy (`modhost.load` audit event, module roots, strict permissions:
// raising there aborts the import as a failing module would), notes the code
// and the stat of its file for the registry, and queues the module. Its
// imports are read from the code (bytecode_imports.h) and become graph edges
// once the module is settled: when its import finished and the cache is next
// asked (settle()), to the modules that were loaded by then. A first load
// that the module's top-level code makes by a call (importlib.import_module,
// __import__) is attributed to it from the frames at "exec". Recording never
// makes an import fail. One per process; audit hooks cannot be removed, so
// the hook does nothing once this object is gone.
#pragma once

#include <pybind11/pytypes.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "modules/cache_options.h"
#include "modules/internal/bytecode_imports.h"

namespace modhost::detail {

class python_helpers;
class registry;

class import_hook {
 public:
  import_hook(const python_helpers& helpers, registry& registry, const cache_options& options);
  ~import_hook();
  import_hook(const import_hook&) = delete;
  import_hook& operator=(const import_hook&) = delete;

  // Announces a load or reload (audit `event`) and enforces the load policy
  // on `origin` (a path or None); throws python_error (ImportError, or what
  // an audit hook raised) if refused.
  void check_load(const std::string& name, pybind11::handle origin, const char* event) const;
  // No module's first import is running on any thread: a reload may start.
  // Needs the GIL (it settles finished imports first).
  bool idle();
  // Brings the registry and the import graph up to date with the modules
  // executed since the last call: tracks them, gives them the code and
  // fingerprint of what ran, and records their imports. Cheap when nothing
  // was imported. Needs the GIL.
  void settle();
  // Called by settle() (under the GIL) when it finds a module whose first
  // import raised: the cache releases what such modules had acquired
  // (modules/acquisitions.h).
  void after_failed_import(std::function<void()> callback) { after_failed_import_ = std::move(callback); }
  // Records the imports `code` makes as `importer`'s dependencies (and the
  // names its from-imports bind), resolved against `globals`, to the
  // modules loaded now. The reload transaction calls it for what it ran.
  void record_imports(const std::string& importer, PyObject* code, PyObject* globals);
  // The code the import system executed for `name` while the cache reloaded
  // it through its loader (not a source the cache compiled), or none.
  pybind11::object take_reload_code(const std::string& name);

 private:
  struct load_policy;
  struct executed_module {
    std::string name;
    pybind11::object module;
    pybind11::object code;
    std::string importer;  // a module whose top-level code loaded it by a call, or ""
  };

  static int audit(const char* event, PyObject* args, void*);
  int on_exec(PyObject* code);
  int on_extension(PyObject* name, PyObject* path);
  // The globals a module code object is about to run in, from the frame
  // calling builtins.exec, or null when it is no import (user code's exec).
  PyObject* exec_globals(PyCodeObject* code, bool& from_runpy, bool& by_other_loader) const;
  // The namespace of the module about to run code compiled from `filename`
  // through a loader other than importlib's, or null.
  PyObject* module_of_file(PyObject* filename) const;
  std::string importer_by_call() const;
  // Raises the audit event `event`, then refuses by the load policy.
  void refuse_if_denied(const std::string& name, PyObject* origin, const char* event) const;
  // Throws ImportError if the load policy (roots, strict) refuses `origin`.
  void refuse_by_policy(const std::string& name, PyObject* origin) const;

  int check_in_subinterpreter(PyObject* file) const;
  static PyObject* open_code(PyObject* path, void*);
  int audit_refusal(const std::string& name, PyObject* path, const std::string& why) const;
  void refuse_unchecked_bytecode(const std::string& name, PyObject* globals, PyObject* code) const;

  const python_helpers& helpers_;
  registry& registry_;
  PyInterpreterState* interpreter_;  // the one the cache belongs to (not a subinterpreter)
  bytecode_opcodes opcodes_;
  std::unique_ptr<load_policy> policy_;
  pybind11::object call_with_frames_removed_;  // importlib._bootstrap's, the caller of exec for imports
  std::vector<std::string> importlib_files_;   // frames to look past for who imported
  std::vector<executed_module> pending_;       // executed, not settled yet
  pybind11::object main_code_;                 // __main__'s code: its imports are settled again and again
  std::uint64_t main_settled_at_ = ~0ull;
  std::map<std::string, pybind11::object> reload_codes_;
  std::function<void()> after_failed_import_;
};

}  // namespace modhost::detail
