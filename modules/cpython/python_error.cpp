#include "modules/cpython/reference.h"  // Python.h first, as CPython requires

#include "modules/cpython/python_error.h"

#include "modules/cpython/gil.h"

namespace py = pybind11;

namespace modhost {
namespace {

// str(obj) as UTF-8; never throws, never leaves a Python error set.
std::string to_string(PyObject* obj) {
  auto s = steal(obj ? PyObject_Str(obj) : nullptr);
  const char* text = s ? PyUnicode_AsUTF8(s.ptr()) : nullptr;
  if (!text) {
    PyErr_Clear();
    return "<unprintable>";
  }
  return text;
}

std::string qualified_type_name(PyObject* type) {
  auto qualname = steal(PyObject_GetAttrString(type, "__qualname__"));
  auto module = steal(PyObject_GetAttrString(type, "__module__"));
  PyErr_Clear();
  std::string name = qualname ? to_string(qualname.ptr()) : to_string(type);
  if (module && PyUnicode_Check(module.ptr())) {
    std::string mod = to_string(module.ptr());
    if (mod != "builtins") name = mod + "." + name;
  }
  return name;
}

std::string format_traceback(PyObject* exc) {
  auto traceback = steal(PyImport_ImportModule("traceback"));
  auto lines = steal(traceback ? PyObject_CallMethod(traceback.ptr(), "format_exception", "O", exc)
                               : nullptr);
  auto empty = steal(PyUnicode_FromString(""));
  auto joined = steal(lines && empty ? PyUnicode_Join(empty.ptr(), lines.ptr()) : nullptr);
  if (!joined) {
    PyErr_Clear();
    return {};
  }
  return to_string(joined.ptr());
}

// Takes the current exception out of the interpreter as one object carrying
// its traceback (what 3.12's PyErr_GetRaisedException returns): an instance,
// or the bare type if 3.11 could not normalize it. Null if none is set.
py::object take_raised_exception() {
#if PY_VERSION_HEX >= 0x030C0000
  return steal(PyErr_GetRaisedException());
#else
  PyObject *raw_type = nullptr, *raw_value = nullptr, *raw_traceback = nullptr;
  PyErr_Fetch(&raw_type, &raw_value, &raw_traceback);
  PyErr_NormalizeException(&raw_type, &raw_value, &raw_traceback);
  auto type = steal(raw_type), value = steal(raw_value), traceback = steal(raw_traceback);
  if (!value) return type;
  if (traceback) PyException_SetTraceback(value.ptr(), traceback.ptr());
  return value;
#endif
}

}  // namespace

// The exception object, released with the GIL wherever the last python_error
// copy dies (often a catch block on a thread that does not hold it).
struct python_error::holder {
  py::object exception;
  ~holder() {
    if (!Py_IsInitialized()) {  // finalization already freed it: only forget the pointer
      exception.release();
      return;
    }
    gil_acquire gil;
    exception = py::object();
  }
};

python_error::python_error(std::shared_ptr<holder> exc, std::string type_name,
                           std::string message, std::string traceback,
                           std::optional<int> exit_code)
    : error(message.empty() ? type_name : type_name + ": " + message),
      exception_(std::move(exc)),
      type_name_(std::move(type_name)),
      message_(std::move(message)),
      traceback_(std::move(traceback)),
      exit_code_(exit_code) {}

python_error python_error::fetch() {
  py::object exception = take_raised_exception();
  if (!exception) {
    PyErr_SetString(PyExc_SystemError, "modhost: an error was expected but none was set");
    exception = take_raised_exception();
  }
  PyObject* value = exception.ptr();
  PyObject* type = PyExceptionInstance_Check(value) ? reinterpret_cast<PyObject*>(Py_TYPE(value)) : value;

  std::string message = to_string(value);
  std::optional<int> exit_code;
  if (PyErr_GivenExceptionMatches(value, PyExc_SystemExit)) {
    auto code = steal(PyObject_GetAttrString(value, "code"));
    PyErr_Clear();
    if (!code || code.is_none()) {
      exit_code = 0;
      message.clear();
    } else if (PyLong_Check(code.ptr())) {
      exit_code = static_cast<int>(PyLong_AsLong(code.ptr()));
      PyErr_Clear();
      message.clear();
    } else {
      exit_code = 1;  // Python prints the object and exits with 1
      message = to_string(code.ptr());
    }
  }
  std::string type_name = qualified_type_name(type);
  std::string traceback = format_traceback(value);
  auto held = std::make_shared<holder>();
  held->exception = std::move(exception);
  python_error error(std::move(held), std::move(type_name), std::move(message), std::move(traceback), exit_code);
  error.locate();
  return error;
}

void python_error::locate() {
  PyObject* value = exception_->exception.ptr();
  if (!PyExceptionInstance_Check(value)) return;
  auto attribute = [](PyObject* of, const char* name) {
    auto found = steal(of ? PyObject_GetAttrString(of, name) : nullptr);
    PyErr_Clear();
    return found;
  };
  py::object file, line;
  if (PyErr_GivenExceptionMatches(value, PyExc_SyntaxError)) {
    file = attribute(value, "filename");
    line = attribute(value, "lineno");
  } else if (auto entry = steal(PyException_GetTraceback(value))) {
    for (auto next = attribute(entry.ptr(), "tb_next"); next && !next.is_none(); next = attribute(entry.ptr(), "tb_next"))
      entry = next;
    file = attribute(attribute(attribute(entry.ptr(), "tb_frame").ptr(), "f_code").ptr(), "co_filename");
    line = attribute(entry.ptr(), "tb_lineno");
  }
  if (file && PyUnicode_Check(file.ptr())) file_ = to_string(file.ptr());
  if (line && PyLong_Check(line.ptr())) {
    line_ = static_cast<int>(PyLong_AsLong(line.ptr()));
    PyErr_Clear();
  }
}

bool python_error::matches(const char* builtin_type_name) const {
  PyObject* builtins = PyEval_GetBuiltins();  // borrowed
  PyObject* type = builtins ? PyDict_GetItemString(builtins, builtin_type_name) : nullptr;  // borrowed
  return type && PyErr_GivenExceptionMatches(exception_->exception.ptr(), type);
}

void python_error::restore() const {
  PyObject* exc = exception_->exception.ptr();
  if (!PyExceptionInstance_Check(exc)) {  // a type 3.11 could not instantiate: raise it bare
    PyErr_SetNone(exc);
    return;
  }
#if PY_VERSION_HEX >= 0x030C0000
  PyErr_SetRaisedException(borrow(exc).release().ptr());  // steals the new reference
#else
  PyErr_Restore(borrow(Py_TYPE(exc)).release().ptr(), borrow(exc).release().ptr(),
                steal(PyException_GetTraceback(exc)).release().ptr());  // steals all three
#endif
}

}  // namespace modhost
