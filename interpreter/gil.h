// RAII guards for CPython's global interpreter lock.
//
// gil_acquire: any thread that is not known to hold the GIL, before calling
// into Python (PyGILState_Ensure / Release; nests).
// gil_release: a thread that holds the GIL and is about to block or run long
// C++ work, so other threads can run Python (PyEval_SaveThread / RestoreThread).
#pragma once

#include <Python.h>

namespace modhost {

class gil_acquire {
 public:
  gil_acquire() : state_(PyGILState_Ensure()) {}
  ~gil_acquire() { PyGILState_Release(state_); }
  gil_acquire(const gil_acquire&) = delete;
  gil_acquire& operator=(const gil_acquire&) = delete;

 private:
  PyGILState_STATE state_;
};

class gil_release {
 public:
  gil_release() : state_(PyEval_SaveThread()) {}
  ~gil_release() { PyEval_RestoreThread(state_); }
  gil_release(const gil_release&) = delete;
  gil_release& operator=(const gil_release&) = delete;

 private:
  PyThreadState* state_;
};

}  // namespace modhost
