"""Live reload from scripts: autoreload modes, watch/unwatch, check(), and the
host program's --autoreload applying changes to a running loop by itself.

Tests wait on events (a module reported by check(), a line on a child's
output), never on fixed sleeps. A negative ("b was not reloaded") is asserted
after a *barrier*: a control module edited after everything else, waited for
until check() reloads it; by then every earlier save has settled too.
"""
import contextlib
import importlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

from cache_fixtures import CacheTestCase, modhost

MODHOST = os.environ["MODHOST_EXE"]
DEADLINE = 20.0  # seconds: generous, for a loaded 2-core machine


def value_source(value):
    return "def value():\n    return %r\n" % (value,)


class StderrCapture:
    """Redirects file descriptor 2 (where the C++ side prints) into a temp file."""

    def __enter__(self):
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self.final = self.text()
        self._file.close()

    def text(self):
        sys.stderr.flush()
        if self._file.closed:
            return self.final
        size = os.fstat(self._file.fileno()).st_size
        return os.pread(self._file.fileno(), size, 0).decode(errors="replace")

    def lines(self):
        return self.text().splitlines()


class AutoreloadTestCase(CacheTestCase):
    def setUp(self):
        super().setUp()
        self.addCleanup(modhost.autoreload, "off")
        self.debounce = modhost.watcher_info()["debounce_ms"] / 1000.0
        self.control = None
        self._control_version = 0

    def start(self, mode):
        """Sets the mode, adds a watched control module and lets the watcher
        learn of every module imported so far (one check())."""
        self.assertEqual(modhost.autoreload(mode), mode)
        self.control = self.mod("control")
        self.write(self.control, value_source(0))
        self.load(self.control)
        modhost.watch(self.control)
        self.assertEqual(modhost.check(), [])

    def check_until(self, *names, timeout=DEADLINE):
        """Calls check() until every name was reloaded; returns all it reloaded, in order."""
        reloaded = []
        deadline = time.monotonic() + timeout
        while not all(n in reloaded for n in names) and time.monotonic() < deadline:
            reloaded += modhost.check()
            time.sleep(0.002)
        missing = [n for n in names if n not in reloaded]
        self.assertFalse(missing, "check() did not reload %r within %.0f s (it reloaded %r)"
                         % (missing, timeout, reloaded))
        return reloaded

    def barrier(self):
        """Edits the control module and waits for check() to reload it, then
        for one debounce interval more: a complete save is applied at once,
        but a deletion (or a file a writer still holds) waits for the
        debounce, so every change made before has settled by then. Returns
        what check() reloaded."""
        start = time.monotonic()
        self._control_version += 1
        self.write(self.control, value_source(self._control_version))
        reloaded = self.check_until(self.control)
        # The change was read by the first check() after `start`; a scheduler
        # hiccup adds to the interval, never takes from it.
        settled = start + 2 * self.debounce + 0.05
        while time.monotonic() < settled:
            time.sleep(0.002)
            reloaded += modhost.check()
        reloaded += modhost.check()
        return reloaded

    def generation(self, name):
        return modhost.info(name).generation


class AutoreloadModes(AutoreloadTestCase):
    def test_autoreload_returns_the_mode_in_force(self):
        self.assertEqual(modhost.autoreload(), "off")
        self.assertEqual(modhost.autoreload("explicit"), "explicit")
        self.assertEqual(modhost.autoreload(), "explicit")
        self.assertEqual(modhost.autoreload(None), "explicit")
        self.assertEqual(modhost.autoreload("all"), "all")
        self.assertEqual(modhost.autoreload(mode="off"), "off")
        self.assertEqual(modhost.autoreload(), "off")

    def test_bad_mode_is_a_value_error_and_changes_nothing(self):
        modhost.autoreload("explicit")
        for bad in ("ALL", "on", "", "explicit "):
            with self.subTest(bad=bad):
                with self.assertRaises(ValueError) as caught:
                    modhost.autoreload(bad)
                self.assertIn("off", str(caught.exception))
        with self.assertRaises(TypeError):
            modhost.autoreload(1)
        self.assertEqual(modhost.autoreload(), "explicit")

    def test_watcher_uses_inotify_here(self):
        info = modhost.watcher_info()
        self.assertEqual(info["mode"], "inotify", info)
        self.assertEqual(info["fallback_reason"], "")
        self.assertGreater(info["debounce_ms"], 0)

    def test_explicit_mode_reloads_only_watched_modules(self):
        watched, other = self.mod("watched"), self.mod("other")
        self.write(watched, value_source(1))
        self.write(other, value_source(1))
        w, o = self.load(watched), self.load(other)
        self.start("explicit")
        modhost.watch(watched)
        self.assertEqual(modhost.check(), [])
        self.write(watched, value_source(2))
        self.write(other, value_source(2))
        reloaded = self.check_until(watched)
        reloaded += self.barrier()
        self.assertNotIn(other, reloaded)
        self.assertEqual(w.value(), 2)
        self.assertEqual(o.value(), 1)
        self.assertEqual(self.generation(other), 1)

    def test_watch_directory_covers_its_modules_in_explicit_mode(self):
        name = self.mod("in_dir")
        self.write(name, value_source(1))
        module = self.load(name)
        self.start("explicit")
        modhost.watch_directory(self.dir)
        self.assertEqual(modhost.check(), [])
        self.write(name, value_source(2))
        self.assertEqual(self.check_until(name), [name])
        self.assertEqual(module.value(), 2)

    def test_watch_directory_with_a_trailing_separator_or_dots_covers_its_modules(self):
        # lexically_normal() kept a trailing separator ("dir/", "dir/.",
        # "dir/sub/.."), and no module file was under "dir/".
        spellings = (lambda d: d + "/", lambda d: d + "/.", lambda d: os.path.join(d, "sub", ".."),
                     lambda d: os.path.relpath(d) + os.sep,
                     lambda d: os.path.join(os.path.dirname(d), ".", os.path.basename(d), ""))
        self.start("explicit")
        for number, spell in enumerate(spellings):
            directory = os.path.join(self.dir, "d%d" % number)  # one directory each: none covers the next
            os.makedirs(os.path.join(directory, "sub"))  # for "d/sub/..", resolved by the kernel too
            sys.path.insert(0, directory)
            self.addCleanup(sys.path.remove, directory)
            with self.subTest(directory=spell(directory)):
                name = self.mod("spelled%d" % number)
                with open(os.path.join(directory, name + ".py"), "w") as f:
                    f.write(value_source(1))
                importlib.invalidate_caches()
                module = self.load(name)
                modhost.watch_directory(spell(directory))
                self.assertEqual(modhost.check(), [])
                with open(os.path.join(directory, name + ".py"), "w") as f:
                    f.write(value_source(2))
                self.check_until(name)
                self.assertEqual(module.value(), 2)

    def test_all_mode_reloads_modules_under_the_search_path(self):
        name = self.mod("anywhere")
        self.write(name, value_source(1))
        module = self.load(name)
        self.start("all")
        self.write(name, value_source(2))
        self.assertEqual(self.check_until(name), [name])
        self.assertEqual(module.value(), 2)

    def test_all_mode_leaves_the_stdlib_alone(self):
        import json  # noqa: F401  (a stdlib module, tracked by the cache)
        self.start("all")
        self.barrier()
        self.assertEqual(modhost.check(), [])
        self.assertNotIn("json", modhost.changed())

    # The natural order: run with "all", then decide one module must stay as it is.
    def test_unwatch_excludes_a_module_in_all_mode(self):
        kept, edited = self.mod("kept"), self.mod("edited")
        self.write(kept, value_source(1))
        self.write(edited, value_source(1))
        k, e = self.load(kept), self.load(edited)
        self.start("all")
        modhost.unwatch(kept)
        self.write(kept, value_source(2))
        self.write(edited, value_source(2))
        reloaded = self.check_until(edited)
        reloaded += self.barrier()
        self.assertNotIn(kept, reloaded)
        self.assertEqual(k.value(), 1, "an unwatched module was reloaded")
        self.assertEqual(e.value(), 2)

    def test_unwatch_before_the_watcher_saw_the_module(self):
        kept = self.mod("kept_early")
        self.write(kept, value_source(1))
        k = self.load(kept)
        modhost.unwatch(kept)
        self.start("all")
        self.write(kept, value_source(2))
        reloaded = self.barrier()
        self.assertNotIn(kept, reloaded)
        self.assertEqual(k.value(), 1)

    def test_watch_undoes_unwatch(self):
        name = self.mod("rewatched")
        self.write(name, value_source(1))
        module = self.load(name)
        modhost.unwatch(name)
        self.start("all")
        modhost.watch(name)
        self.assertEqual(modhost.check(), [])
        self.write(name, value_source(2))
        self.check_until(name)
        self.assertEqual(module.value(), 2)

    def test_off_mode_reloads_nothing(self):
        name = self.mod("off")
        self.write(name, value_source(1))
        module = self.load(name)
        self.start("all")
        modhost.autoreload("off")
        self.write(name, value_source(2))
        # Nothing can be waited for in "off": look for longer than the debounce.
        deadline = time.monotonic() + max(0.5, 20 * self.debounce)
        while time.monotonic() < deadline:
            self.assertEqual(modhost.check(), [])
            time.sleep(0.005)
        self.assertEqual(module.value(), 1)


class AutoreloadBadInput(AutoreloadTestCase):
    """Names and directories that cannot be right are refused with an error
    that says why; they used to be accepted and watched for ever, silently."""

    BAD_NAMES = (("", "Empty module name"), ("plug\x00junk", "NUL byte"), ("..", "malformed module name '..'"),
                 (".plug", "relative names are not accepted"), ("x" * 2 ** 20, "longer than any file name"),
                 ("pkg." + "y" * 300, "has a part of 300 bytes"))

    def test_watch_and_unwatch_refuse_names_no_module_can_have(self):
        self.start("explicit")
        for call in (modhost.watch, modhost.unwatch):
            for bad, says in self.BAD_NAMES:
                with self.subTest(call=call.__name__, name=bad[:20]):
                    with self.assertRaises(ValueError) as caught:
                        call(bad)
                    self.assertIn(says, str(caught.exception))
                    self.assertLess(len(str(caught.exception)), 1000)  # a 1 MB name is not repeated
        # A module not imported yet may be watched: it is covered once it is.
        name = self.mod("later")
        modhost.watch(name)
        self.write(name, value_source(1))
        module = self.load(name)
        self.assertEqual(modhost.check(), [])
        self.write(name, value_source(2))
        self.check_until(name)
        self.assertEqual(module.value(), 2)

    def test_from_imports_refuses_bad_names_and_modules_not_loaded(self):
        for bad, says in self.BAD_NAMES:
            with self.subTest(name=bad[:20]), self.assertRaises(ValueError) as caught:
                modhost.from_imports(bad)
            self.assertIn(says, str(caught.exception))
        with self.assertRaises(ImportError) as caught:
            modhost.from_imports(self.mod("never_imported"))
        self.assertIn("is not loaded", str(caught.exception))

    def test_watch_directory_refuses_what_is_not_a_directory(self):
        missing = os.path.join(self.dir, "missing")
        a_file = self.write(self.mod("file"), "")
        for directory, error in ((missing, FileNotFoundError), ("", FileNotFoundError),
                                 (a_file, NotADirectoryError), (os.path.join(a_file, "sub"), NotADirectoryError)):
            with self.subTest(directory=directory), self.assertRaises(error) as caught:
                modhost.watch_directory(directory)
            self.assertEqual(caught.exception.filename, directory)
        with self.assertRaisesRegex(OSError, "File name too long"):
            modhost.watch_directory("d" * 2 ** 20)
        with self.assertRaisesRegex(ValueError, "NUL byte"):
            modhost.watch_directory(self.dir + "\x00junk")
        # A pathlib.Path is a directory too.
        import pathlib
        modhost.watch_directory(pathlib.Path(self.dir))


class AutoreloadCheck(AutoreloadTestCase):
    def test_check_returns_reloaded_names_and_deep_reloads(self):
        name = self.mod("plug")
        self.write(name, "def value():\n    return 1\nOLD_ONLY = 1\n")
        module = self.load(name)
        old_value = module.value
        self.start("all")
        self.write(name, "def value():\n    return 2\n")
        self.assertEqual(self.check_until(name), [name])
        self.assertEqual(old_value(), 2, "an old reference still runs the old code")
        self.assertIs(module.value, old_value)
        self.assertFalse(hasattr(module, "OLD_ONLY"), "deep reload removes stale names")
        self.assertEqual(self.generation(name), 2)

    def test_check_with_nothing_changed_returns_an_empty_list(self):
        name = self.mod("idle")
        self.write(name, value_source(1))
        self.load(name)
        self.start("all")
        self.barrier()
        for _ in range(5):
            self.assertEqual(modhost.check(), [])
        self.assertEqual(self.generation(name), 1)

    def test_each_save_reloads_once(self):
        name = self.mod("once")
        self.write(name, value_source(1))
        module = self.load(name)
        self.start("all")
        self.write(name, value_source(2))
        reloaded = self.check_until(name)
        reloaded += self.barrier()
        self.assertEqual(reloaded.count(name), 1, reloaded)
        self.assertEqual(module.value(), 2)
        self.assertEqual(self.generation(name), 2)

    def test_burst_of_writes_is_one_reload_of_the_last_version(self):
        name = self.mod("burst")
        self.write(name, value_source(0))
        module = self.load(name)
        self.start("all")
        for i in range(1, 21):
            self.write(name, value_source(i))
        reloaded = self.check_until(name)
        reloaded += self.barrier()
        self.assertEqual(module.value(), 20)
        self.assertEqual(reloaded.count(name), 1, reloaded)

    def test_touch_is_not_a_reload(self):
        name = self.mod("touched")
        path = self.write(name, value_source(1))
        self.load(name)
        self.start("all")
        os.utime(path)  # touch
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:  # written back as it was
            f.write(data)
        reloaded = self.barrier()
        self.assertNotIn(name, reloaded)
        self.assertEqual(self.generation(name), 1)

    def test_dependents_are_reloaded_too(self):
        base, user = self.mod("base"), self.mod("user")
        self.write(base, "LIMIT = 1\n")
        self.write(user, "import %s as base\nDOUBLE = base.LIMIT * 2\n" % base)
        u = self.load(user)
        self.start("explicit")
        modhost.watch(base)
        self.assertEqual(modhost.check(), [])
        self.write(base, "LIMIT = 21\n")
        reloaded = self.check_until(base, user)
        self.assertLess(reloaded.index(base), reloaded.index(user), "dependencies first")
        self.assertEqual(u.DOUBLE, 42)

    def test_a_dependent_using_the_module_only_in_functions_is_not_rerun(self):
        # Deep update puts the new code into the function b calls: re-running
        # b would only cost time (dependents="as_needed").
        base, user = self.mod("base"), self.mod("user")
        self.write(base, "def f():\n    return 1\n")
        self.write(user, "import %s as base\ndef g():\n    return base.f()\n" % base)
        u = self.load(user)
        self.start("all")
        self.write(base, "def f():\n    return 2\n")
        reloaded = self.check_until(base)
        reloaded += self.barrier()
        self.assertNotIn(user, reloaded)
        self.assertEqual(u.g(), 2)
        self.assertEqual(self.generation(user), 1)

    def test_an_edit_of_networkx_graph_reruns_few_modules_and_existing_graphs_use_it(self):
        # Re-running every dependent took 254 modules for this one save.
        import warnings
        warnings.filterwarnings("ignore", category=ImportWarning)  # networkx's optional dependencies
        root = self.copy_installed_package("networkx", "python3-networkx")
        import networkx as nx
        graph = nx.Graph([(1, 2)])
        directed = nx.DiGraph([(1, 2), (2, 3)])
        self.start("all")
        path = os.path.join(root, "classes", "graph.py")
        with open(path) as f:
            source = f.read()
        self.assertIn("        return len(self._node)\n", source)
        with open(path, "w") as f:
            f.write(source.replace("        return len(self._node)\n", "        return len(self._node) + 1000\n"))
        reloaded = self.check_until("networkx.classes.graph")
        self.assertLessEqual(len(reloaded), 3, reloaded)
        self.assertEqual(graph.number_of_nodes(), 1002)
        self.assertEqual(directed.order(), 1003, "a subclass in another module inherits the new code")
        self.assertEqual(nx.path_graph(3).number_of_nodes(), 1003)

    def test_new_module_in_a_watched_directory_is_importable_after_check(self):
        plugins = os.path.join(self.dir, "plugins_" + self.tag)
        os.makedirs(plugins)
        sys.path.insert(0, plugins)
        self.addCleanup(lambda: sys.path.remove(plugins) if plugins in sys.path else None)
        first = self.mod("first_plugin")
        with open(os.path.join(plugins, first + ".py"), "w") as f:
            f.write(value_source(1))
        importlib.invalidate_caches()
        self.load(first)
        self.start("explicit")
        modhost.watch_directory(plugins)
        self.assertEqual(modhost.check(), [])
        # A new file, saved the way an editor does: no invalidate_caches() here.
        fresh = self.mod("fresh_plugin")
        with open(os.path.join(plugins, fresh + ".py"), "w") as f:
            f.write(value_source("fresh"))
        with open(os.path.join(plugins, first + ".py"), "w") as f:  # a barrier inside that directory
            f.write(value_source(2))
        self.check_until(first)
        self.assertEqual(importlib.import_module(fresh).value(), "fresh")
        self.assertEqual(sys.modules[first].value(), 2)

    def test_check_while_a_module_is_being_imported_waits_for_a_safe_point(self):
        changed, importer = self.mod("changed"), self.mod("importer")
        self.write(changed, value_source(1))
        module = self.load(changed)
        self.start("all")
        self.write(changed, value_source(2))
        # Let the save settle (no check() meanwhile), so that a check() could apply it.
        settled = time.monotonic() + max(0.2, 10 * self.debounce)
        while time.monotonic() < settled:
            time.sleep(0.01)
        self.write(importer, "import modhost\nDURING_IMPORT = modhost.check()\n")
        imported = self.load(importer)
        self.assertEqual(imported.DURING_IMPORT, [], "a reload ran in the middle of an import")
        self.check_until(changed)
        self.assertEqual(module.value(), 2)

    # The watcher learns of a module's file at the first check() after the
    # import; a save before that is a change all the same.
    def test_edit_before_the_first_check_is_applied(self):
        name = self.mod("early")
        self.write(name, value_source(1))
        module = self.load(name)
        self.assertEqual(modhost.autoreload("all"), "all")
        self.write(name, value_source(2))
        self.check_until(name, timeout=5)
        self.assertEqual(module.value(), 2)


class AutoreloadCompleteSaves(AutoreloadTestCase):
    """A save its writer completed is applied by the very next check():
    inotify says the file was closed (or renamed into place), so no debounce
    is waited for. Polling cannot tell, and waits for two agreeing stats."""

    def setUp(self):
        super().setUp()
        if modhost.watcher_info()["mode"] != "inotify":
            self.skipTest("polling waits for two agreeing stats")

    def test_check_right_after_an_in_place_save_applies_it(self):
        name = self.mod("instant")
        self.write(name, value_source(1))
        module = self.load(name)
        self.start("all")
        for value in range(2, 12):  # each quicker than a timestamp tick after the last
            self.write(name, value_source(value))
            self.assertEqual(modhost.check(), [name], "save %d was not applied by the next check()" % value)
            self.assertEqual(module.value(), value)

    def test_check_right_after_an_atomic_save_applies_it(self):
        name = self.mod("renamed")
        path = self.write(name, value_source(1))
        module = self.load(name)
        self.start("all")
        for value in range(2, 12):
            temp = path + ".tmp"
            with open(temp, "w") as f:
                f.write(value_source(value))
            os.replace(temp, path)
            self.assertEqual(modhost.check(), [name], "save %d was not applied by the next check()" % value)
            self.assertEqual(module.value(), value)

    def test_a_broken_save_is_reported_by_the_next_check(self):
        name = self.mod("broken_now")
        self.write(name, value_source(1))
        module = self.load(name)
        self.start("all")
        with StderrCapture() as err:
            self.write(name, "def value(:\n    return 2\n")
            self.assertEqual(modhost.check(), [])
            lines = err.lines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("[modhost] reload of %s failed: SyntaxError" % name), lines)
        self.assertEqual(module.value(), 1)

    def test_a_file_still_open_for_writing_is_not_applied(self):
        name = self.mod("half")
        path = self.write(name, value_source(1))
        module = self.load(name)
        self.start("all")
        with open(path, "w") as f:  # truncated, and a first half written, still open
            f.write("def value():\n")
            f.flush()
            deadline = time.monotonic() + 10 * self.debounce + 0.1
            while time.monotonic() < deadline:  # long past the debounce
                self.assertEqual(modhost.check(), [])
                time.sleep(0.002)
            f.write("    return 2\n")
        self.assertEqual(modhost.check(), [name])
        self.assertEqual(module.value(), 2)

    # Past the watcher's 2 s of patience the kernel still says a writer has
    # it open: it waits for the close, however long.
    def test_a_file_held_open_past_the_patience_waits_for_its_close(self):
        name = self.mod("held")
        path = self.write(name, value_source(1))
        module = self.load(name)
        self.start("all")
        with open(path, "w") as f:
            f.write("def value():\n")
            f.flush()
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:
                self.assertEqual(modhost.check(), [])
                self.assertEqual(module.value(), 1)
                time.sleep(0.01)
            f.write("    return 2\n")
        self.assertEqual(modhost.check(), [name])
        self.assertEqual(module.value(), 2)

    # An editor that truncates, closes, and writes the content a moment
    # later: the empty file that replaces a non-empty module is not applied
    # while it may still be followed by the content (3 s).
    def test_an_emptied_module_is_not_applied_while_its_content_may_follow(self):
        name = self.mod("emptied")
        path = self.write(name, value_source(1))
        module = self.load(name)
        self.start("all")
        open(path, "w").close()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            self.assertEqual(modhost.check(), [])
            self.assertEqual(module.value(), 1)
            time.sleep(0.01)
        self.write(name, value_source(2))
        self.assertEqual(self.check_until(name), [name])
        self.assertEqual(module.value(), 2)


class AutoreloadFailures(AutoreloadTestCase):
    def test_broken_save_is_reported_once_and_the_old_code_kept(self):
        name = self.mod("fragile")
        self.write(name, value_source(1))
        module = self.load(name)
        old_value = module.value
        self.start("all")
        with StderrCapture() as err:
            self.write(name, "def value(:\n    return 2\n")
            reloaded = self.barrier()
            self.assertNotIn(name, reloaded)
            lines = err.lines()
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(lines[0].startswith("[modhost] reload of %s failed: " % name), lines)
            self.assertIn("SyntaxError", lines[0])
            self.assertEqual(module.value(), 1)
            self.assertIs(module.value, old_value)
            # Not retried while the file stays as it is.
            for _ in range(3):
                self.barrier()
                self.assertEqual(modhost.check(), [])
            self.assertEqual(err.lines(), lines, "the same failure was reported again")
            # Fixed: reloaded, and nothing more is printed.
            self.write(name, value_source(3))
            self.assertIn(name, self.check_until(name))
            self.assertEqual(err.lines(), lines)
        self.assertEqual(module.value(), 3)
        self.assertEqual(old_value(), 3)

    def test_a_second_different_broken_save_is_reported_again(self):
        name = self.mod("fragile2")
        self.write(name, value_source(1))
        module = self.load(name)
        self.start("all")
        with StderrCapture() as err:
            self.write(name, "raise RuntimeError('first broken save')\n")
            self.barrier()
            self.write(name, "raise RuntimeError('second broken save, longer')\n")
            self.barrier()
            lines = err.lines()
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("first broken save", lines[0])
        self.assertIn("second broken save", lines[1])
        self.assertEqual(module.value(), 1)

    def test_failure_report_is_one_line_even_for_a_multi_line_message(self):
        name = self.mod("multiline")
        self.write(name, value_source(1))
        module = self.load(name)
        self.start("all")
        with StderrCapture() as err:
            self.write(name, "raise ValueError('first line\\nsecond line')\n")
            self.barrier()
            lines = err.lines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("[modhost] reload of %s failed: ValueError" % name), lines)
        self.assertEqual(module.value(), 1)

    def test_a_module_busy_in_another_thread_is_reported_and_keeps_its_code(self):
        name = self.mod("busy")
        self.write(name, "import threading\ninside = threading.Event()\nleave = threading.Event()\n"
                         "def value():\n    return 1\ndef slow():\n    inside.set()\n    leave.wait(30)\n")
        module = self.load(name)
        self.start("all")
        worker = threading.Thread(target=module.slow, name="busy-worker-" + self.tag)
        worker.start()
        self.addCleanup(worker.join)
        self.addCleanup(module.leave.set)
        self.assertTrue(module.inside.wait(DEADLINE))
        with StderrCapture() as err:
            self.write(name, value_source(2))
            self.barrier()
            lines = err.lines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("[modhost] reload of %s failed: cannot reload" % name), lines)
        self.assertIn("thread busy-worker-%s frame %s.slow" % (self.tag, name), lines[0])
        self.assertEqual(module.value(), 1)

    def test_deleted_file_is_reported_once_and_the_module_keeps_running(self):
        name = self.mod("doomed")
        path = self.write(name, value_source(1))
        module = self.load(name)
        self.start("all")
        with StderrCapture() as err:
            os.remove(path)
            reloaded = self.barrier()
            self.assertNotIn(name, reloaded)
            lines = err.lines()
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(lines[0].startswith("[modhost] "), lines)
            self.assertIn(name, lines[0])
            self.assertEqual(module.value(), 1)
            for _ in range(2):
                self.barrier()
            self.assertEqual(err.lines(), lines, "the deletion was reported again")
            # Saved again: reloaded as usual.
            self.write(name, value_source(2))
            self.check_until(name)
        self.assertEqual(module.value(), 2)


class AutoreloadPollingFallback(unittest.TestCase):
    """MODHOST_WATCH_POLLING=1 forces the polling watcher (a child process:
    the watcher's mode is chosen once per process)."""

    def test_check_works_with_the_polling_watcher(self):
        workdir = tempfile.mkdtemp(prefix="modhost-autoreload-poll-")
        self.addCleanup(shutil.rmtree, workdir, True)
        code = textwrap.dedent("""
            import os, sys, time, importlib, modhost
            info = modhost.watcher_info()
            print("mode", info["mode"], bool(info["fallback_reason"]), flush=True)
            path = os.path.join(sys.argv[1], "polled.py")
            with open(path, "w") as f:
                f.write("def value():\\n    return 1\\n")
            sys.path.insert(0, sys.argv[1])
            importlib.invalidate_caches()
            import polled
            print("autoreload", modhost.autoreload("all"), modhost.check(), flush=True)
            with open(path, "w") as f:
                f.write("def value():\\n    return 22\\n")
            reloaded, deadline = [], time.monotonic() + %r
            while "polled" not in reloaded and time.monotonic() < deadline:
                reloaded += modhost.check()
                time.sleep(0.005)
            print("reloaded", reloaded, polled.value(), flush=True)
            print("idle", modhost.check(), flush=True)
        """ % DEADLINE)
        env = dict(os.environ, MODHOST_WATCH_POLLING="1")
        result = subprocess.run([MODHOST, "-c", code, workdir], capture_output=True, text=True,
                                env=env, timeout=DEADLINE + 40)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines(), [
            "mode polling True",
            "autoreload all []",
            "reloaded ['polled'] 22",
            "idle []",
        ], result.stderr)


UNREADABLE_SCRIPT = """
import os, sys, tempfile, time, modhost
directory = sys.argv[1]
sys.path.insert(0, directory)
import unreadable_plug
modhost.autoreload("explicit")
modhost.watch("unreadable_plug")
modhost.check()
log = tempfile.TemporaryFile(dir=directory)  # what the autoreloader prints, read back here
saved = os.dup(2)
os.dup2(log.fileno(), 2)
os.chmod(unreadable_plug.__file__, 0)
deadline = time.monotonic() + %(deadline)r
while b"[modhost]" not in os.pread(log.fileno(), 100000, 0) and time.monotonic() < deadline:
    modhost.check()
    time.sleep(0.002)
os.dup2(saved, 2)
print("autoreload:", os.pread(log.fileno(), 100000, 0).decode().strip())
try:
    modhost.reload(unreadable_plug)
except Exception as e:
    print("reload:", type(e).__name__, e)
"""


class AutoreloadUnreadableSource(unittest.TestCase):
    """A source made unreadable (chmod 000) is not a deleted one: autoreload
    says permission denied, as an explicit reload does. Root reads anything,
    so as root the host runs as nobody (uid 65534)."""

    def test_a_chmod_000_source_is_reported_as_permission_denied(self):
        directory = tempfile.mkdtemp(prefix="modhost-unreadable-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "unreadable_plug.py")
        with open(path, "w") as f:
            f.write(value_source(1))
        command = [MODHOST, "-c", UNREADABLE_SCRIPT % {"deadline": DEADLINE}, directory]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                self.skipTest("root reads a chmod 000 file, and setpriv is not there to drop root")
            drop_root = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
            probe = subprocess.run([*drop_root, MODHOST, "-c", "pass"], capture_output=True, text=True)
            if probe.returncode != 0:  # e.g. a Python installed under root's own home (pyenv)
                self.skipTest("uid 65534 cannot start this build's Python: " + probe.stderr.strip()[-200:])
            os.chown(directory, 65534, 65534)
            os.chown(path, 65534, 65534)
            command = [*drop_root, *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE + 30)
        self.assertEqual(result.returncode, 0, (result.stdout, result.stderr))
        lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
        self.assertEqual(lines["reload"], "PermissionError [Errno 13] Permission denied: %r" % path)
        self.assertEqual(lines["autoreload"], "[modhost] reload of unreadable_plug failed: PermissionError: "
                         "[Errno 13] Permission denied: %r; the old code keeps running" % path)


# ---------------------------------------------------------------------------
# End to end: the host program applies changes to a running loop by itself.

LOOP_SCRIPT = """
import os, sys, time
import modhost
import plugin
if %(prime)r:
    modhost.check()  # the watcher knows plugin.py before the test first edits it
stop = sys.argv[1]
last = object()
give_up = time.monotonic() + %(give_up)r
while not os.path.exists(stop):
    current = plugin.value()
    if current != last:
        print("value", current, flush=True)
        last = current
    if time.monotonic() > give_up:
        print("gave up", flush=True)
        sys.exit(3)
    time.sleep(0.002)
print("stopped", flush=True)
"""


# `import plugin` step by step, as importlib's _load_unlocked does it, with
# an autoreload poll where importlib moves the module to the end of sys.modules.
IMPORT_STEPS_SCRIPT = """
import importlib.util
spec = importlib.util.spec_from_file_location(
    "plugin", os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugin.py"))
plugin = importlib.util.module_from_spec(spec)
spec._initializing = True
sys.modules["plugin"] = plugin
spec.loader.exec_module(plugin)
sys.modules.pop("plugin")
modhost.check()
sys.modules["plugin"] = plugin
spec._initializing = False
"""


SPIN_SCRIPT = """
import os, sys, time
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lq.py")
open(path, "w").write("def version():\\n    return 0\\n")
import lq
time.sleep(0.5)
if %(atomic)r:
    open(path + ".tmp", "w").write("def version():\\n    return 1\\n")
    os.replace(path + ".tmp", path)
else:
    open(path, "w").write("def version():\\n    return 1\\n")
t0 = time.perf_counter()
while lq.version() != 1:
    %(body)s
    if time.perf_counter() - t0 > %(give_up)r:
        sys.exit("never live")
print("live")
"""


class Child:
    """A running modhost process whose stdout and stderr lines are read by threads."""

    def __init__(self, args, env=None, cwd=None):
        self.process = subprocess.Popen([MODHOST, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, bufsize=1, env=env, cwd=cwd)
        self.lines = {"stdout": queue.Queue(), "stderr": queue.Queue()}
        self.seen = {"stdout": [], "stderr": []}
        self.threads = [threading.Thread(target=self._read, args=(name, getattr(self.process, name)), daemon=True)
                        for name in self.lines]
        for thread in self.threads:
            thread.start()

    def _read(self, name, stream):
        for line in stream:
            self.lines[name].put(line.rstrip("\n"))
        self.lines[name].put(None)

    def expect(self, stream, predicate, timeout=DEADLINE):
        """The first new line on `stream` that matches, within `timeout`; fails otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no matching line on %s within %.0f s; seen: %r" % (stream, timeout, self.seen))
            try:
                line = self.lines[stream].get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.lines[stream].put(None)
                raise AssertionError("%s ended without a matching line; seen: %r" % (stream, self.seen))
            self.seen[stream].append(line)
            if predicate(line):
                return line

    def finish(self, timeout=DEADLINE):
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        for thread in self.threads:
            thread.join(timeout)
        for name in self.lines:
            while True:
                line = self.lines[name].get_nowait() if not self.lines[name].empty() else None
                if line is None:
                    break
                self.seen[name].append(line)
        return code

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for thread in self.threads:
            thread.join(DEADLINE)
        self.process.stdout.close()
        self.process.stderr.close()


class HostAutoreload(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="modhost-autoreload-host-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.plugin = os.path.join(self.dir, "plugin.py")
        self.stop = os.path.join(self.dir, "stop")

    def write_plugin(self, text):
        with open(self.plugin, "w") as f:
            f.write(text)

    def start(self, options, prime=True, env=None, import_plugin="import plugin\n"):
        self.write_plugin(value_source(1))
        script = os.path.join(self.dir, "app.py")
        with open(script, "w") as f:
            f.write((LOOP_SCRIPT % {"prime": prime, "give_up": 120.0}).replace("import plugin\n", import_plugin))
        child = Child([*options, script, self.stop], env=env)
        self.addCleanup(child.kill)
        return child

    def run_edit_break_fix(self, options, env=None):
        child = self.start(options, env=env)
        child.expect("stdout", lambda line: line == "value 1")
        self.write_plugin(value_source(2))
        child.expect("stdout", lambda line: line == "value 2")
        self.write_plugin("def value(:\n    return 'broken'\n")
        failure = child.expect("stderr", lambda line: "[modhost] reload of plugin failed" in line)
        self.assertTrue(failure.startswith("[modhost] reload of plugin failed: SyntaxError"), failure)
        self.write_plugin(value_source(3))
        child.expect("stdout", lambda line: line == "value 3")
        open(self.stop, "w").close()
        child.expect("stdout", lambda line: line == "stopped")
        self.assertEqual(child.finish(), 0, child.seen)
        self.assertEqual(child.seen["stdout"], ["value 1", "value 2", "value 3", "stopped"])
        self.assertEqual(child.seen["stderr"], [failure], "the failure is reported once, nothing else")

    def test_running_loop_picks_up_edits_under_autoreload_all(self):
        self.run_edit_break_fix(["--autoreload", "all"])

    def test_running_loop_with_watch_directory_and_polling(self):
        self.run_edit_break_fix(["--watch", self.dir, "--watch-polling"])

    def test_running_loop_with_polling_forced_by_the_environment(self):
        self.run_edit_break_fix(["--autoreload", "all"], env=dict(os.environ, MODHOST_WATCH_POLLING="1"))

    # The repro: a loop in pure bytecode that never releases the GIL
    # (no sleep, no I/O) must see the save, in place or atomic (os.replace).
    def run_spin(self, loop_body, atomic):
        script = os.path.join(self.dir, "spin.py")
        with open(script, "w") as f:
            f.write(SPIN_SCRIPT % {"atomic": atomic, "body": loop_body, "give_up": DEADLINE})
        result = subprocess.run([MODHOST, "--autoreload", "all", script], capture_output=True, text=True,
                                timeout=DEADLINE + 30)
        self.assertEqual(result.returncode, 0, (result.stdout, result.stderr))
        self.assertIn("live", result.stdout)

    def test_spinning_loop_sees_an_in_place_save(self):
        self.run_spin("pass", atomic=False)

    def test_spinning_loop_sees_an_atomic_save(self):
        self.run_spin("pass", atomic=True)

    # C calls that hold the GIL for a while between bytecodes.
    def test_loop_of_long_c_calls_sees_a_save(self):
        self.run_spin("sum(range(200000))", atomic=False)

    # Without the script's own check(): an edit made as soon as the program
    # printed its first value (the plugin is imported by then) must be seen.
    def test_running_loop_sees_an_edit_made_right_after_it_started(self):
        self.expect_an_edit_right_after_the_start_seen(self.start(["--autoreload", "all"], prime=False))

    # importlib pops a module it has just run and puts it back at the end of
    # sys.modules; a poll that lands in between (the background thread's
    # pending call can) must not lose the module: it is watched all the same.
    def test_a_poll_while_importlib_moves_the_new_module_does_not_lose_it(self):
        child = self.start(["--autoreload", "all"], prime=False, import_plugin=IMPORT_STEPS_SCRIPT)
        self.expect_an_edit_right_after_the_start_seen(child)

    def expect_an_edit_right_after_the_start_seen(self, child):
        child.expect("stdout", lambda line: line == "value 1")
        self.write_plugin(value_source(2))
        try:
            child.expect("stdout", lambda line: line == "value 2", timeout=10)
        finally:
            open(self.stop, "w").close()
        self.assertEqual(child.finish(), 0, child.seen)

    # A saved top level that never ends: Ctrl-C rolls the reload back and
    # reaches the program, which dies by SIGINT as python3 does (status 130
    # in a shell), its traceback showing the program's own frame only.
    def test_ctrl_c_during_an_autoreload_reaches_the_program(self):
        child = self.start(["--autoreload", "all"])
        child.expect("stdout", lambda line: line == "value 1")
        self.write_plugin("import sys\nprint('looping', flush=True)\nwhile True:\n    pass\n")
        child.expect("stdout", lambda line: line == "looping")
        child.process.send_signal(signal.SIGINT)
        self.assertEqual(child.finish(), -signal.SIGINT, child.seen)
        stderr = child.seen["stderr"]
        self.assertEqual(stderr[0], "[modhost] reload of plugin interrupted (KeyboardInterrupt); "
                                    "the old code keeps running")
        self.assertEqual(stderr[-1], "KeyboardInterrupt")
        self.assertEqual([line for line in stderr if line.startswith("  File")],
                         [line for line in stderr if line.startswith("  File") and "app.py" in line], stderr)
        self.assertNotIn("stopped", child.seen["stdout"])

    # Caught by the program, the interrupt leaves it running the old code.
    def test_ctrl_c_during_an_autoreload_can_be_caught_and_the_old_code_runs(self):
        self.write_plugin(value_source(1))
        script = os.path.join(self.dir, "app.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent("""
                import os, sys, time
                import plugin
                stop = sys.argv[1]
                first = True
                while True:
                    # Around the whole loop, and around the first line the
                    # test waits for: the interrupt lands at any bytecode
                    # after it (a slow build may still be on that line).
                    try:
                        if first:
                            first = False
                            print("value", plugin.value(), flush=True)
                        while not os.path.exists(stop):
                            time.sleep(0.002)
                        break
                    except KeyboardInterrupt:
                        print("interrupted; value", plugin.value(), flush=True)
                print("stopped", flush=True)
                """))
        child = Child(["--autoreload", "all", script, self.stop])
        self.addCleanup(child.kill)
        child.expect("stdout", lambda line: line == "value 1")
        self.write_plugin("def value():\n    return 2\nprint('looping', flush=True)\nwhile True:\n    pass\n")
        child.expect("stdout", lambda line: line == "looping")
        child.process.send_signal(signal.SIGINT)
        child.expect("stdout", lambda line: line == "interrupted; value 1")
        open(self.stop, "w").close()
        self.assertEqual(child.finish(), 0, child.seen)

    # The same save with a time limit: rolled back, reported, the loop goes on.
    def test_an_autoreload_that_outlasts_its_time_limit_is_rolled_back(self):
        child = self.start(["--autoreload", "all", "--reload-timeout", "0.5"])
        child.expect("stdout", lambda line: line == "value 1")
        self.write_plugin("def value():\n    return 2\nwhile True:\n    pass\n")
        failure = child.expect("stderr", lambda line: "[modhost] reload of plugin failed" in line)
        self.assertIn("TimeLimitExceeded", failure)
        self.write_plugin(value_source(3))
        child.expect("stdout", lambda line: line == "value 3")
        open(self.stop, "w").close()
        self.assertEqual(child.finish(), 0, child.seen)
        self.assertEqual(child.seen["stdout"], ["value 1", "value 3", "stopped"])

    def test_a_reload_timeout_that_is_no_number_of_seconds_is_a_usage_error(self):
        for bad in ("nan", "-1", "0", "soon"):
            result = subprocess.run([MODHOST, "--reload-timeout", bad, "-c", "pass"], capture_output=True, text=True)
            self.assertEqual(result.returncode, 2, (bad, result.stderr))
            self.assertIn("--reload-timeout", result.stderr)
        result = subprocess.run([MODHOST, "--reload-timeout", "inf", "-c", "print('ok')"], capture_output=True,
                                text=True)
        self.assertEqual((result.returncode, result.stdout), (0, "ok\n"), result.stderr)


class HostAutoreloadDirectorySpellings(unittest.TestCase):
    """Every way to name a directory on the command line covers the modules
    under it. A trailing separator (`-p plugins/`, and `.` or `--cwd-path`,
    which normalize to one) made the directory end in an empty element that
    no file under it matched: nothing was ever reloaded, silently."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="modhost-spellings-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.plugins = os.path.join(self.root, "plugins")
        self.app = os.path.join(self.root, "app")  # the script's own directory is covered anyway: keep it apart
        os.mkdir(self.plugins)
        os.mkdir(self.app)
        os.symlink(self.plugins, os.path.join(self.root, "link"))
        self.script = os.path.join(self.app, "app.py")
        with open(self.script, "w") as f:
            f.write(LOOP_SCRIPT % {"prime": True, "give_up": 120.0})

    def write_plugin(self, value):
        with open(os.path.join(self.plugins, "plugin.py"), "w") as f:
            f.write(value_source(value))

    def assertEditSeen(self, options, cwd):
        self.write_plugin(1)
        stop = os.path.join(self.root, "stop")
        child = Child([*options, self.script, stop], cwd=cwd)
        self.addCleanup(child.kill)
        try:
            child.expect("stdout", lambda line: line == "value 1")
            self.write_plugin(2)
            child.expect("stdout", lambda line: line == "value 2", timeout=10)
        finally:
            open(stop, "w").close()
        self.assertEqual(child.finish(), 0, child.seen)
        os.remove(stop)

    def test_search_path_spellings_under_autoreload_all(self):
        for options, cwd in ((["-p", "."], "plugins"),
                             (["-p", "./"], "plugins"),
                             (["--cwd-path"], "plugins"),
                             (["-p", "plugins/"], "."),
                             (["-p", "app/../plugins/."], "."),
                             (["-p", "../plugins"], "app"),
                             (["-p", "link/"], ".")):
            with self.subTest(options=options, cwd=cwd):
                self.assertEditSeen(["--autoreload", "all", *options], os.path.join(self.root, cwd))

    def test_watch_of_a_missing_directory_is_a_usage_error(self):
        # It used to be watched silently, and nothing was ever reloaded.
        for missing in ("nowhere", os.path.join("plugins", "plugin.py")):
            with self.subTest(watch=missing):
                self.write_plugin(1)
                result = subprocess.run([MODHOST, "--watch", missing, "-c", "print('ran')"], capture_output=True,
                                        text=True, cwd=self.root, timeout=DEADLINE)
                self.assertEqual(result.returncode, 2, result)
                self.assertIn("--watch", result.stderr)
                self.assertIn(missing, result.stderr)
                self.assertNotIn("ran", result.stdout)

    def test_watch_spellings(self):
        for options, cwd in ((["--cwd-path", "--watch", "."], "plugins"),
                             (["--cwd-path", "--watch", "../plugins/"], "plugins"),
                             (["-p", "plugins", "--watch", "plugins/"], "."),
                             (["-p", "plugins", "--watch", "./app/../plugins"], "."),
                             # The same directory through a symbolic link on one side only.
                             (["-p", "plugins", "--watch", "link/"], "."),
                             (["-p", "link", "--watch", "plugins"], ".")):
            with self.subTest(options=options, cwd=cwd):
                self.assertEditSeen(options, os.path.join(self.root, cwd))


if __name__ == "__main__":
    unittest.main()
