// Destroying modhost::interpreter with plugins loaded: what the modules
// acquired from the C++ host (modhost::attach_release) is released, and
// their __unload__ runs, before Python finalizes; C++ objects that outlive
// the interpreter (a host's map of plugin callbacks, function handles) do
// not touch Python afterwards.
//
// Its own test program (tests/CMakeLists.txt: modhost_shutdown_tests): each
// test starts and destroys an interpreter, and CPython cannot be restarted in
// one process, so every scenario runs in a forked child of a process where
// Python never ran, and reports what it saw through a pipe.
#include <gtest/gtest.h>
#include <pybind11/embed.h>
#include <pybind11/functional.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "interpreter/interpreter.h"
#include "modules/acquisitions.h"
#include "modules/function_handle.h"
#include "modules/module_cache.h"
#include "tests/test_support.h"

namespace py = pybind11;
using modhost::testing::temp_dir;

namespace {

struct child_outcome {
  int status = -1;  // the child's exit status (0: the scenario ran to its end)
  std::vector<std::string> lines;  // what the scenario returned, one entry a line
};

// Runs `scenario` in a forked child and returns its lines. A scenario that
// throws or crashes shows as a non-zero status.
template <class Scenario>
child_outcome in_child(Scenario scenario) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    close(fds[0]);
    int code = 0;
    std::string text;
    try {
      for (const auto& line : scenario()) text += line + "\n";
    } catch (const std::exception& e) {
      text += std::string("exception: ") + e.what() + "\n";
      code = 2;
    }
    for (std::size_t done = 0; done < text.size();) {
      ssize_t n = write(fds[1], text.data() + done, text.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    std::fflush(nullptr);
    _exit(code);
  }
  close(fds[1]);
  std::string text;
  char buffer[4096];
  for (ssize_t n; (n = read(fds[0], buffer, sizeof buffer)) > 0;) text.append(buffer, static_cast<std::size_t>(n));
  close(fds[0]);
  child_outcome outcome;
  int status = 0;
  waitpid(pid, &status, 0);
  outcome.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  for (std::size_t start = 0, end; (end = text.find('\n', start)) != std::string::npos; start = end + 1)
    outcome.lines.push_back(text.substr(start, end - start));
  return outcome;
}

bool python_is_finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

// Two plugins, `top` importing `base`, each registering a handler with the
// C++ host (module exit_host) through attach_release and logging its
// __unload__.
void write_plugins(const temp_dir& dir) {
  dir.write("base.py",
            "import exit_host\n"
            "exit_host.register('base', lambda: 'base')\n"
            "def __unload__():\n"
            "    exit_host.log('unload base')\n");
  dir.write("top.py",
            "import base, exit_host\n"
            "exit_host.register('top', lambda: 'top')\n"
            "def __unload__():\n"
            "    exit_host.log('unload top')\n");
}

}  // namespace

TEST(InterpreterShutdown, AttachedReleasesRunBeforeFinalizationDependentsFirst) {
  auto outcome = in_child([] {
    temp_dir dir;
    write_plugins(dir);
    std::vector<std::string> log;
    std::map<std::string, py::object> handlers;  // the host's: outlives the interpreter
    {
      modhost::interpreter_config config;
      config.module_paths = {dir.path()};
      modhost::interpreter python(config);
      auto host = py::reinterpret_steal<py::module_>(PyModule_New("exit_host"));  // new reference
      host.def("register", [&](const std::string& key, py::object handler) {
        modhost::attach_release(
            python.cache(), "handler " + key,
            [&, key, handler] {
              handlers.emplace(key, handler);
              log.push_back("register " + key);
            },
            [&, key] {
              handlers.erase(key);
              bool alive = Py_IsInitialized() && !python_is_finalizing();
              log.push_back("release " + key + (alive ? "" : " after Python finalized"));
            });
      });
      host.def("log", [&](const std::string& line) { log.push_back(line); });
      py::module_::import("sys").attr("modules")["exit_host"] = host;
      python.cache().load("top");
      log.push_back("destroying the interpreter");
    }
    log.push_back(handlers.empty() ? "no handler left" : "handlers left: " + std::to_string(handlers.size()));
    return log;
  });
  EXPECT_EQ(outcome.status, 0);
  EXPECT_EQ(outcome.lines, (std::vector<std::string>{"register base", "register top", "destroying the interpreter",
                                                     "release top", "unload top", "release base", "unload base",
                                                     "no handler left"}));
}

TEST(InterpreterShutdown, FunctionHandlesOutlivingTheInterpreterDoNotTouchPython) {
  auto outcome = in_child([] {
    temp_dir dir;
    dir.write("plug.py", "def answer():\n    return 42\n");
    std::vector<std::string> log;
    std::optional<modhost::function_handle> answer;
    {
      modhost::interpreter_config config;
      config.module_paths = {dir.path()};
      modhost::interpreter python(config);
      python.cache().load("plug");
      answer.emplace(python.cache(), "plug", "answer");
      log.push_back("answer " + std::to_string((*answer)().cast<int>()));
    }
    try {
      (*answer)();
      log.push_back("called after finalization");
    } catch (const modhost::error& e) {
      log.push_back(std::string("refused: ") + e.what());
    }
    answer.reset();
    log.push_back("handle destroyed");
    return log;
  });
  EXPECT_EQ(outcome.status, 0);
  EXPECT_EQ(outcome.lines, (std::vector<std::string>{"answer 42",
                                                     "refused: C++ handle plug.answer: the interpreter is gone",
                                                     "handle destroyed"}));
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();  // no interpreter here: each scenario starts its own in a child
}
