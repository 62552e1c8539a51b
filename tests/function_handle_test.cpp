// function_handle: a C++ handle always calls the current version.
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
class FunctionHandle : public cache_test {};
}  // namespace

TEST_F(FunctionHandle, CallsTheCurrentVersion) {
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

TEST_F(FunctionHandle, AfterUnloadItRaisesImportErrorAndAReimportRebindsIt) {
  write("mc_handle_gone.py", "def value():\n    return 1\n");
  import("mc_handle_gone");
  modhost::function_handle value(cache(), "mc_handle_gone", "value");
  EXPECT_EQ(value().cast<int>(), 1);
  // The handle itself is a holder: unload refuses until forced.
  EXPECT_THROW((void)cache().unload("mc_handle_gone"), modhost::module_in_use_error);
  (void)cache().unload("mc_handle_gone", /*force=*/true);
  try {
    value();
    FAIL() << "a handle into an unloaded module must fail";
  } catch (const python_error& e) {
    EXPECT_EQ(e.type_name(), "ImportError");
    EXPECT_NE(e.message().find("mc_handle_gone"), std::string::npos);
  }
  write("mc_handle_gone.py", "def value():\n    return 2\n");
  import("mc_handle_gone");
  EXPECT_EQ(value().cast<int>(), 2);
}
