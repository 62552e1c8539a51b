// modhost::autoreloader — save a file, and the running program runs the new code.
//
// It applies a policy to what the file watcher reports: "off", "explicit"
// (only watched modules and modules under watched directories) or "all"
// (every source module under the host's module search paths, plus watched
// ones; the stdlib and site-packages only when watched). What changed is a
// changeset: every complete save at hand (in background mode, every save
// of a burst, see start_background) is deep-reloaded with the dependents as
// one transaction, within a time limit (10 s unless set_time_limit says
// otherwise), never under a running frame of that code on the main thread
// (for up to 1 s). A failure prints one line
// "[modhost] reload of NAMES failed: ..." to stderr, keeps the old code, and
// the set is retried, whole, when any of its files changes again (together
// with what changed then: a rename across two files goes live at the second
// save); a deleted file, an unreadable
// one (as PermissionError, the way an explicit reload says it) and a changed
// extension module are reported once.
//
// Reloads happen only at safe points: never while a module is being
// imported or reloaded, always on the thread that holds the GIL. A C++ host
// calls poll() from its own loop; the host program instead calls
// start_background(): a thread waits for the watcher and, as soon as a save
// is complete, has poll() run on the main thread at its next bytecode
// boundary (a CPython pending call whose eval-breaker flag it sets itself,
// see modules/internal/main_thread_call.h), so a script's `while True:`
// loop, even one that never releases the GIL, and a C++ loop calling
// function_handles see new code without calling anything. Code blocked in
// a C call reaches that boundary when the call returns.
//
// After fork() the child has a watcher of its own (see modules/internal/file_watcher.h), and
// if the parent ran the background thread, the child starts its own in
// Python's after-fork hook (os.register_at_fork): a child that only calls
// poll() and one that relies on the thread both see their edits.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <pybind11/pytypes.h>

#include "modules/cpython/visibility.h"

namespace modhost MODHOST_API {

class module_cache;
class file_watcher;  // modules/internal/file_watcher.h

enum class autoreload_mode { off, explicit_only, all };

// "off", "explicit", "all".
const char* to_string(autoreload_mode mode) noexcept;
// Parses the names above; empty for anything else.
std::optional<autoreload_mode> parse_autoreload_mode(const std::string& text) noexcept;

class autoreloader {
 public:
  autoreloader(module_cache& cache, std::chrono::milliseconds debounce, bool force_polling);
  ~autoreloader();
  autoreloader(const autoreloader&) = delete;
  autoreloader& operator=(const autoreloader&) = delete;

  autoreload_mode mode() const noexcept { return mode_; }
  void set_mode(autoreload_mode mode);

  // Covers a module in every mode but "off" (and undoes unwatch). It need
  // not be loaded yet; a name no module can have (empty, NUL, '..', a part
  // longer than a file name) throws python_error (ValueError).
  void watch(const std::string& name);
  // Excludes a module, also in "all" mode. Names are checked as by watch().
  void unwatch(const std::string& name);
  // Covers every module whose file is under `directory` (any spelling: "."
  // "dir/", "a/../dir", a symbolic link), and notices new files appearing
  // there (they become importable at once). Throws python_error:
  // FileNotFoundError, NotADirectoryError (or another OSError) if it is not
  // an existing directory, ValueError for a NUL in the path.
  void watch_directory(const std::filesystem::path& directory);

  // Applies the policy now; returns the modules reloaded (dependents
  // included). Cheap when nothing changed: one read() of the watcher. Needs
  // the GIL; returns nothing at an unsafe point (an import or reload is
  // running), to be called again later.
  std::vector<std::string> poll();

  // Applies changes by itself from now on: a thread waits for the watcher
  // (and for newly imported modules, whose files it then watches at once)
  // and has poll() run on the main thread at its next bytecode boundary.
  // Call on the main thread, with the GIL.
  void start_background();
  void stop_background();

  // The file watcher: "inotify" or "polling", why it polls (empty if it
  // does not), and the debounce.
  struct watcher_status {
    std::string mode;
    std::string fallback_reason;
    std::chrono::milliseconds debounce;
  };
  watcher_status describe_watcher() const;
  const file_watcher& watcher() const noexcept { return *watcher_; }  // for tests

  // How long one autoreload's new code may run before it is rolled back
  // with TimeLimitExceeded (0: no limit). Ctrl-C during it rolls it back
  // too, and poll() then throws the KeyboardInterrupt (in background mode
  // the main thread raises it where it is).
  void set_time_limit(std::chrono::milliseconds limit) noexcept { time_limit_ = limit; }
  std::chrono::milliseconds time_limit() const noexcept { return time_limit_; }

 private:
  void prepare();
  void refresh_roots();
  void rescan_all();
  bool covers(const std::string& name, const std::filesystem::path& file) const;
  void track_new_modules();
  // A changed module poll() will apply, with the content it has now.
  struct change {
    std::string name;
    std::uint64_t content_hash;
    bool vouched;  // the kernel saw its save complete and nobody wrote it since
  };
  std::optional<change> examine(const std::string& name, bool reported);
  // `collected`: when poll() read the saves that `changes` come from.
  void apply(std::vector<change> changes, std::chrono::steady_clock::time_point collected,
             std::vector<std::string>& reloaded);
  void apply_set(const std::vector<change>& changes, std::chrono::steady_clock::time_point collected,
                 std::vector<std::string>& reloaded);
  void background_loop();
  static int run_pending(void*);
  void restart_after_fork();

  module_cache& cache_;
  std::unique_ptr<file_watcher> watcher_;
  autoreload_mode mode_ = autoreload_mode::off;
  std::chrono::milliseconds time_limit_{std::chrono::seconds(10)};
  std::set<std::string> watched_;
  std::set<std::string> unwatched_;
  std::vector<std::filesystem::path> roots_;     // "all" mode covers files under these
  std::vector<std::filesystem::path> excluded_;  // ...except under these (stdlib, site-packages)
  std::vector<std::filesystem::path> watched_dirs_;
  std::map<std::filesystem::path, std::string> path_to_name_;
  std::set<std::string> scanned_;  // module names already looked at
  pybind11::object last_sys_path_;  // a copy of sys.path when the roots were computed
  std::vector<std::filesystem::path> stdlib_dirs_;
  // cache.tracking_revision() when last scanned (the background thread reads it too)
  std::atomic<std::uint64_t> seen_tracking_{~0ull};
  // Changed but not applied yet: saved before their file was watched, or
  // caught mid-save. The next poll() takes them.
  std::set<std::string> due_;
  // The last changeset that failed, with the content each file had: not
  // tried again until one of them changes, and then together with it.
  std::map<std::string, std::uint64_t> failed_set_;
  // Since when the changes wait for the main thread to leave their code
  // (reload_options::defer_if_running); after main_thread_patience they
  // are applied all the same, and that is said once.
  std::optional<std::chrono::steady_clock::time_point> running_since_;
  static constexpr std::chrono::milliseconds main_thread_patience{1000};
  // Background mode: a burst of saves becomes one changeset once the files
  // were quiet for the debounce (none still being written or deleted),
  // or this long after its first complete save, whichever comes first; a
  // set rolled back because saves came while it ran is committed all the
  // same once they have kept coming this long.
  static constexpr std::chrono::milliseconds changeset_limit{1000};
  std::string waiting_for_;  // the module whose running code the changes wait for, or empty
  // Since when the changes at hand were rolled back because more saves came
  // while they ran (reload_options::still_complete).
  std::optional<std::chrono::steady_clock::time_point> incomplete_since_;
  // Since when poll() has waited for a burst of saves to end (background mode).
  std::optional<std::chrono::steady_clock::time_point> burst_since_;
  bool inside_waited_code();
  void wait_for(std::string module);
  // The quiet that ends a burst of saves: the debounce (see background_loop).
  std::chrono::milliseconds changeset_gap() const;
  bool in_burst(std::chrono::steady_clock::time_point now) const;
  std::set<std::string> reported_;                    // deleted / extension: said once
  bool polling_ = false;  // poll() is on the stack: a pending call inside it must not poll again

  // Background mode: the thread asks the main thread to poll and waits until it has.
  std::thread thread_;
  // On the heap: a forked child replaces them (restart_after_fork).
  std::unique_ptr<std::mutex> mutex_ = std::make_unique<std::mutex>();
  std::unique_ptr<std::condition_variable> done_ = std::make_unique<std::condition_variable>();
  bool scheduled_ = false;  // a pending call is queued and has not run yet
  // Set by the pending call: when to poll again without a new event (a
  // deferred save, no safe point), and whether only that time may bring the
  // next poll (no safe point: the main thread is importing or reloading).
  std::chrono::steady_clock::time_point retry_at_ = std::chrono::steady_clock::time_point::max();
  bool unsafe_ = false;
  std::chrono::milliseconds unsafe_backoff_{1};
  std::uint64_t tracking_listener_ = 0;
  std::atomic<bool> woken_{false};  // the tracking listener already interrupted the wait
  std::atomic<bool> stop_{false};
};

}  // namespace modhost
