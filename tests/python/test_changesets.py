"""Edits come in sets: several files, one transaction, and autoreload converges.

A rename across two files goes live at the second save; a set that fails
leaves every module on its previous version and is retried whole; unrelated
edits do not block each other; modhost.reload([...]) is one transaction. In
the host program: a `git checkout` of 20 chained modules switches the
running program once, completely; a call on the main thread runs one
version; a module that never leaves its own loop is applied after a bounded
wait, and that is said.
"""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

from cache_fixtures import CacheTestCase, modhost
from test_autoreload import DEADLINE, MODHOST, Child, StderrCapture


class Changesets(CacheTestCase):
    def setUp(self):
        super().setUp()
        self.addCleanup(modhost.autoreload, "off")
        self.a, self.b = self.mod("a"), self.mod("b")

    def start(self):
        self.assertEqual(modhost.autoreload("all"), "all")
        self.assertEqual(modhost.check(), [])

    def check_until(self, *names):
        reloaded = []
        deadline = time.monotonic() + DEADLINE
        while not all(n in reloaded for n in names) and time.monotonic() < deadline:
            reloaded += modhost.check()
            time.sleep(0.002)
        self.assertTrue(all(n in reloaded for n in names), reloaded)
        return reloaded

    def test_a_rename_across_two_files_goes_live_at_the_second_save(self):
        self.write(self.a, "OLD = 'value'\n")
        self.write(self.b, f"from {self.a} import OLD\ndef get():\n    return OLD\n")
        self.load(self.b)
        self.start()
        with StderrCapture() as err:
            self.write(self.a, "NEW = 'value'\n")  # b still imports OLD: it cannot go live alone
            self.assertEqual(modhost.check(), [])
            lines = err.lines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("cannot import name 'OLD'", lines[0])
        self.assertEqual(sys.modules[self.a].OLD, "value")  # still the old version, whole
        self.assertEqual(modhost.changed(), [self.a])
        self.write(self.b, f"from {self.a} import NEW\ndef get():\n    return NEW\n")
        reloaded = self.check_until(self.a, self.b)
        self.assertEqual(reloaded[:2], [self.a, self.b])
        self.assertEqual(sys.modules[self.b].get(), "value")
        self.assertFalse(hasattr(sys.modules[self.a], "OLD"))
        self.assertEqual(modhost.changed(), [])

    def test_a_failing_set_keeps_every_module_and_is_retried_whole(self):
        self.write(self.a, "VERSION = 1\n")
        self.write(self.b, f"import {self.a}\nVERSION = 1\n")
        self.load(self.b)
        self.start()
        with StderrCapture() as err:
            self.write(self.a, "VERSION = 2\n")
            self.write(self.b, f"import {self.a}\nVERSION = 2\nraise LookupError('b is half-edited')\n")
            self.assertEqual(modhost.check(), [])
            self.assertEqual(modhost.check(), [], "the same broken set is not tried again")
            lines = err.lines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("LookupError: b is half-edited", lines[0])
        self.assertEqual((sys.modules[self.a].VERSION, sys.modules[self.b].VERSION), (1, 1))
        self.assertEqual(sorted(modhost.changed()), sorted([self.a, self.b]))
        self.write(self.b, f"import {self.a}\nVERSION = 2\n")  # only b is saved again: a comes along
        self.check_until(self.a, self.b)
        self.assertEqual((sys.modules[self.a].VERSION, sys.modules[self.b].VERSION), (2, 2))

    def test_unrelated_changes_do_not_block_each_other(self):
        self.write(self.a, "VERSION = 1\n")
        self.write(self.b, "VERSION = 1\n")
        self.load(self.a)
        self.load(self.b)
        self.start()
        with StderrCapture() as err:
            self.write(self.a, "VERSION = 2\n")
            self.write(self.b, "VERSION = (\n")
            self.assertEqual(modhost.check(), [self.a])
        self.assertIn("SyntaxError", err.text())
        self.assertEqual((sys.modules[self.a].VERSION, sys.modules[self.b].VERSION), (2, 1))
        self.write(self.a, "VERSION = 3\n")  # b is still broken: a goes on alone
        self.assertEqual(self.check_until(self.a), [self.a])

    def test_reload_of_a_list_is_one_transaction_in_dependency_order(self):
        self.write(self.a, "OLD = 1\n")
        self.write(self.b, f"from {self.a} import OLD\n")
        self.load(self.b)
        self.write(self.a, "NEW = 2\n")
        self.write(self.b, f"from {self.a} import NEW\n")
        with self.assertRaises(ImportError):
            modhost.reload(self.b)  # alone, b needs the new a
        modules = modhost.reload([self.b, self.a])
        self.assertEqual([m.__name__ for m in modules], [self.b, self.a])
        self.assertEqual(modhost.last_reload().reexecuted, [self.a, self.b])
        self.assertEqual(sys.modules[self.b].NEW, 2)
        # A failing member rolls back all of them.
        self.write(self.a, "NEW = 3\n")
        self.write(self.b, f"from {self.a} import NEW\nraise KeyError('no')\n")
        with self.assertRaises(KeyError):
            modhost.reload([self.a, self.b], deep=True)
        self.assertEqual((sys.modules[self.a].NEW, sys.modules[self.b].NEW), (2, 2))
        self.assertEqual(modhost.info(self.a).generation, 2)


# ---------------------------------------------------------------------------
# The host program applies changesets by itself while the program runs.

CHAIN_LINK = """import {previous}
VERSION = {version}
def chain():
    return {previous}.chain() + [VERSION]
"""

CHAIN_ROOT = """VERSION = {version}
def chain():
    return [VERSION]
"""

# Says each mix it sees once, and a version once every module has it.
CHECKOUT_APP = """
import os, sys
import m{last}
stop = sys.argv[1]
last = seen_mixed = None
while not os.path.exists(stop):
    chain = m{last}.chain()
    if len(set(chain)) != 1:
        if chain != seen_mixed:
            seen_mixed = chain
            print("mixed", chain, flush=True)
    elif chain[0] != last:
        last = chain[0]
        print("version", last, flush=True)
print("stopped", flush=True)
"""

# A function of the plugin that reads its global twice around some work.
ONE_VERSION_PLUGIN = """G = {version}
def f():
    first = G
    for _ in range(200):
        pass
    return (first, G)
"""

ONE_VERSION_APP = """
import os, sys
import plugin
print("started", flush=True)
stop = sys.argv[1]
calls = mixed = 0
while not os.path.exists(stop):
    first, second = plugin.f()
    calls += 1
    if first != second:
        mixed += 1
print("calls", calls, "mixed", mixed, "last", second, flush=True)
"""

OWN_LOOP_PLUGIN = """G = {version}
def run(stop):
    import os
    last = None
    while not os.path.exists(stop):
        if G != last:
            last = G
            print("G", G, flush=True)
"""

OWN_LOOP_APP = """
import sys
import plugin
plugin.run(sys.argv[1])
"""


@contextlib.contextmanager
def unhurried_writer():
    """Runs the test's saves at a higher priority than the host program, where
    that is allowed (root, as in CI). A checkout that the scheduler pauses
    for longer than the host's burst window (10 ms: a loaded machine, the
    test's own app spinning on the other core) is two checkouts to any
    watcher; that is the machine, not what these tests are about. Linux
    keeps a priority per thread, and the writer needs the GIL back from the
    threads that read the app's output: all of this process's threads are
    raised, the host program (another process) is not."""
    threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    try:
        for tid in threads:
            os.setpriority(os.PRIO_PROCESS, tid, -10)
    except PermissionError:
        pass
    try:
        yield
    finally:
        for tid in threads:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, 0)
            except ProcessLookupError:  # a thread that ended meanwhile
                pass


class HostChangesets(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="modhost-changesets-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.stop = os.path.join(self.dir, "stop")

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text, git_style=False):
        path = self.path(name)
        if git_style and os.path.exists(path):  # as git checkout does: unlink, create, write
            os.unlink(path)
        with open(path, "w") as f:
            f.write(text)

    def run_host(self, app, *options):
        self.write("app.py", app)
        child = Child([*options, "-p", self.dir, self.path("app.py"), self.stop])
        self.addCleanup(child.kill)
        return child

    def checkout(self, count, version):
        """Writes every module of the chain at `version`, one every 2.5 ms,
        as git does: busy between files, not sleeping (a sleep on a loaded
        machine can last far longer than any checkout's pause). Returns the
        longest pause between two files, in seconds."""
        longest = 0.0
        with unhurried_writer():
            next_file = previous = time.perf_counter()
            for i in range(count):
                text = CHAIN_ROOT if i == 0 else CHAIN_LINK
                self.write("m%d.py" % i, text.format(previous="m%d" % (i - 1), version=version), git_style=True)
                written = time.perf_counter()
                longest, previous = max(longest, written - previous), written
                next_file += 0.0025
                while time.perf_counter() < next_file:
                    pass
        return longest

    def test_a_checkout_of_twenty_chained_modules_switches_once_and_whole(self):
        count, trials = 20, 100
        for i in range(count):
            text = CHAIN_ROOT if i == 0 else CHAIN_LINK
            self.write("m%d.py" % i, text.format(previous="m%d" % (i - 1), version=0))
        child = self.run_host(CHECKOUT_APP.format(last=count - 1), "--autoreload", "all")
        child.expect("stdout", lambda line: line == "version 0")
        # A checkout that the writer itself paused in for longer than the
        # host's burst window (10 ms) is two checkouts to any watcher: a mix
        # then is the machine's doing (a loaded CI host), not modhost's, and
        # is counted apart. Any other mix fails the test.
        window = 0.010
        mixed, split_by_the_writer = [], []
        for version in range(1, trials + 1):
            longest_pause = self.checkout(count, version)
            while True:
                line = child.expect("stdout", lambda line: line.startswith(("version", "mixed")), timeout=10)
                if line == "version %d" % version:
                    break
                if line.startswith("version"):
                    self.fail("version %d went live for checkout %d" % (int(line.split()[1]), version))
                (split_by_the_writer if longest_pause >= window else mixed).append(
                    "%s (the writer's longest pause %.1f ms)" % (line, longest_pause * 1000))
        open(self.stop, "w").close()
        self.assertEqual(child.finish(), 0, child.seen)
        self.assertEqual(mixed, [], child.seen["stderr"][-5:])
        self.assertLess(len(split_by_the_writer), trials // 10, split_by_the_writer)
        self.assertEqual(child.seen["stdout"][-2:], ["version %d" % trials, "stopped"])
        self.assertEqual([line for line in child.seen["stderr"] if "failed" in line], [])

    def test_each_call_on_the_main_thread_runs_one_version(self):
        self.write("plugin.py", ONE_VERSION_PLUGIN.format(version=0))
        child = self.run_host(ONE_VERSION_APP, "--autoreload", "all")
        child.expect("stdout", lambda line: line == "started")  # imported: the saves may begin
        saves = 1000
        with unhurried_writer():
            for version in range(1, saves + 1):
                self.write("plugin.py", ONE_VERSION_PLUGIN.format(version=version))
                time.sleep(0.001)
        time.sleep(3)  # the last save goes live (a sanitizer build is slow)
        open(self.stop, "w").close()
        self.assertEqual(child.finish(), 0, child.seen)
        result = child.seen["stdout"][-1].split()
        self.assertEqual(result[0], "calls")
        self.assertEqual(int(result[3]), 0, "calls that saw two versions: %s" % child.seen)
        self.assertEqual(int(result[5]), saves)
        self.assertEqual([line for line in child.seen["stderr"] if "applied while" in line], [])

    def test_a_module_that_never_leaves_its_own_loop_is_applied_after_a_bounded_wait(self):
        self.write("plugin.py", OWN_LOOP_PLUGIN.format(version=1))
        child = self.run_host(OWN_LOOP_APP, "--autoreload", "all")
        child.expect("stdout", lambda line: line == "G 1")
        self.write("plugin.py", OWN_LOOP_PLUGIN.format(version=2))
        child.expect("stdout", lambda line: line == "G 2", timeout=10)
        note = child.expect("stderr", lambda line: "applied while the main thread still runs" in line)
        self.assertIn("plugin", note)
        open(self.stop, "w").close()
        self.assertEqual(child.finish(), 0, child.seen)
        self.assertEqual(len([l for l in child.seen["stderr"] if "applied while" in l]), 1, child.seen)


if __name__ == "__main__":
    unittest.main()
