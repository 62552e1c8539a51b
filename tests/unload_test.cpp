// Unload, refcount and referrers: a module goes only when nothing else
// holds it or its code, and the refusal names the holder.
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
class Unload : public cache_test {};
}  // namespace

TEST_F(Unload, UnloadRefusesAndNamesTheHolder) {
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

TEST_F(Unload, UnloadFreesTheModuleAndReimportLoadsFreshCode) {
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

TEST_F(Unload, RefcountCountsHoldersBeyondSysModulesAndTheCache) {
  write("mc_count.py", "X = 1\n");
  import("mc_count");
  EXPECT_EQ(cache().refcount("mc_count"), 0);
  exec("import mc_count as held_by_main");
  EXPECT_EQ(cache().refcount("mc_count"), 1);
  EXPECT_TRUE(contains(cache().referrers("mc_count"), "module '__main__' global 'held_by_main'"));
  exec("del held_by_main");
  EXPECT_EQ(cache().refcount("mc_count"), 0);
}

TEST_F(Unload, ForcedUnloadListsWhatLingers) {
  write("mc_forced.py", "def hook():\n    return 1\n");
  exec("from mc_forced import hook as forced_hook");
  auto report = cache().unload("mc_forced", /*force=*/true);
  EXPECT_TRUE(contains(report.lingering, "module '__main__' global 'forced_hook' (function mc_forced.hook)"));
  EXPECT_FALSE(cache().find("mc_forced"));
  EXPECT_EQ(eval("forced_hook()").cast<int>(), 1);  // old code keeps running where it is held
  exec("del forced_hook");
}
