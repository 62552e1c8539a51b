"""modhost.reload(..., dependents=True): importers re-run too, dependencies first, all or nothing."""
import importlib
import importlib.util
import os
import sys
import time
import unittest

from cache_fixtures import CacheTestCase, modhost


class ReloadWithDependents(CacheTestCase):
    def test_importer_using_import_statement_is_reexecuted_after_its_dependency(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, self.log_code() + "VALUE = 1\n")
        self.write(b, f"import {a}\nDOUBLE = {a}.VALUE * 2\n" + self.log_code())
        self.load(b)
        self.assertEqual(self.log(), [a, b])
        self.write(a, self.log_code() + "VALUE = 5\n")

        result = modhost.reload(a, dependents=True)

        self.assertIs(result, sys.modules[a])
        self.assertEqual(self.log(), [a, b, a, b])
        self.assertEqual(sys.modules[b].DOUBLE, 10)
        self.assertEqual(modhost.info(a).generation, 2)
        self.assertEqual(modhost.info(b).generation, 2)

    def test_importer_using_from_import_gets_the_new_value(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "X = 'old'\n")
        self.write(b, f"from {a} import X\nSEEN = X\n")
        self.load(b)
        self.assertEqual(sys.modules[b].SEEN, "old")
        self.write(a, "X = 'new'\n")

        modhost.reload(a, dependents=True)

        self.assertEqual(sys.modules[b].X, "new")
        self.assertEqual(sys.modules[b].SEEN, "new")

    def test_a_dependent_no_finder_finds_again_runs_by_the_spec_it_was_loaded_with(self):
        # The plugin recipe: spec_from_file_location of a file off sys.path.
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "X = 'old'\n")
        elsewhere = os.path.join(self.dir, "elsewhere")
        os.makedirs(elsewhere)
        path = os.path.join(elsewhere, b + ".py")
        with open(path, "w") as f:
            f.write(f"from {a} import X\nSEEN = X\n" + self.log_code())
        spec = importlib.util.spec_from_file_location(b, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[b] = module
        spec.loader.exec_module(module)
        self.write(a, "X = 'new'\n")

        modhost.reload(a, dependents=True)

        self.assertEqual(module.SEEN, "new")
        self.assertEqual(self.log(), [b, b])
        self.assertEqual(modhost.info(b).generation, 2)
        # Asked for itself, it fails as importlib.reload does.
        with self.assertRaisesRegex(ModuleNotFoundError, "spec not found"):
            modhost.reload(b)
        with self.assertRaisesRegex(ModuleNotFoundError, "spec not found"):
            importlib.reload(module)

    def test_without_dependents_only_the_target_runs(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, self.log_code() + "X = 'old'\n")
        self.write(b, f"from {a} import X\n" + self.log_code())
        self.load(b)
        self.write(a, self.log_code() + "X = 'new'\n")

        modhost.reload(a)

        self.assertEqual(self.log(), [a, b, a])
        self.assertEqual(sys.modules[b].X, "old")
        self.assertEqual(modhost.info(b).generation, 1)

    def test_chain_runs_dependencies_first(self):
        a, b, c = self.mod("a"), self.mod("b"), self.mod("c")
        self.write(a, self.log_code() + "N = 1\n")
        self.write(b, f"import {a}\nN = {a}.N + 1\n" + self.log_code())
        self.write(c, f"import {b}\nN = {b}.N + 1\n" + self.log_code())
        self.load(c)
        del self.log()[:]
        self.write(a, self.log_code() + "N = 100\n")

        modhost.reload(a, dependents=True)

        self.assertEqual(self.log(), [a, b, c])
        self.assertEqual(sys.modules[c].N, 102)

    def test_diamond_runs_each_module_once_and_the_shared_importer_last(self):
        a, b, c, d = (self.mod(x) for x in "abcd")
        self.write(a, self.log_code() + "N = 1\n")
        self.write(b, f"import {a}\nN = {a}.N * 2\n" + self.log_code())
        self.write(c, f"import {a}\nN = {a}.N * 3\n" + self.log_code())
        self.write(d, f"import {b}, {c}\nN = {b}.N + {c}.N\n" + self.log_code())
        self.load(d)
        del self.log()[:]
        self.write(a, self.log_code() + "N = 10\n")

        modhost.reload(a, dependents=True)

        order = self.log()
        self.assertEqual(sorted(order), sorted([a, b, c, d]))
        self.assertEqual(order[0], a)
        self.assertEqual(order[-1], d)
        self.assertEqual(sys.modules[d].N, 50)

    def test_reload_of_a_middle_module_leaves_its_own_dependency_alone(self):
        a, b, c = self.mod("a"), self.mod("b"), self.mod("c")
        self.write(a, self.log_code() + "N = 1\n")
        self.write(b, f"import {a}\nN = {a}.N + 1\n" + self.log_code())
        self.write(c, f"import {b}\nN = {b}.N + 1\n" + self.log_code())
        self.load(c)
        del self.log()[:]

        modhost.reload(b, dependents=True)

        self.assertEqual(self.log(), [b, c])
        self.assertEqual(modhost.info(a).generation, 1)

    def test_cycle_reloads_as_one_unit(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, f"import {b}\nTAG = 'a1'\n" + self.log_code())
        self.write(b, f"import {a}\nTAG = 'b1'\n" + self.log_code())
        self.load(a)
        self.assertEqual(sorted(self.log()), sorted([a, b]))
        del self.log()[:]
        self.write(a, f"import {b}\nTAG = 'a2'\n" + self.log_code())
        self.write(b, f"import {a}\nTAG = 'b2'\n" + self.log_code())

        modhost.reload(a, dependents=True)

        self.assertEqual(self.log(), [a, b])  # each once, the requested module leads its unit
        self.assertEqual((sys.modules[a].TAG, sys.modules[b].TAG), ("a2", "b2"))
        self.assertEqual(modhost.info(a).generation, 2)
        self.assertEqual(modhost.info(b).generation, 2)


    def test_a_submodule_importing_a_sibling_relatively_runs_before_its_package(self):
        # pkg/__init__ takes Err from pkg.core; pkg.core does `from . import util`,
        # which goes through the package without running its code.
        pkg = self.mod("pkg")
        self.write(pkg, "from .core import Err\n" + self.log_code(), package=True)
        self.write(pkg + ".core", "from . import util\nclass Err(Exception):\n    pass\n" + self.log_code())
        self.write(pkg + ".util", "OK = 1\n" + self.log_code())
        self.load(pkg)
        self.assertEqual(self.log(), [pkg + ".util", pkg + ".core", pkg])
        del self.log()[:]
        self.write(pkg + ".util", "OK = 2\n" + self.log_code())

        report = modhost.reload(pkg + ".util", dependents=True)

        self.assertEqual(self.log(), [pkg + ".util", pkg + ".core", pkg])
        package = sys.modules[pkg]
        self.assertIs(package.Err, package.core.Err)
        self.assertEqual(package.core.util.OK, 2)
        self.assertIs(report, sys.modules[pkg + ".util"])

    def test_failing_dependent_rolls_back_every_module_and_its_exception_propagates(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "VALUE = 1\ndef f():\n    return 'a old'\n")
        self.write(b, f"import {a}\nSEEN = {a}.VALUE\ndef g():\n    return 'b old'\n")
        self.load(b)
        mod_a, mod_b = sys.modules[a], sys.modules[b]
        snap_a, snap_b = self.snapshot(mod_a), self.snapshot(mod_b)
        self.write(a, "VALUE = 2\nNEW_IN_A = True\ndef f():\n    return 'a new'\n")
        self.write(b, f"import {a}\nSEEN = {a}.VALUE\ndef g():\n    return 'b new'\n"
                      "raise LookupError('dependent broke')\n")

        with self.assertRaises(LookupError) as caught:
            modhost.reload(a, dependents=True)

        self.assertEqual(str(caught.exception), "dependent broke")
        self.assertNamespaceIs(mod_a, snap_a)
        self.assertNamespaceIs(mod_b, snap_b)
        self.assertEqual(mod_a.f(), "a old")
        self.assertEqual(mod_b.g(), "b old")
        self.assertFalse(hasattr(mod_a, "NEW_IN_A"))
        self.assertIs(sys.modules[a], mod_a)
        self.assertIs(sys.modules[b], mod_b)
        self.assertEqual(modhost.info(a).generation, 1)
        self.assertEqual(modhost.info(b).generation, 1)
        self.assertEqual(modhost.info(b).state, "failed")
        self.assertIn("LookupError", modhost.info(b).last_error)
        # The graph survives the rollback: b still depends on a.
        self.assertIn(b, modhost.dependents(a))

        # Fixing the dependent makes the same request succeed.
        self.write(b, f"import {a}\nSEEN = {a}.VALUE\ndef g():\n    return 'b new'\n")
        modhost.reload(a, dependents=True)
        self.assertEqual((mod_a.f(), mod_b.g(), mod_b.SEEN), ("a new", "b new", 2))


    def test_failing_target_runs_no_dependent(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, self.log_code() + "VALUE = 1\n")
        self.write(b, f"import {a}\n" + self.log_code())
        self.load(b)
        del self.log()[:]
        self.write(a, self.log_code() + "VALUE = 2\nraise NameError('target broke')\n")

        with self.assertRaises(NameError):
            modhost.reload(a, dependents=True)

        self.assertEqual(self.log(), [a])
        self.assertEqual(sys.modules[a].VALUE, 1)
        self.assertEqual(modhost.info(a).state, "failed")
        self.assertEqual(modhost.info(b).generation, 1)
        self.assertEqual(modhost.info(b).state, "loaded")

    def test_failure_at_the_end_of_a_chain_rolls_back_the_whole_chain(self):
        a, b, c = self.mod("a"), self.mod("b"), self.mod("c")
        self.write(a, "N = 1\n")
        self.write(b, f"import {a}\nN = {a}.N + 1\n")
        self.write(c, f"import {b}\nN = {b}.N + 1\n")
        self.load(c)
        snaps = {n: self.snapshot(sys.modules[n]) for n in (a, b, c)}
        self.write(a, "N = 100\n")
        self.write(c, f"import {b}\nN = {b}.N + 1\nraise ImportError('c broke')\n")

        with self.assertRaises(ImportError) as caught:
            modhost.reload(a, dependents=True)

        self.assertEqual(str(caught.exception), "c broke")
        for n in (a, b, c):
            self.assertNamespaceIs(sys.modules[n], snaps[n])
            self.assertEqual(modhost.info(n).generation, 1)
        self.assertEqual((sys.modules[a].N, sys.modules[b].N, sys.modules[c].N), (1, 2, 3))

    def test_dependent_that_left_sys_modules_is_not_reexecuted(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "VALUE = 1\n")
        self.write(b, f"import {a}\n" + self.log_code())
        self.load(b)
        del self.log()[:]
        del sys.modules[b]
        self.write(a, "VALUE = 2\n")

        modhost.reload(a, dependents=True)

        self.assertEqual(self.log(), [])
        self.assertNotIn(b, sys.modules)
        self.assertEqual(sys.modules[a].VALUE, 2)

    def test_a_dependent_caught_half_saved_is_not_rerun_empty(self):
        # A save truncates the file before it writes the new text; a reload
        # with dependents that read it then ran it empty and committed the
        # dependent without a single global (the race harness's "import
        # missing its globals").
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "def value():\n    return 1\n")
        self.write(b, f"from {a} import value\nRESULT = value()\n")
        self.load(b)
        self.write(a, "def value():\n    return 2\n")
        self.write(b, "")

        for deep in (False, True):
            with self.subTest(deep=deep), self.assertRaises(ImportError) as caught:
                modhost.reload(a, deep=deep, dependents=True)
            self.assertIn(f"the source of '{b}'", str(caught.exception))
            self.assertIn("is empty", str(caught.exception))
            self.assertEqual(sys.modules[b].RESULT, 1)
            self.assertEqual(sys.modules[a].value(), 1)
            self.assertEqual(modhost.info(b).generation, 1)

        # Once the save completes, the same reload goes through.
        self.write(b, f"from {a} import value\nRESULT = value()\n")
        modhost.reload(a, dependents=True)
        self.assertEqual(sys.modules[b].RESULT, 2)

    def test_a_source_left_empty_reloads_empty(self):
        a = self.mod("a")
        self.write(a, "VALUE = 1\n")
        self.load(a)
        self.write(a, "")
        with self.assertRaises(ImportError):
            modhost.reload(a)
        time.sleep(3.1)  # the rule's quiet time: a save in progress would have written by now
        modhost.reload(a, deep=True)
        self.assertFalse(hasattr(sys.modules[a], "VALUE"))
        self.assertEqual(modhost.info(a).generation, 2)


class ReloadDependentsAsNeeded(CacheTestCase):
    """dependents='as_needed' (what the autoreloader does): a dependent re-runs
    only when deep update's in-place patching cannot reach what it kept."""

    def reload(self, name):
        modhost.reload(name, deep=True, dependents="as_needed")
        return modhost.last_reload()

    def test_a_dependent_using_the_module_only_in_functions_is_not_rerun_and_calls_the_new_code(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "LIMIT = 1\ndef f():\n    return 'old'\n")
        self.write(b, f"import {a}\ndef g():\n    return {a}.f()\n" + self.log_code())
        self.load(b)
        self.write(a, "LIMIT = 1\ndef f():\n    return 'new'\n")

        report = self.reload(a)

        self.assertEqual(report.reexecuted, [a])
        self.assertEqual(report.spared, [b])
        self.assertEqual(self.log(), [b], "b's code ran again")
        self.assertEqual(sys.modules[b].g(), "new")
        self.assertEqual(modhost.info(b).generation, 1)

    def test_a_dependent_computing_a_top_level_value_from_a_changed_constant_is_rerun(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "CONST = 1\n")
        self.write(b, f"import {a}\nX = {a}.CONST * 2\n")
        self.load(b)
        self.write(a, "CONST = 21\n")

        report = self.reload(a)

        self.assertEqual(report.reexecuted, [a, b])
        self.assertEqual(sys.modules[b].X, 42)

    def test_a_dependent_reading_an_unchanged_constant_is_not_rerun(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "CONST = 1\nNAMES = ['x', 'y']\ndef f():\n    return 1\n")
        self.write(b, f"import {a}\nX = {a}.CONST * 2\nN = list({a}.NAMES)\n")
        self.load(b)
        self.write(a, "CONST = 1\nNAMES = ['x', 'y']\ndef f():\n    return 2\n")

        self.assertEqual(self.reload(a).reexecuted, [a])

    def test_a_from_import_of_a_changed_value_is_rerun_not_just_rebound(self):
        # Rebinding LIMIT alone would leave DOUBLE computed from the old value.
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "LIMIT = 1\n")
        self.write(b, f"from {a} import LIMIT\nDOUBLE = LIMIT * 2\n")
        self.load(b)
        self.write(a, "LIMIT = 21\n")

        report = self.reload(a)

        self.assertEqual(report.reexecuted, [a, b])
        self.assertEqual((sys.modules[b].LIMIT, sys.modules[b].DOUBLE), (21, 42))

    def test_a_from_import_of_a_patched_function_is_not_rerun_and_runs_the_new_code(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "def f():\n    return 'old'\n")
        self.write(b, f"from {a} import f\nHANDLERS = {{'go': f}}\n")
        self.load(b)
        self.write(a, "def f():\n    return 'new'\n")

        self.assertEqual(self.reload(a).reexecuted, [a])
        self.assertEqual(sys.modules[b].f(), "new")
        self.assertEqual(sys.modules[b].HANDLERS["go"](), "new")

    def test_a_dependent_that_registered_into_state_the_new_code_made_again_is_rerun(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "HANDLERS = []\ndef register(f):\n    HANDLERS.append(f)\n    return f\n")
        self.write(b, f"import {a}\n@{a}.register\ndef handler():\n    return 1\n")
        self.load(b)
        self.write(a, "HANDLERS = []\ndef register(f):\n    HANDLERS.append(f)\n    f.registered = True\n    return f\n")

        self.assertEqual(self.reload(a).reexecuted, [a, b])
        self.assertEqual([h.__name__ for h in sys.modules[a].HANDLERS], ["handler"])

    def test_a_dependent_that_is_spared_spares_its_own_dependents(self):
        a, b, c = self.mod("a"), self.mod("b"), self.mod("c")
        self.write(a, "CONST = 1\ndef f():\n    return 1\n")
        self.write(b, f"import {a}\ndef g():\n    return {a}.f()\n")
        self.write(c, f"import {b}\nfrom {b} import g\nVALUE = g\n")  # c reads b, never a
        self.load(c)
        self.write(a, "CONST = 2\ndef f():\n    return 2\n")

        report = self.reload(a)

        self.assertEqual(report.reexecuted, [a])
        self.assertEqual(sorted(report.spared), sorted([b, c]))
        self.assertEqual(sys.modules[c].VALUE(), 2)

    def test_a_name_that_disappeared_reruns_its_importer_and_the_failure_rolls_back_both(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "LIMIT = 1\ndef f():\n    return 'old'\n")
        self.write(b, f"from {a} import LIMIT\n")
        self.load(b)
        module_a = sys.modules[a]
        old_f = module_a.f
        self.write(a, "def f():\n    return 'new'\n")

        with self.assertRaises(ImportError):
            self.reload(a)

        self.assertEqual(modhost.last_reload().failed_module, b)
        self.assertEqual(module_a.LIMIT, 1)
        self.assertIs(module_a.f, old_f)
        self.assertEqual(old_f(), "old", "the set rolled back as one")
        self.assertEqual(modhost.info(a).generation, 1)

    def test_star_import_of_a_module_whose_values_changed_is_rerun(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "LIMIT = 1\n")
        self.write(b, f"from {a} import *\n")
        self.load(b)
        self.write(a, "LIMIT = 2\nEXTRA = 3\n")

        self.assertEqual(self.reload(a).reexecuted, [a, b])
        self.assertEqual((sys.modules[b].LIMIT, sys.modules[b].EXTRA), (2, 3))

    def test_dependents_true_still_reruns_every_dependent(self):
        a, b = self.mod("a"), self.mod("b")
        self.write(a, "def f():\n    return 1\n")
        self.write(b, f"import {a}\ndef g():\n    return {a}.f()\n")
        self.load(b)
        self.write(a, "def f():\n    return 2\n")

        modhost.reload(a, deep=True, dependents=True)

        self.assertEqual(modhost.last_reload().reexecuted, [a, b])

    def test_a_bad_dependents_mode_is_a_value_error(self):
        a = self.mod("a")
        self.write(a, "X = 1\n")
        self.load(a)
        with self.assertRaises(ValueError):
            modhost.reload(a, dependents="some")
        self.assertEqual(modhost.info(a).generation, 1)


if __name__ == "__main__":
    unittest.main()
