// Reload as a transaction: the new code runs and commits, or every module
// and every patched object is restored exactly.
#include <gtest/gtest.h>
#include <pybind11/embed.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "modules/module_cache.h"
#include "tests/cache_test.h"

namespace py = pybind11;
using namespace modhost::testing;
using modhost::python_error;
using modhost::reload_outcome;

namespace {
class ReloadTransaction : public cache_test {};
}  // namespace

TEST_F(ReloadTransaction, ReloadPicksUpEditedSource) {
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

TEST_F(ReloadTransaction, FailedReloadRestoresTheNamespaceExactly) {
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
TEST_F(ReloadTransaction, QuietForDefersAFreshlyWrittenSource) {
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
// milliseconds: an emptied source must be quiet for 3 s, whatever
// quiet_for says, before it is run.
TEST_F(ReloadTransaction, AnEmptiedSourceIsRunOnlyOnceItStayedEmptyForThreeSeconds) {
  write("mc_emptied.py", "VALUE = 1\n");
  auto module = import("mc_emptied");
  auto emptied = std::chrono::steady_clock::now();
  write("mc_emptied.py", "");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  modhost::reload_options options;
  options.quiet_for = std::chrono::milliseconds(10);
  if (std::chrono::steady_clock::now() - emptied < std::chrono::milliseconds(2900)) {
    EXPECT_EQ(cache().reload("mc_emptied", options).outcome, reload_outcome::deferred);
    EXPECT_EQ(module.attr("VALUE").cast<int>(), 1);
  }
  std::this_thread::sleep_until(emptied + std::chrono::milliseconds(3100));
  EXPECT_EQ(cache().reload("mc_emptied", options).outcome, reload_outcome::reloaded);
  auto info = cache().info("mc_emptied");  // the empty module is what was saved
  EXPECT_EQ(info.generation, 2u);
  ASSERT_TRUE(info.fingerprint);
  EXPECT_EQ(info.fingerprint->size, 0u);
}

// Found by fuzz_reload_source: a failed reload, then the file put back to
// the version that runs. The module is consistent with its file again.
TEST_F(ReloadTransaction, DeepReloadOfTheRunningVersionAfterAFailureClearsTheFailure) {
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

TEST_F(ReloadTransaction, SyntaxErrorIsAFailedReport) {
  write("mc_syntax.py", "X = 1\n");
  import("mc_syntax");
  write("mc_syntax.py", "def broken(:\n");
  auto report = cache().reload("mc_syntax");
  ASSERT_EQ(report.outcome, reload_outcome::failed);
  EXPECT_EQ(report.error->type_name(), "SyntaxError");
  EXPECT_EQ(import("mc_syntax").attr("X").cast<int>(), 1);
}

TEST_F(ReloadTransaction, DependentsRunAfterTheirDependencies) {
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

TEST_F(ReloadTransaction, AFailingDependentRollsBackEveryModule) {
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

TEST_F(ReloadTransaction, BuiltinAndExtensionModulesAreNotReloadable) {
  import("itertools");
  EXPECT_FALSE(cache().info("itertools").reloadable);
  auto report = cache().reload("itertools");
  EXPECT_EQ(report.outcome, reload_outcome::not_reloadable);
  EXPECT_EQ(report.generation, 1u);
}

TEST_F(ReloadTransaction, DeepReloadPatchesLiveObjectsInPlace) {
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

TEST_F(ReloadTransaction, FailedDeepReloadLeavesEveryObjectAsItWas) {
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
