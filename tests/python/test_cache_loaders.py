"""Imports are recorded for modules that loaders other than importlib's
SourceFileLoader execute (issue 18): pytest's assertion rewriter, a plugin
system's own loader, a meta-path finder's, the spec_from_file_location recipe.

Each loaded module (`user`) does `from plug import LIMIT`; what a user notices
is that modhost.dependents(plug) names it, that a deep reload of plug rebinds
its LIMIT, and that reload(plug, dependents=True) runs it again.
"""
import importlib
import importlib.abc
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import unittest

from cache_fixtures import CacheTestCase, modhost

MODHOST = os.environ["MODHOST_EXE"]


class ExecLoader(importlib.abc.Loader):
    """A plugin system's loader: compiles the file and execs it itself."""

    def __init__(self, path):
        self.path = path

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        with open(self.path, "rb") as f:
            source = f.read()
        exec(compile(source, self.path, "exec"), module.__dict__)


class CodeLoader:
    """Of no importlib class: its code comes from its own get_code, run in a helper."""

    def __init__(self, path):
        self.path = path

    def create_module(self, spec):
        return None

    def get_code(self, name):
        with open(self.path, "rb") as f:
            return compile(f.read(), self.path, "exec")

    def exec_module(self, *modules):  # the module reaches exec only through `modules`
        self._run(self.get_code(modules[0].__name__), vars(sys.modules[modules[0].__name__]))

    @staticmethod
    def _run(code, namespace):
        exec(code, namespace)


class DirectoryFinder:
    """A meta-path finder for the modules in one directory, with ExecLoader."""

    def __init__(self, directory):
        self.directory = directory

    def find_spec(self, name, path=None, target=None):
        file = os.path.join(self.directory, name + ".py")
        if not os.path.exists(file):
            return None
        return importlib.util.spec_from_file_location(name, file, loader=ExecLoader(file))


class OtherLoaders(CacheTestCase):
    def setUp(self):
        super().setUp()
        # Not on sys.path: only the loader under test finds these files.
        self.elsewhere = os.path.join(self.dir, "elsewhere")
        os.makedirs(self.elsewhere)
        self.plug, self.user = self.mod("plug"), self.mod("user")
        self.write(self.plug, "LIMIT = 1\n")

    def write_user(self):
        path = os.path.join(self.elsewhere, self.user + ".py")
        with open(path, "w") as f:
            f.write(self.log_code() + f"from {self.plug} import LIMIT\nSEEN = LIMIT\n")
        return path

    def load_from_spec(self, spec):
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    def assertImportsRecorded(self, loader_type):
        user, plug = self.user, self.plug
        module = sys.modules[user]
        self.assertEqual(module.SEEN, 1)
        self.assertIn(user, modhost.dependents(plug))
        self.assertIn(plug, modhost.dependencies(user))
        self.assertEqual(modhost.from_imports(user), {plug: ["LIMIT"]})

        self.write(plug, "LIMIT = 2\n")
        modhost.reload(plug, deep=True)
        self.assertEqual(module.LIMIT, 2)
        self.assertIn(f"{user}.LIMIT", " ".join(modhost.last_reload().rebound))

        self.write(plug, "LIMIT = 3\n")
        modhost.reload(plug, dependents=True)
        self.assertEqual(self.log(), [user, user])
        self.assertEqual(module.SEEN, 3)
        self.assertEqual(modhost.info(user).generation, 2)
        # Run again by its own loader, which keeps its type; its edges stay.
        self.assertIs(type(module.__loader__), loader_type)
        self.assertIs(type(module.__spec__.loader), loader_type)
        self.assertEqual(modhost.from_imports(user), {plug: ["LIMIT"]})

    def test_a_loader_subclass_that_execs_what_it_compiled(self):
        path = self.write_user()
        self.load_from_spec(importlib.util.spec_from_file_location(self.user, path, loader=ExecLoader(path)))
        self.assertImportsRecorded(ExecLoader)

    def test_a_loader_of_its_own_class_whose_code_comes_from_get_code(self):
        path = self.write_user()
        self.load_from_spec(importlib.util.spec_from_file_location(self.user, path, loader=CodeLoader(path)))
        self.assertImportsRecorded(CodeLoader)

    def test_a_meta_path_finder_returning_such_a_loader(self):
        self.write_user()
        finder = DirectoryFinder(self.elsewhere)
        sys.meta_path.insert(0, finder)
        self.addCleanup(sys.meta_path.remove, finder)
        importer = self.mod("importer")
        self.write(importer, f"import {self.user}\n")

        self.load(importer)

        self.assertIn(importer, modhost.dependents(self.user))
        self.assertImportsRecorded(ExecLoader)

    def test_spec_from_file_location_module_from_spec_and_exec_module(self):
        path = self.write_user()
        self.load_from_spec(importlib.util.spec_from_file_location(self.user, path))
        self.assertImportsRecorded(importlib.machinery.SourceFileLoader)

    def test_exec_of_a_file_into_a_namespace_of_its_own_records_nothing(self):
        path = self.write_user()
        namespace = {"__name__": self.user, "__file__": path}
        with open(path) as f:
            exec(compile(f.read(), path, "exec"), namespace)
        self.assertNotIn(self.user, modhost.dependents(self.plug))
        self.assertNotIn(self.user, modhost.modules())

    def test_module_roots_refuse_what_such_a_loader_loads_from_outside_them(self):
        outside = self.write_user()
        here = os.path.dirname(os.path.abspath(__file__))
        code = textwrap.dedent(f"""
                import importlib, sys
                sys.path.insert(0, {here!r})
                from test_cache_loaders import DirectoryFinder
                sys.meta_path.insert(0, DirectoryFinder({self.elsewhere!r}))
                try:
                    importlib.import_module({self.user!r})
                except ImportError as e:
                    print("refused:", e)
                """)
        done = subprocess.run([MODHOST, "-p", self.dir, "--root", self.dir, "--root", here, "-c", code],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(done.stdout.strip(), "", done.stderr)  # inside the roots: loaded
        done = subprocess.run([MODHOST, "-p", self.dir, "--root", self.dir + "/nowhere", "--root", here,
                               "-c", code], capture_output=True, text=True, timeout=60)
        self.assertIn(f"refused: modhost refuses to load {self.user!r} from {outside}", done.stdout, done.stderr)
        self.assertIn("outside the module roots", done.stdout)


@unittest.skipIf(importlib.util.find_spec("pytest") is None, "needs pytest (Debian: python3-pytest)")
class Pytest(CacheTestCase):
    def test_test_modules_and_conftest_that_pytests_rewriter_loads_are_recorded(self):
        # pytest imports conftest and test modules with its assertion-rewriting
        # loader, which execs code compiled from a rewritten AST itself.
        plug, tests = self.mod("plug"), self.mod("test_uses")
        self.write(plug, "LIMIT = 1\n")
        suite = os.path.join(self.dir, "suite")
        os.makedirs(suite)
        files = {
            "conftest.py": f"""
                import pytest
                from {plug} import LIMIT

                @pytest.fixture
                def conftest_limit():
                    return LIMIT
                """,
            f"{tests}.py": f"""
                from {plug} import LIMIT

                def test_limit(conftest_limit):
                    assert LIMIT == conftest_limit == 1
                """,
        }
        for name, text in files.items():
            with open(os.path.join(suite, name), "w") as f:
                f.write(textwrap.dedent(text))
        script = os.path.join(self.dir, "run_pytest.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent(f"""
                import json, sys
                import modhost, pytest

                code = pytest.main(["-q", "-p", "no:cacheprovider", {suite!r}])
                tests, conftest = sys.modules[{tests!r}], sys.modules["conftest"]
                result = {{
                    "exit": int(code),
                    "loader": type(tests.__loader__).__name__,
                    "dependents": modhost.dependents({plug!r}),
                    "from_imports": modhost.from_imports({tests!r}),
                }}
                with open({self.path_of(plug)!r}, "w") as f:
                    f.write("LIMIT = 2\\n")
                modhost.reload({plug!r}, deep=True)
                result["rebound"] = [tests.LIMIT, conftest.LIMIT]
                print(json.dumps(result))
                """))
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        done = subprocess.run([MODHOST, "-p", self.dir, script], capture_output=True, text=True,
                              timeout=120, env=env, cwd=self.dir)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        result = json.loads(done.stdout.splitlines()[-1])

        self.assertEqual(result["exit"], 0, done.stdout)
        self.assertEqual(result["loader"], "AssertionRewritingHook")
        self.assertIn(tests, result["dependents"])
        self.assertIn("conftest", result["dependents"])
        self.assertEqual(result["from_imports"], {plug: ["LIMIT"]})
        self.assertEqual(result["rebound"], [2, 2])


if __name__ == "__main__":
    unittest.main()
