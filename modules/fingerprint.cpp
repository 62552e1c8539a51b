#include "modules/fingerprint.h"

#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <string>

namespace modhost {
namespace {
// Longer than any file system's timestamp tick (a jiffy, up to 10 ms).
constexpr std::int64_t kRacyWindowNs = 50'000'000;
}  // namespace

std::uint64_t content_hash(std::string_view bytes) noexcept {
  std::uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

std::optional<fingerprint> stat_fingerprint(const std::filesystem::path& file) noexcept {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  fingerprint print;
  print.size = static_cast<std::uint64_t>(st.st_size);
  print.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  print.ctime_ns = static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
  print.inode = static_cast<std::uint64_t>(st.st_ino);
  print.device = static_cast<std::uint64_t>(st.st_dev);
  print.taken_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  return print;
}

bool fingerprint::stat_trusted() const noexcept { return ctime_ns + kRacyWindowNs < taken_ns; }

std::optional<fingerprint> take_fingerprint(const std::filesystem::path& file) {
  auto print = stat_fingerprint(file);
  if (!print) return std::nullopt;
  std::ifstream in(file, std::ios::binary);
  if (!in) return std::nullopt;
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return std::nullopt;
  print->content_hash = content_hash(bytes);
  return print;
}

file_change compare_file(const fingerprint& known, const std::filesystem::path& file,
                         fingerprint* fresh) {
  auto now = stat_fingerprint(file);
  if (!now) return file_change::missing;
  if (known.stat_trusted() && now->same_stat(known)) return file_change::unchanged;
  auto read = take_fingerprint(file);
  if (!read) return file_change::missing;
  if (fresh) *fresh = *read;
  if (read->content_hash != known.content_hash) return file_change::changed;
  return now->same_stat(known) ? file_change::unchanged : file_change::touched;
}

}  // namespace modhost
