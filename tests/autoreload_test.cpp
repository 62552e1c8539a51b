// Live reload from C++: the autoreloader's poll() applied at a host's safe
// point, and stable function handles that always call the current version.
// The process's single interpreter and cache (tests/main.cpp) are used; each
// test puts the autoreloader back to "off".
#include <gtest/gtest.h>
#include <pybind11/embed.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "interpreter/interpreter.h"
#include "modules/autoreload.h"
#include "modules/cpython/log.h"
#include "modules/internal/file_watcher.h"
#include "modules/module_cache.h"
#include "tests/test_support.h"

namespace py = pybind11;
using modhost::autoreload_mode;
using modhost::function_handle;
using modhost::module_cache;
using modhost::python_error;
using modhost::reload_outcome;
using modhost::testing::exec;
using modhost::testing::temp_dir;
using namespace std::chrono_literals;

namespace {

bool contains(const std::vector<std::string>& items, const std::string& needle) {
  return std::find(items.begin(), items.end(), needle) != items.end();
}

std::string join(const std::vector<std::string>& items) {
  std::string text;
  for (const auto& item : items) text += (text.empty() ? "" : ", ") + item;
  return "[" + text + "]";
}

class Autoreload : public ::testing::Test {
 protected:
  void SetUp() override { py::module_::import("sys").attr("path").attr("insert")(0, dir_.path().string()); }
  void TearDown() override {
    reloader().set_mode(autoreload_mode::off);
    py::module_::import("sys").attr("path").attr("remove")(dir_.path().string());
    exec("import sys\n"
         "for _n in [n for n, m in list(sys.modules.items())\n"
         "           if (getattr(m, '__file__', None) or '').startswith(" +
         py::repr(py::str(dir_.path().string())).cast<std::string>() + ")]:\n"
         "    del sys.modules[_n]\n"
         "import gc; gc.collect()\n");
  }

  module_cache& cache() { return modhost::interpreter::current()->cache(); }
  modhost::autoreloader& reloader() { return modhost::interpreter::current()->autoreload(); }
  void write(const std::string& relative, const std::string& text) {
    dir_.write(relative, text);
    py::module_::import("importlib").attr("invalidate_caches")();
  }
  py::object import(const std::string& name) { return py::module_::import(name.c_str()); }

  // poll() until every name in `expected` was reloaded (a real debounce has
  // to pass); returns everything poll() reloaded meanwhile.
  std::vector<std::string> poll_until(const std::vector<std::string>& expected,
                                      std::chrono::seconds timeout = 10s) {
    std::vector<std::string> reloaded;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto done = [&] {
      return std::all_of(expected.begin(), expected.end(), [&](const auto& name) { return contains(reloaded, name); });
    };
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      reloader().watcher().wait(5ms);
      for (auto& name : reloader().poll()) reloaded.push_back(name);
    }
    EXPECT_TRUE(done()) << "poll() reloaded only " << join(reloaded) << " within " << timeout.count() << " s";
    return reloaded;
  }

  temp_dir dir_;
};

std::string version(int i) { return "def value():\n    return " + std::to_string(i) + "\n"; }

}  // namespace

TEST_F(Autoreload, ModeNamesRoundTrip) {
  for (auto mode : {autoreload_mode::off, autoreload_mode::explicit_only, autoreload_mode::all})
    EXPECT_EQ(modhost::parse_autoreload_mode(modhost::to_string(mode)), mode);
  EXPECT_FALSE(modhost::parse_autoreload_mode("ALL"));
  EXPECT_FALSE(modhost::parse_autoreload_mode(""));
  reloader().set_mode(autoreload_mode::explicit_only);
  EXPECT_EQ(reloader().mode(), autoreload_mode::explicit_only);
}

TEST_F(Autoreload, PollWithNothingChangedReloadsNothing) {
  write("ar_idle.py", version(1));
  import("ar_idle");
  reloader().set_mode(autoreload_mode::all);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(reloader().poll(), std::vector<std::string>{});
  EXPECT_EQ(cache().info("ar_idle").generation, 1u);
}

TEST_F(Autoreload, PollInOffModeReloadsNothing) {
  write("ar_off.py", version(1));
  auto module = import("ar_off");
  reloader().set_mode(autoreload_mode::all);
  (void)reloader().poll();  // the watcher learns of the module
  reloader().set_mode(autoreload_mode::off);
  write("ar_off.py", version(2));
  write("ar_off_control.py", version(1));
  for (int i = 0; i < 20; ++i) {
    reloader().watcher().wait(5ms);
    EXPECT_EQ(reloader().poll(), std::vector<std::string>{});
  }
  EXPECT_EQ(module.attr("value")().cast<int>(), 1);
}

TEST_F(Autoreload, PollReloadsAnEditedModuleDeeply) {
  write("ar_edit.py", version(1));
  auto module = import("ar_edit");
  py::object old_function = module.attr("value");
  reloader().set_mode(autoreload_mode::all);
  EXPECT_EQ(reloader().poll(), std::vector<std::string>{});
  write("ar_edit.py", version(2));
  auto reloaded = poll_until({"ar_edit"});
  EXPECT_EQ(reloaded, std::vector<std::string>{"ar_edit"});
  EXPECT_EQ(module.attr("value")().cast<int>(), 2);
  EXPECT_EQ(old_function().cast<int>(), 2) << "deep reload: an old reference runs the new code";
  EXPECT_EQ(cache().info("ar_edit").generation, 2u);
  EXPECT_EQ(reloader().poll(), std::vector<std::string>{});
}

// The watcher only starts watching a module's file at a poll() after the
// module was imported. A user who imports, edits and then polls expects
// the edit to be applied all the same.
TEST_F(Autoreload, EditBeforeTheFirstPollIsApplied) {
  write("ar_early.py", version(1));
  auto module = import("ar_early");
  reloader().set_mode(autoreload_mode::all);
  write("ar_early.py", version(2));
  auto reloaded = poll_until({"ar_early"}, 5s);
  EXPECT_EQ(module.attr("value")().cast<int>(), 2);
}

TEST_F(Autoreload, PollReloadsDependentsToo) {
  write("ar_base.py", "LIMIT = 1\n");
  write("ar_user.py", "import ar_base\nDOUBLE = ar_base.LIMIT * 2\n");
  auto user = import("ar_user");
  reloader().set_mode(autoreload_mode::explicit_only);
  reloader().watch("ar_base");
  EXPECT_EQ(reloader().poll(), std::vector<std::string>{});
  write("ar_base.py", "LIMIT = 21\n");
  auto reloaded = poll_until({"ar_base", "ar_user"});
  EXPECT_EQ(reloaded, (std::vector<std::string>{"ar_base", "ar_user"})) << "dependencies first";
  EXPECT_EQ(user.attr("DOUBLE").cast<int>(), 42);
  reloader().unwatch("ar_base");
}

TEST_F(Autoreload, SubscribersHearOfAutoreloads) {
  write("ar_event.py", version(1));
  import("ar_event");
  std::vector<std::pair<std::string, std::uint64_t>> events;
  auto id = cache().subscribe([&](const modhost::reload_report& report) {
    if (report.outcome == modhost::reload_outcome::reloaded) events.emplace_back(report.name, report.generation);
  });
  reloader().set_mode(autoreload_mode::all);
  (void)reloader().poll();
  write("ar_event.py", version(2));
  poll_until({"ar_event"});
  cache().unsubscribe(id);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].first, "ar_event");
  EXPECT_EQ(events[0].second, 2u);
}

// A host hears of a failed autoreload as it happens, with where it was
// raised, from its subscribers and its log sink (not only on stderr).
TEST_F(Autoreload, AFailureReachesSubscribersAndTheLogSinkWithItsFileAndLine) {
  write("ar_fails.py", version(1));
  auto module = import("ar_fails");
  std::vector<modhost::reload_report> failures;
  auto id = cache().subscribe([&](const modhost::reload_report& report) {
    if (report.outcome == modhost::reload_outcome::failed) failures.push_back(report);
  });
  std::vector<std::string> lines;
  modhost::set_log_sink([&](const std::string& line) { lines.push_back(line); });
  reloader().set_mode(autoreload_mode::all);
  (void)reloader().poll();
  ::testing::internal::CaptureStderr();
  write("ar_fails.py", "def value():\n    return 2\n\nraise LookupError('no plugin table')\n");
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (failures.empty() && std::chrono::steady_clock::now() < deadline) {
    reloader().watcher().wait(5ms);
    (void)reloader().poll();
  }
  modhost::set_log_sink(nullptr);
  cache().unsubscribe(id);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].targets, std::vector<std::string>{"ar_fails"});
  EXPECT_EQ(failures[0].error->type_name(), "LookupError");
  const std::string path = (dir_.path() / "ar_fails.py").string();
  EXPECT_EQ(failures[0].error->file(), path);
  EXPECT_EQ(failures[0].error->line(), 4);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "[modhost] reload of ar_fails failed: LookupError: no plugin table (" + path +
                          ", line 4); the old code keeps running");
  EXPECT_EQ(module.attr("value")().cast<int>(), 1);
}

TEST_F(Autoreload, FailedReloadKeepsTheOldCodeAndIsNotRetried) {
  write("ar_broken.py", version(1));
  auto module = import("ar_broken");
  function_handle value(cache(), "ar_broken", "value");
  write("ar_broken_control.py", version(1));
  import("ar_broken_control");
  reloader().set_mode(autoreload_mode::all);
  (void)reloader().poll();
  ::testing::internal::CaptureStderr();
  write("ar_broken.py", "def value(:\n");
  // A control module edited after the broken save settles no earlier than it.
  write("ar_broken_control.py", version(2));
  auto reloaded = poll_until({"ar_broken_control"});
  for (int i = 0; i < 5; ++i) (void)reloader().poll();
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(contains(reloaded, "ar_broken"));
  EXPECT_EQ(value().cast<int>(), 1);
  EXPECT_EQ(module.attr("value")().cast<int>(), 1);
  EXPECT_EQ(cache().info("ar_broken").state, modhost::module_state::failed);
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_EQ(err.rfind("[modhost] reload of ar_broken failed: SyntaxError", 0), 0u) << err;
  write("ar_broken.py", version(3));
  poll_until({"ar_broken"});
  EXPECT_EQ(value().cast<int>(), 3);
  EXPECT_EQ(cache().info("ar_broken").state, modhost::module_state::loaded);
}

// A save its writer completed (closed, or renamed into place) is applied by
// the very next poll(): no debounce to wait for. A broken one is reported by
// that same poll() (the failure is a value: the old code keeps running).
TEST_F(Autoreload, CompleteSaveIsAppliedByTheNextPoll) {
  write("ar_now.py", version(1));
  auto module = import("ar_now");
  reloader().set_mode(autoreload_mode::all);
  EXPECT_EQ(reloader().poll(), std::vector<std::string>{});
  if (reloader().watcher().current_mode() != modhost::file_watcher::mode::inotify)
    GTEST_SKIP() << "polling waits for two agreeing stats: " << reloader().watcher().fallback_reason();
  for (int i = 2; i <= 20; ++i) {  // quicker than a timestamp tick: equal stat fields must not hide an edit
    if (i % 2) {
      dir_.write("ar_now.tmp", version(i));  // atomic save
      std::filesystem::rename(dir_.path() / "ar_now.tmp", dir_.path() / "ar_now.py");
    } else {
      dir_.write("ar_now.py", version(i));  // in place
    }
    ASSERT_EQ(reloader().poll(), std::vector<std::string>{"ar_now"}) << "save " << i;
    ASSERT_EQ(module.attr("value")().cast<int>(), i);
  }
  dir_.write("ar_now.py", "def value(:\n    return 'broken'\n");
  EXPECT_EQ(reloader().poll(), std::vector<std::string>{});
  EXPECT_EQ(cache().info("ar_now").generation, 20u) << "the broken save was not tried by that poll()";
  EXPECT_NE(cache().info("ar_now").last_error.find("SyntaxError"), std::string::npos) << cache().info("ar_now").last_error;
  EXPECT_EQ(module.attr("value")().cast<int>(), 20);
}

// ---------------------------------------------------------------------------
// Background mode: the main thread is reached wherever it runs Python, with
// no poll() from the host. An editor thread saves while the main thread spins
// holding the GIL: before the eval breaker was set for the main thread (see
// modules/internal/main_thread_call.h) such a loop never saw the save.

class AutoreloadBackground : public Autoreload {
 protected:
  void SetUp() override {
    Autoreload::SetUp();
    write("ar_spin.py", version(1));
    module_ = import("ar_spin");
    reloader().set_mode(autoreload_mode::all);
    reloader().start_background();
  }
  void TearDown() override {
    if (editor_.joinable()) editor_.join();
    reloader().stop_background();
    Autoreload::TearDown();
  }
  // Saves version 2 from another thread while the caller spins.
  void save_soon() {
    auto path = dir_.path() / "ar_spin.py";
    editor_ = std::thread([path] {
      std::this_thread::sleep_for(50ms);
      std::ofstream(path, std::ios::trunc) << version(2);
    });
  }

  py::object module_;
  std::thread editor_;
};

TEST_F(AutoreloadBackground, ReachesAPythonLoopThatNeverReleasesTheGil) {
  save_soon();
  py::dict scope;
  scope["m"] = module_;
  // The repro: pure bytecode, no sleep, no I/O; gives up after 30 s.
  exec("import time\n"
       "t0 = time.monotonic()\n"
       "while m.value() != 2 and time.monotonic() - t0 < 30:\n"
       "    pass\n"
       "result = m.value()\n",
       scope);
  EXPECT_EQ(scope["result"].cast<int>(), 2) << "the spinning loop never ran the saved code";
}

// The loop is inside ar_spin's code at every bytecode boundary, so the
// reload waits for it to leave that code: it is applied between two calls,
// in C++, at the next handle call (before, only after the main thread's 1 s
// patience, with "applied while the main thread still runs code of ar_spin").
TEST_F(AutoreloadBackground, ReachesACppLoopOfFunctionHandleCallsBetweenTwoCalls) {
  function_handle value(cache(), "ar_spin", "value");
  ::testing::internal::CaptureStderr();
  save_soon();
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  long calls = 0;
  int seen = 1;
  while (seen != 2 && std::chrono::steady_clock::now() < deadline) {
    seen = value().cast<int>();
    ++calls;
  }
  std::string reported = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(seen, 2) << "a C++ loop holding the GIL never ran the saved code (" << calls << " calls)";
  EXPECT_EQ(reported.find("applied while"), std::string::npos) << reported;
}

// C++ work that holds the GIL for long between calls: the save goes live at
// the first bytecode boundary after it, the next call into Python.
TEST_F(AutoreloadBackground, ReachesALoopOfLongCallsThatHoldTheGil) {
  function_handle value(cache(), "ar_spin", "value");
  save_soon();
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  int seen = 1;
  while (seen != 2 && std::chrono::steady_clock::now() < deadline) {
    auto busy_until = std::chrono::steady_clock::now() + 20ms;
    while (std::chrono::steady_clock::now() < busy_until) {
    }
    seen = value().cast<int>();
  }
  EXPECT_EQ(seen, 2) << "calls between long GIL-holding C++ work never ran the saved code";
}

// A module imported while the background thread runs is watched at once
// (not at the next timeout): its first save after the import goes live.
TEST_F(AutoreloadBackground, AModuleImportedLaterIsWatchedAndItsFirstSaveApplied) {
  write("ar_late.py", version(1));
  auto late = import("ar_late");
  auto path = dir_.path() / "ar_late.py";
  std::thread editor([path] { std::ofstream(path, std::ios::trunc) << version(7); });
  editor.join();
  py::dict scope;
  scope["m"] = late;
  exec("import time\n"
       "t0 = time.monotonic()\n"
       "while m.value() != 7 and time.monotonic() - t0 < 30:\n"
       "    pass\n"
       "result = m.value()\n",
       scope);
  EXPECT_EQ(scope["result"].cast<int>(), 7);
}

// ---------------------------------------------------------------------------
// Stable function handles

TEST_F(Autoreload, HandleSurvivesAHundredAutoreloadsAndSeesEachVersion) {
  write("ar_handle.py", version(0));
  import("ar_handle");
  function_handle value(cache(), "ar_handle", "value");
  EXPECT_EQ(value().cast<int>(), 0);
  reloader().set_mode(autoreload_mode::explicit_only);
  reloader().watch("ar_handle");
  (void)reloader().poll();
  for (int i = 1; i <= 100; ++i) {
    write("ar_handle.py", version(i));
    auto reloaded = poll_until({"ar_handle"});
    ASSERT_EQ(value().cast<int>(), i) << "after edit " << i << "; reloaded " << join(reloaded);
  }
  EXPECT_EQ(cache().info("ar_handle").generation, 101u);
  reloader().unwatch("ar_handle");
}

// A plain (not deep) reload replaces the function object: the handle must
// rebind by itself, where a py::object keeps calling the old code.
TEST_F(Autoreload, HandleRebindsAfterAHundredPlainReloads) {
  write("ar_plain.py", version(0));
  auto module = import("ar_plain");
  function_handle value(cache(), "ar_plain", "value");
  py::object stale = module.attr("value");
  for (int i = 1; i <= 100; ++i) {
    write("ar_plain.py", version(i));
    auto report = cache().reload("ar_plain");
    ASSERT_EQ(report.outcome, reload_outcome::reloaded) << (report.error ? report.error->what() : "");
    ASSERT_EQ(value().cast<int>(), i) << "after reload " << i;
  }
  EXPECT_EQ(stale().cast<int>(), 0);
  EXPECT_TRUE(value.current().is(module.attr("value")));
  EXPECT_EQ(value.module_name(), "ar_plain");
  EXPECT_EQ(value.attribute(), "value");
}

TEST_F(Autoreload, HandleToADependentSeesItsReexecution) {
  write("ar_dep_base.py", "LIMIT = 1\n");
  write("ar_dep_user.py", "from ar_dep_base import LIMIT\ndef limit():\n    return LIMIT\n");
  import("ar_dep_user");
  function_handle limit(cache(), "ar_dep_user", "limit");
  EXPECT_EQ(limit().cast<int>(), 1);
  write("ar_dep_base.py", "LIMIT = 7\n");
  modhost::reload_options options;
  options.dependents = true;
  auto report = cache().reload("ar_dep_base", options);
  ASSERT_TRUE(report) << report.error->what();
  EXPECT_EQ(limit().cast<int>(), 7);
}

TEST_F(Autoreload, HandleCallsWithArgumentsAndPropagatesErrors) {
  write("ar_args.py", "def add(a, b):\n    return a + b\ndef fail():\n    raise KeyError('nope')\n");
  import("ar_args");
  function_handle add(cache(), "ar_args", "add");
  function_handle fail(cache(), "ar_args", "fail");
  EXPECT_EQ(add(2, 40).cast<int>(), 42);
  try {
    fail();
    FAIL() << "no exception";
  } catch (const python_error& e) {
    EXPECT_EQ(e.type_name(), "KeyError");
  }
}

TEST_F(Autoreload, HandleToARemovedFunctionRaisesAttributeErrorNamingIt) {
  write("ar_gone.py", "def on_event():\n    return 1\n");
  import("ar_gone");
  function_handle on_event(cache(), "ar_gone", "on_event");
  EXPECT_EQ(on_event().cast<int>(), 1);
  write("ar_gone.py", "def something_else():\n    return 2\n");
  modhost::reload_options deep;
  deep.deep = true;  // stale names removed
  auto report = cache().reload("ar_gone", deep);
  ASSERT_TRUE(report) << report.error->what();
  try {
    on_event();
    FAIL() << "calling a removed function did not raise";
  } catch (const python_error& e) {
    EXPECT_TRUE(e.matches("AttributeError")) << e.type_name();
    EXPECT_NE(e.message().find("ar_gone"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("on_event"), std::string::npos) << e.message();
  }
  // It comes back: the handle finds it again.
  write("ar_gone.py", "def on_event():\n    return 3\n");
  report = cache().reload("ar_gone", deep);
  ASSERT_TRUE(report) << report.error->what();
  EXPECT_EQ(on_event().cast<int>(), 3);
}

TEST_F(Autoreload, HandleRemovedByAnAutoreloadRaisesAttributeError) {
  write("ar_auto_gone.py", "def hook():\n    return 1\n");
  import("ar_auto_gone");
  function_handle hook(cache(), "ar_auto_gone", "hook");
  EXPECT_EQ(hook().cast<int>(), 1);
  reloader().set_mode(autoreload_mode::all);
  (void)reloader().poll();
  write("ar_auto_gone.py", "def other():\n    return 2\n");
  poll_until({"ar_auto_gone"});
  EXPECT_THROW(
      {
        try {
          hook();
        } catch (const python_error& e) {
          EXPECT_TRUE(e.matches("AttributeError")) << e.type_name();
          EXPECT_NE(e.message().find("ar_auto_gone"), std::string::npos) << e.message();
          EXPECT_NE(e.message().find("hook"), std::string::npos) << e.message();
          throw;
        }
      },
      python_error);
}

TEST_F(Autoreload, HandleIsListedAmongReferrers) {
  write("ar_ref.py", "def on_event():\n    return 1\n");
  import("ar_ref");
  function_handle on_event(cache(), "ar_ref", "on_event");
  (void)on_event();
  auto referrers = cache().referrers("ar_ref");
  EXPECT_TRUE(std::any_of(referrers.begin(), referrers.end(),
                          [](const std::string& r) { return r.find("C++ handle ar_ref.on_event") != std::string::npos; }))
      << join(referrers);
}
