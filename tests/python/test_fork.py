"""os.fork(): the child has a file watcher, a time-limit watchdog and (under
--autoreload) a background reloader of its own.

Before, the child shared the parent's inotify descriptor, so whichever
process read first took the other's events (the child's check() returned []
for its own edit), and the watchdog thread did not survive the fork (a time
limit never fired in the child). Each child reports to the parent through a
pipe and its exit status; a child never returns into unittest.
"""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import unittest
import warnings

from cache_fixtures import CacheTestCase, modhost

MODHOST = os.environ["MODHOST_EXE"]
DEADLINE = 20.0  # seconds, for the parent; a child gives up sooner


def value_source(value):
    return "def value():\n    return %r\n" % (value,)


class ForkTestCase(CacheTestCase):
    def fork(self, child):
        """Runs child() in a forked process; returns (pid, read_result).

        read_result() waits for the child and returns what child() returned
        (through JSON), or fails the test with the child's traceback.
        """
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            # 3.12+ warns that this process has threads (modhost's own among them).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never back into unittest
            status = 1
            try:
                os.close(read_end)
                outcome = {"result": child()}
                status = 0
            except BaseException:
                outcome = {"error": traceback.format_exc()}
            finally:
                try:
                    os.write(write_end, json.dumps(outcome).encode())
                finally:
                    os._exit(status)
        os.close(write_end)

        def read_result():
            chunks = []
            while True:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
            os.close(read_end)
            _, status = os.waitpid(pid, 0)
            data = b"".join(chunks)
            self.assertTrue(data, "the child wrote nothing (wait status %d)" % status)
            outcome = json.loads(data)
            self.assertNotIn("error", outcome, outcome.get("error"))
            self.assertEqual(os.waitstatus_to_exitcode(status), 0)
            return outcome["result"]

        return pid, read_result


class ForkedWatcher(ForkTestCase):
    def setUp(self):
        super().setUp()
        self.addCleanup(modhost.autoreload, "off")
        self.assertEqual(modhost.autoreload("explicit"), "explicit")
        self.name = self.mod("plug")
        self.write(self.name, value_source(1))
        self.load(self.name)
        modhost.watch(self.name)
        self.assertEqual(modhost.check(), [])  # the watcher knows the file

    def check_until(self, timeout):
        reloaded = []
        deadline = time.monotonic() + timeout
        while self.name not in reloaded and time.monotonic() < deadline:
            reloaded += modhost.check()
            time.sleep(0.005)
        return reloaded

    def test_check_in_the_child_sees_its_edit_after_the_parent_read_its_events(self):
        edited_read, edited_write = os.pipe()
        go_read, go_write = os.pipe()

        def child():
            first = modhost.check()  # nothing changed since the fork
            self.write(self.name, value_source(2))
            os.write(edited_write, b"e")
            os.read(go_read, 1)  # the parent has read its events by now
            reloaded = self.check_until(timeout=10)
            return first, reloaded, sys.modules[self.name].value()

        _, read_result = self.fork(child)
        self.assertEqual(os.read(edited_read, 1), b"e")
        # The parent watches the same file, so it sees the child's save as well.
        parent_reloaded = self.check_until(timeout=DEADLINE)
        os.write(go_write, b"g")
        first, reloaded, value = read_result()
        for fd in (edited_read, edited_write, go_read, go_write):
            os.close(fd)

        self.assertEqual(first, [])
        self.assertEqual(reloaded, [self.name])
        self.assertEqual(value, 2)
        self.assertEqual(parent_reloaded, [self.name])
        self.assertEqual(sys.modules[self.name].value(), 2)

    def test_an_edit_the_parent_queued_before_the_fork_is_seen_by_the_child(self):
        # The kernel queued the event before the fork; the parent reads it
        # first, the child still notices the file changed.
        self.write(self.name, value_source(3))
        taken = []

        def child():
            taken.extend(self.check_until(timeout=10))
            return taken, sys.modules[self.name].value()

        _, read_result = self.fork(child)
        parent_reloaded = self.check_until(timeout=DEADLINE)
        reloaded, value = read_result()

        self.assertEqual((reloaded, value), ([self.name], 3))
        self.assertEqual(parent_reloaded, [self.name])


# The busy loops call nothing: on CPython 3.13 an asynchronous exception
# noticed right after a call to a C function (time.monotonic() in the loop's
# test) can skip every handler of the frame (CPython gh-139622;
# docs/python-versions.md). 300 million empty iterations take 5-20 s.
SPINS = 300_000_000


class ForkedTimeLimit(ForkTestCase):
    def setUp(self):
        super().setUp()
        # The parent's watchdog thread is up and waiting before any fork.
        # GCC 12's AddressSanitizer does not lock its allocator around
        # fork(): a thread still starting (allocating) when the test forks
        # left the lock held in the child, which hung at its first
        # allocation. glibc's malloc is fork-safe; this is the sanitizer's.
        with modhost.time_limit(60):
            time.sleep(0.2)

    def spin_under(self, seconds):
        """'fired after S' when the limit interrupts a busy loop, or 'never fired'."""
        start = time.monotonic()
        try:
            with modhost.time_limit(seconds):
                for _ in range(SPINS):
                    pass
        except modhost.TimeLimitExceeded:
            return "fired after %.1f s" % (time.monotonic() - start)
        return "never fired"

    def test_a_time_limit_fires_in_a_child_after_the_parent_used_one(self):
        with modhost.time_limit(5.0):  # the parent's watchdog thread runs from now on
            pass

        _, read_result = self.fork(lambda: self.spin_under(0.3))
        outcome = read_result()

        self.assertTrue(outcome.startswith("fired after"), outcome)
        self.assertLess(float(outcome.split()[2]), 5.0, outcome)
        self.assertEqual(self.spin_under(0.1), "fired after 0.1 s")  # and still in the parent

    def test_a_scope_open_across_the_fork_still_ends_in_the_child(self):
        start = time.monotonic()

        def child():
            try:
                for _ in range(SPINS):
                    pass
            except modhost.TimeLimitExceeded:
                return "fired after %.1f s" % (time.monotonic() - start)
            return "never fired"

        with modhost.time_limit(1.0) as limit:
            _, read_result = self.fork(child)
        self.assertFalse(limit.expired)  # the parent left the scope at once
        outcome = read_result()

        self.assertTrue(outcome.startswith("fired after"), outcome)
        self.assertLess(float(outcome.split()[2]), 5.0, outcome)


# The host program with --autoreload: the child's own background thread
# applies the child's edit, while the parent's thread takes the parent's events.
BACKGROUND_SCRIPT = """
import os, sys, time, warnings
import modhost
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plugin
modhost.check()  # the watcher knows plugin.py
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    pid = os.fork()
if pid == 0:
    path = plugin.__file__
    with open(path + ".tmp", "w") as f:
        f.write("def value():\\n    return 2\\n")
    os.replace(path + ".tmp", path)
    give_up = time.monotonic() + 10
    while plugin.value() != 2 and time.monotonic() < give_up:
        time.sleep(0.002)
    print("child sees", plugin.value(), flush=True)
    os._exit(0 if plugin.value() == 2 else 3)
_, status = os.waitpid(pid, 0)
give_up = time.monotonic() + 10
while plugin.value() != 2 and time.monotonic() < give_up:
    time.sleep(0.002)
print("parent sees", plugin.value(), flush=True)
sys.exit(os.waitstatus_to_exitcode(status))
"""


class ForkedBackgroundReloader(unittest.TestCase):
    def test_a_forked_child_of_the_host_program_applies_its_edits_by_itself(self):
        workdir = tempfile.mkdtemp(prefix="modhost-fork-")
        self.addCleanup(__import__("shutil").rmtree, workdir, True)
        with open(os.path.join(workdir, "plugin.py"), "w") as f:
            f.write(value_source(1))
        script = os.path.join(workdir, "main.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent(BACKGROUND_SCRIPT))

        result = subprocess.run([MODHOST, "--autoreload", "all", script], capture_output=True, text=True,
                                timeout=DEADLINE + 40)

        self.assertEqual(result.stdout.splitlines(), ["child sees 2", "parent sees 2"], result.stderr)
        self.assertEqual(result.returncode, 0, result.stderr)


if __name__ == "__main__":
    unittest.main()
