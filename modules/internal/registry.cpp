#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/registry.h"

#include <algorithm>
#include <tuple>

#include "modules/internal/python_helpers.h"
#include "modules/internal/request_checks.h"

namespace py = pybind11;

namespace modhost::detail {

namespace {

module_kind kind_from(const std::string& text) {
  if (text == "source") return module_kind::source;
  if (text == "package") return module_kind::package;
  if (text == "namespace_package") return module_kind::namespace_package;
  if (text == "builtin") return module_kind::builtin;
  if (text == "extension") return module_kind::extension;
  return module_kind::other;
}

}  // namespace

registry::registry(const python_helpers& helpers, import_graph& graph) : helpers_(helpers), graph_(graph) {}

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

std::pair<module_kind, std::filesystem::path> registry::classify(const std::string& name, py::handle module) {
  py::tuple kind_path = helpers_.classify(name, module);
  return {kind_from(kind_path[0].cast<std::string>()),
          kind_path[1].is_none() ? std::filesystem::path() : std::filesystem::path(kind_path[1].cast<std::string>())};
}

void registry::classify(cache_entry& entry) {
  std::tie(entry.kind, entry.path) = classify(entry.name, entry.module);
  entry.print.reset();
  if (!has_file(entry.kind)) return;
  auto loaded = loaded_sources_.find(entry.name);
  if (loaded != loaded_sources_.end()) {
    entry.print = loaded->second.print;  // what the loader compiled, even if the file moved on since
    entry.code = std::move(loaded->second.code);
    loaded_sources_.erase(loaded);
  } else {
    entry.print = take_fingerprint(entry.path);
  }
}

void registry::tracking_moved() {
  ++tracking_revision_;
  for (auto& [id, listener] : tracking_listeners_) listener();
}

cache_entry* registry::track(const std::string& name, py::handle module) {
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
  tracking_moved();
  slot->confirmed_version = sys_modules_version();
  classify(*slot);
  return slot.get();
}

void registry::forget(const std::string& name) {
  auto it = entries_.find(name);
  if (it == entries_.end()) return;
  ++*it->second->revision;
  it->second->state = module_state::unloaded;
  entries_.erase(it);
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

bool registry::is_changed(cache_entry& entry) {
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

}  // namespace modhost::detail
