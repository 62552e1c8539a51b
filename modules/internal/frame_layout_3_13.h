// CPython 3.13's _PyInterpreterFrame (Include/internal/pycore_frame.h): the
// fields interpreter_frame.cpp reads that no public or unstable API exposes.
#pragma once

#include <internal/pycore_frame.h>

namespace modhost::detail::frame_layout {

inline PyObject* globals(_PyInterpreterFrame* frame) { return frame->f_globals; }
inline PyObject* function(_PyInterpreterFrame* frame) { return frame->f_funcobj; }
inline PyObject* fast_local(_PyInterpreterFrame* frame, int index) { return frame->localsplus[index]; }
// PyUnstable_InterpreterFrame_GetLasti of a frame before its first
// instruction: since 3.13 the frame points at the instruction about to run
// (instr_ptr), the first one.
constexpr int lasti_before_start = 0;

}  // namespace modhost::detail::frame_layout
