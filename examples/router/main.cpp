// router: a request router whose routes live in Python plugins, reloaded live.
//
//   modhost_router [--plugins DIR] [--seconds N]
//       serve a stream of requests for N seconds (default 60); edit
//       DIR/routes.py or DIR/auth.py meanwhile and the answers change
//   modhost_router --demo
//       the same on a copy of the plugins, while a scripted editor saves new
//       versions, a broken one and a fix, then 100 more edits; prints the
//       measured save-to-live latencies
//
// The router loads `routes` through modhost's cache, calls routes.handle
// through a stable handle (it always runs the current version), and polls
// the autoreloader once per tick: a safe point between requests.
#include <pybind11/embed.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "interpreter/interpreter.h"
#include "modules/autoreload.h"
#include "modules/module_cache.h"

namespace py = pybind11;
using steady = std::chrono::steady_clock;

namespace {

struct request {
  const char* method;
  const char* path;
};
const request kRequests[] = {{"GET", "/hello"}, {"GET", "/items/3"}, {"GET", "/admin/users"}};

struct response {
  int status = 0;
  std::string body;
};

class router {
 public:
  explicit router(modhost::module_cache& cache) : handle_(cache, "routes", "handle") { cache.load("routes"); }

  // A plugin that raises answers 500; the router keeps serving.
  response serve(const request& r) {
    try {
      py::tuple answer = handle_(r.method, r.path);
      return {answer[0].cast<int>(), answer[1].cast<std::string>()};
    } catch (const modhost::python_error& e) {
      return {500, e.what()};
    }
  }

 private:
  modhost::function_handle handle_;
};

// The scripted editor of --demo: saves new versions of routes.py and records
// when each was written, so the router can measure when it went live.
class demo_editor {
 public:
  explicit demo_editor(std::filesystem::path routes) : routes_(std::move(routes)) {}

  void run() {
    pause(300);
    save(version_source(2, "hello from routes v2 (edited live)"), 2);
    wait_live(2);
    std::cout << "[editor] saving a broken routes.py" << std::endl;
    write(routes_, "def handle(method, path:\n    return 200, 'never'\n");
    pause(400);
    save(version_source(3, "hello from routes v3 (fixed)"), 3);
    wait_live(3);
    std::cout << "[editor] opening /admin in auth.py (routes imports it: both reload)" << std::endl;
    write(routes_.parent_path() / "auth.py",
          "BLOCKED_PREFIXES = ()\n\n\ndef allowed(path):\n    return not path.startswith(BLOCKED_PREFIXES)\n");
    pause(400);
    std::mt19937 random(42);
    for (int version = 4; version < 4 + kTimedEdits; ++version) {
      pause(std::uniform_int_distribution<int>(5, 25)(random));
      save(version_source(version, "hello from routes v" + std::to_string(version)), version);
      wait_live(version);
    }
    finished = true;
  }

  // Called by the router after each /hello answer.
  void observe(const std::string& body) {
    auto at = body.find(" v");
    if (at == std::string::npos) return;
    int version = std::atoi(body.c_str() + at + 2);
    if (version == expected && live != version) {
      auto latency = steady::now().time_since_epoch().count() - written_at.load();
      if (version >= 4) latencies_ns.push_back(latency);
      live = version;
    }
  }

  static constexpr int kTimedEdits = 100;
  std::atomic<int> expected{1};
  std::atomic<int> live{1};
  std::atomic<steady::rep> written_at{0};
  std::atomic<bool> finished{false};
  std::vector<steady::rep> latencies_ns;  // written by the router thread only

 private:
  static std::string version_source(int version, const std::string& greeting) {
    return "from auth import allowed\n\nVERSION = " + std::to_string(version) +
           "\nITEMS = {1: 'apple', 2: 'pear', 3: 'plum'}\n\n\n"
           "def handle(method, path):\n"
           "    if not allowed(path):\n        return 403, 'forbidden'\n"
           "    if path == '/hello':\n        return 200, '" + greeting + "'\n"
           "    if path.startswith('/items/'):\n"
           "        key = int(path.rsplit('/', 1)[1])\n"
           "        return (200, ITEMS[key]) if key in ITEMS else (404, 'no such item')\n"
           "    return 404, 'not found'\n";
  }
  static void write(const std::filesystem::path& file, const std::string& text) {
    std::ofstream(file, std::ios::trunc) << text;
  }
  // Odd versions are saved the way many editors do: a temp file renamed over.
  void save(const std::string& text, int version) {
    written_at = steady::now().time_since_epoch().count();
    expected = version;
    if (version % 2) {
      auto temp = routes_.parent_path() / ".routes.py.swp";
      write(temp, text);
      std::filesystem::rename(temp, routes_);
    } else {
      write(routes_, text);
    }
  }
  void wait_live(int version) {
    auto deadline = steady::now() + std::chrono::seconds(10);
    while (live != version && steady::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (live != version) std::cout << "[editor] version " << version << " did not go live within 10 s" << std::endl;
  }
  static void pause(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

  std::filesystem::path routes_;
};

double percentile(std::vector<steady::rep> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return static_cast<double>(values[index]) / 1e6;
}

std::filesystem::path copy_plugins(const std::filesystem::path& from) {
  auto to = std::filesystem::temp_directory_path() / ("modhost-router-demo-" + std::to_string(::getpid()));
  std::filesystem::remove_all(to);
  std::filesystem::copy(from, to, std::filesystem::copy_options::recursive);
  return to;
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path plugins = MODHOST_ROUTER_PLUGINS;
  bool demo = false;
  int seconds = 60;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--demo") demo = true;
    else if (arg == "--plugins" && i + 1 < argc) plugins = argv[++i];
    else if (arg == "--seconds" && i + 1 < argc) seconds = std::atoi(argv[++i]);
    else {
      std::cerr << "usage: modhost_router [--demo] [--plugins DIR] [--seconds N]\n";
      return 2;
    }
  }
  if (demo) plugins = copy_plugins(plugins);

  modhost::interpreter_config config;
  config.argv.assign(argv, argv + argc);
  config.module_paths = {plugins};
  modhost::interpreter python(config);
  auto& cache = python.cache();
  python.autoreload().set_mode(modhost::autoreload_mode::explicit_only);
  python.autoreload().watch_directory(plugins);
  demo_editor editor(plugins / "routes.py");
  auto quiet = [&] { return demo && editor.expected >= 4; };  // the timed edits only count
  cache.subscribe([&](const modhost::reload_report& r) {
    if (quiet()) return;
    std::cout << "[router] reloaded";
    for (const auto& name : r.reexecuted) std::cout << " " << name;
    std::cout << " (generation " << r.generation << ", " << r.duration.count() / 1000 << " us)" << std::endl;
  });

  return modhost::interpreter::exit_code_of([&] {
    router app(cache);
    std::thread editing;
    if (demo) editing = std::thread([&] { editor.run(); });
    std::cout << "[router] serving with plugins from " << plugins.string()
              << (demo ? "" : " (edit them now; Ctrl-C stops)") << std::endl;

    std::map<std::string, std::string> last;  // path -> last answer printed
    bool reported_broken = false;
    auto stop_at = steady::now() + std::chrono::seconds(seconds);
    while (demo ? !editor.finished.load() : steady::now() < stop_at) {
      python.autoreload().poll();  // the safe point: between requests
      for (const auto& r : kRequests) {
        response answer = app.serve(r);
        if (std::string(r.path) == "/hello") editor.observe(answer.body);
        std::string line = std::to_string(answer.status) + " " + answer.body;
        if (last[r.path] != line && !quiet()) {
          std::cout << "[router] " << r.method << " " << r.path << " -> " << line << std::endl;
          last[r.path] = line;
        }
      }
      bool broken = cache.info("routes").state == modhost::module_state::failed;
      if (broken && !reported_broken)
        std::cout << "[router] routes.py on disk is broken; still serving the previous version" << std::endl;
      reported_broken = broken;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (editing.joinable()) editing.join();
    if (demo) {
      std::cout << "[router] GET /hello -> " << app.serve(kRequests[0]).body << std::endl;
      const auto& l = editor.latencies_ns;
      std::printf("[demo] %zu timed edits went live without a restart. save-to-live latency "
                  "(debounce %lld ms included): median %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n",
                  l.size(), static_cast<long long>(python.autoreload().watcher().debounce().count()),
                  percentile(l, 0.5), percentile(l, 0.9), percentile(l, 0.99), percentile(l, 1.0));
      std::filesystem::remove_all(plugins);
    }
  });
}
