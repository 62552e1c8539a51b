// modhost::module_cache — the C++ cache in front of sys.modules.
//
// Once the interpreter starts, every module imported through Python's import
// system is recorded here: name, origin file, kind, fingerprint, generation,
// state, last error, and the import graph (who imported whom at top level,
// and which names `from x import name` took). sys.modules stays the truth for
// Python: when code deletes or replaces sys.modules[name] behind the cache's
// back, the next lookup notices and follows.
//
// What it adds over importlib:
//  - reload() is atomic: if the module's code raises, its namespace is
//    restored exactly (same keys, same objects) and the error is reported.
//  - unload() refuses while anything outside sys.modules and the cache holds
//    the module or its code, and names the holders.
//  - is_changed() compares a fingerprint (size, mtime_ns, ctime_ns, inode)
//    and confirms with a content hash, so a `touch` is not a change and a
//    same-size edit within one second is.
//
// Every member needs the GIL. Errors a caller made (a name never imported, a
// refused module) throw python_error carrying the exception Python would
// raise; outcomes of running module code are values in reload_report.
#pragma once

#include <pybind11/pytypes.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "modules/cache_options.h"
#include "modules/cpython/visibility.h"
#include "modules/function_handle.h"
#include "modules/module_types.h"

namespace modhost MODHOST_API {

namespace detail {
class registry;
class acquisition_ledger;
struct cache_access;
}  // namespace detail

class module_cache {
 public:
  // Installs the import hook and the load guard (module roots, strict
  // permissions, `modhost.load` audit events). Created by
  // modhost::interpreter; one per process.
  explicit module_cache(const cache_options& options = {});
  ~module_cache();
  module_cache(const module_cache&) = delete;
  module_cache& operator=(const module_cache&) = delete;

  // The module if it is loaded (a hash-map hit), else an empty object.
  pybind11::object find(const std::string& name);
  // Imports through the cache (like importlib.import_module; absolute
  // names), interrupting the module's code after `time_limit` if not zero.
  pybind11::object load(const std::string& name, std::chrono::milliseconds time_limit = {});

  // Re-executes a loaded module's current source in its own namespace,
  // atomically: whatever fails once its reload started (no spec any more,
  // missing parent, unreadable file, syntax error, an exception anywhere in
  // its code) is a failed report with every namespace restored. Throws
  // python_error only for a bad request: a name never imported (ImportError),
  // an empty or malformed name (ValueError), sys/builtins/__main__/modhost
  // (ValueError), a module already being reloaded or still being imported
  // (RuntimeError). Throws module_in_use_error if other threads still run its
  // code after reload_options::wait_for_calls.
  reload_report reload(const std::string& name, reload_options options = {});
  // The same for a module object; TypeError if `module` is not a module.
  reload_report reload(pybind11::handle module, reload_options options = {});
  // Several modules as one transaction, dependencies first (with
  // options.dependents, their dependents too): all of them commit, or all
  // roll back. report.targets lists them; errors as for one module.
  reload_report reload(const std::vector<std::string>& names, reload_options options = {});
  // The name a module object is reloaded by (its spec's name); TypeError for
  // a non-module, ImportError if it is not the one in sys.modules.
  std::string name_of(pybind11::handle module);

  // Removes the module (and its loaded submodules) from sys.modules and the
  // cache. Releases what they acquired from the host first (newest first;
  // modules/acquisitions.h), so the host's hold on their code does not count;
  // then throws module_in_use_error naming every holder unless `force`.
  // Calls each module's __unload__() next, if it defines one; if that
  // raises, nothing is unloaded and the error propagates. A refused unload
  // acquires the released acquisitions again.
  unload_report unload(const std::string& name, bool force = false);

  // References to the module object beyond sys.modules, the cache and its
  // parent package's attribute: 0 means nothing else holds it.
  std::int64_t refcount(const std::string& name);
  // Who keeps the module or its code alive, e.g. "module 'app' global 'hook'
  // (function plug.hook)", "thread main frame plug.run", "C++ handle plug.on_event".
  std::vector<std::string> referrers(const std::string& name);

  // The file on disk differs from what runs (deleted counts as changed).
  bool is_changed(const std::string& name);
  // Every tracked file-backed module whose file changed.
  std::vector<std::string> changed();

  std::vector<std::string> dependencies(const std::string& name);
  std::vector<std::string> dependents(const std::string& name);
  // For each `from x import name` that `importer` ran: x -> names. Throws
  // python_error: ValueError for a name no module can have (check_module_name),
  // ImportError for a module that is not loaded, as dependencies() does.
  std::unordered_map<std::string, std::vector<std::string>> from_imports(const std::string& importer);

  module_info info(const std::string& name);
  // Tracked module names, sorted.
  std::vector<std::string> modules();
  // info() of every tracked module, sorted by name.
  std::vector<module_info> entries();

  // No module is being imported or reloaded and no other cache call is in
  // progress (the autoreloader may fire inside Python code one runs): a reload may run now.
  bool at_safe_point() const noexcept;
  // Moves whenever a module starts or stops being tracked. Safe to read
  // from any thread, without the GIL.
  std::uint64_t tracking_revision() const noexcept;
  // Calls `listener` whenever tracking_revision() moves, on the thread that
  // imported or unloaded, with the GIL, possibly in the middle of an import:
  // it may only wake someone up (the autoreloader's background thread, so a
  // new module's file is watched at once), never call into Python or the
  // cache. Returns an id for remove_tracking_listener().
  std::uint64_t add_tracking_listener(std::function<void()> listener);
  void remove_tracking_listener(std::uint64_t id);

  using reload_callback = std::function<void(const reload_report&)>;
  // Calls `callback` with the report of every reload that reloaded, failed
  // (rolled back: report.error has the type, message, file and line) or was
  // deferred (told once while it stays deferred for the same reason); one
  // report per reload call, for the whole set of modules (report.targets,
  // report.reexecuted). Also the autoreloader's reloads. Not for unchanged or
  // not-reloadable modules, nor a request refused before any code ran (an
  // exception to the caller). Returns an id for unsubscribe().
  std::uint64_t subscribe(reload_callback callback);
  void unsubscribe(std::uint64_t id);

  class impl;

 private:
  friend class function_handle;
  friend struct detail::cache_access;  // modules/acquisitions.cpp
  detail::registry& registry() noexcept;  // where function handles register
  detail::acquisition_ledger& acquisitions() noexcept;  // what modules acquired from the host
  std::unique_ptr<impl> impl_;
};

}  // namespace modhost
