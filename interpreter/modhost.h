// <modhost/modhost.h> — everything a C++ application uses of modhost.
//
// The headers included here are modhost's public API: the build installs
// them, and only them, under <prefix>/include/modhost/ (CMakeLists.txt,
// MODHOST_PUBLIC_HEADERS), and a public header may include only other
// public ones. Everything else (modules/internal/, the bindings, the CPython
// helpers the library keeps to itself) stays in the source tree.
#pragma once

// pybind11's embedding API: calling a function_handle, py::object, and the
// interpreter's pybind11 module registry all need it, and without it some
// of them compile and fail only at link time.
#include <pybind11/embed.h>

#include "interpreter/interpreter.h"
#include "modules/acquisitions.h"
#include "modules/autoreload.h"
#include "modules/cache_options.h"
#include "modules/cpython/gil.h"
#include "modules/cpython/log.h"
#include "modules/cpython/python_error.h"
#include "modules/cpython/time_limit.h"
#include "modules/cpython/visibility.h"
#include "modules/fingerprint.h"
#include "modules/function_handle.h"
#include "modules/module_cache.h"
#include "modules/module_types.h"
