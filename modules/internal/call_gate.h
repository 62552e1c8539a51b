// detail::closed_gate — while a reload re-executes modules, other threads
// stay out of them, so each of their calls runs one version entirely.
//
// Without it a thread calling into a module that another thread is
// reloading runs against a half-executed namespace (a deep reload even
// clears it first): new globals mid-call, missing names, or a version that
// is about to be rolled back. While the gate is closed, for every thread but
// the one that closed it:
//  - a Python frame whose globals are a closed module's namespace waits at
//    its entry (an eval-frame hook, installed only while a gate is closed).
//    If a deep reload patched the frame's function meanwhile, the call is
//    made again, so it runs the new code rather than the code its frame was
//    built from;
//  - getattr/setattr on the module object wait (its class is a ModuleType
//    subclass while closed; modules that already have a class of their own
//    are not switched);
//  - function_handle waits before it picks the function (admit()).
// A thread already running the modules' code is let through, or it would
// deadlock against itself; closing first waits for such threads to leave.
// Reading module.__dict__ directly is not covered.
//
// One thread at a time closes gates (nested closes by that thread stack);
// another thread that wants to close waits for it to finish.
// Every function needs the GIL.
#pragma once

#include <pybind11/pytypes.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace modhost::detail {

class closed_gate {
 public:
  // Closes the gate on `modules`, then waits up to `wait` until no other
  // thread runs their code. If one still does, the gate opens again at once
  // and busy() says who.
  closed_gate(const std::vector<pybind11::object>& modules, std::chrono::milliseconds wait);
  ~closed_gate();  // opens it: threads held at it go on
  closed_gate(const closed_gate&) = delete;
  closed_gate& operator=(const closed_gate&) = delete;

  // Where other threads still ran the modules' code when the wait ended,
  // e.g. "thread worker in plug.loop (plug.py:12)"; empty once closed.
  const std::vector<std::string>& busy() const noexcept { return busy_; }

 private:
  void close(const std::vector<pybind11::object>& modules, PyObject* gated_type,
             std::chrono::milliseconds wait);
  void open();
  std::size_t mark_ = 0;  // how many namespaces were closed before this gate
  bool open_ = false;
  std::vector<std::string> busy_;
};

extern std::atomic<bool> g_any_gate_closed;
// True while any gate is closed: one atomic load, inline because
// function_handle checks it on every call. No GIL needed.
inline bool any_gate_closed() noexcept { return g_any_gate_closed.load(std::memory_order_relaxed); }
// Returns once the calling thread may use the module whose namespace this
// is: at once unless another thread has it closed.
void admit(PyObject* module_namespace);

}  // namespace modhost::detail
