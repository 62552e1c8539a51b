// modhost::cache_options — how the module cache guards and watches modules.
// Part of interpreter_config; kept light so interpreter.h stays cheap to include.
#pragma once

#include <chrono>
#include <filesystem>
#include <vector>

namespace modhost {

struct cache_options {
  // Directories modules may load from, besides the stdlib. Empty: anywhere.
  // A module outside them, or a symlink that resolves outside them, is
  // refused with ImportError, at import and at reload.
  std::vector<std::filesystem::path> module_roots;
  // Like sshd's StrictModes: refuse to load or reload a file, or a file in a
  // directory, that is writable by group or others or owned by a user other
  // than this process's (or root).
  bool strict_permissions = false;
  // The autoreloader's file watcher: how long a file must be quiet before it
  // counts as saved, and whether to poll instead of using inotify (the
  // environment variable MODHOST_WATCH_POLLING=1 forces polling too).
  std::chrono::milliseconds watch_debounce{10};
  bool watch_polling = false;
};

}  // namespace modhost
