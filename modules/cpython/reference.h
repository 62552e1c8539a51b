// modhost::steal / modhost::borrow — every owned CPython reference is a
// pybind11::object, and the call site says how it got it.
//
// The C API hands out two kinds of pointers: new references ("Return value:
// New reference" in its docs), which the caller must release, and borrowed
// ones, which it must not. A raw Py_INCREF/Py_DECREF pair written by hand
// goes wrong on the first early return or exception; wrapping the pointer in
// a pybind11::object right where it appears releases it on every path, and
// the word at the call site records which kind the API returned:
//
//   BAD:  PyObject* globals = PyFrame_GetGlobals(frame);   // new reference...
//         if (is_closed(globals)) return true;            // ...leaked here
//         Py_DECREF(globals);
//   GOOD: auto globals = modhost::steal(PyFrame_GetGlobals(frame));
//         if (is_closed(globals.ptr())) return true;
//
//   auto module = modhost::borrow(PyDict_GetItemString(modules, "json"));  // borrowed: +1 now
//   PyTuple_SET_ITEM(args, 0, modhost::borrow(item).release().ptr());     // a new reference the tuple steals
//
// Any PyObject-headed pointer works (PyFrameObject*, PyCodeObject*,
// PyTypeObject*...). Null stays null (a false object), except for
// steal_or_throw. Every function needs the GIL.
#pragma once

#include <pybind11/pytypes.h>  // Python.h first, as CPython requires

#include "modules/cpython/python_error.h"
#include "modules/cpython/visibility.h"

namespace modhost MODHOST_HIDDEN {

// Owns a new reference without adding one; null gives a null object.
template <class T = pybind11::object, class P>
T steal(P* new_reference) noexcept {
  return pybind11::reinterpret_steal<T>(pybind11::handle(reinterpret_cast<PyObject*>(new_reference)));
}

// Adds a reference to a borrowed pointer and owns that; null gives a null object.
template <class T = pybind11::object, class P>
T borrow(P* borrowed_reference) noexcept {
  return pybind11::reinterpret_borrow<T>(pybind11::handle(reinterpret_cast<PyObject*>(borrowed_reference)));
}

// steal() the result of a C API call that returns null with an exception set
// on failure; throws that exception as python_error on the spot.
template <class T = pybind11::object, class P>
T steal_or_throw(P* new_reference) {
  if (!new_reference) throw python_error::fetch();
  return steal<T>(new_reference);
}

}  // namespace modhost
