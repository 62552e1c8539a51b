#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/request_checks.h"

#include "interpreter/python_error.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace modhost::detail {

void raise_error(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  throw python_error::fetch();
}

void raise_import_error(PyObject* type, const std::string& message, const std::string& name) {
  py::object error = py::reinterpret_borrow<py::object>(type)(message, "name"_a = name);
  PyErr_SetObject(type, error.ptr());
  throw python_error::fetch();
}

void check_name(const std::string& name) {
  if (name.empty()) raise_error(PyExc_ValueError, "Empty module name");
  if (name.find('\0') != std::string::npos) raise_error(PyExc_ValueError, "module name contains a NUL byte");
  if (name.front() == '.' || name.back() == '.' || name.find("..") != std::string::npos)
    raise_error(PyExc_ValueError, "malformed module name '" + name + "' (relative names are not accepted here)");
}

const char* refusal_reason(const std::string& name) {
  if (name == "sys") return "it holds the interpreter's own state (sys.modules, sys.path, hooks)";
  if (name == "builtins") return "every module's globals refer to it";
  if (name == "__main__") return "it is the running program; run the script again instead";
  if (name == "modhost") return "it is the cache itself";
  return nullptr;
}

}  // namespace modhost::detail
