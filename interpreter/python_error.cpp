#include <Python.h>  // first, as CPython requires

#include "interpreter/python_error.h"

namespace modhost {
namespace {

// Owned reference, released on scope exit. Local to this file: the only place
// here that needs to hold raw references across early returns.
struct owned {
  PyObject* p = nullptr;
  explicit owned(PyObject* steal) : p(steal) {}
  owned(const owned&) = delete;
  owned& operator=(const owned&) = delete;
  ~owned() { Py_XDECREF(p); }
  explicit operator bool() const { return p != nullptr; }
};

// str(obj) as UTF-8; never throws, never leaves a Python error set.
std::string to_string(PyObject* obj) {
  owned s(obj ? PyObject_Str(obj) : nullptr);
  const char* text = s ? PyUnicode_AsUTF8(s.p) : nullptr;
  if (!text) {
    PyErr_Clear();
    return "<unprintable>";
  }
  return text;
}

std::string qualified_type_name(PyObject* type) {
  owned qualname(PyObject_GetAttrString(type, "__qualname__"));
  owned module(PyObject_GetAttrString(type, "__module__"));
  PyErr_Clear();
  std::string name = qualname ? to_string(qualname.p) : to_string(type);
  if (module && PyUnicode_Check(module.p)) {
    std::string mod = to_string(module.p);
    if (mod != "builtins") name = mod + "." + name;
  }
  return name;
}

std::string format_traceback(PyObject* exc) {
  owned traceback(PyImport_ImportModule("traceback"));
  owned lines(traceback ? PyObject_CallMethod(traceback.p, "format_exception", "O", exc)
                        : nullptr);
  owned empty(PyUnicode_FromString(""));
  owned joined(lines && empty ? PyUnicode_Join(empty.p, lines.p) : nullptr);
  if (!joined) {
    PyErr_Clear();
    return {};
  }
  return to_string(joined.p);
}

}  // namespace

struct python_error::holder {
  PyObject* exception;  // owned
  ~holder() {
    if (!Py_IsInitialized()) return;  // the interpreter already freed it
    PyGILState_STATE state = PyGILState_Ensure();
    Py_XDECREF(exception);
    PyGILState_Release(state);
  }
};

python_error::python_error(std::shared_ptr<holder> exc, std::string type_name,
                           std::string message, std::string traceback,
                           std::optional<int> exit_code)
    : std::runtime_error(message.empty() ? type_name : type_name + ": " + message),
      exception_(std::move(exc)),
      type_name_(std::move(type_name)),
      message_(std::move(message)),
      traceback_(std::move(traceback)),
      exit_code_(exit_code) {}

python_error python_error::fetch() {
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  PyErr_Fetch(&type, &value, &tb);
  if (!type) {
    PyErr_SetString(PyExc_SystemError, "modhost: an error was expected but none was set");
    PyErr_Fetch(&type, &value, &tb);
  }
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb && value) PyException_SetTraceback(value, tb);
  Py_XDECREF(tb);
  owned type_ref(type);
  if (!value) {  // normalization failed: keep the type as the exception
    Py_INCREF(type);
    value = type;
  }
  auto exc = std::shared_ptr<holder>(new holder{value});

  std::string message = to_string(value);
  std::optional<int> exit_code;
  if (PyErr_GivenExceptionMatches(value, PyExc_SystemExit)) {
    owned code(PyObject_GetAttrString(value, "code"));
    PyErr_Clear();
    if (!code || code.p == Py_None) {
      exit_code = 0;
      message.clear();
    } else if (PyLong_Check(code.p)) {
      exit_code = static_cast<int>(PyLong_AsLong(code.p));
      PyErr_Clear();
      message.clear();
    } else {
      exit_code = 1;  // Python prints the object and exits with 1
      message = to_string(code.p);
    }
  }
  return python_error(std::move(exc), qualified_type_name(type), std::move(message),
                      format_traceback(value), exit_code);
}

bool python_error::matches(const char* builtin_type_name) const {
  PyObject* builtins = PyEval_GetBuiltins();  // borrowed
  PyObject* type = builtins ? PyDict_GetItemString(builtins, builtin_type_name) : nullptr;
  return type && PyErr_GivenExceptionMatches(exception_->exception, type);
}

void python_error::restore() const {
  PyObject* exc = exception_->exception;
  PyObject* type = reinterpret_cast<PyObject*>(Py_TYPE(exc));
  PyObject* tb = PyException_GetTraceback(exc);  // new reference, may be null
  Py_INCREF(type);
  Py_INCREF(exc);
  PyErr_Restore(type, exc, tb);  // steals all three
}

}  // namespace modhost
