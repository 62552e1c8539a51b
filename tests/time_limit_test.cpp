// modhost::time_limit as a unit: Python code that overruns its scope is
// interrupted with modhost.TimeLimitExceeded, and nothing else is.
#include <gtest/gtest.h>
#include <pybind11/embed.h>

#include <chrono>
#include <string>
#include <thread>

#include "interpreter/interpreter.h"
#include "modules/cpython/gil.h"
#include "modules/cpython/reference.h"
#include "modules/cpython/time_limit.h"
#include "tests/test_support.h"

namespace py = pybind11;
using modhost::python_error;
using modhost::time_limit;
using modhost::testing::eval;
using modhost::testing::exec;
using namespace std::chrono_literals;

namespace {

// Runs `code` in __main__. Straight through the C API rather than
// interpreter::run_string, whose import of __main__ passes modhost's import
// hook: that hook runs Python code of its own and clears what it raises, which
// would hide an exception still pending from a time limit.
void run(const std::string& code) {
  PyObject* main_namespace = PyModule_GetDict(PyImport_AddModule("__main__"));  // borrowed
  if (!modhost::steal(PyRun_String(code.c_str(), Py_file_input, main_namespace, main_namespace)))
    throw python_error::fetch();
}

// Blocks without the GIL until the watchdog has raised into this thread.
// expired() turns true just before the watchdog takes the GIL to raise; the
// GIL stays free a while longer so that it can. No Python runs on this
// thread meanwhile: what the watchdog raised is still pending afterwards.
void wait_until_raised(const time_limit& limit) {
  modhost::gil_release released;
  while (!limit.expired()) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(200ms);
}

std::string str(const py::handle& obj) { return py::str(obj).cast<std::string>(); }

}  // namespace

TEST(TimeLimit, InterruptsAnEndlessLoop) {
  time_limit limit(20ms);
  try {
    run("while True:\n    pass\n");
    FAIL() << "the loop ended by itself";
  } catch (const python_error& e) {
    EXPECT_EQ(e.type_name(), "modhost.TimeLimitExceeded");
    EXPECT_EQ(e.message(), "the time limit was exceeded");
  }
  EXPECT_TRUE(limit.expired());
}

TEST(TimeLimit, ExceptExceptionCannotSwallowIt) {
  time_limit limit(20ms);
  try {
    run("swallowed = False\n"
        "try:\n"
        "    while True:\n"
        "        pass\n"
        "except Exception:\n"
        "    swallowed = True\n");
    FAIL() << "the loop ended without an exception";
  } catch (const python_error& e) {
    EXPECT_EQ(e.type_name(), "modhost.TimeLimitExceeded");
    EXPECT_TRUE(e.matches("BaseException"));
    EXPECT_FALSE(e.matches("Exception"));
  }
  EXPECT_FALSE(eval("swallowed").cast<bool>());
}

TEST(TimeLimit, RaisedAgainIntoCodeThatCaughtIt) {
  exec("import modhost\ncaught = 0\n");
  time_limit limit(20ms);
  try {
    run("for attempt in range(2):\n"
        "    try:\n"
        "        while True:\n"
        "            pass\n"
        "    except modhost.TimeLimitExceeded:\n"
        "        caught += 1\n"
        "while True:\n"
        "    pass\n");
    FAIL() << "the last loop ended by itself";
  } catch (const python_error& e) {
    EXPECT_EQ(e.type_name(), "modhost.TimeLimitExceeded");
  }
  EXPECT_EQ(eval("caught").cast<int>(), 2);
}

TEST(TimeLimit, CodeThatFinishesInTimeRunsUndisturbed) {
  time_limit limit(60s);
  run("import time\n"
      "rounds = 0\n"
      "end = time.monotonic() + 0.2\n"  // long enough for a watchdog that fired early to be seen
      "while time.monotonic() < end:\n"
      "    rounds += 1\n"
      "finished = True\n");
  EXPECT_TRUE(eval("finished").cast<bool>());
  EXPECT_FALSE(limit.expired());
}

// now() + limit in nanoseconds wrapped into the past for anything beyond
// ~292 years, and the limit fired at once.
TEST(TimeLimit, ALimitTooLongForTheClockNeverFires) {
  const std::chrono::milliseconds thousand_years = std::chrono::hours(24 * 365 * 1000);
  for (auto forever : {std::chrono::milliseconds::max(), thousand_years}) {
    time_limit limit(forever);
    run("import time\n"
        "end = time.monotonic() + 0.2\n"
        "while time.monotonic() < end:\n"
        "    pass\n"
        "finished_forever = True\n");
    EXPECT_TRUE(eval("finished_forever").cast<bool>());
    EXPECT_FALSE(limit.expired());
  }
}

TEST(TimeLimit, DeadlinesSaturateInsteadOfOverflowing) {
  using clock = std::chrono::steady_clock;
  EXPECT_EQ(modhost::deadline_after(std::chrono::milliseconds::max()), clock::time_point::max());
  EXPECT_EQ(modhost::deadline_after(std::chrono::hours(24 * 365 * 1000)), clock::time_point::max());
  auto before = clock::now();
  auto soon = modhost::deadline_after(1s);
  EXPECT_GE(soon, before + 1s);
  EXPECT_LE(soon, clock::now() + 1s);
}

TEST(TimeLimit, RaisedButUndeliveredIsWithdrawnWhenTheScopeEnds) {
  {
    time_limit limit(10ms);
    wait_until_raised(limit);  // raised into this thread, which ran no bytecode since
  }
  run("after_scope = 'ran'\n");  // would raise TimeLimitExceeded if it were still pending
  EXPECT_EQ(str(eval("after_scope")), "ran");
}

TEST(TimeLimit, NestedLimitsTheEarliestDeadlineWins) {
  time_limit outer(60s);
  {
    time_limit inner(20ms);
    EXPECT_THROW(run("while True:\n    pass\n"), python_error);
    EXPECT_TRUE(inner.expired());
  }
  EXPECT_FALSE(outer.expired());
  run("still_running = True\n");  // the outer scope goes on
  EXPECT_TRUE(eval("still_running").cast<bool>());
}

TEST(TimeLimit, OnlyTheThreadThatArmedItIsInterrupted) {
  exec("import threading\n"
       "stop = threading.Event()\n"
       "outcome = []\n"
       "def spin():\n"
       "    try:\n"
       "        while not stop.is_set():\n"
       "            pass\n"
       "        outcome.append('finished')\n"
       "    except BaseException as error:\n"
       "        outcome.append(type(error).__name__)\n"
       "spinner = threading.Thread(target=spin)\n"
       "spinner.start()\n");
  {
    time_limit limit(10ms);
    wait_until_raised(limit);  // the spinner ran Python all along
  }
  exec("stop.set()\nspinner.join()\n");
  EXPECT_EQ(str(eval("outcome")), "['finished']");
}

TEST(TimeLimit, TimeLimitExceededIsTheClassScriptsSee) {
  py::handle type = modhost::time_limit_exceeded();
  EXPECT_TRUE(type.is(eval("__import__('modhost').TimeLimitExceeded")));
  EXPECT_EQ(str(type.attr("__module__")), "modhost");
  EXPECT_EQ(str(type.attr("__qualname__")), "TimeLimitExceeded");
  EXPECT_TRUE(PyObject_IsSubclass(type.ptr(), PyExc_BaseException));
  EXPECT_FALSE(PyObject_IsSubclass(type.ptr(), PyExc_Exception));
  EXPECT_EQ(str(type()), "the time limit was exceeded");
  EXPECT_EQ(str(type("plugin took too long")), "plugin took too long");
  exec("import pickle, modhost\n"
       "round_trip = pickle.loads(pickle.dumps(modhost.TimeLimitExceeded('x')))\n");
  EXPECT_TRUE(eval("type(round_trip)").is(type));
}
