// Start-up: the host program's `modhost -c pass` against the `python3 -c pass`
// of the Python it links, each a fresh process. The time is the child's CPU
// time (user + system, from wait4), which a loaded machine disturbs less
// than the wall clock; the wall clock is a counter beside it.
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/benchmarks/bench_common.h"

extern char** environ;

namespace modhost_bench {
namespace {

double seconds(const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; }

void start_and_exit(benchmark::State& state, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  double wall_total = 0;
  for (auto _ : state) {
    auto started = std::chrono::steady_clock::now();
    pid_t pid = 0;
    if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
      state.SkipWithError(("cannot start " + args[0]).c_str());
      return;
    }
    int status = 0;
    rusage usage{};
    wait4(pid, &status, 0, &usage);
    wall_total += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      state.SkipWithError((args[0] + " -c pass failed").c_str());
      return;
    }
    state.SetIterationTime(seconds(usage.ru_utime) + seconds(usage.ru_stime));
  }
  state.counters["wall_ms"] = 1e3 * wall_total / static_cast<double>(state.iterations());
}

}  // namespace

void register_startup_benchmarks() {
  for (auto [name, program] : {std::pair{"startup/modhost_c_pass", MODHOST_HOST_PROGRAM},
                               std::pair{"startup/python3_c_pass", MODHOST_PYTHON_EXECUTABLE}})
    benchmark::RegisterBenchmark(name, start_and_exit, std::vector<std::string>{program, "-c", "pass"})
        ->UseManualTime()
        ->Iterations(40)
        ->Unit(benchmark::kMillisecond);
}

}  // namespace modhost_bench
