#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/import_hook.h"

#include <marshal.h>  // not in Python.h

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>

#include "modules/cpython/error_scope.h"
#include "modules/cpython/log.h"
#include "modules/cpython/reference.h"
#include "modules/cpython/translate_errors.h"
#include "modules/fingerprint.h"
#include "modules/internal/python_helpers.h"
#include "modules/internal/registry.h"

namespace py = pybind11;

namespace modhost::detail {

namespace {

import_hook* g_hook = nullptr;  // the audit hook's way back; one cache per process
bool g_audit_hook_added = false;  // audit hooks cannot be removed: added once per process
bool g_open_code_hook_set = false;  // nor the open_code hook replaced

std::string utf8(PyObject* text) {
  if (!text || !PyUnicode_Check(text)) return {};
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(text, &size);
  if (!data) {
    PyErr_Clear();
    return {};
  }
  return std::string(data, static_cast<std::size_t>(size));
}

PyObject* dict_item(PyObject* dict, const char* key) {  // borrowed, or null
  return dict && PyDict_Check(dict) ? PyDict_GetItemString(dict, key) : nullptr;
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

// os.path.abspath: lexical, no symlinks resolved.
std::string absolute_path(const std::string& path) {
  std::error_code ec;
  auto absolute = std::filesystem::absolute(path, ec);
  return (ec ? std::filesystem::path(path) : absolute).lexically_normal().string();
}

// The path with every symbolic link resolved. A path that does not exist
// as a whole, such as a module inside a zip archive on sys.path
// ("lib/plugins.zip/plug.py"), resolves up to its longest existing part:
// the archive, which may itself be a link to anywhere.
std::string real_path(const std::string& path) {
  std::filesystem::path rest;
  for (std::filesystem::path part = absolute_path(path);; part = part.parent_path()) {
    char resolved[PATH_MAX];
    if (::realpath(part.c_str(), resolved))
      return rest.empty() ? std::string(resolved) : (std::filesystem::path(resolved) / rest).string();
    if (part == part.root_path() || !part.has_parent_path()) return absolute_path(path);
    rest = rest.empty() ? part.filename() : part.filename() / rest;
  }
}

// The .pyc at `cached` was valid for the source whose stat is `source`
// (python3 used it), but written before the source last changed: a same-size
// edit within the second the .pyc records would leave it stale.
bool bytecode_may_be_stale(PyObject* cached, const fingerprint& source) {
  std::string path = utf8(cached);
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return false;  // compiled from source
  std::int64_t pyc_ctime_ns = static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
  if (pyc_ctime_ns > source.ctime_ns) return false;  // written after the source's last change
  unsigned char header[16];
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) return false;
  bool read = std::fread(header, 1, sizeof header, file) == sizeof header;
  std::fclose(file);
  if (!read) return false;
  auto word = [&](int at) {
    return static_cast<std::uint32_t>(header[at]) | static_cast<std::uint32_t>(header[at + 1]) << 8 |
           static_cast<std::uint32_t>(header[at + 2]) << 16 | static_cast<std::uint32_t>(header[at + 3]) << 24;
  };
  std::uint32_t flags = word(4);
  if (flags & 1) return (flags & 2) == 0;  // hash-based: stale unless checked against the source
  auto mtime = static_cast<std::uint32_t>(source.mtime_ns / 1000000000);
  return word(8) == mtime && word(12) == static_cast<std::uint32_t>(source.size);
}

// The file a module's code comes from, or null: the co_filename of a
// "<module>" code object (exec of a string has one like "<string>").
PyObject* module_file(PyObject* code_object) {
  auto* code = reinterpret_cast<PyCodeObject*>(code_object);
  return PyUnicode_CompareWithASCIIString(code->co_name, "<module>") == 0 ? code->co_filename : nullptr;
}

}  // namespace

// Module roots and strict permissions (cache_options), enforced in C++ so no
// Python frame runs on an import.
struct import_hook::load_policy {
  std::vector<std::string> roots;   // resolved
  std::vector<std::string> stdlib;  // resolved
  std::string roots_text;           // as the message shows them: a Python list
  bool strict = false;

  static bool under(const std::string& path, const std::vector<std::string>& dirs) {
    for (const auto& dir : dirs) {
      std::string prefix = dir;
      while (prefix.size() > 1 && prefix.back() == '/') prefix.pop_back();
      if (path == dir || starts_with(path, prefix + "/")) return true;
    }
    return false;
  }

  bool active() const { return !roots.empty() || strict; }

  std::string outside_roots(const std::string& path, const std::string& real) const {
    if (roots.empty() || under(real, roots) || under(real, stdlib)) return {};
    std::string resolved = real != absolute_path(path) ? " (it resolves to " + real + ")" : "";
    return "outside the module roots " + roots_text + resolved;
  }

  // Strict mode's rule for one file or directory of a module's path, as
  // sshd's StrictModes: owned by root or this user and not writable by
  // group or others; a directory may be if it is sticky (like /tmp), since
  // then only the owner of an entry (checked at the next step down) may
  // rename or remove it. Empty if allowed.
  static std::string strict_refusal(const std::string& path, const struct stat& st) {
    const bool sticky_directory = S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX);
    if ((st.st_mode & 022) && !sticky_directory) {
      char mode[16];
      std::snprintf(mode, sizeof mode, "%o", static_cast<unsigned>(st.st_mode & 07777));
      return path + " is writable by group or others (mode " + mode + "; strict permissions)";
    }
    if (st.st_uid != ::getuid() && st.st_uid != 0)
      return path + " is owned by uid " + std::to_string(st.st_uid) +
             ", not by this process's user or root (strict permissions)";
    return {};
  }

  // Empty if allowed, else why not. Under strict mode the file and every
  // directory above it, up to /, are checked: whoever may rename a
  // directory of the chain can put other code in the file's place.
  std::string refusal(const std::string& origin) const {
    std::string real = real_path(origin);
    if (std::string why = outside_roots(origin, real); !why.empty()) return why;
    if (strict) {
      // (Parts that do not exist are a zip archive's members: its file is checked.)
      for (std::filesystem::path path = real;; path = path.parent_path()) {
        struct stat st {};
        if (::stat(path.c_str(), &st) == 0)
          if (std::string why = strict_refusal(path.string(), st); !why.empty()) return why;
        if (path == path.root_path() || !path.has_parent_path()) break;
      }
    }
    return {};
  }

  // Opens `path` for reading the way the checks above see it, in one go:
  // its resolved path is walked from / one component at a time (openat,
  // following no link, so nothing renamed meanwhile is followed), each
  // opened directory and the file checked through its descriptor. The
  // bytes read from the result are those of the file that was checked.
  // Returns the descriptor; or -1 with `why` (refused) or errno (as open()).
  int open_checked(const std::string& path, std::string& why) const {
    std::string real = real_path(path);
    why = outside_roots(path, real);
    if (!why.empty()) return -1;
    std::filesystem::path walked = "/";
    int fd = ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    const std::filesystem::path relative = std::filesystem::path(real).relative_path();
    for (auto part = relative.begin();; ++part) {
      if (fd < 0) return -1;
      struct stat st {};
      if (::fstat(fd, &st) != 0 || (strict && !(why = strict_refusal(walked.string(), st)).empty())) break;
      if (part == relative.end()) {
        if (S_ISREG(st.st_mode)) return fd;
        why = walked.string() + " is not a regular file";
        break;
      }
      const bool last = std::next(part) == relative.end();
      // O_NONBLOCK: a FIFO in the file's place must not block the open.
      const int flags = last ? O_RDONLY | O_NONBLOCK : O_PATH | O_DIRECTORY;
      int next = ::openat(fd, part->c_str(), flags | O_CLOEXEC | O_NOFOLLOW);
      const int error = errno;
      ::close(fd);
      walked /= *part;
      fd = next;
      if (fd < 0 && (error == ELOOP || (error == ENOTDIR && !last))) {
        why = walked.string() + " is a symbolic link or not a directory: it was replaced while it was opened";
        return -1;
      }
      errno = error;
    }
    const int error = errno;
    ::close(fd);
    errno = error;
    return -1;
  }
};

import_hook::import_hook(const python_helpers& helpers, registry& registry, const cache_options& options)
    : helpers_(helpers),
      registry_(registry),
      interpreter_(PyInterpreterState_Get()),
      opcodes_(bytecode_opcodes::load()),
      policy_(new load_policy) {
  translate_errors([&] {
    policy_->strict = options.strict_permissions;
    py::list roots;
    for (const auto& root : options.module_roots) {
      policy_->roots.push_back(real_path(root.string()));
      roots.append(policy_->roots.back());
    }
    policy_->roots_text = py::repr(roots).cast<std::string>();
    if (!policy_->roots.empty()) {  // sysconfig costs milliseconds at start-up: only when needed
      py::dict paths = py::module_::import("sysconfig").attr("get_paths")();
      for (const char* key : {"stdlib", "platstdlib"})
        if (paths.contains(key)) policy_->stdlib.push_back(real_path(py::str(paths[key]).cast<std::string>()));
    }
    // importlib._bootstrap is the frozen _frozen_importlib, loaded before any
    // import; the importlib package itself is not (python3 -c pass never
    // imports it), so its files are named from the stdlib directory.
    py::module_ bootstrap = py::module_::import("_frozen_importlib");
    call_with_frames_removed_ = bootstrap.attr("_call_with_frames_removed").attr("__code__");
    std::string stdlib = py::str(py::module_::import("sys").attr("_stdlib_dir")).cast<std::string>();
    for (const char* file : {"/importlib/__init__.py", "/importlib/util.py"}) importlib_files_.push_back(stdlib + file);
    if (!g_audit_hook_added) {
      if (PySys_AddAuditHook(&import_hook::audit, nullptr) != 0) throw py::error_already_set();
      g_audit_hook_added = true;
    }
    // What the import system reads (sources, bytecode caches, zip archives)
    // it opens through io.open_code: with a load policy, through
    // open_checked, so that what runs is what was checked.
    if (policy_->active() && !g_open_code_hook_set) {
      if (PyFile_SetOpenCodeHook(&import_hook::open_code, nullptr) != 0) throw py::error_already_set();
      g_open_code_hook_set = true;
    }
  });
  g_hook = this;
}

import_hook::~import_hook() { g_hook = nullptr; }

// Where the C audit hook starts: the event name is compared first, so every
// other event (open, compile, sys._getframe...) costs one or two characters.
int import_hook::audit(const char* event, PyObject* args, void*) {
  bool exec = event[0] == 'e' && std::strcmp(event, "exec") == 0;
  bool import = !exec && event[0] == 'i' && std::strcmp(event, "import") == 0;
  import_hook* hook = g_hook;
  if ((!exec && !import) || !hook || !PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 1) return 0;
  // Audit hooks are process-wide: a subinterpreter's imports come here too.
  // Its modules and objects are its own (since 3.12 even its allocator: an
  // object of one interpreter freed by another corrupts the heap), so the
  // cache, which belongs to one interpreter, does not track them; the load
  // policy still applies to their files.
  if (PyInterpreterState_Get() != hook->interpreter_) {
    PyObject* subject = PyTuple_GET_ITEM(args, 0);
    if (exec) return hook->check_in_subinterpreter(PyCode_Check(subject) ? module_file(subject) : nullptr);
    return hook->check_in_subinterpreter(PyTuple_GET_SIZE(args) >= 2 ? PyTuple_GET_ITEM(args, 1) : nullptr);
  }
  if (exec) return hook->on_exec(PyTuple_GET_ITEM(args, 0));
  // "import" with a path: an extension module is about to be loaded (dlopen).
  if (PyTuple_GET_SIZE(args) < 2 || PyTuple_GET_ITEM(args, 1) == Py_None) return 0;
  return hook->on_extension(PyTuple_GET_ITEM(args, 0), PyTuple_GET_ITEM(args, 1));
}

namespace {

// The loader reading a file through io.open_code: `self` of the frame
// calling it (FileLoader.get_data), or null.
pybind11::object loader_reading() {
  PyFrameObject* frame = PyEval_GetFrame();  // borrowed
  if (!frame) return {};
  error_scope keep;  // whatever this finds or not, the caller's error state stays
  auto locals = steal(PyFrame_GetLocals(frame));
  return locals ? steal(PyMapping_GetItemString(locals.ptr(), "self")) : pybind11::object();
}

}  // namespace

// io.open_code's hook (process-wide, plain C API: it runs in
// subinterpreters too). Refused: a bytecode cache with PermissionError, so
// that the loader compiles the (checked) source instead, as it does for an
// unreadable .pyc; anything else (a source, a module of bytecode alone, a
// zip archive) with ImportError, as an import refuses.
PyObject* import_hook::open_code(PyObject* path, void*) {
  PyObject* io = PyImport_ImportModule("_io");
  if (!io) return nullptr;
  auto io_ref = steal(io);
  import_hook* hook = g_hook;
  std::string text = utf8(path);
  if (!hook || !hook->policy_->active() || text.empty())
    return PyObject_CallMethod(io, "open", "Os", path, "rb");
  std::string why;
  int fd = hook->policy_->open_checked(text, why);
  if (fd < 0 && why.empty()) return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
  if (fd < 0) {
    auto loader = loader_reading();
    auto name_attr = loader ? steal(PyObject_GetAttrString(loader.ptr(), "name")) : pybind11::object();
    PyErr_Clear();
    std::string name = name_attr ? utf8(name_attr.ptr()) : std::string();
    if (hook->audit_refusal(name, path, why) < 0) return nullptr;
    auto ends_with = [&](const char* suffix) {
      const std::size_t n = std::strlen(suffix);
      return text.size() > n && text.compare(text.size() - n, n, suffix) == 0;
    };
    if (!ends_with(".py") && !ends_with(".pyc"))  // a zip archive: zipimport turns any error into "No module named"
      log_line("[modhost] refused to open " + text + ": " + why);
    const bool sourceless = loader && std::strcmp(Py_TYPE(loader.ptr())->tp_name, "SourcelessFileLoader") == 0;
    if (ends_with(".pyc") && !sourceless) {
      PyErr_Format(PyExc_PermissionError, "modhost refuses to read the bytecode cache %s: %s", text.c_str(),
                   why.c_str());
      return nullptr;
    }
    std::string message =
        "modhost refuses to load " + (name.empty() ? std::string() : "'" + name + "' from ") + text + ": " + why;
    auto message_obj = steal(PyUnicode_FromString(message.c_str()));
    auto name_obj = name.empty() ? borrow(Py_None) : steal(PyUnicode_FromString(name.c_str()));
    if (message_obj && name_obj) PyErr_SetImportError(message_obj.ptr(), name_obj.ptr(), path);
    return nullptr;
  }
  PyObject* file = PyObject_CallMethod(io, "open", "is", fd, "rb");
  if (!file) {
    ::close(fd);
    return nullptr;
  }
  auto raw = steal(PyObject_GetAttrString(file, "raw"));  // its name: the path, as open(path) has
  if (!raw || PyObject_SetAttrString(raw.ptr(), "name", path) != 0) PyErr_Clear();
  return file;
}

// The audit event modhost.refuse(name or None, path, reason) for every
// refusal of the load policy: --audit-log records them.
int import_hook::audit_refusal(const std::string& name, PyObject* path, const std::string& why) const {
  auto name_obj = name.empty() ? borrow(Py_None) : steal(PyUnicode_FromString(name.c_str()));
  if (!name_obj) return -1;
  return PySys_Audit("modhost.refuse", "OOs", name_obj.ptr(), path, why.c_str());
}

// In a subinterpreter, with plain C API only: pybind11's objects and the
// cache's belong to the main interpreter.
int import_hook::check_in_subinterpreter(PyObject* file) const {
  if (!policy_->active()) return 0;
  std::string path = utf8(file);
  if (path.empty() || path[0] == '<') return 0;
  std::string why = policy_->refusal(path);
  if (why.empty()) return 0;
  if (audit_refusal({}, file, why) < 0) return -1;
  PyErr_Format(PyExc_ImportError, "modhost refuses to load %s in a subinterpreter: %s", path.c_str(), why.c_str());
  return -1;
}

int import_hook::on_extension(PyObject* name, PyObject* path) {
  std::string text = utf8(name);
  if (text.empty()) return 0;
  try {
    refuse_if_denied(text, path, "modhost.load");
  } catch (py::error_already_set& e) {
    e.restore();
    return -1;
  }
  return 0;
}

void import_hook::refuse_if_denied(const std::string& name, PyObject* origin, const char* event) const {
  py::str name_obj(name);
  if (!origin) origin = Py_None;
  // A host's audit hook may log or veto (raise) the load.
  if (PySys_Audit(event, "OO", name_obj.ptr(), origin) < 0) throw py::error_already_set();
  refuse_by_policy(name, origin);
}

void import_hook::refuse_by_policy(const std::string& name, PyObject* origin) const {
  if (!origin || origin == Py_None || !policy_->active()) return;
  std::string path = utf8(origin);
  if (path.empty()) return;
  std::string why = policy_->refusal(path);
  if (why.empty()) return;
  if (audit_refusal(name, origin, why) < 0) throw py::error_already_set();
  py::str name_obj(name);
  std::string message = "modhost refuses to load " + py::repr(name_obj).cast<std::string>() + " from " + path + ": " + why;
  py::str text(message);
  PyErr_SetImportError(text.ptr(), name_obj.ptr(), origin);
  throw py::error_already_set();
}

// A module of bytecode alone (a .pyc without its .py) is read by its
// loader without io.open_code before CPython 3.14 (and Debian's 3.11): what
// is about to run must be what a checked open of its file holds now, or the
// file was replaced while it was loaded.
void import_hook::refuse_unchecked_bytecode(const std::string& name, PyObject* globals, PyObject* code) const {
  PyObject* loader = dict_item(globals, "__loader__");
  if (!loader || std::strcmp(Py_TYPE(loader)->tp_name, "SourcelessFileLoader") != 0) return;
  PyObject* file = dict_item(globals, "__file__");
  std::string path = utf8(file);
  if (path.empty()) return;
  std::string why;
  std::string data;
  if (int fd = policy_->open_checked(path, why); fd >= 0) {
    char buffer[65536];
    for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) data.append(buffer, static_cast<std::size_t>(n));
    ::close(fd);
  } else if (why.empty()) {
    why = std::strerror(errno);
  }
  constexpr std::size_t header = 16;  // magic, flags, and the source's mtime and size or its hash
  if (why.empty()) {
    auto checked = data.size() < header ? py::object()
                                        : steal(PyMarshal_ReadObjectFromString(data.data() + header,
                                                                               static_cast<Py_ssize_t>(data.size() - header)));
    int same = checked ? PyObject_RichCompareBool(code, checked.ptr(), Py_EQ) : 0;
    if (same != 1) {
      PyErr_Clear();
      why = "the bytecode about to run is not what the file holds (it was replaced while it was loaded)";
    }
  }
  if (why.empty()) return;
  if (audit_refusal(name, file, why) < 0) throw py::error_already_set();
  py::str name_obj(name);
  py::str text("modhost refuses to load " + py::repr(name_obj).cast<std::string>() + " from " + path + ": " + why);
  PyErr_SetImportError(text.ptr(), name_obj.ptr(), file);
  throw py::error_already_set();
}

void import_hook::check_load(const std::string& name, py::handle origin, const char* event) const {
  refuse_if_denied(name, origin.ptr(), event);
}

// importlib executes a module's code through _call_with_frames_removed(exec,
// code, module.__dict__); runpy through _run_code(code, run_globals, ...);
// the host program runs a script from C with __main__'s globals. Any other
// caller may be a loader of its own: see module_of_file().
PyObject* import_hook::exec_globals(PyCodeObject* code, bool& from_runpy, bool& by_other_loader) const {
  PyFrameObject* frame = PyEval_GetFrame();  // borrowed: the frame calling exec
  if (!frame) {
    PyObject* main = PyDict_GetItemString(PyImport_GetModuleDict(), "__main__");  // borrowed
    if (!main || !PyModule_Check(main)) return nullptr;
    PyObject* globals = PyModule_GetDict(main);  // borrowed
    PyObject* file = dict_item(globals, "__file__");
    if (!file || !PyUnicode_Check(file) || PyUnicode_Compare(file, code->co_filename) != 0) return nullptr;
    return globals;
  }
  auto caller = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(PyFrame_GetCode(frame)));
  const char* local = nullptr;
  if (caller.ptr() == call_with_frames_removed_.ptr()) {
    local = "args";
  } else {
    auto* caller_code = reinterpret_cast<PyCodeObject*>(caller.ptr());
    std::string file = utf8(caller_code->co_filename);
    if (utf8(caller_code->co_name) != "_run_code" || file.size() < 8 || file.compare(file.size() - 8, 8, "runpy.py") != 0) {
      PyObject* globals = module_of_file(code->co_filename);
      by_other_loader = globals != nullptr;
      return globals;
    }
    local = "run_globals";
    from_runpy = true;
  }
  auto locals = py::reinterpret_steal<py::object>(PyFrame_GetLocals(frame));
  if (!locals) return nullptr;
  auto value = py::reinterpret_steal<py::object>(PyMapping_GetItemString(locals.ptr(), local));
  if (!value) return nullptr;
  PyObject* globals = value.ptr();
  if (from_runpy == false) {  // args == (code, globals)
    if (!PyTuple_Check(globals) || PyTuple_GET_SIZE(globals) < 2 || PyTuple_GET_ITEM(globals, 0) != reinterpret_cast<PyObject*>(code))
      return nullptr;
    globals = PyTuple_GET_ITEM(globals, 1);
  }
  // Borrowed: the exec call running now holds the globals.
  return PyDict_Check(globals) ? globals : nullptr;
}

// A loader of its own (pytest's assertion rewriter, a plugin system's) calls
// exec(code, module.__dict__) itself, with code compiled from the module's
// file, from a frame modhost knows nothing of. Which namespace exec was given
// no audit event says, and the caller's locals are not read for it (on 3.11
// and 3.12 that would write them into the frame's f_locals, which a
// `locals()` snapshot of the loader then shows): the module is the one whose
// __file__ the code was compiled from that is about to run it, one being
// reloaded, or one being imported, or one made from its spec and not run yet
// (nothing but import attributes in its namespace: module_from_spec, then
// loader.exec_module). The names reloading are few; sys.modules is walked
// only for a module's code run by such a loader, or a file's code exec'ed by
// hand, so importlib's imports pay nothing for it. Borrowed, or null.
PyObject* import_hook::module_of_file(PyObject* filename) const {
  if (!PyUnicode_Check(filename)) return nullptr;
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  auto file_of = [&](PyObject* module) -> PyObject* {  // its namespace, if it runs `filename`'s code
    if (!module || !PyModule_Check(module)) return nullptr;
    PyObject* globals = PyModule_GetDict(module);  // borrowed
    PyObject* file = dict_item(globals, "__file__");
    bool same = file && PyUnicode_Check(file) && PyUnicode_Compare(file, filename) == 0;
    PyErr_Clear();
    return same ? globals : nullptr;
  };
  for (const auto& name : registry_.reloading())
    if (PyObject* globals = file_of(PyDict_GetItemString(modules, name.c_str()))) return globals;
  std::vector<std::pair<py::object, py::object>> candidates;  // (name, module)
  PyObject* key = nullptr;
  PyObject* module = nullptr;
  Py_ssize_t at = 0;
  while (PyDict_Next(modules, &at, &key, &module))  // no Python code runs while sys.modules is walked
    if (file_of(module))
      candidates.emplace_back(py::reinterpret_borrow<py::object>(key), py::reinterpret_borrow<py::object>(module));
  for (const auto& [key, candidate] : candidates) {
    bool initializing = registry::initializing(candidate);  // reads its spec: Python code may run
    if (PyDict_GetItem(modules, key.ptr()) != candidate.ptr()) continue;  // borrowed from here on: still held
    PyObject* globals = file_of(candidate.ptr());
    if (initializing) return globals;
    bool not_run_yet = true;
    PyObject* name = nullptr;
    PyObject* value = nullptr;
    for (Py_ssize_t i = 0; not_run_yet && PyDict_Next(globals, &i, &name, &value);) {
      std::string text = utf8(name);
      not_run_yet = text.size() > 4 && starts_with(text, "__") && text.compare(text.size() - 2, 2, "__") == 0;
    }
    if (not_run_yet) return globals;
  }
  return nullptr;
}

// The module whose top-level code is loading this one by a call (not an
// import statement, which its bytecode already shows): the first frame
// past importlib's own, when it runs in a module still being imported.
std::string import_hook::importer_by_call() const {
  PyFrameObject* first = PyEval_GetFrame();  // borrowed
  auto frame = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(first));
  for (int depth = 0; frame && depth < 64; ++depth) {
    auto* f = reinterpret_cast<PyFrameObject*>(frame.ptr());
    auto code = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(PyFrame_GetCode(f)));
    auto* co = reinterpret_cast<PyCodeObject*>(code.ptr());
    std::string file = utf8(co->co_filename);
    bool importlib = starts_with(file, "<frozen importlib");
    for (const auto& own : importlib_files_) importlib = importlib || file == own;
    if (!importlib) {
      auto globals = py::reinterpret_steal<py::object>(PyFrame_GetGlobals(f));
      std::string name = utf8(dict_item(globals.ptr(), "__name__"));
      PyObject* module = PyDict_GetItemString(PyImport_GetModuleDict(), name.c_str());  // borrowed
      if (name.empty() || !module || !PyModule_Check(module) || PyModule_GetDict(module) != globals.ptr()) return {};
      bool running = name == "__main__" || registry_.reloading().count(name) || registry::initializing(module);
      if (!running) return {};
      if (!(co->co_flags & CO_OPTIMIZED)) {  // module or class level: an import statement is in its bytecode
        int lasti = PyFrame_GetLasti(f);
        auto bytes = py::reinterpret_steal<py::object>(PyCode_GetCode(co));
        if (bytes && lasti >= 0 && lasti < PyBytes_GET_SIZE(bytes.ptr()) &&
            static_cast<unsigned char>(PyBytes_AS_STRING(bytes.ptr())[lasti]) == opcodes_.import_name)
          return {};
      }
      return name;
    }
    frame = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(PyFrame_GetBack(f)));
  }
  return {};
}

// Called by CPython just before a code object runs through builtins.exec.
int import_hook::on_exec(PyObject* code_object) {
  if (!PyCode_Check(code_object)) return 0;
  auto* code = reinterpret_cast<PyCodeObject*>(code_object);
  if (PyUnicode_CompareWithASCIIString(code->co_name, "<module>") != 0) return 0;
  // exec of a string ("<string>": dataclasses, namedtuple...) is no module of a file.
  if (PyUnicode_Check(code->co_filename) && PyUnicode_GET_LENGTH(code->co_filename) > 0 &&
      PyUnicode_READ_CHAR(code->co_filename, 0) == '<')
    return 0;
  try {
    bool from_runpy = false;
    bool by_other_loader = false;
    PyObject* globals = exec_globals(code, from_runpy, by_other_loader);
    if (!globals) {
      PyErr_Clear();
      return 0;
    }
    std::string name = utf8(dict_item(globals, "__name__"));
    PyObject* module = name.empty() ? nullptr : PyDict_GetItemString(PyImport_GetModuleDict(), name.c_str());
    const bool tracked_module = module && PyModule_Check(module) && PyModule_GetDict(module) == globals;
    const bool reloading = registry_.reloading().count(name) > 0;  // checked by the cache's reload
    const bool first_load = from_runpy || (tracked_module && registry::initializing(module));
    // The load policy holds for any module code run from a file, not only
    // for imports: importlib.reload, and a loader called directly (the
    // importlib docs' spec_from_file_location + exec_module recipe, with or
    // without sys.modules) run code that no import vetted. Not the script
    // the host program runs (no Python frame calls it): the user named it.
    if (!first_load && !reloading && PyEval_GetFrame()) refuse_by_policy(name, code->co_filename);
    if (!reloading && policy_->active()) refuse_unchecked_bytecode(name, globals, code_object);
    if (!tracked_module) return 0;
    auto code_ref = py::reinterpret_borrow<py::object>(code_object);
    if (reloading) {  // the cache reloads it through its loader
      reload_codes_[name] = code_ref;
      return 0;
    }
    PyObject* file = dict_item(globals, "__file__");  // the spec's origin, when it has a location
    if (first_load) {  // (importlib.reload is not one)
      std::string checked = name;
      if (from_runpy)  // -m: the policy names the module, not __main__
        if (PyObject* spec = dict_item(globals, "__spec__"); spec && spec != Py_None) {
          auto spec_name = py::reinterpret_steal<py::object>(PyObject_GetAttrString(spec, "name"));
          if (spec_name) checked = utf8(spec_name.ptr());
          PyErr_Clear();
        }
      refuse_if_denied(checked, file, "modhost.load");
    }
    std::string path = utf8(file);
    // What another loader ran need not be its file's source (pytest's is a
    // rewritten AST): taken for it, a stat racing the file's last change
    // would compare it with the source, find them different and call the
    // module changed. Its fingerprint is taken when it is tracked, as for a
    // module the cache found already loaded.
    if (!path.empty() && !by_other_loader)
      if (auto stat = stat_fingerprint(path)) {  // hashed when tracked (registry::adopt)
        registry::executed_code executed;
        executed.path = path;
        executed.print = *stat;
        if (utf8(code->co_filename) == path) {  // the code of this source (through its .pyc or not)
          executed.code = code_ref;
          executed.maybe_stale = bytecode_may_be_stale(dict_item(globals, "__cached__"), *stat);
        }
        registry_.note_executed(name, std::move(executed));
      }
    if (name == "__main__") {
      main_code_ = code_ref;
      main_settled_at_ = ~0ull;
    } else {
      pending_.push_back({name, py::reinterpret_borrow<py::object>(module), code_ref, importer_by_call()});
    }
  } catch (py::error_already_set& e) {
    e.restore();
    return -1;  // refused or vetoed: the import fails with this exception
  } catch (...) {
  }
  PyErr_Clear();  // recording never makes an import fail
  return 0;
}

bool import_hook::idle() {
  settle();
  return pending_.empty();  // what settle() keeps still runs its first import
}

void import_hook::settle() {
  // Every cache call settles first, so the first one runs the helpers here,
  // before it looks at anything: the stdlib modules they import are settled
  // with the rest instead of turning up in the middle of a reload or a poll.
  helpers_.load();
  if (pending_.empty() && (!main_code_ || main_settled_at_ == registry_.tracking_revision())) return;
  registry::call_scope counted(registry_);  // entries looked up here outlive Python code run meanwhile
  try {
    std::vector<executed_module> records;
    records.swap(pending_);
    std::vector<executed_module> running;
    bool any_failed = false;
    PyObject* modules = PyImport_GetModuleDict();  // borrowed
    for (auto& record : records) {
      PyObject* current = PyDict_GetItemString(modules, record.name.c_str());  // borrowed
      if (current != record.module.ptr() && registry::initializing(record.module)) {
        // Still importing: importlib pops a module it has just run and puts it
        // back at the end of sys.modules, and a cache call (the autoreloader's
        // pending call) can come in between. Dropped now, it would be tracked
        // only by some later cache call, and no file watch would start.
        running.push_back(std::move(record));
        continue;
      }
      if (current != record.module.ptr()) {  // the import failed, or the module was replaced meanwhile
        registry_.drop_executed(record.name, record.code);
        any_failed = any_failed || !current;
        continue;
      }
      cache_entry* entry = registry_.lookup(record.name);  // tracks it (with what ran)
      if (!entry) continue;
      registry_.adopt_executed(*entry);  // tracked before its code ran (a lazy module, importlib.reload)
      record_imports(record.name, record.code.ptr(), PyModule_GetDict(current));
      if (!record.importer.empty() && registry_.lookup(record.importer))
        registry_.graph().add_dependency(record.importer, record.name);
      if (registry::initializing(current)) running.push_back(std::move(record));  // more imports may follow
    }
    if (any_failed && after_failed_import_) after_failed_import_();
    for (auto& late : pending_) running.push_back(std::move(late));
    pending_ = std::move(running);
    if (main_code_) {  // the running program imports as it goes: its edges grow
      PyObject* main = PyDict_GetItemString(modules, "__main__");  // borrowed
      if (main && PyModule_Check(main)) record_imports("__main__", main_code_.ptr(), PyModule_GetDict(main));
      main_settled_at_ = registry_.tracking_revision();
    }
  } catch (...) {
  }
  PyErr_Clear();
}

py::object import_hook::take_reload_code(const std::string& name) {
  auto it = reload_codes_.find(name);
  if (it == reload_codes_.end()) return py::object();
  py::object code = std::move(it->second);
  reload_codes_.erase(it);
  return code;
}

void import_hook::record_imports(const std::string& importer, PyObject* code, PyObject* globals) {
  import_graph& graph = registry_.graph();
  for (const import_statement& statement : imports_of(opcodes_, code)) {
    std::string absolute = statement.module;
    if (statement.level > 0) {  // importlib's _calc___package__ and _resolve_name
      std::string package;
      PyObject* pkg = dict_item(globals, "__package__");
      if (pkg && PyUnicode_Check(pkg)) {
        package = utf8(pkg);
      } else {
        package = importer;
        if (!dict_item(globals, "__path__")) {
          auto dot = package.rfind('.');
          package.resize(dot == std::string::npos ? 0 : dot);
        }
      }
      bool resolvable = true;
      for (long i = 1; i < statement.level && resolvable; ++i) {
        auto dot = package.rfind('.');
        if (dot == std::string::npos) resolvable = false;
        else package.resize(dot);
      }
      if (!resolvable || package.empty()) continue;
      absolute = statement.module.empty() ? package : package + "." + statement.module;
    }
    if (absolute.empty()) continue;
    // Track the module and its parents (`import a.b.c` loads all three);
    // a module that is not loaded (an optional import that failed) is no edge.
    for (auto dot = absolute.find('.'); dot != std::string::npos; dot = absolute.find('.', dot + 1))
      registry_.lookup(absolute.substr(0, dot));
    if (!registry_.lookup(absolute)) continue;
    // `from . import sibling` in pkg.core names the package only to reach its
    // submodule: pkg.core depends on pkg.sibling, not on pkg's own code, and an
    // edge to pkg would make a cycle that runs pkg's __init__ before pkg.core.
    bool only_submodules_of_own_package = importer.compare(0, absolute.size() + 1, absolute + ".") == 0;
    bool names_any = false;
    for (const auto& what : statement.fromlist) {
      names_any = true;
      bool submodule = !what.empty() && what != "*" && registry_.lookup(absolute + "." + what);
      if (submodule) graph.add_dependency(importer, absolute + "." + what);  // `from pkg import submodule`
      only_submodules_of_own_package = only_submodules_of_own_package && submodule;
    }
    if (!(names_any && only_submodules_of_own_package)) graph.add_dependency(importer, absolute);
    for (const auto& [what, bound] : statement.bound)
      if (!registry_.lookup(absolute + "." + what))
        graph.add_from_import(importer, absolute, what == bound ? what : what + " as " + bound);
    // `from m import *` binds whatever m exports: recorded as "*", so a
    // dependent reload knows the importer holds m's values (rebinding skips it).
    if (std::find(statement.fromlist.begin(), statement.fromlist.end(), "*") != statement.fromlist.end())
      graph.add_from_import(importer, absolute, "*");
  }
  PyErr_Clear();
}

}  // namespace modhost::detail
