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
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "interpreter/python_error.h"
#include "modules/cache_options.h"
#include "modules/fingerprint.h"

namespace modhost {

namespace detail {
struct cache_entry;
struct handle_slot;
}  // namespace detail

enum class module_kind {
  source,             // a .py file
  package,            // a directory with __init__.py
  namespace_package,  // a directory without __init__.py
  builtin,            // compiled into the interpreter (sys, builtins) or frozen
  extension,          // a C extension (.so)
  other,              // anything else: no spec, a custom or sourceless loader
};

enum class module_state {
  loaded,     // running the code of its current generation
  reloading,  // its code is being re-executed
  failed,     // the last reload failed; the previous generation's code still runs
  unloaded,   // removed from sys.modules (by unload or behind the cache's back)
};

const char* to_string(module_kind kind) noexcept;
const char* to_string(module_state state) noexcept;

struct module_info {
  std::string name;
  std::filesystem::path path;  // origin file; empty for built-in and namespace packages
  module_kind kind = module_kind::other;
  module_state state = module_state::loaded;
  std::uint64_t generation = 1;  // 1 at first load, +1 per successful reload
  bool reloadable = false;       // false for built-in and extension modules
  std::optional<modhost::fingerprint> fingerprint;  // set for file-backed modules
  std::string last_error;        // "Type: message" of the last failed reload, or empty
  std::vector<std::string> dependencies;
  std::vector<std::string> dependents;
};

enum class reload_outcome {
  reloaded,        // the new code runs
  unchanged,       // deep reload of a source whose content hash did not change: nothing ran
  not_reloadable,  // built-in or extension: as importlib.reload, nothing re-ran
  deferred,        // a source was being written (see reload_options::quiet_for): nothing changed
  failed,          // the code raised; every module re-executed was rolled back
};

const char* to_string(reload_outcome outcome) noexcept;

struct reload_options {
  // Read a source only once it has been quiet this long, between two stat()s
  // that agree; otherwise the reload is `deferred` (a save in progress could
  // leave the file truncated while it is read). Zero: read whatever is there.
  std::chrono::milliseconds quiet_for{0};
  // Set by a file watcher that can vouch for a save being complete (the
  // kernel saw its writer close it or rename it into place): called with
  // each source right after it was read between two stat()s that agree;
  // false defers the reload as quiet_for does (someone wrote the file
  // meanwhile). With it, quiet_for can be zero and a save that just
  // completed is read at once.
  std::function<bool(const std::filesystem::path&)> source_at_rest;
  // Interrupt the module's code (modhost.TimeLimitExceeded) if the reload
  // runs longer; it then rolls back like any failure. Zero: no limit.
  std::chrono::milliseconds time_limit{0};
  // Put the new code into the objects that exist: stale names removed,
  // functions patched in place, classes updated in place (identity kept),
  // names other modules took with `from m import name` rebound. An unchanged
  // source is a no-op.
  bool deep = false;
  // Also re-execute every loaded module that depends on the target,
  // transitively, dependencies first, a cycle as one unit.
  bool dependents = false;
  // Other threads see one version: while the modules re-execute, their calls
  // into them, attribute reads on them and function_handle calls wait; a
  // call that waited runs the new version. Calls already running in other
  // threads are waited for this long first; if one still runs, reload()
  // throws module_in_use_error naming it and nothing happens. The calling
  // thread's own frames never count (a reload from a module's own loop).
  // nullopt: no waiting, no holding (other threads may see a half-run module).
  std::optional<std::chrono::milliseconds> wait_for_calls = std::chrono::seconds(1);
};

// The outcome of reload(): a value, not an exception, because a failing
// plugin is an expected event for a host.
struct [[nodiscard]] reload_report {
  std::string name;
  reload_outcome outcome = reload_outcome::reloaded;
  std::uint64_t generation = 0;  // the target's generation after the call
  std::chrono::nanoseconds duration{0};
  std::vector<std::string> added;       // names new in the target's namespace
  std::vector<std::string> removed;     // names gone (only when the module deletes them)
  std::vector<std::string> reexecuted;  // modules whose code ran, in order
  // Deep reload: "function plug.f" / "class plug.C" updated in place; what
  // could not be and was rebound instead, with the reason; instances left on
  // a replaced class; other modules' from-import globals rebound ("app.LIMIT").
  std::vector<std::string> patched;
  std::vector<std::string> not_patched;
  std::vector<std::string> instances_not_moved;
  std::vector<std::string> rebound;
  bool rolled_back = false;
  std::string failed_module;            // which module raised, when outcome is failed
  std::optional<python_error> error;    // the original exception, when outcome is failed
  // The module object now in sys.modules (a module may replace itself).
  pybind11::object module;

  explicit operator bool() const noexcept { return outcome != reload_outcome::failed; }
};

struct [[nodiscard]] unload_report {
  std::vector<std::string> unloaded;   // the module and its submodules, deepest first
  std::vector<std::string> lingering;  // with force: holders that still keep old code alive
  bool freed = false;                  // the module object itself died (a weakref cleared)
};

// unload() refused: something still holds the module or its code; or
// reload() found other threads still running its code.
class module_in_use_error : public std::runtime_error {
 public:
  module_in_use_error(const std::string& name, std::vector<std::string> referrers);  // unload's
  module_in_use_error(const std::string& name, std::vector<std::string> referrers, const std::string& message);
  const std::string& name() const noexcept { return name_; }
  const std::vector<std::string>& referrers() const noexcept { return referrers_; }

 private:
  std::string name_;
  std::vector<std::string> referrers_;
};

class function_handle;
class autoreloader;

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

  // Removes the module (and its loaded submodules) from sys.modules and the
  // cache. Throws module_in_use_error naming every holder unless `force`.
  // Calls each module's __unload__() first, if it defines one; if that
  // raises, nothing is unloaded and the error propagates.
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
  // For each `from x import name` that `importer` ran: x -> names.
  std::unordered_map<std::string, std::vector<std::string>> from_imports(const std::string& importer);

  module_info info(const std::string& name);
  // Tracked module names, sorted.
  std::vector<std::string> modules();
  // info() of every tracked module, sorted by name.
  std::vector<module_info> entries();

  // The autoreload policy and file watcher (modules/autoreload.h).
  autoreloader& autoreload() noexcept { return *autoreload_; }
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
  // Calls `callback` after every successful reload (one report per reload call;
  // report.reexecuted lists every module it ran). Returns an id for unsubscribe().
  std::uint64_t subscribe(reload_callback callback);
  void unsubscribe(std::uint64_t id);

  class impl;

 private:
  friend class function_handle;
  std::unique_ptr<impl> impl_;
  std::unique_ptr<autoreloader> autoreload_;
};

// A stable C++ handle to a script function: bound to (module, attribute), it
// always calls the current version. After a reload it rebinds by itself, at
// the cost of a generation check. referrers() lists it as
// "C++ handle plug.on_event", because gc cannot see C++ references.
//
//   BAD:  py::object f = plug.attr("on_event");   // keeps calling the old code
//   GOOD: modhost::function_handle f(cache, "plug", "on_event");
class function_handle {
 public:
  function_handle(module_cache& cache, std::string module, std::string attribute);
  ~function_handle();
  function_handle(const function_handle&) = delete;
  function_handle& operator=(const function_handle&) = delete;

  // Calls the current version. Throws python_error: AttributeError naming the
  // module and attribute if it no longer exists, ImportError if the module
  // was unloaded, or whatever the function raises.
  // (The call needs pybind11/pybind11.h or pybind11/embed.h included.)
  template <class... Args>
  pybind11::object operator()(Args&&... args) {
    pybind11::object function = current();
    try {
      return function(std::forward<Args>(args)...);
    } catch (pybind11::error_already_set& e) {
      e.restore();
      throw python_error::fetch();
    }
  }
  // The function object for this generation.
  pybind11::object current();
  const std::string& module_name() const noexcept;
  const std::string& attribute() const noexcept;

 private:
  std::shared_ptr<detail::handle_slot> slot_;
};

}  // namespace modhost
