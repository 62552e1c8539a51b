// detail::handle_safe_point — a C++ host's function_handle call as the
// autoreloader's safe point.
//
// The background autoreloader applies a changeset on the main thread at a
// bytecode boundary (a pending call), but not under a running frame of the
// changeset's own code. A C++ loop that calls a plugin through a
// function_handle is inside that code at every bytecode boundary: the only
// moments it is outside are between two calls, in C++, where no pending call
// runs. So while a changeset waits for the main thread to leave its code,
// the next handle call on the main thread made outside any Python frame
// runs the hook first. Otherwise a handle call costs one relaxed atomic load.
#pragma once

#include <atomic>

namespace modhost::detail {

extern std::atomic<bool> g_handle_safe_point_wanted;
inline bool handle_safe_point_wanted() noexcept {
  return g_handle_safe_point_wanted.load(std::memory_order_relaxed);
}

// The hook returns 0, or -1 with a Python error set (Ctrl-C while it ran),
// as a pending call does. `main_thread`: PyThread_get_thread_ident() of the
// thread it may run on. nullptr: none. Needs the GIL.
using handle_safe_point_hook = int (*)(void*);
void set_handle_safe_point_hook(handle_safe_point_hook hook, unsigned long main_thread);

// Runs the hook when the caller is that thread and outside any Python
// frame; throws python_error if the hook raised. Needs the GIL.
void offer_handle_safe_point();

}  // namespace modhost::detail
