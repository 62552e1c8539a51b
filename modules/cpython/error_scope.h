// modhost::error_scope — keep the Python exception in flight across cleanup.
//
// Cleanup that calls the C API (restoring a module's __class__, dropping a
// reference whose finalizer runs Python, an audit hook) may run while an
// exception is on its way out, and most C API calls must not run with one
// set: they can clear it, replace it, or assert. An error_scope takes the
// current exception (if any) out of the interpreter when it is created and
// puts it back when it ends, replacing whatever the cleanup left set; so the
// caller sees the exception that was in flight, and the cleanup's own
// failures stay inside the scope (it still clears or handles them as it must).
// Like nanobind's error_scope.
//
//   BAD:  PyErr_Fetch(&t, &v, &tb); cleanup(); PyErr_Restore(t, v, tb);  // lost if cleanup throws
//   GOOD: { modhost::error_scope keep; cleanup(); }
//
// Needs the GIL for its whole life.
#pragma once

#include <pybind11/pytypes.h>  // Python.h first, as CPython requires

#include "modules/cpython/visibility.h"

namespace modhost MODHOST_HIDDEN {

class error_scope {
 public:
  // Takes the current exception, if any, out of the interpreter.
  error_scope() noexcept {
#if PY_VERSION_HEX >= 0x030C0000
    exception_ = pybind11::reinterpret_steal<pybind11::object>(PyErr_GetRaisedException());
#else
    PyObject *type = nullptr, *value = nullptr, *traceback = nullptr;
    PyErr_Fetch(&type, &value, &traceback);  // three new references (or nulls)
    type_ = pybind11::reinterpret_steal<pybind11::object>(type);
    value_ = pybind11::reinterpret_steal<pybind11::object>(value);
    traceback_ = pybind11::reinterpret_steal<pybind11::object>(traceback);
#endif
  }
  // Makes the taken exception current again (none: clears whatever is set).
  ~error_scope() {
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exception_.release().ptr());  // steals it; null clears
#else
    PyErr_Restore(type_.release().ptr(), value_.release().ptr(), traceback_.release().ptr());  // steals all three
#endif
  }
  error_scope(const error_scope&) = delete;
  error_scope& operator=(const error_scope&) = delete;
  error_scope(error_scope&&) = delete;  // bound to one scope: restoring twice would raise twice
  error_scope& operator=(error_scope&&) = delete;

  // Whether an exception was in flight when the scope began.
  bool saved() const noexcept {
#if PY_VERSION_HEX >= 0x030C0000
    return static_cast<bool>(exception_);
#else
    return static_cast<bool>(type_);
#endif
  }

 private:
#if PY_VERSION_HEX >= 0x030C0000
  pybind11::object exception_;
#else
  pybind11::object type_, value_, traceback_;
#endif
};

}  // namespace modhost
