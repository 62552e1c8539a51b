// Soak: many reload cycles of a plugin with classes, closures and instances,
// and many load/unload cycles. Resident memory stays flat after warm-up, and
// every old generation dies once nothing holds it (weakrefs clear).
//
// Cycle counts: 10,000 reloads and 1,000 load/unload cycles in a normal
// build. Under a sanitizer (compile-time detection) they are divided by 10
// and the resident-memory bounds are not asserted (ASan's quarantine keeps
// freed memory resident on purpose), only printed. MODHOST_SOAK_SCALE=<n>
// multiplies the counts (e.g. 0.1 for a quick run, 10 for a long one).
#include <gtest/gtest.h>
#include <pybind11/embed.h>
#include <pybind11/stl.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>

#include "interpreter/interpreter.h"
#include "modules/module_cache.h"
#include "tests/test_support.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MODHOST_SOAK_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MODHOST_SOAK_SANITIZED 1
#endif
#endif
#ifndef MODHOST_SOAK_SANITIZED
#define MODHOST_SOAK_SANITIZED 0
#endif

namespace py = pybind11;
using modhost::testing::eval;
using modhost::testing::exec;
using modhost::testing::temp_dir;

namespace {

constexpr bool kSanitized = MODHOST_SOAK_SANITIZED;
constexpr double kMaxGrowthMB = 5.0;

int scaled(int cycles) {
  double scale = kSanitized ? 0.1 : 1.0;
  if (const char* env = std::getenv("MODHOST_SOAK_SCALE")) scale *= std::atof(env);
  return std::max(10, static_cast<int>(cycles * scale));
}

// Resident set size in MB, from /proc/self/statm (second field, in pages).
double rss_mb() {
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

void collect() { exec("import gc; gc.collect()"); }

// Generation g of the soak plugin: classes (with a subclass and a method
// closing over the module), closures, instances, a generator, a payload.
std::string plugin_source(int generation) {
  std::string g = std::to_string(generation);
  return "import functools\n"
         "GENERATION = " + g + "\n"
         "PAYLOAD = [str(i) * 4 for i in range(200)]\n"
         "class Shape:\n"
         "    sides = " + std::to_string(generation % 7 + 3) + "\n"
         "    def __init__(self, n):\n"
         "        self.n = n\n"
         "    def area(self):\n"
         "        return self.n * self.sides\n"
         "    @property\n"
         "    def generation(self):\n"
         "        return GENERATION\n"
         "class Square(Shape):\n"
         "    sides = 4\n"
         "    def area(self):\n"
         "        return super().area() + 1\n"
         "def make_counter(start):\n"
         "    count = [start]\n"
         "    def step():\n"
         "        count[0] += 1\n"
         "        return count[0] + GENERATION\n"
         "    return step\n"
         "COUNTER = make_counter(" + g + ")\n"
         "SCALE = functools.partial(lambda factor, x: factor * x, " + g + ")\n"
         "INSTANCES = [Shape(i) for i in range(10)] + [Square(i) for i in range(10)]\n"
         "def numbers():\n"
         "    yield from range(3)\n"
         "def run():\n"
         "    return COUNTER() + SCALE(1) + sum(s.area() for s in INSTANCES) + sum(numbers())\n";
}

class SoakTest : public ::testing::Test {
 protected:
  void SetUp() override { sys_path().attr("insert")(0, dir_.path().string()); }
  void TearDown() override {
    sys_path().attr("remove")(dir_.path().string());
    exec("import sys\nfor _n in ('soak_plug', 'soak_unload'):\n    sys.modules.pop(_n, None)");
    collect();
  }
  static py::object sys_path() { return py::module_::import("sys").attr("path"); }
  modhost::module_cache& cache() { return modhost::interpreter::current()->cache(); }

  temp_dir dir_;
};

// Weak references to one generation's objects.
struct generation_refs {
  py::list refs;
  explicit generation_refs(py::handle module) {
    auto ref = py::module_::import("weakref").attr("ref");
    for (const char* name : {"Shape", "Square", "make_counter", "run", "COUNTER", "numbers"})
      refs.append(ref(module.attr(name)));
    refs.append(ref(module.attr("INSTANCES")[py::int_(0)]));
    refs.append(ref(module.attr("SCALE")));
  }
  int alive() const {
    int n = 0;
    for (py::handle r : refs) n += !r().is_none();
    return n;
  }
};

}  // namespace

TEST_F(SoakTest, TenThousandReloadsKeepMemoryFlatAndFreeOldGenerations) {
  const int cycles = scaled(10000);
  const int warmup = cycles / 10;
  dir_.write("soak_plug.py", plugin_source(0));
  py::module_ plug = py::module_::import("soak_plug");

  double rss_warm = 0;
  long objects_warm = 0;
  int weak_checks = 0;
  auto started = std::chrono::steady_clock::now();
  for (int generation = 1; generation <= cycles; ++generation) {
    dir_.write("soak_plug.py", plugin_source(generation));
    // Mostly plain reloads (each leaves a whole old generation behind, to be
    // freed); every 4th deep (classes updated in place, old functions replaced).
    bool check = generation % 100 == 1;
    std::optional<generation_refs> old;
    py::object held;
    if (check) {
      old.emplace(plug);
      held = plug.attr("INSTANCES")[py::int_(1)];  // an instance of the old class, still held
    }
    modhost::reload_options options;
    options.deep = generation % 4 == 0 && !check;
    auto report = cache().reload("soak_plug", options);
    ASSERT_EQ(report.outcome, modhost::reload_outcome::reloaded)
        << "generation " << generation << ": " << (report.error ? report.error->what() : "");
    ASSERT_EQ(plug.attr("GENERATION").cast<int>(), generation);
    ASSERT_GT(plug.attr("run")().cast<long>(), 0);
    if (check) {
      collect();
      // The held instance keeps its class alive, nothing else of that generation.
      EXPECT_FALSE(py::reinterpret_borrow<py::object>(old->refs[0])().is_none());  // Shape
      EXPECT_EQ(held.attr("generation").cast<int>(), generation);  // old class, current globals
      held = py::object();
      collect();
      EXPECT_EQ(old->alive(), 0) << "generation " << generation - 1
                                 << ": objects of a replaced generation outlived gc.collect()";
      ++weak_checks;
    }
    if (generation == warmup) {
      collect();
      rss_warm = rss_mb();
      objects_warm = eval("len(__import__('gc').get_objects())").cast<long>();
    }
  }
  collect();
  double rss_end = rss_mb();
  long objects_end = eval("len(__import__('gc').get_objects())").cast<long>();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("[soak] %d reload cycles in %.1f s; RSS %.2f MB at cycle %d, %.2f MB at %d (%+.2f MB); "
              "gc objects %ld -> %ld; %d weakref checks\n",
              cycles, seconds, rss_warm, warmup, rss_end, cycles, rss_end - rss_warm, objects_warm,
              objects_end, weak_checks);
  std::fflush(stdout);
  EXPECT_GT(weak_checks, 0);
  EXPECT_LE(objects_end - objects_warm, 100) << "gc-tracked objects keep growing";
  if (!kSanitized) {
    EXPECT_LT(rss_end - rss_warm, kMaxGrowthMB);
  }
  EXPECT_EQ(cache().info("soak_plug").generation, static_cast<std::uint64_t>(cycles) + 1);
}

TEST_F(SoakTest, ThousandLoadUnloadCyclesFreeTheModuleEachTime) {
  const int cycles = scaled(1000);
  const int warmup = std::max(1, cycles / 10);
  auto ref = py::module_::import("weakref").attr("ref");
  double rss_warm = 0;
  int not_freed = 0;
  auto started = std::chrono::steady_clock::now();
  for (int i = 1; i <= cycles; ++i) {
    dir_.write("soak_unload.py", plugin_source(i));
    py::object weak;
    {
      py::object module = cache().load("soak_unload");
      ASSERT_EQ(module.attr("GENERATION").cast<int>(), i);
      ASSERT_GT(module.attr("run")().cast<long>(), 0);
      weak = ref(module);
    }
    auto report = cache().unload("soak_unload");
    ASSERT_EQ(report.unloaded, std::vector<std::string>{"soak_unload"});
    not_freed += !report.freed;
    collect();
    ASSERT_TRUE(weak().is_none()) << "cycle " << i << ": the unloaded module is still alive";
    ASSERT_FALSE(cache().find("soak_unload"));
    if (i == warmup) rss_warm = rss_mb();
  }
  collect();
  double rss_end = rss_mb();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("[soak] %d load/unload cycles in %.1f s; RSS %.2f MB at cycle %d, %.2f MB at %d (%+.2f MB); "
              "%d unloads reported the module not freed at once\n",
              cycles, seconds, rss_warm, warmup, rss_end, cycles, rss_end - rss_warm, not_freed);
  std::fflush(stdout);
  if (!kSanitized) {
    EXPECT_LT(rss_end - rss_warm, kMaxGrowthMB);
  }
}
