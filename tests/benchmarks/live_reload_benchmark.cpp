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
//                    first returns each new version. With inotify a closed save is
//                    applied at once; the debounce only bounds files still open:
//                      cache_autoreload_default  the cache's own autoreloader, with the
//                                                interpreter's default debounce
//                                                (interpreter_config::watch_debounce, 10 ms)
//                      autoreloader_debounce/N   a modhost::autoreloader on the same cache
//                                                with an N ms debounce (same code path)
//                    The table's time column is the median latency; the counters give
//                    median, p90, p99, max, and where the time goes (waiting for the
//                    change to be seen and settle vs the reload itself).
//   live_background/{atomic,in_place}/{spin,sleep_1ms,handle_cpp}
//                    the same plugin saved 100 times while the autoreloader runs in
//                    background mode (the host program's --autoreload) and the main
//                    thread never calls poll(): see section 3.
//   live_background/first_save_after_import
//                    a module's first save right after its first import.
//   live_background/checkout/N
//                    a git-style checkout (unlink, create, write; one file every
//                    2.5 ms) of N chained modules (m_i imports m_{i-1}), 30 times,
//                    while the main thread spins through a function_handle of the
//                    last one: from the last file's close to the first call that
//                    sees every module on the new version; `mixed` counts calls
//                    that saw two versions (0: each checkout switched whole).
#include <pybind11/embed.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench_common.h"
#include "modules/autoreload.h"
#include "modules/cpython/gil.h"
#include "modules/internal/file_watcher.h"
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

// ---------------------------------------------------------------------------
// 3. Save-to-live in background mode (the host program's --autoreload): no
// poll() from the host. An editor thread saves a new version of the
// ~175-line plugin every 20-60 ms (100 saves), atomically (a temp file
// renamed over) or in place (truncate and write); the main thread runs one
// of three loops and notes when a call first returns each version:
//   spin        Python, pure bytecode, never releases the GIL
//   sleep_1ms   Python, time.sleep(0.001) per iteration
//   handle_cpp  C++, function_handle calls as fast as it can, GIL held
// Latency: the save's last syscall (close or rename) -> the first call that
// returns the new version, both on CLOCK_MONOTONIC. The reload itself
// (compile + execute + deep update, the floor) is reported beside it.

constexpr const char* kBackgroundModule = "bench_bg_plugin";
constexpr int kBackgroundSaves = 100;

// The Python loops. They record (version, monotonic_ns) at each change and
// stop at version `last` or after `seconds`; `errors` counts calls that
// found no live_version (a half-saved file run).
constexpr const char* kPythonLoops = R"PY(
import time

def spin(m, last, seconds):
    seen, errors, calls = [], 0, 0
    current = None
    give_up = time.monotonic() + seconds
    while current != last:
        try:
            v = m.live_version()
        except AttributeError:
            errors += 1
            continue
        calls += 1
        if v != current:
            seen.append((v, time.monotonic_ns()))
            current = v
        if not calls & 1023 and time.monotonic() > give_up:
            break
    return seen, errors, calls

def sleep_1ms(m, last, seconds):
    seen, errors, calls = [], 0, 0
    current = None
    give_up = time.monotonic() + seconds
    while current != last and time.monotonic() < give_up:
        try:
            v = m.live_version()
        except AttributeError:
            errors += 1
            v = current
        calls += 1
        if v != current:
            seen.append((v, time.monotonic_ns()))
            current = v
        time.sleep(0.001)
    return seen, errors, calls
)PY";

// Redirects file descriptor 2 into a temp file: the autoreloader reports a
// failed reload (a half-saved file that does not compile) there.
class stderr_capture {
 public:
  stderr_capture() : file_(std::tmpfile()), saved_(::dup(2)) {
    std::fflush(stderr);
    ::dup2(::fileno(file_), 2);
  }
  ~stderr_capture() {
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    std::fclose(file_);
  }
  std::string text() {
    std::fflush(stderr);
    std::string out;
    char buffer[4096];
    std::rewind(file_);
    for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, file_)) > 0;) out.append(buffer, n);
    return out;
  }

 private:
  std::FILE* file_;
  int saved_;
};

void save_file(const std::filesystem::path& file, const std::string& text, bool atomic) {
  auto target = atomic ? std::filesystem::path(file.string() + ".tmp") : file;
  {
    std::ofstream out(target, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) throw std::runtime_error("cannot write " + target.string());
  }
  if (atomic) std::filesystem::rename(target, file);
}

enum class host_loop { spin, sleep_1ms, handle_cpp };

void background_latency(benchmark::State& state, bool atomic, host_loop loop) {
  using namespace std::chrono;
  auto& reloader = modhost::interpreter::current()->autoreload();
  // In a directory of its own, as plugins usually are: an atomic save changes
  // the directory's mtime, and the reload's find_spec() then re-lists it
  // (importlib's FileFinder), which in the fixture directory's 2,000 files
  // costs several milliseconds by itself.
  const auto dir = g_dir->path() / "background";
  std::filesystem::create_directories(dir);
  py::list sys_path = py::module_::import("sys").attr("path");
  if (!sys_path.contains(py::str(dir.string()))) sys_path.append(dir.string());
  const auto file = dir / (std::string(kBackgroundModule) + ".py");
  const std::int64_t first = ++g_live_version;
  save_file(file, live_source(first), atomic);
  if (cache().find(kBackgroundModule)) {
    modhost::reload_options options;
    options.deep = true;
    auto report = cache().reload(kBackgroundModule, options);
    if (!report) throw std::runtime_error(std::string("initial reload failed: ") + report.error->what());
  } else {
    py::module_::import("importlib").attr("invalidate_caches")();
    cache().load(kBackgroundModule);
  }
  py::object module = cache().find(kBackgroundModule);
  modhost::function_handle live_version(cache(), kBackgroundModule, "live_version");
  reloader.set_mode(modhost::autoreload_mode::all);
  reloader.poll();
  require_inotify(reloader);
  settle(reloader);

  std::vector<double> reload_ms;
  auto subscription = cache().subscribe([&](const modhost::reload_report& report) {
    if (report.outcome == modhost::reload_outcome::reloaded) reload_ms.push_back(ms(report.duration));
  });
  stderr_capture errors_out;
  reloader.start_background();

  const std::int64_t last = first + kBackgroundSaves;
  std::vector<clock_type::time_point> written(kBackgroundSaves + 1);
  std::string writer_error;
  std::thread writer([&] {
    std::mt19937 random(777u + static_cast<unsigned>(first));
    std::uniform_int_distribution<int> gap_ms(20, 60);
    try {
      for (int i = 1; i <= kBackgroundSaves; ++i) {
        std::this_thread::sleep_for(milliseconds(gap_ms(random)));
        save_file(file, live_source(first + i), atomic);
        written[i] = clock_type::now();  // right after the last syscall of the save
      }
    } catch (const std::exception& e) {
      writer_error = e.what();
    }
  });

  std::vector<std::pair<std::int64_t, clock_type::time_point>> seen;
  std::int64_t half_saved = 0, calls = 0;
  const int give_up_s = kBackgroundSaves / 10 + 60;
  std::string host_error;
  try {
    if (loop == host_loop::handle_cpp) {
      std::int64_t current = first;
      const auto give_up = clock_type::now() + seconds(give_up_s);
      while (current != last) {
        std::int64_t v = current;
        try {
          v = live_version().cast<std::int64_t>();
        } catch (const modhost::python_error&) {
          ++half_saved;
        }
        ++calls;
        if (v != current) {
          seen.emplace_back(v, clock_type::now());
          current = v;
        }
        if (!(calls & 1023) && clock_type::now() > give_up) break;
      }
    } else {
      py::dict scope;
      py::exec(kPythonLoops, scope);
      py::tuple result = scope[loop == host_loop::spin ? "spin" : "sleep_1ms"](module, last, give_up_s);
      for (auto item : result[0].cast<py::list>()) {
        auto pair = item.cast<py::tuple>();
        seen.emplace_back(pair[0].cast<std::int64_t>(),
                          clock_type::time_point(nanoseconds(pair[1].cast<std::int64_t>())));
      }
      half_saved = result[1].cast<std::int64_t>();
      calls = result[2].cast<std::int64_t>();
    }
  } catch (const std::exception& e) {
    host_error = e.what();
  }
  {
    modhost::gil_release released;  // the writer needs no GIL, but do not hold it while joining
    writer.join();
  }
  reloader.stop_background();
  reloader.set_mode(modhost::autoreload_mode::off);
  cache().unsubscribe(subscription);
  std::string reported = errors_out.text();
  int failed_reloads = 0;
  for (std::size_t at = 0; (at = reported.find("[modhost] reload of", at)) != std::string::npos; ++at) ++failed_reloads;
  if (!writer_error.empty()) throw std::runtime_error(writer_error);
  if (!host_error.empty()) throw std::runtime_error(host_error);
  if (seen.empty() || seen.back().first != last) throw std::runtime_error("the last version never went live");

  std::vector<double> latency;
  int coalesced = 0;
  auto it = seen.begin();
  for (int i = 1; i <= kBackgroundSaves; ++i) {
    while (it != seen.end() && it->first < first + i) ++it;
    if (it == seen.end()) throw std::runtime_error("a version never went live");
    if (it->first != first + i) ++coalesced;
    latency.push_back(std::max(0.0, ms(it->second - written[i])));
  }
  double median = percentile(latency, 50);
  state.SetIterationTime(median / 1000.0);
  state.counters["saves"] = kBackgroundSaves;
  state.counters["median_ms"] = median;
  state.counters["p90_ms"] = percentile(latency, 90);
  state.counters["p99_ms"] = percentile(latency, 99);
  state.counters["max_ms"] = percentile(latency, 100);
  state.counters["min_ms"] = percentile(latency, 0);
  state.counters["reload_ms"] = percentile(reload_ms, 50);  // compile + execute + deep update
  state.counters["coalesced"] = coalesced;
  state.counters["half_saved_runs"] = static_cast<double>(half_saved + failed_reloads);
  state.counters["calls"] = static_cast<double>(calls);
}

// The first save after a module's first import: the import wakes the
// background thread, which watches the new file at once. 20 fresh modules,
// each imported, then saved 1-5 ms later while the main thread spins
// through a function_handle (the first reload also compiles it for the first time).
void first_save_after_import(benchmark::State& state) {
  using namespace std::chrono;
  auto& reloader = modhost::interpreter::current()->autoreload();
  reloader.set_mode(modhost::autoreload_mode::all);
  reloader.poll();
  require_inotify(reloader);
  settle(reloader);
  reloader.start_background();
  std::vector<double> latency;
  std::mt19937 random(4242u);
  std::string error;
  try {
    for (int i = 0; i < 20; ++i) {
      const std::int64_t version = ++g_live_version;
      std::string name = "bench_first_" + std::to_string(version);
      auto file = g_dir->path() / (name + ".py");
      save_file(file, live_source(version), false);
      py::module_::import("importlib").attr("invalidate_caches")();
      cache().load(name);
      modhost::function_handle live_version(cache(), name, "live_version");
      clock_type::time_point saved{};
      int delay = std::uniform_int_distribution<int>(1, 5)(random);
      std::thread writer([&] {
        std::this_thread::sleep_for(milliseconds(delay));
        save_file(file, live_source(version + 1000000), false);
        saved = clock_type::now();
      });
      const auto give_up = clock_type::now() + seconds(30);
      std::int64_t v = version;
      while (v != version + 1000000 && clock_type::now() < give_up) v = live_version().cast<std::int64_t>();
      auto live = clock_type::now();
      {
        modhost::gil_release released;
        writer.join();
      }
      if (v != version + 1000000) throw std::runtime_error("the first save after an import never went live");
      latency.push_back(std::max(0.0, ms(live - saved)));
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  reloader.stop_background();
  reloader.set_mode(modhost::autoreload_mode::off);
  if (!error.empty()) throw std::runtime_error(error);
  double median = percentile(latency, 50);
  state.SetIterationTime(median / 1000.0);
  state.counters["saves"] = static_cast<double>(latency.size());
  state.counters["median_ms"] = median;
  state.counters["p90_ms"] = percentile(latency, 90);
  state.counters["p99_ms"] = percentile(latency, 99);
  state.counters["max_ms"] = percentile(latency, 100);
  state.counters["min_ms"] = percentile(latency, 0);
}

// A git-style checkout of `count` chained modules, 30 times (see the header).
void checkout_latency(benchmark::State& state) {
  using namespace std::chrono;
  const int count = static_cast<int>(state.range(0));
  constexpr int kCheckouts = 30;
  auto& reloader = modhost::interpreter::current()->autoreload();
  const auto dir = g_dir->path() / ("checkout_" + std::to_string(count));
  std::filesystem::create_directories(dir);
  py::list sys_path = py::module_::import("sys").attr("path");
  if (!sys_path.contains(py::str(dir.string()))) sys_path.append(dir.string());
  auto name_of = [&](int i) { return "bench_co" + std::to_string(count) + "_" + std::to_string(i); };
  // chain() returns every module's version, root first: one version when whole.
  auto source = [&](int i, std::int64_t version) {
    std::string text = "VERSION = " + std::to_string(version) + "\n";
    if (i == 0) return text + "def chain():\n    return [VERSION]\n";
    return "import " + name_of(i - 1) + "\n" + text + "def chain():\n    return " + name_of(i - 1) +
           ".chain() + [VERSION]\n";
  };
  auto write = [&](int i, std::int64_t version) {  // as git does: unlink, create, write
    auto file = dir / (name_of(i) + ".py");
    std::filesystem::remove(file);
    save_file(file, source(i, version), false);
  };
  std::int64_t version = ++g_live_version;
  for (int i = 0; i < count; ++i) write(i, version);
  py::module_::import("importlib").attr("invalidate_caches")();
  for (int i = 0; i < count; ++i) {
    if (cache().find(name_of(i))) {
      modhost::reload_options options;
      options.deep = true;
      auto report = cache().reload(name_of(i), options);
      if (!report) throw std::runtime_error("initial reload failed: " + std::string(report.error->what()));
    } else {
      cache().load(name_of(i));
    }
  }
  modhost::function_handle chain(cache(), name_of(count - 1), "chain");
  reloader.set_mode(modhost::autoreload_mode::all);
  reloader.poll();
  require_inotify(reloader);
  settle(reloader);
  std::vector<double> reload_ms;
  auto subscription = cache().subscribe([&](const modhost::reload_report& report) {
    if (report.outcome == modhost::reload_outcome::reloaded) reload_ms.push_back(ms(report.duration));
  });
  stderr_capture errors_out;
  reloader.start_background();
  std::vector<double> latency;
  std::int64_t mixed = 0;
  std::string error;
  try {
    for (int checkout = 0; checkout < kCheckouts; ++checkout) {
      const std::int64_t next = ++g_live_version;
      clock_type::time_point written{};
      std::thread writer([&] {
        auto at = clock_type::now();
        for (int i = 0; i < count; ++i) {
          write(i, next);
          at += microseconds(2500);
          std::this_thread::sleep_until(at);
        }
        written = clock_type::now();
      });
      const auto give_up = clock_type::now() + seconds(30);
      for (;;) {
        py::list versions = chain();
        std::int64_t first = versions[0].cast<std::int64_t>();
        bool whole = true;
        for (auto v : versions) whole = whole && v.cast<std::int64_t>() == first;
        if (!whole) ++mixed;
        if (whole && first == next) break;
        if (clock_type::now() > give_up) throw std::runtime_error("a checkout never went live");
      }
      auto live = clock_type::now();
      {
        modhost::gil_release released;
        writer.join();
      }
      latency.push_back(std::max(0.0, ms(live - written)));
      std::this_thread::sleep_for(milliseconds(50));  // apart from the next checkout
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  reloader.stop_background();
  reloader.set_mode(modhost::autoreload_mode::off);
  cache().unsubscribe(subscription);
  if (!error.empty()) throw std::runtime_error(error + "; stderr: " + errors_out.text());
  double median = percentile(latency, 50);
  state.SetIterationTime(median / 1000.0);
  state.counters["checkouts"] = kCheckouts;
  state.counters["median_ms"] = median;
  state.counters["p90_ms"] = percentile(latency, 90);
  state.counters["max_ms"] = percentile(latency, 100);
  state.counters["reload_ms"] = percentile(reload_ms, 50);  // one changeset's transaction
  state.counters["reloads"] = static_cast<double>(reload_ms.size());
  state.counters["mixed"] = static_cast<double>(mixed);
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
  // Background mode: 100 saves each (4-5 s); the repetitions flag does not apply.
  for (bool atomic : {true, false}) {
    for (auto [loop, loop_name] : {std::pair{host_loop::spin, "spin"}, std::pair{host_loop::sleep_1ms, "sleep_1ms"},
                                   std::pair{host_loop::handle_cpp, "handle_cpp"}}) {
      std::string name = std::string("live_background/") + (atomic ? "atomic/" : "in_place/") + loop_name;
      benchmark::RegisterBenchmark(name.c_str(),
                                   [atomic, loop = loop](benchmark::State& state) {
                                     guarded(state, [&] {
                                       for (auto _ : state) background_latency(state, atomic, loop);
                                     });
                                   })
          ->Iterations(1)
          ->Repetitions(1)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::RegisterBenchmark("live_background/checkout",
                               [](benchmark::State& state) {
                                 guarded(state, [&] {
                                   for (auto _ : state) checkout_latency(state);
                                 });
                               })
      ->Arg(1)
      ->Arg(5)
      ->Arg(20)
      ->Iterations(1)
      ->Repetitions(1)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("live_background/first_save_after_import",
                               [](benchmark::State& state) {
                                 guarded(state, [&] {
                                   for (auto _ : state) first_save_after_import(state);
                                 });
                               })
      ->Iterations(1)
      ->Repetitions(1)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace modhost_bench
