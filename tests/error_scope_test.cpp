// modhost::error_scope as a unit: the exception in flight when the scope
// began is the one set when it ends, whatever the cleanup inside raised.
#include <gtest/gtest.h>
#include <pybind11/embed.h>

#include <string>

#include "modules/cpython/error_scope.h"
#include "tests/test_support.h"

namespace py = pybind11;
using modhost::error_scope;
using modhost::testing::eval;
using modhost::testing::exec;

TEST(ErrorScope, TheExceptionInFlightSurvivesCleanupThatRaises) {
  exec("class Failure(Exception):\n    pass\nin_flight = Failure('reload failed')\n");
  PyErr_SetObject(eval("Failure").ptr(), eval("in_flight").ptr());
  {
    error_scope keep;
    EXPECT_TRUE(keep.saved());
    EXPECT_EQ(PyErr_Occurred(), nullptr);  // cleanup runs with no exception set
    // Cleanup that fails and leaves its own error behind.
    EXPECT_EQ(PyObject_GetAttrString(py::module_::import("sys").ptr(), "no_such_attribute"), nullptr);
  }
  ASSERT_NE(PyErr_Occurred(), nullptr);
  py::error_already_set raised;
  EXPECT_TRUE(raised.value().is(eval("in_flight")));  // the same object, not AttributeError
  exec("del in_flight");
}

TEST(ErrorScope, WithNothingInFlightCleanupErrorsStayInside) {
  ASSERT_EQ(PyErr_Occurred(), nullptr);
  {
    error_scope keep;
    EXPECT_FALSE(keep.saved());
    PyErr_SetString(PyExc_RuntimeError, "from cleanup");
  }
  EXPECT_EQ(PyErr_Occurred(), nullptr);
}

TEST(ErrorScope, KeepsTheTracebackOfTheExceptionInFlight) {
  exec("def failing():\n    raise KeyError('lost?')\n");
  try {
    eval("failing()");
    FAIL() << "no exception";
  } catch (py::error_already_set& e) {
    e.restore();
  }
  {
    error_scope keep;
    exec("cleanup_ran = True\n");  // Python code runs fine inside the scope
  }
  py::error_already_set raised;
  EXPECT_TRUE(raised.matches(PyExc_KeyError));
  EXPECT_NE(std::string(raised.what()).find("failing"), std::string::npos) << raised.what();
  EXPECT_TRUE(eval("cleanup_ran").cast<bool>());
}
