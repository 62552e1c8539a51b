// detail::closed_gate as a unit: while one thread holds modules' gate
// closed (a reload), other threads' calls into those modules wait and then
// run the version the reload left; the closing thread, and threads it
// starts, go through.
#include <gtest/gtest.h>
#include <pybind11/embed.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "modules/cpython/gil.h"
#include "modules/internal/call_gate.h"
#include "tests/test_support.h"

namespace py = pybind11;
using modhost::detail::any_gate_closed;
using modhost::detail::closed_gate;
using modhost::testing::eval;
using modhost::testing::exec;
using modhost::testing::temp_dir;
using namespace std::chrono_literals;

namespace {

// Gives other threads time to reach the gate (and, if it were open, to get
// through it). Only ever makes a broken gate more likely to show; the
// outcome of a working one does not depend on it.
void let_other_threads_run() {
  modhost::gil_release released;
  std::this_thread::sleep_for(200ms);
}

// Waits without the GIL until `done` is true.
void wait_for(const std::atomic<bool>& done) {
  modhost::gil_release released;
  while (!done) std::this_thread::sleep_for(1ms);
}

std::string str(const py::handle& obj) { return py::str(obj).cast<std::string>(); }

// Modules in a temp dir on sys.path, imported by the test.
class CallGateTest : public ::testing::Test {
 protected:
  void SetUp() override { py::module_::import("sys").attr("path").attr("insert")(0, dir_.path().string()); }
  void TearDown() override { py::module_::import("sys").attr("path").attr("remove")(dir_.path().string()); }

  py::object module(const std::string& name, const std::string& source) {
    dir_.write(name + ".py", source);
    return py::module_::import(name.c_str());
  }

  temp_dir dir_;
};

// A thread of its own with a Python thread state; joined without the GIL.
class host_thread {
 public:
  template <class Fn>
  explicit host_thread(Fn fn)
      : thread_([this, fn] {
          modhost::gil_acquire gil;
          fn();
          finished_ = true;
        }) {}
  ~host_thread() { join(); }
  void join() {
    if (!thread_.joinable()) return;
    modhost::gil_release released;
    thread_.join();
  }
  const std::atomic<bool>& finished() const { return finished_; }

 private:
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

}  // namespace

TEST_F(CallGateTest, AnotherThreadsCallWaitsAndRunsTheVersionLeftByTheReload) {
  py::object plug = module("gate_plug", "VERSION = 1\ndef version():\n    return VERSION\n");
  std::atomic<bool> calling{false};
  int seen = 0;
  std::optional<host_thread> caller;
  {
    closed_gate gate({plug}, 1s);
    ASSERT_TRUE(gate.busy().empty());
    EXPECT_TRUE(any_gate_closed());
    caller.emplace([&] {
      calling = true;
      seen = py::module_::import("gate_plug").attr("version")().cast<int>();
    });
    wait_for(calling);
    let_other_threads_run();
    EXPECT_FALSE(caller->finished()) << "the call ran while the gate was closed";
    plug.attr("VERSION") = 2;  // what a reload would do
  }
  EXPECT_FALSE(any_gate_closed());
  caller->join();
  EXPECT_EQ(seen, 2);
}

TEST_F(CallGateTest, AFunctionCalledDirectlyWaitsAtItsFirstFrame) {
  // A caller that already holds the function (a `from plug import f` binding)
  // never touches the module object: the eval-frame hook holds it.
  py::object plug = module("gate_direct", "VERSION = 1\ndef version():\n    return VERSION\n");
  py::object version = plug.attr("version");
  std::atomic<bool> calling{false};
  int seen = 0;
  std::optional<host_thread> caller;
  {
    closed_gate gate({plug}, 1s);
    caller.emplace([&] {
      calling = true;
      seen = version().cast<int>();
    });
    wait_for(calling);
    let_other_threads_run();
    EXPECT_FALSE(caller->finished()) << "the call ran while the gate was closed";
    plug.attr("__dict__")["VERSION"] = 2;
  }
  caller->join();
  EXPECT_EQ(seen, 2);
}

TEST_F(CallGateTest, AdmitWaitsForAClosedModule) {
  // function_handle's path: admit() before it picks the function.
  py::object plug = module("gate_admit", "VERSION = 1\n");
  PyObject* namespace_ = PyModule_GetDict(plug.ptr());  // borrowed; plug keeps it alive
  std::atomic<bool> calling{false};
  int seen = 0;
  std::optional<host_thread> caller;
  {
    closed_gate gate({plug}, 1s);
    caller.emplace([&] {
      calling = true;
      modhost::detail::admit(namespace_);
      seen = py::reinterpret_borrow<py::object>(PyDict_GetItemString(namespace_, "VERSION")).cast<int>();
    });
    wait_for(calling);
    let_other_threads_run();
    EXPECT_FALSE(caller->finished()) << "admit() returned while the gate was closed";
    plug.attr("__dict__")["VERSION"] = 2;
  }
  caller->join();
  EXPECT_EQ(seen, 2);
}

TEST_F(CallGateTest, OtherModulesStayOpen) {
  py::object plug = module("gate_closed_one", "def f():\n    return 'closed'\n");
  module("gate_open_one", "def f():\n    return 'open'\n");
  std::string seen;
  closed_gate gate({plug}, 1s);
  host_thread caller([&] { seen = str(py::module_::import("gate_open_one").attr("f")()); });
  caller.join();
  EXPECT_EQ(seen, "open");
}

TEST_F(CallGateTest, TheClosingThreadGoesThrough) {
  py::object plug = module("gate_owner", "def f():\n    return 'through'\n");
  closed_gate gate({plug}, 1s);
  EXPECT_EQ(str(plug.attr("f")()), "through");
}

TEST_F(CallGateTest, ThreadsTheClosingThreadStartsGoThrough) {
  // Module code that starts a worker and waits for it must not deadlock.
  py::object plug = module("gate_starter", "def f():\n    return 'from worker'\n");
  closed_gate gate({plug}, 1s);
  exec("import threading, gate_starter\n"
       "worker_saw = []\n"
       "worker = threading.Thread(target=lambda: worker_saw.append(gate_starter.f()))\n"
       "worker.start()\n"
       "worker.join(30)\n"
       "worker_done = not worker.is_alive()\n");
  EXPECT_TRUE(eval("worker_done").cast<bool>()) << "a thread started by the closing thread was held";
  EXPECT_EQ(str(eval("worker_saw")), "['from worker']");
}

TEST_F(CallGateTest, ClosingWaitsForCallsAlreadyRunningElsewhere) {
  py::object plug = module("gate_running",
                           "import threading\n"
                           "entered, release = threading.Event(), threading.Event()\n"
                           "finished = []\n"
                           "def work():\n"
                           "    entered.set()\n"
                           "    release.wait()\n"
                           "    finished.append(True)\n");
  exec("import threading, gate_running\n"
       "running = threading.Thread(target=gate_running.work, name='runner')\n"
       "running.start()\n"
       "gate_running.entered.wait()\n");
  // Lets the running call finish, but only once the gate is closing. Takes
  // the event first: reading it from the module would wait at the gate.
  py::object release = plug.attr("release");
  std::atomic<bool> gate_returned{false};  // a broken gate may never be seen closed
  host_thread releaser([&] {
    {
      modhost::gil_release released;
      while (!any_gate_closed() && !gate_returned) std::this_thread::sleep_for(1ms);
    }
    release.attr("set")();
  });
  {
    closed_gate gate({plug}, 30s);
    gate_returned = true;
    EXPECT_TRUE(gate.busy().empty());
    EXPECT_EQ(py::len(plug.attr("finished")), 1u) << "the gate closed while the call still ran";
  }
  releaser.join();
  exec("running.join()\n");
}

TEST_F(CallGateTest, BusyNamesTheThreadStillRunningAndOpensAgain) {
  py::object plug = module("gate_busy",
                           "import threading\n"
                           "entered, release = threading.Event(), threading.Event()\n"
                           "def work():\n"
                           "    entered.set()\n"
                           "    release.wait()\n");
  exec("import threading, gate_busy\n"
       "busy_thread = threading.Thread(target=gate_busy.work, name='busy-worker')\n"
       "busy_thread.start()\n"
       "gate_busy.entered.wait()\n");
  {
    closed_gate gate({plug}, 20ms);
    ASSERT_EQ(gate.busy().size(), 1u);
    EXPECT_EQ(gate.busy()[0], "thread busy-worker frame gate_busy.work (line 5)");
    EXPECT_FALSE(any_gate_closed()) << "a gate that could not close must open again at once";
  }
  exec("gate_busy.release.set()\nbusy_thread.join()\n");
}

TEST_F(CallGateTest, ModuleTypeIsRestoredWhenTheGateOpens) {
  py::object plug = module("gate_type", "X = 1\n");
  {
    closed_gate gate({plug}, 1s);
    EXPECT_EQ(str(py::type::handle_of(plug).attr("__name__")), "module");  // repr() reads as usual
  }
  EXPECT_TRUE(py::type::handle_of(plug).is(eval("type(__import__('sys'))")));
}

TEST_F(CallGateTest, NestedClosesByOneThreadStack) {
  py::object first = module("gate_first", "X = 1\n");
  py::object second = module("gate_second", "X = 1\n");
  std::optional<closed_gate> outer(std::in_place, std::vector<py::object>{first}, 1s);
  {
    closed_gate inner({second}, 1s);
    EXPECT_TRUE(any_gate_closed());
  }
  EXPECT_TRUE(any_gate_closed()) << "closing the inner gate opened the outer one";
  std::atomic<bool> calling{false};
  std::optional<host_thread> caller;
  caller.emplace([&] {
    calling = true;
    py::module_::import("gate_first").attr("X");
  });
  wait_for(calling);
  let_other_threads_run();
  EXPECT_FALSE(caller->finished()) << "the outer module was open after the inner gate opened";
  outer.reset();
  EXPECT_FALSE(any_gate_closed());
  caller->join();
}

TEST_F(CallGateTest, AnotherThreadsCloseWaitsForTheFirstToOpen) {
  py::object first = module("gate_mine", "X = 1\n");
  module("gate_theirs", "X = 1\n");
  std::mutex order_mutex;
  std::vector<std::string> order;
  auto note = [&](const std::string& event) {
    std::lock_guard<std::mutex> lock(order_mutex);
    order.push_back(event);
  };
  std::atomic<bool> closing{false};
  std::optional<host_thread> other;
  {
    closed_gate gate({first}, 1s);
    other.emplace([&] {
      py::object theirs = py::module_::import("gate_theirs");
      closing = true;
      closed_gate second({theirs}, 1s);
      note("other closed");
    });
    wait_for(closing);
    let_other_threads_run();
    note("first opens");
  }
  other->join();
  EXPECT_EQ(order, (std::vector<std::string>{"first opens", "other closed"}));
}

TEST_F(CallGateTest, AnExceptionInFlightSurvivesOpening) {
  py::object plug = module("gate_error", "X = 1\n");
  {
    closed_gate gate({plug}, 1s);
    PyErr_SetString(PyExc_ValueError, "reload failed");  // a failed reload on its way out
  }
  ASSERT_NE(PyErr_Occurred(), nullptr);
  py::error_already_set error;
  EXPECT_TRUE(error.matches(PyExc_ValueError));
  EXPECT_EQ(str(error.value()), "reload failed");
}
