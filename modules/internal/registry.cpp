#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/registry.h"

#include <algorithm>
#include <tuple>

#include "modules/cpython/reference.h"
#include "modules/cpython/translate_errors.h"
#include "modules/internal/python_helpers.h"
#include "modules/internal/request_checks.h"

namespace py = pybind11;

namespace modhost::detail {

registry::registry(const python_helpers& helpers, import_graph& graph) : helpers_(helpers), graph_(graph) {
  translate_errors([&] {
    for (py::handle name : py::module_::import("sys").attr("builtin_module_names"))
      builtin_names_.insert(py::str(name).cast<std::string>());
    // importlib.machinery.EXTENSION_SUFFIXES, without importing importlib.
    for (py::handle suffix : py::module_::import("_imp").attr("extension_suffixes")())
      extension_suffixes_.push_back(py::str(suffix).cast<std::string>());
  });
}

registry::~registry() {
  for (auto* slot : handles_) {
    slot->cache = nullptr;
    slot->function = py::object();
    slot->revision.reset();
  }
}

namespace {
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
}  // namespace

// sys.modules' version: it moves whenever sys.modules is modified, so an
// unchanged version proves an entry's module is still the one in
// sys.modules. 0: none available, every lookup confirms against sys.modules.
std::uint64_t registry::sys_modules_version() {
#if PY_VERSION_HEX < 0x030C0000
  return reinterpret_cast<PyDictObject*>(PyImport_GetModuleDict())->ma_version_tag;
#else
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
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

namespace {

// An attribute of a plain object such as a ModuleSpec (borrowed from its
// instance dict where it lives there), or null. Never raises.
PyObject* plain_attribute(PyObject* object, const char* name) {
  py::object value = steal(PyObject_GetAttrString(object, name));  // new reference
  if (!value) {
    PyErr_Clear();
    return nullptr;
  }
  return value.ptr();  // still alive when `value` goes: a ModuleSpec's fields are instance attributes
}

std::string text_of(PyObject* value) {
  if (!value || !PyUnicode_Check(value)) return {};
  const char* utf8 = PyUnicode_AsUTF8(value);
  if (!utf8) PyErr_Clear();
  return utf8 ? utf8 : "";
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

// importlib's own reading of a spec, from the module's __dict__: a module
// attribute lookup could run code (a lazy module's whole body), and a spec's
// has_location is a property (a Python frame); _set_fileattr is what it reads.
std::pair<module_kind, std::filesystem::path> registry::classify(const std::string& name, py::handle module) {
  using result = std::pair<module_kind, std::filesystem::path>;
  if (builtin_names_.count(name)) return result{module_kind::builtin, {}};
  PyObject* ns = PyModule_Check(module.ptr()) ? PyModule_GetDict(module.ptr()) : nullptr;  // borrowed
  PyObject* spec = ns ? PyDict_GetItemString(ns, "__spec__") : nullptr;                   // borrowed
  if (!spec || spec == Py_None) {
    PyObject* file = ns ? PyDict_GetItemString(ns, "__file__") : nullptr;  // borrowed
    return result{module_kind::other, text_of(file)};
  }
  std::string origin = text_of(plain_attribute(spec, "origin"));
  PyObject* locations = plain_attribute(spec, "submodule_search_locations");
  bool is_package = locations && locations != Py_None;
  if (origin == "built-in" || origin == "frozen") return result{module_kind::builtin, {}};
  PyObject* has_location = plain_attribute(spec, "_set_fileattr");
  if (!has_location) has_location = plain_attribute(spec, "has_location");
  if (origin.empty() || !has_location || !PyObject_IsTrue(has_location)) {
    PyErr_Clear();
    return result{is_package ? module_kind::namespace_package : module_kind::other, {}};
  }
  for (const auto& suffix : extension_suffixes_)
    if (ends_with(origin, suffix)) return result{module_kind::extension, origin};
  if (ends_with(origin, ".py")) return result{is_package ? module_kind::package : module_kind::source, origin};
  return result{module_kind::other, origin};
}

bool registry::initializing(py::handle module) {
  if (!module || !PyModule_Check(module.ptr())) return false;
  PyObject* spec = PyDict_GetItemString(PyModule_GetDict(module.ptr()), "__spec__");  // borrowed
  if (!spec || spec == Py_None) return false;
  PyObject* flag = plain_attribute(spec, "_initializing");
  return flag == Py_True;
}

void registry::note_executed(const std::string& name, executed_code executed) {
  executed_[name] = std::move(executed);
  tracking_moved();  // a module started running: the autoreloader looks again
}

bool registry::adopt_executed(cache_entry& entry) {
  auto noted = executed_.find(entry.name);
  if (noted == executed_.end()) return false;
  executed_code executed = std::move(noted->second);
  executed_.erase(noted);
  adopt(entry, std::move(executed));
  ++*entry.revision;  // other code now stands behind the name
  return true;
}

// The fingerprint of what ran: the stat taken when its code started, and
// the content hashed now (hashing every source at import would cost python3's
// import time what it saves by its .pyc). If the stat was taken too soon
// after a change to vouch for the bytes, or the code came from a .pyc that
// may be stale, the source is compiled and compared with the code that ran:
// equal code is a touch; different code leaves the fingerprint untrusted
// (taken_ns 0, no hash), so the module counts as changed until a reload runs
// the source. A file whose stat moved since its code ran (usually the edit
// about to be reloaded: the first cache call after the imports is often that
// reload) is left untrusted with its code, unconfirmed: compare() compiles it
// when asked and keeps the code for the reload, which compiling it here too
// made pay for the module's compile two more times.
void registry::adopt(cache_entry& entry, executed_code executed) {
  if (executed.path != entry.path) {  // another file than the spec names: fingerprint the spec's
    entry.print = take_fingerprint(entry.path);
    entry.code = py::object();
    return;
  }
  fingerprint print = executed.print;
  auto now = take_fingerprint(entry.path);
  bool same_stat = now && now->same_stat(executed.print);
  // A stat taken within a timestamp tick of the file's last change cannot
  // vouch that the bytes hashed now are the bytes that ran: compare the code.
  bool racy = !executed.print.stat_trusted();
  if (now && executed.code && same_stat && (racy || executed.maybe_stale)) {
    bool equal = false;
    try {
      py::bytes source = helpers_->read_source(entry.path.string());
      py::object fresh = py::module_::import("builtins").attr("compile")(source, entry.path.string(), "exec", 0, true);
      equal = PyObject_RichCompareBool(fresh.ptr(), executed.code.ptr(), Py_EQ) == 1;
    } catch (py::error_already_set&) {
    }
    PyErr_Clear();
    if (equal) {
      print.content_hash = now->content_hash;
    } else {
      print.content_hash = 0;
      print.taken_ns = 0;
      // The code still is what runs (a deep reload reads from it what the
      // running source defined), but with an unchanged stat a reload could
      // mistake it for the source's code and reuse it: a stale .pyc's code goes.
      executed.code = py::object();
    }
  } else if (same_stat && !racy) {
    print.content_hash = now->content_hash;
  } else {
    print.content_hash = 0;  // changed since it ran: changed, or a touch once compare() confirms it
    print.taken_ns = 0;
  }
  entry.print = print;
  entry.code = std::move(executed.code);
}

void registry::classify(cache_entry& entry) {
  std::tie(entry.kind, entry.path) = classify(entry.name, entry.module);
  entry.print.reset();
  if (!has_file(entry.kind)) return;
  auto noted = executed_.find(entry.name);
  if (noted != executed_.end()) {
    executed_code executed = std::move(noted->second);
    executed_.erase(noted);
    adopt(entry, std::move(executed));
  } else {
    entry.print = take_fingerprint(entry.path);
  }
}

void registry::tracking_moved() {
  ++tracking_revision_;
  for (auto& [id, listener] : tracking_listeners_) listener();
}

cache_entry* registry::track(const std::string& name, py::handle module) {
  call_scope counted(*this);  // for callers outside a cache call (find()): see below
  auto& slot = entries_[name];
  if (!slot) {
    slot = std::make_unique<cache_entry>();
    slot->name = name;
  } else {
    ++*slot->revision;  // a different object now stands behind the name
    slot->code = py::object();
    slot->compared_code = py::object();
  }
  // Not the map's slot from here on: classify() may run Python code, and
  // another thread's unload may forget the name meanwhile (the entry itself
  // lives on until the cache calls end).
  cache_entry* entry = slot.get();
  entry->module = py::reinterpret_borrow<py::object>(module);
  entry->state = module_state::loaded;
  tracking_moved();
  entry->confirmed_version = sys_modules_version();
  classify(*entry);
  return entry;
}

void registry::forget(const std::string& name) {
  auto it = entries_.find(name);
  if (it == entries_.end()) return;
  std::unique_ptr<cache_entry> entry = std::move(it->second);
  entries_.erase(it);
  ++*entry->revision;
  entry->state = module_state::unloaded;
  entry->module = py::object();  // the module may die now (unload reports whether it did)
  if (calls_ > 0) retired_.push_back(std::move(entry));
  tracking_moved();
  graph_.remove(name);
}

cache_entry* registry::lookup(const std::string& name) {
  // The C API below takes C strings: a NUL would name another module.
  if (name.find('\0') != std::string::npos) return nullptr;
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
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
  PyObject* current = PyDict_GetItemString(modules, name.c_str());  // borrowed
  if (!current || !PyModule_Check(current)) return nullptr;
  return track(name, current);
}

cache_entry* registry::require(const std::string& name) {
  check_name(name);
  cache_entry* entry = lookup(name);
  if (!entry) raise_import_error(PyExc_ImportError, "module '" + name + "' is not loaded (import it first)", name);
  return entry;
}

void registry::sync_all() {
  std::vector<std::string> names;
  for (auto [key, value] : py::reinterpret_borrow<py::dict>(PyImport_GetModuleDict()))
    if (PyUnicode_Check(key.ptr()) && PyModule_Check(value.ptr())) names.push_back(py::str(key));
  std::vector<std::string> stale;
  for (const auto& [name, entry] : entries_) stale.push_back(name);
  for (const auto& name : stale) lookup(name);  // drops what left sys.modules
  for (const auto& name : names) lookup(name);
}

std::vector<std::string> registry::names() {
  sync_all();
  std::vector<std::string> names;
  for (const auto& [name, entry] : entries_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

file_change registry::compare(cache_entry& entry) {
  fingerprint fresh;
  file_change change = compare_file(*entry.print, entry.path, &fresh);
  if (change == file_change::changed && entry.print->taken_ns == 0 && entry.code) {
    bool equal = false;
    try {
      py::bytes source = helpers_->read_source(entry.path.string());
      py::object compiled = py::module_::import("builtins").attr("compile")(source, entry.path.string(), "exec", 0, true);
      equal = PyObject_RichCompareBool(compiled.ptr(), entry.code.ptr(), Py_EQ) == 1;
      if (!equal) {  // an edit: kept for the reload (run_code checks that the bytes are still these)
        entry.compared_code = compiled;
        entry.compared_hash = content_hash(std::string_view(PyBytes_AS_STRING(source.ptr()),
                                                            static_cast<std::size_t>(PyBytes_GET_SIZE(source.ptr()))));
      }
    } catch (py::error_already_set&) {
    }
    PyErr_Clear();
    if (equal) change = file_change::touched;
  }
  if (change == file_change::touched) entry.print = fresh;  // same content: the next check is cheap
  return change;
}

bool registry::is_changed(cache_entry& entry) {
  if (!has_file(entry.kind) || !entry.print) return false;
  switch (compare(entry)) {
    case file_change::unchanged: return false;
    case file_change::touched: return false;
    case file_change::changed:
    case file_change::missing: return true;
  }
  return true;
}

}  // namespace modhost::detail
