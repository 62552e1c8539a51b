// Live reload: what a host pays for autoreload, and how soon a saved file runs.
//
//   live_poll/*      checking for changes with the ~2,000 fixture modules tracked
//                    (bm_ref_0000..1999 plus the other fixtures) and nothing changed:
//                      autoreload_poll          interpreter.autoreload().poll(), mode "all", inotify
//                      stat_every_module        one stat() per module file, in C++ (the
//                                               floor of what IPython's autoreload does
//                                               before every cell)
//                      ipython_style_check      that check as IPython writes it, in Python:
//                                               sys.modules[name].__file__, os.stat, compare
//                      modhost_check_script     modhost.check() called as a script would (info)
//                      autoreload_poll_polling  poll() of an autoreloader forced onto the
//                                               polling fallback (info)
//                      autoreload_poll_rescan   poll() right after the set of tracked modules
//                                               changed (a new import anywhere), which
//                                               rescans every tracked module (info)
//   live_reload_latency/*  save-to-live: a writer thread saves a new version of a
//                    ~175-line plugin (truncate-and-write, a version number in it) every
//                    20-60 ms, 200 times; the host loop on the main thread calls
//                    poll() and a function_handle every ~1 ms and notes when the handle
//                    first returns each new version. The debounce is included:
//                      cache_autoreload_default  the cache's own autoreloader, with the
//                                                interpreter's default debounce
//                                                (interpreter_config::watch_debounce, 10 ms)
//                      autoreloader_debounce/N   a modhost::autoreloader on the same cache
//                                                with an N ms debounce (same code path)
//                    The table's time column is the median latency; the counters give
//                    median, p90, p99, max, and where the time goes (waiting for the
//                    change to be seen and settle vs the reload itself).
#include <pybind11/embed.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_common.h"
#include "modules/autoreload.h"
#include "modules/file_watcher.h"
#include "modules/module_cache.h"

namespace py = pybind11;

namespace modhost_bench {
namespace {

using clock_type = std::chrono::steady_clock;

bool is_under(const std::filesystem::path& path, const std::filesystem::path& dir) {
  auto p = path.lexically_normal(), d = dir.lexically_normal();
  auto mismatch = std::mismatch(d.begin(), d.end(), p.begin(), p.end());
  return mismatch.first == d.end();
}

// Loads the 2,000 bm_ref modules (the referrers benchmark may have already)
// and returns every tracked module with a file in the fixture directory:
// what autoreload's "all" mode covers there.
std::vector<modhost::module_info> tracked_fixture_modules() {
  for (int i = 0; i < kMaxReferrerModules; ++i) cache().load(ref_module_name(i));
  std::vector<modhost::module_info> covered;
  for (auto& info : cache().entries())
    if (!info.path.empty() && is_under(info.path, g_dir->path())) covered.push_back(std::move(info));
  return covered;
}

// Polls until nothing is left settling (earlier benchmarks' writes), so the
// timed polls really see nothing changed.
void settle(modhost::autoreloader& reloader) {
  auto deadline = clock_type::now() + std::chrono::seconds(5);
  for (;;) {
    bool reloaded = !reloader.poll().empty();
    if (!reloaded && !reloader.watcher().has_unsettled()) return;
    if (clock_type::now() > deadline) throw std::runtime_error("autoreload never settled");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void require_inotify(const modhost::autoreloader& reloader) {
  if (reloader.watcher().current_mode() != modhost::file_watcher::mode::inotify)
    throw std::runtime_error("the file watcher is not using inotify: " + reloader.watcher().fallback_reason());
}

// ---------------------------------------------------------------------------
// 1. Nothing changed

void poll_autoreload(benchmark::State& state) {
  guarded(state, [&] {
    auto modules = tracked_fixture_modules();
    auto& reloader = modhost::interpreter::current()->autoreload();
    reloader.set_mode(modhost::autoreload_mode::all);
    reloader.poll();  // sets up the watches
    require_inotify(reloader);
    settle(reloader);
    std::size_t reloads = 0;
    for (auto _ : state) {
      auto reloaded = reloader.poll();
      reloads += reloaded.size();
      benchmark::DoNotOptimize(reloaded.data());
    }
    reloader.set_mode(modhost::autoreload_mode::off);
    if (reloads) throw std::runtime_error("poll() reloaded something while nothing changed");
    state.counters["modules"] = static_cast<double>(modules.size());
    state.counters["inotify"] = 1;
  });
}

void poll_stat_every_module(benchmark::State& state) {
  guarded(state, [&] {
    std::vector<std::string> files;
    for (const auto& info : tracked_fixture_modules()) files.push_back(info.path.string());
    for (auto _ : state) {
      for (const auto& file : files) {
        struct stat st {};
        int rc = ::stat(file.c_str(), &st);
        benchmark::DoNotOptimize(rc);
        benchmark::DoNotOptimize(st.st_mtim);
      }
    }
    state.counters["modules"] = static_cast<double>(files.size());
  });
}

// IPython's ModuleReloader.check(), reduced to its stat loop: for each module,
// its __file__, os.stat(...).st_mtime, compared with the last one seen.
constexpr const char* kIPythonStyleCheck = R"PY(
import os, sys

def make_check(names):
    mtimes = {}
    def check():
        changed = []
        modules = sys.modules
        for name in names:
            module = modules.get(name)
            path = getattr(module, "__file__", None)
            if not path or not path.endswith(".py"):
                continue
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            old = mtimes.get(name)
            if old is not None and old < mtime:
                changed.append(name)
            mtimes[name] = mtime
        return changed
    return check
)PY";

void poll_ipython_style(benchmark::State& state) {
  guarded(state, [&] {
    py::list names;
    for (const auto& info : tracked_fixture_modules()) names.append(info.name);
    py::dict scope;
    py::exec(kIPythonStyleCheck, scope);
    py::object check = scope["make_check"](names);
    check();
    for (auto _ : state) {
      py::object changed = check();
      benchmark::DoNotOptimize(changed.ptr());
    }
    state.counters["modules"] = static_cast<double>(names.size());
  });
}

void poll_modhost_check_script(benchmark::State& state) {
  guarded(state, [&] {
    auto modules = tracked_fixture_modules();
    auto& reloader = modhost::interpreter::current()->autoreload();
    reloader.set_mode(modhost::autoreload_mode::all);
    reloader.poll();
    require_inotify(reloader);
    settle(reloader);
    py::object check = py::module_::import("modhost").attr("check");
    for (auto _ : state) {
      py::object reloaded = check();
      benchmark::DoNotOptimize(reloaded.ptr());
    }
    reloader.set_mode(modhost::autoreload_mode::off);
    state.counters["modules"] = static_cast<double>(modules.size());
  });
}

void poll_polling_fallback(benchmark::State& state) {
  guarded(state, [&] {
    auto modules = tracked_fixture_modules();
    modhost::autoreloader reloader(cache(), std::chrono::milliseconds(30), /*force_polling=*/true);
    reloader.set_mode(modhost::autoreload_mode::all);
    reloader.poll();
    settle(reloader);
    for (auto _ : state) {
      auto reloaded = reloader.poll();
      benchmark::DoNotOptimize(reloaded.data());
    }
    state.counters["modules"] = static_cast<double>(modules.size());
  });
}

// set_mode() invalidates what is covered exactly as a newly tracked module
// does, so the next poll() rescans every tracked module.
void poll_rescan(benchmark::State& state) {
  guarded(state, [&] {
    auto modules = tracked_fixture_modules();
    modhost::autoreloader reloader(cache(), std::chrono::milliseconds(30), false);
    reloader.set_mode(modhost::autoreload_mode::all);
    reloader.poll();
    settle(reloader);
    for (auto _ : state) {
      reloader.set_mode(modhost::autoreload_mode::all);
      auto reloaded = reloader.poll();
      benchmark::DoNotOptimize(reloaded.data());
    }
    state.counters["modules"] = static_cast<double>(modules.size());
  });
}

// ---------------------------------------------------------------------------
// 2. Save-to-live latency

constexpr const char* kLiveModule = "bench_live_plugin";
constexpr int kEdits = 200;
std::int64_t g_live_version = 0;  // keeps growing across runs: every save differs

std::string live_source(std::int64_t version) {
  return std::string(plugin_source()) + "\n\nLIVE_VERSION = " + std::to_string(version) +
         "\n\n\ndef live_version():\n    return LIVE_VERSION\n";
}

double percentile(std::vector<double> sorted, double p) {
  if (sorted.empty()) return 0;
  std::sort(sorted.begin(), sorted.end());
  // nearest rank
  std::size_t rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size(), std::max<std::size_t>(rank, 1)) - 1];
}

double ms(clock_type::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void run_latency(benchmark::State& state, modhost::autoreloader& reloader) {
  using namespace std::chrono;
  tracked_fixture_modules();  // the 2,000 modules are covered too, as in poll()
  const auto file = g_dir->path() / (std::string(kLiveModule) + ".py");

  // Version `first` loaded and settled.
  const std::int64_t first = ++g_live_version;
  g_dir->write(file.filename().string(), live_source(first));
  if (cache().find(kLiveModule)) {
    modhost::reload_options options;
    options.deep = true;
    auto report = cache().reload(kLiveModule, options);
    if (!report) throw std::runtime_error(std::string("initial reload failed: ") + report.error->what());
  } else {
    py::module_::import("importlib").attr("invalidate_caches")();
    cache().load(kLiveModule);
  }
  modhost::function_handle live_version(cache(), kLiveModule, "live_version");
  reloader.set_mode(modhost::autoreload_mode::all);
  reloader.poll();
  require_inotify(reloader);
  settle(reloader);
  if (live_version().cast<std::int64_t>() != first) throw std::runtime_error("the plugin is not at its first version");

  // The editor: saves version first+1 ... first+kEdits, 20-60 ms apart.
  std::vector<clock_type::time_point> written(kEdits + 1);
  std::atomic<bool> writer_done{false};
  std::string writer_error;
  std::thread writer([&] {
    std::mt19937 random(12345u + static_cast<unsigned>(first));
    std::uniform_int_distribution<int> gap_ms(20, 60);
    try {
      for (int i = 1; i <= kEdits; ++i) {
        std::this_thread::sleep_for(milliseconds(gap_ms(random)));
        std::string text = live_source(first + i);
        std::ofstream out(file, std::ios::binary | std::ios::trunc);
        out << text;
        out.close();
        written[i] = clock_type::now();
        if (!out) throw std::runtime_error("cannot write " + file.string());
      }
    } catch (const std::exception& e) {
      writer_error = e.what();
    }
    writer_done = true;
  });

  // The host: poll() and a call through the handle every ~1 ms.
  struct seen_version {
    std::int64_t version;
    clock_type::time_point seen;         // the handle first returned it
    clock_type::time_point poll_start;   // the poll() that reloaded it began
  };
  std::vector<seen_version> seen;
  std::vector<double> reload_ms;
  std::int64_t current = first;
  const std::int64_t last = first + kEdits;
  std::size_t iterations = 0;
  double idle_poll_max = 0;  // the slowest poll() that reloaded nothing
  std::uint64_t revision = cache().tracking_revision();
  int tracking_changes = 0;
  int handle_errors = 0;  // each makes the next poll() rescan every tracked module
  const auto loop_start = clock_type::now();
  auto next = loop_start;
  auto deadline = next + seconds(kEdits / 5 + 30);
  std::string host_error;
  try {
    for (;;) {
      auto poll_start = clock_type::now();
      auto reloaded = reloader.poll();
      auto poll_end = clock_type::now();
      if (!reloaded.empty())
        reload_ms.push_back(ms(poll_end - poll_start));
      else
        idle_poll_max = std::max(idle_poll_max, ms(poll_end - poll_start));
      if (cache().tracking_revision() != revision) {
        revision = cache().tracking_revision();
        ++tracking_changes;
      }
      std::int64_t version = current;
      try {
        version = live_version().cast<std::int64_t>();
      } catch (const modhost::python_error& e) {
        // The code that runs has no live_version: a reload ran a file caught
        // mid-save (the next save's truncate landed after the debounce had
        // settled). Counted and reported; the host keeps going, as a real one would.
        if (handle_errors++ == 0) {
          auto info = cache().info(kLiveModule);
          std::cerr << "live_reload_latency: the handle failed (" << e.what() << "); the module runs "
                    << (info.fingerprint ? std::to_string(info.fingerprint->size) : std::string("?"))
                    << " bytes of source (a full save is " << live_source(current).size() << "), "
                    << py::len(cache().find(kLiveModule).attr("__dict__")) << " names" << std::endl;
        }
      }
      auto now = clock_type::now();
      ++iterations;
      if (version != current) {
        seen.push_back({version, now, poll_start});
        current = version;
      }
      if (current == last && writer_done) break;
      if (now > deadline) throw std::runtime_error("the last version never went live");
      next = std::max(next + milliseconds(1), now);
      std::this_thread::sleep_until(next);
    }
  } catch (const std::exception& e) {
    host_error = e.what();
  }
  const auto loop_end = clock_type::now();
  writer.join();
  reloader.set_mode(modhost::autoreload_mode::off);
  if (!writer_error.empty()) throw std::runtime_error(writer_error);
  if (!host_error.empty()) throw std::runtime_error(host_error);

  // Each save is live when the handle first returns it or a later version
  // (a save overtaken by the next one inside the debounce never runs by itself).
  std::vector<double> latency, detect;
  int coalesced = 0;
  auto it = seen.begin();
  for (int i = 1; i <= kEdits; ++i) {
    while (it != seen.end() && it->version < first + i) ++it;
    if (it == seen.end()) throw std::runtime_error("a version never went live");
    if (it->version != first + i) ++coalesced;
    latency.push_back(std::max(0.0, ms(it->seen - written[i])));
    if (it->version == first + i) detect.push_back(std::max(0.0, ms(it->poll_start - written[i])));
  }
  double median = percentile(latency, 50);
  state.SetIterationTime(median / 1000.0);
  state.counters["debounce_ms"] = static_cast<double>(reloader.watcher().debounce().count());
  state.counters["edits"] = kEdits;
  state.counters["median_ms"] = median;
  state.counters["p90_ms"] = percentile(latency, 90);
  state.counters["p99_ms"] = percentile(latency, 99);
  state.counters["max_ms"] = percentile(latency, 100);
  // Where the time goes (saves that ran by themselves): save -> the poll()
  // that reloads it starts (debounce + loop period), and that poll() itself.
  state.counters["to_poll_ms"] = percentile(detect, 50);
  state.counters["reload_ms"] = percentile(reload_ms, 50);
  state.counters["coalesced"] = coalesced;
  state.counters["idle_poll_max_ms"] = idle_poll_max;
  state.counters["rescans"] = tracking_changes;
  state.counters["half_saved_runs"] = handle_errors;  // polls after which the handle found no function
  state.counters["loop_hz"] = static_cast<double>(iterations) / std::chrono::duration<double>(loop_end - loop_start).count();
}

void latency_cache_autoreload(benchmark::State& state) {
  guarded(state, [&] {
    for (auto _ : state) run_latency(state, modhost::interpreter::current()->autoreload());
  });
}

void latency_debounce(benchmark::State& state) {
  guarded(state, [&] {
    modhost::autoreloader reloader(cache(), std::chrono::milliseconds(state.range(0)), false);
    for (auto _ : state) run_latency(state, reloader);
  });
}

}  // namespace

void register_live_reload_benchmarks() {
  benchmark::RegisterBenchmark("live_poll/autoreload_poll", poll_autoreload);
  benchmark::RegisterBenchmark("live_poll/stat_every_module", poll_stat_every_module)
      ->MinTime(0.2)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("live_poll/ipython_style_check", poll_ipython_style)
      ->MinTime(0.2)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("live_poll/modhost_check_script", poll_modhost_check_script);
  benchmark::RegisterBenchmark("live_poll/autoreload_poll_polling", poll_polling_fallback)
      ->MinTime(0.2)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("live_poll/autoreload_poll_rescan", poll_rescan)
      ->MinTime(0.2)
      ->Unit(benchmark::kMicrosecond);
  // One run of 200 saves each (about 8 s); the repetitions flag does not apply.
  // The default debounce, then 30 ms (the earlier default) and 5 ms for comparison.
  benchmark::RegisterBenchmark("live_reload_latency/cache_autoreload_default", latency_cache_autoreload)
      ->Iterations(1)
      ->Repetitions(1)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("live_reload_latency/autoreloader_debounce", latency_debounce)
      ->Arg(30)
      ->Arg(5)
      ->Iterations(1)
      ->Repetitions(1)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace modhost_bench
