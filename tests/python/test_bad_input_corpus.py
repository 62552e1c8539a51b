"""The bad-input corpus: hostile files, hostile modules, hostile names, interrupts.

Every case asserts a clear exception (its type and a message a user can act
on) and an untouched cache: sys.modules and modhost.modules() the same before
and after (minus what the test itself did), the module's namespace the very
same objects, its generation unchanged. Cases that could hang or end the
process run in a child modhost with a timeout. test_cache_bad_input.py holds
the first cases (names never imported, malformed names, deleted/unreadable
files, non-UTF-8 sources, ...); this file extends it.
"""
import builtins
import os
import subprocess
import sys
import textwrap
import time
import traceback
import types
import unittest

from cache_fixtures import CacheTestCase, modhost

MODHOST = os.environ["MODHOST_EXE"]

CHILD_TIMEOUT = 30


def run_child(script, *args, timeout=CHILD_TIMEOUT):
    """Runs `script` in a fresh modhost; returns the CompletedProcess (TimeoutExpired propagates)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([MODHOST, *args, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=timeout, env=env)


class Corpus(CacheTestCase):
    """A loaded plugin and the assertions every case shares."""

    SOURCE = "VALUE = 1\ndef hook():\n    return 'old'\n"

    def setUp(self):
        super().setUp()
        self.name = self.mod("plug")
        self.path = self.write(self.name, self.SOURCE)
        self.module = self.load(self.name)

    def state(self, module=None):
        module = module or self.module
        name = module.__name__
        return {
            "sys.modules": sorted(sys.modules),
            "modules": modhost.modules(),
            "namespace": self.snapshot(module),
            "generation": modhost.info(name).generation,
            "module": sys.modules.get(name),
        }

    def assertRefused(self, call, error_type, *fragments, module=None):
        """`call()` raises `error_type` whose message has every fragment; nothing changed."""
        module = module or self.module
        before = self.state(module)
        with self.assertRaises(error_type) as caught:
            call()
        message = str(caught.exception)
        for fragment in fragments:
            self.assertIn(fragment, message)
        after = self.state(module)
        self.assertEqual(after["sys.modules"], before["sys.modules"])
        self.assertEqual(after["modules"], before["modules"])
        self.assertNamespaceIs(module, before["namespace"])
        self.assertEqual(after["generation"], before["generation"])
        self.assertIs(after["module"], before["module"])
        self.assertIs(modhost.load(module.__name__), module)
        return caught.exception

    def assertReloadRefused(self, error_type, *fragments, **options):
        error = self.assertRefused(lambda: modhost.reload(self.name, **options), error_type, *fragments)
        self.assertEqual(self.module.hook(), "old")
        self.assertEqual(modhost.info(self.name).state, "failed")
        self.assertIsNotNone(modhost.info(self.name).last_error)
        return error

    def replace_file(self, make):
        """Removes the plugin's source and lets `make(path)` put something else there."""
        os.remove(self.path)
        make(self.path)
        import importlib
        importlib.invalidate_caches()


# ---------------------------------------------------------------------------
# Files that are not plain files


class OddFiles(Corpus):
    def test_symlink_loop_onto_itself(self):
        self.replace_file(lambda p: os.symlink(p, p))
        self.assertReloadRefused(ImportError, self.name)

    def test_symlink_loop_of_two_links(self):
        other = os.path.join(self.dir, "other_" + self.tag + ".py")
        os.symlink(self.path, other)
        self.replace_file(lambda p: os.symlink(other, p))
        self.assertReloadRefused(ImportError, self.name)

    def test_dangling_symlink(self):
        self.replace_file(lambda p: os.symlink(os.path.join(self.dir, "nowhere.py"), p))
        self.assertReloadRefused(ImportError, self.name)

    def test_symlink_to_dev_null(self):
        self.replace_file(lambda p: os.symlink("/dev/null", p))
        self.assertReloadRefused(ImportError, self.name)

    def test_source_swapped_for_a_fifo_does_not_hang(self):
        """Plain and deep reload, is_changed and changed() with a FIFO where the source was.

        Run in a child: if anything opens the FIFO to read it, it blocks forever.
        """
        result = run_child(f"""
            import os, sys, importlib, modhost
            sys.path.insert(0, {self.dir!r})
            name = 'fifo_' + {self.tag!r}
            path = os.path.join({self.dir!r}, name + '.py')
            with open(path, 'w') as f:
                f.write('VALUE = 1\\n')
            mod = importlib.import_module(name)
            os.remove(path)
            os.mkfifo(path)
            importlib.invalidate_caches()
            print('is_changed', modhost.is_changed(name), flush=True)
            print('changed', name in modhost.changed(), flush=True)
            for deep in (False, True):
                try:
                    modhost.reload(name, deep=deep)
                    print('reloaded', deep, flush=True)
                except ImportError as e:
                    print('refused', deep, type(e).__name__, name in str(e), flush=True)
            print('value', mod.VALUE, modhost.info(name).generation)
        """, timeout=20)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split("\n"), [
            "is_changed True", "changed True",
            "refused False ModuleNotFoundError True", "refused True ModuleNotFoundError True",
            "value 1 1", ""])

    def test_source_symlinked_to_an_endless_device_does_not_hang(self):
        """/dev/zero never ends: hashing or reading it must not run forever or eat all memory."""
        result = run_child(f"""
            import os, sys, importlib, modhost
            sys.path.insert(0, {self.dir!r})
            name = 'zero_' + {self.tag!r}
            path = os.path.join({self.dir!r}, name + '.py')
            with open(path, 'w') as f:
                f.write('VALUE = 1\\n')
            mod = importlib.import_module(name)
            os.remove(path)
            os.symlink('/dev/zero', path)
            importlib.invalidate_caches()
            print('is_changed', modhost.is_changed(name), flush=True)
            for deep in (False, True):
                try:
                    modhost.reload(name, deep=deep)
                    print('reloaded', deep, flush=True)
                except ImportError as e:
                    print('refused', deep, type(e).__name__, flush=True)
            print('value', mod.VALUE, modhost.info(name).generation)
        """, timeout=20)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split("\n"), [
            "is_changed True", "refused False ModuleNotFoundError", "refused True ModuleNotFoundError",
            "value 1 1", ""])

    def test_source_replaced_by_a_symlink_to_a_directory(self):
        self.replace_file(lambda p: os.symlink(self.dir, p))
        self.assertReloadRefused(ImportError, self.name)

    def test_fifty_megabyte_source_reloads_or_fails_cleanly(self):
        chunk = "# " + "x" * 1021 + "\n"  # 1 KiB of comment
        body = chunk * (50 * 1024) + "VALUE = 2\nDATA = '%s'\ndef hook():\n    return 'new'\n" % ("y" * 1024 * 1024)
        self.write(self.name, body)
        self.assertGreater(os.path.getsize(self.path), 50 * 1024 * 1024)
        started = time.monotonic()
        modhost.reload(self.name)
        self.assertLess(time.monotonic() - started, 60)
        self.assertEqual((self.module.VALUE, self.module.hook(), len(self.module.DATA)), (2, "new", 1024 * 1024))
        self.assertEqual(modhost.info(self.name).generation, 2)
        self.assertEqual(modhost.info(self.name).fingerprint.size, os.path.getsize(self.path))
        self.assertFalse(modhost.is_changed(self.name))
        # And back to a small file: the process is still fine.
        self.write(self.name, self.SOURCE)
        modhost.reload(self.name)
        self.assertFalse(hasattr(self.module, "DATA") and False)
        self.assertEqual(self.module.hook(), "old")


# ---------------------------------------------------------------------------
# Sources the compiler refuses


class BadSources(Corpus):
    def test_nul_bytes_in_the_middle(self):
        self.write(self.name, b"VALUE = 2\nX = 1\x00\ndef hook():\n    return 'new'\n")
        self.assertReloadRefused((SyntaxError, ValueError), "null bytes")

    def test_invalid_utf8_after_a_valid_start(self):
        self.write(self.name, b"VALUE = 2\nTEXT = '\xc3\x28'\ndef hook():\n    return 'new'\n")
        error = self.assertReloadRefused(SyntaxError)
        # "'utf-8' codec can't decode byte 0xc3", since 3.14 "Non-UTF-8 code starting with '\xc3'".
        self.assertIn("utf-8", str(error).lower())
        self.assertEqual(os.path.basename(error.filename or ""), os.path.basename(self.path))

    def test_unknown_coding_declaration(self):
        self.write(self.name, b"# -*- coding: klingon -*-\nVALUE = 2\n")
        self.assertReloadRefused(SyntaxError, "klingon")

    def test_bom_contradicting_the_coding_declaration(self):
        self.write(self.name, b"\xef\xbb\xbf# -*- coding: latin-1 -*-\nVALUE = 2\n")
        self.assertReloadRefused(SyntaxError, "encoding")

    def test_a_thousand_nested_parentheses(self):
        self.write(self.name, "VALUE = " + "(" * 1000 + "1" + ")" * 1000 + "\n")
        self.assertReloadRefused(SyntaxError, "too many nested parentheses")

    def test_a_hundred_thousand_unary_minus(self):
        self.write(self.name, "VALUE = " + "-" * 100000 + "1\n")
        self.assertReloadRefused((SyntaxError, RecursionError, MemoryError))

    def test_too_many_nested_blocks(self):
        lines = ["    " * depth + "for _ in ():" for depth in range(30)] + ["    " * 30 + "VALUE = 2"]
        self.write(self.name, "\n".join(lines) + "\n")
        self.assertReloadRefused(SyntaxError, "nested blocks")

    def test_integer_literal_beyond_the_digit_limit(self):
        self.write(self.name, "VALUE = " + "9" * 100000 + "\n")
        self.assertReloadRefused(SyntaxError, "digits")

    def test_huge_string_literal_reloads(self):
        self.write(self.name, "VALUE = '%s'\ndef hook():\n    return 'new'\n" % ("z" * (8 * 1024 * 1024)))
        modhost.reload(self.name)
        self.assertEqual(len(self.module.VALUE), 8 * 1024 * 1024)
        self.assertEqual(modhost.info(self.name).generation, 2)

    def test_runtime_memory_error(self):
        self.write(self.name, "VALUE = 2\nBIG = bytearray(1 << 62)\n")
        self.assertReloadRefused(MemoryError)


# ---------------------------------------------------------------------------
# Modules that misbehave while they run


class HostileModules(Corpus):
    def test_recursion_at_import_time_on_reload(self):
        self.write(self.name, "VALUE = 2\ndef f(n):\n    return f(n + 1)\nf(0)\n")
        self.assertReloadRefused(RecursionError, "recursion")

    def test_recursion_at_first_import_leaves_nothing_behind(self):
        name = self.mod("recursive")
        self.write(name, "def f():\n    return f()\nf()\n")
        before_sys, before_cache = sorted(sys.modules), modhost.modules()
        with self.assertRaises(RecursionError):
            modhost.load(name)
        self.assertEqual(sorted(sys.modules), before_sys)
        self.assertEqual(modhost.modules(), before_cache)

    def test_plain_reload_whose_reload_hook_raises(self):
        self.write(self.name, "VALUE = 2\ndef hook():\n    return 'new'\n"
                              "def __reload__(old):\n    raise LookupError('cannot carry state from ' + str(old['VALUE']))\n")
        self.assertReloadRefused(LookupError, "cannot carry state from 1")

    def test_reload_hook_that_is_not_callable(self):
        self.write(self.name, "VALUE = 2\n__reload__ = 5\n")
        self.assertReloadRefused(TypeError, "not callable")

    def test_reload_hook_that_writes_to_the_old_namespace(self):
        self.write(self.name, "VALUE = 2\ndef __reload__(old):\n    old['VALUE'] = 99\n")
        self.assertReloadRefused(TypeError, "does not support item assignment")

    def test_unload_hook_raising_in_a_submodule_keeps_the_whole_package(self):
        pkg = self.mod("pkg")
        self.write(pkg, "", package=True)
        self.write(pkg + ".sub", "def __unload__():\n    raise OSError('flush failed: disk full')\n")
        package = self.load(pkg)
        sub = self.load(pkg + ".sub")
        del package
        # force: the test's own references must not be what stops the unload.
        self.assertRefused(lambda: modhost.unload(pkg, force=True), OSError, "disk full", module=sub)
        self.assertIs(sys.modules[pkg + ".sub"], sub)
        self.assertIn(pkg, sys.modules)

    def test_system_exit_from_a_plain_function_call_inside_reload(self):
        self.write(self.name, "import sys\nVALUE = 2\ndef hook():\n    return 'new'\nsys.exit(4)\n")
        error = self.assertReloadRefused(SystemExit)
        self.assertEqual(error.code, 4)

    def test_module_replacing_itself_with_a_non_module(self):
        """importlib.reload returns whatever the module put in sys.modules. modhost may do
        the same, or refuse; either way with a message that names the module, and a
        consistent cache."""
        self.write(self.name, "import sys\nVALUE = 2\nsys.modules[__name__] = 42\n")
        try:
            result = modhost.reload(self.name)
        except (ImportError, TypeError) as error:
            self.assertIn(self.name, str(error))
            self.assertIs(sys.modules[self.name], self.module)
            self.assertIn(self.name, modhost.modules())
            self.assertEqual((self.module.VALUE, modhost.info(self.name).generation), (1, 1))
        else:
            self.assertEqual(result, 42)
            self.assertEqual(sys.modules[self.name], 42)
            self.assertNotIn(self.name, modhost.modules())

    def test_module_that_changes_sys_path_then_raises(self):
        marker = os.path.join(self.dir, "added-by-plugin")
        self.write(self.name, f"import sys\nVALUE = 2\nsys.path.insert(0, {marker!r})\n"
                              "raise RuntimeError('plugin failed after touching sys.path')\n")
        path_before = list(sys.path)
        self.addCleanup(lambda: sys.path.remove(marker) if marker in sys.path else None)
        self.assertReloadRefused(RuntimeError, "touching sys.path")
        # The namespace is restored; sys.path is the interpreter's, not the module's:
        # modhost leaves it as the module's code left it (reported, not promised).
        self.assertEqual([p for p in sys.path if p != marker], path_before)

    def test_module_that_changes_sys_meta_path_then_raises(self):
        self.write(self.name, "import sys\nVALUE = 2\n"
                              "class Refuse:\n"
                              "    def find_spec(self, name, path=None, target=None):\n"
                              "        raise ImportError('plugin finder refuses ' + name)\n"
                              "sys.meta_path.insert(0, Refuse())\n"
                              "raise RuntimeError('plugin failed after touching sys.meta_path')\n")
        meta_before = list(sys.meta_path)
        self.addCleanup(lambda: sys.meta_path.__setitem__(slice(None), meta_before))
        self.assertReloadRefused(RuntimeError, "touching sys.meta_path")
        # The cache is consistent even though the next import would be refused by
        # the plugin's finder: put sys.meta_path back and everything works again.
        sys.meta_path[:] = meta_before
        self.write(self.name, "VALUE = 3\ndef hook():\n    return 'new'\n")
        modhost.reload(self.name)
        self.assertEqual((self.module.VALUE, modhost.info(self.name).generation), (3, 2))

    def test_module_that_empties_sys_meta_path_during_reload(self):
        self.write(self.name, "import sys\nVALUE = 2\nsys.meta_path.clear()\nimport json_not_there_%s\n" % self.tag)
        meta_before = list(sys.meta_path)
        self.addCleanup(lambda: sys.meta_path.__setitem__(slice(None), meta_before))
        error = self.assertReloadRefused(ImportError)
        self.assertTrue("meta_path" in str(error) or "json_not_there" in str(error), str(error))

    def test_module_that_unloads_itself_at_top_level_during_reload(self):
        self.write(self.name, "import modhost\nVALUE = 2\nmodhost.unload(__name__)\n")
        error = self.assertReloadRefused((RuntimeError, ImportError), self.name)
        self.assertIn(self.name, modhost.modules())

    def test_module_that_unloads_itself_during_its_first_import(self):
        name = self.mod("selfish")
        self.write(name, "import modhost\nVALUE = 1\nmodhost.unload(__name__)\n")
        before_sys, before_cache = sorted(sys.modules), modhost.modules()
        with self.assertRaises((RuntimeError, ImportError)) as caught:
            modhost.load(name)
        self.assertIn(name, str(caught.exception))
        self.assertEqual(sorted(sys.modules), before_sys)
        self.assertEqual(modhost.modules(), before_cache)

    def test_function_that_unloads_its_own_module_is_refused(self):
        self.write(self.name, "import modhost\nVALUE = 1\ndef hook():\n    return 'old'\n"
                              "def bye():\n    modhost.unload(__name__)\n")
        modhost.reload(self.name)
        module = self.module
        error = self.assertRefused(module.bye, modhost.ModuleInUseError, self.name)
        self.assertTrue(any("frame" in r for r in error.referrers), error.referrers)

    def test_module_that_deletes_its_own_spec_then_raises(self):
        self.write(self.name, "VALUE = 2\ndel __spec__\nraise ValueError('after deleting __spec__')\n")
        self.assertReloadRefused(ValueError, "after deleting __spec__")
        self.assertIsNotNone(self.module.__spec__)


# ---------------------------------------------------------------------------
# Modules other code tampered with


class TamperedModules(Corpus):
    def test_reload_after_spec_was_deleted_finds_it_again(self):
        del self.module.__spec__
        self.write(self.name, "VALUE = 2\ndef hook():\n    return 'new'\n")
        modhost.reload(self.name)
        self.assertEqual((self.module.VALUE, self.module.__spec__.name), (2, self.name))
        self.assertEqual(modhost.info(self.name).generation, 2)

    def test_reload_by_object_after_spec_was_replaced_by_junk(self):
        self.module.__spec__ = "junk"
        self.addCleanup(setattr, self.module, "__spec__", None)
        error = self.assertRefused(lambda: modhost.reload(self.module), (AttributeError, TypeError, ImportError))
        self.assertTrue(str(error))

    def test_reload_by_object_whose_spec_names_another_module(self):
        import json
        self.module.__spec__ = json.__spec__
        self.addCleanup(setattr, self.module, "__spec__", None)
        error = self.assertRefused(lambda: modhost.reload(self.module), ImportError, "json", "not in sys.modules")
        self.assertIs(sys.modules["json"], json)

    def test_module_under_an_alias_name(self):
        alias = self.mod("alias")
        sys.modules[alias] = self.module
        error = self.assertRefused(lambda: modhost.reload(alias), ImportError, alias)
        self.assertEqual(self.module.__name__, self.name)

    def test_package_whose_path_is_junk(self):
        pkg = self.mod("pkg")
        self.write(pkg, "", package=True)
        self.write(pkg + ".sub", "VALUE = 1\n")
        sub = self.load(pkg + ".sub")
        sys.modules[pkg].__path__ = 5
        self.assertRefused(lambda: modhost.reload(pkg + ".sub"), (TypeError, ImportError), module=sub)

    def test_reload_of_submodule_after_parent_was_unloaded(self):
        pkg = self.mod("pkg")
        self.write(pkg, "", package=True)
        self.write(pkg + ".sub", "VALUE = 1\n")
        sub = self.load(pkg + ".sub")
        report = modhost.unload(pkg, force=True)
        self.assertEqual(report.unloaded, [pkg + ".sub", pkg])
        before_sys, before_cache = sorted(sys.modules), modhost.modules()
        with self.assertRaises(ImportError) as caught:
            modhost.reload(pkg + ".sub")
        self.assertIn(pkg + ".sub", str(caught.exception))
        with self.assertRaises(ImportError) as caught:
            modhost.reload(sub)
        self.assertIn("not in sys.modules", str(caught.exception))
        self.assertEqual((sorted(sys.modules), modhost.modules()), (before_sys, before_cache))
        self.assertEqual(sub.VALUE, 1)

    def test_non_string_key_in_the_namespace_survives_a_failed_deep_reload(self):
        vars(self.module)[1] = "int key"
        self.write(self.name, "VALUE = 2\nraise ValueError('deep failure')\n")
        self.assertReloadRefused(ValueError, "deep failure", deep=True)
        self.assertEqual(vars(self.module)[1], "int key")


# ---------------------------------------------------------------------------
# Names


class Names(Corpus):
    def test_name_with_a_space_loads_reloads_and_unloads(self):
        name = self.mod("my plug")
        self.write(name, "VALUE = 1\n")
        module = modhost.load(name)
        self.assertIs(sys.modules[name], module)
        self.write(name, "VALUE = 2\n")
        modhost.reload(name)
        self.assertEqual((module.VALUE, modhost.info(name).generation), (2, 2))
        del module
        modhost.unload(name)
        self.assertNotIn(name, sys.modules)

    def test_unicode_name(self):
        name = self.mod("plüg_名前")
        self.write(name, "VALUE = 'ü'\n")
        module = modhost.load(name)
        self.write(name, "VALUE = '名'\n")
        modhost.reload(name)
        self.assertEqual(module.VALUE, "名")
        self.assertEqual(modhost.info(name).path, self.path_of(name))

    def test_name_with_a_nul_byte_is_refused_and_tracks_nothing(self):
        """'plug\\0junk' must not be taken for 'plug' (C strings end at NUL)."""
        bad = self.name + "\x00junk"
        for call in (modhost.info, modhost.reload, modhost.unload, modhost.refcount, modhost.is_changed):
            with self.subTest(call=call.__name__):
                self.assertRefused(lambda: call(bad), (ValueError, ImportError))
        self.assertNotIn(bad, modhost.modules())
        self.assertIs(sys.modules[self.name], self.module)

    def test_name_with_a_nul_byte_after_a_stdlib_module(self):
        import json
        bad = "json\x00" + self.tag
        before_cache = modhost.modules()
        with self.assertRaises((ValueError, ImportError)):
            modhost.info(bad)
        self.assertEqual(modhost.modules(), before_cache)
        self.assertIs(sys.modules["json"], json)

    def test_name_with_a_lone_surrogate(self):
        before_sys, before_cache = sorted(sys.modules), modhost.modules()
        for call in (modhost.info, modhost.reload, modhost.unload, modhost.load):
            with self.subTest(call=call.__name__), self.assertRaises((TypeError, UnicodeError, ValueError)):
                call("plug\udc80")
        self.assertEqual((sorted(sys.modules), modhost.modules()), (before_sys, before_cache))

    def test_very_long_name(self):
        name = "x" * 100000
        before_sys, before_cache = sorted(sys.modules), modhost.modules()
        with self.assertRaises(ImportError):
            modhost.load(name)
        with self.assertRaises(ImportError):
            modhost.reload(name)
        self.assertEqual((sorted(sys.modules), modhost.modules()), (before_sys, before_cache))

    def test_path_like_names(self):
        before_sys, before_cache = sorted(sys.modules), modhost.modules()
        for name in ("os/path", "/etc/passwd", "a\\b", self.dir + "/" + self.name):
            with self.subTest(name=name), self.assertRaises(ImportError):
                modhost.load(name)
        self.assertEqual((sorted(sys.modules), modhost.modules()), (before_sys, before_cache))

    def test_unload_of_a_missing_submodule_of_a_loaded_package(self):
        pkg = self.mod("pkg")
        self.write(pkg, "", package=True)
        self.load(pkg)
        self.assertRefused(lambda: modhost.unload(pkg + ".never"), ImportError, pkg + ".never",
                           module=sys.modules[pkg])

    def test_double_unload(self):
        del self.module
        modhost.unload(self.name)
        before_sys, before_cache = sorted(sys.modules), modhost.modules()
        with self.assertRaises(ImportError) as caught:
            modhost.unload(self.name)
        self.assertIn(self.name, str(caught.exception))
        self.assertIn("not loaded", str(caught.exception))
        self.assertEqual((sorted(sys.modules), modhost.modules()), (before_sys, before_cache))

    def test_reload_after_unload(self):
        module = self.module
        del self.module
        modhost.unload(self.name, force=True)
        before_sys, before_cache = sorted(sys.modules), modhost.modules()
        with self.assertRaises(ImportError) as caught:
            modhost.reload(self.name)
        self.assertIn("import it first", str(caught.exception))
        with self.assertRaises(ImportError) as caught:
            modhost.reload(module)
        self.assertIn("not in sys.modules", str(caught.exception))
        self.assertEqual((sorted(sys.modules), modhost.modules()), (before_sys, before_cache))
        self.assertEqual(module.VALUE, 1)
        # A later load brings fresh code.
        self.assertIsNot(modhost.load(self.name), module)


# ---------------------------------------------------------------------------
# Interrupts


class Interrupts(Corpus):
    def test_reload_timeout_interrupts_an_endless_loop_and_rolls_back(self):
        self.write(self.name, "VALUE = 2\ndef hook():\n    return 'new'\nwhile True:\n    pass\n")
        started = time.monotonic()
        error = self.assertReloadRefused(modhost.TimeLimitExceeded, timeout=0.2)
        self.assertLess(time.monotonic() - started, 5)
        self.assertNotIsInstance(error, Exception)  # a BaseException: plugins' `except Exception` cannot swallow it
        # The host keeps running: the fixed plugin reloads.
        self.write(self.name, "VALUE = 3\ndef hook():\n    return 'new'\n")
        modhost.reload(self.name, timeout=5)
        self.assertEqual((self.module.VALUE, modhost.info(self.name).generation), (3, 2))

    def test_deep_reload_timeout_rolls_back(self):
        self.write(self.name, "VALUE = 2\ndef hook():\n    return 'new'\nwhile True:\n    pass\n")
        self.assertReloadRefused(modhost.TimeLimitExceeded, deep=True, timeout=0.2)

    def test_load_timeout_leaves_nothing_half_imported(self):
        name = self.mod("stuck")
        self.write(name, "VALUE = 1\nwhile True:\n    pass\n")
        before_sys, before_cache = sorted(sys.modules), modhost.modules()
        with self.assertRaises(modhost.TimeLimitExceeded):
            modhost.load(name, timeout=0.2)
        self.assertNotIn(name, sys.modules)
        self.assertEqual((sorted(sys.modules), modhost.modules()), (before_sys, before_cache))
        self.write(name, "VALUE = 1\n")
        self.assertEqual(modhost.load(name, timeout=5).VALUE, 1)

    def test_time_limit_around_an_endless_function_call(self):
        self.write(self.name, "def spin():\n    while True:\n        pass\ndef hook():\n    return 'old'\n")
        modhost.reload(self.name)
        with self.assertRaises(modhost.TimeLimitExceeded):
            with modhost.time_limit(0.2) as limit:
                self.module.spin()
        self.assertTrue(limit.expired)
        # Nothing is left pending for the code after the block.
        total = sum(range(1000000))
        self.assertEqual(total, 499999500000)

    def test_time_limit_that_does_not_expire(self):
        with modhost.time_limit(5) as limit:
            value = sum(range(1000))
        self.assertFalse(limit.expired)
        time.sleep(0.05)
        self.assertEqual(value, 499500)

    def test_nested_time_limits_the_earliest_wins(self):
        started = time.monotonic()
        with self.assertRaises(modhost.TimeLimitExceeded):
            with modhost.time_limit(10):
                with modhost.time_limit(0.2):
                    while True:
                        pass
        self.assertLess(time.monotonic() - started, 5)

    def test_bad_timeouts_are_value_errors(self):
        for bad in (0, -1):
            with self.subTest(bad=bad):
                self.assertRefused(lambda: modhost.reload(self.name, timeout=bad), ValueError, "positive")
                self.assertRefused(lambda: modhost.load(self.name, timeout=bad), ValueError, "positive")
                with self.assertRaises(ValueError):
                    modhost.time_limit(bad)
        with self.assertRaises(ValueError):
            modhost.time_limit(None)
        with self.assertRaises(TypeError):
            modhost.reload(self.name, timeout="soon")

    def test_infinite_and_huge_timeouts_are_no_limit(self):
        # inf and anything past ~9.2e9 s went through an out-of-range
        # float-to-int conversion: timeout=inf raised TimeLimitExceeded at
        # once, time_limit(inf) fired after a few milliseconds.
        slow = "import time\nVALUE = %d\nend = time.monotonic() + 0.1\nwhile time.monotonic() < end:\n    pass\n"
        for forever in (float("inf"), 1e300, 1e10, 10 ** 20):
            with self.subTest(timeout=forever):
                generation = modhost.info(self.name).generation
                self.write(self.name, slow % generation)
                modhost.reload(self.name, timeout=forever)
                self.assertEqual((self.module.VALUE, modhost.info(self.name).generation), (generation, generation + 1))
                name = self.mod("loaded")
                self.write(name, slow % 7)
                self.assertEqual(modhost.load(name, timeout=forever).VALUE, 7)
                with modhost.time_limit(forever) as limit:
                    end = time.monotonic() + 0.1
                    while time.monotonic() < end:
                        pass
                self.assertFalse(limit.expired)

    def test_nan_and_negative_timeouts_are_value_errors_that_say_so(self):
        nan, inf = float("nan"), float("inf")
        calls = {"timeout": [lambda t: modhost.reload(self.name, timeout=t),
                             lambda t: modhost.load(self.name, timeout=t)],
                 "seconds": [lambda t: modhost.time_limit(t)]}
        for parameter, refused in calls.items():
            for call in refused:
                with self.subTest(parameter=parameter, value="nan"):
                    self.assertRefused(lambda: call(nan), ValueError, parameter + " must be a number of seconds, not nan")
                for bad in (-inf, -1e300, -0.5):
                    with self.subTest(parameter=parameter, value=bad):
                        self.assertRefused(lambda: call(bad), ValueError,
                                           parameter + " must be positive, got " + repr(bad))
        self.assertEqual(modhost.info(self.name).generation, 1)

    def test_plugin_that_swallows_exceptions_in_its_loop_is_still_stopped(self):
        """`except Exception` is everyday plugin code: a loop that catches Exception must
        not turn a time limit into a hang."""
        script = f"""
            import os, sys, importlib, modhost
            sys.path.insert(0, {self.dir!r})
            name = 'swallow_' + {self.tag!r}
            path = os.path.join({self.dir!r}, name + '.py')
            with open(path, 'w') as f:
                f.write('VALUE = 1\\n')
            mod = importlib.import_module(name)
            with open(path, 'w') as f:
                f.write('VALUE = 2\\nwhile True:\\n    try:\\n        sum(range(1000))\\n'
                        '    except Exception as e:\\n        LAST = e\\n')
            try:
                modhost.reload(name, timeout=0.3)
            except BaseException as e:
                print('stopped', type(e).__name__, flush=True)
            print('value', mod.VALUE)
        """
        try:
            result = run_child(script, timeout=15)
        except subprocess.TimeoutExpired:
            self.fail("reload(timeout=0.3) of a loop that catches Exception still ran after 15 s: "
                      "TimeLimitExceeded was swallowed by `except Exception`")
        self.assertEqual(result.stdout.split("\n"), ["stopped TimeLimitExceeded", "value 1", ""],
                         result.stderr)

    def test_an_error_that_outlasts_the_limit_while_it_is_formatted_is_the_error_reported(self):
        # The module fails at once; reading its message takes longer than the
        # limit, which must be disarmed by then (a TimeLimitExceeded raised
        # into the formatting would replace the module's own error).
        self.write(self.name, "class SlowMessage(Exception):\n    def __str__(self):\n        import time\n"
                              "        end = time.monotonic() + 0.5\n        while time.monotonic() < end:\n"
                              "            pass\n        return 'the message'\nraise SlowMessage()\n")
        error = self.assertReloadRefused(Exception, "the message", timeout=0.2)
        self.assertEqual(type(error).__name__, "SlowMessage")
        self.assertIn("SlowMessage: the message", modhost.info(self.name).last_error)

    def test_reload_blocked_in_sleep_is_interrupted_when_the_call_returns(self):
        self.write(self.name, "import time\nVALUE = 2\ntime.sleep(1)\nVALUE = 3\n")
        started = time.monotonic()
        self.assertReloadRefused(modhost.TimeLimitExceeded, timeout=0.1)
        self.assertGreaterEqual(time.monotonic() - started, 0.9)


# ---------------------------------------------------------------------------
# Modules that fork or end the process (in a child modhost)


class ProcessLevel(CacheTestCase):
    def child_script(self, plugin_v2, after=""):
        return f"""
            import os, sys, importlib, modhost
            sys.path.insert(0, {self.dir!r})
            name = 'proc_' + {self.tag!r}
            path = os.path.join({self.dir!r}, name + '.py')
            with open(path, 'w') as f:
                f.write('VALUE = 1\\n')
            mod = importlib.import_module(name)
            with open(path, 'w') as f:
                f.write({plugin_v2!r})
            print('before', flush=True)
            {after}
        """

    def test_module_that_forks_during_reload(self):
        plugin = ("import os\nVALUE = 2\nPID = os.fork()\n"
                  "if PID == 0:\n    os._exit(7)\n_, STATUS = os.waitpid(PID, 0)\n")
        result = run_child(self.child_script(plugin, after=textwrap.dedent("""\
            modhost.reload(name)
            print('after', mod.VALUE, os.waitstatus_to_exitcode(mod.STATUS), modhost.info(name).generation)
        """).replace("\n", "\n            ")))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split("\n"), ["before", "after 2 7 2", ""])

    def test_module_that_calls_os_exit_during_reload(self):
        result = run_child(self.child_script("import os\nVALUE = 2\nos._exit(3)\n",
                                             after="modhost.reload(name)\n            print('not reached')"))
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertEqual(result.stdout, "before\n")
        self.assertEqual(result.stderr, "")

    def test_module_that_calls_os_exit_during_first_load(self):
        result = run_child(self.child_script("import os\nos._exit(5)\n",
                                             after=f"modhost.load('other_' + {self.tag!r})"))
        self.assertEqual(result.returncode, 1)  # the other module does not exist: a clean error
        self.assertIn("ModuleNotFoundError", result.stderr)
        other = os.path.join(self.dir, "exit_" + self.tag + ".py")
        with open(other, "w") as f:
            f.write("import os\nos._exit(5)\n")
        result = run_child(f"""
            import sys, modhost
            sys.path.insert(0, {self.dir!r})
            modhost.load('exit_' + {self.tag!r})
        """)
        self.assertEqual((result.returncode, result.stderr), (5, ""))


if __name__ == "__main__":
    unittest.main()
