// CPython 3.11's _PyInterpreterFrame (Include/internal/pycore_frame.h): the
// fields interpreter_frame.cpp reads. 3.11 has no PyUnstable_InterpreterFrame
// API, so the code object and the instruction pointer come from here too.
#pragma once

#include <internal/pycore_frame.h>

namespace modhost::detail::frame_layout {

inline PyObject* globals(_PyInterpreterFrame* frame) { return frame->f_globals; }
inline PyObject* function(_PyInterpreterFrame* frame) {
  return reinterpret_cast<PyObject*>(frame->f_func);
}
inline PyObject* fast_local(_PyInterpreterFrame* frame, int index) { return frame->localsplus[index]; }
inline PyCodeObject* code(_PyInterpreterFrame* frame) { return frame->f_code; }
// prev_instr is the code unit before the next one to run: one before the
// first while nothing has run.
inline bool not_started(_PyInterpreterFrame* frame) {
  return frame->prev_instr == _PyCode_CODE(frame->f_code) - 1;
}

}  // namespace modhost::detail::frame_layout
