// modhost::gil_acquire / gil_release as a unit: host threads call Python
// while another thread has given the GIL up, and taking it again nests.
#include <gtest/gtest.h>
#include <pybind11/embed.h>

#include <thread>

#include "modules/cpython/gil.h"
#include "tests/test_support.h"

namespace py = pybind11;
using modhost::gil_acquire;
using modhost::gil_release;
using modhost::testing::eval;
using modhost::testing::exec;

TEST(Gil, AcquireOnAThreadThatHoldsItNests) {
  ASSERT_TRUE(PyGILState_Check());
  {
    gil_acquire outer;
    {
      gil_acquire inner;
      EXPECT_EQ(eval("6 * 7").cast<int>(), 42);
    }
    EXPECT_TRUE(PyGILState_Check());  // the inner guard did not give away what it did not take
    EXPECT_EQ(eval("6 * 7").cast<int>(), 42);
  }
  EXPECT_TRUE(PyGILState_Check());
}

TEST(Gil, AThreadPythonNeverSawCallsPythonWhileTheGilIsReleased) {
  exec("import threading\nseen_from = []\n");
  {
    gil_release released;
    EXPECT_FALSE(PyGILState_Check());
    std::thread([] {
      gil_acquire gil;
      exec("seen_from.append(threading.current_thread() is not threading.main_thread())\n");
    }).join();
  }
  EXPECT_TRUE(PyGILState_Check());
  EXPECT_EQ(py::str(eval("seen_from")).cast<std::string>(), "[True]");
}
