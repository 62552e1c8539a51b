// modhost module types — the values the module cache speaks in: what kind
// of module an entry is, its lifecycle state, what a caller asks of a reload,
// and the reports reload() and unload() return. Plain data, no CPython calls,
// so any layer above the cache can use them.
#pragma once

#include <pybind11/pytypes.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "modules/cpython/python_error.h"
#include "modules/cpython/visibility.h"
#include "modules/fingerprint.h"

namespace modhost MODHOST_API {

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
// Its code can run again: not built-in, not an extension.
bool is_reloadable(module_kind kind) noexcept;
// It has a file the cache fingerprints: a source, a package's __init__.py or an extension.
bool has_file(module_kind kind) noexcept;
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
  deferred,        // a source was being written (reload_options::quiet_for), or its code runs
                   // on the calling thread (defer_if_running): nothing changed
  failed,          // the code raised; every module re-executed was rolled back
};

const char* to_string(reload_outcome outcome) noexcept;

// "a; b; c": how reports and errors list names.
std::string join(const std::vector<std::string>& items, const char* separator);

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
  // Called once every module's new code ran, before it commits: false rolls
  // the reload back and defers it (the autoreloader's "no save arrived
  // meanwhile": a set of saves still being written is not complete).
  std::function<bool()> still_complete;
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
  // With deep and dependents: a dependent re-runs only when in-place
  // patching cannot reach what its top level kept, decided once the modules
  // it imports have run: it took `from m import name` a name whose value is
  // now another object (not a function or class deep update kept) or is
  // gone, or star-imported such a module, or its top-level code (module
  // level, class bodies, comprehensions; not functions) reads an attribute
  // of that name, or calls one of m's functions while m's other values
  // changed. A dependent that does not re-run spares its own dependents.
  // Without deep it has no effect: every dependent re-runs.
  bool dependents_as_needed = false;
  // Other threads see one version: while the modules re-execute, their calls
  // into them, attribute reads on them and function_handle calls wait; a
  // call that waited runs the new version. Calls already running in other
  // threads are waited for this long first; if one still runs, reload()
  // throws module_in_use_error naming it and nothing happens. The calling
  // thread's own frames never count (a reload from a module's own loop).
  // nullopt: no waiting, no holding (other threads may see a half-run module).
  std::optional<std::chrono::milliseconds> wait_for_calls = std::chrono::seconds(1);
  // Defer the reload (outcome `deferred`, report.deferred_by says which) while
  // the calling thread itself runs code of a module it would re-execute: the
  // autoreloader, which reloads on the main thread between two bytecodes,
  // must not change a function's module under its running frame.
  bool defer_if_running = false;
};

// The outcome of reload(): a value, not an exception, because a failing
// plugin is an expected event for a host.
struct [[nodiscard]] reload_report {
  std::string name;                  // the (first) module asked for
  std::vector<std::string> targets;  // every module asked for (several: reloaded as one set)
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
  // reload_options::dependents_as_needed: dependents left to in-place
  // patching, their code not re-run.
  std::vector<std::string> spared;
  bool rolled_back = false;
  // Releases and re-acquisitions of what the modules acquired from the host
  // (modules/acquisitions.h) that raised: "release of ... (reload of 'plug'):
  // Type: message". Each also went to sys.unraisablehook; the others still ran.
  std::vector<std::string> acquisition_errors;
  std::string failed_module;            // which module raised, when outcome is failed
  std::string deferred_by;              // reload_options::defer_if_running: the module whose code runs
  std::optional<python_error> error;    // the original exception, when outcome is failed
  // The module object now in sys.modules (a module may replace itself).
  pybind11::object module;

  explicit operator bool() const noexcept { return outcome != reload_outcome::failed; }
};

struct [[nodiscard]] unload_report {
  std::vector<std::string> unloaded;   // the module and its submodules, deepest first
  std::vector<std::string> lingering;  // with force: holders that still keep old code alive
  bool freed = false;                  // the module object itself died (a weakref cleared)
  std::vector<std::string> acquisition_errors;  // releases that raised (the others still ran)
};

// unload() refused: something still holds the module or its code; or
// reload() found other threads still running its code.
class module_in_use_error : public error {
 public:
  module_in_use_error(const std::string& name, std::vector<std::string> referrers);  // unload's
  module_in_use_error(const std::string& name, std::vector<std::string> referrers, const std::string& message);
  const std::string& name() const noexcept { return name_; }
  const std::vector<std::string>& referrers() const noexcept { return referrers_; }

 private:
  std::string name_;
  std::vector<std::string> referrers_;
};

}  // namespace modhost
