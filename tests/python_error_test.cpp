// modhost::python_error as a unit: what a C++ caller learns from a Python
// exception, and the exception object it keeps for raising it again.
#include <gtest/gtest.h>
#include <pybind11/embed.h>

#include <optional>
#include <string>
#include <thread>

#include "interpreter/interpreter.h"
#include "modules/cpython/gil.h"
#include "modules/cpython/python_error.h"
#include "tests/test_support.h"

namespace py = pybind11;
using modhost::python_error;
using modhost::testing::eval;
using modhost::testing::exec;

namespace {

python_error error_of(const std::string& code) {
  try {
    modhost::interpreter::current()->run_string(code, "<test>");
  } catch (const python_error& e) {
    return e;
  }
  throw std::logic_error("expected a python_error from: " + code);
}

bool ends_with(const std::string& text, const std::string& tail) {
  return text.size() >= tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

TEST(PythonError, CarriesTypeNameMessageAndTraceback) {
  python_error e = error_of("def check(value):\n"
                            "    raise ValueError(f'bad value {value}')\n"
                            "check(7)\n");
  EXPECT_EQ(e.type_name(), "ValueError");
  EXPECT_EQ(e.message(), "bad value 7");
  EXPECT_STREQ(e.what(), "ValueError: bad value 7");
  EXPECT_EQ(e.traceback().rfind("Traceback (most recent call last):\n", 0), 0u) << e.traceback();
  EXPECT_NE(e.traceback().find("line 2, in check"), std::string::npos) << e.traceback();
  EXPECT_TRUE(ends_with(e.traceback(), "ValueError: bad value 7\n")) << e.traceback();
}

TEST(PythonError, QualifiesTypesThatAreNotBuiltins) {
  EXPECT_EQ(error_of("import json; json.loads('{')").type_name(), "json.decoder.JSONDecodeError");
  EXPECT_EQ(error_of("class Custom(Exception):\n    pass\nraise Custom('x')").type_name(),
            "__main__.Custom");
}

TEST(PythonError, ExceptionWithoutMessageIsNamedByItsType) {
  python_error e = error_of("raise KeyboardInterrupt");
  EXPECT_EQ(e.message(), "");
  EXPECT_STREQ(e.what(), "KeyboardInterrupt");
}

TEST(PythonError, SystemExitGivesPythonsExitCode) {
  python_error none = error_of("raise SystemExit");
  EXPECT_EQ(none.exit_code(), 0);
  EXPECT_EQ(none.message(), "");
  python_error number = error_of("import sys; sys.exit(3)");
  EXPECT_EQ(number.exit_code(), 3);
  EXPECT_EQ(number.message(), "");
  python_error text = error_of("import sys; sys.exit('goodbye')");
  EXPECT_EQ(text.exit_code(), 1);  // python3 prints the object and exits with 1
  EXPECT_EQ(text.message(), "goodbye");
  EXPECT_FALSE(error_of("raise ValueError(3)").exit_code().has_value());
}

TEST(PythonError, MatchesBuiltinTypesAndTheirBases) {
  python_error e = error_of("{}['missing']");
  EXPECT_TRUE(e.matches("KeyError"));
  EXPECT_TRUE(e.matches("LookupError"));
  EXPECT_TRUE(e.matches("Exception"));
  EXPECT_FALSE(e.matches("ValueError"));
  EXPECT_FALSE(e.matches("NoSuchBuiltinError"));
  EXPECT_TRUE(error_of("class Mine(KeyError):\n    pass\nraise Mine").matches("KeyError"));
}

TEST(PythonError, FetchTakesTheErrorOutOfTheInterpreter) {
  PyErr_SetString(PyExc_RuntimeError, "set from C");
  python_error e = python_error::fetch();
  EXPECT_EQ(e.type_name(), "RuntimeError");
  EXPECT_EQ(e.message(), "set from C");
  EXPECT_EQ(PyErr_Occurred(), nullptr);  // the next C API call does not see it
}

TEST(PythonError, FetchWithNothingSetDescribesASystemError) {
  ASSERT_EQ(PyErr_Occurred(), nullptr);
  python_error e = python_error::fetch();
  EXPECT_EQ(e.type_name(), "SystemError");
  EXPECT_NE(e.message().find("an error was expected but none was set"), std::string::npos);
  EXPECT_EQ(PyErr_Occurred(), nullptr);
}

TEST(PythonError, RestoreRaisesTheSameExceptionObject) {
  exec("class Original(Exception):\n    pass\n"
       "def fail():\n    raise Original('first')\n");
  python_error e = error_of("try:\n    fail()\nexcept Original as caught_error:\n"
                            "    original = caught_error\n    raise\n");
  e.restore();
  ASSERT_NE(PyErr_Occurred(), nullptr);
  py::error_already_set raised;  // takes it back out, as pybind11 code would see it
  EXPECT_TRUE(raised.value().is(eval("original")));
  EXPECT_TRUE(raised.matches(eval("Original")));
  exec("del original");
}

TEST(PythonError, RestoredExceptionReachesPythonCodeAsItsOwnType) {
  exec("class Refused(LookupError):\n    pass\n");
  python_error e = error_of("raise Refused('no such plugin')");
  // Hand it back to Python the way the bindings do, through a C++ function.
  py::module_::import("__main__").attr("rethrow") = py::cpp_function([e]() -> py::object {
    e.restore();
    throw py::error_already_set();
  });
  exec("try:\n    rethrow()\nexcept Refused as error:\n    seen = (type(error).__name__, str(error))\n");
  EXPECT_EQ(py::str(eval("seen[0]")).cast<std::string>(), "Refused");
  EXPECT_EQ(py::str(eval("seen[1]")).cast<std::string>(), "no such plugin");
  exec("del rethrow");
}

TEST(PythonError, LastCopyFreesTheExceptionOnAThreadWithoutTheGil) {
  exec("freed = []\n"
       "class Tracked(Exception):\n"
       "    def __del__(self):\n"
       "        freed.append(True)\n");
  std::optional<python_error> error = error_of("raise Tracked('kept in C++')");
  EXPECT_EQ(eval("len(freed)").cast<int>(), 0);  // python_error keeps the object alive
  {
    modhost::gil_release released;  // the other thread must not find the GIL taken
    std::thread([&] { error.reset(); }).join();
  }
  EXPECT_EQ(eval("len(freed)").cast<int>(), 1);
}
