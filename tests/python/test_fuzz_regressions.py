"""Inputs that once broke a libFuzzer harness (tests/fuzz/regressions/), replayed in the normal build.

The harnesses themselves need clang (scripts/fuzz, and the fuzz.regressions.*
ctest tests of the tests/fuzz project replay these files under ASan); this
test replays the same inputs through the script API with the same invariants,
so every CI build keeps them fixed:

- module_name/*: the bytes as a module name (UTF-8, undecodable bytes as
  surrogates) to find/info/refcount/reload/unload/load: each returns or raises
  a Python exception; the cache never tracks a name sys.modules does not hold
  and never hands out another name's module.
- reload_source/*: the bytes as the source of a loaded plugin: reload succeeds
  or fails with the namespace restored and the generation kept.
"""
import os
import sys
import unittest

from cache_fixtures import CacheTestCase, modhost

HERE = os.path.dirname(os.path.abspath(__file__))
REGRESSIONS = os.path.join(HERE, os.pardir, "fuzz", "regressions")


def inputs(harness):
    directory = os.path.join(REGRESSIONS, harness)
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, f) for f in os.listdir(directory))


class ModuleNameRegressions(CacheTestCase):
    def replay(self, raw):
        name = raw.decode("utf-8", "surrogateescape")
        package = self.mod("fzpkg")
        self.write(package, "VALUE = 1\n", package=True)
        self.write(package + ".a", "A = 1\n")
        self.load(package + ".a")
        # The harness's package is called fzpkg; here it carries the test's tag.
        if name.startswith("fzpkg"):
            name = package + name[len("fzpkg"):]
        for candidate in (name, package + "." + name):
            live = sys.modules.get(candidate) if candidate in sys.modules else None
            calls = [modhost.info, modhost.refcount, modhost.referrers, modhost.is_changed]
            if live is None or candidate.startswith(package):
                calls += [modhost.reload, lambda n: modhost.unload(n, force=True)]
            if candidate.startswith(package):
                calls.append(modhost.load)
            for call in calls:
                try:
                    call(candidate)
                except (Exception, SystemExit) as error:  # any Python exception is a clean refusal
                    self.assertTrue(str(error) or type(error).__name__)
                for tracked in modhost.modules():
                    self.assertTrue(tracked in sys.modules,
                                    "after %s(%r) the cache tracks %r, which is not in sys.modules"
                                    % (getattr(call, "__name__", "unload"), candidate, tracked))
            self.assertEqual(sys.modules.get(package + ".a").A, 1)

    def test_inputs(self):
        for path in inputs("module_name"):
            with self.subTest(input=os.path.basename(path)):
                with open(path, "rb") as f:
                    self.replay(f.read())


class ReloadSourceRegressions(CacheTestCase):
    def test_inputs(self):
        for path in inputs("reload_source"):
            with self.subTest(input=os.path.basename(path)):
                name = self.mod("fzplug_%d" % len(os.path.basename(path)))
                self.write(name, "VALUE = 1\n")
                module = self.load(name)
                with open(path, "rb") as f:
                    self.write(name, f.read())
                snap = self.snapshot(module)
                try:
                    modhost.reload(name, timeout=5, deep=os.path.getsize(path) % 2 == 1)
                except BaseException:
                    self.assertNamespaceIs(module, snap)
                    self.assertEqual(modhost.info(name).generation, 1)
                self.assertIs(modhost.load(name), sys.modules[name])


if __name__ == "__main__":
    unittest.main()
