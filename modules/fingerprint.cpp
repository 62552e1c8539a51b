#include "modules/fingerprint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

namespace modhost {
namespace {
// Longer than any file system's timestamp tick (a jiffy, up to 10 ms).
constexpr std::int64_t kRacyWindowNs = 50'000'000;
}  // namespace

namespace {
// One step of a lane: a bijection of the lane for a given word (odd multiply,
// then xor-shift to carry the high bits down), so two inputs that differ in
// one word always leave that lane, and so the hash, different.
std::uint64_t mix(std::uint64_t lane, std::uint64_t word) noexcept {
  lane = (lane ^ word) * 0x9E3779B97F4A7C15ull;
  return lane ^ (lane >> 32);
}

std::uint64_t word_at(const char* bytes) noexcept {
  std::uint64_t word;
  std::memcpy(&word, bytes, sizeof word);
  return word;
}
}  // namespace

// A reload hashes the whole file (twice: to tell an edit from a touch, and
// the bytes it compiles), so words go through four independent lanes: several
// bytes per cycle, where byte-wise FNV-1a managed one.
std::uint64_t content_hash(std::string_view bytes) noexcept {
  std::uint64_t lanes[4] = {1, 2, 3, 4};
  const char* at = bytes.data();
  std::size_t left = bytes.size();
  for (; left >= 32; at += 32, left -= 32)
    for (int i = 0; i < 4; ++i) lanes[i] = mix(lanes[i], word_at(at + 8 * i));
  for (int i = 0; left >= 8; ++i, at += 8, left -= 8) lanes[i] = mix(lanes[i], word_at(at));
  std::uint64_t tail = 0;
  std::memcpy(&tail, at, left);
  std::uint64_t hash = mix(bytes.size(), tail);
  for (std::uint64_t lane : lanes) hash = mix(hash, lane);
  return hash;
}

namespace {
std::int64_t wall_clock_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

fingerprint from_stat(const struct stat& st, std::int64_t taken_ns) noexcept {
  fingerprint print;
  print.size = static_cast<std::uint64_t>(st.st_size);
  print.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  print.ctime_ns = static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
  print.inode = static_cast<std::uint64_t>(st.st_ino);
  print.device = static_cast<std::uint64_t>(st.st_dev);
  print.taken_ns = taken_ns;
  return print;
}

struct file_descriptor {
  int fd;
  ~file_descriptor() {
    if (fd >= 0) ::close(fd);
  }
};

bool read_all(int fd, std::string& bytes) {
  bytes.clear();
  char buffer[16384];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n == 0) return true;
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes.append(buffer, static_cast<std::size_t>(n));
  }
}
}  // namespace

std::optional<fingerprint> stat_fingerprint(const std::filesystem::path& file) noexcept {
  std::int64_t taken_ns = wall_clock_ns();
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return from_stat(st, taken_ns);
}

bool fingerprint::stat_trusted() const noexcept { return ctime_ns + kRacyWindowNs < taken_ns; }

// The stat and the bytes must describe the same version of the file: a
// stat of the path followed by a read of it could pair an old stat with
// bytes saved in between, and that pair would later call the save a touch.
// So both come from one open file, stat'ed before and after the read; a
// file written meanwhile is read again.
std::optional<fingerprint> take_fingerprint(const std::filesystem::path& file) {
  // O_NONBLOCK: a FIFO where the source was must not block the open (the
  // fstat then refuses it); reads of a regular file ignore the flag.
  file_descriptor in{::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};
  if (in.fd < 0) return std::nullopt;
  std::string bytes;
  std::optional<fingerprint> print;
  for (int attempt = 0; attempt < 5; ++attempt) {
    std::int64_t taken_ns = wall_clock_ns();
    struct stat before {}, after {};
    if (::fstat(in.fd, &before) != 0 || !S_ISREG(before.st_mode)) return std::nullopt;
    if (::lseek(in.fd, 0, SEEK_SET) != 0 || !read_all(in.fd, bytes) || ::fstat(in.fd, &after) != 0)
      return std::nullopt;
    print = from_stat(after, taken_ns);
    print->content_hash = content_hash(bytes);
    if (from_stat(before, taken_ns).same_stat(*print)) return print;
  }
  print->taken_ns = 0;  // still being written: the stat never vouches for these bytes
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
