"""modhost.reload: picks up edits, keeps identity, and is atomic when the code fails."""
import importlib
import importlib.util
import os
import sys
import unittest

from cache_fixtures import CacheTestCase, modhost


class ReloadPicksUpSource(CacheTestCase):
    def test_reload_runs_edited_source_in_the_same_module_object(self):
        name = self.mod("plug")
        self.write(name, "VALUE = 1\ndef hook():\n    return 'old'\n")
        mod = self.load(name)
        self.assertEqual(mod.hook(), "old")
        self.write(name, "VALUE = 2\ndef hook():\n    return 'new'\n")

        result = modhost.reload(mod)

        self.assertIs(result, mod)
        self.assertIs(sys.modules[name], mod)
        self.assertEqual(mod.VALUE, 2)
        self.assertEqual(mod.hook(), "new")

    def test_reload_accepts_a_name(self):
        name = self.mod("plug")
        self.write(name, "VALUE = 1\n")
        mod = self.load(name)
        self.write(name, "VALUE = 2\n")
        self.assertIs(modhost.reload(name), mod)
        self.assertEqual(mod.VALUE, 2)
        self.assertIs(sys.modules[name], mod)

    def test_generation_starts_at_one_and_counts_successful_reloads(self):
        name = self.mod("plug")
        self.write(name, "VALUE = 1\n")
        self.load(name)
        self.assertEqual(modhost.info(name).generation, 1)
        self.write(name, "VALUE = 2\n")
        modhost.reload(name)
        self.assertEqual(modhost.info(name).generation, 2)
        self.assertEqual(modhost.info(name).state, "loaded")
        modhost.reload(name)
        self.assertEqual(modhost.info(name).generation, 3)

    def test_plain_reload_keeps_names_deleted_from_source_like_importlib(self):
        # reload runs the new code in the old namespace; only deep reload removes stale names.
        name = self.mod("plug")
        self.write(name, "KEPT = 1\nGONE = 2\n")
        mod = self.load(name)
        self.write(name, "KEPT = 10\n")
        modhost.reload(mod)
        self.assertEqual(mod.KEPT, 10)
        self.assertEqual(mod.GONE, 2)

    def test_reload_compiles_current_source_not_a_stale_bytecode_cache(self):
        saved = sys.dont_write_bytecode
        sys.dont_write_bytecode = False
        self.addCleanup(setattr, sys, "dont_write_bytecode", saved)
        name = self.mod("plug")
        path = self.write(name, "VALUE = 1111\n")
        mod = self.load(name)
        self.assertTrue(os.path.exists(importlib.util.cache_from_source(path)),
                        "the import should have written a bytecode cache")
        self.write_same_stat(name, "VALUE = 2222\n")

        modhost.reload(mod)

        self.assertEqual(mod.VALUE, 2222)

    def test_dataclasses_and_future_annotations_work_on_reload(self):
        name = self.mod("plug")
        self.write(name, "from dataclasses import dataclass\n@dataclass\nclass Point:\n    x: int\n")
        mod = self.load(name)
        self.write(name, """
            from __future__ import annotations
            from dataclasses import dataclass
            @dataclass
            class Point:
                x: int
                y: NotDefinedAnywhere = 0
        """)
        modhost.reload(mod)
        self.assertEqual(repr(mod.Point(1, 2)), "Point(x=1, y=2)")

    def test_source_encoding_declaration_is_honoured(self):
        name = self.mod("plug")
        self.write(name, "TEXT = 'old'\n")
        mod = self.load(name)
        self.write(name, "# -*- coding: latin-1 -*-\nTEXT = '".encode() + "caf\u00e9".encode("latin-1") + b"'\n")
        modhost.reload(mod)
        self.assertEqual(mod.TEXT, "caf\u00e9")

    def test_package_and_submodule_reload(self):
        pkg = self.mod("pkg")
        self.write(pkg, "NAME = 'pkg v1'\n", package=True)
        self.write(pkg + ".sub", "NAME = 'sub v1'\n")
        package = self.load(pkg)
        sub = self.load(pkg + ".sub")
        self.write(pkg, "NAME = 'pkg v2'\n", package=True)
        self.write(pkg + ".sub", "NAME = 'sub v2'\n")

        self.assertIs(modhost.reload(pkg), package)
        self.assertIs(modhost.reload(pkg + ".sub"), sub)

        self.assertEqual(package.NAME, "pkg v2")
        self.assertEqual(sub.NAME, "sub v2")
        self.assertEqual(modhost.info(pkg).kind, "package")
        self.assertEqual(modhost.info(pkg + ".sub").kind, "source")
        self.assertEqual(modhost.info(pkg + ".sub").generation, 2)

    def test_module_that_became_a_package_reloads_as_a_package(self):
        name = self.mod("plug")
        path = self.write(name, "WHAT = 'module'\n")
        mod = self.load(name)
        os.remove(path)
        init = self.write(name, "WHAT = 'package'\n", package=True)

        self.assertIs(modhost.reload(name), mod)

        self.assertEqual(mod.WHAT, "package")
        info = modhost.info(name)
        self.assertEqual(info.kind, "package")
        self.assertEqual(info.path, init)
        self.assertTrue(hasattr(mod, "__path__"))

    def test_module_that_replaces_itself_in_sys_modules_reload_returns_the_replacement(self):
        name = self.mod("plug")
        self.write(name, "ORIGINAL = True\n")
        mod = self.load(name)
        self.write(name, """
            import sys, types
            replacement = types.ModuleType(__name__)
            replacement.REPLACED = True
            sys.modules[__name__] = replacement
        """)

        result = modhost.reload(mod)

        self.assertIsNot(result, mod)
        self.assertIs(result, sys.modules[name])
        self.assertTrue(result.REPLACED)


class FailedReloadIsAtomic(CacheTestCase):
    GOOD = """
        import os
        VALUE = 1
        def hook():
            return 'old'
        class Widget:
            pass
        OBJECT = object()
    """

    def check_failed_reload(self, bad_source, error_type, error_text):
        name = self.mod("plug")
        self.write(name, self.GOOD)
        mod = self.load(name)
        snap = self.snapshot(mod)
        hook, widget = mod.hook, mod.Widget
        self.write(name, bad_source)

        with self.assertRaises(error_type) as caught:
            modhost.reload(mod)

        self.assertIs(type(caught.exception), error_type)
        self.assertNamespaceIs(mod, snap)
        self.assertIs(mod.hook, hook)
        self.assertIs(mod.Widget, widget)
        self.assertEqual(mod.hook(), "old")
        self.assertIs(sys.modules[name], mod)
        info = modhost.info(name)
        self.assertEqual(info.generation, 1)
        self.assertEqual(info.state, "failed")
        self.assertIn(error_type.__name__, info.last_error)
        self.assertIn(error_text, info.last_error)

        # A later good reload works and clears the failure.
        self.write(name, "VALUE = 2\ndef hook():\n    return 'new'\n")
        self.assertIs(modhost.reload(mod), mod)
        self.assertEqual(mod.hook(), "new")
        info = modhost.info(name)
        self.assertEqual((info.generation, info.state, info.last_error), (2, "loaded", None))

    def test_exception_at_the_first_statement(self):
        self.check_failed_reload("raise LookupError('first statement')\nVALUE = 2\n",
                                 LookupError, "first statement")

    def test_exception_at_a_middle_statement(self):
        self.check_failed_reload("""
            VALUE = 2
            def hook():
                return 'new'
            NEW_NAME = 'added'
            1 / 0
            class Widget:
                pass
        """, ZeroDivisionError, "division")

    def test_exception_at_the_last_statement(self):
        self.check_failed_reload("""
            VALUE = 2
            def hook():
                return 'new'
            class Widget:
                pass
            OBJECT = object()
            ANOTHER = 3
            raise ValueError('last statement')
        """, ValueError, "last statement")

    def test_syntax_error(self):
        self.check_failed_reload("VALUE = 2\ndef hook(:\n    return 'new'\n", SyntaxError, "")

    def test_keyboard_interrupt_raised_by_module_code(self):
        self.check_failed_reload("VALUE = 2\nraise KeyboardInterrupt('stop')\n",
                                 KeyboardInterrupt, "stop")

    def test_system_exit_raised_by_module_code(self):
        self.check_failed_reload("VALUE = 2\nraise SystemExit('quit from plugin')\n",
                                 SystemExit, "quit from plugin")

    def test_code_that_clears_its_own_globals_then_raises(self):
        self.check_failed_reload("globals().clear()\nVALUE = 2\nraise TypeError('after clearing')\n",
                                 TypeError, "after clearing")

    def test_code_that_replaces_itself_in_sys_modules_then_raises(self):
        name = self.mod("plug")
        self.write(name, self.GOOD)
        mod = self.load(name)
        snap = self.snapshot(mod)
        self.write(name, """
            import sys, types
            sys.modules[__name__] = types.ModuleType(__name__)
            raise OSError('after replacing')
        """)
        with self.assertRaises(OSError):
            modhost.reload(mod)
        self.assertIs(sys.modules[name], mod)
        self.assertNamespaceIs(mod, snap)
        self.assertIs(modhost.load(name), mod)
        self.assertEqual(modhost.info(name).state, "failed")

    def test_custom_exception_class_defined_by_the_new_code(self):
        name = self.mod("plug")
        self.write(name, "VALUE = 1\n")
        mod = self.load(name)
        snap = self.snapshot(mod)
        self.write(name, "class PluginError(Exception):\n    pass\nVALUE = 2\nraise PluginError('custom')\n")
        with self.assertRaises(Exception) as caught:
            modhost.reload(mod)
        self.assertEqual(type(caught.exception).__name__, "PluginError")
        self.assertEqual(str(caught.exception), "custom")
        self.assertNamespaceIs(mod, snap)
        self.assertFalse(hasattr(mod, "PluginError"))

    def test_failed_reload_does_not_change_sys_modules(self):
        name = self.mod("plug")
        self.write(name, "VALUE = 1\n")
        mod = self.load(name)
        before = list(sys.modules)
        self.write(name, "import json\nVALUE = 2\nraise RuntimeError('no')\n")
        with self.assertRaises(RuntimeError):
            modhost.reload(mod)
        self.assertIs(sys.modules[name], mod)
        self.assertEqual(mod.VALUE, 1)
        # json may have been imported as a side effect; nothing else may move.
        self.assertEqual(sorted(set(sys.modules) - {"json", "json.decoder", "json.scanner",
                                                     "json.encoder", "_json"}),
                         sorted(set(before) - {"json", "json.decoder", "json.scanner",
                                               "json.encoder", "_json"}))


if __name__ == "__main__":
    unittest.main()
