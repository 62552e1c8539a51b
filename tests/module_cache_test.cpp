// The facade: bad requests raise what Python would, subscribers hear of
// successful reloads.
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

TEST_F(ModuleCache, SubscribersHearOfSuccessfulReloadsOnly) {
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
