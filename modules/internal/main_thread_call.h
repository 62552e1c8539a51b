// detail: run a function on the main thread at its next bytecode boundary,
// even while it spins in pure bytecode.
//
// Py_AddPendingCall() queues the call but, on CPython 3.9 to 3.12, only sets
// the eval breaker (the flag the bytecode loop checks at backward jumps,
// function entries and after calls) when the *calling* thread may run pending
// calls, i.e. only when called on the main thread: COMPUTE_EVAL_BREAKER()
// evaluates "calls_to_do && _Py_IsMainThread()" on the caller
// (bpo-40010; CPython issue gh-95820). Queued from a watcher thread, the call
// waits until the main thread next takes the GIL (time.sleep, I/O, a switch
// another Python thread asked for), so a loop that never releases the GIL
// never runs it. 3.13 signals the main thread's own breaker bit itself.
//
// A C file because CPython's internal headers (the eval breaker lives in
// PyInterpreterState) use C11 atomics that C++ cannot include.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

// Queues `func(arg)` for the main thread of the main interpreter and makes its
// next bytecode boundary look at the queue. Needs no GIL. Returns 0, or -1 if
// CPython's queue is full (try again later).
int modhost_call_on_main_thread(int (*func)(void*), void* arg);

// Makes the main thread's next bytecode boundary look at the pending-call
// queue again. For a caller that queued a call and has not seen it run: the
// main thread may have recomputed the breaker concurrently and cleared the
// flag set by modhost_call_on_main_thread(). Harmless when nothing is queued
// (the main thread finds nothing and recomputes the flag). Needs no GIL.
void modhost_wake_main_thread(void);

#ifdef __cplusplus
}
#endif
