// Transitional: the old private spelling of modhost::translate_errors, which
// is now public (interpreter/translate_errors.h) because modules/ uses it.
// Delete this file once modules/module_cache.cpp and interpreter/interpreter.cpp
// include the public header and call modhost::translate_errors.
#pragma once

#include "interpreter/translate_errors.h"

namespace modhost::detail {
using modhost::translate_errors;
}  // namespace modhost::detail
