"""modhost.load, modules, info and on_reload."""
import sys
import unittest

from cache_fixtures import CacheTestCase, modhost


class LoadAndModules(CacheTestCase):
    def test_load_imports_and_returns_the_module(self):
        name = self.mod("plug")
        self.write(name, self.log_code() + "VALUE = 1\n")

        module = modhost.load(name)

        self.assertIs(module, sys.modules[name])
        self.assertEqual(module.VALUE, 1)
        self.assertIn(name, modhost.modules())
        self.assertEqual(self.log(), [name])

    def test_load_of_a_loaded_module_returns_it_without_running_it_again(self):
        name = self.mod("plug")
        self.write(name, self.log_code() + "VALUE = 1\n")
        first = modhost.load(name)
        self.assertIs(modhost.load(name), first)
        self.assertEqual(self.log(), [name])

    def test_load_of_a_submodule_loads_its_parents(self):
        pkg = self.mod("pkg")
        self.write(pkg, "", package=True)
        self.write(pkg + ".sub", "VALUE = 1\n")

        sub = modhost.load(pkg + ".sub")

        self.assertIs(sub, sys.modules[pkg + ".sub"])
        self.assertIn(pkg, modhost.modules())
        self.assertIn(pkg + ".sub", modhost.modules())

    def test_load_of_a_missing_module_is_module_not_found(self):
        name = self.mod("absent")
        before = list(sys.modules)
        with self.assertRaises(ModuleNotFoundError):
            modhost.load(name)
        self.assertNothingElseChanged(before)
        self.assertNotIn(name, modhost.modules())

    def test_load_propagates_the_modules_own_error(self):
        name = self.mod("broken")
        self.write(name, "raise ArithmeticError('at import')\n")
        with self.assertRaises(ArithmeticError):
            modhost.load(name)
        self.assertNotIn(name, sys.modules)
        self.assertNotIn(name, modhost.modules())

    def test_modules_follows_sys_modules(self):
        name = self.mod("plug")
        self.write(name, "VALUE = 1\n")
        self.load(name)  # a plain import is tracked too
        self.assertIn(name, modhost.modules())
        self.assertEqual(modhost.modules(), sorted(modhost.modules()))
        self.assertIn("sys", modhost.modules())

        del sys.modules[name]  # behind the cache's back

        self.assertNotIn(name, modhost.modules())
        with self.assertRaises(ImportError):
            modhost.info(name)

    def test_a_module_replaced_in_sys_modules_is_followed(self):
        name = self.mod("plug")
        self.write(name, "VALUE = 1\n")
        self.load(name)
        self.write(name, "VALUE = 2\n")
        del sys.modules[name]
        fresh = self.load(name)

        self.assertEqual(fresh.VALUE, 2)
        self.assertIs(modhost.load(name), fresh)
        self.assertEqual(modhost.info(name).generation, 1)
        modhost.reload(name)
        self.assertIs(sys.modules[name], fresh)
        self.assertEqual(modhost.info(name).generation, 2)

    def test_info_of_a_fresh_module(self):
        name = self.mod("plug")
        path = self.write(name, "VALUE = 1\n")
        self.load(name)
        info = modhost.info(name)
        self.assertEqual(info.name, name)
        self.assertEqual(info.path, path)
        self.assertEqual(info.kind, "source")
        self.assertEqual(info.state, "loaded")
        self.assertEqual(info.generation, 1)
        self.assertTrue(info.reloadable)
        self.assertIsNone(info.last_error)
        self.assertIn(name, repr(info))
        self.assertEqual(modhost.info(sys.modules[name]).name, name)


class OnReload(CacheTestCase):
    def setUp(self):
        super().setUp()
        self.calls = []
        self.unsubscribe = modhost.on_reload(lambda name, generation: self.calls.append((name, generation)))
        self.addCleanup(self.unsubscribe)
        self.name = self.mod("plug")
        self.write(self.name, "VALUE = 1\n")
        self.load(self.name)

    def mine(self):
        return [call for call in self.calls if self.tag in call[0]]

    def test_called_after_a_successful_reload(self):
        self.write(self.name, "VALUE = 2\n")
        modhost.reload(self.name)
        self.assertEqual(self.mine(), [(self.name, 2)])
        modhost.reload(self.name)
        self.assertEqual(self.mine(), [(self.name, 2), (self.name, 3)])

    def test_callback_sees_the_new_code(self):
        seen = []
        unsubscribe = modhost.on_reload(lambda name, generation: seen.append(sys.modules[name].VALUE)
                                        if name == self.name else None)
        self.addCleanup(unsubscribe)
        self.write(self.name, "VALUE = 2\n")
        modhost.reload(self.name)
        self.assertEqual(seen, [2])

    def test_not_called_after_a_failed_reload(self):
        self.write(self.name, "raise ValueError('broken')\n")
        with self.assertRaises(ValueError):
            modhost.reload(self.name)
        self.assertEqual(self.mine(), [])

    def test_not_called_after_unsubscribing(self):
        self.unsubscribe()
        modhost.reload(self.name)
        self.assertEqual(self.mine(), [])

    def test_called_for_every_module_a_dependents_reload_reexecuted(self):
        # Each re-executed module gets a new generation; a host that rebinds
        # per-module state on on_reload must hear about each of them.
        user = self.mod("user")
        self.write(user, f"import {self.name}\nSEEN = {self.name}.VALUE\n")
        self.load(user)
        self.write(self.name, "VALUE = 2\n")

        modhost.reload(self.name, dependents=True)

        self.assertEqual(modhost.info(user).generation, 2)
        self.assertEqual(sorted(self.mine()), sorted([(self.name, 2), (user, 2)]))

    def test_a_failing_callback_does_not_fail_the_reload(self):
        def bad(name, generation):
            raise RuntimeError("callback broke")
        unsubscribe = modhost.on_reload(bad)
        self.addCleanup(unsubscribe)
        saved_hook = sys.unraisablehook
        unraisable = []
        sys.unraisablehook = unraisable.append
        self.addCleanup(setattr, sys, "unraisablehook", saved_hook)
        self.write(self.name, "VALUE = 2\n")

        module = modhost.reload(self.name)

        self.assertEqual(module.VALUE, 2)
        self.assertEqual(modhost.info(self.name).generation, 2)
        self.assertEqual(self.mine(), [(self.name, 2)])
        self.assertTrue(any(isinstance(u.exc_value, RuntimeError) for u in unraisable))


class Subscribe(CacheTestCase):
    """modhost.subscribe: every reload outcome, as one report per reload call."""

    def setUp(self):
        super().setUp()
        self.reports = []
        token = modhost.subscribe(self.reports.append)
        self.addCleanup(modhost.unsubscribe, token)
        self.token = token
        self.name = self.mod("plug")
        self.write(self.name, "VALUE = 1\n")
        self.load(self.name)

    def mine(self):
        return [r for r in self.reports if self.tag in r.name]

    def test_a_reload_and_a_failure_with_its_type_message_file_and_line(self):
        self.write(self.name, "VALUE = 2\n")
        modhost.reload(self.name)
        path = self.write(self.name, "VALUE = 3\n\nraise KeyError('no route')\n")
        with self.assertRaises(KeyError):
            modhost.reload(self.name)

        reloaded, failed = self.mine()
        self.assertEqual((reloaded.outcome, reloaded.generation, reloaded.error), ("reloaded", 2, None))
        self.assertEqual(reloaded.targets, [self.name])
        self.assertEqual(failed.outcome, "failed")
        self.assertTrue(failed.rolled_back)
        self.assertEqual((failed.error_type, failed.error_message), ("KeyError", "'no route'"))
        self.assertEqual((failed.error_file, failed.error_line), (path, 3))
        self.assertEqual(failed.failed_module, self.name)
        self.assertEqual(sys.modules[self.name].VALUE, 2)

    def test_a_syntax_error_names_its_own_line(self):
        path = self.write(self.name, "VALUE = 2\ndef broken(:\n")
        with self.assertRaises(SyntaxError):
            modhost.reload(self.name)
        (failed,) = self.mine()
        self.assertEqual((failed.error_type, failed.error_file, failed.error_line), ("SyntaxError", path, 2))

    def test_a_set_is_one_report(self):
        other = self.mod("other")
        self.write(other, "VALUE = 1\n")
        self.load(other)
        self.write(self.name, "VALUE = 2\n")
        self.write(other, "VALUE = 2\n")
        modhost.reload([self.name, other])
        (report,) = self.mine()
        self.assertEqual(report.targets, [self.name, other])
        self.assertEqual(sorted(report.reexecuted), sorted([self.name, other]))

    def test_unchanged_is_not_told_and_unsubscribe_stops_it(self):
        modhost.reload(self.name, deep=True)  # same source: nothing runs
        self.assertEqual(self.mine(), [])
        modhost.unsubscribe(self.token)
        self.write(self.name, "VALUE = 2\n")
        modhost.reload(self.name)
        self.assertEqual(self.mine(), [])

    def test_a_kept_report_does_not_keep_the_module_alive(self):
        self.write(self.name, "VALUE = 2\n")
        modhost.reload(self.name)
        self.assertEqual(len(self.mine()), 1)
        modhost.unload(self.name)  # refused if the report held the module


if __name__ == "__main__":
    unittest.main()
