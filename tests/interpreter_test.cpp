#include <gtest/gtest.h>
#include <pybind11/stl.h>

#include <thread>
#include <vector>

#include "interpreter/interpreter.h"
#include "modules/cpython/gil.h"
#include "tests/test_support.h"

namespace py = pybind11;
using modhost::interpreter;
using modhost::python_error;
using modhost::testing::eval;
using modhost::testing::exec;
using modhost::testing::temp_dir;

namespace {

interpreter& python() { return *interpreter::current(); }

python_error error_of(const std::string& code) {
  try {
    python().run_string(code);
  } catch (const python_error& e) {
    return e;
  }
  throw std::logic_error("expected a python_error from: " + code);
}

}  // namespace

TEST(Interpreter, RunStringExecutesInMain) {
  python().run_string("answer = 6 * 7");
  EXPECT_EQ(eval("answer").cast<int>(), 42);
  EXPECT_EQ(eval("__name__").cast<std::string>(), "__main__");
}

TEST(Interpreter, RunFileSetsFileAndScriptDirectory) {
  temp_dir dir;
  dir.write("helper_for_run_file.py", "VALUE = 'from helper'\n");
  auto script = dir.write("script.py",
                          "import helper_for_run_file\n"
                          "seen = (__file__, helper_for_run_file.VALUE)\n");
  python().run_file(script);
  EXPECT_EQ(eval("seen[0]").cast<std::string>(), script.string());
  EXPECT_EQ(eval("seen[1]").cast<std::string>(), "from helper");
  exec("import sys; sys.path.remove(" + py::repr(py::str(dir.path().string())).cast<std::string>() +
       ")");
}

TEST(Interpreter, RunFileMissingRaisesFileNotFound) {
  try {
    python().run_file("/nonexistent/modhost/script.py");
    FAIL() << "no exception";
  } catch (const python_error& e) {
    EXPECT_EQ(e.type_name(), "FileNotFoundError");
    EXPECT_NE(e.message().find("/nonexistent/modhost/script.py"), std::string::npos);
  }
}

TEST(Interpreter, RunModuleUsesRunpySemantics) {
  temp_dir dir;
  dir.write("runnable_mod.py",
            "import sys\n"
            "RESULT = (__name__, sys.argv[0])\n"
            "sys.modules['__main__'].run_module_result = RESULT\n");
  exec("import sys; sys.path.insert(0, " +
       py::repr(py::str(dir.path().string())).cast<std::string>() + ")");
  auto saved_argv = eval("list(sys.argv)");
  python().run_module("runnable_mod");
  auto result = eval("run_module_result");
  EXPECT_EQ(result[py::int_(0)].cast<std::string>(), "__main__");
  EXPECT_EQ(result[py::int_(1)].cast<std::string>(), (dir.path() / "runnable_mod.py").string());
  py::module_::import("sys").attr("argv") = saved_argv;
  exec("sys.path.pop(0)");
}

TEST(Interpreter, RunModuleMissingExitsLikePythonDashM) {
  try {
    python().run_module("no_such_module_anywhere");
    FAIL() << "no exception";
  } catch (const python_error& e) {  // python3 -m: message on stderr, exit status 1
    EXPECT_EQ(e.exit_code(), 1);
    // Named after this program, as python3 names itself (runpy would say sys.executable).
    EXPECT_EQ(e.message(),
              std::filesystem::read_symlink("/proc/self/exe").string() + ": No module named no_such_module_anywhere");
  }
}

TEST(Interpreter, SysArgvComesFromConfig) {
  auto argv = eval("__import__('sys').argv").cast<std::vector<std::string>>();
  ASSERT_GE(argv.size(), 3u);
  EXPECT_EQ(argv[1], "--flag");
  EXPECT_EQ(argv[2], "value");
}

TEST(Interpreter, ErrorCarriesTypeMessageAndTraceback) {
  auto e = error_of("def inner():\n    raise KeyError('missing key')\n\ndef outer():\n    inner()\n\nouter()\n");
  EXPECT_EQ(e.type_name(), "KeyError");
  EXPECT_EQ(e.message(), "'missing key'");
  EXPECT_NE(e.traceback().find("in outer"), std::string::npos) << e.traceback();
  EXPECT_NE(e.traceback().find("in inner"), std::string::npos) << e.traceback();
  EXPECT_NE(e.traceback().find("KeyError: 'missing key'"), std::string::npos);
  EXPECT_STREQ(e.what(), "KeyError: 'missing key'");
  EXPECT_TRUE(e.matches("LookupError"));
  EXPECT_FALSE(e.exit_code().has_value());
  EXPECT_FALSE(PyErr_Occurred()) << "the error must be taken out of the interpreter";
}

TEST(Interpreter, ErrorNamesNonBuiltinTypesWithTheirModule) {
  auto e = error_of("import json\njson.loads('{')");
  EXPECT_EQ(e.type_name(), "json.decoder.JSONDecodeError");
}

TEST(Interpreter, SyntaxErrorIsReported) {
  auto e = error_of("def broken(:\n  pass\n");
  EXPECT_EQ(e.type_name(), "SyntaxError");
}

TEST(Interpreter, SystemExitMapsToExitCode) {
  EXPECT_EQ(error_of("raise SystemExit(7)").exit_code(), 7);
  EXPECT_EQ(error_of("raise SystemExit").exit_code(), 0);
  EXPECT_EQ(error_of("import sys; sys.exit(None)").exit_code(), 0);
  auto with_text = error_of("raise SystemExit('fatal: no config')");
  EXPECT_EQ(with_text.exit_code(), 1);
  EXPECT_EQ(with_text.message(), "fatal: no config");
  EXPECT_EQ(interpreter::exit_code_of([] { python().run_string("raise SystemExit(5)"); }), 5);
  EXPECT_EQ(interpreter::exit_code_of([] { python().run_string("pass"); }), 0);
}

TEST(Interpreter, UncaughtKeyboardInterruptExitsWith130LikePython3) {
  // python3's status when it cannot die by SIGINT; a subclass is an ordinary
  // uncaught exception (1), as in python3.
  EXPECT_EQ(interpreter::exit_code_of([] { python().run_string("raise KeyboardInterrupt"); }),
            interpreter::keyboard_interrupt_exit_code);
  EXPECT_EQ(interpreter::keyboard_interrupt_exit_code, 130);
  EXPECT_EQ(interpreter::exit_code_of([] {
              python().run_string("class Stop(KeyboardInterrupt): pass\nraise Stop");
            }),
            1);
}

TEST(Interpreter, ErrorCanBeRaisedBackIntoPython) {
  auto e = error_of("class Custom(Exception): pass\nraise Custom('x')");
  e.restore();
  ASSERT_TRUE(PyErr_Occurred());
  auto again = python_error::fetch();
  EXPECT_EQ(again.type_name(), "__main__.Custom");
  EXPECT_EQ(again.message(), "x");
}

TEST(Interpreter, StdlibBelongsToTheLinkedLibpython) {
  // The runtime is the library we compiled against, and its stdlib is the one
  // under the home found from that library, whatever python3 is on PATH.
  EXPECT_EQ(eval("__import__('platform').python_version()").cast<std::string>(), PY_VERSION);
  auto home = python().info().home.string();
  auto stdlib = home + "/lib/python" + std::to_string(PY_MAJOR_VERSION) + "." +
                std::to_string(PY_MINOR_VERSION) + "/";
  EXPECT_EQ(eval("__import__('os').__file__").cast<std::string>(), stdlib + "os.py");
  EXPECT_EQ(eval("__import__('sys').prefix").cast<std::string>(), home);
  EXPECT_NE(python().info().library.filename().string().find("python"), std::string::npos);
}

TEST(Interpreter, NoWorkingDirectoryOnSysPathByDefault) {
  auto on_path = eval("'' in __import__('sys').path or __import__('os').getcwd() in __import__('sys').path");
  EXPECT_FALSE(on_path.cast<bool>());
}

TEST(Interpreter, ImportModhostWorks) {
  auto version = eval("__import__('modhost').__version__").cast<std::string>();
  EXPECT_EQ(version, MODHOST_VERSION);
  auto home = eval("__import__('modhost').interpreter_info()['home']").cast<std::string>();
  EXPECT_EQ(home, python().info().home.string());
}

TEST(Interpreter, SecondInterpreterIsRefused) {
  EXPECT_THROW(interpreter second, std::logic_error);
}

TEST(Interpreter, HostThreadsCallPythonAfterReleasingTheGil) {
  exec("import threading\ncounter = 0\ncounter_lock = threading.Lock()\n"
       "def bump():\n    global counter\n    with counter_lock:\n        counter += 1\n");
  {
    modhost::gil_release released;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([] {
        for (int i = 0; i < 250; ++i) {
          modhost::gil_acquire gil;
          eval("bump()");
        }
      });
    for (auto& t : threads) t.join();
  }
  EXPECT_EQ(eval("counter").cast<int>(), 1000);
}
