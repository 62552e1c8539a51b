#include <Python.h>  // first, as CPython requires

#include "interpreter/time_limit.h"

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

namespace modhost {
namespace {

constexpr auto kRefire = std::chrono::milliseconds(100);

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
        if (Py_IsInitialized()) {
          PyGILState_STATE gil = PyGILState_Ensure();
          // The scope may have ended while we waited; it disarms with the GIL
          // held, so with the GIL held here the check is conclusive.
          bool still_armed;
          {
            std::lock_guard<std::mutex> check(mutex_);
            still_armed = deadlines_.count(fired_id) != 0;
          }
          PyObject* type = still_armed ? time_limit_exceeded_type() : nullptr;
          if (type) PyThreadState_SetAsyncExc(thread, type);
          PyGILState_Release(gil);
        }
        lock.lock();
        break;  // the map may have changed meanwhile
      }
    }
  }

  // modhost.TimeLimitExceeded (bindings), else KeyboardInterrupt.
  static PyObject* time_limit_exceeded_type() {
    PyObject* name = PyUnicode_FromString("modhost");
    PyObject* modhost = name ? PyImport_GetModule(name) : nullptr;  // may be null
    Py_XDECREF(name);
    PyObject* type = modhost ? PyObject_GetAttrString(modhost, "TimeLimitExceeded") : nullptr;
    Py_XDECREF(modhost);
    if (!type) {
      PyErr_Clear();
      Py_INCREF(PyExc_KeyboardInterrupt);  // no bindings: the closest builtin that `except Exception` lets through
      type = PyExc_KeyboardInterrupt;
    }
    Py_DECREF(type);  // borrowed from here on: the module keeps it alive
    return type;
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::map<std::uint64_t, entry> deadlines_;
  std::uint64_t next_id_ = 1;
  std::thread thread_;
};

}  // namespace

time_limit::time_limit(std::chrono::milliseconds limit)
    : id_(0), thread_(PyThread_get_thread_ident()) {
  id_ = watchdog::instance().arm(thread_, std::chrono::steady_clock::now() + limit);
}

time_limit::~time_limit() {
  if (watchdog::instance().disarm(id_)) {
    // Raised but perhaps not yet delivered: it must not hit the code after this scope.
    PyThreadState_SetAsyncExc(thread_, nullptr);
  }
}

bool time_limit::expired() const { return watchdog::instance().fired(id_); }

}  // namespace modhost
