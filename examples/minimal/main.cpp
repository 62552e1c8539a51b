// minimal: a C++ application that embeds Python through modhost, from
// start-up to a clean shutdown. Its plugin, greeter.py, lives in a temporary
// directory that the program edits itself, the way a user would: a new
// version, a broken one, then saves that the autoreloader applies.
//
// README.md quotes this file; the test package.minimal_app builds it against
// the installed package and checks its output.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <thread>

#include <modhost/modhost.h>

namespace fs = std::filesystem;

// The host's own state, which plugins change through `import app`. It must
// outlive the interpreter: destroying the interpreter unloads the plugins,
// and their releases erase their entries from it.
std::map<std::string, std::string> greetings;

std::string listed() {
  std::string out;
  for (const auto& [key, text] : greetings) out += (out.empty() ? "" : ", ") + key + "=" + text;
  return out.empty() ? "(none)" : out;
}

// `import app` in a plugin: app.greeting(key, text) adds a greeting that
// belongs to the calling module (modhost::attach_release). Its release runs
// before that module's code runs again and when it unloads; if a reload
// fails, what the new code added is released and the old greetings are
// added again, so the table ends as it was.
PYBIND11_EMBEDDED_MODULE(app, m) {
  m.def("greeting", [](const std::string& key, const std::string& text) {
    modhost::attach_release(modhost::interpreter::current()->cache(), "greeting " + key,
                            [key, text] { greetings[key] = text; },  // now (and again after a failed reload)
                            [key] { greetings.erase(key); });        // before a reload re-runs it, at unload
  });
}

const char* const kVersion1 = R"py(import app
app.greeting("en", "hello")
def greet(name):
    return f"hello, {name} (v1)"
)py";
const char* const kVersion2 = R"py(import app
app.greeting("en", "hello")
app.greeting("fr", "bonjour")
def greet(name):
    return f"hello, {name} (v2)"
)py";
const char* const kBrokenHalfWay = R"py(import app
app.greeting("de", "hallo")
def greet(name):
    return f"hello, {name} (broken)"
print(undefined_name)
)py";
const char* const kVersion3 = R"py(import app
app.greeting("en", "hello again")
def greet(name):
    return f"hello, {name} (v3)"
)py";
const char* const kSyntaxError = R"py(import app
def greet(name)
    return "never"
)py";

void save(const fs::path& file, const char* source) { std::ofstream(file) << source; }

int main(int argc, char** argv) {
  const fs::path plugins = fs::temp_directory_path() / ("modhost-minimal-" + std::to_string(::getpid()));
  fs::create_directories(plugins);
  const fs::path greeter = plugins / "greeter.py";
  save(greeter, kVersion1);

  // modhost's own lines (an autoreload that failed, trouble at exit) go to
  // stderr unless the host takes them; called on whichever thread logs.
  modhost::set_log_sink([](const std::string& line) { std::cout << "[log] " << line << std::endl; });

  int exit_code = 0;
  {
    modhost::interpreter_config config;
    config.argv.assign(argv, argv + argc);
    config.module_paths = {plugins};  // prepended to sys.path
    // One interpreter per process, created once: CPython cannot be restarted.
    modhost::interpreter python(config);
    modhost::module_cache& cache = python.cache();

    // Every reload that reloaded, failed or was deferred, explicit or automatic.
    int events = 0;
    cache.subscribe([&events](const modhost::reload_report& r) {
      ++events;
      std::cout << "[event] " << modhost::join(r.targets, ", ") << ": " << modhost::to_string(r.outcome);
      if (r.error)
        std::cout << " (" << r.error->type_name() << " at " << fs::path(r.error->file()).filename().string() << ":"
                  << r.error->line() << ")";
      else
        std::cout << ", generation " << r.generation;
      std::cout << std::endl;
    });

    // python3's rules: 0, SystemExit's code, or 1 after printing the traceback.
    exit_code = modhost::interpreter::exit_code_of([&] {
      cache.load("greeter");  // import through the cache
      modhost::function_handle greet(cache, "greeter", "greet");  // always calls the current version
      auto show = [&] { std::cout << greet("world").cast<std::string>() << "; greetings: " << listed() << std::endl; };
      show();

      save(greeter, kVersion2);
      modhost::reload_report report = cache.reload("greeter");  // atomic
      show();

      save(greeter, kBrokenHalfWay);
      report = cache.reload("greeter");  // a failure is a value, not an exception
      if (!report)
        std::cout << "reload failed: " << report.error->what() << "; generation " << report.generation
                  << " keeps running" << std::endl;
      show();  // the old code, and exactly the old greetings

      // From here on, saves go live at the host's safe point: poll(), cheap
      // when nothing changed, called between two frames, requests or ticks.
      python.autoreload().set_mode(modhost::autoreload_mode::explicit_only);
      python.autoreload().watch_directory(plugins);
      auto save_and_poll = [&](const char* source) {
        const int before = events;
        save(greeter, source);
        for (int tick = 0; tick < 500 && events == before; ++tick) {
          python.autoreload().poll();
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      };
      save_and_poll(kVersion3);
      show();
      save_and_poll(kSyntaxError);  // reported through the log sink and to subscribers
      show();
    });
  }  // destroying the interpreter unloads greeter first: its releases run

  std::cout << "after shutdown, greetings: " << listed() << std::endl;
  fs::remove_all(plugins);
  return exit_code;
}
