"""modhost.unload, refcount and referrers: refuse while something holds the module, name who.

The test methods never keep the module under test in a local variable when
they unload it or count references: a test's own frame is a holder too.
"""
import gc
import importlib
import sys
import threading
import unittest
import weakref

from cache_fixtures import CacheTestCase, modhost

PLUG = """
def hook():
    return 'plug v1'

class Widget:
    pass

def run(event):
    event.wait(30)
    return 'ran'
"""


class Unload(CacheTestCase):
    def setUp(self):
        super().setUp()
        self.plug = self.mod("plug")
        self.app = self.mod("app")
        self.write(self.plug, PLUG)

    def assertRefusedWith(self, name, expected_fragments):
        """unload(name) raises ModuleInUseError whose referrers name the holder."""
        with self.assertRaises(modhost.ModuleInUseError) as caught:
            modhost.unload(name)
        error = caught.exception
        self.assertIsInstance(error, RuntimeError)
        self.assertEqual(error.name, name)
        matching = [r for r in error.referrers if all(f in r for f in expected_fragments)]
        self.assertTrue(matching, "no referrer mentions %r: %r" % (expected_fragments, error.referrers))
        self.assertIn(name, str(error))
        # Nothing was removed and the module still works.
        self.assertIn(name, sys.modules)
        self.assertIn(name, modhost.modules())
        self.assertEqual(sys.modules[name].hook(), "plug v1")
        return error

    def test_refuses_while_another_module_global_holds_it(self):
        self.write(self.app, f"import {self.plug}\n")
        self.load(self.app)

        error = self.assertRefusedWith(self.plug, [])
        self.assertIn(f"module '{self.app}' global '{self.plug}'", error.referrers)
        self.assertIn(f"module '{self.app}' global '{self.plug}'", modhost.referrers(self.plug))

    def test_refuses_while_a_from_import_binding_exists(self):
        self.write(self.app, f"from {self.plug} import hook\n")
        self.load(self.app)

        error = self.assertRefusedWith(self.plug, [])
        self.assertIn(f"module '{self.app}' global 'hook' (function {self.plug}.hook)", error.referrers)

    def test_refuses_while_an_instance_is_held_in_another_modules_list(self):
        self.write(self.app, "items = []\n")
        self.load(self.app)
        self.load(self.plug)
        sys.modules[self.app].items.append(sys.modules[self.plug].Widget())

        self.assertRefusedWith(self.plug, [self.app, "items", f"{self.plug}.Widget"])

    def test_refuses_while_a_thread_runs_its_code(self):
        self.load(self.plug)
        event = threading.Event()
        thread = threading.Thread(target=sys.modules[self.plug].run, args=(event,), name="plug-runner")
        thread.start()
        self.addCleanup(thread.join, 30)
        self.addCleanup(event.set)
        try:
            self.assertRefusedWith(self.plug, ["thread", "plug-runner", f"{self.plug}.run"])
        finally:
            event.set()
            thread.join(30)
        self.assertFalse(thread.is_alive())
        del thread
        gc.collect()
        report = modhost.unload(self.plug)
        self.assertEqual(report.unloaded, [self.plug])

    def test_after_the_holders_go_unload_succeeds_and_the_module_dies(self):
        self.write(self.app, f"import {self.plug}\nfrom {self.plug} import hook\n")
        self.load(self.app)
        self.assertRefusedWith(self.plug, [])
        del sys.modules[self.app].hook
        delattr(sys.modules[self.app], self.plug)
        ref = weakref.ref(sys.modules[self.plug])

        report = modhost.unload(self.plug)

        self.assertEqual(report.unloaded, [self.plug])
        self.assertEqual(list(report.lingering), [])
        self.assertTrue(report.freed)
        self.assertNotIn(self.plug, sys.modules)
        self.assertNotIn(self.plug, modhost.modules())
        gc.collect()
        self.assertIsNone(ref())

    def test_a_later_import_loads_fresh_code(self):
        self.load(self.plug)
        modhost.unload(self.plug)
        self.write(self.plug, "def hook():\n    return 'plug v2'\n")

        fresh = self.load(self.plug)

        self.assertEqual(fresh.hook(), "plug v2")
        self.assertEqual(modhost.info(self.plug).generation, 1)
        self.assertEqual(modhost.info(self.plug).state, "loaded")

    def test_a_later_import_after_a_same_size_edit_loads_fresh_code(self):
        saved = sys.dont_write_bytecode
        sys.dont_write_bytecode = False
        self.addCleanup(setattr, sys, "dont_write_bytecode", saved)
        self.write(self.plug, "def hook():\n    return 'plug v1'\n")
        self.load(self.plug)
        self.write_same_stat(self.plug, "def hook():\n    return 'plug v2'\n")
        modhost.unload(self.plug)

        self.assertEqual(self.load(self.plug).hook(), "plug v2")

    def test_force_unloads_anyway_and_reports_lingering_holders(self):
        self.write(self.app, f"import {self.plug}\nfrom {self.plug} import hook\n")
        self.load(self.app)

        report = modhost.unload(self.plug, force=True)

        self.assertEqual(report.unloaded, [self.plug])
        self.assertIn(f"module '{self.app}' global '{self.plug}'", report.lingering)
        self.assertIn(f"module '{self.app}' global 'hook' (function {self.plug}.hook)", report.lingering)
        self.assertFalse(report.freed)
        self.assertNotIn(self.plug, sys.modules)
        self.assertNotIn(self.plug, modhost.modules())
        # The holder keeps running the old code it holds.
        self.assertEqual(sys.modules[self.app].hook(), "plug v1")

    def test_unloading_a_package_takes_its_loaded_submodules(self):
        pkg = self.mod("pkg")
        self.write(pkg, "", package=True)
        self.write(pkg + ".sub", "VALUE = 1\n", package=True)
        self.write(pkg + ".sub.deep", "VALUE = 2\n")
        self.load(pkg + ".sub.deep")
        refs = [weakref.ref(sys.modules[n]) for n in (pkg, pkg + ".sub", pkg + ".sub.deep")]

        report = modhost.unload(pkg)

        self.assertEqual(report.unloaded, [pkg + ".sub.deep", pkg + ".sub", pkg])
        for name in (pkg, pkg + ".sub", pkg + ".sub.deep"):
            self.assertNotIn(name, sys.modules)
            self.assertNotIn(name, modhost.modules())
        gc.collect()
        self.assertEqual([r() for r in refs], [None, None, None])

    def test_a_package_whose_submodule_is_held_is_refused_as_a_whole(self):
        pkg = self.mod("pkg")
        self.write(pkg, "", package=True)
        self.write(pkg + ".sub", "def f():\n    return 'sub'\n")
        self.write(self.app, f"from {pkg}.sub import f\n")
        self.load(self.app)

        with self.assertRaises(modhost.ModuleInUseError) as caught:
            modhost.unload(pkg)

        self.assertTrue(any(f"module '{self.app}' global 'f' (function {pkg}.sub.f)" == r
                            for r in caught.exception.referrers), caught.exception.referrers)
        self.assertIn(pkg, sys.modules)
        self.assertIn(pkg + ".sub", sys.modules)
        self.assertEqual(sys.modules[pkg + ".sub"].f(), "sub")

    def test_unload_of_a_module_never_imported_is_an_import_error(self):
        with self.assertRaises(ImportError):
            modhost.unload(self.mod("never"))

    def test_unload_refuses_sys_and_builtin_modules(self):
        for name in ("sys", "builtins", "__main__", "modhost"):
            with self.subTest(name=name), self.assertRaises(ValueError):
                modhost.unload(name)
        self.assertIn("sys", sys.modules)
        self.assertIn("modhost", sys.modules)

    def test_unload_refuses_the_import_machinery_and_its_package(self):
        # An unload let the next import load a second copy of the import
        # system; unload('importlib') took importlib._bootstrap with it.
        for name in ("_frozen_importlib", "_frozen_importlib_external", "importlib._bootstrap",
                     "importlib._bootstrap_external", "zipimport", "_imp"):
            with self.subTest(name=name):
                module = importlib.import_module(name)
                with self.assertRaises(ValueError) as caught:
                    modhost.unload(name)
                self.assertIn("modhost refuses to unload '%s': it is part of the import machinery" % name,
                              str(caught.exception))
                self.assertIs(sys.modules[name], module)
        package = sys.modules["importlib"]
        with self.assertRaises(ValueError) as caught:
            modhost.unload("importlib", force=True)
        self.assertIn("modhost refuses to unload 'importlib': its submodule 'importlib._bootstrap", str(caught.exception))
        self.assertIn("import machinery", str(caught.exception))
        self.assertIs(sys.modules["importlib"], package)
        self.assertIs(sys.modules["importlib._bootstrap"], package._bootstrap)
        name = self.mod("after")
        self.write(name, "VALUE = 'imported'\n")
        self.assertEqual(importlib.import_module(name).VALUE, "imported")


class UnloadFindsIndirectHolders(CacheTestCase):
    """Holders of the module's code that are not a module global one level deep.

    docs/design.md: unload refuses while *anything* outside sys.modules and the cache
    holds the module or its code. A host typically keeps plugin callbacks in a
    registry object, not in a module global.
    """

    def setUp(self):
        super().setUp()
        self.plug = self.mod("plug")
        self.app = self.mod("app")
        self.write(self.plug, PLUG + "\ndef counter():\n    yield 1\n    yield 2\n")
        self.load(self.plug)

    def assertRefusedMentioning(self, fragment):
        with self.assertRaises(modhost.ModuleInUseError) as caught:
            modhost.unload(self.plug)
        self.assertTrue(any(fragment in r for r in caught.exception.referrers), caught.exception.referrers)
        self.assertIn(self.plug, sys.modules)
        self.assertGreater(len(modhost.referrers(self.plug)), 0)

    def test_callback_kept_in_a_registry_object(self):
        self.write(self.app, """
            class Registry:
                def __init__(self):
                    self.callbacks = []
            registry = Registry()
        """)
        self.load(self.app)
        sys.modules[self.app].registry.callbacks.append(sys.modules[self.plug].hook)

        self.assertRefusedMentioning(f"{self.plug}.hook")

    def test_callback_nested_two_containers_deep(self):
        self.write(self.app, "handlers = {'on_event': []}\n")
        self.load(self.app)
        sys.modules[self.app].handlers["on_event"].append(sys.modules[self.plug].hook)

        self.assertRefusedMentioning(f"{self.plug}.hook")

    def test_functools_partial_of_its_function(self):
        self.write(self.app, "import functools\ncallback = None\n")
        self.load(self.app)
        sys.modules[self.app].callback = __import__("functools").partial(sys.modules[self.plug].hook)

        self.assertRefusedMentioning(f"{self.plug}.hook")

    def test_subclass_of_its_class_in_another_module(self):
        self.write(self.app, f"""
            from {self.plug} import Widget as _Base
            class Mine(_Base):
                pass
            del _Base
        """)
        self.load(self.app)

        self.assertRefusedMentioning(f"{self.plug}.Widget")

    def test_suspended_generator_running_its_code(self):
        self.write(self.app, "gen = None\n")
        self.load(self.app)
        sys.modules[self.app].gen = sys.modules[self.plug].counter()
        self.assertEqual(next(sys.modules[self.app].gen), 1)

        self.assertRefusedMentioning(f"{self.plug}.counter")


class RefcountAndReferrers(CacheTestCase):
    def test_zero_for_a_module_nothing_else_holds(self):
        name = self.mod("plug")
        self.write(name, "VALUE = 1\n")
        self.load(name)  # the returned module is not kept

        self.assertEqual(modhost.refcount(name), 0)
        self.assertEqual(modhost.referrers(name), [])

    def test_zero_for_a_submodule_held_only_by_its_package_attribute(self):
        pkg = self.mod("pkg")
        self.write(pkg, "", package=True)
        self.write(pkg + ".sub", "VALUE = 1\n")
        self.load(pkg + ".sub")
        self.assertIs(getattr(sys.modules[pkg], "sub"), sys.modules[pkg + ".sub"])

        self.assertEqual(modhost.refcount(pkg + ".sub"), 0)

    def test_one_after_another_module_keeps_a_reference(self):
        name, holder = self.mod("plug"), self.mod("holder")
        self.write(name, "VALUE = 1\n")
        self.write(holder, "ref = None\n")
        self.load(name)
        self.load(holder)

        sys.modules[holder].ref = sys.modules[name]

        self.assertEqual(modhost.refcount(name), 1)
        self.assertEqual(modhost.referrers(name), [f"module '{holder}' global 'ref'"])

        sys.modules[holder].ref = None
        self.assertEqual(modhost.refcount(name), 0)
        self.assertEqual(modhost.referrers(name), [])

    def test_a_local_variable_of_a_running_frame_counts(self):
        name = self.mod("plug")
        self.write(name, "VALUE = 1\n")
        held = self.load(name)

        self.assertEqual(modhost.refcount(name), 1)
        self.assertTrue(any("local 'held'" in r for r in modhost.referrers(name)), modhost.referrers(name))
        del held

    def test_a_module_on_another_threads_running_frame_is_not_free(self):
        # While use() waits inside wait(), the module is a local of use()'s frame
        # and an argument on its evaluation stack. Since 3.14 the stack copy is
        # a borrowed reference (LOAD_FAST_BORROW) that Py_REFCNT does not count:
        # what counts is the local, and the module must not be declared free.
        name, user = self.mod("plug"), self.mod("user")
        self.write(name, "VALUE = 1\n")
        self.write(user, "import sys, threading\n"
                         "waiting, release = threading.Event(), threading.Event()\n"
                         "def wait():\n    waiting.set()\n    release.wait(10)\n    return 0\n"
                         "def consume(module, _):\n    return module.VALUE\n"
                         f"def use():\n    module = sys.modules[{name!r}]\n"
                         "    return consume(module, wait())\n")
        self.load(name)
        self.load(user)
        results = []
        thread = threading.Thread(target=lambda: results.append(sys.modules[user].use()))
        thread.start()
        try:
            self.assertTrue(sys.modules[user].waiting.wait(10))

            self.assertGreaterEqual(modhost.refcount(name), 1)
            referrers = modhost.referrers(name)
            self.assertTrue(any("local 'module'" in r for r in referrers), referrers)
            with self.assertRaises(modhost.ModuleInUseError) as refused:
                modhost.unload(name)
            self.assertTrue(any("local 'module'" in r for r in refused.exception.referrers),
                            refused.exception.referrers)
            self.assertIn(name, sys.modules)
        finally:
            sys.modules[user].release.set()
            thread.join(10)
        self.assertEqual(results, [1])
        self.assertEqual(modhost.refcount(name), 0)

    def test_a_holder_the_scan_cannot_name_is_still_counted_beside_a_local(self):
        # A reference from where the scan does not look (an attribute of an
        # object) is reported as a count, also while a running frame's local
        # holds the module: the local is counted as many times as it really
        # references the module (frame locals are a view since 3.13, PEP 667,
        # and a dict the frame keeps before).
        name, holder = self.mod("plug"), self.mod("holder")
        self.write(name, "VALUE = 1\n")
        self.write(holder, "import types\nbox = types.SimpleNamespace()\n")
        self.load(holder)
        sys.modules[holder].box.module = self.load(name)
        held = sys.modules[name]

        referrers = modhost.referrers(name)

        self.assertTrue(any("local 'held'" in r for r in referrers), referrers)
        self.assertIn(f"1 other reference to module '{name}' (from C++ or an object the scan does not reach)",
                      referrers)
        del held

    def test_a_leaf_submodule_held_only_by_its_package_attribute_unloads(self):
        pkg = self.mod("pkg")
        self.write(pkg, "", package=True)
        self.write(pkg + ".sub", "VALUE = 1\n")
        self.load(pkg + ".sub")
        self.assertEqual(modhost.refcount(pkg + ".sub"), 0)
        self.assertEqual(modhost.referrers(pkg + ".sub"), [])

        report = modhost.unload(pkg + ".sub")

        self.assertEqual(report.unloaded, [pkg + ".sub"])
        self.assertTrue(report.freed)
        self.assertNotIn(pkg + ".sub", sys.modules)
        self.assertFalse(hasattr(sys.modules[pkg], "sub"))  # as if it had never been imported
        self.assertEqual(self.load(pkg + ".sub").VALUE, 1)
        self.assertIs(sys.modules[pkg].sub, sys.modules[pkg + ".sub"])

    def test_a_module_defining_a_metaclass_can_be_examined_and_unloaded(self):
        name = self.mod("meta")
        self.write(name, "class Meta(type):\n    pass\nclass Cls(metaclass=Meta):\n    pass\n"
                         "class Sub(Cls):\n    pass\n")
        self.load(name)

        self.assertEqual(modhost.referrers(name), [])
        report = modhost.unload(name)

        self.assertEqual(report.unloaded, [name])
        self.assertNotIn(name, sys.modules)

    def test_a_metaclass_subclassed_in_another_module_is_named_and_force_unloads(self):
        name, other = self.mod("meta"), self.mod("other")
        self.write(name, "class Meta(type):\n    pass\n")
        self.write(other, f"from {name} import Meta\nclass Sub(Meta):\n    pass\ndel Meta\n")
        self.load(other)

        self.assertIn(f"class {name}.Meta subclassed by class {other}.Sub", modhost.referrers(name))
        with self.assertRaises(modhost.ModuleInUseError):
            modhost.unload(name)
        report = modhost.unload(name, force=True)
        self.assertEqual(report.unloaded, [name])


    def test_type_hints_naming_its_classes_do_not_hold_it(self):
        # typing caches Optional[Widget] (and the tuple that keyed it) for every
        # module that ever wrote the hint; the module's own annotations hold them too.
        name = self.mod("hinted")
        self.write(name, "import typing\nclass Widget:\n    size: typing.Optional['Widget'] = None\n"
                         "def make(x: typing.Optional[Widget]) -> typing.List[Widget]:\n    return [x]\n")
        self.load(name)

        self.assertEqual(modhost.referrers(name), [])
        self.assertEqual(modhost.unload(name).unloaded, [name])

    def test_referrers_never_evaluate_a_proxy_global(self):
        name = self.mod("proxied")
        self.write(name, """
EVALUATED = []
class Proxy:
    def __getattr__(self, attribute):
        EVALUATED.append(attribute)
        raise RuntimeError("working outside of a request")
    __class__ = property(lambda self: self.__getattr__("__class__"))
request = Proxy()
""")
        self.load(name)

        self.assertEqual(modhost.referrers(name), [])
        self.assertEqual(sys.modules[name].EVALUATED, [])

    def test_an_instance_held_by_a_dict_names_the_dict(self):
        name, holder = self.mod("plug"), self.mod("holder")
        self.write(name, "class Widget:\n    pass\n")
        self.write(holder, "CACHE = {}\n")
        self.load(name)
        self.load(holder)
        sys.modules[holder].CACHE["key"] = {"inner": sys.modules[name].Widget()}

        self.assertEqual(modhost.referrers(name), ["instance of %s.Widget held by a dict" % name])

    def test_refcount_of_a_module_never_imported_is_an_import_error(self):
        with self.assertRaises(ImportError):
            modhost.refcount(self.mod("never"))
        with self.assertRaises(ImportError):
            modhost.referrers(self.mod("never"))



HOOKS = """
import signal

def hook(*args):
    return 'plug v1'

def other(*args):
    return 'other'

class Tracer:
    def trace(self, frame, event, arg):
        return None
"""


class UnloadFindsInterpreterHooks(CacheTestCase):
    """Holders the interpreter itself calls, most of them out of gc's sight.

    Unloading a module one of them holds would leave its old code running when
    the signal arrives, the process exits, an audit event or an unhandled
    exception happens, or the next call is profiled: unload must refuse and
    name the hook, and force=True must report it as lingering.
    """

    def setUp(self):
        super().setUp()
        self.plug = self.mod("plug")
        self.write(self.plug, HOOKS)
        self.load(self.plug)

    def code(self, attribute):
        return getattr(sys.modules[self.plug], attribute)

    def assertHeldBy(self, expected):
        """referrers() names `expected`, unload refuses naming it, force unloads and reports it."""
        self.assertIn(expected, modhost.referrers(self.plug))
        with self.assertRaises(modhost.ModuleInUseError) as caught:
            modhost.unload(self.plug)
        self.assertIn(expected, caught.exception.referrers)
        self.assertIn(self.plug, sys.modules)
        self.assertIn(self.plug, modhost.modules())

        report = modhost.unload(self.plug, force=True)

        self.assertEqual(report.unloaded, [self.plug])
        self.assertIn(expected, report.lingering)

    def test_a_signal_handler(self):
        import signal
        previous = signal.signal(signal.SIGUSR1, self.code("hook"))
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)

        self.assertHeldBy(f"signal handler for SIGUSR1 (function {self.plug}.hook)")
        # What the refusal protects: the old handler still runs on the signal.
        self.assertIs(signal.getsignal(signal.SIGUSR1).__globals__["__name__"], self.plug)

    def test_an_atexit_callback_and_a_partial_of_one(self):
        import atexit
        import functools
        partial = functools.partial(self.code("other"), "bye")
        atexit.register(self.code("hook"))
        atexit.register(partial)
        self.addCleanup(atexit.unregister, partial)
        self.addCleanup(atexit.unregister, self.code("hook"))

        self.assertIn(f"atexit callback (functools.partial of function {self.plug}.other)",
                      modhost.referrers(self.plug))
        self.assertHeldBy(f"atexit callback (function {self.plug}.hook)")

    def test_once_the_atexit_callback_is_unregistered_unload_frees_it(self):
        import atexit
        before = atexit._ncallbacks()
        atexit.register(self.code("hook"))
        with self.assertRaises(modhost.ModuleInUseError):
            modhost.unload(self.plug)
        self.assertEqual(atexit._ncallbacks(), before + 1)  # looking removed nothing
        atexit.unregister(self.code("hook"))
        ref = weakref.ref(sys.modules[self.plug])

        report = modhost.unload(self.plug)

        self.assertEqual(list(report.lingering), [])
        self.assertTrue(report.freed)
        gc.collect()
        self.assertIsNone(ref())

    def test_an_audit_hook(self):
        # Audit hooks cannot be removed: this one stays (doing nothing) for the process.
        sys.addaudithook(self.code("hook"))

        self.assertHeldBy(f"audit hook (function {self.plug}.hook)")

    def test_sys_hooks(self):
        for name in ("excepthook", "unraisablehook", "displayhook", "breakpointhook"):
            with self.subTest(hook=name):
                self.addCleanup(setattr, sys, name, getattr(sys, name))
                setattr(sys, name, self.code("hook"))
                self.assertIn(f"sys.{name} (function {self.plug}.hook)", modhost.referrers(self.plug))
                setattr(sys, name, getattr(sys, "__%s__" % name))
        sys.excepthook = self.code("hook")
        self.assertHeldBy(f"sys.excepthook (function {self.plug}.hook)")

    def test_threading_excepthook(self):
        import threading
        self.addCleanup(setattr, threading, "excepthook", threading.excepthook)
        threading.excepthook = self.code("hook")

        self.assertHeldBy(f"threading.excepthook (function {self.plug}.hook)")

    def test_threading_setprofile_and_settrace(self):
        import threading
        self.addCleanup(threading.settrace, None)
        self.addCleanup(threading.setprofile, None)
        tracer = self.code("Tracer")()
        threading.setprofile(self.code("hook"))
        threading.settrace(tracer.trace)

        self.assertIn(f"threading.settrace hook (method {self.plug}.Tracer.trace)", modhost.referrers(self.plug))
        self.assertHeldBy(f"threading.setprofile hook (function {self.plug}.hook)")

    def test_the_profile_function_of_this_thread(self):
        self.addCleanup(sys.setprofile, None)
        sys.setprofile(self.code("hook"))
        try:
            referrers = modhost.referrers(self.plug)
        finally:
            sys.setprofile(None)

        self.assertIn(f"profile function of thread main (function {self.plug}.hook)", referrers)

    def test_the_trace_function_of_another_thread(self):
        tracing, release = threading.Event(), threading.Event()
        trace = self.code("Tracer")().trace

        def work():
            sys.settrace(trace)
            tracing.set()
            release.wait(30)
            sys.settrace(None)

        thread = threading.Thread(target=work, name="traced-worker")
        thread.start()
        self.addCleanup(thread.join, 30)
        self.addCleanup(release.set)
        self.assertTrue(tracing.wait(30))
        del trace

        self.assertHeldBy(f"trace function of thread traced-worker (method {self.plug}.Tracer.trace)")


if __name__ == "__main__":
    unittest.main()
