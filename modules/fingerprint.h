// Change detection for module files: a fingerprint of what was loaded.
//
// The cheap fields (size, mtime_ns, ctime_ns, inode, device) come from one
// stat(); when all match, the file is unchanged. When any differs, the
// content hash decides, so a `touch` is not a change and an edit that keeps
// size and mtime is still caught (it changes ctime, which nobody can set back).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string_view>

#include "modules/cpython/visibility.h"

namespace modhost MODHOST_API {

struct fingerprint {
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  std::uint64_t inode = 0;
  std::uint64_t device = 0;
  std::uint64_t content_hash = 0;  // content_hash() of the file's bytes
  // Wall-clock time the fingerprint was taken. A file changed within the
  // file system's timestamp granularity of it could change again with equal
  // stat fields, so until it is older than that its stat is not trusted
  // (git's "racy" rule) and the hash decides.
  std::int64_t taken_ns = 0;

  // Its stat fields alone may say "unchanged": it was taken more than a
  // timestamp tick after the file's last change (see taken_ns).
  bool stat_trusted() const noexcept;

  // Same stat fields (the hash and taken_ns are not compared).
  bool same_stat(const fingerprint& other) const noexcept {
    return size == other.size && mtime_ns == other.mtime_ns && ctime_ns == other.ctime_ns &&
           inode == other.inode && device == other.device;
  }
};

// A 64-bit hash of the bytes, to tell an edit from a touch (not cryptographic).
std::uint64_t content_hash(std::string_view bytes) noexcept;

// The stat fields of a regular file (content_hash left 0, taken_ns now);
// empty if the file is missing or not a regular file.
std::optional<fingerprint> stat_fingerprint(const std::filesystem::path& file) noexcept;

// stat + read + hash. Empty if the file cannot be read.
std::optional<fingerprint> take_fingerprint(const std::filesystem::path& file);

enum class file_change {
  unchanged,  // same stat fields
  touched,    // stat fields differ, content the same (`fresh` has the new stat fields)
  changed,    // content differs
  missing,    // gone, unreadable, or no longer a regular file
};

// Compares `file` with what was `known`; fills `fresh` (when not null) with
// the file's current fingerprint when it was read.
file_change compare_file(const fingerprint& known, const std::filesystem::path& file,
                         fingerprint* fresh = nullptr);

}  // namespace modhost
