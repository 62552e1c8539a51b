"""Reloads, unloads and imports on several threads at once: one of two
conflicting calls is refused with a clear error, nothing waits for ever, and
the cache stays consistent.

Threads are coordinated with Events held in a helper module, so the tests
hit the window they mean every time. A watchdog dumps every thread's stack
and ends the process if a test hangs (a deadlock is the failure looked for).
"""
import faulthandler
import sys
import unittest

from cache_fixtures import CacheTestCase, modhost
from test_reload_threads import ThreadResult

SYNC = """
import threading
entered = threading.Event()   # __unload__ / x's top level is running
proceed = threading.Event()   # ... and may go on
reloading = threading.Event() # the new version's top level is running
"""

HANG_LIMIT = 60  # seconds: far beyond any of these tests' own run time


class RacesTest(CacheTestCase):
    def setUp(self):
        super().setUp()
        faulthandler.dump_traceback_later(HANG_LIMIT, exit=True)
        self.addCleanup(faulthandler.cancel_dump_traceback_later)
        self.sync_name = self.mod("sync")
        self.write(self.sync_name, SYNC)
        self.sync = self.load(self.sync_name)
        self.plug = self.mod("plug")

    def start_an_unload_that_waits_in_unload_hook(self):
        """Another thread unloads plug and waits in its __unload__ until proceed is set."""
        self.write(self.plug, f"""
            import {self.sync_name} as sync
            def __unload__():
                sync.entered.set()
                sync.proceed.wait(30)
            """)
        self.load(self.plug)
        unloader = ThreadResult("unloader", lambda: modhost.unload(self.plug))
        self.assertTrue(self.sync.entered.wait(30))
        return unloader

    def test_a_reload_requested_while_an_unload_runs_is_refused(self):
        # The unload has checked that nobody reloads the module and runs
        # Python code (its __unload__) when the reload arrives: before the
        # fix the reload went on with the entry the unload then freed.
        unloader = self.start_an_unload_that_waits_in_unload_hook()
        with self.assertRaises(RuntimeError) as caught:
            modhost.reload(self.plug)
        self.assertIn("being unloaded", str(caught.exception))
        self.assertIn(self.plug, str(caught.exception))
        self.sync.proceed.set()
        unloader.join()
        self.assertIsNone(unloader.error)
        self.assertEqual(unloader.value.unloaded, [self.plug])
        self.assertNotIn(self.plug, sys.modules)
        self.assertNotIn(self.plug, modhost.modules())
        # The name is free again: a new import is tracked from generation 1.
        self.load(self.plug)
        self.assertEqual(modhost.info(self.plug).generation, 1)

    def test_an_unload_requested_while_an_unload_runs_is_refused(self):
        unloader = self.start_an_unload_that_waits_in_unload_hook()
        with self.assertRaises(RuntimeError) as caught:
            modhost.unload(self.plug)
        self.assertIn("being unloaded", str(caught.exception))
        self.sync.proceed.set()
        unloader.join()
        self.assertIsNone(unloader.error)
        self.assertNotIn(self.plug, modhost.modules())

    def test_an_unload_requested_while_a_reload_runs_is_refused(self):
        self.write(self.plug, "VERSION = 1\n")
        self.load(self.plug)
        self.write(self.plug, f"""
            import {self.sync_name} as sync
            sync.reloading.set()
            sync.proceed.wait(30)
            VERSION = 2
            """)
        reloader = ThreadResult("reloader", lambda: modhost.reload(self.plug))
        self.assertTrue(self.sync.reloading.wait(30))
        with self.assertRaises(RuntimeError) as caught:
            modhost.unload(self.plug)
        self.assertIn("being reloaded", str(caught.exception))
        self.sync.proceed.set()
        reloader.join()
        self.assertIsNone(reloader.error)
        self.assertEqual(sys.modules[self.plug].VERSION, 2)
        self.assertEqual(modhost.info(self.plug).generation, 2)

    def test_a_thread_importing_what_the_new_code_imports_is_not_held_by_the_gate(self):
        # Thread T imports x, whose top level does `from plug import f` while
        # plug is reloading: the gate holds T out of plug. The new plug
        # imports x, so the reload waits for x's module lock, which T holds.
        # Before the fix both waited for ever.
        x = self.mod("x")
        self.write(self.plug, "def f():\n    return 1\n")
        self.load(self.plug)
        self.write(x, f"""
            import {self.sync_name} as sync
            sync.entered.set()
            sync.reloading.wait(30)
            from {self.plug} import f
            """)
        self.write(self.plug, f"""
            import {self.sync_name} as sync
            sync.reloading.set()
            import {x}
            def f():
                return 2
            """)
        importer = ThreadResult("importer", lambda: __import__(x))
        self.assertTrue(self.sync.entered.wait(30))
        modhost.reload(self.plug)
        importer.join()
        self.assertIsNone(importer.error)
        self.assertEqual(sys.modules[self.plug].f(), 2)
        # x ran while plug's new code was half-way, as with importlib.reload:
        # it took the f that was there then.
        self.assertEqual(sys.modules[x].f(), 1)
        self.assertEqual(modhost.info(self.plug).state, "loaded")

    def test_a_dependent_another_thread_is_still_importing_is_not_rerun_under_its_import(self):
        # dep's import has begun (its edges are known) when plug is reloaded
        # with its dependents: re-running dep then would run its top level a
        # second time, at once, in the namespace its import is filling (the
        # race harness saw the import come back without its globals).
        dep = self.mod("dep")
        self.write(self.plug, "def f():\n    return 1\n")
        self.load(self.plug)
        self.write(dep, f"""
            import {self.sync_name} as sync
            sync.runs = getattr(sync, "runs", 0) + 1
            if sync.runs == 1:
                sync.entered.set()
                sync.proceed.wait(30)
            from {self.plug} import f
            RESULT = f()
            """)
        importer = ThreadResult("importer", lambda: __import__(dep))
        self.assertTrue(self.sync.entered.wait(30))
        self.write(self.plug, "def f():\n    return 2\n")
        modhost.reload(self.plug, deep=True, dependents=True)
        self.assertEqual(modhost.last_reload().reexecuted, [self.plug])
        self.sync.proceed.set()
        importer.join()
        self.assertIsNone(importer.error)
        self.assertEqual(self.sync.runs, 1)
        self.assertEqual(sys.modules[dep].RESULT, 2)


if __name__ == "__main__":
    unittest.main()
