#include <gtest/gtest.h>
#include <pybind11/embed.h>
#include <pybind11/stl.h>

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "interpreter/interpreter.h"
#include "modules/module_cache.h"
#include "tests/test_support.h"

namespace py = pybind11;
using modhost::module_cache;
using modhost::python_error;
using modhost::reload_outcome;
using modhost::testing::eval;
using modhost::testing::exec;
using modhost::testing::temp_dir;

namespace {

// Real .py files in a temp dir on sys.path; the modules a test imported are
// removed from sys.modules afterwards.
class ModuleCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sys_path().attr("insert")(0, dir_.path().string());
  }
  void TearDown() override {
    sys_path().attr("remove")(dir_.path().string());
    exec("import sys\n"
         "for _n in [n for n, m in list(sys.modules.items())\n"
         "           if (getattr(m, '__file__', None) or '').startswith(" +
         repr(dir_.path().string()) + ")]:\n"
         "    del sys.modules[_n]\n");
    exec("import gc; gc.collect()");
  }

  static std::string repr(const std::string& s) { return py::repr(py::str(s)).cast<std::string>(); }
  static py::object sys_path() { return py::module_::import("sys").attr("path"); }
  module_cache& cache() { return modhost::interpreter::current()->cache(); }
  void write(const std::string& relative, const std::string& text) { dir_.write(relative, text); }
  py::object import(const std::string& name) { return py::module_::import(name.c_str()); }

  temp_dir dir_;
};

// Identity (`a is b`), for attribute and item accessors too.
bool same(const py::object& a, const py::object& b) { return a.ptr() == b.ptr(); }

bool contains(const std::vector<std::string>& items, const std::string& needle) {
  return std::find(items.begin(), items.end(), needle) != items.end();
}

}  // namespace

TEST_F(ModuleCacheTest, TracksImportedModuleWithFileAndFingerprint) {
  write("mc_track.py", "VALUE = 1\n");
  import("mc_track");
  auto info = cache().info("mc_track");
  EXPECT_EQ(info.kind, modhost::module_kind::source);
  EXPECT_EQ(info.path, dir_.path() / "mc_track.py");
  EXPECT_EQ(info.generation, 1u);
  EXPECT_EQ(info.state, modhost::module_state::loaded);
  EXPECT_TRUE(info.reloadable);
  ASSERT_TRUE(info.fingerprint);
  EXPECT_EQ(info.fingerprint->size, 10u);
  EXPECT_TRUE(contains(cache().modules(), "mc_track"));
}

TEST_F(ModuleCacheTest, FindIsAHitForLoadedModulesOnly) {
  write("mc_find.py", "VALUE = 1\n");
  auto module = import("mc_find");
  EXPECT_TRUE(cache().find("mc_find").is(module));
  EXPECT_FALSE(cache().find("mc_never_imported"));
  EXPECT_TRUE(cache().load("mc_find").is(module));
}

TEST_F(ModuleCacheTest, FollowsSysModulesChangedBehindItsBack) {
  write("mc_behind.py", "VALUE = 1\n");
  import("mc_behind");
  exec("import sys, types\nsys.modules['mc_behind'] = types.ModuleType('mc_behind')");
  auto replacement = eval("sys.modules['mc_behind']");
  EXPECT_TRUE(cache().find("mc_behind").is(replacement));
  exec("del sys.modules['mc_behind']");
  EXPECT_FALSE(cache().find("mc_behind"));
  EXPECT_FALSE(contains(cache().modules(), "mc_behind"));
}

TEST_F(ModuleCacheTest, ReloadPicksUpEditedSource) {
  write("mc_edit.py", "def greet():\n    return 'old'\n");
  auto module = import("mc_edit");
  write("mc_edit.py", "def greet():\n    return 'new'\n\nEXTRA = 1\n");
  auto report = cache().reload("mc_edit");
  ASSERT_EQ(report.outcome, reload_outcome::reloaded) << (report.error ? report.error->what() : "");
  EXPECT_TRUE(report.module.is(module));
  EXPECT_EQ(module.attr("greet")().cast<std::string>(), "new");
  EXPECT_EQ(report.generation, 2u);
  EXPECT_EQ(cache().info("mc_edit").generation, 2u);
  EXPECT_EQ(report.added, std::vector<std::string>{"EXTRA"});
  EXPECT_EQ(report.reexecuted, std::vector<std::string>{"mc_edit"});
}

TEST_F(ModuleCacheTest, FailedReloadRestoresTheNamespaceExactly) {
  write("mc_atomic.py", "A = [1]\ndef f():\n    return 'old'\nclass C:\n    pass\n");
  auto module = import("mc_atomic");
  py::dict before = py::reinterpret_steal<py::dict>(PyDict_Copy(module.attr("__dict__").ptr()));
  write("mc_atomic.py", "A = [2]\ndef f():\n    return 'new'\nNEW = 1\nraise ValueError('half way')\nclass C:\n    pass\n");
  auto report = cache().reload("mc_atomic");
  ASSERT_EQ(report.outcome, reload_outcome::failed);
  EXPECT_TRUE(report.rolled_back);
  ASSERT_TRUE(report.error);
  EXPECT_EQ(report.error->type_name(), "ValueError");
  EXPECT_EQ(report.error->message(), "half way");
  EXPECT_EQ(report.failed_module, "mc_atomic");
  py::dict after = module.attr("__dict__");
  EXPECT_EQ(py::len(after), py::len(before));
  for (auto [key, value] : before) {
    ASSERT_TRUE(after.contains(key)) << py::str(key).cast<std::string>();
    EXPECT_TRUE(after[key].ptr() == value.ptr()) << py::str(key).cast<std::string>();
  }
  EXPECT_FALSE(after.contains("NEW"));
  EXPECT_EQ(module.attr("f")().cast<std::string>(), "old");
  auto info = cache().info("mc_atomic");
  EXPECT_EQ(info.generation, 1u);
  EXPECT_EQ(info.state, modhost::module_state::failed);
  EXPECT_EQ(info.last_error, "ValueError: half way");
  EXPECT_TRUE(eval("__import__('sys').modules['mc_atomic']").is(module));
}

// reload_options::quiet_for (what the autoreloader passes): a source written
// a moment ago may be half-saved, so its reload is deferred and nothing runs.
TEST_F(ModuleCacheTest, QuietForDefersAFreshlyWrittenSource) {
  write("mc_quiet.py", "VALUE = 1\n");
  auto module = import("mc_quiet");
  write("mc_quiet.py", "VALUE = 2\n");
  modhost::reload_options options;
  options.quiet_for = std::chrono::seconds(5);
  auto report = cache().reload("mc_quiet", options);
  EXPECT_EQ(report.outcome, reload_outcome::deferred);
  EXPECT_EQ(module.attr("VALUE").cast<int>(), 1);
  EXPECT_EQ(cache().info("mc_quiet").generation, 1u);
  options.quiet_for = std::chrono::milliseconds(0);
  EXPECT_EQ(cache().reload("mc_quiet", options).outcome, reload_outcome::reloaded);
  EXPECT_EQ(module.attr("VALUE").cast<int>(), 2);
}

// A save that truncates, then writes, can leave the file empty for tens of
// milliseconds: an emptied source must be quiet for a second, whatever
// quiet_for says, before it is run.
TEST_F(ModuleCacheTest, AnEmptiedSourceIsRunOnlyOnceItStayedEmptyForASecond) {
  write("mc_emptied.py", "VALUE = 1\n");
  auto module = import("mc_emptied");
  auto emptied = std::chrono::steady_clock::now();
  write("mc_emptied.py", "");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  modhost::reload_options options;
  options.quiet_for = std::chrono::milliseconds(10);
  if (std::chrono::steady_clock::now() - emptied < std::chrono::milliseconds(900)) {
    EXPECT_EQ(cache().reload("mc_emptied", options).outcome, reload_outcome::deferred);
    EXPECT_EQ(module.attr("VALUE").cast<int>(), 1);
  }
  std::this_thread::sleep_until(emptied + std::chrono::milliseconds(1100));
  EXPECT_EQ(cache().reload("mc_emptied", options).outcome, reload_outcome::reloaded);
  auto info = cache().info("mc_emptied");  // the empty module is what was saved
  EXPECT_EQ(info.generation, 2u);
  ASSERT_TRUE(info.fingerprint);
  EXPECT_EQ(info.fingerprint->size, 0u);
}

// Found by fuzz_reload_source: a failed reload, then the file put back to
// the version that runs. The module is consistent with its file again.
TEST_F(ModuleCacheTest, DeepReloadOfTheRunningVersionAfterAFailureClearsTheFailure) {
  const std::string good = "VALUE = 1\n";
  write("mc_back.py", good);
  auto module = import("mc_back");
  write("mc_back.py", "VALUE = 2\nraise ValueError('broken')\n");
  ASSERT_EQ(cache().reload("mc_back").outcome, reload_outcome::failed);
  ASSERT_EQ(cache().info("mc_back").state, modhost::module_state::failed);
  write("mc_back.py", good);
  modhost::reload_options options;
  options.deep = true;
  EXPECT_EQ(cache().reload("mc_back", options).outcome, reload_outcome::unchanged);
  auto info = cache().info("mc_back");
  EXPECT_EQ(info.state, modhost::module_state::loaded);
  EXPECT_EQ(info.last_error, "");
  EXPECT_EQ(info.generation, 1u);
  EXPECT_EQ(module.attr("VALUE").cast<int>(), 1);
}

TEST_F(ModuleCacheTest, SyntaxErrorIsAFailedReport) {
  write("mc_syntax.py", "X = 1\n");
  import("mc_syntax");
  write("mc_syntax.py", "def broken(:\n");
  auto report = cache().reload("mc_syntax");
  ASSERT_EQ(report.outcome, reload_outcome::failed);
  EXPECT_EQ(report.error->type_name(), "SyntaxError");
  EXPECT_EQ(import("mc_syntax").attr("X").cast<int>(), 1);
}

TEST_F(ModuleCacheTest, DependentsRunAfterTheirDependencies) {
  write("mc_order.py", "RUNS = []\n");
  write("mc_base.py", "import mc_order\nmc_order.RUNS.append('base')\nVALUE = 1\n");
  write("mc_user.py", "import mc_order\nfrom mc_base import VALUE\nmc_order.RUNS.append('user')\n");
  import("mc_user");
  EXPECT_TRUE(contains(cache().dependents("mc_base"), "mc_user"));
  EXPECT_TRUE(contains(cache().dependencies("mc_user"), "mc_base"));
  EXPECT_EQ(cache().from_imports("mc_user")["mc_base"], std::vector<std::string>{"VALUE"});
  write("mc_base.py", "import mc_order\nmc_order.RUNS.append('base')\nVALUE = 2\n");
  exec("import mc_order; mc_order.RUNS.clear()");
  modhost::reload_options options;
  options.dependents = true;
  auto report = cache().reload("mc_base", options);
  ASSERT_EQ(report.outcome, reload_outcome::reloaded);
  EXPECT_EQ(report.reexecuted, (std::vector<std::string>{"mc_base", "mc_user"}));
  EXPECT_EQ(eval("mc_order.RUNS").cast<std::vector<std::string>>(),
            (std::vector<std::string>{"base", "user"}));
  EXPECT_EQ(import("mc_user").attr("VALUE").cast<int>(), 2);
}

TEST_F(ModuleCacheTest, AFailingDependentRollsBackEveryModule) {
  write("mc_dep_base.py", "VALUE = 1\n");
  write("mc_dep_user.py", "import mc_dep_base\nCOPY = mc_dep_base.VALUE\n");
  auto base = import("mc_dep_base");
  auto user = import("mc_dep_user");
  py::object old_value = base.attr("VALUE");
  write("mc_dep_base.py", "VALUE = 2\n");
  write("mc_dep_user.py", "import mc_dep_base\nCOPY = mc_dep_base.VALUE\nraise RuntimeError('user broke')\n");
  modhost::reload_options options;
  options.dependents = true;
  auto report = cache().reload("mc_dep_base", options);
  ASSERT_EQ(report.outcome, reload_outcome::failed);
  EXPECT_EQ(report.failed_module, "mc_dep_user");
  EXPECT_EQ(report.error->type_name(), "RuntimeError");
  EXPECT_TRUE(same(base.attr("VALUE"), old_value));
  EXPECT_EQ(user.attr("COPY").cast<int>(), 1);
  EXPECT_EQ(cache().info("mc_dep_base").generation, 1u);
  EXPECT_TRUE(contains(cache().dependents("mc_dep_base"), "mc_dep_user"));
}

TEST_F(ModuleCacheTest, BadRequestsThrowWhatPythonWouldRaise) {
  auto error_of = [&](auto&& call) -> python_error {
    try {
      call();
    } catch (const python_error& e) {
      return e;
    }
    throw std::logic_error("no python_error");
  };
  EXPECT_EQ(error_of([&] { (void)cache().reload("mc_never_imported"); }).type_name(), "ImportError");
  EXPECT_EQ(error_of([&] { (void)cache().reload(""); }).type_name(), "ValueError");
  EXPECT_EQ(error_of([&] { (void)cache().reload("a..b"); }).type_name(), "ValueError");
  EXPECT_EQ(error_of([&] { (void)cache().reload(py::int_(3)); }).type_name(), "TypeError");
  for (const char* refused : {"sys", "builtins", "__main__"}) {
    auto e = error_of([&] { (void)cache().reload(refused); });
    EXPECT_EQ(e.type_name(), "ValueError");
    EXPECT_NE(e.message().find(refused), std::string::npos);
  }
}

TEST_F(ModuleCacheTest, BuiltinAndExtensionModulesAreNotReloadable) {
  import("itertools");
  EXPECT_FALSE(cache().info("itertools").reloadable);
  auto report = cache().reload("itertools");
  EXPECT_EQ(report.outcome, reload_outcome::not_reloadable);
  EXPECT_EQ(report.generation, 1u);
}

TEST_F(ModuleCacheTest, UnloadRefusesAndNamesTheHolder) {
  write("mc_plug.py", "def hook():\n    return 1\n");
  write("mc_app.py", "from mc_plug import hook\n");
  import("mc_app");
  try {
    (void)cache().unload("mc_plug");
    FAIL() << "unload did not refuse";
  } catch (const modhost::module_in_use_error& e) {
    EXPECT_TRUE(contains(e.referrers(), "module 'mc_app' global 'hook' (function mc_plug.hook)"))
        << e.what();
  }
  EXPECT_TRUE(cache().find("mc_plug"));
  EXPECT_EQ(import("mc_plug").attr("hook")().cast<int>(), 1);
}

TEST_F(ModuleCacheTest, UnloadFreesTheModuleAndReimportLoadsFreshCode) {
  write("mc_gone.py", "VALUE = 'first'\n");
  py::object weak;
  {
    auto module = import("mc_gone");
    weak = py::reinterpret_steal<py::object>(PyWeakref_NewRef(module.ptr(), nullptr));
  }
  EXPECT_EQ(cache().refcount("mc_gone"), 0);
  auto report = cache().unload("mc_gone");
  EXPECT_EQ(report.unloaded, std::vector<std::string>{"mc_gone"});
  EXPECT_TRUE(report.freed);
  EXPECT_TRUE(weak().is_none());
  EXPECT_FALSE(cache().find("mc_gone"));
  write("mc_gone.py", "VALUE = 'second'\n");
  EXPECT_EQ(import("mc_gone").attr("VALUE").cast<std::string>(), "second");
}

TEST_F(ModuleCacheTest, RefcountCountsHoldersBeyondSysModulesAndTheCache) {
  write("mc_count.py", "X = 1\n");
  import("mc_count");
  EXPECT_EQ(cache().refcount("mc_count"), 0);
  exec("import mc_count as held_by_main");
  EXPECT_EQ(cache().refcount("mc_count"), 1);
  EXPECT_TRUE(contains(cache().referrers("mc_count"), "module '__main__' global 'held_by_main'"));
  exec("del held_by_main");
  EXPECT_EQ(cache().refcount("mc_count"), 0);
}

TEST_F(ModuleCacheTest, IsChangedSeesSameSizeEditsButNotTouch) {
  auto file = dir_.path() / "mc_changes.py";
  write("mc_changes.py", "VALUE = 1\n");
  import("mc_changes");
  EXPECT_FALSE(cache().is_changed("mc_changes"));
  exec("import os; os.utime(" + repr(file.string()) + ", ns=(1, 2))");  // touch
  EXPECT_FALSE(cache().is_changed("mc_changes"));
  struct stat before {};
  ::stat(file.c_str(), &before);
  write("mc_changes.py", "VALUE = 2\n");  // same size; put mtime back
  exec("import os; os.utime(" + repr(file.string()) + ", ns=(1, 2))");
  EXPECT_TRUE(cache().is_changed("mc_changes"));
  EXPECT_TRUE(contains(cache().changed(), "mc_changes"));
  std::filesystem::remove(file);
  EXPECT_TRUE(cache().is_changed("mc_changes"));
}

TEST_F(ModuleCacheTest, FunctionHandleCallsTheCurrentVersion) {
  write("mc_handle.py", "def on_event(x):\n    return x + 1\n");
  import("mc_handle");
  modhost::function_handle on_event(cache(), "mc_handle", "on_event");
  EXPECT_EQ(on_event(1).cast<int>(), 2);
  write("mc_handle.py", "def on_event(x):\n    return x + 100\n");
  ASSERT_TRUE(cache().reload("mc_handle"));
  EXPECT_EQ(on_event(1).cast<int>(), 101);
  EXPECT_TRUE(contains(cache().referrers("mc_handle"), "C++ handle mc_handle.on_event"));
  EXPECT_THROW((void)cache().unload("mc_handle"), modhost::module_in_use_error);

  write("mc_handle.py", "def renamed(x):\n    return x\n");
  exec("import mc_handle; del mc_handle.on_event");
  ASSERT_TRUE(cache().reload("mc_handle"));
  try {
    on_event(1);
    FAIL() << "calling a vanished attribute must fail";
  } catch (const python_error& e) {
    EXPECT_EQ(e.type_name(), "AttributeError");
    EXPECT_NE(e.message().find("mc_handle"), std::string::npos);
    EXPECT_NE(e.message().find("on_event"), std::string::npos);
  }
  exec("del mc_handle");
}

TEST_F(ModuleCacheTest, ForcedUnloadListsWhatLingers) {
  write("mc_forced.py", "def hook():\n    return 1\n");
  exec("from mc_forced import hook as forced_hook");
  auto report = cache().unload("mc_forced", /*force=*/true);
  EXPECT_TRUE(contains(report.lingering, "module '__main__' global 'forced_hook' (function mc_forced.hook)"));
  EXPECT_FALSE(cache().find("mc_forced"));
  EXPECT_EQ(eval("forced_hook()").cast<int>(), 1);  // old code keeps running where it is held
  exec("del forced_hook");
}

TEST_F(ModuleCacheTest, SubscribersHearOfSuccessfulReloadsOnly) {
  write("mc_events.py", "X = 1\n");
  import("mc_events");
  std::vector<std::pair<std::string, std::uint64_t>> events;
  auto id = cache().subscribe([&](const modhost::reload_report& r) { events.emplace_back(r.name, r.generation); });
  write("mc_events.py", "X = 2\n");
  (void)cache().reload("mc_events");
  write("mc_events.py", "X = (\n");
  (void)cache().reload("mc_events");
  cache().unsubscribe(id);
  write("mc_events.py", "X = 3\n");
  (void)cache().reload("mc_events");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], (std::pair<std::string, std::uint64_t>{"mc_events", 2}));
}

TEST_F(ModuleCacheTest, DeepReloadPatchesLiveObjectsInPlace) {
  write("mc_deep.py",
        "LIMIT = 1\nSTALE = 1\n"
        "def f():\n    return 'old'\n"
        "class Widget:\n    def run(self):\n        return 'old run'\n");
  write("mc_deep_user.py", "from mc_deep import f, LIMIT\n");
  auto module = import("mc_deep");
  auto user = import("mc_deep_user");
  py::object old_f = module.attr("f");
  py::object widget_class = module.attr("Widget");
  auto widget = widget_class();
  write("mc_deep.py",
        "LIMIT = 2\n"
        "def f():\n    return 'new'\n"
        "class Widget:\n    def run(self):\n        return 'new run'\n    def extra(self):\n        return 1\n");
  modhost::reload_options options;
  options.deep = true;
  auto report = cache().reload("mc_deep", options);
  ASSERT_EQ(report.outcome, reload_outcome::reloaded) << (report.error ? report.error->what() : "");
  EXPECT_EQ(old_f().cast<std::string>(), "new");
  EXPECT_TRUE(same(module.attr("f"), old_f));
  EXPECT_TRUE(same(module.attr("Widget"), widget_class));
  EXPECT_EQ(widget.attr("run")().cast<std::string>(), "new run");
  EXPECT_EQ(widget.attr("extra")().cast<int>(), 1);
  EXPECT_FALSE(py::hasattr(module, "STALE"));
  EXPECT_EQ(user.attr("LIMIT").cast<int>(), 2);
  EXPECT_TRUE(contains(report.patched, "function mc_deep.f"));
  EXPECT_TRUE(contains(report.patched, "class mc_deep.Widget"));
  EXPECT_EQ(report.rebound, std::vector<std::string>{"mc_deep_user.LIMIT"});
  EXPECT_EQ(report.removed, std::vector<std::string>{"STALE"});

  auto again = cache().reload("mc_deep", options);  // same content: nothing runs
  EXPECT_EQ(again.outcome, reload_outcome::unchanged);
  EXPECT_EQ(again.generation, 2u);
}

TEST_F(ModuleCacheTest, FailedDeepReloadLeavesEveryObjectAsItWas) {
  write("mc_deep_fail.py", "def f():\n    return 'old'\nclass C:\n    def m(self):\n        return 'old'\n");
  write("mc_deep_fail_user.py", "from mc_deep_fail import f\n");
  auto module = import("mc_deep_fail");
  auto user = import("mc_deep_fail_user");
  py::object old_f = module.attr("f");
  py::object old_code = old_f.attr("__code__");
  py::object old_method = module.attr("C").attr("__dict__")["m"];
  write("mc_deep_fail.py",
        "def f():\n    return 'new'\nclass C:\n    def m(self):\n        return 'new'\n"
        "def __reload__(old):\n    raise RuntimeError('hand-off failed')\n");
  modhost::reload_options options;
  options.deep = true;
  auto report = cache().reload("mc_deep_fail", options);
  ASSERT_EQ(report.outcome, reload_outcome::failed);
  EXPECT_EQ(report.error->type_name(), "RuntimeError");
  EXPECT_TRUE(same(old_f.attr("__code__"), old_code));
  EXPECT_EQ(old_f().cast<std::string>(), "old");
  EXPECT_TRUE(same(module.attr("C").attr("__dict__")["m"], old_method));
  EXPECT_TRUE(same(user.attr("f"), old_f));
  EXPECT_FALSE(py::hasattr(module, "__reload__"));
  EXPECT_TRUE(report.patched.empty());
}
