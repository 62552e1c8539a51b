#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/time.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <thread>

#include "modules/fingerprint.h"
#include "tests/test_support.h"

using modhost::file_change;

namespace {
void set_mtime(const std::filesystem::path& file, long seconds) {
  struct timeval times[2] = {{seconds, 0}, {seconds, 0}};
  ASSERT_EQ(utimes(file.c_str(), times), 0);
}
}  // namespace

TEST(Fingerprint, TouchIsNotAChange) {
  modhost::testing::temp_dir dir;
  auto file = dir.write("f.py", "X = 1\n");
  auto known = modhost::take_fingerprint(file);
  ASSERT_TRUE(known);
  EXPECT_EQ(modhost::compare_file(*known, file), file_change::unchanged);
  set_mtime(file, 1000);
  modhost::fingerprint fresh;
  EXPECT_EQ(modhost::compare_file(*known, file, &fresh), file_change::touched);
  EXPECT_EQ(fresh.content_hash, known->content_hash);
}

TEST(Fingerprint, SameSizeEditWithMtimeRestoredIsAChange) {
  modhost::testing::temp_dir dir;
  auto file = dir.write("f.py", "X = 1\n");
  set_mtime(file, 1000);
  auto known = modhost::take_fingerprint(file);
  dir.write("f.py", "X = 2\n");
  set_mtime(file, 1000);
  EXPECT_EQ(modhost::compare_file(*known, file), file_change::changed);
}

TEST(Fingerprint, MissingFileAndDirectoryAreMissing) {
  modhost::testing::temp_dir dir;
  auto file = dir.write("f.py", "X = 1\n");
  auto known = modhost::take_fingerprint(file);
  std::filesystem::remove(file);
  EXPECT_EQ(modhost::compare_file(*known, file), file_change::missing);
  std::filesystem::create_directory(file);
  EXPECT_EQ(modhost::compare_file(*known, file), file_change::missing);
  EXPECT_FALSE(modhost::take_fingerprint(file));
}

// Every single-byte edit of a file, at every offset and in every lane and the
// tail, changes the hash; so do a swap of two words, a dropped byte and
// trailing zeros.
TEST(Fingerprint, HashTellsEverySmallEditApart) {
  std::string text = "def version():\n    return 1\n# a comment that spans some words\n";
  std::set<std::uint64_t> seen{modhost::content_hash(text)};
  for (std::size_t i = 0; i < text.size(); ++i) {
    std::string edited = text;
    edited[i] ^= 1;
    EXPECT_TRUE(seen.insert(modhost::content_hash(edited)).second) << "byte " << i;
  }
  std::string swapped = text.substr(8, 8) + text.substr(0, 8) + text.substr(16);
  EXPECT_TRUE(seen.insert(modhost::content_hash(swapped)).second);
  EXPECT_TRUE(seen.insert(modhost::content_hash(text.substr(1))).second);
  EXPECT_TRUE(seen.insert(modhost::content_hash(text + std::string(3, '\0'))).second);
  EXPECT_TRUE(seen.insert(modhost::content_hash("")).second);
  EXPECT_EQ(modhost::content_hash(text), modhost::content_hash(std::string(text)));
}

// The stat and the hash describe one version of the file, whatever a writer
// does meanwhile. Were they taken apart (a stat of the path, then a read), a
// save in between would pair the old stat with the new bytes, and the next
// check would call that save a touch and never reload it.
TEST(Fingerprint, StatAndHashDescribeTheSameVersionWhileTheFileIsRewritten) {
  modhost::testing::temp_dir dir;
  const std::string small(100, 'a'), large(200, 'b');  // the size says which version
  auto file = dir.write("f.py", small);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) {
      const std::string& text = i % 2 ? small : large;
      if (i % 4 < 2) {  // renamed into place, as editors save
        std::ofstream(file.string() + ".tmp", std::ios::binary) << text;
        std::rename((file.string() + ".tmp").c_str(), file.c_str());
      } else {  // rewritten in place
        std::ofstream(file, std::ios::binary) << text;
      }
    }
  });
  int mismatched = 0, seen_small = 0, seen_large = 0;
  for (int i = 0; i < 20000; ++i) {
    auto print = modhost::take_fingerprint(file);
    if (!print || print->taken_ns == 0) continue;  // gone for a moment, or never at rest
    if (print->size == small.size()) {
      ++seen_small;
      mismatched += print->content_hash != modhost::content_hash(small);
    } else if (print->size == large.size()) {
      ++seen_large;
      mismatched += print->content_hash != modhost::content_hash(large);
    }
  }
  stop = true;
  writer.join();
  EXPECT_EQ(mismatched, 0);
  EXPECT_GT(seen_small, 0);
  EXPECT_GT(seen_large, 0);
}
