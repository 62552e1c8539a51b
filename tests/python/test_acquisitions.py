"""modhost.acquire / modhost.acquired: what a module acquires from its host follows its reloads, exactly.

Every test runs against a host that refuses duplicate keys (HOST below): had a
reload not released the old registration before the new code registered
again, the registration would raise KeyError and the reload would fail. The
host keeps a log of every register/unregister, so the tests can say exactly
what happened to it. Threads are coordinated with joins and events, never
with sleeps that a slow machine could outrun.
"""
import socket
import sys
import threading
import time
import unittest

from cache_fixtures import CacheTestCase, modhost

HOST = '''
import threading

class DuplicateKey(KeyError):
    pass

class Host:
    """A plugin host that refuses a second registration under the same key."""
    def __init__(self):
        self.items = {}
        self.log = []
        self.lock = threading.Lock()
    def register(self, key, value):
        with self.lock:
            if key in self.items:
                raise DuplicateKey(f"{key!r} is already registered")
            self.items[key] = value
            self.log.append(("+", key))
        return key
    def unregister(self, key):
        with self.lock:
            del self.items[key]
            self.log.append(("-", key))
    def fire(self, prefix, *args):
        return [self.items[k](*args) for k in sorted(self.items) if k.startswith(prefix)]

HOST = Host()
'''


class AcquisitionTestCase(CacheTestCase):
    def setUp(self):
        super().setUp()
        self.host_name = self.mod("host")
        self.write(self.host_name, HOST)
        self.host = self.load(self.host_name).HOST
        self.plug = self.mod("plug")
        self.addCleanup(self._unload_plugins)

    def _unload_plugins(self):
        """Unloads what the test left loaded, so its acquisitions do not outlive it."""
        for name in sorted((n for n in sys.modules if self.tag in n and n != self.host_name), reverse=True):
            if name in sys.modules:
                modhost.unload(name, force=True)

    def plugin(self, body, name=None):
        """Writes a plugin that imports the host as `host` and modhost."""
        self.write(name or self.plug, "import modhost\nfrom %s import HOST as host\n%s" % (self.host_name, body))

    def registration(self, key, value, version=None):
        """Source registering `value` under `key` through modhost.acquire."""
        return "modhost.acquire(lambda: host.register(%r, %s), lambda key: host.unregister(key))\n" % (key, value)

    def capture_unraisable(self):
        """Collects what goes to sys.unraisablehook while the test runs."""
        seen = []
        previous = sys.unraisablehook
        sys.unraisablehook = lambda args: seen.append(args)
        self.addCleanup(setattr, sys, "unraisablehook", previous)
        return seen


class Reloads(AcquisitionTestCase):
    def version(self, n):
        return "VERSION = %d\ndef on_event():\n    return VERSION\n" % n + self.registration("event", "on_event")

    def test_a_keyed_registration_survives_five_reloads_as_exactly_one_the_newest(self):
        self.plugin(self.version(1))
        self.load(self.plug)
        for n in range(2, 7):
            self.plugin(self.version(n))
            modhost.reload(self.plug, deep=(n % 2 == 0))
            self.assertEqual(list(self.host.items), ["event"])
            self.assertEqual(self.host.fire("event"), [n])
        self.assertEqual(self.host.log, [("+", "event")] + [("-", "event"), ("+", "event")] * 5)
        lines = modhost.acquired(self.plug)
        self.assertEqual(len(lines), 1)
        self.assertIn("at %s.py:" % self.plug, lines[0])
        self.assertIn("released by %s.<lambda>" % self.plug, lines[0])

    def test_a_reload_that_acquires_two_things_then_raises_leaves_exactly_the_old_registration(self):
        self.plugin(self.version(1))
        plug = self.load(self.plug)
        old_handler = plug.on_event
        self.plugin("VERSION = 2\ndef on_event():\n    return VERSION\n"
                    + self.registration("event", "on_event")
                    + self.registration("extra", "on_event")
                    + "raise RuntimeError('broken after two registrations')\n")
        with self.assertRaisesRegex(RuntimeError, "broken after two"):
            modhost.reload(self.plug)
        self.assertEqual(list(self.host.items), ["event"])
        self.assertIs(self.host.items["event"], old_handler)
        self.assertEqual(self.host.fire("event"), [1])
        # The new code's two registrations were undone newest first, then the old one came back.
        self.assertEqual(self.host.log, [("+", "event"), ("-", "event"), ("+", "event"), ("+", "extra"),
                                         ("-", "extra"), ("-", "event"), ("+", "event")])
        self.assertEqual(len(modhost.acquired(self.plug)), 1)
        # And reloading keeps working.
        self.plugin(self.version(3))
        modhost.reload(self.plug)
        self.assertEqual(self.host.fire("event"), [3])

    def test_acquisitions_are_made_again_in_their_original_order_with_the_same_callables(self):
        self.plugin("calls = []\n"
                    "def make(key):\n"
                    "    def acquire():\n"
                    "        calls.append(('acquire', key))\n"
                    "        return host.register(key, key)\n"
                    "    return acquire\n"
                    "def release(key):\n"
                    "    calls.append(('release', key))\n"
                    "    host.unregister(key)\n"
                    "ACQUIRES = [make(k) for k in 'abc']\n"
                    "for a in ACQUIRES:\n"
                    "    modhost.acquire(a, release)\n")
        plug = self.load(self.plug)
        acquires, calls = plug.ACQUIRES, plug.calls
        self.write(self.plug, "raise ValueError('no')\n")
        with self.assertRaises(ValueError):
            modhost.reload(self.plug)
        self.assertEqual(calls[3:], [("release", "c"), ("release", "b"), ("release", "a"),
                                     ("acquire", "a"), ("acquire", "b"), ("acquire", "c")])
        self.assertEqual(sorted(self.host.items), ["a", "b", "c"])
        self.assertIs(plug.ACQUIRES, acquires)  # the namespace, and so the callables, are the old ones

    def test_a_failing_dependent_restores_the_targets_registrations_too(self):
        app = self.mod("app")
        self.plugin("def p():\n    return 'p1'\n" + self.registration("p", "p"))
        self.plugin("import %s\ndef a():\n    return 'a1'\n" % self.plug + self.registration("a", "a"), name=app)
        self.load(app)
        old = dict(self.host.items)
        self.plugin("def p():\n    return 'p2'\n" + self.registration("p", "p"))
        self.plugin("import %s\ndef a():\n    return 'a2'\n" % self.plug + self.registration("a", "a")
                    + "raise RuntimeError('app v2 is broken')\n", name=app)
        with self.assertRaisesRegex(RuntimeError, "app v2 is broken"):
            modhost.reload(self.plug, dependents=True)
        self.assertEqual(sorted(self.host.items), ["a", "p"])
        for key in old:
            self.assertIs(self.host.items[key], old[key])
        self.assertEqual(self.host.fire(""), ["a1", "p1"])
        self.assertEqual(modhost.last_reload().failed_module, app)

    def test_a_raising_reload_hook_restores_them(self):
        self.plugin(self.version(1))
        old_handler = self.load(self.plug).on_event
        self.plugin(self.version(2) + "def __reload__(old):\n    raise RuntimeError('refuse hand-over')\n")
        with self.assertRaisesRegex(RuntimeError, "refuse hand-over"):
            modhost.reload(self.plug, deep=True)
        self.assertIs(self.host.items["event"], old_handler)
        self.assertEqual(self.host.fire("event"), [1])

    def test_a_time_limit_restores_them(self):
        self.plugin(self.version(1))
        old_handler = self.load(self.plug).on_event
        self.plugin(self.version(2) + "while True:\n    pass\n")
        with self.assertRaises(modhost.TimeLimitExceeded):
            modhost.reload(self.plug, timeout=0.2)
        self.assertEqual(list(self.host.items), ["event"])
        self.assertIs(self.host.items["event"], old_handler)

    def test_an_unchanged_source_touches_nothing(self):
        self.plugin(self.version(1))
        self.load(self.plug)
        modhost.reload(self.plug, deep=True)
        self.assertEqual(modhost.last_reload().outcome, "unchanged")
        self.assertEqual(self.host.log, [("+", "event")])

    def test_a_listener_deleted_from_the_source_no_longer_fires(self):
        self.plugin("def a():\n    return 'a'\ndef b():\n    return 'b'\n"
                    + self.registration("on_save.a", "a") + self.registration("on_save.b", "b"))
        self.load(self.plug)
        self.assertEqual(self.host.fire("on_save"), ["a", "b"])
        self.plugin("def a():\n    return 'a2'\n" + self.registration("on_save.a", "a"))
        modhost.reload(self.plug, deep=True)
        self.assertEqual(self.host.fire("on_save"), ["a2"])
        self.assertEqual(len(modhost.acquired(self.plug)), 1)

    def test_a_release_that_raises_does_not_skip_the_others_and_is_reported(self):
        seen = self.capture_unraisable()
        self.plugin(self.registration("first", "1")
                    + "def broken(key):\n    raise OSError('release failed: ' + key)\n"
                    + "modhost.acquire(lambda: host.register('second', 2), broken)\n"
                    + self.registration("third", "3"))
        self.load(self.plug)
        self.plugin(self.registration("first", "1"))
        modhost.reload(self.plug)
        # 'third' and 'first' were released although 'second' raised; 'second' stays (its release failed).
        self.assertEqual(sorted(self.host.items), ["first", "second"])
        self.assertEqual(self.host.log[3:], [("-", "third"), ("-", "first"), ("+", "first")])
        errors = modhost.last_reload().acquisition_errors
        self.assertEqual(len(errors), 1)
        self.assertIn("OSError: release failed: second", errors[0])
        self.assertEqual(len(seen), 1)
        self.assertIsInstance(seen[0].exc_value, OSError)

    def test_a_module_that_starts_a_thread_itself_is_refused_with_a_hint(self):
        self.plugin("import threading\nstop = threading.Event()\n"
                    "def loop():\n    while not stop.wait(0.01):\n        pass\n"
                    "threading.Thread(target=loop, daemon=True).start()\n")
        plug = self.load(self.plug)
        self.addCleanup(plug.stop.set)
        with self.assertRaises(modhost.ModuleInUseError) as caught:
            modhost.reload(self.plug, wait_for_calls=0.1)
        self.assertIn("modhost.acquire(start, stop)", str(caught.exception))


class FirstImport(AcquisitionTestCase):
    def test_a_first_import_that_fails_half_way_leaves_nothing_registered(self):
        self.plugin(self.registration("a", "1") + self.registration("b", "2") + "raise RuntimeError('half-way')\n")
        with self.assertRaisesRegex(RuntimeError, "half-way"):
            self.load(self.plug)
        # The import system tells nobody that an import failed: the cache
        # finds out, and releases, at its next call.
        modhost.modules()
        self.assertEqual(self.host.items, {})
        self.assertEqual(self.host.log, [("+", "a"), ("+", "b"), ("-", "b"), ("-", "a")])
        self.plugin(self.registration("a", "1"))
        self.load(self.plug)
        self.assertEqual(list(self.host.items), ["a"])

    def test_an_import_that_fails_inside_another_module_keeps_the_importers_acquisitions(self):
        app = self.mod("app")
        self.plugin(self.registration("plug", "1") + "raise ImportError('optional dependency missing')\n")
        self.write(app, "import modhost\nfrom %s import HOST as host\n" % self.host_name
                   + self.registration("app", "2")
                   + "try:\n    import %s\nexcept ImportError:\n    pass\n" % self.plug)
        self.load(app)
        modhost.modules()  # the cache's next call finds the failed import (see above)
        self.assertEqual(list(self.host.items), ["app"])
        self.assertEqual(len(modhost.acquired(app)), 1)


class Reimport(AcquisitionTestCase):
    def test_a_module_imported_again_after_deleting_it_from_sys_modules_replaces_its_registrations(self):
        self.plugin("def h():\n    return 1\n" + self.registration("h", "h"))
        self.load(self.plug)
        del sys.modules[self.plug]
        self.plugin("def h():\n    return 2\n" + self.registration("h", "h"))
        self.load(self.plug)
        self.assertEqual(self.host.fire("h"), [2])
        self.assertEqual(self.host.log, [("+", "h"), ("-", "h"), ("+", "h")])


class Unload(AcquisitionTestCase):
    def test_unload_leaves_nothing_registered_and_no_thread_running(self):
        self.plugin("import threading\n"
                    "def handler():\n    return 'h'\n"
                    "def worker(stop):\n    while not stop.wait(0.005):\n        pass\n"
                    "def start():\n"
                    "    stop = threading.Event()\n"
                    "    thread = threading.Thread(target=worker, args=(stop,), name='plug-worker')\n"
                    "    thread.start()\n"
                    "    return thread, stop\n"
                    "def halt(started):\n    thread, stop = started\n    stop.set()\n    thread.join()\n"
                    + self.registration("handler", "handler")
                    + "modhost.acquire(start, halt)\n")
        self.load(self.plug)
        self.assertIn("plug-worker", [t.name for t in threading.enumerate()])
        report = modhost.unload(self.plug)
        self.assertEqual(self.host.items, {})
        self.assertNotIn("plug-worker", [t.name for t in threading.enumerate()])
        self.assertTrue(report.freed)
        self.assertEqual(report.acquisition_errors, [])

    def test_a_timer_started_by_the_module_never_fires_after_unload(self):
        fired = []
        sys.modules[self.host_name].FIRED = fired
        self.plugin("import threading\n"
                    "from %s import FIRED\n"
                    "def start():\n"
                    "    timer = threading.Timer(30, FIRED.append, args=('fired',))\n"
                    "    timer.start()\n"
                    "    return timer\n"
                    "def cancel(timer):\n    timer.cancel()\n    timer.join()\n"
                    "TIMER = modhost.acquire(start, cancel)\n" % self.host_name)
        timer = self.load(self.plug).TIMER
        modhost.unload(self.plug)
        self.assertFalse(timer.is_alive())
        self.assertEqual(fired, [])

    def test_unload_releases_newest_first_and_reports_a_raising_release(self):
        seen = self.capture_unraisable()
        self.plugin(self.registration("a", "1")
                    + "modhost.acquire(lambda: None, lambda _: 1 / 0)\n"
                    + self.registration("b", "2"))
        self.load(self.plug)
        report = modhost.unload(self.plug)
        self.assertEqual(self.host.items, {})
        self.assertEqual(self.host.log[2:], [("-", "b"), ("-", "a")])
        self.assertEqual(len(report.acquisition_errors), 1)
        self.assertIn("ZeroDivisionError", report.acquisition_errors[0])
        self.assertIn("unload of '%s'" % self.plug, report.acquisition_errors[0])
        self.assertEqual(len(seen), 1)

    def test_a_refused_unload_acquires_them_again_with_the_same_callables(self):
        app = self.mod("app")
        self.plugin("def handler():\n    return 'h'\n" + self.registration("h", "handler"))
        self.write(app, "import %s\n" % self.plug)
        self.load(app)
        handler = self.host.items["h"]
        with self.assertRaises(modhost.ModuleInUseError):
            modhost.unload(self.plug)
        self.assertIs(self.host.items["h"], handler)
        self.assertEqual(self.host.log, [("+", "h"), ("-", "h"), ("+", "h")])
        self.assertEqual(len(modhost.acquired(self.plug)), 1)

    def test_unload_hook_runs_after_the_releases(self):
        self.plugin(self.registration("h", "1")
                    + "SEEN = []\n"
                    + "def __unload__():\n    SEEN.append(sorted(host.items))\n")
        seen = self.load(self.plug).SEEN
        modhost.unload(self.plug)
        self.assertEqual(seen, [[]])


class Threads(AcquisitionTestCase):
    def test_a_server_thread_is_stopped_and_restarted_by_a_reload_with_no_overlap_on_its_port(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        events = []
        sys.modules[self.host_name].EVENTS = events
        server = ("import socket, threading\n"
                  "from %s import EVENTS\n"
                  "VERSION = {version}\n"
                  "PORT = %d\n"
                  "def serve(listener, stop):\n"
                  "    while not stop.is_set():\n"
                  "        try:\n"
                  "            connection, _ = listener.accept()\n"
                  "        except socket.timeout:\n"
                  "            continue\n"
                  "        with connection:\n"
                  "            connection.sendall(b'version %%d' %% VERSION)\n"
                  "def start():\n"
                  "    listener = socket.socket()\n"
                  "    # SO_REUSEADDR (as servers set it) lets a bind follow a closed listener's\n"
                  "    # connections in TIME_WAIT, never a listener still open.\n"
                  "    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                  "    listener.bind(('127.0.0.1', PORT))\n"
                  "    listener.listen()\n"
                  "    listener.settimeout(0.01)\n"
                  "    stop = threading.Event()\n"
                  "    thread = threading.Thread(target=serve, args=(listener, stop))\n"
                  "    thread.start()\n"
                  "    EVENTS.append(('start', VERSION))\n"
                  "    return thread, stop, listener\n"
                  "def stop(started):\n"
                  "    thread, stop, listener = started\n"
                  "    stop.set()\n"
                  "    thread.join()\n"
                  "    listener.close()\n"
                  "    EVENTS.append(('stop', VERSION))\n"
                  "modhost.acquire(start, stop)\n") % (self.host_name, port)

        def ask():
            with socket.create_connection(("127.0.0.1", port)) as c:
                return c.recv(64).decode()

        self.plugin(server.replace("{version}", "1"))
        self.load(self.plug)
        self.assertEqual(ask(), "version 1")
        for version in (2, 3):
            self.plugin(server.replace("{version}", str(version)))
            modhost.reload(self.plug)
            self.assertEqual(ask(), "version %d" % version)
        self.assertEqual(events, [("start", 1), ("stop", 1), ("start", 2), ("stop", 2), ("start", 3)])
        modhost.unload(self.plug)
        self.assertEqual(events[-1], ("stop", 3))
        with self.assertRaises(ConnectionRefusedError):
            ask()


class Autoreload(AcquisitionTestCase):
    """modhost.check(), the path a live edit takes (deep, with dependents, read once quiet)."""

    def check_until(self, done):
        deadline = time.monotonic() + 30
        while not done() and time.monotonic() < deadline:
            modhost.check()
            time.sleep(0.002)
        self.assertTrue(done(), "check() did not get there within 30 s")

    def test_a_saved_edit_and_a_broken_save_move_the_registration_exactly(self):
        self.addCleanup(modhost.autoreload, "off")
        modhost.autoreload("explicit")
        source = "def on_event():\n    return %r\n" + self.registration("event", "on_event")
        self.plugin(source % "v1")
        self.load(self.plug)
        modhost.watch(self.plug)
        modhost.check()
        self.plugin(source % "v2")
        self.check_until(lambda: self.host.fire("event") == ["v2"])
        self.plugin(source % "v3" + "raise RuntimeError('saved half-done')\n")
        self.check_until(lambda: modhost.info(self.plug).state == "failed")
        # The same acquire callable ran again against the restored namespace: a deep
        # reload keeps each function's identity, so it registered the module's own on_event.
        self.assertEqual(list(self.host.items), ["event"])
        self.assertIs(self.host.items["event"], sys.modules[self.plug].on_event)
        self.assertEqual(self.host.fire("event"), ["v2"])
        self.assertEqual(self.host.log[-2:], [("-", "event"), ("+", "event")])


class Attribution(AcquisitionTestCase):
    def test_a_call_from_code_of_no_tracked_module_is_a_value_error(self):
        with self.assertRaisesRegex(ValueError, "no tracked module|never reloaded or unloaded"):
            modhost.acquire(lambda: None, lambda _: None)  # this test runs as __main__
        with self.assertRaisesRegex(ValueError, "no tracked module"):
            exec("import modhost\nmodhost.acquire(lambda: None, lambda _: None)", {"__name__": "nowhere"})

    def test_module_names_the_owner_of_a_call_from_elsewhere(self):
        self.plugin("VERSION = 1\n")
        self.load(self.plug)
        released = []
        result = modhost.acquire(lambda: self.host.register("k", 1), released.append, module=self.plug)
        self.assertEqual(result, "k")
        self.assertEqual(len(modhost.acquired(self.plug)), 1)
        self.plugin("VERSION = 2\n")
        modhost.reload(self.plug)
        self.assertEqual(released, ["k"])
        self.assertEqual(modhost.acquired(self.plug), [])

    def test_a_function_of_the_module_called_later_acquires_for_it(self):
        self.plugin("def start():\n" + "    " + self.registration("late", "1"))
        self.load(self.plug).start()
        self.assertEqual(len(modhost.acquired(self.plug)), 1)
        modhost.unload(self.plug)
        self.assertEqual(self.host.items, {})

    def test_a_release_that_cannot_take_the_result_is_refused_before_anything_is_acquired(self):
        self.plugin("import sys\n")
        self.load(self.plug)
        with self.assertRaisesRegex(TypeError, "must take one argument"):
            modhost.acquire(lambda: self.host.register("k", 1), lambda: None, module=self.plug)
        self.assertEqual(self.host.items, {})

    def test_nothing_is_recorded_when_acquire_raises(self):
        self.plugin("import sys\n")
        self.load(self.plug)
        with self.assertRaises(ZeroDivisionError):
            modhost.acquire(lambda: 1 / 0, lambda _: None, module=self.plug)
        self.assertEqual(modhost.acquired(self.plug), [])


if __name__ == "__main__":
    unittest.main()
