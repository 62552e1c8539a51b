"""The host program behaves like python3: run through modhost itself."""
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

import modhost

MODHOST = os.environ["MODHOST_EXE"]


def run(*args, stdin=None, env=None, cwd=None):
    return subprocess.run([MODHOST, *args], input=stdin, capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)


class HostProgram(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="modhost-host-test-")
        self.addCleanup(shutil.rmtree, self.dir)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def test_import_modhost_works_in_the_running_script(self):
        self.assertTrue(modhost.__version__)
        self.assertIn("home", modhost.interpreter_info())

    def test_script_gets_argv_and_its_directory_on_sys_path(self):
        self.write("sibling.py", "NAME = 'sibling'\n")
        script = self.write("main.py", """
            import sys, sibling
            print(sys.argv, sibling.NAME, __name__)
        """)
        result = run(script, "a", "--b", "-c")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), f"[{script!r}, 'a', '--b', '-c'] sibling __main__")

    def test_dash_c_gets_argv(self):
        result = run("-c", "import sys; print(sys.argv)", "x", "--help")
        self.assertEqual(result.stdout.strip(), "['-c', 'x', '--help']")

    def test_dash_m_runs_module_as_main(self):
        self.write("tool.py", "import sys\nif __name__ == '__main__':\n    print('tool', sys.argv[1:])\n")
        result = run("-p", self.dir, "-m", "tool", "--verbose")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "tool ['--verbose']")

    def test_dash_m_stdlib_module(self):
        result = run("-m", "json.tool", stdin='{"a": 1}')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('"a": 1', result.stdout)

    def test_reads_script_from_stdin_when_not_a_terminal(self):
        result = run(stdin="import sys\nprint('from stdin', sys.argv)\n")
        self.assertEqual(result.stdout.strip(), "from stdin ['-']")

    def test_uncaught_exception_prints_traceback_and_exits_1(self):
        script = self.write("fails.py", """
            def handler():
                raise ValueError("bad plugin value")
            handler()
        """)
        result = run(script)
        self.assertEqual(result.returncode, 1)
        self.assertIn("Traceback (most recent call last)", result.stderr)
        self.assertIn("in handler", result.stderr)
        self.assertIn("ValueError: bad plugin value", result.stderr)

    def test_system_exit_codes(self):
        self.assertEqual(run("-c", "raise SystemExit(3)").returncode, 3)
        self.assertEqual(run("-c", "import sys; sys.exit()").returncode, 0)
        result = run("-c", "raise SystemExit('cannot continue')")
        self.assertEqual((result.returncode, result.stderr.strip()), (1, "cannot continue"))

    def test_missing_script_exits_2(self):
        result = run(os.path.join(self.dir, "absent.py"))
        self.assertEqual(result.returncode, 2)
        self.assertIn("can't open file", result.stderr)

    def test_path_option_prepends_in_order(self):
        result = run("-p", "/first", "--path", "/second", "-c", "import sys; print(sys.path[:2])")
        self.assertEqual(result.stdout.strip(), "['/first', '/second']")

    def test_no_working_directory_on_sys_path(self):
        self.write("shadow.py", "raise SystemExit('the working directory was on sys.path')\n")
        code = "import sys, os\nprint('' in sys.path or os.getcwd() in sys.path)\n"
        result = run("-c", code, cwd=self.dir)
        self.assertEqual(result.stdout.strip(), "False", result.stderr)
        result = run("-c", "import shadow", cwd=self.dir)
        self.assertIn("ModuleNotFoundError", result.stderr)
        self.assertEqual(run("--cwd-path", "-c", "import shadow", cwd=self.dir).returncode, 1)

    def test_version_and_help(self):
        self.assertEqual(run("--version").stdout.strip(), f"modhost {modhost.__version__}")
        help_text = run("--help").stdout
        for option in ("-c", "-m", "--path"):
            self.assertIn(option, help_text)

    def test_repl_exit_code_from_exit_call(self):
        # Not a terminal: the REPL reads stdin as a script, and exit() works there too.
        self.assertEqual(run(stdin="exit(4)\n").returncode, 4)


class LinkedStdlib(unittest.TestCase):
    """Whatever python3 is first on PATH, the stdlib is the linked libpython's."""

    def check_with_path_first(self, bin_dir, extra_env=None):
        env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
        env.update(extra_env or {})
        code = "import os, sys, modhost; print(os.__file__); print(sys.version)"
        result = run("-c", code, env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        os_file, version = result.stdout.splitlines()
        self.assertEqual(os_file, os.__file__)
        self.assertEqual(version, sys.version)
        self.assertTrue(os_file.startswith(modhost.interpreter_info()["home"]))

    def test_a_fake_python_first_on_path_and_pythonhome_are_ignored(self):
        # A decoy installation whose os.py refuses to be imported.
        decoy = tempfile.mkdtemp(prefix="modhost-decoy-")
        self.addCleanup(shutil.rmtree, decoy)
        stdlib = os.path.join(decoy, "lib", "python%d.%d" % sys.version_info[:2])
        os.makedirs(stdlib)
        os.makedirs(os.path.join(decoy, "bin"))
        with open(os.path.join(stdlib, "os.py"), "w") as f:
            f.write("raise ImportError('decoy stdlib loaded')\n")
        python3 = os.path.join(decoy, "bin", "python3")
        with open(python3, "w") as f:
            f.write("#!/bin/sh\necho decoy python\n")
        os.chmod(python3, 0o755)
        self.check_with_path_first(os.path.join(decoy, "bin"), {"PYTHONHOME": decoy})

    def test_another_real_python_first_on_path(self):
        others = [p for p in ("/root/.pyenv/shims", "/usr/local/bin")
                  if os.path.exists(os.path.join(p, "python3"))
                  and os.path.realpath(os.path.join(p, "python3")) != os.path.realpath(sys.executable)]
        if not others:
            self.skipTest("no second python3 installed on this machine")
        self.check_with_path_first(others[0])


if __name__ == "__main__":
    unittest.main()
