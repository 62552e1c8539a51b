#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/time.h>

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

TEST(Fingerprint, HashIsFnv1a) {
  EXPECT_EQ(modhost::content_hash(""), 14695981039346656037ull);
  EXPECT_EQ(modhost::content_hash("a"), 0xaf63dc4c8601ec8cull);
}
