"""The import graph recorded while modules' top-level code runs."""
import sys
import unittest

from cache_fixtures import CacheTestCase, modhost


class ImportGraph(CacheTestCase):
    def test_import_statement_records_both_directions(self):
        app, x = self.mod("app"), self.mod("x")
        self.write(x, "VALUE = 1\n")
        self.write(app, f"import {x}\n")
        self.load(app)

        self.assertIn(x, modhost.dependencies(app))
        self.assertIn(app, modhost.dependents(x))
        self.assertIn(x, modhost.info(app).dependencies)
        self.assertIn(app, modhost.info(x).dependents)
        self.assertNotIn(app, modhost.dependencies(x))

    def test_accepts_module_objects_too(self):
        app, x = self.mod("app"), self.mod("x")
        self.write(x, "VALUE = 1\n")
        self.write(app, f"import {x}\n")
        self.load(app)
        self.assertEqual(modhost.dependencies(sys.modules[app]), modhost.dependencies(app))
        self.assertEqual(modhost.dependents(sys.modules[x]), modhost.dependents(x))

    def test_import_of_a_submodule(self):
        app, pkg = self.mod("app"), self.mod("pkg")
        self.write(pkg, "", package=True)
        self.write(pkg + ".sub", "VALUE = 1\n")
        self.write(app, f"import {pkg}.sub\n")
        self.load(app)

        self.assertIn(pkg + ".sub", modhost.dependencies(app))
        self.assertIn(app, modhost.dependents(pkg + ".sub"))

    def test_from_import_of_an_already_loaded_module(self):
        app, x = self.mod("app"), self.mod("x")
        self.write(x, "def y():\n    return 1\nZ = 2\n")
        self.load(x)
        self.write(app, f"from {x} import y, Z\n")
        self.load(app)

        self.assertIn(x, modhost.dependencies(app))
        self.assertIn(app, modhost.dependents(x))
        imports = modhost.from_imports(app)
        self.assertEqual(sorted(imports[x]), ["Z", "y"])

    def test_from_package_import_submodule_is_a_dependency_on_the_submodule(self):
        app, pkg = self.mod("app"), self.mod("pkg")
        self.write(pkg, "", package=True)
        self.write(pkg + ".sub", "VALUE = 1\n")
        self.write(app, f"from {pkg} import sub\n")
        self.load(app)

        self.assertIn(pkg + ".sub", modhost.dependencies(app))
        self.assertIn(app, modhost.dependents(pkg + ".sub"))

    def test_relative_imports(self):
        pkg = self.mod("pkg")
        self.write(pkg, "", package=True)
        self.write(pkg + ".sib", "NAME = 'sibling'\n")
        self.write(pkg + ".other", "OTHER = 1\n")
        self.write(pkg + ".user", "from . import sib\nfrom .other import OTHER\n")
        self.load(pkg + ".user")

        deps = modhost.dependencies(pkg + ".user")
        self.assertIn(pkg + ".sib", deps)
        self.assertIn(pkg + ".other", deps)
        self.assertIn(pkg + ".user", modhost.dependents(pkg + ".sib"))
        self.assertIn(pkg + ".user", modhost.dependents(pkg + ".other"))
        self.assertEqual(modhost.from_imports(pkg + ".user").get(pkg + ".other"), ["OTHER"])

    def test_relative_import_from_a_package_init(self):
        pkg = self.mod("pkg")
        self.write(pkg + ".part", "PART = 1\n")
        self.write(pkg, "from .part import PART\n", package=True)
        self.load(pkg)
        self.assertIn(pkg + ".part", modhost.dependencies(pkg))
        self.assertEqual(modhost.from_imports(pkg).get(pkg + ".part"), ["PART"])

    def test_importlib_import_module_at_top_level(self):
        app, x, y = self.mod("app"), self.mod("x"), self.mod("y")
        self.write(x, "VALUE = 1\n")
        self.write(y, "VALUE = 2\n")
        self.write(app, f"import importlib\nfrom importlib import import_module\n"
                        f"X = importlib.import_module({x!r})\nY = import_module({y!r})\n")
        self.load(app)

        self.assertIn(x, modhost.dependencies(app))
        self.assertIn(y, modhost.dependencies(app))
        self.assertIn(app, modhost.dependents(x))

    def test_imports_inside_functions_called_later_are_not_dependencies(self):
        app, x = self.mod("app"), self.mod("x")
        self.write(x, "VALUE = 1\n")
        self.write(app, f"def later():\n    import {x}\n    return {x}.VALUE\n")
        self.load(app)
        self.assertEqual(sys.modules[app].later(), 1)

        self.assertNotIn(x, modhost.dependencies(app))
        self.assertNotIn(app, modhost.dependents(x))

    def test_graph_follows_a_reload_that_changes_imports(self):
        app, x, y = self.mod("app"), self.mod("x"), self.mod("y")
        self.write(x, "VALUE = 1\n")
        self.write(y, "VALUE = 2\n")
        self.write(app, f"import {x}\n")
        self.load(app)
        self.write(app, f"import {y}\n")

        modhost.reload(app)

        self.assertIn(y, modhost.dependencies(app))
        self.assertNotIn(x, modhost.dependencies(app))
        self.assertNotIn(app, modhost.dependents(x))
        self.assertIn(app, modhost.dependents(y))

    def test_failed_reload_keeps_the_old_edges(self):
        app, x, y = self.mod("app"), self.mod("x"), self.mod("y")
        self.write(x, "VALUE = 1\n")
        self.write(y, "VALUE = 2\n")
        self.write(app, f"import {x}\nfrom {x} import VALUE\n")
        self.load(app)
        self.write(app, f"import {y}\nraise ValueError('broken')\n")

        with self.assertRaises(ValueError):
            modhost.reload(app)

        self.assertIn(x, modhost.dependencies(app))
        self.assertNotIn(y, modhost.dependencies(app))
        self.assertEqual(modhost.from_imports(app).get(x), ["VALUE"])

    def test_from_imports_of_a_module_without_from_imports_is_empty(self):
        app, x = self.mod("app"), self.mod("x")
        self.write(x, "VALUE = 1\n")
        self.write(app, f"import {x}\n")
        self.load(app)
        self.assertEqual(dict(modhost.from_imports(app)), {})

    def test_graph_of_a_module_never_imported_is_an_import_error(self):
        name = self.mod("never")
        with self.assertRaises(ImportError):
            modhost.dependencies(name)
        with self.assertRaises(ImportError):
            modhost.dependents(name)


if __name__ == "__main__":
    unittest.main()
