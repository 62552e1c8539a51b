"""Change detection (is_changed, changed) and modules that cannot be reloaded."""
import importlib
import os
import sys
import unittest
import zipfile
import zipimport

from cache_fixtures import CacheTestCase, modhost


class ChangeDetection(CacheTestCase):
    def setUp(self):
        super().setUp()
        self.name = self.mod("plug")
        self.path = self.write(self.name, "VALUE = 1\n")
        self.load(self.name)

    def test_not_changed_right_after_import(self):
        self.assertFalse(modhost.is_changed(self.name))
        self.assertNotIn(self.name, modhost.changed())

    def test_an_edit_is_a_change(self):
        self.write(self.name, "VALUE = 2  # edited\n")
        self.assertTrue(modhost.is_changed(self.name))
        self.assertTrue(modhost.is_changed(sys.modules[self.name]))
        self.assertIn(self.name, modhost.changed())

    def test_changed_lists_only_the_edited_modules(self):
        other = self.mod("other")
        self.write(other, "VALUE = 1\n")
        self.load(other)
        self.write(self.name, "VALUE = 2  # edited\n")

        changed = modhost.changed()

        self.assertIn(self.name, changed)
        self.assertNotIn(other, changed)
        self.assertEqual(changed, sorted(changed))

    def test_touch_is_not_a_change(self):
        st = os.stat(self.path)
        later = st.st_mtime_ns + 5_000_000_000
        os.utime(self.path, ns=(later, later))
        self.assertFalse(modhost.is_changed(self.name))
        self.assertNotIn(self.name, modhost.changed())
        # Rewriting the very same bytes is a touch too.
        self.write(self.name, "VALUE = 1\n")
        self.assertFalse(modhost.is_changed(self.name))

    def test_same_size_edit_with_mtime_restored_is_a_change(self):
        self.write_same_stat(self.name, "VALUE = 7\n")
        self.assertTrue(modhost.is_changed(self.name))
        self.assertIn(self.name, modhost.changed())

    def test_package_init_edit_is_a_change(self):
        pkg = self.mod("pkg")
        self.write(pkg, "VALUE = 1\n", package=True)
        self.load(pkg)
        self.assertFalse(modhost.is_changed(pkg))
        self.write(pkg, "VALUE = 22\n", package=True)
        self.assertTrue(modhost.is_changed(pkg))
        self.assertIn(pkg, modhost.changed())

    def test_deleted_file_is_a_change(self):
        os.remove(self.path)
        self.assertTrue(modhost.is_changed(self.name))
        self.assertIn(self.name, modhost.changed())
        # The running code is not affected.
        self.assertEqual(sys.modules[self.name].VALUE, 1)

    def test_reload_makes_it_unchanged_again(self):
        self.write(self.name, "VALUE = 2  # edited\n")
        modhost.reload(self.name)
        self.assertFalse(modhost.is_changed(self.name))
        self.assertNotIn(self.name, modhost.changed())

    def test_failed_reload_leaves_it_changed(self):
        self.write(self.name, "raise ValueError('broken')\n")
        with self.assertRaises(ValueError):
            modhost.reload(self.name)
        self.assertTrue(modhost.is_changed(self.name))

    def test_info_fingerprint_describes_the_running_file(self):
        info = modhost.info(self.name)
        st = os.stat(self.path)
        self.assertEqual(info.path, self.path)
        self.assertEqual(info.kind, "source")
        self.assertTrue(info.reloadable)
        self.assertEqual(info.fingerprint.size, st.st_size)
        self.assertEqual(info.fingerprint.mtime_ns, st.st_mtime_ns)
        self.assertEqual(info.fingerprint.inode, st.st_ino)


class ChangeDetectionAtFirstImport(CacheTestCase):
    """The fingerprint must describe the source that was compiled, not the file after the import."""

    def test_file_edited_while_the_module_was_being_imported(self):
        # Deterministic stand-in for an editor saving while the import runs:
        # the module rewrites its own file during its first execution.
        name = self.mod("plug")
        self.write(name, """
            VALUE = 1
            with open(__file__, "w") as f:
                f.write("VALUE = 2\\n")
        """)
        module = self.load(name)
        self.assertEqual(module.VALUE, 1)

        self.assertTrue(modhost.is_changed(name))
        self.assertIn(name, modhost.changed())

    def test_stale_bytecode_cache_at_first_import_is_not_hidden(self):
        # Python's own import trusts a bytecode cache validated by whole-second
        # mtime and size. Either the cache makes the import run the source on
        # disk, or is_changed must report that what runs differs from the disk.
        saved = sys.dont_write_bytecode
        sys.dont_write_bytecode = False
        self.addCleanup(setattr, sys, "dont_write_bytecode", saved)
        name = self.mod("plug")
        self.write(name, "VALUE = 1111\n")
        self.load(name)
        del sys.modules[name]  # e.g. a fresh process: the bytecode cache stays on disk
        self.write_same_stat(name, "VALUE = 2222\n")

        module = self.load(name)

        self.assertTrue(module.VALUE == 2222 or modhost.is_changed(name),
                        "old code (VALUE=%r) runs and is_changed() is False" % module.VALUE)

    def test_touch_before_the_first_query_is_not_a_change(self):
        # The stat moved between the import and the cache's first look at the
        # module: the source is compared with the code that ran when asked.
        name = self.mod("plug")
        path = self.write(name, "VALUE = 1\n")
        self.load(name)
        later = os.stat(path).st_mtime_ns + 5_000_000_000
        os.utime(path, ns=(later, later))

        self.assertFalse(modhost.is_changed(name))
        self.assertEqual(modhost.reload(name, deep=True).VALUE, 1)
        self.assertEqual(modhost.last_reload().outcome, "unchanged")

    def test_edit_before_the_first_reload_compiles_the_source_once(self):
        # Import, one edit, reload: the reload tells the edit from a touch by
        # compiling the source, and runs that code rather than compiling the
        # same bytes again (each compile of a large module costs what
        # importlib.reload's whole run does).
        name = self.mod("plug")
        path = self.write(name, "VALUE = 1\n")
        self.load(name)
        self.append(name, "VALUE = 2\n")
        compiled = []
        counting = [True]
        sys.addaudithook(lambda event, args: counting[0] and event == "compile" and args[1] == path
                         and compiled.append(args[1]))
        self.addCleanup(counting.__setitem__, 0, False)  # audit hooks cannot be removed

        module = modhost.reload(name, deep=True)

        self.assertEqual(module.VALUE, 2)
        self.assertEqual(len(compiled), 1, compiled)
        self.assertFalse(modhost.is_changed(name))


def first_loaded_extension():
    for candidate in ("_json", "_decimal", "_ctypes", "_bz2", "_lzma", "_hashlib", "_ssl", "_asyncio"):
        try:
            importlib.import_module(candidate)
        except ImportError:
            continue
        if modhost.info(candidate).kind == "extension":
            return candidate
    for name in modhost.modules():
        if modhost.info(name).kind == "extension":
            return name
    return None


class NotReloadable(unittest.TestCase):
    def test_extension_module_is_not_reloadable_and_reload_is_a_no_op(self):
        name = first_loaded_extension()
        if name is None:
            self.skipTest("no extension module available on this installation")
        module = sys.modules[name]
        info = modhost.info(name)
        self.assertEqual(info.kind, "extension")
        self.assertFalse(info.reloadable)
        self.assertTrue(info.path.endswith(".so"), info.path)
        snap = dict(vars(module))

        self.assertIs(modhost.reload(name), module)
        self.assertIs(modhost.reload(module), module)

        self.assertIs(sys.modules[name], module)
        self.assertEqual(modhost.info(name).generation, info.generation)
        self.assertEqual(modhost.info(name).state, "loaded")
        self.assertFalse(modhost.is_changed(name))
        # As with importlib.reload, only the import attributes (__spec__, __loader__) are renewed.
        for key, value in snap.items():
            if not key.startswith("__"):
                self.assertIs(vars(module)[key], value, key)

    def test_builtin_module_reload_is_a_no_op(self):
        import itertools
        info = modhost.info("itertools")
        self.assertEqual(info.kind, "built-in")
        self.assertFalse(info.reloadable)
        self.assertIsNone(info.path)

        self.assertIs(modhost.reload("itertools"), itertools)

        self.assertEqual(list(itertools.islice(itertools.count(), 3)), [0, 1, 2])
        self.assertEqual(modhost.info("itertools").generation, info.generation)
        self.assertFalse(modhost.is_changed("itertools"))
        self.assertNotIn("itertools", modhost.changed())

    def test_interpreter_modules_are_refused_with_a_reason(self):
        for name in ("sys", "builtins", "__main__", "modhost"):
            with self.subTest(name=name):
                module = sys.modules[name]
                with self.assertRaises(ValueError) as caught:
                    modhost.reload(name)
                self.assertIn(name, str(caught.exception))
                self.assertIn(":", str(caught.exception))  # "...refuses to reload 'sys': <reason>"
                with self.assertRaises(ValueError):
                    modhost.reload(module)
                self.assertIs(sys.modules[name], module)
                self.assertFalse(modhost.info(name).reloadable)
        self.assertIn("__main__", sys.modules)
        self.assertIs(sys.modules["__main__"].NotReloadable, NotReloadable)


IMPORT_MACHINERY = ("_frozen_importlib", "_frozen_importlib_external", "importlib._bootstrap",
                    "importlib._bootstrap_external", "zipimport", "_imp")


class ImportMachinery(CacheTestCase):
    def test_the_import_machinery_is_refused_and_imports_keep_working(self):
        # reload('_frozen_importlib') ran a second import system and every
        # later import failed; reload('zipimport') replaced the zipimporter
        # class sys.path_hooks holds, and reported "not reloadable".
        zipimporter = zipimport.zipimporter
        for name in IMPORT_MACHINERY:
            with self.subTest(name=name):
                module = importlib.import_module(name)
                namespace = self.snapshot(module)
                with self.assertRaises(ValueError) as caught:
                    modhost.reload(name)
                self.assertIn("modhost refuses to reload '%s': it is part of the import machinery" % name,
                              str(caught.exception))
                with self.assertRaisesRegex(ValueError, "import machinery"):
                    modhost.reload(module, deep=True)
                self.assertIs(sys.modules[name], module)
                self.assertNamespaceIs(module, namespace)
                self.assertFalse(modhost.info(name).reloadable)
        self.assertIs(zipimport.zipimporter, zipimporter)
        self.assertIn(zipimporter, sys.path_hooks)
        # Imports still work: from a directory, and from a zip file.
        name = self.mod("after")
        self.write(name, "VALUE = 'imported'\n")
        self.assertEqual(self.load(name).VALUE, "imported")
        zipped = self.mod("zipped")
        archive = os.path.join(self.dir, "plugins.zip")
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr(zipped + ".py", "VALUE = 'from the zip'\n")
        sys.path.insert(0, archive)
        self.addCleanup(lambda: sys.path.remove(archive))
        self.assertEqual(self.load(zipped).VALUE, "from the zip")


if __name__ == "__main__":
    unittest.main()
