#include <pybind11/pybind11.h>  // Python.h first, as CPython requires
#include <pybind11/eval.h>

#include "modules/module_cache.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <map>
#include <set>
#include <tuple>

#include "interpreter/internal/translate_errors.h"
#include "interpreter/time_limit.h"
#include "modules/autoreload.h"
#include "modules/import_graph.h"
#include "modules/internal/call_gate.h"
#include "modules/internal/referrers.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace modhost {

// ---------------------------------------------------------------------------
// Names

const char* to_string(module_kind kind) noexcept {
  switch (kind) {
    case module_kind::source: return "source";
    case module_kind::package: return "package";
    case module_kind::namespace_package: return "namespace package";
    case module_kind::builtin: return "built-in";
    case module_kind::extension: return "extension";
    case module_kind::other: return "other";
  }
  return "?";
}

const char* to_string(module_state state) noexcept {
  switch (state) {
    case module_state::loaded: return "loaded";
    case module_state::reloading: return "reloading";
    case module_state::failed: return "failed";
    case module_state::unloaded: return "unloaded";
  }
  return "?";
}

const char* to_string(reload_outcome outcome) noexcept {
  switch (outcome) {
    case reload_outcome::reloaded: return "reloaded";
    case reload_outcome::unchanged: return "unchanged";
    case reload_outcome::not_reloadable: return "not reloadable";
    case reload_outcome::deferred: return "deferred";
    case reload_outcome::failed: return "failed";
  }
  return "?";
}

namespace {

std::string join(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

}  // namespace

module_in_use_error::module_in_use_error(const std::string& name, std::vector<std::string> referrers)
    : module_in_use_error(name, referrers,
                          "module '" + name + "' is still in use: " + join(referrers, "; ") +
                              " (drop these references, or unload with force=True)") {}

module_in_use_error::module_in_use_error(const std::string& name, std::vector<std::string> referrers,
                                         const std::string& message)
    : std::runtime_error(message), name_(name), referrers_(std::move(referrers)) {}

// ---------------------------------------------------------------------------
// Entries and handles

namespace detail {

struct cache_entry {
  std::string name;
  py::object module;  // the cache's own reference
  std::uint64_t confirmed_version = 0;  // sys.modules' version when `module` was last confirmed
  module_kind kind = module_kind::other;
  std::filesystem::path path;
  module_state state = module_state::loaded;
  std::uint64_t generation = 1;
  std::optional<fingerprint> print;  // of the file whose code runs
  std::string last_error;
  py::object code;  // compiled from the source `print` describes; reused while it is unchanged
  // Bumped whenever the code behind `name` may have changed (reload, replacement,
  // unload): stable handles compare it instead of looking the name up again.
  std::shared_ptr<std::uint64_t> revision = std::make_shared<std::uint64_t>(0);
};

struct handle_slot {
  module_cache::impl* cache = nullptr;  // null once the cache is gone
  std::string module;
  std::string attribute;
  py::object function;  // the current version, or empty
  std::shared_ptr<std::uint64_t> revision;
  std::uint64_t seen_revision = 0;
};

}  // namespace detail

using detail::cache_entry;

namespace detail {
// modules/internal/*.py, embedded at build time (CMakeLists.txt).
extern const char* const reload_support_source;
extern const char* const deep_update_source;
}  // namespace detail

namespace {

[[noreturn]] void raise(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  throw python_error::fetch();
}

// ImportError(message, name=name), as importlib raises it.
[[noreturn]] void raise_import_error(PyObject* type, const std::string& message,
                                     const std::string& name) {
  py::object error = py::reinterpret_borrow<py::object>(type)(message, "name"_a = name);
  PyErr_SetObject(type, error.ptr());
  throw python_error::fetch();
}



module_kind kind_from(const std::string& text) {
  if (text == "source") return module_kind::source;
  if (text == "package") return module_kind::package;
  if (text == "namespace_package") return module_kind::namespace_package;
  if (text == "builtin") return module_kind::builtin;
  if (text == "extension") return module_kind::extension;
  return module_kind::other;
}

bool is_reloadable(module_kind kind) {
  return kind != module_kind::builtin && kind != module_kind::extension;
}

bool has_file(module_kind kind) {
  return kind == module_kind::source || kind == module_kind::package ||
         kind == module_kind::extension;
}

// Modules a reload or unload must not touch, and why.
const char* refusal_reason(const std::string& name) {
  if (name == "sys") return "it holds the interpreter's own state (sys.modules, sys.path, hooks)";
  if (name == "builtins") return "every module's globals refer to it";
  if (name == "__main__") return "it is the running program; run the script again instead";
  if (name == "modhost") return "it is the cache itself";
  return nullptr;
}

void check_name(const std::string& name) {
  if (name.empty()) raise(PyExc_ValueError, "Empty module name");
  if (name.find('\0') != std::string::npos)
    raise(PyExc_ValueError, "module name contains a NUL byte");
  if (name.front() == '.' || name.back() == '.' || name.find("..") != std::string::npos)
    raise(PyExc_ValueError, "malformed module name '" + name + "' (relative names are not accepted here)");
}

#if PY_VERSION_HEX >= 0x030C0000
// Since 3.12 a dict's ma_version_tag is deprecated (PEP 699); a dict watcher
// (PyDict_AddWatcher, new in 3.12) counts sys.modules' changes instead. All of
// it runs with the GIL held.
std::uint64_t g_sys_modules_changes = 1;
PyObject* g_watched_sys_modules = nullptr;  // compared, never dereferenced
int g_sys_modules_watcher = -1;

int count_sys_modules_change(PyDict_WatchEvent event, PyObject* dict, PyObject*, PyObject*) {
  ++g_sys_modules_changes;
  if (event == PyDict_EVENT_DEALLOCATED && dict == g_watched_sys_modules)
    g_watched_sys_modules = nullptr;  // another dict may get its address
  return 0;
}
#endif

// sys.modules' version: it moves whenever sys.modules is modified, so an
// unchanged version proves an entry's module is still the one in
// sys.modules. 0: none available, every lookup confirms against sys.modules.
std::uint64_t sys_modules_version() {
#if PY_VERSION_HEX < 0x030C0000
  return reinterpret_cast<PyDictObject*>(PyImport_GetModuleDict())->ma_version_tag;
#else
  PyObject* modules = PyImport_GetModuleDict();
  if (modules != g_watched_sys_modules) {
    if (g_sys_modules_watcher < 0) g_sys_modules_watcher = PyDict_AddWatcher(count_sys_modules_change);
    if (g_sys_modules_watcher < 0 || PyDict_Watch(g_sys_modules_watcher, modules) < 0) {
      PyErr_Clear();  // all watchers taken
      return 0;
    }
    g_watched_sys_modules = modules;
    ++g_sys_modules_changes;
  }
  return g_sys_modules_changes;
#endif
}

}  // namespace

// ---------------------------------------------------------------------------
// The implementation

class module_cache::impl {
 public:
  explicit impl(const cache_options& options);
  ~impl();

  cache_entry* lookup(const std::string& name);
  cache_entry* require(const std::string& name);
  cache_entry* track(const std::string& name, py::handle module);
  void forget(const std::string& name);
  void sync_all();
  void record_import(PyObject* name, PyObject* globals, PyObject* fromlist, PyObject* level);

  reload_report reload(const std::string& name, reload_options options);
  unload_report unload(const std::string& name, bool force);
  std::vector<std::string> referrers(const std::string& name);
  std::int64_t refcount(const std::string& name);
  bool is_changed(cache_entry& entry);
  std::vector<std::string> with_submodules(const std::string& name);
  detail::referrer_query referrer_query_for(const std::vector<std::string>& names);

  std::unordered_map<std::string, std::unique_ptr<cache_entry>> entries_;
  import_graph graph_;
  std::vector<detail::handle_slot*> handles_;
  std::map<std::uint64_t, reload_callback> subscribers_;
  std::uint64_t next_subscriber_ = 1;
  std::set<std::string> reloading_;
  // Atomic: the autoreloader's background thread reads it without the GIL.
  std::atomic<std::uint64_t> tracking_revision_{0};
  // Fingerprints of the source bytes the loader compiled, by module name,
  // until the module is tracked (TrackedSourceLoader in reload_support.py).
  std::unordered_map<std::string, fingerprint> loaded_sources_;
  py::dict support_;  // reload_support.py's namespace
  py::object original_import_;
  py::object original_import_module_;
  py::object check_;  // make_policy()'s check(name, origin, event)
  py::object guard_;  // the LoadGuard on sys.meta_path

 private:
  struct snapshot {
    cache_entry* entry;
    py::object module;
    py::dict namespace_copy;
    import_graph::node_state edges;
  };
  struct pending_commit {
    cache_entry* entry;
    py::object module;
    py::object code;
    std::optional<fingerprint> print;
    module_kind kind;
    std::filesystem::path path;
    py::object deep_update;  // the DeepUpdate that patched live objects, for commit()
  };
  pending_commit run_code(cache_entry& entry, const snapshot& before, const reload_options& options,
                          py::handle undo, reload_report& report);
  void rollback(std::vector<snapshot>& snapshots);
  std::pair<module_kind, std::filesystem::path> classify(const std::string& name, py::handle module);
  void classify(cache_entry& entry);
  bool runs_top_level(const std::string& importer, PyObject* globals);
};

namespace {

module_cache::impl* g_cache = nullptr;  // the hook's way back; one cache per process
int g_imports_running = 0;              // imports in progress, on any thread (under the GIL)
// record_import is running on this thread: it must not recurse, and another
// thread that takes the GIL meanwhile must still record its own imports.
thread_local bool t_recording = false;

// Positional or keyword argument `index` of __import__(name, globals, locals, fromlist, level).
PyObject* import_argument(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, int index) {
  static const char* const names[] = {"name", "globals", "locals", "fromlist", "level"};
  if (index < nargs) return args[index];
  if (!kwnames) return nullptr;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); ++i)
    if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), names[index]) == 0)
      return args[nargs + i];
  return nullptr;
}

// builtins.__import__ while the cache lives: the original, then a note of
// what was imported and by whom. Recording never makes an import fail.
PyObject* import_hook(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  module_cache::impl* cache = g_cache;
  if (!cache) return nullptr;
  ++g_imports_running;
  PyObject* result = PyObject_Vectorcall(cache->original_import_.ptr(), args, nargsf, kwnames);
  --g_imports_running;
  if (!result || t_recording) return result;
  Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  t_recording = true;
  try {
    cache->record_import(import_argument(args, nargs, kwnames, 0),
                         import_argument(args, nargs, kwnames, 1),
                         import_argument(args, nargs, kwnames, 3),
                         import_argument(args, nargs, kwnames, 4));
  } catch (...) {
    PyErr_Clear();
  }
  t_recording = false;
  return result;
}

// importlib.import_module(name, package=None): the original, then recorded
// like `import name` from the caller's module.
PyObject* import_module_hook(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  module_cache::impl* cache = g_cache;
  if (!cache) return nullptr;
  ++g_imports_running;
  PyObject* result = PyObject_Vectorcall(cache->original_import_module_.ptr(), args, nargsf, kwnames);
  --g_imports_running;
  if (!result || t_recording || !PyModule_Check(result)) return result;
  t_recording = true;
  try {
    PyObject* name = PyModule_GetNameObject(result);
    PyObject* globals = PyEval_GetGlobals();  // borrowed: the caller's module
    if (name) cache->record_import(name, globals, nullptr, nullptr);
    Py_XDECREF(name);
  } catch (...) {
  }
  PyErr_Clear();
  t_recording = false;
  return result;
}

// note_source(name, path, source_bytes): TrackedSourceLoader read these bytes
// and is about to compile them.
PyObject* note_source(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  module_cache::impl* cache = g_cache;
  if (!cache || nargs != 3 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1]) ||
      !PyBytes_Check(args[2]))
    Py_RETURN_NONE;
  const char* path = PyUnicode_AsUTF8(args[1]);
  if (!path) return nullptr;
  fingerprint print = stat_fingerprint(path).value_or(fingerprint{});
  print.content_hash = content_hash(std::string_view(
      PyBytes_AS_STRING(args[2]), static_cast<std::size_t>(PyBytes_GET_SIZE(args[2]))));
  cache->loaded_sources_[PyUnicode_AsUTF8(args[0])] = print;
  Py_RETURN_NONE;
}

PyMethodDef g_note_source_def = {"note_source", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(note_source)),
                                 METH_FASTCALL, "Records the fingerprint of source bytes a loader compiles."};

PyMethodDef g_import_hook_def = {"__import__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(import_hook)),
                                 METH_FASTCALL | METH_KEYWORDS,
                                 "__import__ as recorded by modhost's module cache."};
PyMethodDef g_import_module_def = {"import_module", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(import_module_hook)),
                                   METH_FASTCALL | METH_KEYWORDS,
                                   "importlib.import_module as recorded by modhost's module cache."};

}  // namespace

module_cache::impl::impl(const cache_options& options) {
  detail::translate_errors([&] {
    py::module_ builtins = py::module_::import("builtins");
    for (auto [source, file] : {std::pair{detail::reload_support_source, "reload_support.py"},
                                std::pair{detail::deep_update_source, "deep_update.py"}})
      builtins.attr("exec")(builtins.attr("compile")(source, std::string("modhost/modules/internal/") + file, "exec"),
                            support_);
    py::module_ importlib = py::module_::import("importlib");
    py::list roots;
    for (const auto& root : options.module_roots) roots.append(root.string());
    check_ = support_["make_policy"](roots, options.strict_permissions);
    guard_ = support_["LoadGuard"](check_);
    py::module_::import("sys").attr("meta_path").attr("insert")(0, guard_);
    support_["install_source_loader"](
        py::reinterpret_steal<py::object>(PyCFunction_NewEx(&g_note_source_def, nullptr, nullptr)));
    original_import_ = builtins.attr("__import__");
    original_import_module_ = importlib.attr("import_module");
    builtins.attr("__import__") =
        py::reinterpret_steal<py::object>(PyCFunction_NewEx(&g_import_hook_def, nullptr, nullptr));
    importlib.attr("import_module") =
        py::reinterpret_steal<py::object>(PyCFunction_NewEx(&g_import_module_def, nullptr, nullptr));
  });
  g_cache = this;
}

module_cache::impl::~impl() {
  g_cache = nullptr;
  if (!Py_IsInitialized()) return;
  try {
    py::module_::import("builtins").attr("__import__") = original_import_;
    py::module_::import("importlib").attr("import_module") = original_import_module_;
    py::list meta_path = py::module_::import("sys").attr("meta_path");
    if (meta_path.contains(guard_)) meta_path.attr("remove")(guard_);
  } catch (py::error_already_set&) {
    PyErr_Clear();
  }
  for (auto* slot : handles_) {
    slot->cache = nullptr;
    slot->function = py::object();
    slot->revision.reset();
  }
}

std::pair<module_kind, std::filesystem::path> module_cache::impl::classify(const std::string& name,
                                                                            py::handle module) {
  py::tuple kind_path = support_["classify"](name, module);
  return {kind_from(kind_path[0].cast<std::string>()),
          kind_path[1].is_none() ? std::filesystem::path() : std::filesystem::path(kind_path[1].cast<std::string>())};
}

void module_cache::impl::classify(cache_entry& entry) {
  std::tie(entry.kind, entry.path) = classify(entry.name, entry.module);
  entry.print.reset();
  if (!has_file(entry.kind)) return;
  auto loaded = loaded_sources_.find(entry.name);
  if (loaded != loaded_sources_.end()) {
    entry.print = loaded->second;  // what the loader compiled, even if the file moved on since
    loaded_sources_.erase(loaded);
  } else {
    entry.print = take_fingerprint(entry.path);
  }
}

cache_entry* module_cache::impl::track(const std::string& name, py::handle module) {
  auto& slot = entries_[name];
  if (!slot) {
    slot = std::make_unique<cache_entry>();
    slot->name = name;
  } else {
    ++*slot->revision;  // a different object now stands behind the name
    slot->code = py::object();
  }
  slot->module = py::reinterpret_borrow<py::object>(module);
  slot->state = module_state::loaded;
  ++tracking_revision_;
  slot->confirmed_version = sys_modules_version();
  classify(*slot);
  return slot.get();
}

void module_cache::impl::forget(const std::string& name) {
  auto it = entries_.find(name);
  if (it == entries_.end()) return;
  ++*it->second->revision;
  it->second->state = module_state::unloaded;
  entries_.erase(it);
  ++tracking_revision_;
  graph_.remove(name);
}

// The hit path: a hash-map lookup, plus a version compare that proves
// sys.modules has not changed since the entry was last confirmed.
cache_entry* module_cache::impl::lookup(const std::string& name) {
  // The C API below takes C strings: a NUL would name another module.
  if (name.find('\0') != std::string::npos) return nullptr;
  PyObject* modules = PyImport_GetModuleDict();
  auto it = entries_.find(name);
  if (it != entries_.end()) {
    cache_entry& entry = *it->second;
    std::uint64_t version = sys_modules_version();
    if (version != 0 && entry.confirmed_version == version) return &entry;
    PyObject* current = PyDict_GetItemString(modules, name.c_str());  // borrowed
    if (current == entry.module.ptr()) {
      entry.confirmed_version = version;
      return &entry;
    }
    // Mid-reload, sys.modules may briefly differ; the reload restores or
    // commits it, so the entry must stay where it is.
    if (reloading_.count(name)) return nullptr;
    if (!current || !PyModule_Check(current)) {  // deleted or replaced by a non-module
      forget(name);
      return nullptr;
    }
    return track(name, current);  // replaced behind the cache's back: follow it
  }
  PyObject* current = PyDict_GetItemString(modules, name.c_str());
  if (!current || !PyModule_Check(current)) return nullptr;
  return track(name, current);
}

cache_entry* module_cache::impl::require(const std::string& name) {
  check_name(name);
  cache_entry* entry = lookup(name);
  if (!entry)
    raise_import_error(PyExc_ImportError,
                       "module '" + name + "' is not loaded (import it first)", name);
  return entry;
}

void module_cache::impl::sync_all() {
  std::vector<std::string> names;
  for (auto [key, value] : py::reinterpret_borrow<py::dict>(PyImport_GetModuleDict()))
    if (PyUnicode_Check(key.ptr()) && PyModule_Check(value.ptr())) names.push_back(py::str(key));
  std::vector<std::string> stale;
  for (const auto& [name, entry] : entries_) stale.push_back(name);
  for (const auto& name : stale) lookup(name);  // drops what left sys.modules
  for (const auto& name : names) lookup(name);
}

// A module's imports count as its dependencies while its top-level code
// runs: during its first import (spec._initializing), during a reload by the
// cache, and always for __main__ (the running program).
bool module_cache::impl::runs_top_level(const std::string& importer, PyObject* globals) {
  if (importer == "__main__" || reloading_.count(importer)) return true;
  PyObject* module = PyDict_GetItemString(PyImport_GetModuleDict(), importer.c_str());
  if (!module || PyModule_GetDict(module) != globals) return false;
  return support_["is_initializing"](py::handle(module)).cast<bool>();
}

void module_cache::impl::record_import(PyObject* name_obj, PyObject* globals, PyObject* fromlist,
                                       PyObject* level_obj) {
  if (!name_obj || !PyUnicode_Check(name_obj)) return;
  std::string name = PyUnicode_AsUTF8(name_obj);
  long level = level_obj && PyLong_Check(level_obj) ? PyLong_AsLong(level_obj) : 0;
  if (globals && !PyDict_Check(globals)) globals = nullptr;

  std::string importer;
  if (globals)
    if (PyObject* n = PyDict_GetItemString(globals, "__name__"); n && PyUnicode_Check(n))
      importer = PyUnicode_AsUTF8(n);

  std::string absolute = name;
  if (level > 0) {  // importlib's _calc___package__ and _resolve_name
    if (!globals) return;
    std::string package;
    PyObject* pkg = PyDict_GetItemString(globals, "__package__");
    if (pkg && PyUnicode_Check(pkg)) {
      package = PyUnicode_AsUTF8(pkg);
    } else {
      package = importer;
      if (!PyDict_GetItemString(globals, "__path__")) package = package.substr(0, package.rfind('.') == std::string::npos ? 0 : package.rfind('.'));
    }
    for (long i = 1; i < level; ++i) {
      auto dot = package.rfind('.');
      if (dot == std::string::npos) return;
      package.resize(dot);
    }
    absolute = name.empty() ? package : package + "." + name;
  }

  // Track the module and its parents (`import a.b.c` loads all three).
  for (auto dot = absolute.find('.'); dot != std::string::npos; dot = absolute.find('.', dot + 1))
    lookup(absolute.substr(0, dot));
  if (!lookup(absolute)) return;

  bool top_level = !importer.empty() && runs_top_level(importer, globals);
  if (top_level) graph_.add_dependency(importer, absolute);
  if (!fromlist || fromlist == Py_None) return;
  py::object items = py::reinterpret_borrow<py::object>(fromlist);
  for (py::handle item : items) {
    if (!PyUnicode_Check(item.ptr())) continue;
    std::string what = PyUnicode_AsUTF8(item.ptr());
    if (what != "*" && lookup(absolute + "." + what) && top_level)  // `from pkg import submodule`
      graph_.add_dependency(importer, absolute + "." + what);
  }
  if (!top_level) return;
  // The names the importer binds (`from m import LIMIT as CAP`) are in its bytecode.
  PyFrameObject* frame = PyEval_GetFrame();  // borrowed: the frame running the import
  if (!frame) return;
  for (py::handle pair : support_["from_import_targets"](py::handle(reinterpret_cast<PyObject*>(frame)))) {
    std::string name = py::str(pair[py::int_(0)]), bound = py::str(pair[py::int_(1)]);
    if (!lookup(absolute + "." + name))
      graph_.add_from_import(importer, absolute, name == bound ? name : name + " as " + bound);
  }
}

// ---------------------------------------------------------------------------
// Reload

namespace {
// run_code() found the source mid-save (reload_options::quiet_for).
struct file_in_flux {};
}  // namespace

module_cache::impl::pending_commit module_cache::impl::run_code(cache_entry& entry,
                                                                const snapshot& before,
                                                                const reload_options& options,
                                                                py::handle undo,
                                                                reload_report& report) {
  const bool deep = options.deep;
  pending_commit commit{&entry, entry.module, py::object(), std::nullopt, entry.kind, entry.path, py::object()};
  py::object spec = support_["find_spec"](entry.name, entry.module);
  py::object origin = py::none();
  if (spec.attr("has_location").cast<bool>()) origin = spec.attr("origin");
  check_(entry.name, origin, "modhost.reload");  // audit event, module roots, strict permissions
  py::object source = support_["source_path"](spec);
  if (!source.is_none()) {
    commit.path = source.cast<std::string>();
    commit.kind = spec.attr("submodule_search_locations").is_none() ? module_kind::source
                                                                    : module_kind::package;
    // Compile from the source on disk, never a bytecode cache that a
    // same-size edit within one second fools. An unchanged file (same
    // fingerprint) reuses the code compiled for it last time.
    auto stat = stat_fingerprint(commit.path);
    if (stat && entry.code && entry.print && commit.path == entry.path && stat->same_stat(*entry.print)) {
      commit.code = entry.code;
      commit.print = entry.print;
    } else {
      py::bytes bytes = support_["read_source"](source);
      std::string_view view(PyBytes_AS_STRING(bytes.ptr()), static_cast<std::size_t>(PyBytes_GET_SIZE(bytes.ptr())));
      if (options.quiet_for.count() > 0) {  // read between two stats of a file at rest
        // A save that truncates and then writes can leave the file empty for
        // tens of milliseconds (ext4 makes the write wait for the previous
        // save's writeback): a source that was not empty before and is empty
        // now must have been quiet for a second.
        auto quiet = options.quiet_for;
        if (view.empty() && entry.print && entry.print->size > 0)
          quiet = std::max<std::chrono::milliseconds>(quiet, std::chrono::seconds(1));
        auto after = stat_fingerprint(commit.path);
        auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
        if (!stat || !after || !after->same_stat(*stat) ||
            now_ns - stat->ctime_ns < std::chrono::nanoseconds(quiet).count())
          throw file_in_flux{};
      }
      std::uint64_t hash = content_hash(view);
      commit.print = stat ? stat : fingerprint{};
      commit.print->content_hash = hash;
      if (entry.code && entry.print && commit.path == entry.path && entry.print->content_hash == hash) {
        commit.code = entry.code;  // touched, not changed
      } else {
        commit.code = py::module_::import("builtins").attr("compile")(bytes, source, "exec", 0, true);
      }
    }
  }
  py::object around = py::none();
  if (deep) {
    commit.deep_update = support_["DeepUpdate"](entry.module, before.namespace_copy, undo);
    around = commit.deep_update.attr("class_statements")();
  }
  commit.module = support_["execute"](entry.name, entry.module, spec,
                                     commit.code ? commit.code : py::none(), deep, around);
  if (deep) {
    auto append = [](std::vector<std::string>& to, py::handle items) {
      for (py::handle item : items) to.push_back(py::str(item));
    };
    py::tuple lists = commit.deep_update.attr("finish")();
    append(report.patched, lists[0]);
    append(report.not_patched, lists[1]);
    append(report.instances_not_moved, lists[2]);
    for (const auto& importer : graph_.dependents(entry.name)) {
      const auto& from = graph_.from_imports(importer);
      auto taken = from.find(entry.name);
      cache_entry* holder = taken == from.end() ? nullptr : lookup(importer);
      if (!holder) continue;
      py::list names;
      for (const auto& n : taken->second) names.append(n);
      append(report.rebound, support_["rebind_from_imports"](commit.module, before.namespace_copy,
                                                             holder->module, names, undo));
    }
  }
  support_["hand_over"](commit.module, before.namespace_copy);
  if (source.is_none()) {
    std::tie(commit.kind, commit.path) = classify(entry.name, commit.module);
    commit.print = has_file(commit.kind) ? take_fingerprint(commit.path) : std::nullopt;
  }
  return commit;
}

void module_cache::impl::rollback(std::vector<snapshot>& snapshots) {
  PyObject* modules = PyImport_GetModuleDict();
  for (auto it = snapshots.rbegin(); it != snapshots.rend(); ++it) {
    py::dict ns = it->module.attr("__dict__");
    ns.clear();
    PyDict_Update(ns.ptr(), it->namespace_copy.ptr());
    PyDict_SetItemString(modules, it->entry->name.c_str(), it->module.ptr());
    it->entry->confirmed_version = sys_modules_version();
    graph_.restore_outgoing(it->entry->name, std::move(it->edges));
  }
  PyErr_Clear();
}

reload_report module_cache::impl::reload(const std::string& name, reload_options options) {
  cache_entry* target = require(name);
  if (const char* reason = refusal_reason(name))
    raise(PyExc_ValueError, "modhost refuses to reload '" + name + "': " + reason);
  if (reloading_.count(name))
    raise(PyExc_RuntimeError, "reload of '" + name + "' requested while '" + name +
                                  "' is being reloaded (from its own top-level code?)");
  if (support_["is_initializing"](target->module).cast<bool>())
    raise(PyExc_RuntimeError, "module '" + name + "' is still being imported; reload it after its import finishes");

  auto started = std::chrono::steady_clock::now();
  reload_report report;
  report.name = name;
  if (!is_reloadable(target->kind)) {
    // As importlib.reload: built-in and extension modules are not re-run.
    report.module = detail::translate_errors([&] {
      return py::module_::import("importlib").attr("reload")(target->module);
    });
    report.outcome = reload_outcome::not_reloadable;
    report.generation = target->generation;
    report.duration = std::chrono::steady_clock::now() - started;
    return report;
  }

  if (options.deep && has_file(target->kind) && target->print) {
    auto change = compare_file(*target->print, target->path);
    if (change == file_change::unchanged || change == file_change::touched) {
      report.outcome = reload_outcome::unchanged;  // same content hash: nothing to do
      if (target->state == module_state::failed) {  // the file is back to the code that runs
        target->state = module_state::loaded;
        target->last_error.clear();
      }
      report.generation = target->generation;
      report.module = target->module;
      report.duration = std::chrono::steady_clock::now() - started;
      return report;
    }
  }

  std::vector<cache_entry*> order{target};
  if (options.dependents) {
    order.clear();
    for (const auto& unit : graph_.reload_order(name))
      for (const auto& member : unit) {
        cache_entry* entry = member == name ? target : lookup(member);
        if (entry && is_reloadable(entry->kind) && !refusal_reason(member) && !reloading_.count(member))
          order.push_back(entry);
      }
  }

  std::vector<snapshot> snapshots;
  std::vector<pending_commit> commits;
  py::object undo = support_["Undo"]();  // what a deep reload changed outside the namespaces
  for (auto* entry : order) reloading_.insert(entry->name);
  struct reloading_guard {
    impl* self;
    const std::vector<cache_entry*>& order;
    ~reloading_guard() {
      for (auto* entry : order) self->reloading_.erase(entry->name);
    }
  } guard{this, order};

  std::optional<detail::closed_gate> gate;
  if (options.wait_for_calls) {
    std::vector<py::object> modules;
    for (auto* entry : order) modules.push_back(entry->module);
    gate.emplace(modules, *options.wait_for_calls);
    if (!gate->busy().empty())
      throw module_in_use_error(
          name, gate->busy(),
          "cannot reload '" + name + "': other threads still run its code after waiting " +
              std::to_string(options.wait_for_calls->count()) + " ms: " + join(gate->busy(), "; ") +
              " (let those calls return, or reload with a longer wait_for_calls)");
  }

  std::optional<time_limit> limit;
  if (options.time_limit.count() > 0) limit.emplace(options.time_limit);
  try {
    for (auto* entry : order) {
      py::dict copy = py::reinterpret_steal<py::dict>(PyDict_Copy(entry->module.attr("__dict__").ptr()));
      snapshots.push_back({entry, entry->module, copy, graph_.take_outgoing(entry->name)});
      entry->state = module_state::reloading;
      report.reexecuted.push_back(entry->name);
      try {
        commits.push_back(run_code(*entry, snapshots.back(), options, undo, report));
      } catch (...) {
        report.failed_module = entry->name;
        throw;
      }
    }
  } catch (py::error_already_set& e) {
    e.restore();
    report.error = python_error::fetch();
  } catch (python_error& e) {
    report.error = e;
  } catch (const file_in_flux&) {  // a save in progress: try again later, nothing happened
    limit.reset();
    undo.attr("rollback")();
    rollback(snapshots);
    for (auto* entry : order) entry->state = module_state::loaded;
    report = reload_report{};
    report.name = name;
    report.outcome = reload_outcome::deferred;
    report.generation = target->generation;
    report.module = target->module;
    report.duration = std::chrono::steady_clock::now() - started;
    return report;
  } catch (...) {  // not Python's doing (out of memory...): still leave nothing half-done
    undo.attr("rollback")();
    rollback(snapshots);
    for (auto* entry : order) entry->state = module_state::loaded;
    throw;
  }
  limit.reset();  // from here on nothing may be interrupted
  if (report.error) {
    undo.attr("rollback")();
    rollback(snapshots);
    for (auto* entry : order)
      if (entry->state == module_state::reloading) entry->state = module_state::loaded;
    if (cache_entry* failed = lookup(report.failed_module)) {
      failed->state = module_state::failed;
      failed->last_error = report.error->what();
    }
    report.outcome = reload_outcome::failed;
    report.rolled_back = true;
    report.patched.clear();
    report.not_patched.clear();
    report.instances_not_moved.clear();
    report.rebound.clear();
    report.generation = target->generation;
    report.module = target->module;
    report.duration = std::chrono::steady_clock::now() - started;
    return report;
  }

  for (auto& commit : commits) {
    cache_entry& entry = *commit.entry;
    entry.module = commit.module;
    entry.confirmed_version = sys_modules_version();
    entry.kind = commit.kind;
    entry.path = commit.path;
    entry.print = commit.print;
    entry.code = commit.code;
    entry.state = module_state::loaded;
    entry.last_error.clear();
    ++entry.generation;
    ++*entry.revision;
    if (commit.deep_update) commit.deep_update.attr("commit")();
  }
  gate.reset();  // other threads go on before the callbacks run
  py::dict fresh = target->module.attr("__dict__");
  for (auto [key, value] : fresh)
    if (!snapshots.front().namespace_copy.contains(key)) report.added.push_back(py::str(key));
  for (auto [key, value] : snapshots.front().namespace_copy)
    if (!fresh.contains(key)) report.removed.push_back(py::str(key));
  report.outcome = reload_outcome::reloaded;
  report.generation = target->generation;
  report.module = target->module;
  report.duration = std::chrono::steady_clock::now() - started;
  for (auto& [id, callback] : std::map<std::uint64_t, reload_callback>(subscribers_)) {
    try {
      callback(report);
    } catch (const std::exception& e) {
      std::cerr << "[modhost] reload callback failed: " << e.what() << std::endl;
    }
  }
  return report;
}

// ---------------------------------------------------------------------------
// Unload, refcount, referrers

std::vector<std::string> module_cache::impl::with_submodules(const std::string& name) {
  sync_all();
  std::vector<std::string> names{name};
  std::string prefix = name + ".";
  for (const auto& [other, entry] : entries_)
    if (other.compare(0, prefix.size(), prefix) == 0) names.push_back(other);
  // Deepest first: a submodule goes before its package.
  std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    auto depth = [](const std::string& s) { return std::count(s.begin(), s.end(), '.'); };
    return depth(a) != depth(b) ? depth(a) > depth(b) : a < b;
  });
  return names;
}

namespace {
// The parent package's attribute that import binds to a submodule.
bool parent_attribute_holds(const std::string& name, PyObject* module) {
  auto dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  PyObject* parent = PyDict_GetItemString(PyImport_GetModuleDict(), name.substr(0, dot).c_str());
  if (!parent || !PyModule_Check(parent)) return false;
  PyObject* value = PyDict_GetItemString(PyModule_GetDict(parent), name.substr(dot + 1).c_str());
  return value == module;
}
}  // namespace

detail::referrer_query module_cache::impl::referrer_query_for(const std::vector<std::string>& names) {
  detail::referrer_query query;
  for (const auto& n : names) {
    cache_entry* entry = lookup(n);
    if (!entry) continue;
    query.modules.emplace_back(n, entry->module);
    bool parent_examined = false;
    auto dot = n.rfind('.');
    if (dot != std::string::npos)
      parent_examined = std::find(names.begin(), names.end(), n.substr(0, dot)) != names.end();
    // sys.modules, the cache, the query itself, and the parent's attribute
    // (when the parent is not examined too: then its dict counts as internal).
    query.accounted_refs.push_back(3 + (!parent_examined && parent_attribute_holds(n, entry->module.ptr()) ? 1 : 0));
  }
  for (auto* slot : handles_) {
    if (!slot->function) continue;
    if (std::find(names.begin(), names.end(), slot->module) != names.end())
      query.cpp_handles.push_back(slot->module + "." + slot->attribute);
  }
  return query;
}

std::vector<std::string> module_cache::impl::referrers(const std::string& name) {
  require(name);
  auto query = referrer_query_for(with_submodules(name));
  return detail::translate_errors([&] { return detail::find_referrers(query); });
}

std::int64_t module_cache::impl::refcount(const std::string& name) {
  cache_entry* entry = require(name);
  PyObject* module = entry->module.ptr();
  std::int64_t count = Py_REFCNT(module) - 2;  // sys.modules and the cache
  if (parent_attribute_holds(name, module)) --count;
  return count;
}

unload_report module_cache::impl::unload(const std::string& name, bool force) {
  cache_entry* entry = require(name);
  if (const char* reason = refusal_reason(name))
    raise(PyExc_ValueError, "modhost refuses to unload '" + name + "': " + reason);
  if (!is_reloadable(entry->kind))
    raise(PyExc_ValueError, "cannot unload " + std::string(to_string(entry->kind)) + " module '" + name +
                                "': its code stays in the process until it exits");
  std::vector<std::string> names = with_submodules(name);
  for (const auto& n : names)
    if (reloading_.count(n)) raise(PyExc_RuntimeError, "cannot unload '" + n + "' while it is being reloaded");

  unload_report report;
  py::object weak = py::reinterpret_steal<py::object>(PyWeakref_NewRef(entry->module.ptr(), nullptr));
  if (!weak) PyErr_Clear();
  {
    auto query = referrer_query_for(names);
    auto holders = detail::translate_errors([&] { return detail::find_referrers(query); });
    if (!holders.empty() && !force) throw module_in_use_error(name, std::move(holders));
    report.lingering = std::move(holders);
    for (const auto& [n, module] : query.modules) {
      cache_entry* e = lookup(n);
      if (PySys_Audit("modhost.unload", "ss", n.c_str(), e ? e->path.c_str() : "") < 0)
        throw python_error::fetch();  // vetoed by an audit hook: nothing is unloaded
    }
    for (const auto& [n, module] : query.modules)  // their own goodbyes; one that raises stops the unload
      support_["call_unload_hook"](module);
  }
  PyObject* modules = PyImport_GetModuleDict();
  for (const auto& n : names) {
    cache_entry* e = lookup(n);
    if (!e) continue;
    // A later import must compile the source again: a bytecode cache written
    // for an edit that kept size and mtime would bring back stale code.
    if (e->kind == module_kind::source || e->kind == module_kind::package)
      if (e->print && compare_file(*e->print, e->path) == file_change::changed)
        support_["drop_bytecode_cache"](e->path.string());
    if (parent_attribute_holds(n, e->module.ptr())) {
      auto dot = n.rfind('.');
      PyObject* parent = PyDict_GetItemString(modules, n.substr(0, dot).c_str());
      PyDict_DelItemString(PyModule_GetDict(parent), n.substr(dot + 1).c_str());
    }
    PyDict_DelItemString(modules, n.c_str());
    PyErr_Clear();
    for (auto* slot : handles_)
      if (slot->module == n) slot->function = py::object();
    forget(n);
    report.unloaded.push_back(n);
  }
  // Calling the weakref (not PyWeakref_GetObject, deprecated since 3.13)
  // gives None once the module died.
  report.freed = weak && weak().is_none();
  return report;
}

bool module_cache::impl::is_changed(cache_entry& entry) {
  if (!has_file(entry.kind) || !entry.print) return false;
  fingerprint fresh;
  switch (compare_file(*entry.print, entry.path, &fresh)) {
    case file_change::unchanged: return false;
    case file_change::touched:
      entry.print = fresh;  // same content: remember the new stat so the next check is cheap
      return false;
    case file_change::changed:
    case file_change::missing: return true;
  }
  return true;
}

// ---------------------------------------------------------------------------
// module_cache

module_cache::module_cache(const cache_options& options)
    : impl_(std::make_unique<impl>(options)),
      autoreload_(std::make_unique<autoreloader>(*this, options.watch_debounce, options.watch_polling)) {}

module_cache::~module_cache() { autoreload_.reset(); }

bool module_cache::at_safe_point() const noexcept {
  return g_imports_running == 0 && impl_->reloading_.empty();
}

std::uint64_t module_cache::tracking_revision() const noexcept { return impl_->tracking_revision_; }

py::object module_cache::find(const std::string& name) {
  cache_entry* entry = impl_->lookup(name);
  return entry ? entry->module : py::object();
}

py::object module_cache::load(const std::string& name, std::chrono::milliseconds limit) {
  if (cache_entry* entry = impl_->lookup(name)) return entry->module;
  return detail::translate_errors([&] {
    check_name(name);
    std::optional<time_limit> guard;
    if (limit.count() > 0) guard.emplace(limit);
    py::object module = py::module_::import("importlib").attr("import_module")(name);
    impl_->lookup(name);
    return module;
  });
}

reload_report module_cache::reload(const std::string& name, reload_options options) {
  return detail::translate_errors([&] { return impl_->reload(name, options); });
}

reload_report module_cache::reload(py::handle module, reload_options options) {
  return detail::translate_errors([&] {
    if (!module || !PyModule_Check(module.ptr())) raise(PyExc_TypeError, "reload() argument must be a module");
    std::string name;
    py::object spec = py::getattr(module, "__spec__", py::none());
    name = spec.is_none() ? py::str(module.attr("__name__")).cast<std::string>()
                          : py::str(spec.attr("name")).cast<std::string>();
    if (PyDict_GetItemString(PyImport_GetModuleDict(), name.c_str()) != module.ptr())
      raise_import_error(PyExc_ImportError, "module " + name + " not in sys.modules", name);
    return impl_->reload(name, options);
  });
}

unload_report module_cache::unload(const std::string& name, bool force) {
  return detail::translate_errors([&] { return impl_->unload(name, force); });
}

std::int64_t module_cache::refcount(const std::string& name) {
  return detail::translate_errors([&] { return impl_->refcount(name); });
}

std::vector<std::string> module_cache::referrers(const std::string& name) {
  return detail::translate_errors([&] { return impl_->referrers(name); });
}

bool module_cache::is_changed(const std::string& name) {
  return detail::translate_errors([&] { return impl_->is_changed(*impl_->require(name)); });
}

std::vector<std::string> module_cache::changed() {
  return detail::translate_errors([&] {
    impl_->sync_all();
    std::vector<std::string> names;
    for (auto& [name, entry] : impl_->entries_)
      if (impl_->is_changed(*entry)) names.push_back(name);
    std::sort(names.begin(), names.end());
    return names;
  });
}

std::vector<std::string> module_cache::dependencies(const std::string& name) {
  return detail::translate_errors([&] {
    impl_->require(name);
    const auto& deps = impl_->graph_.dependencies(name);
    return std::vector<std::string>(deps.begin(), deps.end());
  });
}

std::vector<std::string> module_cache::dependents(const std::string& name) {
  return detail::translate_errors([&] {
    impl_->require(name);
    const auto& deps = impl_->graph_.dependents(name);
    return std::vector<std::string>(deps.begin(), deps.end());
  });
}

std::unordered_map<std::string, std::vector<std::string>> module_cache::from_imports(
    const std::string& importer) {
  std::unordered_map<std::string, std::vector<std::string>> result;
  for (const auto& [module, names] : impl_->graph_.from_imports(importer))
    result[module].assign(names.begin(), names.end());
  return result;
}

module_info module_cache::info(const std::string& name) {
  return detail::translate_errors([&] {
    cache_entry& entry = *impl_->require(name);
    module_info info;
    info.name = entry.name;
    info.path = entry.path;
    info.kind = entry.kind;
    info.state = entry.state;
    info.generation = entry.generation;
    info.reloadable = is_reloadable(entry.kind) && !refusal_reason(name);
    info.fingerprint = entry.print;
    info.last_error = entry.last_error;
    const auto& deps = impl_->graph_.dependencies(name);
    const auto& users = impl_->graph_.dependents(name);
    info.dependencies.assign(deps.begin(), deps.end());
    info.dependents.assign(users.begin(), users.end());
    return info;
  });
}

std::vector<module_info> module_cache::entries() {
  std::vector<module_info> infos;
  for (const auto& name : modules()) infos.push_back(info(name));
  return infos;
}

std::vector<std::string> module_cache::modules() {
  return detail::translate_errors([&] {
    impl_->sync_all();
    std::vector<std::string> names;
    for (const auto& [name, entry] : impl_->entries_) names.push_back(name);
    std::sort(names.begin(), names.end());
    return names;
  });
}

std::uint64_t module_cache::subscribe(reload_callback callback) {
  std::uint64_t id = impl_->next_subscriber_++;
  impl_->subscribers_.emplace(id, std::move(callback));
  return id;
}

void module_cache::unsubscribe(std::uint64_t id) { impl_->subscribers_.erase(id); }

// ---------------------------------------------------------------------------
// function_handle

function_handle::function_handle(module_cache& cache, std::string module, std::string attribute)
    : slot_(std::make_shared<detail::handle_slot>()) {
  slot_->cache = cache.impl_.get();
  slot_->module = std::move(module);
  slot_->attribute = std::move(attribute);
  slot_->cache->handles_.push_back(slot_.get());
}

function_handle::~function_handle() {
  if (slot_->cache) {
    auto& handles = slot_->cache->handles_;
    handles.erase(std::remove(handles.begin(), handles.end(), slot_.get()), handles.end());
  }
}

const std::string& function_handle::module_name() const noexcept { return slot_->module; }
const std::string& function_handle::attribute() const noexcept { return slot_->attribute; }

py::object function_handle::current() {
  detail::handle_slot& slot = *slot_;
  if (detail::any_gate_closed() && slot.cache) {  // another thread may be reloading it: wait for the new version
    auto it = slot.cache->entries_.find(slot.module);
    if (it != slot.cache->entries_.end()) detail::admit(PyModule_GetDict(it->second->module.ptr()));
  }
  if (slot.function && slot.revision && *slot.revision == slot.seen_revision) return slot.function;
  return detail::translate_errors([&] {
    std::string label = "C++ handle " + slot.module + "." + slot.attribute;
    if (!slot.cache) raise(PyExc_RuntimeError, label + ": the interpreter's cache is gone");
    slot.function = py::object();
    cache_entry* entry = slot.cache->lookup(slot.module);
    if (!entry)
      raise_import_error(PyExc_ImportError,
                         "module '" + slot.module + "' is not loaded (" + label + ")", slot.module);
    if (!py::hasattr(entry->module, slot.attribute.c_str()))
      raise(PyExc_AttributeError, "module '" + slot.module + "' has no attribute '" + slot.attribute +
                                      "' (" + label + ")");
    slot.revision = entry->revision;
    slot.seen_revision = *entry->revision;
    slot.function = entry->module.attr(slot.attribute.c_str());
    return slot.function;
  });
}

}  // namespace modhost
