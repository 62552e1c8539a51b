"""Deep reload is atomic, hands state over, skips unchanged sources, and leaves running code alone.

A deep reload that fails (syntax error, an exception mid-module, a raising
__reload__) leaves every function, class, instance, enum member and other
module's global exactly as before; __reload__(old) carries state across;
__unload__() runs on unload but not on a refused one; an unchanged source is
a no-op; dependents=True re-runs importers; code already running (a suspended
generator, a frame mid-call) finishes on the old code.
"""
import builtins
import os
import sys
import unittest

from cache_fixtures import DeepReloadTestCase, modhost

V1 = '''
import enum
LIMIT = 10
DELETED = 'stale'
def f(x=1):
    """f v1"""
    return ('f v1', x)
class Cls:
    def method(self):
        return 'method v1'
    def old_method(self):
        return 'old_method v1'
class Color(enum.Enum):
    RED = 1
    GREEN = 2
'''

# What the failing versions define before they fail: new f, a changed class, enum changes.
V2_DEFINITIONS = '''
import enum
LIMIT = 20
NEW = 'new'
def f(x=100):
    """f v2"""
    return ('f v2', x)
class Cls:
    def method(self):
        return 'method v2'
    def new_method(self):
        return 'new_method v2'
class Color(enum.Enum):
    RED = 10
    YELLOW = 3
'''


class FailedDeepReloadChangesNothing(DeepReloadTestCase):
    def setUp(self):
        super().setUp()
        self.m = self.mod("plug")
        self.app = self.mod("app")
        self.write(self.m, V1)
        self.write(self.app, self.source("from {M} import f, LIMIT, Cls\nfrom {M} import f as g\n", M=self.m))
        self.app_module = self.load(self.app)
        self.module = sys.modules[self.m]
        self.old_f = self.module.f
        self.old_code = self.old_f.__code__
        self.Cls = self.module.Cls
        self.obj = self.Cls()
        self.red = self.module.Color.RED
        self.module_snap = self.snapshot(self.module)
        self.app_snap = self.snapshot(self.app_module)
        self.class_snap = self.class_snapshot(self.Cls)
        self.enum_snap = self.class_snapshot(self.module.Color)

    def assertFailsAndChangesNothing(self, source, error_type):
        self.write(self.m, source)
        with self.assertRaises(error_type) as caught:
            modhost.reload(self.module, deep=True)
        self.assertIs(type(caught.exception), error_type)
        report = modhost.last_reload()
        self.assertEqual(report.outcome, "failed")
        self.assertTrue(report.rolled_back)
        self.assertIn(error_type.__name__, report.error)
        self.assertEqual(report.generation, 1)
        self.assertEqual(list(report.patched), [])
        self.assertEqual(list(report.rebound), [])

        self.assertEqual(modhost.info(self.m).generation, 1)
        self.assertIs(sys.modules[self.m], self.module)
        self.assertNamespaceIs(self.module, self.module_snap)
        self.assertNamespaceIs(self.app_module, self.app_snap)
        self.assertClassDictIs(self.Cls, self.class_snap)
        self.assertClassDictIs(self.module.Color, self.enum_snap)
        # Old references run the OLD body, with the old defaults and docstring.
        self.assertIs(self.old_f.__code__, self.old_code)
        self.assertEqual(self.old_f(), ("f v1", 1))
        self.assertEqual(self.old_f.__doc__, "f v1")
        self.assertEqual(self.app_module.g(), ("f v1", 1))
        self.assertEqual(self.app_module.LIMIT, 10)
        self.assertEqual(self.obj.method(), "method v1")
        self.assertEqual(self.obj.old_method(), "old_method v1")
        self.assertFalse(hasattr(self.obj, "new_method"))
        self.assertIs(type(self.obj), self.Cls)
        # Enum members as they were.
        Color = self.module.Color
        self.assertIs(Color.RED, self.red)
        self.assertEqual(self.red.value, 1)
        self.assertEqual([c.name for c in Color], ["RED", "GREEN"])
        self.assertIs(Color(2), Color.GREEN)
        with self.assertRaises(ValueError):
            Color(3)
        return caught.exception

    def test_syntax_error(self):
        self.assertFailsAndChangesNothing(V2_DEFINITIONS + "def broken(:\n    pass\n", SyntaxError)

    def test_exception_raised_mid_module_after_some_definitions(self):
        error = self.assertFailsAndChangesNothing(
            V2_DEFINITIONS + "raise LookupError('mid-module')\nAFTER = 1\n", LookupError)
        self.assertEqual(error.args, ("mid-module",))
        self.assertFalse(hasattr(self.module, "AFTER"))

    def test_raising_reload_hook_rolls_back_patches_and_rebinds(self):
        # __reload__ runs after the new code ran and the deep update patched: everything must roll back.
        error = self.assertFailsAndChangesNothing(
            V2_DEFINITIONS + "def __reload__(old):\n    raise KeyError('refused')\n", KeyError)
        self.assertEqual(error.args, ("refused",))

    # The failed run's objects die during the rollback: their __del__ must
    # see the module as it was, never empty or half restored.
    def test_a_finalizer_run_by_the_rollback_sees_the_old_namespace(self):
        log = self.log()
        witness = (self.log_code("sorted(k for k in ('LIMIT', 'DELETED', 'f') if k in globals())")
                   .replace("\n", "\n        ").strip())
        self.assertFailsAndChangesNothing(V2_DEFINITIONS + (
            "class Witness:\n"
            "    def __del__(self):\n"
            "        " + witness + "\n"
            "w = Witness()\n"
            "raise LookupError('after the witness')\n"), LookupError)
        self.assertEqual(log, [["DELETED", "LIMIT", "f"]])

    def test_the_same_edit_reloads_after_a_failure_is_fixed(self):
        self.assertFailsAndChangesNothing(V2_DEFINITIONS + "raise LookupError('once')\n", LookupError)
        self.write(self.m, V2_DEFINITIONS)
        report = self.deep_reload(self.module)
        self.assertEqual(report.outcome, "reloaded")
        self.assertEqual(report.generation, 2)
        self.assertEqual(self.old_f(), ("f v2", 100))
        self.assertEqual(self.obj.method(), "method v2")
        self.assertIs(self.module.Color.RED, self.red)
        self.assertEqual(self.red.value, 10)
        self.assertEqual(self.app_module.LIMIT, 20)


class StateHandOver(DeepReloadTestCase):
    def test_reload_hook_carries_a_counter_across(self):
        m = self.mod("counter")
        self.write(m, '''
COUNTER = 0
OLD_ONLY = 'old'
def bump():
    global COUNTER
    COUNTER += 1
    return COUNTER
''')
        module = self.load(m)
        for _ in range(3):
            module.bump()
        self.write(m, self.source('''
COUNTER = 0
def bump():
    global COUNTER
    COUNTER += 10
    return COUNTER
def __reload__(old):
    global COUNTER, SEEN
    COUNTER = old['COUNTER']
    SEEN = (old['OLD_ONLY'], 'OLD_ONLY' in globals(), '__reload__' in old)
    import builtins
    builtins.__dict__.setdefault('{LOG}', []).append('hand-over')
''', LOG=self.log_name))

        report = self.deep_reload(module)

        self.assertEqual(report.outcome, "reloaded")
        self.assertEqual(module.COUNTER, 3)
        self.assertEqual(module.bump(), 13)
        # The hook sees the old namespace, and runs once, with the new namespace as its globals.
        self.assertEqual(module.SEEN, ("old", False, False))
        self.assertEqual(self.log(), ["hand-over"])

    def test_reload_hook_old_mapping_is_read_only(self):
        m = self.mod("counter")
        self.write(m, "X = 1\n")
        module = self.load(m)
        self.write(m, "X = 2\ndef __reload__(old):\n    old['X'] = 99\n")
        with self.assertRaises(TypeError):
            modhost.reload(module, deep=True)
        self.assertEqual(module.X, 1)
        self.assertEqual(modhost.last_reload().outcome, "failed")


class UnloadHook(DeepReloadTestCase):
    def write_plug(self):
        m = self.mod("plug")
        self.write(m, self.source('''
def __unload__():
    import builtins
    builtins.__dict__.setdefault('{LOG}', []).append('unloaded ' + __name__)
''', LOG=self.log_name))
        return m

    def test_unload_calls_unload_hook(self):
        m = self.write_plug()
        self.load(m)
        modhost.unload(m)
        self.assertEqual(self.log(), ["unloaded " + m])
        self.assertNotIn(m, sys.modules)

    def test_refused_unload_does_not_call_unload_hook(self):
        m, app = self.write_plug(), self.mod("app")
        self.write(app, "import %s\n" % m)
        self.load(app)
        with self.assertRaises(modhost.ModuleInUseError):
            modhost.unload(m)
        self.assertEqual(self.log(), [])
        self.assertIn(m, sys.modules)

    def test_raising_unload_hook_stops_the_unload(self):
        m = self.mod("plug")
        self.write(m, "def __unload__():\n    raise RuntimeError('not now')\n")
        self.load(m)
        with self.assertRaises(RuntimeError) as caught:
            modhost.unload(m)
        self.assertIn("not now", str(caught.exception))
        self.assertIn(m, sys.modules)
        self.assertIn(m, modhost.modules())


class UnchangedSource(DeepReloadTestCase):
    def setUp(self):
        super().setUp()
        self.m = self.mod("plug")
        self.text = self.log_code() + "def f():\n    return 'v1'\n"
        self.path = self.write(self.m, self.text)
        self.module = self.load(self.m)
        self.assertEqual(self.log(), [self.m])

    def assertNoOp(self):
        snap = self.snapshot(self.module)
        report = self.deep_reload(self.module)
        self.assertEqual(report.outcome, "unchanged")
        self.assertEqual(report.generation, 1)
        self.assertEqual(modhost.info(self.m).generation, 1)
        self.assertEqual(self.log(), [self.m])  # the module-level code did not run again
        self.assertEqual(list(report.reexecuted), [])
        self.assertNamespaceIs(self.module, snap)

    def test_no_edit(self):
        self.assertNoOp()

    def test_touch_only(self):
        st = os.stat(self.path)
        os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        self.assertNoOp()

    def test_rewritten_with_the_same_content(self):
        self.write(self.m, self.text)
        self.assertNoOp()

    def test_an_edit_after_a_no_op_still_reloads(self):
        self.assertNoOp()
        self.write(self.m, self.log_code() + "def f():\n    return 'v2'\n")
        report = self.deep_reload(self.module)
        self.assertEqual(report.outcome, "reloaded")
        self.assertEqual(self.log(), [self.m, self.m])
        self.assertEqual(self.module.f(), "v2")


class DeepWithDependents(DeepReloadTestCase):
    def test_dependent_is_reexecuted_and_its_from_imports_are_current(self):
        m, app = self.mod("base"), self.mod("app")
        self.write(m, "LIMIT = 10\ndef f():\n    return 'f v1'\nclass Base:\n    def who(self):\n        return 'base v1'\n")
        self.write(app, self.source('''
from {M} import LIMIT, f, Base
DOUBLE = LIMIT * 2
class Child(Base):
    def who(self):
        return 'child + ' + super().who()
''', M=m) + self.log_code())
        app_module = self.load(app)
        module = sys.modules[m]
        old_f, Base, Child = module.f, module.Base, app_module.Child
        child = Child()
        self.assertEqual(self.log(), [app])
        self.write(m, "LIMIT = 20\ndef f():\n    return 'f v2'\nclass Base:\n    def who(self):\n        return 'base v2'\n")

        report = self.deep_reload(module, dependents=True)

        self.assertEqual(report.outcome, "reloaded")
        self.assertEqual(list(report.reexecuted), [m, app])
        self.assertEqual(self.log(), [app, app])
        self.assertEqual(modhost.info(app).generation, 2)
        self.assertEqual(app_module.LIMIT, 20)
        self.assertEqual(app_module.DOUBLE, 40)
        self.assertIs(app_module.f, old_f)
        self.assertEqual(app_module.f(), "f v2")
        self.assertIs(app_module.Base, Base)
        # The dependent's own class is deep-updated too: identity kept, base still m.Base.
        self.assertIs(app_module.Child, Child)
        self.assertIsInstance(child, module.Base)
        self.assertEqual(child.who(), "child + base v2")

    def test_failing_dependent_rolls_back_the_deep_update_of_the_dependency(self):
        m, app = self.mod("base"), self.mod("app")
        self.write(m, "def f():\n    return 'f v1'\n")
        self.write(app, self.source("from {M} import f\nVALUE = 1\n", M=m))
        app_module = self.load(app)
        module = sys.modules[m]
        old_f = module.f
        self.write(m, "def f():\n    return 'f v2'\n")
        self.write(app, self.source("from {M} import f\nVALUE = 2\nraise ValueError('app fails')\n", M=m))

        with self.assertRaises(ValueError):
            modhost.reload(module, deep=True, dependents=True)

        report = modhost.last_reload()
        self.assertEqual(report.failed_module, app)
        self.assertTrue(report.rolled_back)
        self.assertEqual(old_f(), "f v1")
        self.assertIs(module.f, old_f)
        self.assertEqual(app_module.VALUE, 1)
        self.assertEqual(modhost.info(m).generation, 1)

    def test_failing_dependent_keeps_its_from_imports_of_the_old_objects(self):
        # The dependency's deep update rebinds `from a import CONFIG` in the
        # dependent before the dependent runs; its rollback must undo that too.
        a, b = self.mod("config"), self.mod("user")
        self.write(a, 'CONFIG = {"x": 1}\n')
        self.write(b, self.source("from {A} import CONFIG\n", A=a))
        b_module = self.load(b)
        a_module = sys.modules[a]
        old = a_module.CONFIG
        a_snap, b_snap = self.snapshot(a_module), self.snapshot(b_module)
        self.append(a, 'CONFIG["y"] = 2\n')
        self.append(b, "1/0\n")

        with self.assertRaises(ZeroDivisionError):
            modhost.reload(a, dependents=True, deep=True)

        report = modhost.last_reload()
        self.assertEqual(report.outcome, "failed")
        self.assertTrue(report.rolled_back)
        self.assertIs(b_module.CONFIG, old)
        self.assertEqual(b_module.CONFIG, {"x": 1})
        self.assertNamespaceIs(a_module, a_snap)
        self.assertNamespaceIs(b_module, b_snap)

    def test_failing_dependent_in_toolz_keeps_the_curried_names_of_the_old_objects(self):
        self.copy_installed_package("toolz", "python3-toolz")
        import toolz.curried
        curried, exceptions = sys.modules["toolz.curried"], sys.modules["toolz.curried.exceptions"]
        old_merge = exceptions.merge
        self.assertIs(curried.merge, old_merge)
        snaps = {module: self.snapshot(module) for module in (curried, exceptions)}
        self.append("toolz.curried.exceptions", "_modhost_probe = 1\n")

        # toolz.curried cannot run twice (as with importlib.reload): its final
        # `del exceptions` finds no submodule attribute the second time.
        with self.assertRaises(NameError):
            modhost.reload("toolz.curried.exceptions", dependents=True, deep=True)

        self.assertTrue(modhost.last_reload().rolled_back)
        self.assertIs(exceptions.merge, old_merge)
        self.assertIs(curried.merge, exceptions.merge)
        for module, snap in snaps.items():
            self.assertNamespaceIs(module, snap)
        self.assertEqual(curried.merge_with(sum)([{"a": 1}, {"a": 2}]), {"a": 3})


class RunningCodeFinishesOnOldCode(DeepReloadTestCase):
    def test_suspended_generator_keeps_yielding_from_the_old_code(self):
        m = self.mod("gen")
        body = "def counter():\n    for i in range(3):\n        yield ('{V}', i)\n"
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        old_counter = module.counter
        gen = module.counter()
        self.assertEqual(next(gen), ("v1", 0))
        self.write(m, self.source(body, V="v2"))

        self.deep_reload(module)

        # Documented behaviour: the suspended frame keeps its code object to the end.
        self.assertEqual(list(gen), [("v1", 1), ("v1", 2)])
        # Generators created after the reload (also through an old reference) run the new code.
        self.assertEqual(list(old_counter()), [("v2", 0), ("v2", 1), ("v2", 2)])
        self.assertEqual(next(module.counter()), ("v2", 0))

    def test_frame_mid_call_finishes_its_body_on_the_old_code_but_calls_new_functions(self):
        m = self.mod("running")
        body = '''
def helper():
    return 'helper {V}'
def run(hook):
    before = 'run {V} before'
    hook()
    return before, 'run {V} after', helper()
'''
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        reports = []

        def hook():
            self.write(m, self.source(body, V="v2"))
            reports.append(self.deep_reload(module))

        result = module.run(hook)

        self.assertEqual(reports[0].outcome, "reloaded")
        # The running body is the old code; a global it looks up afterwards is the new version.
        self.assertEqual(result, ("run v1 before", "run v1 after", "helper v2"))
        self.assertEqual(module.run(lambda: None), ("run v2 before", "run v2 after", "helper v2"))


if __name__ == "__main__":
    unittest.main()
