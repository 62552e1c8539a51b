// What every benchmark file of modhost_benchmarks shares: the fixture
// directory (a temp dir on sys.path, written and set up by main() in
// cache_benchmark.cpp before the interpreter starts), the cache of the one
// process-wide interpreter, and the helper that turns an error into a
// skipped benchmark.
#pragma once

#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "interpreter/interpreter.h"
#include "modules/module_cache.h"

namespace modhost_bench {

class temp_dir {
 public:
  temp_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "modhost-bench-XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path write(const std::string& relative, const std::string& text) const {
    auto file = path_ / relative;
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) throw std::runtime_error("cannot write " + file.string());
    return file;
  }

 private:
  std::filesystem::path path_;
};

// The fixture directory (on sys.path); set by main() for the whole run.
inline const temp_dir* g_dir = nullptr;

inline modhost::module_cache& cache() { return modhost::interpreter::current()->cache(); }

// Runs `body`, turning a Python error into a skipped benchmark with its message.
template <class Fn>
void guarded(benchmark::State& state, Fn&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// main() writes bm_ref_0000.py ... bm_ref_1999.py into the fixture directory.
constexpr int kMaxReferrerModules = 2000;

inline std::string ref_module_name(int i) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "bm_ref_%04d", i);
  return buffer;
}

// The ~170-line order-routing plugin of cache_benchmark.cpp.
const char* plugin_source();

// live_reload_benchmark.cpp; main() calls it after the cache benchmarks are registered.
void register_live_reload_benchmarks();

// startup_benchmark.cpp: the host program's start-up against python3's.
void register_startup_benchmarks();

}  // namespace modhost_bench
