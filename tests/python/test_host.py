"""The host program behaves like python3: run through modhost itself."""
import inspect
import re
import os
import pydoc
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import unittest

import modhost

MODHOST = os.environ["MODHOST_EXE"]


# Runs code in a new subinterpreter, as concurrent.interpreters (3.14) does.
SUBINTERPRETER = """
    try:
        import _interpreters as interpreters  # 3.13+
    except ImportError:
        import _xxsubinterpreters as interpreters
    def run_in_subinterpreter(code):
        interpreter = interpreters.create()
        try:
            failed = getattr(interpreters, "exec", None) or interpreters.run_string
            failure = failed(interpreter, code)
            assert failure is None, failure
        finally:
            interpreters.destroy(interpreter)
"""


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

    def test_a_subinterpreters_imports_leave_the_cache_and_the_heap_alone(self):
        # Audit hooks are process-wide; since 3.12 a subinterpreter also has
        # its own allocator, and tracking its modules corrupted the heap at
        # exit (3.14: "free(): invalid size", CPython's test_sys).
        script = self.write("subinterp.py", textwrap.dedent(SUBINTERPRETER) + textwrap.dedent("""
            run_in_subinterpreter("import colorsys, json; import email.message")
            import importlib, modhost, sys
            print("colorsys" in sys.modules, "colorsys" in modhost.changed() + modhost.check())
            importlib.import_module("colorsys")  # the main interpreter's own, tracked from here
            print(modhost.refcount("colorsys"))
        """))
        result = run(script)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split(), ["False", "False", "0"])
        self.assertEqual(result.stderr, "")

    @unittest.skipUnless(hasattr(sys, "remote_exec"), "sys.remote_exec is new in 3.14")
    def test_a_debugger_can_attach_to_the_running_program(self):
        # What python3 -m pdb -p PID does (3.14): find the main thread and run a script there.
        injected = self.write("injected.py", "import builtins\nbuiltins.injected = True\n")
        script = self.write("attached.py", f"""
            import builtins, os, sys, time
            sys.remote_exec(os.getpid(), {injected!r})
            for _ in range(500):
                if getattr(builtins, "injected", False):
                    break
                time.sleep(0.01)
            print(getattr(builtins, "injected", False))
        """)
        result = run(script)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "True")

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

    # atexit callbacks run while modhost is still there, after the
    # non-daemon threads were joined (as python3 orders them).
    def test_atexit_callbacks_can_call_modhost(self):
        result = run("-c", textwrap.dedent("""
            import atexit, threading, time, modhost
            import json
            def worker():
                time.sleep(0.2)
                print("thread done", flush=True)
            threading.Thread(target=worker).start()
            atexit.register(lambda: print("first registered", flush=True))
            atexit.register(lambda: print("tracks json:", "json" in modhost.modules(), flush=True))
            """))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines(), ["thread done", "tracks json: True", "first registered"])
        self.assertEqual(result.stderr, "")

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

    def test_uncaught_keyboard_interrupt_dies_by_sigint_like_python3(self):
        # python3 prints the traceback, finalizes, then kills itself with
        # SIGINT: a parent sees the signal, a shell reports 130 and stops a loop.
        script = self.write("interrupted.py", """
            import atexit
            atexit.register(print, "finalized")
            def work():
                raise KeyboardInterrupt
            work()
        """)
        self.write("interrupted_mod.py", "raise KeyboardInterrupt\n")
        for args in ([script], ["-c", "raise KeyboardInterrupt"], ["-p", self.dir, "-m", "interrupted_mod"]):
            with self.subTest(args=args):
                result = run(*args)
                self.assertEqual(result.returncode, -signal.SIGINT, result.stderr)
                self.assertIn("Traceback (most recent call last)", result.stderr)
                self.assertTrue(result.stderr.rstrip().endswith("KeyboardInterrupt"), result.stderr)
        self.assertEqual(run(script).stdout, "finalized\n")  # atexit ran: Python finalized first
        python3 = subprocess.run([sys.executable, script], capture_output=True, timeout=60)
        self.assertEqual(python3.returncode, -signal.SIGINT)
        shell = subprocess.run(["sh", "-c", '"$0" -c "raise KeyboardInterrupt" 2>/dev/null; echo $?', MODHOST],
                               capture_output=True, text=True, timeout=60)
        self.assertEqual(shell.stdout.strip(), "130")

    def test_only_a_real_keyboard_interrupt_dies_by_sigint(self):
        # python3 re-raises SIGINT for KeyboardInterrupt itself only; a subclass
        # is an ordinary uncaught exception, and SystemExit(130) is an exit status.
        result = run("-c", "class Stop(KeyboardInterrupt): pass\nraise Stop")
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(run("-c", "raise SystemExit(130)").returncode, 130)

    def test_unknown_option_is_a_usage_error_like_python3(self):
        result = run("--bogus")
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stdout, "")
        self.assertIn("unknown option --bogus", result.stderr)
        self.assertIn("usage: modhost", result.stderr)
        self.assertNotIn("can't open file", result.stderr)
        self.assertEqual(subprocess.run([sys.executable, "--bogus"], capture_output=True).returncode, 2)
        # Bad values are usage errors too (python3 -X without a value: exit 2).
        for args in (["--autoreload", "sometimes", "-c", "pass"], ["--debounce", "x", "-c", "pass"]):
            with self.subTest(args=args):
                result = run(*args)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn("usage: modhost", result.stderr)

    def test_options_after_the_program_belong_to_it(self):
        script = self.write("-dash.py", "import sys; print(sys.argv[1:])\n")
        # "--" ends modhost's options, as it ends python3's: "-dash.py" is the script.
        result = run("--", "-dash.py", "--bogus", cwd=self.dir)
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "['--bogus']"), result.stderr)
        self.assertEqual(run(script, "--bogus").stdout.strip(), "['--bogus']")
        self.assertEqual(run("-c", "import sys; print(sys.argv)", "--bogus").stdout.strip(), "['-c', '--bogus']")
        self.write("tool.py", "import sys; print(sys.argv[1:])\n")
        self.assertEqual(run("-p", self.dir, "-mtool", "--bogus").stdout.strip(), "['--bogus']")

    def test_dash_m_missing_module_names_modhost_not_python3(self):
        # python3 says "/usr/bin/python3: No module named x" (its sys.executable);
        # modhost's sys.executable is a python3 for subprocesses, but the
        # program that could not find the module is modhost.
        result = run("-m", "no_such_module_for_the_host_test")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.strip(),
                         f"{os.path.realpath(MODHOST)}: No module named no_such_module_for_the_host_test")
        os.mkdir(os.path.join(self.dir, "pkg_without_main"))
        self.write("pkg_without_main/__init__.py", "")
        result = run("-p", self.dir, "-m", "pkg_without_main")
        self.assertTrue(result.stderr.startswith(os.path.realpath(MODHOST) + ": No module named pkg_without_main.__main__"),
                        result.stderr)
        self.assertNotIn(sys.executable, result.stderr)

    def test_dash_m_module_exit_message_is_its_own(self):
        # Only runpy's own "cannot run" exit is renamed, never the module's SystemExit.
        self.write("exits.py", "import sys\nsys.exit(sys.executable + ': said by the module')\n")
        result = run("-p", self.dir, "-m", "exits")
        self.assertEqual((result.returncode, result.stderr.strip()), (1, sys.executable + ": said by the module"))


class Help(unittest.TestCase):
    def test_reload_has_one_signature_and_inspect_reads_it(self):
        signature = "(module, *, deep=False, dependents=False, timeout=None, wait_for_calls=1.0)"
        self.assertEqual(str(inspect.signature(modhost.reload)), signature)
        text = pydoc.plain(pydoc.render_doc(modhost.reload))
        # pydoc 3.13 wraps a long signature one parameter a line: unwrap it.
        text = re.sub(r"\(\n\s*", "(", re.sub(r",\n\s*", ", ", re.sub(r"\n\)", ")", text)))
        signatures = [line for line in text.splitlines() if line.startswith("reload(")]
        # Just python's: no pybind11 line ("reload(module: object, ...) -> object"),
        # no "method of builtins.PyCapsule instance" (pybind11's hidden self).
        self.assertEqual(signatures, ["reload" + signature], text)
        self.assertTrue(modhost.reload.__doc__.startswith("Reload a module"), modhost.reload.__doc__)

    def public_functions(self):
        return [n for n in dir(modhost) if not n.startswith("_") and inspect.isbuiltin(getattr(modhost, n))]

    def test_every_function_has_one_signature_and_no_capsule(self):
        # Before: help() read "unload(...) method of builtins.PyCapsule instance",
        # then pybind11's signature, then the docstring's, and inspect had none.
        self.assertGreater(len(self.public_functions()), 20)
        for name in self.public_functions():
            with self.subTest(name):
                function = getattr(modhost, name)
                signature = str(inspect.signature(function))
                text = pydoc.plain(pydoc.render_doc(function))
                # pydoc 3.13 wraps a long signature one parameter a line: unwrap it.
                text = re.sub(r"\(\n\s*", "(", re.sub(r",\n\s*", ", ", re.sub(r"\n\)", ")", text)))
                self.assertNotIn("PyCapsule", text)
                self.assertEqual([line for line in text.splitlines() if line.startswith(name + "(")],
                                 [name + signature], text)

    def test_every_signature_matches_the_stub(self):
        import ast
        stub = os.path.join(os.path.dirname(__file__), "..", "..", "bindings", "modhost.pyi")
        with open(stub) as f:
            stubbed = {n.name: n for n in ast.parse(f.read()).body if isinstance(n, ast.FunctionDef)}
        for name in self.public_functions():
            with self.subTest(name):
                node = stubbed[name]
                names = [a.arg for a in node.args.args] + ["*"] + [a.arg for a in node.args.kwonlyargs]
                params = inspect.signature(getattr(modhost, name)).parameters.values()
                actual = [p.name for p in params if p.kind != p.KEYWORD_ONLY] + ["*"] + \
                         [p.name for p in params if p.kind == p.KEYWORD_ONLY]
                self.assertEqual(actual, names)

    def test_a_wrong_argument_is_one_line_naming_the_signature(self):
        # Before: pybind11's "incompatible function arguments. The following
        # argument types are supported: 1. (...)" over five lines.
        for call, expected in [(lambda: modhost.reload("json", deep="yes"),
                                "reload() got arguments it cannot take ('json'; kwargs: deep='yes'); it takes "
                                "reload(module, *, deep=False, dependents=False, timeout=None, wait_for_calls=1.0)"),
                               (lambda: modhost.unload(42),
                                "unload() got arguments it cannot take (42); it takes unload(name, *, force=False)"),
                               (lambda: modhost.watch(), "watch() got arguments it cannot take (); it takes watch(name)")]:
            with self.subTest(expected), self.assertRaises(TypeError) as caught:
                call()
            self.assertEqual(str(caught.exception), expected)

    def test_reload_signature_matches_the_stub(self):
        import ast
        stub = os.path.join(os.path.dirname(__file__), "..", "..", "bindings", "modhost.pyi")
        with open(stub) as f:
            tree = ast.parse(f.read())
        node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "reload")
        stubbed = [a.arg for a in node.args.args] + ["*"] + [a.arg for a in node.args.kwonlyargs]
        params = inspect.signature(modhost.reload).parameters.values()
        actual = [p.name for p in params if p.kind != p.KEYWORD_ONLY] + ["*"] + \
                 [p.name for p in params if p.kind == p.KEYWORD_ONLY]
        self.assertEqual(actual, stubbed)
        defaults = [ast.literal_eval(d) for d in node.args.kw_defaults]
        self.assertEqual([p.default for p in params if p.kind == p.KEYWORD_ONLY], defaults)


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
