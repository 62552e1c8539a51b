// The facade: bad requests raise what Python would, subscribers hear of
// successful reloads.
#include <gtest/gtest.h>
#include <pybind11/embed.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>
#include <type_traits>

#include "modules/module_cache.h"
#include "tests/cache_test.h"

namespace py = pybind11;
using namespace modhost::testing;
using modhost::python_error;
using modhost::reload_outcome;

namespace {
class ModuleCache : public cache_test {};
}  // namespace

TEST_F(ModuleCache, BadRequestsThrowWhatPythonWouldRaise) {
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
  for (const char* refused : {"sys", "builtins", "__main__", "_frozen_importlib", "zipimport"}) {
    auto e = error_of([&] { (void)cache().reload(refused); });
    EXPECT_EQ(e.type_name(), "ValueError");
    EXPECT_NE(e.message().find(refused), std::string::npos);
  }
}

// A host catches one type for whatever modhost throws.
static_assert(std::is_base_of_v<modhost::error, modhost::python_error>);
static_assert(std::is_base_of_v<modhost::error, modhost::module_in_use_error>);

TEST_F(ModuleCache, WhatItThrowsIsAModhostError) {
  EXPECT_THROW((void)cache().reload("mc_never_imported"), modhost::error);
  write("mc_held.py", "X = 1\n");
  py::exec("import mc_held as _mc_held_kept\n");
  try {
    (void)cache().unload("mc_held");
    FAIL() << "the unload of a module a global holds went through";
  } catch (const modhost::error& e) {
    EXPECT_NE(dynamic_cast<const modhost::module_in_use_error*>(&e), nullptr) << e.what();
  }
  py::exec("del _mc_held_kept\n");
  (void)cache().unload("mc_held");
}

TEST_F(ModuleCache, SubscribersHearOfEveryReloadThatRanWithWhereAFailureWasRaised) {
  write("mc_events.py", "X = 1\n");
  import("mc_events");
  std::vector<modhost::reload_report> events;
  auto id = cache().subscribe([&](const modhost::reload_report& r) { events.push_back(r); });
  write("mc_events.py", "X = 2\n");
  (void)cache().reload("mc_events");
  write("mc_events.py", "X = 3\nY = (\n");
  (void)cache().reload("mc_events");
  write("mc_events.py", "X = 4\n\nY = 1 / 0\n");
  (void)cache().reload("mc_events");
  write("mc_events.py", "X = 2\n");
  modhost::reload_options deep;
  deep.deep = true;
  (void)cache().reload("mc_events", deep);  // the code that runs: nothing ran, nothing told
  cache().unsubscribe(id);
  write("mc_events.py", "X = 5\n");
  (void)cache().reload("mc_events");

  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].outcome, modhost::reload_outcome::reloaded);
  EXPECT_EQ(events[0].generation, 2u);
  EXPECT_EQ(events[0].reexecuted, std::vector<std::string>{"mc_events"});
  EXPECT_FALSE(events[0].module.is_none());

  ASSERT_EQ(events[1].outcome, modhost::reload_outcome::failed);
  ASSERT_TRUE(events[1].error);
  EXPECT_EQ(events[1].error->type_name(), "SyntaxError");
  EXPECT_EQ(std::filesystem::path(events[1].error->file()).filename(), "mc_events.py");
  EXPECT_EQ(events[1].error->line(), 2);
  EXPECT_EQ(events[1].generation, 2u);

  ASSERT_EQ(events[2].outcome, modhost::reload_outcome::failed);
  EXPECT_EQ(events[2].error->type_name(), "ZeroDivisionError");
  EXPECT_EQ(events[2].error->message(), "division by zero");
  EXPECT_EQ(std::filesystem::path(events[2].error->file()).filename(), "mc_events.py");
  EXPECT_EQ(events[2].error->line(), 3);
  EXPECT_EQ(events[2].failed_module, "mc_events");
}
