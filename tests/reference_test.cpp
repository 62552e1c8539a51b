// modhost::steal / borrow / steal_or_throw as a unit: an owned reference is
// released exactly once, when its owner goes away.
#include <gtest/gtest.h>
#include <pybind11/embed.h>

#include "modules/cpython/python_error.h"
#include "modules/cpython/reference.h"
#include "tests/test_support.h"

namespace py = pybind11;
using modhost::borrow;
using modhost::steal;
using modhost::steal_or_throw;
using modhost::testing::eval;
using modhost::testing::exec;

namespace {

// Instances of Tracked append their name to `freed` when Python frees them.
void define_tracked() {
  exec("freed = []\n"
       "class Tracked:\n"
       "    def __init__(self, name):\n"
       "        self.name = name\n"
       "    def __del__(self):\n"
       "        freed.append(self.name)\n");
}

std::string freed() { return py::str(eval("freed")).cast<std::string>(); }

}  // namespace

TEST(Reference, StealOwnsANewReferenceAndReleasesItOnce) {
  define_tracked();
  {
    py::object made = steal(PyObject_CallFunction(eval("Tracked").ptr(), "s", "made"));  // new reference
    ASSERT_TRUE(made);
    EXPECT_EQ(freed(), "[]");
  }
  EXPECT_EQ(freed(), "['made']");  // nothing else held it: freed with its owner
}

TEST(Reference, BorrowKeepsTheObjectAliveAfterItsLenderDropsIt) {
  define_tracked();
  exec("lender = {'item': Tracked('lent')}\n");
  {
    PyObject* lent = PyDict_GetItemString(eval("lender").ptr(), "item");  // borrowed
    py::object kept = borrow(lent);
    exec("del lender['item']\n");
    EXPECT_EQ(freed(), "[]");
    EXPECT_EQ(py::str(kept.attr("name")).cast<std::string>(), "lent");
  }
  EXPECT_EQ(freed(), "['lent']");
}

TEST(Reference, NullStaysNull) {
  EXPECT_FALSE(steal(static_cast<PyObject*>(nullptr)));
  EXPECT_FALSE(borrow(static_cast<PyObject*>(nullptr)));
}

TEST(Reference, StealOrThrowTurnsAFailedCallIntoPythonError) {
  try {
    steal_or_throw(PyObject_GetAttrString(py::module_::import("sys").ptr(), "no_such_attribute"));
    FAIL() << "no exception";
  } catch (const modhost::python_error& e) {
    EXPECT_EQ(e.type_name(), "AttributeError");
    EXPECT_NE(e.message().find("no_such_attribute"), std::string::npos);
  }
  EXPECT_EQ(PyErr_Occurred(), nullptr);
  py::dict typed = steal_or_throw<py::dict>(PyDict_New());
  EXPECT_EQ(typed.size(), 0u);
}
