#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/request_checks.h"

#include <algorithm>
#include <cerrno>
#include <climits>

#include "modules/cpython/python_error.h"

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

python_error os_error(int error, const std::string& filename) {
  errno = error;
  PyErr_SetFromErrnoWithFilename(PyExc_OSError, filename.c_str());
  return python_error::fetch();
}

void check_name(const std::string& name) {
  if (name.empty()) raise_error(PyExc_ValueError, "Empty module name");
  if (name.find('\0') != std::string::npos) raise_error(PyExc_ValueError, "module name contains a NUL byte");
  if (name.front() == '.' || name.back() == '.' || name.find("..") != std::string::npos)
    raise_error(PyExc_ValueError, "malformed module name '" + name + "' (relative names are not accepted here)");
}

namespace {

// What every import runs through. A second copy of it (a reload re-executes
// the frozen code; an unload lets the next import load it again) has classes
// that sys.meta_path, sys.path_hooks and every module's __spec__ do not use:
// reloading _frozen_importlib broke every later import, reloading zipimport
// replaced the zipimporter class that sys.path_hooks no longer matches.
// importlib._bootstrap and importlib._bootstrap_external are the very same
// module objects under the names importlib gives them.
bool is_import_machinery(const std::string& name) {
  for (const char* machinery : {"_frozen_importlib", "_frozen_importlib_external", "importlib._bootstrap",
                                "importlib._bootstrap_external", "zipimport", "_imp"})
    if (name == machinery) return true;
  return false;
}

}  // namespace

void check_module_name(const std::string& name) {
  check_name(name);
  for (std::size_t start = 0; start <= name.size();) {
    std::size_t end = std::min(name.find('.', start), name.size());
    // The name itself is not repeated: it may be a megabyte long.
    if (end - start > NAME_MAX)
      raise_error(PyExc_ValueError, "module name of " + std::to_string(name.size()) + " bytes has a part of " +
                                        std::to_string(end - start) + " bytes, longer than any file name (" +
                                        std::to_string(NAME_MAX) + " bytes): no module can have it");
    start = end + 1;
  }
}

const char* refusal_reason(const std::string& name) {
  if (is_import_machinery(name))
    return "it is part of the import machinery (sys.meta_path, sys.path_hooks and every module's __spec__ use "
           "its classes): a second copy would break every later import";
  if (name == "sys") return "it holds the interpreter's own state (sys.modules, sys.path, hooks)";
  if (name == "builtins") return "every module's globals refer to it";
  if (name == "__main__") return "it is the running program; run the script again instead";
  if (name == "modhost") return "it is the cache itself";
  return nullptr;
}

}  // namespace modhost::detail
