// modhost::file_watcher: every way an editor saves is seen; with inotify a
// save its writer completed (closed, or renamed into place) is reported at
// once and a file still open for writing is not reported until it is closed;
// polling reports a change once two stats a debounce interval apart agree.
//
// Most tests drive the watcher with explicit time points (take_settled(now))
// and a long debounce, so they need no sleeps and no luck with the scheduler:
// inotify queues an event while write() and close() run, and polling compares
// stat() results, so a change is visible to the next take_settled() at once.
// The real-time tests wait on a condition with a generous deadline.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "modules/internal/file_watcher.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using modhost::file_watcher;
using modhost::testing::temp_dir;
using namespace std::chrono_literals;
using paths = std::vector<fs::path>;

namespace {

// Long enough that no scheduler hiccup between two lines of a test comes
// near it; the tests pass explicit time points, so it costs no waiting.
constexpr std::chrono::milliseconds kDebounce = 10s;

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out) << "cannot write " << path;
}

// Overwrites the first bytes of an existing file without truncating it (an
// editor that writes in place).
void write_in_place(const fs::path& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::pwrite(fd, text.data(), text.size(), 0), static_cast<ssize_t>(text.size()));
  ::close(fd);
}

void append(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out << text;
  ASSERT_TRUE(out) << "cannot append to " << path;
}

// The parameter: force polling.
class FileWatcher : public ::testing::TestWithParam<bool> {
 protected:
  bool polling() const { return GetParam(); }

  // A watcher in the mode under test, after the files the test prepared.
  file_watcher& make(std::chrono::milliseconds debounce = kDebounce) {
    watcher_ = std::make_unique<file_watcher>(debounce, polling());
    return *watcher_;
  }

  fs::path file(const std::string& name) const { return dir_.path() / name; }

  // A save made before `at` (and after everything earlier was taken) is
  // reported exactly once: with inotify by the first look, at `at` itself;
  // polling sees it at `at` and reports it once a debounce interval later.
  void expect_reported_once(const paths& expected, file_watcher::clock::time_point at) {
    auto& watcher = *watcher_;
    auto sorted = [](paths items) {
      std::sort(items.begin(), items.end());
      return items;
    };
    if (!polling()) {
      EXPECT_EQ(sorted(watcher.take_settled(at)), expected) << "a complete save is reported at once";
    } else {
      EXPECT_EQ(watcher.take_settled(at), paths{}) << "reported before a second stat agreed";
      EXPECT_TRUE(watcher.has_unsettled());
      EXPECT_LE(watcher.next_settle(), at + kDebounce);
      EXPECT_GT(watcher.next_settle(), at);
      EXPECT_EQ(watcher.take_settled(at + kDebounce / 2), paths{});
      EXPECT_EQ(sorted(watcher.take_settled(at + kDebounce)), expected);
    }
    EXPECT_FALSE(watcher.has_unsettled());
    EXPECT_EQ(watcher.take_settled(at + 2 * kDebounce), paths{}) << "reported twice";
  }

  temp_dir dir_;
  std::unique_ptr<file_watcher> watcher_;
  const file_watcher::clock::time_point t0_ = file_watcher::clock::now();
};

std::string mode_name(const ::testing::TestParamInfo<bool>& info) { return info.param ? "polling" : "inotify"; }

INSTANTIATE_TEST_SUITE_P(Modes, FileWatcher, ::testing::Values(false, true), mode_name);

}  // namespace

TEST_P(FileWatcher, ReportsItsMode) {
  auto& watcher = make();
  if (polling()) {
    EXPECT_EQ(watcher.current_mode(), file_watcher::mode::polling);
    EXPECT_FALSE(watcher.fallback_reason().empty());
  } else {
    EXPECT_EQ(watcher.current_mode(), file_watcher::mode::inotify) << watcher.fallback_reason();
    EXPECT_EQ(watcher.fallback_reason(), "");
  }
  EXPECT_EQ(watcher.debounce(), kDebounce);
}

TEST_P(FileWatcher, NothingChangedReportsNothing) {
  auto module = file("quiet.py");
  write_file(module, "A = 1\n");
  auto& watcher = make();
  watcher.watch_file(module);
  EXPECT_TRUE(watcher.is_watched_directory(dir_.path()));
  EXPECT_EQ(watcher.take_settled(t0_), paths{});
  EXPECT_EQ(watcher.take_settled(t0_ + 3 * kDebounce), paths{});
  EXPECT_FALSE(watcher.has_unsettled());
  EXPECT_EQ(watcher.next_settle(), file_watcher::clock::time_point::max());
}

TEST_P(FileWatcher, WriteInPlaceIsReportedOnce) {
  auto module = file("in_place.py");
  write_file(module, "A = 1\n");
  auto& watcher = make();
  watcher.watch_file(module);
  write_in_place(module, "A = 2\n");  // same size, same inode
  expect_reported_once({module}, t0_);
}

TEST_P(FileWatcher, TruncateAndWriteIsReported) {
  auto module = file("truncated.py");
  write_file(module, "A = 1\n");
  auto& watcher = make();
  watcher.watch_file(module);
  {
    int fd = ::open(module.c_str(), O_WRONLY | O_TRUNC);
    ASSERT_GE(fd, 0);
    ::close(fd);  // an editor that truncates first, then writes: two steps
  }
  write_in_place(module, "A = 22\n");
  expect_reported_once({module}, t0_);
}

TEST_P(FileWatcher, TempFileRenamedOverIsReportedAndTheTempFileIsNot) {
  auto module = file("renamed.py");
  write_file(module, "A = 1\n");
  auto& watcher = make();
  watcher.watch_file(module);
  auto temp = file(".renamed.py.swp");
  write_file(temp, "A = 2\n");
  ASSERT_EQ(std::rename(temp.c_str(), module.c_str()), 0);
  expect_reported_once({module}, t0_);
  // The directory watch survives the rename: the next save is seen too.
  write_file(temp, "A = 33\n");
  ASSERT_EQ(std::rename(temp.c_str(), module.c_str()), 0);
  expect_reported_once({module}, t0_ + 3 * kDebounce);
}

TEST_P(FileWatcher, DeleteAndCreateIsReportedOnce) {
  auto module = file("recreated.py");
  write_file(module, "A = 1\n");
  auto& watcher = make();
  watcher.watch_file(module);
  ASSERT_TRUE(fs::remove(module));
  write_file(module, "A = 2  # recreated\n");
  expect_reported_once({module}, t0_);
}

TEST_P(FileWatcher, BurstOfWritesIsCoalescedIntoOneReport) {
  auto module = file("burst.py");
  write_file(module, "A = 1\n");
  auto& watcher = make();
  watcher.watch_file(module);
  for (int i = 0; i < 20; ++i) append(module, "B" + std::to_string(i) + " = " + std::to_string(i) + "\n");
  write_file(module, "A = 'final'\n");
  expect_reported_once({module}, t0_);
}

// An editor (or a slow copy) still writing. With inotify the file stays open
// for writing: it is not reported however long the writes take, and is
// reported at once when its writer closes it. Polling cannot see the open
// file: each look finds a new stat, so the file is not reported until the
// writes stop for a whole debounce interval, although the first write is
// long past the interval.
TEST_P(FileWatcher, FileStillBeingWrittenIsNotReportedUntilDone) {
  auto module = file("slow.py");
  write_file(module, "");
  auto& watcher = make();
  watcher.watch_file(module);
  const auto step = kDebounce / 4;
  auto now = t0_;
  int fd = polling() ? -1 : ::open(module.c_str(), O_WRONLY | O_TRUNC);
  ASSERT_TRUE(polling() || fd >= 0);
  for (int i = 0; i < 12; ++i) {  // 12 steps: three debounce intervals of writing
    std::string part = "PART_" + std::to_string(i) + " = " + std::to_string(i) + "\n";
    if (polling())
      append(module, part);
    else
      ASSERT_EQ(::write(fd, part.data(), part.size()), static_cast<ssize_t>(part.size()));
    now = t0_ + i * step;
    EXPECT_EQ(watcher.take_settled(now), paths{}) << "reported half-written after write " << i;
    EXPECT_FALSE(watcher.at_rest(module));
    EXPECT_TRUE(watcher.still_changing(module));
  }
  if (!polling()) {
    ::close(fd);
    EXPECT_EQ(watcher.take_settled(now), paths{module}) << "not reported when its writer closed it";
  } else {
    EXPECT_EQ(watcher.take_settled(now + kDebounce / 2), paths{}) << "reported before the writes were quiet";
    EXPECT_EQ(watcher.take_settled(now + 2 * kDebounce), paths{module});
  }
  EXPECT_EQ(watcher.take_settled(now + 4 * kDebounce), paths{});
}

// The first half of a truncate-then-write save: the file is empty and still
// open. It is not reported (polling cannot tell, and reports the empty file
// once it is quiet: the cache's emptied-source rule keeps it from running).
TEST_P(FileWatcher, TruncatedFileStillOpenIsNotReported) {
  if (polling()) GTEST_SKIP() << "polling cannot see who holds a file open";
  auto module = file("truncating.py");
  write_file(module, "A = 1\n");
  auto& watcher = make();
  watcher.watch_file(module);
  int fd = ::open(module.c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(watcher.take_settled(t0_ + 2 * kDebounce), paths{}) << "an emptied file still open was reported";
  EXPECT_FALSE(watcher.has_settled(t0_ + 2 * kDebounce));
  std::string text = "A = 2\n";
  ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  EXPECT_EQ(watcher.take_settled(t0_ + 2 * kDebounce), paths{});
  ::close(fd);
  EXPECT_TRUE(watcher.has_settled(t0_ + 2 * kDebounce)) << "has_settled() does not take";
  EXPECT_EQ(watcher.take_settled(t0_ + 2 * kDebounce), paths{module});
}

// at_rest(): the kernel vouches for a reported save until someone writes the file again.
TEST_P(FileWatcher, AtRestUntilWrittenAgain) {
  auto module = file("resting.py");
  write_file(module, "A = 1\n");
  auto& watcher = make();
  watcher.watch_file(module);
  write_file(module, "A = 2\n");
  if (polling()) {
    EXPECT_FALSE(watcher.at_rest(module)) << "polling cannot vouch for a file";
    return;
  }
  EXPECT_FALSE(watcher.at_rest(module)) << "at rest before the save was reported";
  EXPECT_EQ(watcher.take_settled(), paths{module});  // real time: at_rest() read the events at clock::now()
  EXPECT_TRUE(watcher.at_rest(module));
  EXPECT_FALSE(watcher.still_changing(module)) << "a complete save waits for no debounce";
  append(module, "B = 1\n");
  EXPECT_FALSE(watcher.at_rest(module)) << "written again: the next read may see that save half done";
  EXPECT_FALSE(watcher.at_rest(file("unwatched.py")));
}

TEST_P(FileWatcher, DeletedFileIsReported) {
  auto module = file("deleted.py");
  write_file(module, "A = 1\n");
  auto& watcher = make();
  watcher.watch_file(module);
  ASSERT_TRUE(fs::remove(module));
  EXPECT_EQ(watcher.take_settled(t0_), paths{});
  EXPECT_EQ(watcher.take_settled(t0_ + 2 * kDebounce), paths{module});
  EXPECT_EQ(watcher.take_settled(t0_ + 4 * kDebounce), paths{}) << "a deleted file reported twice";
}

TEST_P(FileWatcher, OtherFilesInTheDirectoryOfAWatchedFileAreIgnored) {
  auto module = file("mine.py");
  auto other = file("other.py");
  write_file(module, "A = 1\n");
  write_file(other, "B = 1\n");
  auto& watcher = make();
  watcher.watch_file(module);
  write_file(other, "B = 2222\n");
  write_file(file("brand_new.py"), "C = 1\n");
  EXPECT_EQ(watcher.take_settled(t0_), paths{});
  EXPECT_EQ(watcher.take_settled(t0_ + 2 * kDebounce), paths{});
  EXPECT_FALSE(watcher.has_unsettled());
}

TEST_P(FileWatcher, NewFileInAWatchedDirectoryIsReported) {
  write_file(file("existing.py"), "A = 1\n");
  auto& watcher = make();
  watcher.watch_directory(dir_.path());
  EXPECT_TRUE(watcher.is_watched_directory(dir_.path()));
  EXPECT_EQ(watcher.take_settled(t0_), paths{});
  auto fresh = file("fresh_plugin.py");
  write_file(fresh, "A = 1\n");
  expect_reported_once({fresh}, t0_);
}

TEST_P(FileWatcher, ChangedFileInAWatchedDirectoryIsReported) {
  auto existing = file("existing.py");
  write_file(existing, "A = 1\n");
  auto& watcher = make();
  watcher.watch_directory(dir_.path());
  write_file(existing, "A = 2222\n");
  expect_reported_once({existing}, t0_);
}

// watch_directory(): "every file that appears in or changes in directory" —
// a file that disappears from it is a change as well (inotify reports it).
TEST_P(FileWatcher, DeletedFileInAWatchedDirectoryIsReported) {
  auto existing = file("going_away.py");
  write_file(existing, "A = 1\n");
  auto& watcher = make();
  watcher.watch_directory(dir_.path());
  EXPECT_EQ(watcher.take_settled(t0_), paths{});
  ASSERT_TRUE(fs::remove(existing));
  // The deletion is first seen here; it settles one debounce interval later.
  EXPECT_EQ(watcher.take_settled(t0_ + 2 * kDebounce), paths{});
  EXPECT_EQ(watcher.take_settled(t0_ + 4 * kDebounce), paths{existing});
}

TEST_P(FileWatcher, ChangesToSeveralFilesAreEachReportedOnce) {
  auto a = file("a.py"), b = file("b.py");
  write_file(a, "A = 1\n");
  write_file(b, "B = 1\n");
  auto& watcher = make();
  watcher.watch_file(a);
  watcher.watch_file(b);
  watcher.watch_file(a);  // idempotent
  write_file(a, "A = 2222\n");
  write_file(b, "B = 2222\n");
  expect_reported_once(a < b ? paths{a, b} : paths{b, a}, t0_);
}

// The header says a directory that does not exist yet is tried again when
// asked again: a module whose package directory is created later.
TEST_P(FileWatcher, FileInADirectoryCreatedLaterIsWatchedWhenAskedAgain) {
  auto module = dir_.path() / "later" / "mod.py";
  auto& watcher = make();
  watcher.watch_file(module);
  fs::create_directories(module.parent_path());
  write_file(module, "A = 1\n");
  watcher.watch_file(module);
  watcher.take_settled(t0_ + 2 * kDebounce);  // whatever the creation counted as
  write_file(module, "A = 2222\n");
  expect_reported_once({module}, t0_ + 3 * kDebounce);  // the edit is seen
}

// A package directory removed and created again (a branch switch): once
// the file is watched again, its edits are seen again.
TEST_P(FileWatcher, FileInARecreatedDirectoryIsWatchedWhenAskedAgain) {
  auto module = dir_.path() / "pkg" / "mod.py";
  fs::create_directories(module.parent_path());
  write_file(module, "A = 1\n");
  auto& watcher = make();
  watcher.watch_file(module);
  fs::remove_all(module.parent_path());
  watcher.take_settled(t0_);  // the watcher sees the directory go
  fs::create_directories(module.parent_path());
  write_file(module, "A = 1\n");
  watcher.watch_file(module);
  watcher.take_settled(t0_ + 2 * kDebounce);  // whatever the re-creation counted as
  write_file(module, "A = 2222\n");
  expect_reported_once({module}, t0_ + 3 * kDebounce);  // the edit is seen
}

// Real time: a save with the default-sized debounce is reported by a
// take_settled() loop within a generous deadline, exactly once.
TEST_P(FileWatcher, SaveSettlesInRealTime) {
  auto module = file("real_time.py");
  write_file(module, "A = 1\n");
  auto& watcher = make(20ms);
  watcher.watch_file(module);
  auto written = file_watcher::clock::now();
  write_file(module, "A = 2222\n");
  paths reported;
  const auto deadline = written + 5s;
  while (reported.empty() && file_watcher::clock::now() < deadline) {
    watcher.wait(50ms);
    reported = watcher.take_settled();
  }
  ASSERT_EQ(reported, paths{module}) << "not reported within 5 s";
  auto reported_at = file_watcher::clock::now();
  // ctime's clock is coarser than the steady clock: allow it a few milliseconds.
  if (polling()) {
    EXPECT_GE(reported_at - written, 20ms - 5ms) << "reported before the debounce passed";
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(watcher.take_settled(file_watcher::clock::now() + 1s), paths{});
}

// wait() returns as soon as the kernel has an event (and polling just sleeps).
TEST_P(FileWatcher, WaitWakesUpForAnEvent) {
  auto module = file("waited.py");
  write_file(module, "A = 1\n");
  auto& watcher = make(20ms);
  watcher.watch_file(module);
  if (!polling()) {
    EXPECT_FALSE(watcher.wait(1ms)) << "an event without a change";
  }
  write_file(module, "A = 2\n");
  auto start = file_watcher::clock::now();
  EXPECT_TRUE(watcher.wait(polling() ? 50ms : 30s));  // polling sleeps for the whole timeout
  EXPECT_LT(file_watcher::clock::now() - start, 10s);
}

// interrupt() ends a wait() in another thread (the autoreloader's, when a
// module is imported or it stops), in both modes.
TEST_P(FileWatcher, InterruptEndsAWaitInAnotherThread) {
  auto& watcher = make(20ms);
  auto start = file_watcher::clock::now();
  std::thread waiter([&] { EXPECT_TRUE(watcher.wait(60s)); });
  std::this_thread::sleep_for(20ms);
  watcher.interrupt();
  waiter.join();
  EXPECT_LT(file_watcher::clock::now() - start, 30s) << "the wait ran to its timeout";
  watcher.interrupt();  // before a wait: that wait returns at once
  EXPECT_TRUE(watcher.wait(60s));
}
