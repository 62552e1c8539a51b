// modhost::file_watcher — which watched files changed, at a cost of O(changes).
//
// One inotify watch per directory, so every way an editor saves is seen:
// write in place, truncate-and-write, write a temp file and rename it over,
// delete and create. A file is reported once it has been quiet for the
// debounce interval, so a half-written file is not picked up while the
// editor is still writing. Where inotify is unavailable or the kernel's watch
// limit is reached, the watcher falls back to polling (stat of each watched
// file and directory) by itself and says so in mode().
//
// Not thread-safe except wait(), which another thread may call while one
// thread uses the rest.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace modhost {

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

  // Files that changed and have been quiet for the debounce interval since
  // their last event (each reported once per burst of changes). Cheap when
  // nothing happened.
  std::vector<std::filesystem::path> take_settled(clock::time_point now = clock::now());
  // `file` is being saved right now: an event not yet settled, written but
  // not closed, or changed within the debounce interval. Reading it now could
  // see a truncated, half-written file.
  bool still_changing(const std::filesystem::path& file);
  // Some changed file is still inside its debounce interval.
  bool has_unsettled() const { return !pending_.empty(); }
  // When the earliest unsettled file settles (or clock::time_point::max()).
  clock::time_point next_settle() const;

  // Blocks until the kernel reports events or `timeout` passes; in polling
  // mode it just sleeps for the timeout. Returns true if events are waiting.
  bool wait(std::chrono::milliseconds timeout) const;

  file_watcher::mode current_mode() const noexcept { return mode_; }
  // Why the watcher polls ("inotify unavailable: ...", "watch limit reached"), or empty.
  const std::string& fallback_reason() const noexcept { return fallback_reason_; }
  std::chrono::milliseconds debounce() const noexcept { return debounce_; }

 private:
  void watch_directory_events(const std::filesystem::path& dir);
  void drain_events(clock::time_point now);
  void poll_files(clock::time_point now);
  void fall_back(const std::string& reason);

  std::chrono::milliseconds debounce_;
  mode mode_ = mode::inotify;
  std::string fallback_reason_;
  int fd_ = -1;
  std::map<int, std::filesystem::path> directories_;  // inotify watch descriptor -> directory
  std::set<std::filesystem::path> watched_dirs_;
  std::set<std::filesystem::path> whole_dirs_;        // every file in them counts
  std::set<std::filesystem::path> files_;
  std::map<std::filesystem::path, clock::time_point> pending_;  // file -> its last event
  std::set<std::filesystem::path> writing_;  // modified, not yet closed by its writer (inotify)
  // Polling: what each file and directory looked like at the last check.
  std::map<std::filesystem::path, std::string> poll_state_;
};

}  // namespace modhost
