// modhost::translate_errors — pybind11's error_already_set becomes
// modhost::python_error, so callers of modhost see one exception type.
//
// Code that uses pybind11 inside (py::object calls throw error_already_set)
// wraps each public entry point in it:
//
//   std::string module_cache::name_of(...) {
//     return translate_errors([&] { return py::str(obj.attr("__name__")).cast<std::string>(); });
//   }
//
// Needs the GIL.
#pragma once

#include <pybind11/pytypes.h>  // Python.h first, as CPython requires

#include "modules/cpython/python_error.h"
#include "modules/cpython/visibility.h"

namespace modhost MODHOST_HIDDEN {

// Runs `fn` and returns what it returns; a pybind11::error_already_set from
// it is rethrown as python_error carrying the same exception object.
template <class Fn>
decltype(auto) translate_errors(Fn&& fn) {
  try {
    return fn();
  } catch (pybind11::error_already_set& e) {
    e.restore();
    throw python_error::fetch();
  }
}

}  // namespace modhost
