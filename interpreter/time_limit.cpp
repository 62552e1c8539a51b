#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "interpreter/time_limit.h"

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "interpreter/gil.h"
#include "interpreter/reference.h"

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

// One watchdog thread for the process, started on first use. It sleeps until
// the earliest deadline and raises into the threads whose scope overran.
class watchdog {
 public:
  static watchdog& instance() {
    static watchdog* dog = new watchdog;  // never destroyed: its thread outlives main
    return *dog;
  }

  std::uint64_t arm(unsigned long thread, std::chrono::steady_clock::time_point deadline) {
    std::lock_guard<std::mutex> lock(mutex_);
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

 private:
  struct entry {
    unsigned long thread;
    std::chrono::steady_clock::time_point deadline;
    bool fired;
  };

  watchdog() : thread_([this] { run(); }) { thread_.detach(); }

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
  std::thread thread_;
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
