#include "modules/internal/file_watcher.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <set>

namespace modhost {
namespace {

// A file modified and still open is looked at again after this long: if
// the kernel says a writer still has it open, it waits on; if the kernel
// cannot say, the file counts as saved.
constexpr auto kOpenWriterPatience = std::chrono::seconds(2);

// Does some process have `path` open for writing? The kernel refuses a read
// lease exactly then (fcntl(2), F_SETLEASE: EAGAIN). Only the file's owner
// (or a process with CAP_LEASE) may take one, and not every filesystem
// grants them: false then, as for a file nobody writes.
bool open_for_writing(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
  if (fd < 0) return false;
  bool writer = false;
  if (::fcntl(fd, F_SETLEASE, F_RDLCK) == 0)
    ::fcntl(fd, F_SETLEASE, F_UNLCK);
  else
    writer = errno == EAGAIN;
  ::close(fd);
  return writer;
}

constexpr std::uint32_t kEvents = IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE |
                                  IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF;

// What a path looks like to the polling fallback.
std::string signature(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "missing";
  return std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ctim.tv_nsec) + ":" +
         std::to_string(st.st_ino);
}

// When `path` last changed, on the steady clock: its ctime's age, so a file
// saved a while before anyone looked counts as quiet already. Now, if gone.
file_watcher::clock::time_point last_change(const std::filesystem::path& path,
                                            file_watcher::clock::time_point now) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return now;
  // The kernel stamps ctime from a coarse clock: the change may be up to one tick later.
  static const auto tick = [] {
    timespec resolution{};
    clock_getres(CLOCK_REALTIME_COARSE, &resolution);
    return std::chrono::seconds(resolution.tv_sec) + std::chrono::nanoseconds(resolution.tv_nsec);
  }();
  auto changed = std::chrono::seconds(st.st_ctim.tv_sec) + std::chrono::nanoseconds(st.st_ctim.tv_nsec) + tick;
  auto age = std::chrono::system_clock::now().time_since_epoch() - changed;
  if (age <= std::chrono::nanoseconds::zero()) return now;
  return now - std::chrono::duration_cast<file_watcher::clock::duration>(age);
}

}  // namespace

std::filesystem::path normal_path(const std::filesystem::path& path) {
  std::error_code ec;
  auto absolute = std::filesystem::absolute(path, ec);
  auto normal = (ec ? path : absolute).lexically_normal();
  if (!normal.has_filename() && normal.has_relative_path()) normal = normal.parent_path();  // "/a/b/" -> "/a/b"
  return normal;
}

namespace {

// Every live watcher, for the fork handlers (which take no argument). Never
// destroyed: a watcher may outlive static destruction.
std::mutex& watchers_mutex() {
  static auto* mutex = new std::mutex;
  return *mutex;
}
std::set<file_watcher*>& watchers() {
  static auto* set = new std::set<file_watcher*>;
  return *set;
}

}  // namespace

// Around fork(): every watcher's mutex is held, so the child's copy of the
// state is not caught half-updated by a thread that does not come along.
// Nobody holds a watcher's mutex while waiting for anything else.
void file_watcher::before_fork() {
  watchers_mutex().lock();
  for (auto* watcher : watchers()) watcher->mutex_.lock();
}

void file_watcher::after_fork_in_parent() {
  for (auto* watcher : watchers()) watcher->mutex_.unlock();
  watchers_mutex().unlock();
}

// The child is single-threaded here; glibc has already made malloc usable
// again, as CPython's own after-fork code relies on.
void file_watcher::after_fork_in_child() {
  for (auto* watcher : watchers()) {
    watcher->reopen_in_child();
    watcher->mutex_.unlock();
  }
  watchers_mutex().unlock();
}

void file_watcher::reopen_in_child() {
  if (wake_fd_ >= 0) ::close(wake_fd_);  // closes the child's descriptor only
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (mode_ != mode::inotify) return;  // polling shares nothing with the parent
  ::close(fd_);
  fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0) {
    fall_back(std::string("inotify unavailable in the forked child: ") + std::strerror(errno));
    return;
  }
  auto dirs = std::move(watched_dirs_);
  watched_dirs_.clear();
  directories_.clear();
  for (const auto& dir : dirs) watch_directory_events(dir);
  auto now = clock::now();
  for (const auto& file : files_) pending_.emplace(file, now);  // see the banner
}

file_watcher::file_watcher(std::chrono::milliseconds debounce, bool force_polling) : debounce_(debounce) {
  static std::once_flag fork_handlers;
  std::call_once(fork_handlers, [] { pthread_atfork(&before_fork, &after_fork_in_parent, &after_fork_in_child); });
  {
    std::lock_guard<std::mutex> lock(watchers_mutex());
    watchers().insert(this);
  }
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);  // without it, wait() just cannot be interrupted
  if (force_polling) {
    fall_back("polling was requested");
    return;
  }
  fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0) fall_back(std::string("inotify unavailable: ") + std::strerror(errno));
}

file_watcher::~file_watcher() {
  {
    std::lock_guard<std::mutex> lock(watchers_mutex());
    watchers().erase(this);
  }
  if (fd_ >= 0) ::close(fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void file_watcher::fall_back(const std::string& reason) {
  mode_ = mode::polling;
  fallback_reason_ = reason;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  directories_.clear();
  writing_.clear();
  for (const auto& file : files_) poll_state_[file] = signature(file);
  for (const auto& dir : whole_dirs_) {
    std::error_code ec;
    for (const auto& item : std::filesystem::directory_iterator(dir, ec))
      poll_state_[item.path()] = signature(item.path());
  }
}

void file_watcher::watch_file(const std::filesystem::path& file) {
  auto path = normal_path(file);
  std::lock_guard<std::mutex> lock(mutex_);
  if (files_.insert(path).second && mode_ == mode::polling) poll_state_[path] = signature(path);
  watch_directory_events(path.parent_path());  // again too: the directory may be new or recreated
}

void file_watcher::watch_directory(const std::filesystem::path& directory) {
  auto dir = normal_path(directory);
  std::lock_guard<std::mutex> lock(mutex_);
  if (!whole_dirs_.insert(dir).second) return;
  if (mode_ == mode::polling) {
    std::error_code ec;
    for (const auto& item : std::filesystem::directory_iterator(dir, ec))
      poll_state_[item.path()] = signature(item.path());
  }
  watch_directory_events(dir);
}

void file_watcher::watch_directory_events(const std::filesystem::path& dir) {
  if (!watched_dirs_.insert(dir).second || mode_ != mode::inotify) return;
  int wd = inotify_add_watch(fd_, dir.c_str(), kEvents);
  if (wd >= 0) {
    directories_[wd] = dir;
  } else if (errno == ENOSPC) {
    fall_back("the inotify watch limit is reached (fs.inotify.max_user_watches)");
  } else if (errno != ENOENT) {
    fall_back(std::string("inotify_add_watch failed: ") + std::strerror(errno));
  } else {
    watched_dirs_.erase(dir);  // does not exist (yet): try again when asked again
  }
}

bool file_watcher::is_watched_directory(const std::filesystem::path& directory) const {
  auto dir = normal_path(directory);
  std::lock_guard<std::mutex> lock(mutex_);
  return watched_dirs_.count(dir) != 0;
}

void file_watcher::drain_events(clock::time_point now) {
  alignas(inotify_event) char buffer[16384];
  for (;;) {
    ssize_t length = ::read(fd_, buffer, sizeof buffer);
    if (length <= 0) return;  // EAGAIN: nothing more
    for (char* p = buffer; p < buffer + length;) {
      auto* event = reinterpret_cast<inotify_event*>(p);
      p += sizeof(inotify_event) + event->len;
      if (event->mask & IN_Q_OVERFLOW) {  // lost events: every file may have changed, by anyone
        for (const auto& file : files_) pending_[file] = now + debounce_;
        continue;
      }
      auto dir = directories_.find(event->wd);
      if (dir == directories_.end()) continue;
      if (event->mask & IN_IGNORED) {  // the directory went away
        watched_dirs_.erase(dir->second);
        directories_.erase(dir);
        continue;
      }
      if (event->len == 0) continue;
      auto path = dir->second / event->name;
      if (!files_.count(path) && !whole_dirs_.count(dir->second)) continue;
      last_event_ = now;
      // In the order they happened: the last one says where the file stands.
      if (event->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) {
        // Complete: its writer closed it, or it was written elsewhere and
        // renamed into place. Reported at once.
        writing_.erase(path);
        pending_[path] = now;
      } else if (event->mask & IN_MODIFY) {  // written (or truncated), still open: wait for the close
        writing_.insert(path);
        pending_[path] = last_change(path, now) + std::max<clock::duration>(debounce_, kOpenWriterPatience);
      } else if (event->mask & IN_ATTRIB) {
        // Metadata only (touch, chmod; editors set them after writing): the
        // content is what it was, so it delays nothing already pending.
        if (!pending_.count(path)) pending_[path] = now;
      } else if (event->mask & (IN_DELETE | IN_MOVED_FROM)) {
        // Gone, perhaps to be created again at once (editors that delete and
        // recreate): the debounce keeps that one save rather than a deletion.
        writing_.erase(path);
        pending_[path] = now + debounce_;
      } else if (event->mask & IN_CREATE) {
        // Its writer's close (or first write) follows if there is one; a
        // link or a file created empty and left so settles after the debounce.
        if (!writing_.count(path)) pending_[path] = last_change(path, now) + debounce_;
      }
    }
  }
}

void file_watcher::poll_files(clock::time_point now) {
  auto check = [&](const std::filesystem::path& path) {
    auto now_signature = signature(path);
    auto& known = poll_state_[path];
    if (known != now_signature) {
      known = now_signature;
      last_event_ = now;
      pending_[path] = now + debounce_;  // reported once a later stat agrees, a debounce later
    }
  };
  for (const auto& file : files_) check(file);
  std::vector<std::filesystem::path> vanished;
  for (const auto& dir : whole_dirs_) {
    std::error_code ec;
    for (const auto& item : std::filesystem::directory_iterator(dir, ec))
      if (!files_.count(item.path())) check(item.path());
  }
  for (const auto& [path, known] : poll_state_)  // gone from a watched directory
    if (known != "missing" && !files_.count(path) && whole_dirs_.count(path.parent_path())) vanished.push_back(path);
  for (const auto& path : vanished) check(path);
}

void file_watcher::read_changes(clock::time_point now) {
  if (mode_ == mode::inotify)
    drain_events(now);
  else
    poll_files(now);
}

std::vector<std::filesystem::path> file_watcher::take_settled(clock::time_point now) {
  std::lock_guard<std::mutex> lock(mutex_);
  read_changes(now);
  std::vector<std::filesystem::path> settled;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now >= it->second && writing_.count(it->first) && open_for_writing(it->first)) {
      it->second = now + kOpenWriterPatience;  // its writer keeps it open: still being saved
      ++it;
    } else if (now >= it->second) {
      writing_.erase(it->first);  // a writer the kernel cannot tell of kept it open past the patience
      settled.push_back(it->first);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  return settled;
}

bool file_watcher::has_settled(clock::time_point now) {
  std::lock_guard<std::mutex> lock(mutex_);
  read_changes(now);
  return std::any_of(pending_.begin(), pending_.end(),
                     [&](const auto& item) { return now >= item.second; });
}

bool file_watcher::at_rest(const std::filesystem::path& file) {
  auto path = normal_path(file);
  std::lock_guard<std::mutex> lock(mutex_);
  if (mode_ != mode::inotify) return false;
  drain_events(clock::now());
  if (!watched_dirs_.count(path.parent_path())) return false;  // no events could have come
  if (!files_.count(path) && !whole_dirs_.count(path.parent_path())) return false;
  return !pending_.count(path) && !writing_.count(path);
}

bool file_watcher::still_changing(const std::filesystem::path& file) {
  auto path = normal_path(file);
  auto now = clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  if (mode_ == mode::inotify) drain_events(now);
  if (pending_.count(path) || writing_.count(path)) return true;
  if (mode_ == mode::inotify && watched_dirs_.count(path.parent_path()) &&
      (files_.count(path) || whole_dirs_.count(path.parent_path())))
    return false;  // the kernel would have said so
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return false;  // deleted: settled, nothing to wait for
  return now - last_change(path, now) < debounce_;
}

bool file_watcher::has_unsettled() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !pending_.empty();
}

bool file_watcher::busy(clock::time_point now) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !writing_.empty() ||
         std::any_of(pending_.begin(), pending_.end(), [&](const auto& item) { return item.second > now; });
}

file_watcher::clock::time_point file_watcher::last_event() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_event_;
}

bool file_watcher::changed_since(clock::time_point since) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (mode_ == mode::inotify) drain_events(clock::now());  // polling: its next round says
  return last_event_ > since;
}

file_watcher::clock::time_point file_watcher::next_settle() const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto next = clock::time_point::max();
  for (const auto& [path, ready_at] : pending_) next = std::min(next, ready_at);
  return next;
}

bool file_watcher::wait(std::chrono::milliseconds timeout) const {
  pollfd requests[2] = {{wake_fd_, POLLIN, 0}, {mode_ == mode::inotify ? fd_ : -1, POLLIN, 0}};
  int ready = ::poll(requests, 2, static_cast<int>(std::min<std::chrono::milliseconds::rep>(timeout.count(), 1 << 30)));
  if (ready > 0 && (requests[0].revents & POLLIN)) {
    std::uint64_t count = 0;
    ssize_t ignored = ::read(wake_fd_, &count, sizeof count);  // reset it: one interruption, one return
    (void)ignored;
    return true;
  }
  if (mode_ != mode::inotify) return true;  // polling: every wake-up is a reason to look
  return ready > 0 && (requests[1].revents & POLLIN);
}

void file_watcher::interrupt() const noexcept {
  std::uint64_t one = 1;
  ssize_t ignored = ::write(wake_fd_, &one, sizeof one);
  (void)ignored;
}

}  // namespace modhost
