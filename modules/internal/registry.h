// detail::registry — the cache's entries, following sys.modules.
//
// sys.modules stays the truth: a lookup confirms the entry's module is still
// the one there (cheaply, by sys.modules' version tag where the interpreter
// has one) and follows a module deleted or replaced behind the cache's back.
// The registry also knows the C++ function handles bound to its modules,
// because gc cannot see them and unload must.
#pragma once

#include <pybind11/pytypes.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "modules/fingerprint.h"
#include "modules/internal/import_graph.h"
#include "modules/module_types.h"

namespace modhost::detail {

class python_helpers;
class registry;

struct cache_entry {
  std::string name;
  pybind11::object module;  // the cache's own reference
  std::uint64_t confirmed_version = 0;  // sys.modules' version when `module` was last confirmed
  module_kind kind = module_kind::other;
  std::filesystem::path path;
  module_state state = module_state::loaded;
  std::uint64_t generation = 1;
  std::optional<fingerprint> print;  // of the file whose code runs
  std::string last_error;
  pybind11::object code;  // compiled from the source `print` describes; reused while it is unchanged
  // The source as compare() compiled it to tell an edit from a touch (an
  // untrusted `print`), and the content hash of the bytes compiled: the
  // reload that usually follows runs it rather than compile them again.
  pybind11::object compared_code;
  std::uint64_t compared_hash = 0;
  // Bumped whenever the code behind `name` may have changed (reload, replacement,
  // unload): stable handles compare it instead of looking the name up again.
  std::shared_ptr<std::uint64_t> revision = std::make_shared<std::uint64_t>(0);
};

// What the registry knows of one modhost::function_handle.
struct handle_slot {
  registry* cache = nullptr;  // null once the cache is gone
  std::string module;
  std::string attribute;
  pybind11::object function;  // the current version, or empty
  std::shared_ptr<std::uint64_t> revision;
  std::uint64_t seen_revision = 0;
};

class registry {
 public:
  registry(const python_helpers& helpers, import_graph& graph);
  ~registry();  // detaches the handles still alive: they then report the cache gone
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  // The entry of a module in sys.modules (tracked now if it was not), or
  // nullptr. The hit path: a hash-map lookup and a version compare.
  cache_entry* lookup(const std::string& name);
  // The entry tracked under `name` as it stands: no confirming against
  // sys.modules, so no Python code runs.
  cache_entry* find_tracked(const std::string& name) {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : it->second.get();
  }
  // lookup(), or ValueError for a malformed name / ImportError if not loaded.
  cache_entry* require(const std::string& name);
  // Starts (or restarts) tracking `module` under `name`.
  cache_entry* track(const std::string& name, pybind11::handle module);
  // Stops tracking `name` (unloaded); its handles see the revision move.
  // The entry drops its module at once, but its memory lives on until no
  // cache call is in progress: a call on another thread may hold it across
  // Python code (a comparison's read of the source) while this one runs.
  void forget(const std::string& name);
  // Follows every change to sys.modules since the last look.
  void sync_all();
  // Tracked names, sorted (after sync_all()).
  std::vector<std::string> names();
  // (kind, origin file) of a module, from the spec in its __dict__ (no
  // attribute lookup on the module, no Python code runs).
  std::pair<module_kind, std::filesystem::path> classify(const std::string& name, pybind11::handle module);
  // The file differs from what runs (deleted counts as changed).
  bool is_changed(cache_entry& entry);
  // compare_file against the entry's fingerprint; where the fingerprint is
  // untrusted (the file moved between the import and the tracking, so what
  // ran was never hashed), the source compiled to the code that runs counts
  // as touched, and the fingerprint becomes the file's.
  file_change compare(cache_entry& entry);
  // What the import system executed for `name` (the import hook saw it):
  // the stat of its file at that moment and the code, which become the
  // entry's fingerprint and code when it is tracked (or now, through
  // adopt_executed, when it already is: importlib.reload, a lazy module).
  struct executed_code {
    std::filesystem::path path;
    fingerprint print;  // stat of the file when its code started (hashed at tracking)
    pybind11::object code;  // none when the code did not come from `path`'s source
    // The code came from a .pyc written before the source's last change: it
    // may not be what the source says (a same-size edit within the second
    // the .pyc records). Confirmed by compiling the source at tracking.
    bool maybe_stale = false;
  };
  void note_executed(const std::string& name, executed_code executed);
  // Applies a note for an entry tracked before its code ran; false if none.
  bool adopt_executed(cache_entry& entry);
  // Forgets the note for `name` if it is of `code` (that import failed; a
  // later import of the same name has a note of its own).
  void drop_executed(const std::string& name, pybind11::handle code) {
    auto noted = executed_.find(name);
    if (noted != executed_.end() && noted->second.code.ptr() == code.ptr()) executed_.erase(noted);
  }

  // True while the module's first import runs (its spec's _initializing),
  // read from its __dict__: no attribute of the module object is looked up,
  // so a lazy module (importlib.util.LazyLoader) stays lazy.
  static bool initializing(pybind11::handle module);

  // Modules whose reload is running: their sys.modules entry may briefly
  // differ, and a lookup must not follow it.
  std::set<std::string>& reloading() noexcept { return reloading_; }
  // Modules an unload is removing, from its first check to its end: a reload
  // of one is refused (and an unload refuses modules being reloaded), so
  // neither frees or replaces what the other is working on.
  std::set<std::string>& unloading() noexcept { return unloading_; }

  // A public cache call in progress (any thread, with the GIL): entries
  // forgotten meanwhile are freed when the last one ends.
  class call_scope {
   public:
    explicit call_scope(registry& modules) : modules_(modules) { ++modules_.calls_; }
    ~call_scope() {
      if (--modules_.calls_ == 0) modules_.retired_.clear();
    }
    call_scope(const call_scope&) = delete;
    call_scope& operator=(const call_scope&) = delete;

   private:
    registry& modules_;
  };
  // True while any public cache call is in progress.
  bool in_call() const noexcept { return calls_ > 0; }
  std::vector<handle_slot*>& handles() noexcept { return handles_; }
  import_graph& graph() noexcept { return graph_; }
  const python_helpers& helpers() const noexcept { return helpers_; }
  // Moves whenever a module starts or stops being tracked; any thread, no GIL.
  std::uint64_t tracking_revision() const noexcept { return tracking_revision_; }
  // Called whenever tracking_revision() moves (see module_cache::add_tracking_listener).
  std::map<std::uint64_t, std::function<void()>>& tracking_listeners() noexcept { return tracking_listeners_; }

  // sys.modules' version tag now (0 where the interpreter has none).
  static std::uint64_t sys_modules_version();

 private:
  void classify(cache_entry& entry);
  void tracking_moved();

  const python_helpers& helpers_;
  import_graph& graph_;
  std::unordered_map<std::string, std::unique_ptr<cache_entry>> entries_;
  std::set<std::string> reloading_;
  std::set<std::string> unloading_;
  int calls_ = 0;
  std::vector<std::unique_ptr<cache_entry>> retired_;  // forgotten during a call, freed after it
  std::vector<handle_slot*> handles_;
  void adopt(cache_entry& entry, executed_code executed);

  std::unordered_map<std::string, executed_code> executed_;  // until the module is tracked
  // What classify() needs to know of the interpreter, read once.
  std::set<std::string> builtin_names_;
  std::vector<std::string> extension_suffixes_;
  // Atomic: the autoreloader's background thread reads it without the GIL.
  std::atomic<std::uint64_t> tracking_revision_{0};
  std::map<std::uint64_t, std::function<void()>> tracking_listeners_;
};

}  // namespace modhost::detail
