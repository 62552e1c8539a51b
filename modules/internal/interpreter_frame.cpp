// The only file that sees CPython's internal frame layout (see
// interpreter_frame.h): Py_BUILD_CORE is needed to include pycore_frame.h,
// and it stays in this translation unit.
#define Py_BUILD_CORE 1
#include <Python.h>

#include "modules/internal/interpreter_frame.h"

// One file per CPython version with the fields no API exposes. CMake refuses
// any other version at configure time (CMakeLists.txt names the range).
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#include "modules/internal/frame_layout_3_11.h"
#elif PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
#include "modules/internal/frame_layout_3_12.h"
#elif PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030E0000
#include "modules/internal/frame_layout_3_13.h"
#elif PY_VERSION_HEX >= 0x030E0000 && PY_VERSION_HEX < 0x030F0000
#include "modules/internal/frame_layout_3_14.h"
#elif PY_VERSION_HEX >= 0x030F0000 && PY_VERSION_HEX < 0x03100000
#include "modules/internal/frame_layout_3_15.h"
#else
#error "modhost supports CPython 3.11 to 3.15: add modules/internal/frame_layout_3_NN.h for this version"
#endif
#ifdef Py_GIL_DISABLED
#error "modhost needs a CPython built with the GIL: the call gate relies on it to serialize threads"
#endif

namespace modhost::detail {

PyObject* frame_globals(_PyInterpreterFrame* frame) noexcept { return frame_layout::globals(frame); }

PyObject* frame_function(_PyInterpreterFrame* frame) noexcept {
  return frame_layout::function(frame);
}

PyObject* frame_fast_local(_PyInterpreterFrame* frame, int index) noexcept {
  return frame_layout::fast_local(frame, index);
}

std::string frame_layout_mismatch() {
#if PY_VERSION_HEX >= 0x030E0000
  std::string why = frame_layout::mismatch();
  if (!why.empty())
    why = "modhost's frame layout (modules/internal/frame_layout_3_" + std::to_string(PY_MINOR_VERSION) +
          ".h, compiled with " PY_VERSION ") does not match: " + why + "; rebuild modhost against it";
  return why;
#else
  return {};  // no published offsets to compare with before 3.13 (3.13: not checked yet)
#endif
}

#if PY_VERSION_HEX >= 0x030C0000
PyCodeObject* frame_code(_PyInterpreterFrame* frame) noexcept {
  PyObject* code = PyUnstable_InterpreterFrame_GetCode(frame);  // new reference
  Py_DECREF(code);  // the frame keeps its own reference as long as it exists
  return reinterpret_cast<PyCodeObject*>(code);
}

bool frame_not_started(_PyInterpreterFrame* frame) noexcept {
  return PyUnstable_InterpreterFrame_GetLasti(frame) == frame_layout::lasti_before_start;
}
#else
PyCodeObject* frame_code(_PyInterpreterFrame* frame) noexcept { return frame_layout::code(frame); }

bool frame_not_started(_PyInterpreterFrame* frame) noexcept {
  return frame_layout::not_started(frame);
}
#endif

}  // namespace modhost::detail
