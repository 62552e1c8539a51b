// detail::python_helpers — the cache's typed boundary to its Python helpers.
//
// modules/internal/reload_support.py (importlib's steps of a reload) and
// deep_update.py (patching live objects) are embedded at build time. They
// run once, each in a namespace of its own, on the first cache call
// (import_hook::settle) or when autoreload is turned on (autoreload.cpp),
// not at start-up: compiling and running them was a third of the host
// program's start. Every function or class the C++ side uses is
// resolved then into a named handle, so a helper renamed or removed in a .py
// file fails on that first use, naming it (and in tests/python_helpers_test.cpp).
#pragma once

#include <pybind11/pytypes.h>

#include <memory>

namespace modhost::detail {

struct python_helper_handles {
  // --- reload_support.py
  pybind11::object find_spec;              // (name, module, dependent) -> spec, raising as importlib.reload does
  pybind11::object source_path;            // (spec) -> the .py file the cache compiles itself, or None
  pybind11::object read_source;            // (path) -> bytes, through io.open_code
  pybind11::object execute;                // (name, module, spec, code, fresh, run, old_code) -> the module now in sys.modules
  pybind11::object hand_over;              // (module, old_namespace): the new code's __reload__(old)
  pybind11::object call_unload_hook;       // (module): its __unload__(), if any
  pybind11::object drop_bytecode_cache;    // (path): removes the .pyc a same-size edit could fool
  pybind11::object atexit_callbacks;       // () -> [callable] atexit will call (gc cannot see them)
  pybind11::object audit_hooks;            // () -> sys.addaudithook's list of hooks, or None
  // --- deep_update.py
  pybind11::object undo;                   // Undo(): a log of changes to live objects; .rollback()
  pybind11::object deep_update;            // DeepUpdate(module, old, undo, old_code): .run_code(code), .finish(), .commit()
  pybind11::object rebind_from_imports;    // (module, old, importer, names, undo) -> ["importer.name"] rebound
  pybind11::object changed_names;          // (module, old) -> (changed, functions) frozensets, after a deep update
  // --- bytecode_imports.h
  pybind11::object top_level_reads;        // (code) -> frozenset of the names its top level reads
};

class python_helpers {
 public:
  // Runs the helpers if they have not run yet: throws python_error naming a
  // helper that is missing. Needs the GIL.
  void load() const;
  // The handles (load() first).
  const python_helper_handles* operator->() const;

 private:
  mutable std::unique_ptr<python_helper_handles> handles_;
};

}  // namespace modhost::detail
