// Thread stress: Python threads and C++ host threads call a plugin (through
// its module attribute, a `from plug import compute` binding, and a
// modhost::function_handle) while another thread reloads it 1,000 times,
// plain and deep alternately, some reloads failing on purpose.
//
// What is asserted: no crash, no deadlock, every reload has the outcome its
// source asks for, and each call runs one committed version entirely: its
// code never changes mid-call, every global it reads comes from one version,
// it never sees a half-executed module or a version whose reload failed, and
// attribute reads of the module from other threads never disagree. After a
// deep reload, code and globals are the same version for every caller. After
// a plain reload a function object taken earlier (the `from` binding) runs
// its old code against the new globals -- importlib's semantics, counted as
// "stale" and not a failure.
#include <gtest/gtest.h>
#include <pybind11/embed.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "interpreter/interpreter.h"
#include "modules/cpython/gil.h"
#include "modules/module_cache.h"
#include "tests/test_support.h"

namespace py = pybind11;
using modhost::testing::exec;
using modhost::testing::temp_dir;

namespace {

constexpr int kReloads = 1000;
constexpr int kFailEvery = 25;  // every 25th version raises at the end of its body
constexpr int kPythonThreads = 3;
constexpr int kHandleThreads = 2;
constexpr int kAttributeThreads = 1;
constexpr auto kDeadline = std::chrono::seconds(240);

// Version v of the plugin. Every value a call returns names the version that
// produced it: a literal in compute's own code, module globals read at the
// start and at the end of the call, and a module-level helper.
std::string plugin_source(int version, bool fails) {
  std::string v = std::to_string(version);
  std::string source =
      "import time\n"
      "VERSION_A = " + v + "\n"
      "def _helper():\n"
      "    return " + v + "\n"
      "def compute(n):\n"
      "    code_start = " + v + "\n"
      "    global_start = VERSION_A\n"
      "    helper_start = _helper()\n"
      "    time.sleep(0)  # let other threads, and the reloader, run mid-call\n"
      "    total = 0\n"
      "    for i in range(n):\n"
      "        total += i\n"
      "    code_end = " + v + "\n"
      "    global_end = VERSION_B\n"
      "    helper_end = _helper()\n"
      "    return (code_start, code_end, global_start, global_end, helper_start, helper_end)\n"
      "class Plugin:\n"
      "    version = " + v + "\n"
      "    def describe(self):\n"
      "        return self.version\n"
      "time.sleep(0)  # stands for I/O at import time (reading a config file)\n"
      "VERSION_B = " + v + "\n";
  if (fails) source += "raise ValueError('version " + v + " is broken')\n";
  return source;
}

// What one kind of caller observed.
struct tally {
  long calls = 0;
  long code_mixed = 0;     // code_start != code_end: the frame's own code changed
  long globals_mixed = 0;  // the globals and helpers one call read came from different versions
  long phantom = 0;        // saw a version whose reload failed and was rolled back
  long stale = 0;          // old code, globals of one newer version (a function object kept across a reload)
  long stale_after_deep = 0;  // ... when that newer version came from a deep reload
  std::map<std::string, long> errors;  // exceptions raised by calls, by type

  void add(const tally& other) {
    calls += other.calls;
    code_mixed += other.code_mixed;
    globals_mixed += other.globals_mixed;
    phantom += other.phantom;
    stale += other.stale;
    stale_after_deep += other.stale_after_deep;
    for (const auto& [type, count] : other.errors) errors[type] += count;
  }
};

std::string to_string(const tally& t) {
  std::string text = std::to_string(t.calls) + " calls, " + std::to_string(t.code_mixed) +
                     " with mixed code, " + std::to_string(t.globals_mixed) +
                     " with mixed globals, " + std::to_string(t.phantom) + " saw a rolled-back version, " +
                     std::to_string(t.stale) + " stale (" + std::to_string(t.stale_after_deep) +
                     " after a deep reload)";
  for (const auto& [type, count] : t.errors) text += ", " + std::to_string(count) + " raised " + type;
  return text;
}

bool is_failing_version(long version) { return version > 0 && version % kFailEvery == 0; }
bool is_deep_version(long version) { return version % 2 == 0; }  // the reloader's choice

// A call's result: (code_start, code_end, global_start, global_end, helper_start, helper_end).
void classify(const std::vector<long>& values, tally& t) {
  ++t.calls;
  long code = values[0], globals = values[2];
  if (values[1] != code) ++t.code_mixed;
  if (std::any_of(values.begin() + 2, values.end(), [&](long v) { return v != globals; }))
    ++t.globals_mixed;
  else if (globals != code) {
    ++t.stale;
    if (is_deep_version(globals)) ++t.stale_after_deep;
  }
  if (std::any_of(values.begin(), values.end(), is_failing_version)) ++t.phantom;
}

// Python side: worker threads started from Python code. Kind "attribute"
// looks compute up on the module for every call; "binding" calls the
// function object a `from plug import compute` took at start. Each also reads
// the module's VERSION_A and VERSION_B attributes, to see whether a
// half-executed module is visible. Results go back to C++ for classify().
const char* const kPythonWorkers = R"PY(
import sys, threading
class _Stress:
    def __init__(self):
        self.stop = False
        self.threads = []
        self.stats = {}
    def worker(self, kind):
        from stress_plug import compute as bound
        module = sys.modules['stress_plug']
        t = self.stats.setdefault(kind, {'results': [], 'torn': 0, 'errors': {}})
        while not self.stop:
            if getattr(module, 'VERSION_A', None) != getattr(module, 'VERSION_B', None):
                t['torn'] += 1
            try:
                r = bound(20) if kind == 'binding' else module.compute(20)
            except Exception as e:
                name = type(e).__name__
                t['errors'][name] = t['errors'].get(name, 0) + 1
                continue
            t['results'].append(r)
    def start(self, kinds):
        for kind in kinds:
            th = threading.Thread(target=self.worker, args=(kind,), name='stress-' + kind, daemon=True)
            th.start()
            self.threads.append(th)
    def join(self, timeout):
        self.stop = True
        for th in self.threads:
            th.join(timeout)
        return [th.name for th in self.threads if th.is_alive()]
)PY";

class ThreadStressTest : public ::testing::Test {
 protected:
  void SetUp() override { sys_path().attr("insert")(0, dir_.path().string()); }
  void TearDown() override {
    sys_path().attr("remove")(dir_.path().string());
    exec("import sys\nsys.modules.pop('stress_plug', None)\nimport gc; gc.collect()");
  }
  static py::object sys_path() { return py::module_::import("sys").attr("path"); }
  modhost::module_cache& cache() { return modhost::interpreter::current()->cache(); }

  temp_dir dir_;
};

}  // namespace

TEST_F(ThreadStressTest, CallsRunOneVersionWhileAThousandReloadsCommit) {
  dir_.write("stress_plug.py", plugin_source(0, false));
  py::module_ plug = py::module_::import("stress_plug");
  modhost::function_handle handle(cache(), "stress_plug", "compute");

  // A deadline without the GIL: faulthandler's watchdog thread dumps every
  // Python thread's stack and exits the process if the test hangs.
  auto faulthandler = py::module_::import("faulthandler");
  faulthandler.attr("dump_traceback_later")(kDeadline.count(), py::arg("exit") = true);

  py::dict scope;
  scope["FAIL_EVERY"] = kFailEvery;
  py::exec(kPythonWorkers, scope);
  py::object stress = scope["_Stress"]();
  std::vector<std::string> kinds = {"attribute", "binding"};
  for (int i = 2; i < kPythonThreads; ++i) kinds.push_back("attribute");
  stress.attr("start")(kinds);

  std::atomic<bool> stop{false};
  std::mutex tallies_mutex;
  tally handle_tally, attribute_tally;
  std::atomic<int> reloads_done{0}, reloads_failed{0}, deep_reloads{0};
  std::vector<std::string> reload_problems;
  int last_good = 0;

  {
    modhost::gil_release release;  // the main thread holds the GIL after start-up

    auto caller = [&](bool through_handle) {
      tally mine;
      modhost::gil_acquire thread_state;  // one Python thread state for this thread's life
      py::object module;
      {
        modhost::gil_release idle;
        while (!stop.load()) {
          modhost::gil_acquire gil;
          if (!module) module = py::module_::import("stress_plug");
          try {
            py::object result = through_handle ? handle(20) : module.attr("compute")(20);
            classify(result.cast<std::vector<long>>(), mine);
          } catch (const modhost::python_error& e) {
            ++mine.errors[e.type_name()];
          } catch (py::error_already_set& e) {
            ++mine.errors[py::str(e.type().attr("__name__")).cast<std::string>()];
          }
        }
        modhost::gil_acquire gil;
        module = py::object();
      }
      std::lock_guard<std::mutex> lock(tallies_mutex);
      (through_handle ? handle_tally : attribute_tally).add(mine);
    };

    std::vector<std::thread> callers;
    for (int i = 0; i < kHandleThreads; ++i) callers.emplace_back(caller, true);
    for (int i = 0; i < kAttributeThreads; ++i) callers.emplace_back(caller, false);

    std::thread reloader([&] {
      for (int version = 1; version <= kReloads; ++version) {
        bool fails = is_failing_version(version);
        dir_.write("stress_plug.py", plugin_source(version, fails));  // no GIL needed
        modhost::gil_acquire gil;
        modhost::reload_options options;
        options.deep = version % 2 == 0;
        deep_reloads += options.deep;
        try {
          auto report = cache().reload("stress_plug", options);
          bool ok = report.outcome == modhost::reload_outcome::reloaded;
          if (fails) ++reloads_failed;
          if (ok == fails || (ok && plug.attr("VERSION_B").cast<int>() != version)) {
            reload_problems.push_back("version " + std::to_string(version) + ": " +
                                      modhost::to_string(report.outcome) + " " +
                                      (report.error ? report.error->what() : ""));
          }
          if (ok) last_good = version;
        } catch (const std::exception& e) {
          reload_problems.push_back("version " + std::to_string(version) + " threw: " + e.what());
        }
        ++reloads_done;
      }
    });

    reloader.join();
    stop = true;
    for (auto& t : callers) t.join();
  }

  auto alive = stress.attr("join")(30).cast<std::vector<std::string>>();
  faulthandler.attr("cancel_dump_traceback_later")();
  EXPECT_TRUE(alive.empty()) << "Python workers still running: " << alive.size();

  std::map<std::string, tally> python_tallies;
  long torn = 0;
  for (auto [kind, stats] : py::dict(stress.attr("stats"))) {
    tally t;
    for (py::handle result : stats["results"]) classify(result.cast<std::vector<long>>(), t);
    torn += stats["torn"].cast<long>();
    for (auto [type, count] : py::dict(stats["errors"])) t.errors[py::str(type)] = count.cast<long>();
    python_tallies[py::str(kind)] = t;
  }
  stress = py::object();
  scope = py::dict();

  tally all;
  all.add(handle_tally);
  all.add(attribute_tally);
  for (const auto& [kind, t] : python_tallies) all.add(t);

  std::printf("[stress] %d reloads (%d deep, %d failing on purpose), last good version %d\n",
              reloads_done.load(), deep_reloads.load(), reloads_failed.load(), last_good);
  std::printf("[stress] C++ handle threads:    %s\n", to_string(handle_tally).c_str());
  std::printf("[stress] C++ attribute threads: %s\n", to_string(attribute_tally).c_str());
  for (const auto& [kind, t] : python_tallies)
    std::printf("[stress] Python %-9s threads: %s\n", kind.c_str(), to_string(t).c_str());
  std::printf("[stress] Python reads of VERSION_A and VERSION_B that disagreed (half-run module): %ld\n", torn);
  std::fflush(stdout);

  EXPECT_EQ(reloads_done.load(), kReloads);
  EXPECT_TRUE(reload_problems.empty()) << reload_problems.size() << " reloads went wrong, first: "
                                       << reload_problems.front();
  EXPECT_EQ(plug.attr("VERSION_A").cast<int>(), last_good);
  EXPECT_EQ(handle(0)[py::int_(0)].cast<int>(), last_good);
  // Every kind of caller got calls through while the reloads ran.
  EXPECT_GT(handle_tally.calls, 0);
  EXPECT_GT(attribute_tally.calls, 0);
  for (const auto& [kind, t] : python_tallies) EXPECT_GT(t.calls, 0) << kind;
  // Each call ran entirely one committed version.
  EXPECT_EQ(all.code_mixed, 0);
  EXPECT_EQ(all.globals_mixed, 0);
  EXPECT_EQ(all.phantom, 0);
  EXPECT_EQ(torn, 0);
  EXPECT_TRUE(all.errors.empty()) << to_string(all);
  // Callers that look the function up for each call run the code of the
  // deep-reloaded version whose globals they see: a call that waited for the
  // reload runs the patched function anew.
  EXPECT_EQ(handle_tally.stale_after_deep, 0);
  EXPECT_EQ(attribute_tally.stale_after_deep, 0);
  EXPECT_EQ(python_tallies["attribute"].stale_after_deep, 0);
}
