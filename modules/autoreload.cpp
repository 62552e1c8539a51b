#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/autoreload.h"

#include <algorithm>
#include <iostream>

#include "interpreter/gil.h"
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

bool is_under(const std::filesystem::path& path, const std::filesystem::path& dir) {
  auto mismatch = std::mismatch(dir.begin(), dir.end(), path.begin(), path.end());
  return mismatch.first == dir.end();
}

// The report is one line per failure, whatever the exception's message holds.
std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

std::filesystem::path normal(const std::filesystem::path& path) {
  std::error_code ec;
  auto absolute = std::filesystem::absolute(path, ec);
  return (ec ? path : absolute).lexically_normal();
}

}  // namespace

autoreloader::autoreloader(module_cache& cache, std::chrono::milliseconds debounce, bool force_polling)
    : cache_(cache), watcher_(debounce, force_polling) {}

// "all" covers sys.path minus the stdlib and installed packages. Recomputed
// only when sys.path changed: a rescan follows every new import.
void autoreloader::refresh_roots() {
  py::list path = py::module_::import("sys").attr("path");
  if (last_sys_path_ && last_sys_path_.equal(path)) return;
  last_sys_path_ = py::reinterpret_steal<py::object>(PySequence_List(path.ptr()));  // sys.path changes in place
  if (stdlib_dirs_.empty()) {
    py::dict paths = py::module_::import("sysconfig").attr("get_paths")();
    for (const char* key : {"stdlib", "platstdlib", "purelib", "platlib"})
      if (paths.contains(key)) stdlib_dirs_.push_back(normal(py::str(paths[key]).cast<std::string>()));
  }
  roots_ = watched_dirs_;
  excluded_ = stdlib_dirs_;
  for (auto entry : path) {
    if (!py::isinstance<py::str>(entry)) continue;
    std::string dir = py::str(entry);
    auto normalized = normal(dir.empty() ? "." : dir);
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
  mode_ = mode;
  rescan_all();
}

void autoreloader::watch(const std::string& name) {
  unwatched_.erase(name);
  watched_.insert(name);
  rescan_all();
}

void autoreloader::unwatch(const std::string& name) {
  watched_.erase(name);
  unwatched_.insert(name);
  rescan_all();
}

void autoreloader::watch_directory(const std::filesystem::path& directory) {
  auto dir = normal(directory);
  watched_dirs_.push_back(dir);
  watcher_.watch_directory(dir);
  rescan_all();
}

bool autoreloader::covers(const std::string& name, const std::filesystem::path& path) const {
  if (mode_ == autoreload_mode::off || unwatched_.count(name)) return false;
  if (watched_.count(name)) return true;
  auto under_any = [&](const std::vector<std::filesystem::path>& dirs) {
    return std::any_of(dirs.begin(), dirs.end(), [&](const auto& dir) { return is_under(path, dir); });
  };
  if (under_any(watched_dirs_)) return true;
  if (mode_ != autoreload_mode::all || path.empty()) return false;
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
    auto path = normal(info.path);
    bool new_path = path_to_name_.emplace(path, info.name).second;
    watcher_.watch_file(path);
    // Saved before the watch existed (between its import and now): no event will come.
    if (new_path && cache_.is_changed(info.name)) due_.insert(info.name);
  }
  seen_tracking_ = cache_.tracking_revision();  // modules() may have tracked more
}

std::vector<std::string> autoreloader::poll() {
  std::vector<std::string> reloaded;
  if (mode_ == autoreload_mode::off || !cache_.at_safe_point()) return reloaded;
  track_new_modules();
  auto settled = watcher_.take_settled();
  if (settled.empty() && due_.empty()) return reloaded;
  bool new_files = false;
  std::vector<std::string> names(due_.begin(), due_.end());
  due_.clear();
  for (const auto& path : settled) {
    auto it = path_to_name_.find(path);
    if (it != path_to_name_.end())
      names.push_back(it->second);
    else
      new_files = true;
  }
  if (new_files) py::module_::import("importlib").attr("invalidate_caches")();  // importable at once
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  for (const auto& name : names) apply(name, reloaded);
  return reloaded;
}

void autoreloader::apply(const std::string& name, std::vector<std::string>& reloaded) {
  if (std::find(reloaded.begin(), reloaded.end(), name) != reloaded.end()) return;  // a dependent already ran
  if (!cache_.find(name)) return;  // unloaded meanwhile
  module_info info = cache_.info(name);
  if (!cache_.is_changed(name)) {  // a touch, or written back as it was
    failed_hash_.erase(name);
    reported_.erase(name);
    return;
  }
  if (watcher_.still_changing(info.path)) {  // a save in progress (truncated, not yet written)
    due_.insert(name);
    return;
  }
  auto now = take_fingerprint(info.path);
  if (!now) {
    if (reported_.insert(name).second)
      std::cerr << "[modhost] source of " << name << " (" << info.path.string()
                << ") is gone; the loaded code keeps running" << std::endl;
    return;
  }
  reported_.erase(name);
  if (info.kind == module_kind::extension) {
    if (reported_.insert(name).second)
      std::cerr << "[modhost] " << name << " changed on disk, but it is an extension module: "
                << "restart required" << std::endl;
    return;
  }
  auto failed = failed_hash_.find(name);
  if (failed != failed_hash_.end() && failed->second == now->content_hash) return;  // same broken file

  reload_options options;
  options.deep = true;
  options.dependents = true;
  options.quiet_for = watcher_.debounce();  // never compile a file caught mid-save
  reload_report report;
  try {
    report = cache_.reload(name, options);
  } catch (const python_error& e) {  // e.g. not reloadable any more
    std::cerr << "[modhost] reload of " << name << " failed: " << one_line(e.what()) << std::endl;
    failed_hash_[name] = now->content_hash;
    return;
  } catch (const module_in_use_error& e) {  // another thread stays in its code
    std::cerr << "[modhost] reload of " << name << " failed: " << e.what() << std::endl;
    failed_hash_[name] = now->content_hash;
    return;
  }
  if (report.outcome == reload_outcome::deferred) {  // being written: the next poll takes it
    due_.insert(name);
    return;
  }
  if (!report) {
    std::cerr << "[modhost] reload of " << name << " failed: " << one_line(report.error->what())
              << (report.failed_module != name ? " (in dependent " + report.failed_module + ")" : "")
              << "; the old code keeps running" << std::endl;
    failed_hash_[name] = now->content_hash;
    return;
  }
  failed_hash_.erase(name);
  for (const auto& ran : report.reexecuted) reloaded.push_back(ran);
}

// ---------------------------------------------------------------------------
// Background mode

void autoreloader::start_background() {
  if (thread_.joinable()) return;
  stop_ = false;
  g_background = this;
  thread_ = std::thread([this] { background_loop(); });
}

void autoreloader::stop_background() {
  if (!thread_.joinable()) return;
  g_background = nullptr;
  stop_ = true;
  done_.notify_all();
  {
    // The thread may be waiting in the kernel: it wakes within its timeout.
    gil_release released;  // a pending call it waits for needs the main thread to be free of us
    thread_.join();
  }
}

int autoreloader::run_pending(void*) {
  autoreloader* self = g_background.load();
  if (!self) return 0;
  bool retry = !self->cache_.at_safe_point();
  if (!retry) self->poll();
  PyErr_Clear();  // a pending call must not leave an error behind
  {
    std::lock_guard<std::mutex> lock(self->mutex_);
    self->scheduled_ = false;
    self->retry_ = retry || self->watcher_.has_unsettled() || !self->due_.empty();
  }
  self->done_.notify_all();
  return 0;
}

void autoreloader::background_loop() {
  using namespace std::chrono;
  const auto debounce = watcher_.debounce();
  const bool polling = watcher_.current_mode() == file_watcher::mode::polling;
  while (!stop_) {
    bool retry;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      retry = retry_;
    }
    // Wait for the kernel (or, polling, for the next round); a change still
    // settling or a deferred poll comes back after one debounce interval.
    milliseconds timeout = retry ? debounce : (polling ? std::max(debounce, milliseconds(50)) : milliseconds(200));
    bool events = watcher_.wait(timeout);
    if (stop_) break;
    // Newly imported modules need their files watched: that happens in poll().
    bool new_modules = cache_.tracking_revision() != seen_tracking_.load();
    if (!events && !retry && !new_modules) continue;
    if (events && !polling) std::this_thread::sleep_for(debounce);  // let a burst of writes finish
    std::unique_lock<std::mutex> lock(mutex_);
    scheduled_ = true;
    retry_ = false;
    if (Py_AddPendingCall(&autoreloader::run_pending, nullptr) != 0) {
      scheduled_ = false;
      retry_ = true;  // the queue is full: try again next round
      continue;
    }
    done_.wait(lock, [this] { return !scheduled_ || stop_; });
  }
}

}  // namespace modhost
