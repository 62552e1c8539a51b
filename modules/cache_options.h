// modhost::cache_options — how the module cache guards what it loads.
// Part of interpreter_config; kept light so interpreter.h stays cheap to include.
#pragma once

#include <filesystem>
#include <vector>

#include "modules/cpython/visibility.h"

namespace modhost MODHOST_API {

struct cache_options {
  // Directories modules may load from, besides the stdlib. Empty: anywhere.
  // A module outside them, or a symlink that resolves outside them, is
  // refused with ImportError, at import and at reload. With roots, the
  // interpreter starts without PYTHONPATH, the user site and site-packages
  // (docs/reliability.md).
  std::vector<std::filesystem::path> module_roots;
  // Like sshd's StrictModes: refuse to load or reload a file when it, or any
  // directory above it up to /, is writable by group or others (a sticky
  // directory, like /tmp, may be) or owned by a user other than this
  // process's (or root).
  bool strict_permissions = false;
};

}  // namespace modhost
