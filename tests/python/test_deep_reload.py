"""modhost.reload(m, deep=True): stale names go, old functions and classes run the new code.

The scenario of issue 4: a module with a constant, a to-be-deleted constant, a
function, a class (method, property, to-be-deleted method, classmethod,
staticmethod, nested class) and a second plain class. References taken before
the reload (module attributes, instances, another module's `from m import`,
a callback list) must all see the new code afterwards.
"""
import sys
import unittest

from cache_fixtures import DeepReloadTestCase, modhost

SCENARIO_V1 = '''
"""scenario v1"""
LIMIT = 10
DELETED = 'stale'

def f(x, y=1, *, z=2) -> 'v1':
    """f v1"""
    return ('f v1', x, y, z)
f.tag = 'v1'

class Cls:
    """Cls v1"""
    KIND = 'v1'
    def method(self):
        return 'method v1'
    @property
    def prop(self):
        return 'prop v1'
    def old_method(self):
        return 'old_method v1'
    @classmethod
    def make(cls):
        return (cls, 'make v1')
    @staticmethod
    def helper():
        return 'helper v1'
    class Inner:
        def where(self):
            return 'inner v1'

class Plain:
    def hello(self):
        return 'hello v1'
'''

SCENARIO_V2 = '''
"""scenario v2"""
LIMIT = 20
NEW_CONSTANT = 'fresh'

def f(x, y=100, *, z=200) -> 'v2':
    """f v2"""
    return ('f v2', x, y, z)
f.tag = 'v2'

class Cls:
    """Cls v2"""
    KIND = 'v2'
    def method(self):
        return 'method v2'
    @property
    def prop(self):
        return 'prop v2 ' + self.method()
    def new_method(self):
        return 'new_method v2'
    @classmethod
    def make(cls):
        return (cls, 'make v2')
    @staticmethod
    def helper():
        return 'helper v2'
    class Inner:
        def where(self):
            return 'inner v2'

class Plain:
    def hello(self):
        return 'hello v2'

DEFAULT = Cls()
'''

APP = '''
from {M} import f, LIMIT, Cls, Plain
from {M} import f as g
OTHER = 10
CALLBACKS = [f]
def call_f():
    return f(0)
'''


class DeepReloadScenario(DeepReloadTestCase):
    def setUp(self):
        super().setUp()
        self.m = self.mod("scenario")
        self.app = self.mod("app")
        self.write(self.m, SCENARIO_V1)
        self.write(self.app, self.source(APP, M=self.m))
        self.app_module = self.load(self.app)
        self.module = sys.modules[self.m]

    def edit_and_reload(self):
        self.write(self.m, SCENARIO_V2)
        return self.deep_reload(self.module)

    def test_report_says_reloaded_with_what_was_added_removed_patched_and_rebound(self):
        report = self.edit_and_reload()
        self.assertEqual(report.outcome, "reloaded")
        self.assertEqual(report.name, self.m)
        self.assertEqual(report.generation, 2)
        self.assertEqual(modhost.info(self.m).generation, 2)
        self.assertFalse(report.rolled_back)
        self.assertIsNone(report.error)
        self.assertIn("DELETED", report.removed)
        self.assertIn("NEW_CONSTANT", report.added)
        self.assertMentions(report.patched, "function", self.m + ".f")
        self.assertMentions(report.patched, "class", self.m + ".Cls")
        self.assertMentions(report.patched, "class", self.m + ".Plain")
        self.assertMentions(report.rebound, self.app + ".LIMIT")
        self.assertEqual(list(report.not_patched), [])
        self.assertEqual(list(report.instances_not_moved), [])

    def test_stale_names_are_removed_but_module_dunders_stay(self):
        spec, loader, file = self.module.__spec__, self.module.__loader__, self.module.__file__
        self.edit_and_reload()
        self.assertFalse(hasattr(self.module, "DELETED"))
        self.assertNotIn("DELETED", vars(self.module))
        self.assertEqual(self.module.NEW_CONSTANT, "fresh")
        self.assertEqual(self.module.LIMIT, 20)
        self.assertEqual(self.module.__name__, self.m)
        # A reload finds the spec again (as importlib.reload does): equal, not identical.
        self.assertEqual(self.module.__spec__.name, spec.name)
        self.assertEqual(self.module.__spec__.origin, spec.origin)
        self.assertIs(type(self.module.__loader__), type(loader))
        self.assertEqual(self.module.__file__, file)
        self.assertIn("__builtins__", vars(self.module))
        self.assertEqual(self.module.__doc__, "scenario v2")
        self.assertIs(sys.modules[self.m], self.module)

    def test_old_function_reference_runs_the_new_body_with_new_defaults_doc_and_dict(self):
        old_f = self.module.f
        self.assertEqual(old_f(1), ("f v1", 1, 1, 2))
        self.edit_and_reload()
        self.assertIs(self.module.f, old_f)
        self.assertEqual(old_f(1), ("f v2", 1, 100, 200))
        self.assertEqual(old_f.__defaults__, (100,))
        self.assertEqual(old_f.__kwdefaults__, {"z": 200})
        self.assertEqual(old_f.__doc__, "f v2")
        self.assertEqual(old_f.__annotations__, {"return": "v2"})
        self.assertEqual(old_f.tag, "v2")

    def test_from_import_binding_and_alias_in_another_module_run_the_new_body(self):
        app = self.app_module
        self.edit_and_reload()
        self.assertEqual(app.f(1), ("f v2", 1, 100, 200))
        self.assertEqual(app.g(1), ("f v2", 1, 100, 200))
        self.assertEqual(app.call_f(), ("f v2", 0, 100, 200))
        self.assertIs(app.f, self.module.f)

    def test_callbacks_held_in_lists_run_the_new_body(self):
        callbacks = [self.module.f]
        app = self.app_module
        self.edit_and_reload()
        self.assertEqual(callbacks[0](5), ("f v2", 5, 100, 200))
        self.assertEqual(app.CALLBACKS[0](5), ("f v2", 5, 100, 200))

    def test_class_keeps_its_identity_and_old_instances_see_the_new_methods(self):
        Cls = self.module.Cls
        obj = Cls()
        self.assertEqual(obj.prop, "prop v1")
        self.edit_and_reload()
        self.assertIs(self.module.Cls, Cls)
        self.assertIs(self.app_module.Cls, Cls)
        self.assertEqual(obj.method(), "method v2")
        self.assertEqual(obj.new_method(), "new_method v2")
        self.assertFalse(hasattr(obj, "old_method"))
        self.assertNotIn("old_method", vars(Cls))
        self.assertEqual(obj.prop, "prop v2 method v2")
        self.assertEqual(obj.KIND, "v2")
        self.assertEqual(Cls.__doc__, "Cls v2")
        self.assertIsInstance(obj, self.module.Cls)
        self.assertIs(type(obj), self.module.Cls)

    def test_classmethods_staticmethods_and_bound_methods_taken_before_run_new_code(self):
        Cls = self.module.Cls
        obj = Cls()
        bound = obj.method
        make = Cls.make
        helper = Cls.helper
        self.edit_and_reload()
        self.assertEqual(bound(), "method v2")
        self.assertEqual(make(), (Cls, "make v2"))
        self.assertEqual(helper(), "helper v2")
        self.assertEqual(Cls.make(), (Cls, "make v2"))

    def test_nested_class_keeps_identity_and_its_instances_see_new_methods(self):
        Inner = self.module.Cls.Inner
        inner = Inner()
        self.edit_and_reload()
        self.assertIs(self.module.Cls.Inner, Inner)
        self.assertEqual(inner.where(), "inner v2")
        self.assertIs(type(inner), self.module.Cls.Inner)

    def test_second_plain_class_keeps_identity(self):
        Plain = self.module.Plain
        plain = Plain()
        self.edit_and_reload()
        self.assertIs(self.module.Plain, Plain)
        self.assertIs(self.app_module.Plain, Plain)
        self.assertEqual(plain.hello(), "hello v2")
        self.assertIsInstance(plain, self.module.Plain)

    def test_new_instances_are_instances_of_the_kept_class(self):
        Cls = self.module.Cls
        old_obj = Cls()
        self.edit_and_reload()
        new_obj = self.module.Cls()
        self.assertIs(type(new_obj), Cls)
        self.assertIs(type(new_obj), type(old_obj))
        # An instance the new code created at top level belongs to the kept class too.
        self.assertIs(type(self.module.DEFAULT), Cls)
        self.assertIsInstance(self.module.DEFAULT, Cls)

    def test_a_second_deep_reload_patches_the_same_objects_again(self):
        old_f, Cls = self.module.f, self.module.Cls
        obj = Cls()
        self.edit_and_reload()
        self.write(self.m, SCENARIO_V2.replace("v2", "v3"))
        report = self.deep_reload(self.module)
        self.assertEqual(report.generation, 3)
        self.assertIs(self.module.f, old_f)
        self.assertIs(self.module.Cls, Cls)
        self.assertEqual(old_f(1), ("f v3", 1, 100, 200))
        self.assertEqual(obj.method(), "method v3")
        self.assertEqual(self.app_module.g(1), ("f v3", 1, 100, 200))

    def test_deep_reload_by_name(self):
        old_f = self.module.f
        self.write(self.m, SCENARIO_V2)
        report = self.deep_reload(self.m)
        self.assertEqual(report.outcome, "reloaded")
        self.assertEqual(old_f(1)[0], "f v2")


class FromImportsFollow(DeepReloadTestCase):
    def setUp(self):
        super().setUp()
        self.m = self.mod("consts")
        self.app = self.mod("app")

    def test_from_imported_constant_is_rebound_but_an_equal_global_is_not(self):
        self.write(self.m, "LIMIT = 10\nNAME = 'alpha'\n")
        self.write(self.app, self.source("""
            from {M} import LIMIT, NAME
            OTHER = 10
            OTHER_NAME = 'alpha'
        """, M=self.m))
        app = self.load(self.app)
        module = sys.modules[self.m]
        self.assertIs(app.OTHER, app.LIMIT)  # the same (cached) object: only the binding tells them apart
        self.write(self.m, "LIMIT = 20\nNAME = 'beta'\n")

        report = self.deep_reload(module)

        self.assertEqual(app.LIMIT, 20)
        self.assertEqual(app.NAME, "beta")
        self.assertEqual(app.OTHER, 10)
        self.assertEqual(app.OTHER_NAME, "alpha")
        self.assertMentions(report.rebound, self.app + ".LIMIT")
        self.assertMentions(report.rebound, self.app + ".NAME")
        self.assertNotMentions(report.rebound, "OTHER")

    def test_from_import_with_alias_runs_new_code(self):
        self.write(self.m, "def f():\n    return 'v1'\n")
        self.write(self.app, self.source("from {M} import f as g\n", M=self.m))
        app = self.load(self.app)
        self.write(self.m, "def f():\n    return 'v2'\n")
        self.deep_reload(self.m)
        self.assertEqual(app.g(), "v2")
        self.assertFalse(hasattr(app, "f"))

    def test_from_imported_constant_with_alias_is_rebound(self):
        # `from m import LIMIT as CAP` is a from-import binding like any other.
        self.write(self.m, "LIMIT = 10\n")
        self.write(self.app, self.source("from {M} import LIMIT as CAP\n", M=self.m))
        app = self.load(self.app)
        self.write(self.m, "LIMIT = 20\n")
        self.deep_reload(self.m)
        self.assertEqual(app.CAP, 20)

    def test_a_name_the_importer_reassigned_at_top_level_is_not_overwritten(self):
        self.write(self.m, "LIMIT = 10\ndef f():\n    return 'v1'\n")
        self.write(self.app, self.source("""
            from {M} import LIMIT, f
            LIMIT = 'mine'
        """, M=self.m))
        app = self.load(self.app)
        self.write(self.m, "LIMIT = 20\ndef f():\n    return 'v2'\n")
        report = self.deep_reload(self.m)
        self.assertEqual(app.LIMIT, "mine")
        self.assertNotMentions(report.rebound, self.app + ".LIMIT")
        self.assertEqual(app.f(), "v2")

    def test_a_name_the_importer_reassigned_at_run_time_is_not_overwritten(self):
        self.write(self.m, "LIMIT = 10\ndef f():\n    return 'v1'\n")
        self.write(self.app, self.source("from {M} import LIMIT, f\n", M=self.m))
        app = self.load(self.app)

        def replacement():
            return "replacement"
        app.f = replacement
        app.LIMIT = 99
        self.write(self.m, "LIMIT = 20\ndef f():\n    return 'v2'\n")
        self.deep_reload(self.m)
        self.assertIs(app.f, replacement)
        self.assertEqual(app.LIMIT, 99)

    def test_from_imported_name_the_new_source_deleted_keeps_its_value_in_the_importer(self):
        self.write(self.m, "GONE = 'old'\nKEPT = 1\n")
        self.write(self.app, self.source("from {M} import GONE, KEPT\n", M=self.m))
        app = self.load(self.app)
        self.write(self.m, "KEPT = 2\n")
        self.deep_reload(self.m)
        self.assertFalse(hasattr(sys.modules[self.m], "GONE"))
        self.assertEqual(app.GONE, "old")
        self.assertEqual(app.KEPT, 2)


class NamesTheOldSourceDidNotDefine(DeepReloadTestCase):
    """Stale-name removal removes only names the old source defined and the new one does not.

    Everything else in the namespace came from outside the module's own
    statements (the import system's submodule attributes, globals another
    module or a function created at run time) and stays, as with importlib.reload.
    """

    def test_a_package_keeps_its_submodule_attributes(self):
        pkg = self.mod("pkg")
        self.write(pkg, "X = 1\n", package=True)
        self.write(pkg + ".sub", "def g():\n    return 'g'\n")
        self.load(pkg + ".sub")
        package = sys.modules[pkg]
        self.write(pkg, "X = 2\n_probe = 1\n", package=True)

        report = self.deep_reload(package)

        self.assertNotIn("sub", report.removed)
        self.assertIs(package.sub, sys.modules[pkg + ".sub"])
        self.assertEqual(package.sub.g(), "g")
        self.assertEqual(package.X, 2)

    def test_globals_created_at_run_time_stay(self):
        self.write(self.m, "def make():\n    globals()['made_later'] = 42\n"
                           "def f():\n    return made_later\nOLD = 1\n")
        module = self.load(self.m)
        module.make()
        vars(module)["set_from_outside"] = "outside"  # as networkx's argmap does to a function's globals
        self.write(self.m, "def make():\n    globals()['made_later'] = 42\n"
                           "def f():\n    return made_later\n")

        report = self.deep_reload(module)

        self.assertEqual(module.f(), 42)
        self.assertEqual(module.set_from_outside, "outside")
        self.assertNotIn("made_later", report.removed)
        self.assertEqual(list(report.removed), ["OLD"])
        self.assertFalse(hasattr(module, "OLD"))

    def test_a_global_both_sources_assign_in_a_function_keeps_its_value(self):
        body = "def setup():\n    global CONFIG\n    CONFIG = {'ready': True}\n"
        self.write(self.m, body)
        module = self.load(self.m)
        module.setup()
        self.write(self.m, body + "_probe = 1\n")

        self.deep_reload(module)

        self.assertEqual(module.CONFIG, {"ready": True})

    def test_a_global_only_the_old_source_assigned_in_a_function_is_removed(self):
        self.write(self.m, "def setup():\n    global CONFIG\n    CONFIG = 1\n")
        module = self.load(self.m)
        module.setup()
        self.write(self.m, "def setup():\n    pass\n")

        report = self.deep_reload(module)

        self.assertIn("CONFIG", report.removed)
        self.assertFalse(hasattr(module, "CONFIG"))

    def test_module_annotations_are_those_of_the_new_source(self):
        self.write(self.m, "old: int = 1\n")
        module = self.load(self.m)
        self.write(self.m, "new: str = 'a'\n")

        self.deep_reload(module)

        self.assertEqual(module.__annotations__, {"new": str})
        self.assertFalse(hasattr(module, "old"))

    def setUp(self):
        super().setUp()
        self.m = self.mod("runtime")


class Sentinels(DeepReloadTestCase):
    """Stateless markers are compared by identity, and callers keep the old one."""

    SOURCE = '''
_marker = object()
missing = type("MissingType", (), {"__repr__": lambda self: "missing"})()

def is_missing(value):
    return value is missing or value is _marker

def get(mapping, key, default=missing):
    value = mapping.get(key, missing)
    return ('{V}', default if value is missing else value)

class Box:
    empty = missing
    def take(self, value=_marker):
        return value is _marker
'''

    def test_the_old_sentinels_stay_wherever_the_module_took_them(self):
        m = self.mod("sentinels")
        self.write(m, self.source(self.SOURCE, V="v1"))
        module = self.load(m)
        missing, marker = module.missing, module._marker
        self.write(m, self.source(self.SOURCE, V="v2"))

        self.deep_reload(module)

        self.assertIs(module.missing, missing)
        self.assertIs(module._marker, marker)
        self.assertTrue(module.is_missing(missing))
        self.assertTrue(module.is_missing(marker))
        self.assertEqual(module.get({}, "k"), ("v2", missing))
        self.assertEqual(module.get({}, "k", missing), ("v2", missing))
        self.assertIs(module.Box.empty, missing)
        self.assertTrue(module.Box().take())


if __name__ == "__main__":
    unittest.main()
