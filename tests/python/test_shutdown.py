"""The host program's exit unloads what modhost manages before Python's own shutdown.

Each test runs `modhost app.py` as a child process with a time limit: a
plugin's non-daemon thread acquired through modhost.acquire must be halted by
its release before threading._shutdown joins it (a hang otherwise), each
module's __unload__ runs in reverse dependency order, a failure is printed and
the exit goes on with its exit code unchanged.
"""
import os
import shutil
import subprocess
import tempfile
import textwrap
import unittest

MODHOST = os.environ["MODHOST_EXE"]
EXIT_LIMIT = 5  # seconds: an exit that takes longer hangs

# A plugin whose top level starts a non-daemon thread through
# modhost.acquire, looping until its halt (the server example of docs/reloading.md).
THREAD_PLUGIN = '''
import threading
import time
import modhost

def start():
    running = threading.Event()
    running.set()
    def serve():
        while running.is_set():
            time.sleep(0.005)
    thread = threading.Thread(target=serve, name="plug-server")  # not a daemon
    thread.start()
    return thread, running

def halt(acquired):
    thread, running = acquired
    running.clear()
    thread.join()
    print("halted", flush=True)

server = modhost.acquire(start, halt)
'''


class Shutdown(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="modhost-shutdown-test-")
        self.addCleanup(shutil.rmtree, self.dir)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def run_app(self, text, *args):
        app = self.write("app.py", text)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        try:
            return subprocess.run([MODHOST, app, *args], capture_output=True, text=True, env=env,
                                  cwd=self.dir, timeout=EXIT_LIMIT)
        except subprocess.TimeoutExpired as e:
            self.fail(f"modhost app.py did not exit within {EXIT_LIMIT} s; stdout: {e.stdout!r}, "
                      f"stderr: {e.stderr!r}")

    def test_an_acquired_non_daemon_thread_is_halted_and_the_program_exits(self):
        self.write("plug.py", THREAD_PLUGIN)
        result = self.run_app("import plug\nprint('app done', flush=True)\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines(), ["app done", "halted"])
        self.assertEqual(result.stderr, "")

    def test_unload_hooks_run_at_exit_in_reverse_dependency_order(self):
        self.write("base.py", "def __unload__():\n    print('unload base', flush=True)\n")
        self.write("middle.py", "import base\n")  # no hook: it still orders top after base
        self.write("top.py", "import middle\ndef __unload__():\n    print('unload top', flush=True)\n")
        self.write("alone.py", "def __unload__():\n    print('unload alone', flush=True)\n")
        result = self.run_app("import alone, top\nprint('app done', flush=True)\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], "app done")
        self.assertEqual(sorted(lines[1:]), ["unload alone", "unload base", "unload top"])
        self.assertLess(lines.index("unload top"), lines.index("unload base"))
        self.assertEqual(result.stderr, "")

    def test_a_releases_run_before_its_unload_hook_and_newest_first(self):
        self.write("plug.py", """
            import modhost
            modhost.acquire(lambda: 'first', lambda r: print('release', r, flush=True))
            modhost.acquire(lambda: 'second', lambda r: print('release', r, flush=True))
            def __unload__():
                print('unload plug', flush=True)
            """)
        result = self.run_app("import plug\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines(), ["release second", "release first", "unload plug"])

    def test_a_failing_unload_hook_or_release_is_printed_and_the_rest_goes_on(self):
        self.write("good.py", "def __unload__():\n    print('unload good', flush=True)\n")
        self.write("bad.py", """
            import good, modhost
            def fail(_):
                raise KeyError('release failed')
            modhost.acquire(lambda: None, fail)
            def __unload__():
                raise ValueError('unload failed')
            """)
        self.write("plug.py", THREAD_PLUGIN)
        result = self.run_app("import bad, plug\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(sorted(result.stdout.splitlines()), ["halted", "unload good"])
        # As python3 prints an unraisable exception: what was ignored, the traceback, the error.
        self.assertIn("Exception ignored in", result.stderr)
        self.assertIn("Traceback (most recent call last)", result.stderr)
        self.assertIn("ValueError: unload failed", result.stderr)
        self.assertIn("KeyError: 'release failed'", result.stderr)
        self.assertIn("bad.py", result.stderr)

    def test_exit_codes_are_unchanged(self):
        self.write("plug.py", THREAD_PLUGIN)
        result = self.run_app("import plug, sys\nsys.exit(3)\n")
        self.assertEqual((result.returncode, result.stdout), (3, "halted\n"), result.stderr)
        result = self.run_app("import plug\nraise RuntimeError('app failed')\n")
        self.assertEqual((result.returncode, result.stdout), (1, "halted\n"))
        self.assertIn("RuntimeError: app failed", result.stderr)

    def test_atexit_callbacks_run_after_the_unloads_and_can_still_use_the_plugin(self):
        self.write("plug.py", THREAD_PLUGIN + textwrap.dedent("""
            import atexit
            NAME = 'plug'
            def goodbye():
                print('atexit', NAME, server[0].is_alive(), flush=True)
            atexit.register(goodbye)
            def __unload__():
                print('unload plug', flush=True)
            """))
        result = self.run_app("import plug\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines(), ["halted", "unload plug", "atexit plug False"])

    def test_a_module_held_by_others_does_not_keep_the_exit_waiting(self):
        self.write("plug.py", THREAD_PLUGIN + "def hook():\n    return 1\n")
        self.write("user.py", "from plug import hook, server\nKEEP = [hook, server]\n")
        result = self.run_app("import plug, user\nfrom plug import hook\nheld = plug\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "halted\n")

    def test_a_module_that_cannot_be_unloaded_is_named_and_the_exit_goes_on(self):
        self.write("plug.py", THREAD_PLUGIN + "def __unload__():\n    print('unload plug', flush=True)\n")
        self.write("other.py", "def __unload__():\n    print('unload other', flush=True)\n")
        result = self.run_app("""
            import sys, plug, other
            def veto(event, args):
                if event == 'modhost.unload' and args[0] == 'plug':
                    raise PermissionError('plug stays')
            sys.addaudithook(veto)
            """)
        self.assertEqual(result.returncode, 0, result.stderr)
        # Its releases still ran (nothing may keep the exit waiting), its __unload__ did not.
        self.assertEqual(sorted(result.stdout.splitlines()), ["halted", "unload other"])
        self.assertIn("[modhost] at exit, 'plug' was not unloaded: PermissionError: plug stays\n", result.stderr)


if __name__ == "__main__":
    unittest.main()
