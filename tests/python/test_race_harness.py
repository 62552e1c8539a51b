"""The race harness: everything that can happen at once, for a fixed time.

For MODHOST_RACE_SECONDS (default 10) these run together:
  - 8 caller threads call the reloaded module's function, which reads its
    globals twice around some work: every call must see one version (its
    code's version and both reads agree);
  - a reloader thread reloads it plain, deep and with its dependents, one
    reload in five failing on purpose (rolled back: the version stays);
  - an unloader that unloads and re-imports a second module that the
    reloader also reloads, and tries to unload the reloaded one (refused:
    it is in use or being reloaded);
  - an importer that imports fresh modules doing `from core import value`
    and unloads them again;
  - the main thread applying the autoreload policy (check()) to a module an
    editor process keeps saving.
Asserted: no crash and no hang (a watchdog dumps every thread's stack and
ends the process), no mixed version, only the errors each call may give,
and a consistent cache at the end. CI runs it in the normal build and under
ASan and TSan (scripts/sanitize).
"""
import faulthandler
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
import unittest

from cache_fixtures import CacheTestCase, modhost

SECONDS = float(os.environ.get("MODHOST_RACE_SECONDS", "10"))

CORE = """
VERSION = {version}
def value():
    first = VERSION
    sum(range(200))
    return ({version}, first, VERSION)
{tail}
"""

MID = """
from {core} import value
import {core} as core
def through():
    return value()
"""

VICTIM = """
def ping():
    return "pong"
"""

IMPORTER = """
from {core} import value
RESULT = value()
"""

EDITED = """
def version():
    return {version}
"""

# Saves the edited module as editors do, alternating in-place writes and
# atomic renames, 50 times a second, until the stop file appears or the
# harness is gone.
EDITOR = """
import os, sys, time
path, stop = sys.argv[1], sys.argv[2]
harness = os.getppid()
version = 1
while not os.path.exists(stop) and os.getppid() == harness:
    version += 1
    text = "def version():\\n    return %d\\n" % version
    if version % 2:
        with open(path, "w") as f:
            f.write(text)
    else:
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    time.sleep(0.02)
"""


class Boom(Exception):
    pass


class RaceHarness(CacheTestCase):
    def setUp(self):
        super().setUp()
        faulthandler.dump_traceback_later(SECONDS + 120, exit=True)
        self.addCleanup(faulthandler.cancel_dump_traceback_later)
        self.addCleanup(modhost.autoreload, "off")
        self.core, self.mid, self.victim, self.edited = (self.mod(n) for n in ("core", "mid", "victim", "edited"))
        self.write(self.core, CORE.format(version=1, tail=""))
        self.write(self.mid, MID.format(core=self.core))
        self.write(self.victim, VICTIM)
        self.edited_path = self.write(self.edited, EDITED.format(version=1))
        for name in (self.core, self.mid, self.victim, self.edited):
            self.load(name)
        self.stop = threading.Event()
        self.problems = []  # what must not happen, with the thread that saw it
        self.lock = threading.Lock()
        self.counts = {}
        self.version = 1  # of the reloader's last save of core
        self.imports = 0

    def problem(self, text):
        with self.lock:
            if len(self.problems) < 20:
                self.problems.append("%s: %s" % (threading.current_thread().name, text))

    def count(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def worker(self, name, body):
        def run():
            while not self.stop.is_set():
                try:
                    body()
                except BaseException as e:  # anything unexpected is a finding, not a crash of the harness
                    self.problem("%s: %s" % (type(e).__name__, e))
        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    # -- the participants -----------------------------------------------------

    def call(self):
        module = sys.modules.get(self.core)
        if module is None:
            return
        code_version, first, second = module.value()
        if not code_version == first == second:
            self.problem("mixed version %r" % ((code_version, first, second),))
        through = sys.modules[self.mid].through()
        if through[1] != through[2]:
            self.problem("mixed globals through a from-import %r" % (through,))
        self.count("calls")

    def reload_core(self):
        kind = random.choice(["plain", "deep", "dependents"])
        failing = random.random() < 0.2
        before = sys.modules[self.core].VERSION
        self.version += 1
        tail = "raise Boom('on purpose')" if failing else ""
        # Boom is the harness's: the module finds it in builtins.
        self.write(self.core, CORE.format(version=self.version, tail=tail))
        try:
            modhost.reload(self.core, deep=kind != "plain", dependents=kind == "dependents")
        except Boom:
            if not failing:
                self.problem("a reload failed that should not have")
            if sys.modules[self.core].VERSION != before:
                self.problem("a failed reload left version %r, not %r" % (sys.modules[self.core].VERSION, before))
            self.count("failed reloads")
            return
        except RuntimeError:  # the unloader's refusal or a busy module
            self.count("refused reloads")
            return
        except ImportError as e:  # the importer is rewriting a dependent's file in place this moment
            if "is empty" not in str(e):
                raise
            if sys.modules[self.core].VERSION != before:
                self.problem("a reload refused for a half-saved dependent left version %r" % sys.modules[self.core].VERSION)
            self.count("reloads refused: a dependent half-saved")
            return
        if failing:
            self.problem("a reload that raises succeeded")
        self.count("reloads")
        try:
            modhost.reload(self.victim, deep=random.random() < 0.5)
            self.count("victim reloads")
        except (RuntimeError, ImportError):  # being unloaded, or not loaded now
            self.count("victim reloads refused")

    def unload_and_reimport(self):
        try:
            modhost.unload(self.victim, force=random.random() < 0.3)
            self.count("unloads")
        except (RuntimeError, ImportError):  # in use, being reloaded, or not loaded
            self.count("unloads refused")
        if random.random() < 0.2:
            try:
                modhost.unload(self.core)
                self.problem("unload of the module every caller uses succeeded")
            except RuntimeError:  # ModuleInUseError, or being reloaded
                self.count("core unloads refused")
        __import__(self.victim)
        time.sleep(0.001)

    def import_dependents(self):
        self.imports += 1
        name = self.mod("importer%d" % (self.imports % 4))
        self.write(name, IMPORTER.format(core=self.core))  # in place, as many editors save: a reload may catch it empty
        try:
            module = __import__(name)
        except RuntimeError:  # the unloader raced it: a refusal, not a failure
            return
        result = getattr(module, "RESULT", None)
        del module
        if result is None:
            # A reload with dependents once re-ran this file while this
            # thread's write had truncated it, and committed it empty.
            self.problem("an import came back without its globals")
            return
        if not result[0] == result[1] == result[2]:
            self.problem("an importer saw a mixed version %r" % (result,))
        try:
            modhost.unload(name, force=True)
        except (RuntimeError, ImportError):  # another call holds it this moment, or it is gone already
            pass
        self.count("imports")

    # -- the run ------------------------------------------------------------

    def test_everything_at_once_for_a_fixed_time(self):
        import builtins
        builtins.Boom = Boom
        self.addCleanup(delattr, builtins, "Boom")
        modhost.autoreload("explicit")
        modhost.watch(self.edited)
        modhost.check()
        stop_file = os.path.join(self.dir, "stop-editor")
        editor = subprocess.Popen(["python3", "-c", EDITOR, self.edited_path, stop_file], stdout=subprocess.DEVNULL)
        threads = [self.worker("caller%d" % i, self.call) for i in range(8)]
        threads.append(self.worker("reloader", self.reload_core))
        threads.append(self.worker("unloader", self.unload_and_reimport))
        threads.append(self.worker("importer", self.import_dependents))
        deadline = time.monotonic() + SECONDS
        seen_versions = set()
        try:
            while time.monotonic() < deadline and not self.problems:
                modhost.check()  # the autoreloader's safe point is here, on the main thread
                seen_versions.add(sys.modules[self.edited].version())
                time.sleep(0.002)
        finally:
            self.stop.set()
            open(stop_file, "w").close()
            for thread in threads:
                thread.join(60)
            editor.wait(60)
        self.assertFalse([t.name for t in threads if t.is_alive()], "threads still running")
        self.assertFalse(self.problems, "\n".join(self.problems))
        print("race harness, %.0f s:" % SECONDS, self.counts, "autoreloaded versions:", len(seen_versions),
              file=sys.stderr)
        self.assertGreater(self.counts.get("calls", 0), 0)
        self.assertGreater(self.counts.get("reloads", 0), 0)
        # Under a sanitizer a reload can take longer than the editor's pause:
        # every save then finds the next one coming, and only the last goes
        # live (below). Nothing else may fail for that.

        # The last save goes live, and the cache agrees with sys.modules.
        self.write(self.edited, EDITED.format(version=10 ** 6))
        end = time.monotonic() + 30
        while sys.modules[self.edited].version() != 10 ** 6 and time.monotonic() < end:
            modhost.check()
            time.sleep(0.01)
        self.assertEqual(sys.modules[self.edited].version(), 10 ** 6)
        for name in modhost.modules():
            self.assertIn(name, sys.modules)
            info = modhost.info(name)
            self.assertIn(info.state, ("loaded", "failed"), name)
            self.assertGreaterEqual(info.generation, 1)
        core = sys.modules[self.core]
        self.assertEqual(core.value()[0], core.VERSION)


if __name__ == "__main__":
    unittest.main()
