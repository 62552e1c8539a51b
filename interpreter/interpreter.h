// modhost::interpreter — the one embedded CPython of a process, RAII.
//
// Built from an explicit PyConfig: it loads the stdlib of the libpython the
// program is linked against (found from the library itself, never from
// PATH or PYTHONHOME), puts no working directory on sys.path unless asked,
// and prepends the host's module search paths. Creating it starts Python and
// the module cache; destroying it finalizes Python, after unloading what
// modhost manages (modules with acquisitions or an __unload__, dependents
// first: their releases, then __unload__; see modules/shutdown.h) and only
// then joining threads and running atexit callbacks. CPython cannot be
// restarted safely in one process, so create it once, early in main():
//
//   BAD:  for (...) { modhost::interpreter py; ... }   // second start crashes
//   GOOD: int main() { modhost::interpreter py(config); ... run the app ... }
//
// All run_* functions need the GIL (the main thread holds it after start-up
// unless config.release_gil is set; other threads take it with gil_acquire
// from modules/cpython/gil.h).
// A Python exception surfaces as modhost::python_error.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "modules/cache_options.h"
#include "modules/cpython/python_error.h"
#include "modules/cpython/visibility.h"

namespace modhost MODHOST_API {

class autoreloader;
class module_cache;
class gil_release;

struct interpreter_config {
  // sys.argv; empty means [""] as in an interactive python3.
  std::vector<std::string> argv;
  // Directories prepended to sys.path, first wins.
  std::vector<std::filesystem::path> module_paths;
  // Put the working directory on sys.path (python3 -c does; modhost does not
  // unless asked, so a stray file in the cwd cannot shadow a module).
  bool add_working_directory = false;
  // Ctrl-C (SIGINT) belongs to the host. Off (the default), Python installs
  // no handler of its own: SIGINT keeps the process's disposition, so it
  // stops the application as it would without Python, or runs the host's own
  // handler. On, Python handles it as python3 does: a KeyboardInterrupt in
  // whatever Python code runs next (the host program turns it on), which
  // reaches C++ as a python_error from the next plugin call. Either way a
  // handler the host installed before is kept (CPython replaces only SIG_DFL).
  bool install_signal_handlers = false;
  // Honour PYTHON* environment variables (PYTHONPATH, PYTHONDONTWRITEBYTECODE, ...).
  // PYTHONHOME is never honoured: the stdlib always matches the linked libpython.
  bool use_environment = true;
  // Release the GIL after start-up so host threads can take it (gil_acquire);
  // the main thread then takes it like any other thread.
  bool release_gil = false;
  // Module roots, strict permissions.
  cache_options cache;
  // The autoreloader's file watcher: how long a file must be quiet before it
  // counts as saved, and whether to poll instead of using inotify (the
  // environment variable MODHOST_WATCH_POLLING=1 forces polling too).
  std::chrono::milliseconds watch_debounce{10};
  bool watch_polling = false;
  // How long an autoreload's new code may run before it is rolled back
  // (0: no limit).
  std::chrono::milliseconds reload_time_limit{std::chrono::seconds(10)};
};

// Facts about the running interpreter, for diagnostics and `modhost.python`.
struct interpreter_info {
  std::string version;       // "3.11.2"
  std::filesystem::path home;     // prefix whose lib/pythonX.Y is the stdlib
  std::filesystem::path library;  // the libpython file this process uses
};

class interpreter {
 public:
  explicit interpreter(interpreter_config config = {});
  ~interpreter();
  interpreter(const interpreter&) = delete;
  interpreter& operator=(const interpreter&) = delete;
  interpreter(interpreter&&) = delete;
  interpreter& operator=(interpreter&&) = delete;

  // The live interpreter, or nullptr.
  static interpreter* current() noexcept;

  // Runs Python source in __main__'s namespace (like python3 -c).
  void run_string(std::string_view code, const std::string& filename = "<string>");
  // Runs a script file as __main__ (like python3 FILE): sets __file__ and
  // puts the script's directory first on sys.path, as python3 does.
  void run_file(const std::filesystem::path& path);
  // Runs a module as __main__ with runpy semantics (like python3 -m NAME);
  // sys.argv[0] becomes the module's path.
  // A module that cannot be found raises SystemExit(1) with python3 -m's
  // message, naming this program (python3 names sys.executable, which here is
  // the python3 that subprocesses start, not the program that failed).
  void run_module(const std::string& name);
  // Interactive loop on stdin with line editing when readline is available;
  // Ctrl-C cancels the current line. Returns when stdin ends; exit() and
  // quit() raise SystemExit as usual.
  void run_repl();

  // Runs `fn` and converts its outcome to a process exit code the way
  // python3 does: 0, SystemExit's code, or 1 after printing the traceback
  // (keyboard_interrupt_exit_code for an uncaught KeyboardInterrupt).
  template <class Fn>
  static int exit_code_of(Fn&& fn) {
    try {
      fn();
      return 0;
    } catch (const python_error& e) {
      return report(e);
    }
  }
  // Prints an uncaught exception as python3 would and returns the exit code.
  static int report(const python_error& e);
  // The exit code of an uncaught KeyboardInterrupt (128 + SIGINT, as python3).
  // python3 does not stop there: once finalized, it dies by SIGINT, so that a
  // shell or a parent process sees the user's Ctrl-C (a shell loop stops);
  // the host program does the same (interpreter/host_main.cpp).
  static constexpr int keyboard_interrupt_exit_code = 130;

  // The module cache in front of sys.modules (modules/module_cache.h).
  module_cache& cache() noexcept { return *cache_; }
  // The autoreload policy and file watcher over that cache (modules/autoreload.h).
  autoreloader& autoreload() noexcept { return *autoreload_; }
  const interpreter_info& info() const noexcept { return info_; }
  const interpreter_config& config() const noexcept { return config_; }

 private:
  void start_site_within_roots();

  interpreter_config config_;
  interpreter_info info_;
  std::unique_ptr<module_cache> cache_;  // destroyed before Python finalizes
  std::unique_ptr<autoreloader> autoreload_;  // beside the cache, destroyed before it
  std::unique_ptr<gil_release> released_;  // while config.release_gil holds
};

}  // namespace modhost
