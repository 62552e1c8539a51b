#include <pybind11/embed.h>  // Python.h first, as CPython requires

#include "interpreter/interpreter.h"

#include <dlfcn.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>

#include "bindings/modhost_module.h"
#include "modules/autoreload.h"
#include "modules/cpython/gil.h"
#include "modules/cpython/log.h"
#include "modules/cpython/translate_errors.h"
#include "modules/module_cache.h"
#include "modules/shutdown.h"

namespace py = pybind11;

#if PY_VERSION_HEX >= 0x030C0000
// CPython's internal pycore_pystate.h (exported since 3.12): which thread runs
// the interpreter's main program. python3 marks its main thread while it runs
// the script; debuggers that attach to a running process (3.14's
// sys.remote_exec, python3 -m pdb -p PID) look for that thread.
extern "C" int _PyInterpreterState_SetRunningMain(PyInterpreterState*);
extern "C" void _PyInterpreterState_SetNotRunningMain(PyInterpreterState*);
#endif

namespace modhost {

namespace {

interpreter* g_current = nullptr;

// CPython installs its SIGINT handler when the signal module is first
// imported, whatever install_signal_handlers says, if SIGINT then has its
// default action: a plugin importing subprocess or asyncio would turn Ctrl-C
// into a KeyboardInterrupt. Imported now, SIGINT gets its default back, and
// a later import finds the module already there.
void leave_sigint_to_the_host() {
  struct sigaction before {};
  sigaction(SIGINT, nullptr, &before);
  py::module_ signal = py::module_::import("_signal");
  if (!(before.sa_flags & SA_SIGINFO) && before.sa_handler == SIG_DFL)
    signal.attr("signal")(SIGINT, signal.attr("SIG_DFL"));
}

void finalize_python() {
#if PY_VERSION_HEX >= 0x030C0000
  _PyInterpreterState_SetNotRunningMain(PyInterpreterState_Get());
#endif
  Py_FinalizeEx();
}

const std::string& stdlib_dir_name() {
  static const std::string name =
      "python" + std::to_string(PY_MAJOR_VERSION) + "." + std::to_string(PY_MINOR_VERSION);
  return name;
}

bool is_home(const std::filesystem::path& dir) {
  std::error_code ec;
  return std::filesystem::exists(dir / "lib" / stdlib_dir_name() / "os.py", ec);
}

// The libpython this process really uses: the file that defines Py_InitializeFromConfig.
std::filesystem::path linked_library() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&Py_InitializeFromConfig), &info) == 0 || !info.dli_fname)
    return {};
  std::error_code ec;
  auto path = std::filesystem::canonical(info.dli_fname, ec);
  return ec ? std::filesystem::path(info.dli_fname) : path;
}

// The prefix whose lib/pythonX.Y holds the stdlib of `library`: the nearest
// ancestor of the library's directory with that layout (/usr for
// /usr/lib/x86_64-linux-gnu/libpython3.11.so, the venv-less prefix for a
// source build). A static libpython linked into the executable (the host
// program) says nothing of where its stdlib is: the one CMake saw at build
// time (the executable's ancestors could hold another, such as / for /usr
// where /lib links to /usr/lib).
std::filesystem::path python_home(const std::filesystem::path& library) {
  std::error_code ec;
  const bool linked_in = library == std::filesystem::canonical("/proc/self/exe", ec);
  for (auto dir = library.parent_path(); !linked_in && !dir.empty(); dir = dir.parent_path()) {
    if (is_home(dir)) return dir;
    if (dir == dir.root_path()) break;
  }
  return std::filesystem::path(MODHOST_PYTHON_STDLIB).parent_path().parent_path();
}

void check(PyStatus status, PyConfig& config) {
  if (!PyStatus_Exception(status)) return;
  PyConfig_Clear(&config);
  std::string what = "modhost: cannot start Python";
  if (status.func) what += std::string(" (") + status.func + ")";
  if (status.err_msg) what += std::string(": ") + status.err_msg;
  throw error(what);
}

}  // namespace

interpreter::interpreter(interpreter_config config) : config_(std::move(config)) {
  if (g_current || Py_IsInitialized())
    throw std::logic_error("modhost::interpreter: Python is already running in this process");

  info_.library = linked_library();
  info_.home = python_home(info_.library);

  PyConfig py_config;
  PyConfig_InitPythonConfig(&py_config);
  py_config.parse_argv = 0;  // sys.argv exactly as given; options are the host's business
  py_config.use_environment = config_.use_environment ? 1 : 0;
  py_config.install_signal_handlers = config_.install_signal_handlers ? 1 : 0;
  py_config.safe_path = 1;  // never an implicit sys.path[0]; run_file adds it explicitly
  // Module roots police what loads once the import hook exists. What
  // python3 would load from elsewhere before that, or around it, would
  // escape them: modules on PYTHONPATH, .pth files of the user site and of
  // site-packages (which run code at start-up), bytecode under
  // PYTHONPYCACHEPREFIX. With roots those are off, as python3 -I does for
  // the first two, and site runs only after the hook exists
  // (start_site_within_roots). Environment variables that load no code
  // (PYTHONDONTWRITEBYTECODE, PYTHONUNBUFFERED, ...) still count.
  const bool roots = !config_.cache.module_roots.empty();
  if (roots) {
    py_config.user_site_directory = 0;
    py_config.site_import = 0;
    if (config_.use_environment)  // empty, not unset: unset reads the variable
      check(PyConfig_SetString(&py_config, &py_config.pythonpath_env, L""), py_config);
  }
  check(PyConfig_SetBytesString(&py_config, &py_config.home, info_.home.c_str()), py_config);
  auto executable = info_.home / "bin" / stdlib_dir_name();
  std::error_code ec;
  if (std::filesystem::exists(executable, ec))  // sys.executable: a python3 of the same install
    check(PyConfig_SetBytesString(&py_config, &py_config.executable, executable.c_str()),
          py_config);

  std::vector<std::string> argv = config_.argv.empty() ? std::vector<std::string>{""}
                                                       : config_.argv;
  std::vector<char*> raw_argv;
  for (auto& arg : argv) raw_argv.push_back(arg.data());
  check(PyConfig_SetBytesArgv(&py_config, static_cast<Py_ssize_t>(raw_argv.size()),
                              raw_argv.data()),
        py_config);
  check(Py_InitializeFromConfig(&py_config), py_config);
  PyConfig_Clear(&py_config);
  g_current = this;
#if PY_VERSION_HEX >= 0x030C0000
  // The thread that owns the interpreter runs its main program, for as long as it lives.
  if (_PyInterpreterState_SetRunningMain(PyInterpreterState_Get()) != 0) PyErr_Clear();
#endif
  // pybind11 creates its internals on first use and records the creating
  // thread's thread state for later GIL acquisitions on that thread. Made
  // here, on the thread that owns the interpreter: made first on a host
  // thread whose thread state is later deleted (PyGILState_Release), that
  // record would dangle.
  py::detail::get_internals();

  try {
    translate_errors([&] {
      auto sys_path = py::module_::import("sys").attr("path").cast<py::list>();
      for (auto it = config_.module_paths.rbegin(); it != config_.module_paths.rend(); ++it)
        sys_path.insert(0, py::str(std::filesystem::absolute(*it).string()));
      if (config_.add_working_directory) sys_path.insert(0, py::str(""));
      if (!config_.install_signal_handlers) leave_sigint_to_the_host();
      // platform.python_version() without importing platform (and re): "3.11.2 (main, ...)".
      std::string version = Py_GetVersion();
      info_.version = version.substr(0, version.find(' '));
    });
    cache_ = std::make_unique<module_cache>(config_.cache);
    if (roots) start_site_within_roots();
    bool polling = config_.watch_polling;
    if (const char* env = std::getenv("MODHOST_WATCH_POLLING"); env && std::string(env) == "1") polling = true;
    autoreload_ = std::make_unique<autoreloader>(*cache_, config_.watch_debounce, polling);
    autoreload_->set_time_limit(config_.reload_time_limit);
    interpreter_facts facts{info_.version, info_.home.string(), info_.library.string(), {}};
    for (const auto& path : config_.module_paths) facts.module_paths.push_back(path.string());
    attach_bindings(*cache_, *autoreload_, std::move(facts));
  } catch (...) {
    detach_bindings();
    autoreload_.reset();
    cache_.reset();
    g_current = nullptr;
    finalize_python();
    throw;
  }
  if (config_.release_gil) released_ = std::make_unique<gil_release>();
}

// With module roots: what python3's start-up (site.main()) does, but with
// the import hook in place and no site directories, whose modules lie
// outside the roots anyway: exit(), help(), sitecustomize (from the stdlib
// or a root, through the policy). Says which variables were ignored.
void interpreter::start_site_within_roots() {
  std::string ignored;
  for (const char* name : {"PYTHONPATH", "PYTHONPYCACHEPREFIX", "PYTHONUSERBASE"})
    if (config_.use_environment && std::getenv(name)) ignored += (ignored.empty() ? "" : ", ") + std::string(name);
  if (!ignored.empty())
    log_line("[modhost] with module roots, ignoring " + ignored + " (code from outside the roots)");
  translate_errors([] {
    py::module_::import("sys").attr("pycache_prefix") = py::none();  // bytecode beside its source only
    py::module_ site = py::module_::import("site");
    site.attr("PREFIXES") = py::list();
    site.attr("ENABLE_USER_SITE") = false;
    site.attr("main")();
  });
}

interpreter::~interpreter() {
  released_.reset();  // the GIL back first: what follows needs it
  // The exit, in python3's order with modhost's own step first:
  //  1. What modhost manages is unloaded (modules/shutdown.h): every module
  //     with acquisitions or an __unload__, dependents first, each one's
  //     releases newest first, then its __unload__. First, because
  //     threading._shutdown (step 2) joins every non-daemon thread, and a
  //     plugin's thread acquired through modhost.acquire stops only when its
  //     release runs: joined first, it would keep the process waiting for
  //     ever. The autoreloader stops before it: nothing reloads a module
  //     being taken down. Only what modhost manages goes this early; the
  //     rest of sys.modules (the stdlib, modules with neither) stays for the
  //     atexit callbacks and Python's finalization, as in python3.
  //  2. python3's exit, done while modhost is still attached so that atexit
  //     callbacks (and the threads joined before them) can use it: join the
  //     non-daemon threads, then run the atexit callbacks, newest first, each
  //     failure printed as python3 prints it. The atexit callbacks come after
  //     the unloads, as python3 runs them after the join: a plugin's callback
  //     still has its namespace (an unload takes a module out of sys.modules,
  //     it does not clear it) but finds what the plugin acquired released, as
  //     after modhost.unload. Py_FinalizeEx finds both done
  //     (threading._shutdown returns at once the second time, and atexit
  //     forgets callbacks it ran).
  //  3. The cache goes (releasing whatever an atexit callback acquired), then
  //     Python finalizes: no C++ object of the host holds Python past it.
  autoreload_->stop_background();
  try {
    for (const auto& line : unload_at_exit(*cache_)) log_line("[modhost] at exit, " + line);
  } catch (const std::exception& e) {  // the exit goes on regardless
    log_line(std::string("[modhost] at exit, unloading failed: ") + e.what());
  }
  try {
    py::dict modules = py::reinterpret_borrow<py::dict>(PyImport_GetModuleDict());
    if (modules.contains("threading")) modules["threading"].attr("_shutdown")();
    py::module_::import("atexit").attr("_run_exitfuncs")();
  } catch (py::error_already_set& e) {
    e.discard_as_unraisable("modhost's exit");
  }
  detach_bindings();
  autoreload_.reset();
  cache_.reset();
  g_current = nullptr;
  finalize_python();
}

interpreter* interpreter::current() noexcept { return g_current; }

namespace {

// What compile(source, filename, "exec", dont_inherit=True) makes of bytes
// (an encoding cookie counts), through the C API as python3 compiles its
// script: builtins.compile first builds the `ast` module's types for its
// "is the source an AST?" check, a sixth of modhost's start-up.
py::object compile_source(std::string_view source, const std::string& filename) {
  if (source.find('\0') != std::string_view::npos)  // compile()'s own error, as this Python words it
    return py::module_::import("builtins").attr("compile")(py::bytes(source.data(), source.size()), filename,
                                                           "exec", 0, true);
  std::string text(source);
  PyCompilerFlags flags{PyCF_SOURCE_IS_UTF8, PY_MINOR_VERSION};
  py::str name(filename);
  PyObject* code = Py_CompileStringObject(text.c_str(), name.ptr(), Py_file_input, &flags, -1);
  if (!code) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(code);
}

}  // namespace

void interpreter::run_string(std::string_view code, const std::string& filename) {
  translate_errors([&] {
    py::dict globals = py::module_::import("__main__").attr("__dict__");
    py::module_::import("builtins").attr("exec")(compile_source(code, filename), globals);
  });
}

void interpreter::run_file(const std::filesystem::path& path) {
  translate_errors([&] {
    auto io = py::module_::import("io");
    // Not io.open_code, which module roots police: the user named the script.
    py::object file = io.attr("open")(path.string(), "rb");
    py::bytes source = file.attr("read")();
    file.attr("close")();
    auto script_dir = std::filesystem::weakly_canonical(std::filesystem::absolute(path)).parent_path();
    py::module_::import("sys").attr("path").attr("insert")(0, script_dir.string());
    py::dict globals = py::module_::import("__main__").attr("__dict__");
    globals["__file__"] = path.string();
    globals["__cached__"] = py::none();
    py::module_::import("builtins").attr("exec")(compile_source(std::string_view(source), path.string()), globals);
  });
}

void interpreter::run_module(const std::string& name) {
  translate_errors([&] {
    auto runpy = py::module_::import("runpy");
    py::object run_module_as_main = runpy.attr("_run_module_as_main");
    try {
      run_module_as_main(name, true);  // python3 -m's own code path: same frames in tracebacks
    } catch (py::error_already_set& e) {
      // A module that cannot be run makes runpy exit with "<sys.executable>:
      // No module named x". sys.executable is a python3 (what subprocesses
      // must start), but the program that failed is this one: name it, as
      // python3 names itself. Only runpy's own exit is renamed, recognized by
      // its traceback ending in _run_module_as_main itself; a SystemExit from
      // the module's code passes through _run_code and is left alone.
      if (!e.matches(PyExc_SystemExit) || !e.trace()) throw;
      py::object tb = e.trace();
      if (!tb.attr("tb_next").is_none() ||
          !tb.attr("tb_frame").attr("f_code").is(run_module_as_main.attr("__code__")))
        throw;
      py::object code = e.value().attr("code");
      std::string prefix = py::str(py::module_::import("sys").attr("executable")).cast<std::string>() + ": ";
      if (!py::isinstance<py::str>(code)) throw;
      std::string message = code.cast<std::string>();
      if (message.compare(0, prefix.size(), prefix) != 0) throw;
      std::error_code ec;
      auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
      std::string program = ec ? std::string("modhost") : self.string();
      PyErr_SetObject(PyExc_SystemExit, py::str(program + ": " + message.substr(prefix.size())).ptr());
      throw py::error_already_set();
    }
  });
}

void interpreter::run_repl() {
  if (!isatty(STDIN_FILENO)) {  // python3 < script.py: read the whole script, run it
    std::string source((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    run_string(source, "<stdin>");
    return;
  }
  run_string(R"PY(
import code as _code, sys as _sys
try:
    import readline as _readline, rlcompleter as _rlcompleter
    _readline.parse_and_bind("tab: complete")
except ImportError:
    pass
_code.interact(
    banner=f"modhost {__import__('modhost').__version__} (Python {_sys.version.split()[0]})\n"
           "Type help(modhost) for the module cache; exit() or Ctrl-D leaves.",
    local=globals(), exitmsg="")
)PY",
             "<repl>");
}

int interpreter::report(const python_error& e) {
  gil_acquire gil;
  if (auto code = e.exit_code()) {
    if (!e.message().empty()) std::cerr << e.message() << std::endl;
    return *code;
  }
  // python3 exits 130 (128 + SIGINT) after an uncaught KeyboardInterrupt of
  // exactly that type (a subclass exits 1), and the host program then dies
  // by SIGINT itself (interpreter/host_main.cpp).
  bool interrupted = e.type_name() == "KeyboardInterrupt";
  e.restore();
  PyErr_Print();  // honours sys.excepthook, like an uncaught exception in python3
  return interrupted ? keyboard_interrupt_exit_code : 1;
}

}  // namespace modhost
