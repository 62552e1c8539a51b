// The registry: the cache follows sys.modules (tracking, hits, changes made
// behind its back) and fingerprints what runs.
#include <gtest/gtest.h>
#include <pybind11/embed.h>
#include <pybind11/stl.h>

#include <sys/stat.h>

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
class Registry : public cache_test {};
}  // namespace

TEST_F(Registry, TracksImportedModuleWithFileAndFingerprint) {
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

TEST_F(Registry, FindIsAHitForLoadedModulesOnly) {
  write("mc_find.py", "VALUE = 1\n");
  auto module = import("mc_find");
  EXPECT_TRUE(cache().find("mc_find").is(module));
  EXPECT_FALSE(cache().find("mc_never_imported"));
  EXPECT_TRUE(cache().load("mc_find").is(module));
}

TEST_F(Registry, FollowsSysModulesChangedBehindItsBack) {
  write("mc_behind.py", "VALUE = 1\n");
  import("mc_behind");
  exec("import sys, types\nsys.modules['mc_behind'] = types.ModuleType('mc_behind')");
  auto replacement = eval("sys.modules['mc_behind']");
  EXPECT_TRUE(cache().find("mc_behind").is(replacement));
  exec("del sys.modules['mc_behind']");
  EXPECT_FALSE(cache().find("mc_behind"));
  EXPECT_FALSE(contains(cache().modules(), "mc_behind"));
}

TEST_F(Registry, IsChangedSeesSameSizeEditsButNotTouch) {
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

// A save right after the import, of the same size and within one timestamp
// tick, leaves the stat as it was when the code started: the registry must
// not take the bytes it hashes later for the bytes that ran.
TEST_F(Registry, ASameSizeSaveRightAfterTheImportIsWhatTheNextReloadRuns) {
  for (int round = 0; round < 20; ++round) {
    std::string name = "rg_racy_" + std::to_string(round);
    write(name + ".py", "VERSION = 0\n");
    import(name);
    write(name + ".py", "VERSION = 1\n");  // same size, no pause
    auto report = cache().reload(name);
    ASSERT_TRUE(report);
    EXPECT_EQ(report.module.attr("VERSION").cast<int>(), 1) << "round " << round;
  }
}
