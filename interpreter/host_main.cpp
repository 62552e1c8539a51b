// The `modhost` host program: python3's command line, with modhost's cache.
//
//   modhost script.py [args]   run a script as __main__
//   modhost -c CODE [args]     run a string
//   modhost -m MODULE [args]   run a module (runpy semantics)
//   modhost                    REPL on a terminal, else run the script on stdin
#include "modules/cpython/reference.h"  // Python.h first, as CPython requires

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "interpreter/interpreter.h"
#include "modules/autoreload.h"
#include "modules/cpython/error_scope.h"
#include "modules/module_cache.h"

namespace {

std::FILE* g_audit_log = nullptr;

// --audit-log: one line per modhost event, "modhost.reload ('plug', '/path/plug.py')".
int log_audit_event(const char* event, PyObject* args, void*) {
  if (std::strncmp(event, "modhost.", 8) != 0) return 0;
  // A repr() that raises is the log's problem, not the audited code's: the
  // error state after the hook is what it was before.
  modhost::error_scope keep;
  auto text = modhost::steal(PyObject_Repr(args));
  const char* utf8 = text ? PyUnicode_AsUTF8(text.ptr()) : nullptr;
  std::fprintf(g_audit_log, "%s %s\n", event, utf8 ? utf8 : "?");
  std::fflush(g_audit_log);
  return 0;
}

constexpr const char* usage =
    "usage: modhost [options] [-c CODE | -m MODULE | SCRIPT | -] [args...]\n"
    "Try 'modhost --help' for more information.\n";

// A command line modhost cannot parse: python3's answer (the problem, the
// usage line, exit status 2), so scripts that probe options see a usage error.
int usage_error(const std::string& problem) {
  std::cerr << "modhost: " << problem << "\n" << usage;
  return 2;
}

// python3's exit after an uncaught KeyboardInterrupt, once Python is
// finalized: die by SIGINT with the default action, so that the shell or the
// parent that waits sees the signal (WIFSIGNALED; a shell reports 130 and
// stops its loop), not a plain exit status.
[[noreturn]] void die_by_sigint() {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  std::signal(SIGINT, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  kill(getpid(), SIGINT);
  std::_Exit(modhost::interpreter::keyboard_interrupt_exit_code);  // only if SIGINT is ignored by force
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"modhost: Python with a module cache that reloads, unloads and inspects "
               "modules safely.\nEverything after SCRIPT, -c CODE or -m MODULE goes to sys.argv.",
               "modhost"};
  app.prefix_command();  // stop at the script: its arguments are its own
  app.set_version_flag("-V,--version", "modhost " MODHOST_VERSION);
  std::string code, module;
  std::vector<std::string> paths;
  bool add_cwd = false;
  app.add_option("-c", code, "Program passed in as a string");
  app.add_option("-m", module, "Run a library module as a script");
  app.add_option("-p,--path", paths, "Prepend DIR to the module search path (repeatable)")
      ->type_name("DIR")
      ->allow_extra_args(false);  // one DIR per -p: the next word may be the script
  app.add_flag("--cwd-path", add_cwd, "Put the working directory on sys.path, as python3 -c does");
  std::string autoreload = "off";
  std::vector<std::string> watch_dirs;
  int debounce_ms = 10;
  bool watch_polling = false;
  app.add_option("--autoreload", autoreload,
                 "Reload changed modules by themselves, between bytecodes: off, explicit "
                 "(watched modules and --watch directories) or all (everything under the "
                 "module search paths)")
      ->check(CLI::IsMember({"off", "explicit", "all"}));
  app.add_option("--watch", watch_dirs, "Watch DIR for changes (repeatable; implies --autoreload explicit)")
      ->type_name("DIR")
      ->check(CLI::ExistingDirectory)  // a mistyped DIR is a usage error, not a silent no-op
      ->allow_extra_args(false);
  app.add_option("--debounce", debounce_ms, "Milliseconds a file must be quiet before it counts as saved")
      ->check(CLI::Range(0, 10000));
  app.add_flag("--watch-polling", watch_polling, "Poll files instead of using inotify");
  double reload_timeout = 10;
  app.add_option("--reload-timeout", reload_timeout,
                 "Seconds an autoreload's new code may run before it is rolled back (inf: no limit)")
      ->type_name("SECONDS")
      ->check(CLI::Validator(
          [](std::string& text) {
            double seconds = std::strtod(text.c_str(), nullptr);
            return seconds > 0 ? std::string() : std::string("must be a positive number of seconds, or inf");
          },
          ""));  // no description: --help shows the type name once
  std::vector<std::string> roots;
  bool strict = false;
  std::string audit_log;
  app.add_option("--root", roots,
                 "Load modules only from DIR and the stdlib (repeatable; symlinks are resolved); "
                 "no PYTHONPATH, user site or site-packages then")
      ->type_name("DIR")
      ->allow_extra_args(false);
  app.add_flag("--strict", strict,
               "Refuse module files writable by group/others or owned by another user, or under "
               "a directory that is (up to /; sticky ones may be writable)");
  app.add_option("--audit-log", audit_log,
                 "Append every modhost.load/reload/unload/refuse audit event to FILE")
      ->type_name("FILE");
  app.footer("Arguments after the script are passed to it: modhost [options] SCRIPT [args...]");
  // python3 ends its own options at -c CODE / -m MODULE too: what follows
  // belongs to the program even when it looks like an option (-m json.tool --help).
  // CLI11 stops at the first positional by itself; cut the rest off here.
  int own_args = argc;
  for (int i = 1; i + 1 < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-c" || arg == "-m") {
      own_args = i + 2;
      break;
    }
    if (arg.size() > 2 && arg[0] == '-' && (arg[1] == 'c' || arg[1] == 'm')) {  // -mjson.tool
      own_args = i + 1;
      break;
    }
    if (arg == "--") break;
    if (arg == "-p" || arg == "--path" || arg == "--autoreload" || arg == "--watch" || arg == "--debounce" ||
        arg == "--root" || arg == "--audit-log" || arg == "--reload-timeout")
      ++i;  // skip the option's value
    else if (arg.empty() || arg[0] != '-') break;
  }
  try {
    app.parse(own_args, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    return usage_error(e.what());
  }
  if (!code.empty() && !module.empty()) return usage_error("use either -c or -m, not both");
  std::vector<std::string> rest = app.remaining();
  // prefix_command() hands an option CLI11 does not know to the program as
  // if it were the script; python3 refuses it ("unknown option --bogus").
  // "--" ends the options (python3 -- -file.py runs -file.py), "-" is stdin.
  if (code.empty() && module.empty() && !rest.empty()) {
    if (rest.front() == "--")
      rest.erase(rest.begin());
    else if (rest.front().size() > 1 && rest.front()[0] == '-')
      return usage_error("unknown option " + rest.front());
  }
  rest.insert(rest.end(), argv + own_args, argv + argc);

  modhost::interpreter_config config;
  config.install_signal_handlers = true;  // Ctrl-C is a KeyboardInterrupt, as in python3
  config.add_working_directory = add_cwd;
  config.module_paths.assign(paths.begin(), paths.end());
  config.watch_debounce = std::chrono::milliseconds(debounce_ms);
  config.watch_polling = watch_polling;
  config.reload_time_limit = std::isinf(reload_timeout) ? std::chrono::milliseconds(0)
                                                       : std::chrono::milliseconds(static_cast<std::int64_t>(
                                                             std::ceil(std::min(reload_timeout, 1e9) * 1000)));
  config.cache.module_roots.assign(roots.begin(), roots.end());
  config.cache.strict_permissions = strict;
  if (!audit_log.empty()) {
    g_audit_log = std::fopen(audit_log.c_str(), "a");
    if (!g_audit_log) {
      std::cerr << "modhost: cannot open audit log '" << audit_log << "': " << std::strerror(errno) << "\n";
      return 2;
    }
    PySys_AddAuditHook(&log_audit_event, nullptr);  // before start-up: sees every event
  }
  if (!watch_dirs.empty() && autoreload == "off") autoreload = "explicit";
  std::string script;
  if (!code.empty()) {
    config.argv.push_back("-c");
  } else if (!module.empty()) {
    config.argv.push_back(module);  // runpy replaces it with the module's path
  } else if (!rest.empty()) {
    script = rest.front();
    rest.erase(rest.begin());
    config.argv.push_back(script);
    if (script != "-" && access(script.c_str(), R_OK) != 0) {
      std::cerr << "modhost: can't open file '" << script << "': " << std::strerror(errno) << "\n";
      return 2;
    }
  } else {
    config.argv.push_back(isatty(STDIN_FILENO) ? "" : "-");
  }
  config.argv.insert(config.argv.end(), rest.begin(), rest.end());

  int status = 0;
  bool interrupted = false;  // an uncaught KeyboardInterrupt, not SystemExit(130)
  try {
    modhost::interpreter python(config);
    if (script == "-") script.clear();  // `modhost -` reads the script from stdin
    auto& reloader = python.autoreload();
    reloader.set_mode(*modhost::parse_autoreload_mode(autoreload));
    for (const auto& dir : watch_dirs) reloader.watch_directory(dir);
    if (reloader.mode() != modhost::autoreload_mode::off) reloader.start_background();
    try {
      if (!code.empty())
        python.run_string(code, "<string>");
      else if (!module.empty())
        python.run_module(module);
      else if (!script.empty())
        python.run_file(script);
      else
        python.run_repl();
    } catch (const modhost::python_error& e) {
      status = modhost::interpreter::report(e);
      interrupted = !e.exit_code() && status == modhost::interpreter::keyboard_interrupt_exit_code;
    }
  } catch (const std::exception& e) {  // Python did not start, or finalizing it failed
    std::cerr << std::string(e.what()) + "\n";  // one write: Python threads may still be printing
    return 1;
  }
  if (interrupted) die_by_sigint();  // Python is finalized by now, as python3 does it
  return status;
}
