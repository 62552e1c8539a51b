// CPython 3.14's _PyInterpreterFrame (Include/internal/pycore_interpframe_structs.h):
// the fields interpreter_frame.cpp reads that no public or unstable API
// exposes. Since 3.14 the function and the fast locals are _PyStackRefs,
// tagged pointers (the low bit says "no reference counted for this slot",
// both low bits a tagged int): read through CPython's own
// PyStackRef_AsPyObjectBorrow, which masks the tag, never as PyObject*.
#pragma once

#include <internal/pycore_interpframe.h>  // the struct and pycore_stackref.h
#include <internal/pycore_runtime.h>      // _PyRuntime.debug_offsets

#include <cstddef>
#include <string>

namespace modhost::detail::frame_layout {

// The object a stack reference points to (borrowed), or null for an unbound
// slot or a tagged int (no object).
inline PyObject* borrow(_PyStackRef ref) {
  if (PyStackRef_IsNull(ref) || PyStackRef_IsTaggedInt(ref)) return nullptr;
  return PyStackRef_AsPyObjectBorrow(ref);
}

inline PyObject* globals(_PyInterpreterFrame* frame) { return frame->f_globals; }
inline PyObject* function(_PyInterpreterFrame* frame) { return borrow(frame->f_funcobj); }
inline PyObject* fast_local(_PyInterpreterFrame* frame, int index) {
  return borrow(frame->localsplus[index]);
}
// PyUnstable_InterpreterFrame_GetLasti of a frame before its first
// instruction: as in 3.13, instr_ptr is the instruction about to run.
constexpr int lasti_before_start = 0;

// The offsets this header was compiled with against the ones the running
// libpython publishes for debuggers (_Py_DebugOffsets, since 3.13): a patch
// release that moved a field would otherwise be read silently wrong.
inline std::string mismatch() {
  const auto& running = _PyRuntime.debug_offsets;
  const auto& frame = running.interpreter_frame;
  if ((running.version >> 16) != (PY_VERSION_HEX >> 16))
    return "the running libpython is another minor version";
  if (frame.size != sizeof(_PyInterpreterFrame) ||
      frame.previous != offsetof(_PyInterpreterFrame, previous) ||
      frame.executable != offsetof(_PyInterpreterFrame, f_executable) ||
      frame.instr_ptr != offsetof(_PyInterpreterFrame, instr_ptr) ||
      frame.localsplus != offsetof(_PyInterpreterFrame, localsplus) ||
      frame.owner != offsetof(_PyInterpreterFrame, owner) ||
      frame.stackpointer != offsetof(_PyInterpreterFrame, stackpointer))
    return "_PyInterpreterFrame of the running libpython differs from its headers";
  return {};
}

}  // namespace modhost::detail::frame_layout
