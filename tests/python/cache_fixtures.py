"""Shared fixture for the module cache's script-side tests (tests/python/test_cache_*.py).

Each test gets a fresh temporary directory on sys.path and a unique tag; every
module a test creates is named with that tag (``self.mod("plug")`` ->
``plug_c12``), so the tests of one file, which share one interpreter, never see
each other's modules. Cleanup removes the directory from sys.path, the test's
modules from sys.modules (and their attributes from parent packages), and the
test's names from builtins.
"""
import builtins
import importlib
import itertools
import os
import shutil
import stat
import sys
import tempfile
import textwrap
import traceback
import unittest

import modhost

_counter = itertools.count(1)

# The first error of a kind formatted in a process can import stdlib modules
# that have nothing to do with the cache: since 3.13 an AttributeError or
# NameError imports _suggestions ("Did you mean ...?"), since 3.14 a
# SyntaxError imports codeop, __future__ and _suggestions (keyword typos),
# since 3.15 a ModuleNotFoundError imports zipfile, random and more (module
# name suggestions) and a source that is not UTF-8 imports unicodedata.
# modhost formats the traceback of each error it carries, so the first such
# test would see sys.modules grow: format one of each before any test takes
# its snapshot.
for _source in ("object().no_such_attribute", "while True print(1)", "import modhost_no_such_module_warm_up",
                b"TEXT = '\xc3\x28'\n"):
    try:
        exec(_source)
    except (AttributeError, SyntaxError, ImportError) as _error:
        traceback.format_exception(_error)
# Likewise the first cache call of a process runs modhost's own helpers,
# which import enum, gc, importlib.machinery and a few more.
modhost.changed()


class CacheTestCase(unittest.TestCase):
    def setUp(self):
        self.tag = "c%d_%d" % (os.getpid() % 10000, next(_counter))
        self.dir = tempfile.mkdtemp(prefix="modhost-cache-test-")
        sys.path.insert(0, self.dir)
        importlib.invalidate_caches()
        self.addCleanup(self._clean_up)

    def _clean_up(self):
        while self.dir in sys.path:
            sys.path.remove(self.dir)
        sys.path_importer_cache.pop(self.dir, None)
        for name in [n for n in list(sys.modules) if self.tag in n]:
            sys.modules.pop(name, None)
        for name in [n for n in list(vars(builtins)) if self.tag in n]:
            delattr(builtins, name)
        # Make everything removable again (a test may have chmod-ed a file),
        # but never through a symbolic link: chmod follows it, and a test's
        # link to /dev/null made /dev/null unusable for everyone but root.
        for root, dirs, files in os.walk(self.dir):
            for entry in dirs + files:
                path = os.path.join(root, entry)
                if os.path.islink(path):
                    continue
                try:
                    os.chmod(path, stat.S_IRWXU)
                except OSError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)
        importlib.invalidate_caches()

    # -- names and files ----------------------------------------------------

    def mod(self, base):
        """A module name unique to this test: 'plug' -> 'plug_c12_3'."""
        return "%s_%s" % (base, self.tag)

    def path_of(self, name, package=False):
        parts = name.split(".")
        if package:
            return os.path.join(self.dir, *parts, "__init__.py")
        return os.path.join(self.dir, *parts[:-1], parts[-1] + ".py")

    def write(self, name, text, package=False):
        """Writes module `name` (dotted names go into package directories)."""
        path = self.path_of(name, package)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = text if isinstance(text, bytes) else textwrap.dedent(text).encode()
        with open(path, "wb") as f:
            f.write(data)
        importlib.invalidate_caches()
        return path

    def write_same_stat(self, name, text, package=False):
        """Rewrites a module with same-size content and restores its mtime."""
        path = self.path_of(name, package)
        before = os.stat(path)
        data = textwrap.dedent(text).encode()
        self.assertEqual(len(data), before.st_size, "the test's same-size edit is not the same size")
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        self.assertEqual(os.stat(path).st_mtime_ns, before.st_mtime_ns)
        return path

    def load(self, name):
        return importlib.import_module(name)

    def copy_installed_package(self, top, debian_package):
        """Copies Debian's installed package `top` into the test's directory (first on
        sys.path), so edits never touch the installation; its modules (and their
        cache entries) go at cleanup. Skips the test when the package is missing."""
        source = os.path.join("/usr/lib/python3/dist-packages", top)
        if not os.path.isfile(os.path.join(source, "__init__.py")):
            self.skipTest("%s is not installed (scripts/setup.sh installs it)" % debian_package)
        self.assertNotIn(top, sys.modules, "%s was imported before the test copied it" % top)
        shutil.copytree(source, os.path.join(self.dir, top), ignore=shutil.ignore_patterns("__pycache__", "tests"))
        importlib.invalidate_caches()
        self.addCleanup(self._forget_package, top)
        return os.path.join(self.dir, top)

    @staticmethod
    def _forget_package(top):
        for name in [n for n in list(sys.modules) if n == top or n.startswith(top + ".")]:
            sys.modules.pop(name, None)

    def append(self, name, text, package=False):
        """Appends `text` (dedented) to module `name`'s source."""
        path = self.path_of(name, package)
        with open(path, "ab") as f:
            f.write(b"\n" + textwrap.dedent(text).encode())
        importlib.invalidate_caches()
        return path

    # -- builtins as a shared log -------------------------------------------

    @property
    def log_name(self):
        return "log_" + self.tag

    def log(self):
        """The list modules append to with log_code()."""
        return vars(builtins).setdefault(self.log_name, [])

    def log_code(self, label="__name__"):
        """Source lines appending `label` to this test's log when a module runs."""
        return "import builtins\nbuiltins.__dict__.setdefault(%r, []).append(%s)\n" % (self.log_name, label)

    # -- assertions ----------------------------------------------------------

    def snapshot(self, module):
        """(keys in order, {key: object}) of a module's namespace."""
        return list(vars(module).keys()), dict(vars(module))

    def assertNamespaceIs(self, module, snap):
        """The namespace has exactly the same keys, bound to the very same objects."""
        keys, objects = snap
        self.assertEqual(list(vars(module).keys()), keys)
        for key, value in objects.items():
            self.assertIs(vars(module)[key], value, "global %r is a different object" % key)

    def assertNothingElseChanged(self, modules_before):
        self.assertEqual(sorted(sys.modules), sorted(modules_before))


class DeepReloadTestCase(CacheTestCase):
    """CacheTestCase plus helpers for modhost.reload(..., deep=True) (tests/python/test_deep_*.py)."""

    def source(self, text, **names):
        """Dedented `text` with each `{KEY}` placeholder replaced by names[KEY] (other braces untouched)."""
        text = textwrap.dedent(text)
        for key, value in names.items():
            text = text.replace("{%s}" % key, value)
        return text

    def deep_reload(self, module, **options):
        """modhost.reload(module, deep=True, ...); returns modhost.last_reload()."""
        result = modhost.reload(module, deep=True, **options)
        expected = sys.modules[module] if isinstance(module, str) else module
        self.assertIs(result, expected)
        report = modhost.last_reload()
        self.assertIsNotNone(report)
        return report

    def assertMentions(self, items, *fragments):
        """Some entry of `items` (a report list) contains every fragment."""
        matching = [item for item in items if all(f in item for f in fragments)]
        self.assertTrue(matching, "no entry mentions %r: %r" % (fragments, list(items)))

    def assertNotMentions(self, items, fragment):
        self.assertFalse([item for item in items if fragment in item],
                         "an entry mentions %r: %r" % (fragment, list(items)))

    def class_snapshot(self, cls):
        """{key: object} of a class's own __dict__."""
        return dict(vars(cls))

    def assertClassDictIs(self, cls, snap):
        """The class has exactly the same own attributes, bound to the very same objects."""
        self.assertEqual(sorted(vars(cls)), sorted(snap))
        for key, value in snap.items():
            self.assertIs(vars(cls)[key], value, "%s.%s is a different object" % (cls.__qualname__, key))


__all__ = ["CacheTestCase", "DeepReloadTestCase", "modhost"]
