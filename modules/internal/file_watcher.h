// modhost::file_watcher — which watched files changed, at a cost of O(changes).
//
// One inotify watch per directory, so every way an editor saves is seen:
// write in place, truncate-and-write, write a temp file and rename it over,
// delete and create. A save is reported as soon as it is complete, and never
// while it is half done:
//  - inotify: a file its writer closed (IN_CLOSE_WRITE) or that was renamed
//    into place (IN_MOVED_TO) is complete and reported at once, with no
//    debounce. A file modified and still open for writing waits for its
//    close, however long it keeps it open (the kernel refuses a read lease
//    while a writer has it open; where it cannot say, because the file has
//    another owner or the filesystem grants no leases, a file quiet for
//    max(debounce, 2 s) counts as saved). Only events that say nothing about a writer (a
//    deletion, a creation without writes, a lost-events overflow) wait for
//    the debounce interval;
//  - polling (where inotify is unavailable or the kernel's watch limit is
//    reached; the watcher falls back by itself and says so in mode()): a
//    file is reported once two stats a debounce interval apart agree.
// Every call that reports reads what the kernel has queued first, so a save
// that completed a microsecond earlier is reported by that very call.
//
// Thread-safe: the background thread of an autoreloader waits and asks
// has_settled() while the main thread takes the changes.
//
// Fork-safe: a forked child gets an inotify queue and wake-up eventfd of its
// own (a pthread_atfork handler), with the same watches. Shared, whichever
// process read first took the other's events, and an interrupt() in one
// woke the other's wait(). Events the kernel queued before the fork stay
// with the parent, so in the child every watched file is reported once
// (the autoreloader then compares each with what runs: a stat).
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "modules/cpython/visibility.h"

namespace modhost MODHOST_HIDDEN {

// `path` absolute and lexically normal, without a trailing separator: the one
// spelling in which the watcher and the autoreloader store and compare paths.
// ".", "plugins/", "./plugins" and "x/../plugins" are all "/cwd/plugins"
// (lexically_normal() alone leaves "/cwd/plugins/", whose empty last element
// matched no file under it). Symbolic links are left as they are.
std::filesystem::path normal_path(const std::filesystem::path& path);

class file_watcher {
 public:
  using clock = std::chrono::steady_clock;

  enum class mode {
    inotify,  // kernel notification: a check costs one read() when nothing changed
    polling,  // fallback: a check stats every watched file
  };

  explicit file_watcher(std::chrono::milliseconds debounce = std::chrono::milliseconds(10),
                        bool force_polling = false);
  ~file_watcher();
  file_watcher(const file_watcher&) = delete;
  file_watcher& operator=(const file_watcher&) = delete;

  // Watches `file` (and its directory). Idempotent.
  void watch_file(const std::filesystem::path& file);
  // Watches every file that appears in or changes in `directory`.
  void watch_directory(const std::filesystem::path& directory);
  bool is_watched_directory(const std::filesystem::path& directory) const;

  // Files whose save is complete (see the banner), each reported once per
  // burst of changes. Cheap when nothing happened: one read().
  std::vector<std::filesystem::path> take_settled(clock::time_point now = clock::now());
  // take_settled() would report something now; takes nothing.
  bool has_settled(clock::time_point now = clock::now());
  // The kernel vouches that `file` is at rest: it is watched through inotify
  // and no event arrived for it since take_settled() last reported it (so
  // nobody wrote it since its writer closed it). False in polling mode, which
  // cannot tell. Reads the kernel's queue first.
  bool at_rest(const std::filesystem::path& file);
  // `file` is being saved right now: an event not yet settled, written but
  // not closed, or (for a file the watcher cannot vouch for) changed within
  // the debounce interval. Reading it now could see a half-written file.
  bool still_changing(const std::filesystem::path& file);
  // Some changed file is not reported yet (waiting for its writer or the debounce).
  bool has_unsettled() const;
  // Some changed file will not be reported before a later `now` (a writer
  // still has it open, or its debounce runs): more of a burst is coming.
  bool busy(clock::time_point now) const;
  // When the last change to a watched file was read (clock epoch if none).
  clock::time_point last_event() const;
  // A watched file changed after `since`; reads the kernel's queue first.
  bool changed_since(clock::time_point since);
  // When the earliest unsettled file may be reported (or clock::time_point::max()).
  clock::time_point next_settle() const;

  // Blocks until the kernel reports events, interrupt() is called or
  // `timeout` passes; in polling mode it sleeps for the timeout unless
  // interrupted. Returns true if events (or an interruption) are waiting.
  bool wait(std::chrono::milliseconds timeout) const;
  // Makes a wait() in another thread return now (or the next one, if none
  // runs). Async-signal-safe.
  void interrupt() const noexcept;

  file_watcher::mode current_mode() const noexcept { return mode_; }
  // Why the watcher polls ("inotify unavailable: ...", "watch limit reached"), or empty.
  const std::string& fallback_reason() const noexcept { return fallback_reason_; }
  std::chrono::milliseconds debounce() const noexcept { return debounce_; }

 private:
  static void before_fork();
  static void after_fork_in_parent();
  static void after_fork_in_child();
  void reopen_in_child();
  void watch_directory_events(const std::filesystem::path& dir);
  void read_changes(clock::time_point now);  // the kernel's queue, or a stat of everything
  void drain_events(clock::time_point now);
  void poll_files(clock::time_point now);
  void fall_back(const std::string& reason);

  mutable std::mutex mutex_;  // everything below, except the constants and the fds
  std::chrono::milliseconds debounce_;
  std::atomic<mode> mode_{mode::inotify};  // the background thread's wait() reads it
  std::string fallback_reason_;
  int fd_ = -1;
  int wake_fd_ = -1;  // an eventfd that interrupt() writes and wait() polls
  std::map<int, std::filesystem::path> directories_;  // inotify watch descriptor -> directory
  std::set<std::filesystem::path> watched_dirs_;
  std::set<std::filesystem::path> whole_dirs_;        // every file in them counts
  std::set<std::filesystem::path> files_;
  std::map<std::filesystem::path, clock::time_point> pending_;  // file -> when it may be reported
  std::set<std::filesystem::path> writing_;  // modified, not yet closed by its writer (inotify)
  clock::time_point last_event_{};
  // Polling: what each file and directory looked like at the last check.
  std::map<std::filesystem::path, std::string> poll_state_;
};

}  // namespace modhost
