#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/cpython/time_limit.h"

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "modules/cpython/gil.h"
#include "modules/cpython/reference.h"

namespace py = pybind11;

namespace modhost {
namespace {

constexpr auto kRefire = std::chrono::milliseconds(100);

// Written in Python so the class reads exactly as scripts see it; executed
// in a namespace named "modhost", which is where scripts find it (the
// bindings export it), so __module__, repr() and pickling say modhost.
constexpr const char* kTimeLimitExceededSource = R"PY(
class TimeLimitExceeded(BaseException):
    """A time limit ran out: raised into the code that was running
    (modhost.time_limit, reload(timeout=...), load(timeout=...)). A
    BaseException, like KeyboardInterrupt, so a plugin's `except Exception`
    cannot swallow it; raised again every 100 ms until the scope ends."""
    def __init__(self, *args):
        super().__init__(*(args or ("the time limit was exceeded",)))
)PY";

// The class, once made. Written and read with the GIL held; atomic so that
// the watchdog's read needs no reasoning about the GIL's memory ordering.
std::atomic<PyObject*> g_time_limit_exceeded{nullptr};

class watchdog;
std::atomic<watchdog*> g_watchdog{nullptr};

// One watchdog thread for the process, started on first use. It sleeps until
// the earliest deadline and raises into the threads whose scope overran.
//
// fork() copies the state but not the thread, and may copy the mutex locked
// or the condition variable with a waiter that does not exist in the child
// (signalling it could then block forever). So the child gets a fresh
// watchdog holding the forking thread's deadlines, whose thread starts on
// the next arm() or, for a scope that spans the fork, in Python's
// after-fork hook (starting it in the pthread_atfork handler could take the
// GIL before CPython has remade it in the child).
class watchdog {
 public:
  static watchdog& instance() {
    static std::once_flag made;
    std::call_once(made, [] {
      g_watchdog = new watchdog;  // never destroyed: its thread outlives main
      pthread_atfork(&before_fork, &after_fork_in_parent, &after_fork_in_child);
    });
    return *g_watchdog.load();
  }

  // Has Python's after-fork hook start the child's thread. Once per process;
  // needs the GIL (which also serializes the check).
  static void restart_in_forked_children() {
    static bool registered = false;
    if (registered) return;
    registered = true;
    try {
      py::module_::import("os").attr("register_at_fork")(
          py::arg("after_in_child") = py::cpp_function([] { instance().start_if_armed(); }));
    } catch (const py::error_already_set&) {
      // Then a scope that spans a fork waits for the child's next time_limit.
    }
  }

  std::uint64_t arm(unsigned long thread, std::chrono::steady_clock::time_point deadline) {
    std::lock_guard<std::mutex> lock(mutex_);
    start_locked();
    std::uint64_t id = next_id_++;
    deadlines_[id] = {thread, deadline, false};
    wake_.notify_all();
    return id;
  }

  // Returns whether it fired.
  bool disarm(std::uint64_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = deadlines_.find(id);
    bool fired = it != deadlines_.end() && it->second.fired;
    if (it != deadlines_.end()) deadlines_.erase(it);
    return fired;
  }

  bool fired(std::uint64_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = deadlines_.find(id);
    return it != deadlines_.end() && it->second.fired;
  }

  // In a forked child: runs the thread if a scope open across the fork
  // needs it (otherwise the next arm() starts it).
  void start_if_armed() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!deadlines_.empty()) start_locked();
  }

 private:
  struct entry {
    unsigned long thread;
    std::chrono::steady_clock::time_point deadline;
    bool fired;
  };

  watchdog() = default;

  void start_locked() {
    if (running_) return;
    running_ = true;
    std::thread([this] { run(); }).detach();  // waits for mutex_, which the caller holds
  }

  static void before_fork() { g_watchdog.load()->mutex_.lock(); }
  static void after_fork_in_parent() { g_watchdog.load()->mutex_.unlock(); }
  static void after_fork_in_child() {
    watchdog* parent = g_watchdog.load();  // left locked, and leaked: see the class comment
    auto* child = new watchdog;
    child->next_id_ = parent->next_id_;  // ids of scopes still open stay valid
    const unsigned long self = PyThread_get_thread_ident();  // the one thread that came along
    for (const auto& [id, e] : parent->deadlines_)
      if (e.thread == self) child->deadlines_[id] = e;
    g_watchdog = child;
  }

  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      auto next = std::chrono::steady_clock::time_point::max();
      for (const auto& [id, e] : deadlines_) next = std::min(next, e.deadline);
      if (next == std::chrono::steady_clock::time_point::max()) {
        wake_.wait(lock);
        continue;
      }
      if (wake_.wait_until(lock, next) != std::cv_status::timeout) continue;
      for (auto& [id, e] : deadlines_) {
        if (e.deadline > std::chrono::steady_clock::now()) continue;
        e.fired = true;
        // Again and again until the scope ends: a plugin may catch it and carry on.
        e.deadline = std::chrono::steady_clock::now() + kRefire;
        std::uint64_t fired_id = id;
        unsigned long thread = e.thread;
        lock.unlock();  // taking the GIL may wait for the stuck thread's switch interval
        if (Py_IsInitialized()) raise_if_armed(fired_id, thread);
        lock.lock();
        break;  // the map may have changed meanwhile
      }
    }
  }

  void raise_if_armed(std::uint64_t id, unsigned long thread) {
    gil_acquire gil;
    // The scope may have ended while we waited; it disarms with the GIL
    // held, so with the GIL held here the check is conclusive.
    {
      std::lock_guard<std::mutex> check(mutex_);
      if (deadlines_.count(id) == 0) return;
    }
    // Made by the time_limit constructor, before any deadline could exist.
    PyThreadState_SetAsyncExc(thread, g_time_limit_exceeded.load());
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::map<std::uint64_t, entry> deadlines_;
  std::uint64_t next_id_ = 1;
  bool running_ = false;
};

}  // namespace

py::handle time_limit_exceeded() {
  if (PyObject* made = g_time_limit_exceeded.load()) return made;
  py::dict scope;
  scope["__name__"] = "modhost";
  scope["__builtins__"] = borrow(PyEval_GetBuiltins());
  auto code = steal_or_throw(Py_CompileString(kTimeLimitExceededSource, "<modhost>", Py_file_input));
  steal_or_throw(PyEval_EvalCode(code.ptr(), scope.ptr(), scope.ptr()));
  // Running the class body may let another thread take the GIL and make the
  // class too: the first one stored wins, so every caller gets one class.
  PyObject* made = PyDict_GetItemString(scope.ptr(), "TimeLimitExceeded");  // borrowed
  PyObject* expected = nullptr;
  if (made && g_time_limit_exceeded.compare_exchange_strong(expected, made))
    borrow(made).release();  // the process keeps this reference: the class must outlive every scope
  return g_time_limit_exceeded.load();
}

std::chrono::steady_clock::time_point deadline_after(std::chrono::milliseconds limit) noexcept {
  using clock = std::chrono::steady_clock;
  auto now = clock::now();
  if (limit <= std::chrono::milliseconds::zero()) return now;
  // Compared in milliseconds (a division, which cannot overflow) before limit is converted to nanoseconds.
  if (limit >= std::chrono::duration_cast<std::chrono::milliseconds>(clock::time_point::max() - now))
    return clock::time_point::max();
  return now + limit;
}

time_limit::time_limit(std::chrono::milliseconds limit)
    : id_(0), thread_(PyThread_get_thread_ident()) {
  time_limit_exceeded();  // made now, with the GIL, so the watchdog only has to read it
  watchdog::restart_in_forked_children();
  id_ = watchdog::instance().arm(thread_, deadline_after(limit));
}

time_limit::~time_limit() {
  if (watchdog::instance().disarm(id_)) {
    // Raised but perhaps not yet delivered: it must not hit the code after this scope.
    PyThreadState_SetAsyncExc(thread_, nullptr);
  }
}

bool time_limit::expired() const { return watchdog::instance().fired(id_); }

}  // namespace modhost
