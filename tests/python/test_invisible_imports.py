"""The import machinery is invisible: modhost records imports without replacing
anything python3 users can see (issue 11, findings 7-11).

Each test writes real .py files into a temporary directory; the ones that
compare with python3 run the same script under `python3` (sys.executable: the
installation modhost embeds) and under the host, side by side.
"""
import builtins
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import textwrap
import unittest

from cache_fixtures import CacheTestCase, modhost

MODHOST = os.environ["MODHOST_EXE"]


class Invisible(CacheTestCase):
    def run_both(self, script):
        """Runs `script` (a file in the test directory) under python3 and modhost: (python3, modhost) stdout."""
        path = os.path.join(self.dir, "script_%s.py" % self.tag)
        with open(path, "w") as f:
            f.write(textwrap.dedent(script))
        results = []
        for command in ([sys.executable, path], [MODHOST, path]):
            done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                  env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
            results.append(done)
        return results

    # 7 ------------------------------------------------------------------
    def test_lazy_loader_stays_lazy(self):
        name, dep = self.mod("lazy"), self.mod("dep")
        self.write(dep, "X = 1\n")
        self.write(name, self.log_code() + f"import {dep}\nVALUE = 42\n")
        spec = importlib.util.find_spec(name)
        loader = importlib.util.LazyLoader(spec.loader)
        spec.loader = loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
        # The cache looks at everything it tracks, and another import runs.
        modhost.modules()
        modhost.info(name)
        modhost.is_changed(name)
        modhost.dependencies(name)
        modhost.changed()
        self.load(self.write(self.mod("other"), "import os\n") and self.mod("other"))
        self.assertEqual(self.log(), [], "the lazy module's body ran before an attribute was used")
        self.assertEqual(module.VALUE, 42)  # now it runs
        self.assertEqual(self.log(), [name])
        self.assertIn(dep, modhost.dependencies(name))
        self.assertFalse(modhost.is_changed(name))

    # 8 ------------------------------------------------------------------
    def test_import_functions_are_python3s_own(self):
        self.assertIs(type(builtins.__import__), type(len))
        self.assertEqual(builtins.__import__.__module__, "builtins")
        self.assertEqual(str(inspect.signature(builtins.__import__)),
                         "(name, globals=None, locals=None, fromlist=(), level=0)")
        self.assertEqual(inspect.getsourcefile(importlib.import_module), importlib.__file__)
        self.assertEqual(str(inspect.signature(importlib.import_module)), "(name, package=None)")
        python3, host = self.run_both("""
            import builtins, importlib, inspect, json, sys
            print(json.dumps([str(inspect.signature(builtins.__import__)),
                              str(inspect.signature(importlib.import_module)),
                              repr(builtins.__import__), importlib.import_module.__module__,
                              [type(f).__name__ for f in sys.meta_path],
                              [getattr(h, '__qualname__', repr(h)) for h in sys.path_hooks]]))
        """)
        self.assertEqual(python3.returncode, 0, python3.stderr)
        self.assertEqual(host.returncode, 0, host.stderr)
        self.assertEqual(json.loads(host.stdout), json.loads(python3.stdout))

    # 9 ------------------------------------------------------------------
    def test_source_modules_keep_source_file_loader(self):
        name = self.mod("plain")
        self.write(name, "VALUE = 1\n")
        module = self.load(name)
        self.assertIs(type(module.__loader__), importlib.machinery.SourceFileLoader)
        self.assertIs(type(module.__spec__.loader), importlib.machinery.SourceFileLoader)
        modhost.reload(name)
        self.assertIs(type(module.__loader__), importlib.machinery.SourceFileLoader)

    # 10 -----------------------------------------------------------------
    def test_syntax_error_traceback_is_python3s(self):
        broken = self.mod("broken")
        self.write(broken, "def f(:\n    pass\n")
        python3, host = self.run_both(f"""
            import sys
            sys.path.insert(0, {self.dir!r})
            import {broken}
        """)
        self.assertNotEqual(host.returncode, 0)
        self.assertNotIn("FileNotFoundError", host.stderr)
        self.assertNotIn("modules/internal", host.stderr)
        self.assertNotIn("During handling", host.stderr)
        self.assertEqual(host.stderr, python3.stderr)

    # 11 -----------------------------------------------------------------
    def test_no_modhost_frame_runs_during_imports(self):
        pkg = self.mod("tpkg")
        self.write(pkg, "from . import a\nfrom .b import B\nimport importlib\nC = importlib.import_module('.c', __name__)\n",
                   package=True)
        self.write(pkg + ".a", "A = 1\n")
        self.write(pkg + ".b", "from .a import A\nclass B:\n    import json\n")
        self.write(pkg + ".c", "import email.mime.text\n")
        python3, host = self.run_both(f"""
            import json, sys
            sys.path.insert(0, {self.dir!r})
            seen = set()
            def profile(frame, event, arg):
                if event == 'call':
                    seen.add(frame.f_code.co_filename)
            sys.setprofile(profile)
            import {pkg}
            sys.setprofile(None)
            print(json.dumps(sorted(seen)))
        """)
        self.assertEqual(python3.returncode, 0, python3.stderr)
        self.assertEqual(host.returncode, 0, host.stderr)
        under_host, under_python3 = set(json.loads(host.stdout)), set(json.loads(python3.stdout))
        self.assertFalse([f for f in under_host if "modhost" in f and self.dir not in f], under_host)
        self.assertEqual(under_host - under_python3, set())

    def test_imports_are_still_recorded(self):
        pkg = self.mod("rpkg")
        self.write(pkg, "from . import a\nfrom .b import B as BB\nimport importlib\n"
                        "C = importlib.import_module('.c', __name__)\n"
                        "try:\n    import not_there_%s\nexcept ImportError:\n    pass\n" % self.tag, package=True)
        self.write(pkg + ".a", "A = 1\n")
        self.write(pkg + ".b", "from .a import A\nclass B:\n    from .a import A as INNER\n")
        self.write(pkg + ".c", "C = 3\n")
        self.load(pkg)
        self.assertEqual(sorted(modhost.dependencies(pkg)), sorted([pkg + ".a", pkg + ".b", pkg + ".c", "importlib"]))
        self.assertEqual(modhost.from_imports(pkg)[pkg + ".b"], ["B as BB"])
        self.assertEqual(sorted(modhost.from_imports(pkg + ".b")[pkg + ".a"]), ["A", "A as INNER"])
        self.assertIn(pkg + ".b", modhost.dependents(pkg + ".a"))


if __name__ == "__main__":
    unittest.main()
