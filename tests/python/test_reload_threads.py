"""Other threads see one version of a module while it reloads.

A call from another thread that arrives while a module re-executes waits and
then runs the version the reload committed (the old one if it rolled back),
never a half-executed module; a call already running is waited for, or the
reload refuses with ModuleInUseError naming the thread; the reloading
thread's own frames never count; wait_for_calls=None turns all of it off.
Threads are coordinated with Events held in a helper module, so nothing here
depends on timing: a held thread stays held until the test lets go.
"""
import sys
import textwrap
import threading
import time
import unittest

from cache_fixtures import CacheTestCase, modhost

SYNC = '''
import threading
started = threading.Event()   # the new version's body is running
proceed = threading.Event()   # ... and may finish
inside = threading.Event()    # v1's slow() is running
leave = threading.Event()     # ... and may return
'''

V1 = '''
import {sync} as sync
VERSION = 1
def f():
    return ('code 1', VERSION)
def slow():
    sync.inside.set()
    sync.leave.wait(30)
    return ('code 1', VERSION)
'''

# The new version stops half-way through its body until the test says so.
V2 = '''
import {sync} as sync
sync.started.set()
sync.proceed.wait(30)
VERSION = 2
def f():
    return ('code 2', VERSION)
def slow():
    return ('code 2', VERSION)
{tail}
'''

HOLD = 0.3  # how long a held thread is watched to stay held (it may not return)


class ThreadResult:
    """Runs fn in a named thread and keeps its result or exception."""

    def __init__(self, name, fn):
        self.value = self.error = None
        self.thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.value = fn()
        except BaseException as e:  # the test inspects it
            self.error = e

    def join(self):
        self.thread.join(30)
        assert not self.thread.is_alive(), "thread %s is stuck" % self.thread.name
        return self


class ReloadThreadsTest(CacheTestCase):
    def setUp(self):
        super().setUp()
        self.sync_name = self.mod("sync")
        self.write(self.sync_name, SYNC)
        self.sync = self.load(self.sync_name)
        self.name = self.mod("plug")
        self.write(self.name, V1.replace("{sync}", self.sync_name))
        self.plug = self.load(self.name)
        self.addCleanup(self.sync.leave.set)
        self.addCleanup(self.sync.proceed.set)

    def write_v2(self, tail=""):
        self.write(self.name, V2.replace("{sync}", self.sync_name).replace("{tail}", tail))

    def start_reload(self, **options):
        """Reloads in another thread; returns once the new body is half-way."""
        self.write_v2(options.pop("tail", ""))
        reload = ThreadResult("reloader", lambda: modhost.reload(self.plug, **options))
        self.assertTrue(self.sync.started.wait(30), "the new version never started")
        return reload

    def assertHeld(self, *callers):
        time.sleep(HOLD)
        for caller in callers:
            self.assertTrue(caller.thread.is_alive(), "%s was not held: %r %r"
                            % (caller.thread.name, caller.value, caller.error))

    def reload_with_held_callers(self, deep, tail=""):
        """Reloads to V2 while callers arrive mid-reload (by attribute, through
        an old binding, reading an attribute); checks they are held, lets the
        reload finish and returns (reload, {kind: caller})."""
        self.sync.started.clear()
        self.sync.proceed.clear()
        plug, bound = self.plug, self.plug.f
        reload = self.start_reload(deep=deep, tail=tail)
        callers = {"attribute": ThreadResult("attribute", lambda: plug.f()),
                   "binding": ThreadResult("binding", lambda: bound()),
                   "read": ThreadResult("read", lambda: plug.VERSION)}
        self.assertHeld(*callers.values())
        self.sync.proceed.set()
        reload.join()
        return reload, {kind: caller.join().value for kind, caller in callers.items()}

    def test_calls_arriving_mid_reload_wait_and_run_the_new_version(self):
        for deep in (False, True):
            with self.subTest(deep=deep):
                reload, results = self.reload_with_held_callers(deep)
                self.assertIsNone(reload.error)
                self.assertEqual(results["attribute"], ("code 2", 2))
                self.assertEqual(results["read"], 2)
                # Deep: the function object the binding holds was patched, and the
                # held call was made again on the new code. Plain: an old function
                # object keeps its old code (importlib's semantics), on the new globals.
                self.assertEqual(results["binding"], ("code 2", 2) if deep else ("code 1", 2))
                self.write(self.name, V1.replace("{sync}", self.sync_name))
                modhost.reload(self.plug)

    def test_a_call_made_again_on_patched_code_keeps_its_arguments(self):
        # The held call through an old binding is made again on the code the
        # deep reload patched in, with the arguments its frame had bound:
        # positional, *args, keyword-only and **kwargs (read from the frame
        # through each CPython version's frame layout).
        g = "def g(a, b=0, *rest, key, **kw):\n    return ('code %d', a, b, rest, key, kw)\n"
        self.write(self.name, V1.replace("{sync}", self.sync_name) + g % 1)
        modhost.reload(self.plug)
        bound = self.plug.g
        reload = self.start_reload(deep=True, tail=g % 2)
        caller = ThreadResult("binding", lambda: bound(1, 2, 3, 4, key=5, extra=6))
        self.assertHeld(caller)
        self.sync.proceed.set()
        self.assertIsNone(reload.join().error)
        self.assertEqual(caller.join().value, ("code 2", 1, 2, (3, 4), 5, {"extra": 6}))

    def test_calls_held_by_a_failed_reload_run_the_old_version(self):
        for deep in (False, True):
            with self.subTest(deep=deep):
                reload, results = self.reload_with_held_callers(deep, tail="raise ValueError('v2 is broken')")
                self.assertIsInstance(reload.error, ValueError)
                self.assertEqual(results, {"attribute": ("code 1", 1), "binding": ("code 1", 1), "read": 1})

    def test_reload_waits_for_a_call_already_running(self):
        running = ThreadResult("worker", lambda: self.plug.slow())
        self.assertTrue(self.sync.inside.wait(30))
        self.sync.proceed.set()
        self.write_v2()
        reload = ThreadResult("reloader", lambda: modhost.reload(self.plug, wait_for_calls=30))
        self.assertHeld(reload)
        self.assertFalse(self.sync.started.is_set(), "the new code ran while an old call was running")
        self.sync.leave.set()
        self.assertEqual(running.join().value, ("code 1", 1))  # entirely the old version
        self.assertIsNone(reload.join().error)
        self.assertEqual(self.plug.f(), ("code 2", 2))

    def test_wait_for_calls_inf_waits_as_long_as_the_call_runs(self):
        # inf went through an out-of-range float-to-int conversion and the
        # reload gave up at once "after waiting -9223372036854775808 ms".
        # 1e10 s fit the conversion but overflowed the clock's deadline.
        for forever in (float("inf"), 1e300, 1e10):
            with self.subTest(wait_for_calls=forever):
                for event in (self.sync.inside, self.sync.leave, self.sync.started):
                    event.clear()
                running = ThreadResult("worker", lambda: self.plug.slow())
                self.assertTrue(self.sync.inside.wait(30))
                self.sync.proceed.set()
                self.write_v2()
                reload = ThreadResult("reloader", lambda: modhost.reload(self.plug, wait_for_calls=forever))
                self.assertHeld(reload)
                self.assertFalse(self.sync.started.is_set(), "the new code ran while an old call was running")
                self.sync.leave.set()
                self.assertEqual(running.join().value, ("code 1", 1))
                self.assertIsNone(reload.join().error)
                self.assertEqual(self.plug.f(), ("code 2", 2))
                self.write(self.name, V1.replace("{sync}", self.sync_name))  # slow() waits again
                modhost.reload(self.plug)

    def test_reload_refuses_while_another_thread_stays_in_the_module(self):
        generation = modhost.info(self.name).generation
        running = ThreadResult("worker-" + self.tag, lambda: self.plug.slow())
        self.assertTrue(self.sync.inside.wait(30))
        self.sync.proceed.set()
        self.write_v2()
        with self.assertRaises(modhost.ModuleInUseError) as caught:
            modhost.reload(self.plug, wait_for_calls=0.1)
        error = caught.exception
        self.assertIsInstance(error, RuntimeError)
        self.assertIn("cannot reload '%s'" % self.name, str(error))
        self.assertIn("thread worker-%s frame %s.slow" % (self.tag, self.name), str(error))
        self.assertEqual(len(error.referrers), 1)
        self.assertIn("worker-" + self.tag, error.referrers[0])
        # Nothing happened: the new code never ran, the old version is intact.
        self.assertFalse(self.sync.started.is_set())
        self.assertEqual(self.plug.f(), ("code 1", 1))
        self.assertEqual(modhost.info(self.name).generation, generation)
        self.assertEqual(modhost.info(self.name).state, "loaded")
        self.sync.leave.set()
        self.assertEqual(running.join().value, ("code 1", 1))
        modhost.reload(self.plug)
        self.assertEqual(self.plug.f(), ("code 2", 2))

    def test_the_reloading_threads_own_frames_do_not_count(self):
        # A module reloading itself from its own code (a main loop that
        # applies edits) is not waiting for itself.
        self.write(self.name, V1.replace("{sync}", self.sync_name) +
                   "def reload_me():\n    import modhost, sys\n"
                   "    return modhost.reload(sys.modules[__name__], wait_for_calls=0)\n")
        modhost.reload(self.plug)
        self.sync.proceed.set()
        self.write_v2()
        self.plug.reload_me()
        self.assertEqual(self.plug.f(), ("code 2", 2))

    def test_threads_the_new_code_starts_are_not_held(self):
        # A module that starts a worker at import and waits until it is ready
        # would wait forever if its own worker were held until the reload ends.
        self.write(self.name, V1.replace("{sync}", self.sync_name) + textwrap.dedent('''
            import concurrent.futures, threading
            def _serve(ready):
                ready.set()  # module code, run by the new thread
            def _start():
                ready = threading.Event()
                threading.Thread(target=_serve, args=(ready,)).start()
                with concurrent.futures.ThreadPoolExecutor(2) as pool:
                    pooled = pool.submit(f).result(10)
                return ready.wait(10), pooled
            READY = _start()
        '''))
        modhost.reload(self.plug)
        self.assertEqual(self.plug.READY, (True, ("code 1", 1)))

    def test_wait_for_calls_none_holds_no_one(self):
        plug = self.plug
        reload = self.start_reload(wait_for_calls=None)
        caller = ThreadResult("caller", lambda: plug.f())
        self.assertEqual(caller.join().value, ("code 1", 1))  # ran mid-reload, on the old function
        self.sync.proceed.set()
        self.assertIsNone(reload.join().error)

    def test_the_gate_leaves_the_module_as_it_was(self):
        self.sync.proceed.set()
        self.write_v2()
        modhost.reload(self.plug)
        self.assertIs(type(self.plug), type(sys))
        self.assertIs(sys.modules[self.name], self.plug)

    def test_bad_wait_for_calls(self):
        with self.assertRaisesRegex(ValueError, "wait_for_calls must not be negative"):
            modhost.reload(self.plug, wait_for_calls=-1)
        with self.assertRaisesRegex(TypeError, "wait_for_calls must be a number of seconds or None"):
            modhost.reload(self.plug, wait_for_calls="1")
        with self.assertRaisesRegex(ValueError, "wait_for_calls must be a number of seconds, not nan"):
            modhost.reload(self.plug, wait_for_calls=float("nan"))
        with self.assertRaisesRegex(ValueError, r"wait_for_calls must not be negative, got -inf"):
            modhost.reload(self.plug, wait_for_calls=float("-inf"))
        self.assertEqual(self.plug.f(), ("code 1", 1))


if __name__ == "__main__":
    unittest.main()
