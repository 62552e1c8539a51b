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
// The router loads the plugins `routes` and `status` through modhost's cache.
// They register their routes with the C++ routing table from Python
// (`import router; router.add_route(prefix, handler)`); each route is
// attached to the plugin that added it (modhost::attach_release), so a route
// deleted from routes.py disappears on the next reload, a broken routes.py
// leaves exactly the old routes serving, and unloading a plugin removes its
// routes. The router polls the autoreloader once per tick: a safe point
// between requests.
#include <pybind11/embed.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <modhost/modhost.h>

namespace py = pybind11;
using namespace pybind11::literals;
using steady = std::chrono::steady_clock;

namespace {

volatile std::sig_atomic_t stop_requested = 0;  // set by Ctrl-C

// One line, one write(): the router and the editor thread print at the same
// time, and a line written piecewise (`std::cout << a << b`) can be cut in two
// by the other's ("[router] GET [editor] opening ..."). stdio locks the
// stream for one fwrite, and the flush writes the whole line at once.
void say(const std::string& line) {
  std::string text = line + "\n";
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

struct request {
  const char* method;
  const char* path;
};
const request kRequests[] = {{"GET", "/hello"}, {"GET", "/items/3"}, {"GET", "/admin/users"}, {"GET", "/status"}};

struct response {
  int status = 0;
  std::string body;
};

class router;
router* g_router = nullptr;  // what `import router` adds routes to (under the GIL)

// The routing table: path prefix -> Python handler, filled by the plugins.
class router {
 public:
  explicit router(modhost::module_cache& cache) : cache_(cache) {
    g_router = this;
    cache.load("routes");
    cache.load("status");
  }
  ~router() { g_router = nullptr; }
  router(const router&) = delete;
  router& operator=(const router&) = delete;

  // router.add_route(prefix, handler) from a plugin: the route belongs to the
  // plugin whose code called it; it goes when the plugin reloads or unloads
  // and comes back exactly if its reload fails. A prefix taken is refused.
  void add_route(const std::string& prefix, py::object handler) {
    modhost::attach_release(
        cache_, "route " + prefix,
        [this, prefix, handler] {
          if (!routes_.emplace(prefix, handler).second) throw py::key_error("route " + prefix + " is taken");
        },
        [this, prefix] { routes_.erase(prefix); });
  }

  // The longest matching prefix answers; a plugin that raises answers 500.
  response serve(const request& r) {
    const py::object* handler = nullptr;
    std::size_t best = 0;
    const std::string path = r.path;
    for (const auto& [prefix, h] : routes_)
      if (path.compare(0, prefix.size(), prefix) == 0 && (!handler || prefix.size() > best)) {
        handler = &h;
        best = prefix.size();
      }
    if (!handler) return {404, "no route"};
    try {
      py::tuple answer = (*handler)(r.method, r.path);
      return {answer[0].cast<int>(), answer[1].cast<std::string>()};
    } catch (py::error_already_set& e) {
      return {500, e.what()};
    }
  }

  // "/, /hello, /items/": what is registered now.
  std::string table() const {
    std::string out;
    for (const auto& [prefix, handler] : routes_) out += (out.empty() ? "" : ", ") + prefix;
    return out;
  }

 private:
  modhost::module_cache& cache_;
  std::map<std::string, py::object> routes_;
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
    say("[editor] deleting the /items/ route from routes.py");
    save(version_source(3, "hello from routes v3 (no items)", false), 3);
    wait_live(3);
    say("[editor] saving a broken routes.py");
    // It registers two routes, then fails on a typo: both go, the old routes stay.
    write(routes_, "import router\n\n\ndef hello(method, path):\n    return 200, 'never'\n\n\n"
                   "router.add_route('/hello', hello)\nrouter.add_route('/new', hello)\n"
                   "router.add_route('/items/', itme)\n");
    pause(400);
    save(version_source(4, "hello from routes v4 (fixed)"), 4);
    wait_live(4);
    say("[editor] opening /admin in auth.py (routes took `allowed` from it: updated in place, routes need not re-run)");
    write(routes_.parent_path() / "auth.py",
          "BLOCKED_PREFIXES = ()\n\n\ndef allowed(path):\n    return not path.startswith(BLOCKED_PREFIXES)\n");
    pause(400);
    say("[editor] asking the router to unload the status plugin");
    unload_status = true;
    while (!status_unloaded) pause(1);
    pause(100);
    std::mt19937 random(42);
    for (int version = kFirstTimed; version < kFirstTimed + kTimedEdits; ++version) {
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
      live_at = steady::now().time_since_epoch().count();
      live = version;
    }
  }

  static constexpr int kFirstTimed = 5;
  static constexpr int kTimedEdits = 100;
  std::atomic<bool> unload_status{false};    // set by the editor, done by the router
  std::atomic<bool> status_unloaded{false};
  std::atomic<int> expected{1};
  std::atomic<int> live{1};
  std::atomic<steady::rep> live_at{0};  // when the router first served `live`
  std::atomic<bool> finished{false};
  std::vector<steady::rep> latencies_ns;  // written by the editor thread; read once it finished

 private:
  static std::string version_source(int version, const std::string& greeting, bool items = true) {
    return "import router\nfrom auth import allowed\n\nVERSION = " + std::to_string(version) +
           "\nITEMS = {1: 'apple', 2: 'pear', 3: 'plum'}\n\n\n"
           "def hello(method, path):\n    return 200, '" + greeting + "'\n\n\n"
           "def item(method, path):\n"
           "    key = int(path.rsplit('/', 1)[1])\n"
           "    return (200, ITEMS[key]) if key in ITEMS else (404, 'no such item')\n\n\n"
           "def other(method, path):\n"
           "    return (404, 'not found') if allowed(path) else (403, 'forbidden')\n\n\n"
           "router.add_route('/hello', hello)\n" +
           (items ? "router.add_route('/items/', item)\n" : "") + "router.add_route('/', other)\n";
  }
  static void write(const std::filesystem::path& file, const std::string& text) {
    std::ofstream(file, std::ios::trunc) << text;
  }
  // Odd versions are saved the way many editors do: a temp file renamed over.
  // The latency runs from the save's last syscall (the close or the rename).
  void save(const std::string& text, int version) {
    expected = version;
    if (version % 2) {
      auto temp = routes_.parent_path() / ".routes.py.swp";
      write(temp, text);
      std::filesystem::rename(temp, routes_);
    } else {
      write(routes_, text);
    }
    written_at_ = steady::now().time_since_epoch().count();
  }
  void wait_live(int version) {
    auto deadline = steady::now() + std::chrono::seconds(10);
    while (live != version && steady::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (live != version) {
      say("[editor] version " + std::to_string(version) + " did not go live within 10 s");
      return;
    }
    // Served before the save's timestamp was taken: it went live within the save.
    if (version >= kFirstTimed) latencies_ns.push_back(std::max<steady::rep>(0, live_at - written_at_));
  }
  static void pause(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

  std::filesystem::path routes_;
  steady::rep written_at_ = 0;
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

// `import router` from a plugin: the routing table's registration call.
PYBIND11_EMBEDDED_MODULE(router, m) {
  m.def(
      "add_route",
      [](const std::string& prefix, py::object handler) {
        if (!g_router) throw std::runtime_error("the router is not running");
        if (!PyCallable_Check(handler.ptr())) throw py::type_error("handler must be callable");
        g_router->add_route(prefix, std::move(handler));
      },
      "prefix"_a, "handler"_a,
      "add_route(prefix, handler): requests whose path starts with prefix (the longest\n"
      "prefix wins) are answered by handler(method, path) -> (status, body). The route\n"
      "belongs to the calling plugin: it goes when the plugin reloads or unloads.");
}

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

  modhost::set_log_sink(say);  // modhost's own lines go where the router's go, in order
  // Ctrl-C belongs to the host (interpreter_config::install_signal_handlers):
  // it ends the serving loop, and the interpreter's destructor then unloads
  // the plugins cleanly.
  std::signal(SIGINT, [](int) { stop_requested = 1; });
  modhost::interpreter_config config;
  config.argv.assign(argv, argv + argc);
  config.module_paths = {plugins};
  // The routing table outlives the interpreter: destroying the interpreter
  // unloads the plugins first, and their routes' releases (attach_release)
  // erase them from this table, which must still be there then.
  std::optional<router> app;
  modhost::interpreter python(config);
  auto& cache = python.cache();
  python.autoreload().set_mode(modhost::autoreload_mode::explicit_only);
  python.autoreload().watch_directory(plugins);
  demo_editor editor(plugins / "routes.py");
  auto quiet = [&] { return demo && editor.expected >= demo_editor::kFirstTimed; };  // the timed edits only count
  // Every autoreload's outcome, as it happens: no need to poll the plugins' state.
  cache.subscribe([&](const modhost::reload_report& r) {
    if (quiet()) return;
    if (r.outcome == modhost::reload_outcome::failed) {
      const auto& e = *r.error;
      std::string where = e.file().empty() ? "" : " at " + std::filesystem::path(e.file()).filename().string() + ":" +
                                                        std::to_string(e.line());
      say("[router] " + r.failed_module + ".py on disk is broken (" + e.type_name() + where +
          "); still serving the previous version");
    } else if (r.outcome == modhost::reload_outcome::reloaded) {
      std::string line = "[router] reloaded";
      for (const auto& name : r.reexecuted) line += " " + name;
      say(line + " (generation " + std::to_string(r.generation) + ", " + std::to_string(r.duration.count() / 1000) +
          " us)");
    }
  });

  return modhost::interpreter::exit_code_of([&] {
    app.emplace(cache);
    std::thread editing;
    if (demo) editing = std::thread([&] { editor.run(); });
    say("[router] serving with plugins from " + plugins.string() + (demo ? "" : " (edit them now; Ctrl-C stops)"));

    std::map<std::string, std::string> last;  // path -> last answer printed
    std::string last_table;
    auto stop_at = steady::now() + std::chrono::seconds(seconds);
    while (!stop_requested && (demo ? !editor.finished.load() : steady::now() < stop_at)) {
      python.autoreload().poll();  // the safe point: between requests
      if (editor.unload_status && !editor.status_unloaded) {
        say("[router] unloading plugin status");
        (void)cache.unload("status");  // its routes go with it
        editor.status_unloaded = true;
      }
      if (app->table() != last_table && !quiet()) {
        last_table = app->table();
        say("[router] routes: " + last_table);
      }
      for (const auto& r : kRequests) {
        response answer = app->serve(r);
        if (std::string(r.path) == "/hello") editor.observe(answer.body);
        std::string line = std::to_string(answer.status) + " " + answer.body;
        if (last[r.path] != line && !quiet()) {
          say(std::string("[router] ") + r.method + " " + r.path + " -> " + line);
          last[r.path] = line;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (editing.joinable()) editing.join();
    if (demo) {
      say("[router] GET /hello -> " + app->serve(kRequests[0]).body);
      const auto& l = editor.latencies_ns;
      char summary[256];
      std::snprintf(summary, sizeof summary,
                    "[demo] %zu timed edits went live without a restart. save-to-live latency "
                    "(from the save's close or rename, router polling every ~1 ms): "
                    "median %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms",
                    l.size(), percentile(l, 0.5), percentile(l, 0.9), percentile(l, 0.99), percentile(l, 1.0));
      say(summary);
      std::filesystem::remove_all(plugins);
    }
  });
}
