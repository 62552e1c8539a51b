// modhost::function_handle — a C++ reference to a script function that
// survives reloads.
#pragma once

#include <pybind11/pytypes.h>

#include <memory>
#include <string>
#include <utility>

#include "modules/cpython/python_error.h"
#include "modules/cpython/visibility.h"

namespace modhost MODHOST_API {

class module_cache;

namespace detail {
struct handle_slot;
}  // namespace detail

// A stable C++ handle to a script function: bound to (module, attribute), it
// always calls the current version. After a reload it rebinds by itself, at
// the cost of a generation check. referrers() lists it as
// "C++ handle plug.on_event", because gc cannot see C++ references.
//
//   BAD:  py::object f = plug.attr("on_event");   // keeps calling the old code
//   GOOD: modhost::function_handle f(cache, "plug", "on_event");
class function_handle {
 public:
  function_handle(module_cache& cache, std::string module, std::string attribute);
  ~function_handle();
  function_handle(const function_handle&) = delete;
  function_handle& operator=(const function_handle&) = delete;

  // Calls the current version. Throws python_error: AttributeError naming the
  // module and attribute if it no longer exists, ImportError if the module
  // was unloaded, or whatever the function raises. Once the interpreter is
  // destroyed, modhost::error (no Python is left to carry a python_error);
  // destroying the handle then is safe.
  // (The call needs pybind11/pybind11.h or pybind11/embed.h included.)
  template <class... Args>
  pybind11::object operator()(Args&&... args) {
    pybind11::object function = current();
    try {
      return function(std::forward<Args>(args)...);
    } catch (pybind11::error_already_set& e) {
      e.restore();
      throw python_error::fetch();
    }
  }
  // The function object for this generation.
  pybind11::object current();
  const std::string& module_name() const noexcept;
  const std::string& attribute() const noexcept;

 private:
  std::shared_ptr<detail::handle_slot> slot_;
};

}  // namespace modhost
