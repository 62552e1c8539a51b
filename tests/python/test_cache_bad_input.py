"""Bad requests and broken files: a clear exception, and nothing else changes."""
import builtins
import os
import sys
import types
import unittest

from cache_fixtures import CacheTestCase, modhost


class BadRequests(CacheTestCase):
    def test_name_never_imported_is_an_import_error(self):
        name = self.mod("never")
        before = list(sys.modules)
        for call in (modhost.reload, modhost.info, modhost.unload, modhost.refcount,
                     modhost.referrers, modhost.is_changed):
            with self.subTest(call=call.__name__), self.assertRaises(ImportError) as caught:
                call(name)
            self.assertIn(name, str(caught.exception))
            self.assertEqual(caught.exception.name, name)
        self.assertNothingElseChanged(before)
        self.assertNotIn(name, modhost.modules())

    def test_empty_name_is_a_value_error(self):
        before = list(sys.modules)
        for call in (modhost.reload, modhost.info, modhost.unload, modhost.load):
            with self.subTest(call=call.__name__), self.assertRaises(ValueError) as caught:
                call("")
            self.assertIn("mpty", str(caught.exception))
        self.assertNothingElseChanged(before)

    def test_malformed_names_are_value_errors(self):
        before = list(sys.modules)
        for name in ("a..b", ".x", "x."):
            for call in (modhost.reload, modhost.info, modhost.unload, modhost.load):
                with self.subTest(name=name, call=call.__name__), self.assertRaises(ValueError) as caught:
                    call(name)
                self.assertIn(name, str(caught.exception))
        self.assertNothingElseChanged(before)

    def test_reload_of_a_non_module_is_a_type_error(self):
        before = list(sys.modules)
        for value in (42, None, object(), b"plug", [42], ["json", None]):
            with self.subTest(value=value), self.assertRaises(TypeError):
                modhost.reload(value)
        self.assertNothingElseChanged(before)

    # A list is a set reloaded as one: one bad member refuses all of it.
    def test_reload_of_a_list_with_a_module_never_imported_changes_nothing(self):
        name = self.mod("plug")
        self.write(name, "VALUE = 1\n")
        module = self.load(name)
        self.write(name, "VALUE = 2\n")
        before = list(sys.modules)
        for value in ([name, self.mod("never")], [], [name, ""]):
            with self.subTest(value=value), self.assertRaises((ImportError, ValueError)):
                modhost.reload(value)
        self.assertNothingElseChanged(before)
        self.assertEqual(module.VALUE, 1)
        self.assertEqual(modhost.info(name).generation, 1)

    def test_reload_of_a_module_object_not_in_sys_modules_is_an_import_error(self):
        name = self.mod("plug")
        self.write(name, "VALUE = 1\n")
        mod = self.load(name)
        del sys.modules[name]
        before = list(sys.modules)
        with self.assertRaises(ImportError):
            modhost.reload(mod)
        self.assertNothingElseChanged(before)
        self.assertEqual(mod.VALUE, 1)

    def test_module_without_a_file(self):
        name = self.mod("fileless")
        module = types.ModuleType(name)
        module.VALUE = "kept"
        sys.modules[name] = module
        snap = self.snapshot(module)
        before = list(sys.modules)

        with self.assertRaises(ModuleNotFoundError) as caught:
            modhost.reload(name)

        self.assertIn(name, str(caught.exception))
        self.assertNamespaceIs(module, snap)
        self.assertIs(sys.modules[name], module)
        self.assertNothingElseChanged(before)

    def test_reload_of_a_submodule_whose_parent_left_sys_modules(self):
        pkg = self.mod("pkg")
        self.write(pkg, "", package=True)
        self.write(pkg + ".sub", "VALUE = 1\n")
        sub = self.load(pkg + ".sub")
        del sys.modules[pkg]
        before = list(sys.modules)

        with self.assertRaises(ImportError) as caught:
            modhost.reload(pkg + ".sub")

        self.assertEqual(caught.exception.name, pkg)
        self.assertIs(sys.modules[pkg + ".sub"], sub)
        self.assertEqual(sub.VALUE, 1)
        self.assertNothingElseChanged(before)


class BrokenFiles(CacheTestCase):
    SOURCE = "VALUE = 1\ndef hook():\n    return 'old'\n"

    def setUp(self):
        super().setUp()
        self.name = self.mod("plug")
        self.path = self.write(self.name, self.SOURCE)
        self.module = self.load(self.name)
        self.snap = self.snapshot(self.module)

    def assertFailedAndUntouched(self, error_type):
        before = list(sys.modules)
        with self.assertRaises(error_type) as caught:
            modhost.reload(self.name)
        self.assertNamespaceIs(self.module, self.snap)
        self.assertEqual(self.module.hook(), "old")
        self.assertIs(sys.modules[self.name], self.module)
        self.assertNothingElseChanged(before)
        info = modhost.info(self.name)
        self.assertEqual(info.generation, 1)
        self.assertEqual(info.state, "failed")
        return caught.exception

    def test_source_file_deleted(self):
        os.remove(self.path)
        error = self.assertFailedAndUntouched(ModuleNotFoundError)
        self.assertIn(self.name, str(error))

    def test_unreadable_file(self):
        if os.geteuid() == 0:
            self.skipTest("root can read a chmod 000 file")
        os.chmod(self.path, 0)
        self.assertFailedAndUntouched(PermissionError)

    def test_file_replaced_by_a_directory(self):
        os.remove(self.path)
        os.mkdir(self.path)
        self.assertFailedAndUntouched(ImportError)

    def test_not_utf8(self):
        with open(self.path, "wb") as f:
            f.write(b"\xff\xfe x = 1\n")
        self.assertFailedAndUntouched(SyntaxError)

    def test_module_that_deletes_itself_from_sys_modules_while_executing(self):
        self.write(self.name, "import sys\nVALUE = 2\ndel sys.modules[__name__]\n")
        error = self.assertFailedAndUntouched(ImportError)
        self.assertIn(self.name, str(error))
        self.assertIn(self.name, modhost.modules())

    def test_reentrant_reload_from_the_modules_own_code(self):
        flag = "reenter_" + self.tag
        self.write(self.name, f"""
            import builtins, modhost
            VALUE = 2
            if getattr(builtins, {flag!r}, False):
                modhost.reload(__name__)
            def hook():
                return 'new'
        """)
        setattr(builtins, flag, True)

        error = self.assertFailedAndUntouched(RuntimeError)

        self.assertIn(self.name, str(error))
        # Without the flag the same source reloads fine.
        delattr(builtins, flag)
        modhost.reload(self.name)
        self.assertEqual(self.module.hook(), "new")
        self.assertEqual(modhost.info(self.name).state, "loaded")


class ReloadDuringFirstImport(CacheTestCase):
    def test_reload_called_from_the_modules_first_import_is_refused(self):
        name = self.mod("plug")
        self.write(name, "import modhost\nmodhost.reload(__name__)\nVALUE = 1\n")
        with self.assertRaises(RuntimeError) as caught:
            self.load(name)
        self.assertIn(name, str(caught.exception))
        self.assertNotIn(name, sys.modules)
        self.assertNotIn(name, modhost.modules())


class CircularFirstImport(CacheTestCase):
    def test_circular_import_works_and_records_both_edges(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, f"import {b}\nA = 'a'\ndef use():\n    return {b}.B\n")
        self.write(b, f"import {a}\nB = 'b'\ndef use():\n    return {a}.A\n")

        self.load(a)

        self.assertEqual(sys.modules[a].use(), "b")
        self.assertEqual(sys.modules[b].use(), "a")
        self.assertIn(b, modhost.dependencies(a))
        self.assertIn(a, modhost.dependencies(b))
        self.assertIn(a, modhost.dependents(b))
        self.assertIn(b, modhost.dependents(a))

    def test_partially_initialised_from_import_fails_as_in_python(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, f"from {b} import B\nA = 'a'\n")
        self.write(b, f"from {a} import A\nB = 'b'\n")
        with self.assertRaises(ImportError) as caught:
            self.load(a)
        self.assertIn("partially initialized", str(caught.exception))
        self.assertNotIn(a, sys.modules)
        self.assertNotIn(b, sys.modules)
        self.assertNotIn(a, modhost.modules())


if __name__ == "__main__":
    unittest.main()
