#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/autoreload.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>

#include "modules/cpython/gil.h"
#include "modules/cpython/log.h"
#include "modules/internal/cache_access.h"
#include "modules/internal/file_watcher.h"
#include "modules/internal/handle_safe_point.h"
#include "modules/internal/main_thread_call.h"
#include "modules/internal/python_helpers.h"
#include "modules/internal/registry.h"
#include "modules/internal/request_checks.h"
#include "modules/module_cache.h"

namespace py = pybind11;

namespace modhost {

const char* to_string(autoreload_mode mode) noexcept {
  switch (mode) {
    case autoreload_mode::off: return "off";
    case autoreload_mode::explicit_only: return "explicit";
    case autoreload_mode::all: return "all";
  }
  return "?";
}

std::optional<autoreload_mode> parse_autoreload_mode(const std::string& text) noexcept {
  if (text == "off") return autoreload_mode::off;
  if (text == "explicit") return autoreload_mode::explicit_only;
  if (text == "all") return autoreload_mode::all;
  return std::nullopt;
}

namespace {

// The autoreloader whose pending call may run; cleared before it goes away,
// because a scheduled pending call cannot be taken back.
std::atomic<autoreloader*> g_background{nullptr};

// threading.main_thread(): where pending calls run (after a fork, the thread that forked).
unsigned long main_thread_ident() {
  return py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
}

bool is_under(const std::filesystem::path& path, const std::filesystem::path& dir) {
  auto mismatch = std::mismatch(dir.begin(), dir.end(), path.begin(), path.end());
  return mismatch.first == dir.end();
}

// The report is one line per failure, whatever the exception's message holds.
std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

// A directory as coverage compares it: normal_path() with symbolic links
// resolved, so `--watch plugins` covers the modules that sys.path finds
// through a link to it, and the other way round.
std::filesystem::path real_directory(const std::filesystem::path& directory) {
  std::error_code ec;
  auto real = std::filesystem::weakly_canonical(normal_path(directory), ec);
  return ec ? normal_path(directory) : normal_path(real);
}

// A module file as coverage compares it: its directory resolved, the file
// itself not (a plugin linked into a watched directory is under it).
std::filesystem::path real_file(const std::filesystem::path& file) {
  auto path = normal_path(file);
  return real_directory(path.parent_path()) / path.filename();
}

// Why `file` cannot be opened for reading (an errno), or 0 if it can.
int open_error(const std::filesystem::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO must not block
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

}  // namespace

autoreloader::autoreloader(module_cache& cache, std::chrono::milliseconds debounce, bool force_polling)
    : cache_(cache), watcher_(std::make_unique<file_watcher>(debounce, force_polling)) {}

// The autoreloader acts at safe points, which may be inside an import (the
// main thread running functools' or threading's top level): what it would
// import there would meet that module half-initialized. So what it needs is
// imported when autoreload is turned on, at a statement of the program's
// own: the cache's Python helpers (python_helpers.h, which run on first use),
// sysconfig for the stdlib's directories, importlib for invalidate_caches.
void autoreloader::prepare() {
  detail::cache_access::modules(cache_).helpers().load();
  if (stdlib_dirs_.empty()) {
    py::dict paths = py::module_::import("sysconfig").attr("get_paths")();
    for (const char* key : {"stdlib", "platstdlib", "purelib", "platlib"})
      if (paths.contains(key)) stdlib_dirs_.push_back(real_directory(py::str(paths[key]).cast<std::string>()));
  }
  py::module_::import("importlib");
}

// "all" covers sys.path minus the stdlib and installed packages. Recomputed
// only when sys.path changed: a rescan follows every new import.
void autoreloader::refresh_roots() {
  py::list path = py::module_::import("sys").attr("path");
  if (last_sys_path_ && last_sys_path_.equal(path)) return;
  last_sys_path_ = py::reinterpret_steal<py::object>(PySequence_List(path.ptr()));  // sys.path changes in place
  roots_ = watched_dirs_;
  excluded_ = stdlib_dirs_;
  for (auto entry : path) {
    if (!py::isinstance<py::str>(entry)) continue;
    std::string dir = py::str(entry);
    auto normalized = real_directory(dir.empty() ? "." : dir);
    bool installed = dir.find("site-packages") != std::string::npos || dir.find("dist-packages") != std::string::npos;
    (installed ? excluded_ : roots_).push_back(normalized);
  }
  rescan_all();  // coverage may have changed
}

autoreloader::~autoreloader() { stop_background(); }

void autoreloader::rescan_all() {
  scanned_.clear();
  path_to_name_.clear();
  seen_tracking_ = ~0ull;
}

void autoreloader::set_mode(autoreload_mode mode) {
  if (mode != autoreload_mode::off) prepare();
  mode_ = mode;
  rescan_all();
}

void autoreloader::watch(const std::string& name) {
  detail::check_module_name(name);  // it need not be loaded yet, but it must be a name a module can have
  prepare();
  unwatched_.erase(name);
  watched_.insert(name);
  rescan_all();
}

void autoreloader::unwatch(const std::string& name) {
  detail::check_module_name(name);
  watched_.erase(name);
  unwatched_.insert(name);
  rescan_all();
}

void autoreloader::watch_directory(const std::filesystem::path& directory) {
  // A mistyped directory would otherwise be watched for ever, silently, and
  // a NUL would cut the path short in every system call.
  const std::string& text = directory.native();
  if (text.find('\0') != std::string::npos)
    detail::raise_error(PyExc_ValueError, "watch_directory: the path contains a NUL byte");
  struct stat st {};
  int error = text.empty() ? ENOENT : ::stat(text.c_str(), &st) != 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
  if (error) throw detail::os_error(error, text);
  prepare();
  watched_dirs_.push_back(real_directory(directory));
  watcher_->watch_directory(normal_path(directory));
  rescan_all();
}

bool autoreloader::covers(const std::string& name, const std::filesystem::path& file) const {
  if (mode_ == autoreload_mode::off || unwatched_.count(name)) return false;
  if (watched_.count(name)) return true;
  if (file.empty()) return false;
  const auto path = real_file(file);  // compared with directories that real_directory() made
  auto under_any = [&](const std::vector<std::filesystem::path>& dirs) {
    return std::any_of(dirs.begin(), dirs.end(), [&](const auto& dir) { return is_under(path, dir); });
  };
  if (under_any(watched_dirs_)) return true;
  if (mode_ != autoreload_mode::all) return false;
  // The most specific directory decides: a venv's site-packages inside a project is excluded.
  std::size_t root_depth = 0, excluded_depth = 0;
  for (const auto& dir : roots_)
    if (is_under(path, dir)) root_depth = std::max<std::size_t>(root_depth, std::distance(dir.begin(), dir.end()));
  for (const auto& dir : excluded_)
    if (is_under(path, dir)) excluded_depth = std::max<std::size_t>(excluded_depth, std::distance(dir.begin(), dir.end()));
  return root_depth > excluded_depth;
}

// Watches the files of newly tracked covered modules; runs only when the set
// of tracked modules (or the policy) changed since the last time, and looks
// only at names it has not seen.
void autoreloader::track_new_modules() {
  std::uint64_t revision = cache_.tracking_revision();
  if (revision == seen_tracking_) return;
  refresh_roots();
  seen_tracking_ = revision;
  for (const auto& name : cache_.modules()) {
    if (!scanned_.insert(name).second) continue;
    module_info info = cache_.info(name);
    if (info.path.empty() || !covers(info.name, info.path)) continue;
    auto path = normal_path(info.path);
    bool new_path = path_to_name_.emplace(path, info.name).second;
    watcher_->watch_file(path);
    // Saved before the watch existed (between its import and now): no event will come.
    if (new_path && cache_.is_changed(info.name)) due_.insert(info.name);
  }
  seen_tracking_ = cache_.tracking_revision();  // modules() may have tracked more
}

std::vector<std::string> autoreloader::poll() {
  std::vector<std::string> reloaded;
  if (mode_ == autoreload_mode::off) {
    seen_tracking_ = cache_.tracking_revision();  // nothing to watch; set_mode() rescans
    return reloaded;
  }
  if (polling_ || !cache_.at_safe_point()) return reloaded;
  struct running {
    bool& flag;
    explicit running(bool& f) : flag(f) { flag = true; }
    ~running() { flag = false; }
  } guard(polling_);
  track_new_modules();
  // What the kernel queued up to now. A save read after this instant, even
  // while examine() looks at the files, is one that the changesets at hand
  // may be half of (apply_set's still_complete).
  const auto collected = file_watcher::clock::now();
  auto settled = watcher_->take_settled(collected);
  if (settled.empty() && due_.empty()) return reloaded;
  bool new_files = false;
  std::map<std::string, bool> names;  // name -> the watcher reported its save complete
  for (const auto& name : due_) names.emplace(name, false);
  due_.clear();
  for (const auto& path : settled) {
    auto it = path_to_name_.find(path);
    if (it != path_to_name_.end())
      names[it->second] = true;
    else
      new_files = true;
  }
  if (new_files) py::module_::import("importlib").attr("invalidate_caches")();  // importable at once
  // In background mode the main thread may come here long after it was
  // asked, in the middle of another burst of saves: what settled so far is
  // half of it. It waits as the background thread does (background_loop).
  const auto now = file_watcher::clock::now();
  if (thread_.joinable() && in_burst(now)) {
    if (!burst_since_) burst_since_ = now;
    if (now - *burst_since_ < changeset_limit) {
      for (const auto& [name, reported] : names) due_.insert(name);
      return reloaded;
    }
  }
  burst_since_.reset();
  std::vector<change> changes;
  for (auto it = names.begin(); it != names.end(); ++it)
    if (auto found = examine(it->first, it->second)) changes.push_back(*found);
  apply(std::move(changes), collected, reloaded);
  return reloaded;
}

// What poll() takes of one module reported or due: nothing when it is
// gone, unchanged, an extension (reported once) or still being written (due
// again later).
std::optional<autoreloader::change> autoreloader::examine(const std::string& name, bool reported) {
  if (!cache_.find(name)) return std::nullopt;  // unloaded meanwhile
  module_info info = cache_.info(name);
  if (!cache_.is_changed(name)) {  // a touch, or written back as it was
    failed_set_.erase(name);
    reported_.erase(name);
    return std::nullopt;
  }
  // A save the kernel saw complete (closed by its writer, renamed into
  // place) and nobody touched since is read at once. Anything else (saved
  // before its file was watched, polling, a deferred retry) must have been
  // quiet for the debounce.
  const bool vouched = reported && watcher_->at_rest(info.path);
  if (!vouched && watcher_->still_changing(info.path)) {  // a save in progress (truncated, not yet written)
    due_.insert(name);
    return std::nullopt;
  }
  auto now = take_fingerprint(info.path);
  if (!now) {
    if (!reported_.insert(name).second) return std::nullopt;
    // Gone, or there but unreadable: a chmod 000 is not a deletion, and the
    // line says what an explicit reload raises ("PermissionError: [Errno 13] ...").
    if (int error = open_error(info.path); error && error != ENOENT && error != ENOTDIR) {
      auto unreadable = detail::os_error(error, info.path.string());
      log_line("[modhost] reload of " + name + " failed: " + one_line(unreadable.what()) +
               "; the old code keeps running");
    } else {
      log_line("[modhost] source of " + name + " (" + info.path.string() + ") is gone; the loaded code keeps running");
    }
    return std::nullopt;
  }
  reported_.erase(name);
  if (info.kind == module_kind::extension) {
    if (reported_.insert(name).second)
      log_line("[modhost] " + name + " changed on disk, but it is an extension module: restart required");
    return std::nullopt;
  }
  return change{name, now->content_hash, vouched};
}

// Applies the changes at hand as changesets: the changes that import one
// another (directly or not) are one set, one transaction, deep, with the
// dependents that must re-run, all of it or none of it; unrelated ones go live (or fail) on
// their own, in the same safe point, so the program never runs between
// them. A set that failed is tried again, whole, together with what changed
// since, as soon as any change touches it (a rename across two files goes
// live at the second save); not before, since the same files would fail the
// same way.
void autoreloader::apply(std::vector<change> changes, file_watcher::clock::time_point collected,
                         std::vector<std::string>& reloaded) {
  if (changes.empty()) return;
  // Each module with every module that depends on it, transitively.
  std::map<std::string, std::set<std::string>> reach;
  auto reach_of = [&](const std::string& name) -> const std::set<std::string>& {
    auto [it, fresh] = reach.emplace(name, std::set<std::string>{name});
    if (!fresh) return it->second;
    std::vector<std::string> todo{name};
    while (!todo.empty()) {
      std::string current = todo.back();
      todo.pop_back();
      if (!cache_.find(current)) continue;
      for (const auto& importer : cache_.dependents(current))
        if (it->second.insert(importer).second) todo.push_back(importer);
    }
    return it->second;
  };
  auto related = [&](const std::string& a, const std::string& b) {
    return reach_of(a).count(b) || reach_of(b).count(a);
  };
  auto has = [&](const std::string& name) {
    return std::any_of(changes.begin(), changes.end(), [&](const change& c) { return c.name == name; });
  };
  std::vector<std::string> failed_names;  // companions of a failed set (examine() may change failed_set_)
  for (const auto& failed : failed_set_) failed_names.push_back(failed.first);
  for (const auto& name : failed_names) {
    if (has(name)) continue;
    bool touched = std::any_of(changes.begin(), changes.end(), [&](const change& c) { return related(c.name, name); });
    if (touched)
      if (auto companion = examine(name, false)) changes.push_back(*companion);
  }
  // Sets: connected through `related`, in the order the changes came.
  std::vector<int> set_of(changes.size(), -1);
  int sets = 0;
  for (std::size_t i = 0; i < changes.size(); ++i) {
    if (set_of[i] >= 0) continue;
    set_of[i] = sets;
    for (std::vector<std::size_t> todo{i}; !todo.empty();) {
      std::size_t current = todo.back();
      todo.pop_back();
      for (std::size_t j = 0; j < changes.size(); ++j)
        if (set_of[j] < 0 && related(changes[current].name, changes[j].name)) {
          set_of[j] = sets;
          todo.push_back(j);
        }
    }
    ++sets;
  }
  for (int set = 0; set < sets; ++set) {
    std::vector<change> members;
    for (std::size_t i = 0; i < changes.size(); ++i)
      if (set_of[i] == set) members.push_back(changes[i]);
    try {
      apply_set(members, collected, reloaded);
    } catch (...) {  // interrupted (Ctrl-C): the sets not tried yet wait for the next poll
      for (std::size_t i = 0; i < changes.size(); ++i)
        if (set_of[i] > set) due_.insert(changes[i].name);
      throw;
    }
  }
}

void autoreloader::apply_set(const std::vector<change>& changes, file_watcher::clock::time_point collected,
                             std::vector<std::string>& reloaded) {
  bool anything_new = false;
  for (const auto& c : changes) {
    auto failed = failed_set_.find(c.name);
    anything_new = anything_new || failed == failed_set_.end() || failed->second != c.content_hash;
  }
  if (!anything_new) return;  // the same broken set
  std::vector<std::string> names;
  bool vouched = true;
  for (const auto& c : changes) {
    names.push_back(c.name);
    vouched = vouched && c.vouched;
  }
  const std::string label = join(names, ", ");

  reload_options options;
  options.deep = true;
  options.dependents = true;
  // A dependent re-runs only when in-place patching cannot reach what it
  // kept: re-running them all made a save of a module many others import
  // cost its whole package (254 modules for networkx.classes.graph).
  options.dependents_as_needed = true;
  options.time_limit = time_limit_;  // a top level that never ends must not freeze the program
  // Never compile a file caught mid-save: either the kernel says nobody
  // wrote it between its writer's close and the read (a dependent re-run
  // with it that is not watched: quiet for the debounce), or it was quiet
  // for the debounce.
  if (vouched)
    options.source_at_rest = [this](const std::filesystem::path& path) { return !watcher_->still_changing(path); };
  else
    options.quiet_for = watcher_->debounce();
  // A save that arrives after the set was collected may belong to it (the next file
  // of a git checkout): the set rolls back and is collected again with it,
  // unless saves keep coming for longer than changeset_limit.
  if (!incomplete_since_) incomplete_since_ = collected;
  if (collected - *incomplete_since_ < changeset_limit)
    options.still_complete = [this, collected] { return !watcher_->changed_since(collected); };
  // Not under a running frame of the set's code on this (the main) thread,
  // unless it never leaves it: then after main_thread_patience, said once.
  const auto now = std::chrono::steady_clock::now();
  options.defer_if_running = !running_since_ || now - *running_since_ < main_thread_patience;
  auto fail = [&](const std::string& why) {
    log_line("[modhost] reload of " + label + " failed: " + one_line(why) + "; the old code keeps running" +
             (changes.size() > 1 ? " (the set is retried, whole, when any of its files changes)" : ""));
    for (const auto& c : changes) failed_set_[c.name] = c.content_hash;
    running_since_.reset();
    wait_for({});
    incomplete_since_.reset();
  };
  reload_report result;
  try {
    result = cache_.reload(names, options);
  } catch (const python_error& e) {  // e.g. not reloadable any more
    return fail(e.what());
  } catch (const module_in_use_error& e) {  // another thread stays in its code
    return fail(e.what());
  }
  if (result.outcome == reload_outcome::deferred) {  // being written, or running here: a later poll takes it
    for (const auto& name : names) due_.insert(name);
    if (!result.deferred_by.empty()) incomplete_since_.reset();  // not a save that came meanwhile
    if (!result.deferred_by.empty() && !running_since_) running_since_ = now;
    wait_for(result.deferred_by);
    return;
  }
  if (running_since_ && !options.defer_if_running)
    log_line("[modhost] " + label + ": applied while the main thread still runs code of " + waiting_for_ +
           ", after waiting " +
           std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(main_thread_patience).count()) +
           " ms for it to leave");
  running_since_.reset();
  wait_for({});
  incomplete_since_.reset();
  if (!result && result.error->matches("KeyboardInterrupt")) {
    // Ctrl-C while the new code ran: it is rolled back, and the interrupt is
    // the program's, as if it had arrived a moment later (the same content
    // is not tried again until a file changes).
    log_line("[modhost] reload of " + label + " interrupted (KeyboardInterrupt); the old code keeps running");
    for (const auto& c : changes) failed_set_[c.name] = c.content_hash;
    throw *result.error;
  }
  if (!result) {
    const python_error& error = *result.error;
    // Where: a SyntaxError's message says it already ("(plug.py, line 3)").
    std::string where = error.file().empty() || error.matches("SyntaxError")
                            ? std::string()
                            : " (" + error.file() + ", line " + std::to_string(error.line()) + ")";
    return fail(error.what() + where +
                (std::find(names.begin(), names.end(), result.failed_module) == names.end()
                     ? " (in dependent " + result.failed_module + ")"
                     : std::string(changes.size() > 1 ? " (in " + result.failed_module + ")" : "")));
  }
  for (const auto& name : names) failed_set_.erase(name);
  for (const auto& ran : result.reexecuted) reloaded.push_back(ran);
}

// The main thread's code that the changeset at hand waits for it to leave
// (empty: none). Meanwhile a function_handle call that a C++ loop makes
// between two calls into that code is a safe point too (handle_safe_point.h).
void autoreloader::wait_for(std::string module) {
  waiting_for_ = std::move(module);
  detail::g_handle_safe_point_wanted = !waiting_for_.empty() && thread_.joinable();
}

// ---------------------------------------------------------------------------
// Background mode

void autoreloader::start_background() {
  if (thread_.joinable()) return;
  stop_ = false;
  g_background = this;
  // A newly imported module is watched at once: the import wakes the thread,
  // which has the main thread poll (and so watch the module's file) right after it.
  tracking_listener_ = cache_.add_tracking_listener([this] {
    if (!woken_.exchange(true)) watcher_->interrupt();  // one write() per wait, however many imports
  });
  thread_ = std::thread([this] { background_loop(); });
  detail::set_handle_safe_point_hook(&autoreloader::run_pending, main_thread_ident());
  // Once per process (the GIL serializes the check): the hook finds the
  // autoreloader running in the background through g_background.
  static bool fork_hook = false;
  if (!fork_hook) {
    fork_hook = true;
    py::module_::import("os").attr("register_at_fork")(py::arg("after_in_child") = py::cpp_function([] {
      if (autoreloader* self = g_background.load()) self->restart_after_fork();
    }));
  }
}

// In a forked child, from Python's after-fork hook (the interpreter works
// again; the watcher got its own inotify queue inside fork() already). The
// thread did not come along: it may have left the mutex locked, or been
// waiting on the condition variable, which could then block a notify (or
// its destruction) forever. So both are replaced and the old ones leaked.
void autoreloader::restart_after_fork() {
  if (!thread_.joinable()) return;
  thread_.detach();  // nothing to join in this process
  static_cast<void>(mutex_.release());
  static_cast<void>(done_.release());
  mutex_ = std::make_unique<std::mutex>();
  done_ = std::make_unique<std::condition_variable>();
  scheduled_ = false;
  unsafe_ = false;
  unsafe_backoff_ = std::chrono::milliseconds(1);
  retry_at_ = file_watcher::clock::now();  // edits the parent's queue took: look at once
  woken_ = false;
  stop_ = false;
  thread_ = std::thread([this] { background_loop(); });
  detail::set_handle_safe_point_hook(&autoreloader::run_pending, main_thread_ident());  // the forking thread now
}

void autoreloader::stop_background() {
  if (!thread_.joinable()) return;
  cache_.remove_tracking_listener(tracking_listener_);
  detail::set_handle_safe_point_hook(nullptr, 0);
  g_background = nullptr;
  stop_ = true;
  done_->notify_all();
  watcher_->interrupt();
  {
    gil_release released;  // a pending call it waits for needs the main thread to be free of us
    thread_.join();
  }
}

// Runs on the main thread at a bytecode boundary, with the GIL.
int autoreloader::run_pending(void*) {
  autoreloader* self = g_background.load();
  if (!self) return 0;
  bool safe = !self->polling_ && self->cache_.at_safe_point() && !self->inside_waited_code();
  bool interrupted = false;
  if (safe) {
    try {
      self->poll();
      safe = self->waiting_for_.empty();  // inside the changed code: a bytecode later may be outside
    } catch (const python_error& e) {  // nothing may cross into CPython's eval loop
      if (e.matches("KeyboardInterrupt")) {
        // Raised afresh where the main thread is, as the signal handler's
        // own would be: the rolled-back code's frames are no part of it.
        interrupted = true;
        PyErr_SetNone(PyExc_KeyboardInterrupt);
      } else {
        log_line(std::string("[modhost] autoreload failed: ") + one_line(e.what()));
      }
    } catch (const std::exception& e) {
      log_line(std::string("[modhost] autoreload failed: ") + one_line(e.what()));
    }
  }
  if (!interrupted) PyErr_Clear();  // a pending call leaves no error behind, but Ctrl-C's
  {
    std::lock_guard<std::mutex> lock(*self->mutex_);
    auto now = file_watcher::clock::now();
    self->scheduled_ = false;
    self->unsafe_ = !safe;
    if (!safe && !self->waiting_for_.empty()) {  // inside the changed code: a bytecode later may be outside
      self->retry_at_ = now;
    } else if (!safe) {  // an import or a reload runs: look again soon, less often the longer it takes
      self->retry_at_ = now + self->unsafe_backoff_;
      self->unsafe_backoff_ =
          std::min(self->unsafe_backoff_ * 2, std::max(self->watcher_->debounce(), std::chrono::milliseconds(20)));
    } else {
      self->unsafe_backoff_ = std::chrono::milliseconds(1);
      // A save deferred (caught mid-save, or saved before its file was
      // watched) is looked at again after one debounce interval.
      self->retry_at_ = self->due_.empty() ? file_watcher::clock::time_point::max() : now + self->watcher_->debounce();
    }
  }
  self->done_->notify_all();
  return interrupted ? -1 : 0;
}

// Still inside the code a changeset waits for (apply_set), within the
// patience: a frame walk, so the main thread, which is inside that code at
// most of its eval-breaker checks when a loop calls it, is asked again at
// once without a poll's cost each time.
bool autoreloader::inside_waited_code() {
  if (waiting_for_.empty() || !running_since_) return false;
  py::object module = cache_.find(waiting_for_);
  if (!module) return false;
  PyObject* ns = PyModule_GetDict(module.ptr());  // borrowed
  for (auto frame = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(PyEval_GetFrame())); frame;) {
    auto* f = reinterpret_cast<PyFrameObject*>(frame.ptr());
    if (py::reinterpret_steal<py::object>(PyFrame_GetGlobals(f)).ptr() == ns)  // inside: within the patience?
      return std::chrono::steady_clock::now() - *running_since_ < main_thread_patience;
    frame = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(PyFrame_GetBack(f)));
  }
  // Seen outside it: the patience is for code that never leaves, not the
  // sum of the waits of a stream of saves (each one caught inside a call),
  // nor the time a burst of saves kept anyone from looking (so the frames
  // are walked even once the patience ran out).
  running_since_.reset();
  return false;
}

// More saves of the burst at hand may come: a watched file changed less
// than changeset_gap() ago, or one is still being written or deleted.
std::chrono::milliseconds autoreloader::changeset_gap() const {
  return std::max(std::chrono::milliseconds(1), watcher_->debounce());
}

autoreloader::watcher_status autoreloader::describe_watcher() const {
  const bool inotify = watcher_->current_mode() == file_watcher::mode::inotify;
  return {inotify ? "inotify" : "polling", watcher_->fallback_reason(), watcher_->debounce()};
}

bool autoreloader::in_burst(file_watcher::clock::time_point now) const {
  return now < watcher_->last_event() + changeset_gap() || watcher_->busy(now);
}

void autoreloader::background_loop() {
  using namespace std::chrono;
  using clock = file_watcher::clock;
  const auto debounce = watcher_->debounce();
  // When the first complete save of the changeset at hand was seen (max:
  // none is at hand); see changeset_gap below.
  auto burst = clock::time_point::max();
  while (!stop_) {
    clock::time_point retry_at;
    bool unsafe;
    {
      std::lock_guard<std::mutex> lock(*mutex_);
      retry_at = retry_at_;
      unsafe = unsafe_;
    }
    // Sleep until the kernel has events, an import wakes us, a file still
    // waiting for its writer or the debounce may settle, or a retry is due;
    // polling has no events to wait for and looks every round.
    const bool polling = watcher_->current_mode() == file_watcher::mode::polling;
    auto now = clock::now();
    auto next = std::min(retry_at, watcher_->next_settle());
    if (burst != clock::time_point::max())
      next = std::min({retry_at, std::max(watcher_->last_event() + changeset_gap(), now + milliseconds(1)),
                       burst + changeset_limit});
    if (polling) next = std::min(next, now + std::max(debounce, milliseconds(50)));
    milliseconds timeout(1000);  // stop_background() interrupts the wait: this only bounds it
    // Modules imported before the thread started (or while the pending call
    // ran) have no wake-up of their own.
    if (!unsafe && cache_.tracking_revision() != seen_tracking_.load()) next = now;
    if (next <= now)
      timeout = milliseconds(0);
    else if (next - now < timeout)
      timeout = ceil<milliseconds>(next - now);
    if (timeout.count() > 0) watcher_->wait(timeout);
    woken_ = false;
    if (stop_) break;
    now = clock::now();
    const bool retry_due = now >= retry_at;
    if (unsafe && !retry_due) continue;  // the main thread is still importing or reloading
    // Events that only say a writer is busy (or concern other files in a
    // watched directory) wake us but not the main thread.
    const bool new_modules = cache_.tracking_revision() != seen_tracking_.load();
    const bool settled = watcher_->has_settled(now);
    if (!retry_due && !new_modules && !settled) continue;
    // A burst of saves (git checkout, a formatter, a rename across files) is
    // one changeset: after a complete save, the main thread is asked only
    // once the watched files have been quiet for changeset_gap (the
    // debounce, 10 ms by default: git writes the files of a checkout 1-3 ms
    // apart, and a loaded machine stretches that to 8 ms) and none is still
    // being written or deleted, at most changeset_limit after that first
    // save. A single save so goes live one debounce after its close.
    if (!new_modules && settled) {  // a retry too: what it would take now may be half a burst
      if (burst == clock::time_point::max()) burst = now;
      if (in_burst(now) && now < burst + changeset_limit)
        continue;
    }
    burst = clock::time_point::max();
    std::unique_lock<std::mutex> lock(*mutex_);
    scheduled_ = true;
    retry_at_ = clock::time_point::max();
    if (modhost_call_on_main_thread(&autoreloader::run_pending, nullptr) != 0) {
      scheduled_ = false;
      retry_at_ = now + debounce;  // CPython's queue is full: try again later
      continue;
    }
    // The main thread may have recomputed its eval breaker at the very moment
    // the flag was set and cleared it again: set it again until the call has
    // run, less and less often (the main thread may be blocked in C for long).
    auto patience = milliseconds(1);
    while (!done_->wait_for(lock, patience, [this] { return !scheduled_ || stop_.load(); })) {
      modhost_wake_main_thread();
      patience = std::min(patience * 2, milliseconds(100));
    }
  }
}

}  // namespace modhost
