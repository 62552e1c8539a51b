// See main_thread_call.h for why this exists.
#define Py_BUILD_CORE 1
#include <Python.h>

#if PY_VERSION_HEX < 0x030D0000
#include <internal/pycore_interp.h>  // PyInterpreterState.ceval.eval_breaker (3.11, 3.12)
#endif

#include "modules/internal/main_thread_call.h"

void modhost_wake_main_thread(void) {
#if PY_VERSION_HEX < 0x030D0000
  // The same store the GIL's drop request makes from a waiting thread
  // (SET_GIL_DROP_REQUEST): the main thread handles whatever is pending,
  // runs the queued calls and recomputes the flag for itself.
  PyInterpreterState* interp = PyInterpreterState_Main();
  if (interp) _Py_atomic_store_relaxed(&interp->ceval.eval_breaker, 1);
#else
  // 3.13+: Py_AddPendingCall() sets the main thread's own breaker bit.
#endif
}

int modhost_call_on_main_thread(int (*func)(void*), void* arg) {
  if (Py_AddPendingCall(func, arg) != 0) return -1;
  modhost_wake_main_thread();
  return 0;
}
