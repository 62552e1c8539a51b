// detail::translate_errors — pybind11's error_already_set becomes
// modhost::python_error, so callers of modhost see one exception type.
#pragma once

#include <pybind11/pytypes.h>

#include "interpreter/python_error.h"

namespace modhost::detail {

template <class Fn>
decltype(auto) translate_errors(Fn&& fn) {
  try {
    return fn();
  } catch (pybind11::error_already_set& e) {
    e.restore();
    throw python_error::fetch();
  }
}

}  // namespace modhost::detail
