// RAII guards for CPython's global interpreter lock: the one way modhost
// takes or gives up the GIL (not PyGILState_Ensure, Py_BEGIN_ALLOW_THREADS,
// PyEval_SaveThread or pybind11's gil_scoped_* written out by hand).
//
// gil_acquire: any thread that is not known to hold the GIL, before calling
// into Python (PyGILState_Ensure / Release; nests, and works on a thread
// Python has never seen, giving it a thread state for the guard's life).
// gil_release: a thread that holds the GIL and is about to block or run long
// C++ work, so other threads can run Python (PyEval_SaveThread / RestoreThread).
//
//   BAD:  std::unique_lock lock(mutex_); cv_.wait(lock);   // with the GIL: whoever
//                                                          // notifies may need it first
//   GOOD: { modhost::gil_release released; std::unique_lock lock(mutex_); cv_.wait(lock); }
//         // the lock is dropped before the GIL is taken back, so no lock-order inversion
//
// Both are bound to the scope and thread that made them: copy and move are
// deleted (a thread state restored on another thread corrupts the interpreter).
#pragma once

#include <Python.h>

#include "modules/cpython/visibility.h"

namespace modhost MODHOST_API {

class gil_acquire {
 public:
  // Waits for the GIL (at once if this thread already holds it).
  gil_acquire() noexcept : state_(PyGILState_Ensure()) {}
  // Gives it back if this guard took it; leaves it held if the thread already had it.
  ~gil_acquire() { PyGILState_Release(state_); }
  gil_acquire(const gil_acquire&) = delete;
  gil_acquire& operator=(const gil_acquire&) = delete;
  gil_acquire(gil_acquire&&) = delete;
  gil_acquire& operator=(gil_acquire&&) = delete;

 private:
  PyGILState_STATE state_;
};

class gil_release {
 public:
  // Gives up the GIL, which the calling thread must hold.
  gil_release() noexcept : state_(PyEval_SaveThread()) {}
  // Waits to take it back.
  ~gil_release() { PyEval_RestoreThread(state_); }
  gil_release(const gil_release&) = delete;
  gil_release& operator=(const gil_release&) = delete;
  gil_release(gil_release&&) = delete;
  gil_release& operator=(gil_release&&) = delete;

 private:
  PyThreadState* state_;
};

}  // namespace modhost
