// modhost::time_limit — bound how long Python code may run in a scope.
//
// While a time_limit lives, the thread that created it has a deadline; if
// the scope is still running then, a watchdog raises TimeLimitExceeded into
// that thread, the way KeyboardInterrupt arrives: at the next bytecode, and
// again every 100 ms until the scope ends. It is a BaseException, so a
// plugin's `except Exception` cannot swallow it. A plugin stuck in an endless
// loop is interrupted, a reload rolls back, and the host keeps running. Code
// blocked inside a C call (time.sleep, a socket read) is interrupted only
// when that call returns.
//
//   {
//     modhost::time_limit limit(std::chrono::milliseconds(200));
//     on_event(42);   // throws python_error (TimeLimitExceeded) if it runs too long
//   }
//
// Needs the GIL; nests (the earliest deadline wins).
#pragma once

#include <pybind11/pytypes.h>  // Python.h first, as CPython requires

#include <chrono>
#include <cstdint>

#include "modules/cpython/visibility.h"

namespace modhost MODHOST_API {

class time_limit {
 public:
  // Arms a deadline `limit` from now for the calling thread; a limit too
  // long for the clock (milliseconds::max()) never fires.
  explicit time_limit(std::chrono::milliseconds limit);
  // Disarms it; an exception raised but not yet delivered is withdrawn, so
  // nothing reaches the code after the scope.
  ~time_limit();
  time_limit(const time_limit&) = delete;
  time_limit& operator=(const time_limit&) = delete;
  time_limit(time_limit&&) = delete;  // the watchdog raises into the thread that armed it
  time_limit& operator=(time_limit&&) = delete;

  // The watchdog raised the exception into this scope.
  bool expired() const;

 private:
  std::uint64_t id_;
  unsigned long thread_;
};

// `limit` from now on the steady clock, or time_point::max() (never) when the
// sum would overflow it: steady_clock counts nanoseconds in 64 bits, so any
// limit beyond about 292 years (milliseconds::max() among them) would wrap
// into the past and fire at once. Every deadline made from a caller's
// duration goes through here.
std::chrono::steady_clock::time_point deadline_after(std::chrono::milliseconds limit) noexcept;

// The exception class time limits raise, `modhost.TimeLimitExceeded` in
// scripts (the bindings export this very object): a BaseException subclass
// whose message defaults to "the time limit was exceeded". Made on first use
// and kept for the process's life (borrowed). Needs the GIL.
pybind11::handle time_limit_exceeded();

}  // namespace modhost
