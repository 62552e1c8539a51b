// detail::frame_* — what the call gate reads of a frame handed to its
// eval-frame hook (PEP 523), the same way on every supported CPython.
//
// The hook receives a struct _PyInterpreterFrame, which CPython only
// describes in its internal headers, and whose layout changes with every
// minor version. What a public or unstable API gives (the code object and
// the instruction offset, PyUnstable_InterpreterFrame_* since 3.12) is read
// through it; the rest (globals, function, arguments) comes from one small
// header per version (frame_layout_3_NN.h), included by
// interpreter_frame.cpp only, so no other file is built with Py_BUILD_CORE.
// A new CPython version needs a new frame_layout file, nothing else here.
//
// Valid only for the frame the hook was given, before it runs; no GIL-free use.
#pragma once

#include <Python.h>

#include <string>

namespace modhost::detail {

// The globals the frame's code runs in (borrowed).
PyObject* frame_globals(struct _PyInterpreterFrame* frame) noexcept;
// The function object whose call built the frame (borrowed), or null when
// it was not built by a function call.
PyObject* frame_function(struct _PyInterpreterFrame* frame) noexcept;
// The code object the frame runs (borrowed: the frame holds it).
PyCodeObject* frame_code(struct _PyInterpreterFrame* frame) noexcept;
// True while no instruction of the frame has run: its arguments are still
// exactly as the call bound them.
bool frame_not_started(struct _PyInterpreterFrame* frame) noexcept;
// The frame's fast local at `index`, arguments first in co_varnames order
// (borrowed; null while unbound or when the slot holds no object).
PyObject* frame_fast_local(struct _PyInterpreterFrame* frame, int index) noexcept;
// Empty when frame_layout_3_NN.h matches the libpython that runs, else a
// sentence saying what differs (the call gate refuses to read frames then).
std::string frame_layout_mismatch();

}  // namespace modhost::detail
