// detail request checks — what the cache refuses before it touches anything,
// raised as the exception Python would raise for the same mistake.
#pragma once

#include <Python.h>

#include <string>

#include "modules/cpython/python_error.h"

namespace modhost::detail {

// Raises `type(message)` as a python_error.
[[noreturn]] void raise_error(PyObject* type, const std::string& message);
// Raises `type(message, name=name)`, as importlib raises ImportError.
[[noreturn]] void raise_import_error(PyObject* type, const std::string& message, const std::string& name);
// OSError(error, strerror(error), filename), as Python's os functions raise
// it: the errno picks the subclass (FileNotFoundError, NotADirectoryError,
// PermissionError, ...). Returned, not raised, so that a report can use its text.
python_error os_error(int error, const std::string& filename);
// ValueError for an empty name, a NUL byte or a relative/malformed dotted name.
void check_name(const std::string& name);
// check_name(), and a ValueError for a name no module file can have: a
// dotted part longer than a file name may be (NAME_MAX). For names that need
// not be loaded yet (watch, unwatch), where no ImportError would catch it.
void check_module_name(const std::string& name);
// Why a reload or unload must not touch this module, or nullptr if it may:
// the interpreter's own modules, the import machinery and modhost.
const char* refusal_reason(const std::string& name);

}  // namespace modhost::detail
