// CPython 3.15's _PyInterpreterFrame has 3.14's fields, in 3.14's order
// (Include/internal/pycore_interpframe_structs.h), read the same way; the
// offsets are checked against the running libpython's as for 3.14.
#pragma once

#include "modules/internal/frame_layout_3_14.h"
