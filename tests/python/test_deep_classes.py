"""Deep reload of classes and functions beyond the plain case.

Enums, frozen dataclasses, named tuples, functools.wraps decorators, closures
whose free variables change, zero-argument super(), singledispatch, pickling,
classes that must be replaced (bases / __slots__ changed), and the new class
objects a module's own top-level code stores somewhere (registries, lists).
"""
import builtins
import dataclasses
import gc
import pickle
import sys
import textwrap
import unittest
import weakref

from cache_fixtures import DeepReloadTestCase, modhost


class Enums(DeepReloadTestCase):
    V1 = '''
        import enum
        class Color(enum.Enum):
            RED = 1
            GREEN = 2
            BLUE = 3
            def describe(self):
                return 'v1 ' + self.name
    '''
    V2 = '''
        import enum
        class Color(enum.Enum):
            RED = 1
            BLUE = 30
            YELLOW = 4
            def describe(self):
                return 'v2 ' + self.name
    '''

    def setUp(self):
        super().setUp()
        self.m = self.mod("colors")
        self.write(self.m, self.V1)
        self.module = self.load(self.m)

    def test_members_added_removed_and_changed_keep_identity(self):
        Color = self.module.Color
        red, blue = Color.RED, Color.BLUE
        self.write(self.m, self.V2)

        report = self.deep_reload(self.module)

        self.assertEqual(report.outcome, "reloaded")
        self.assertIs(self.module.Color, Color)
        self.assertIs(red, self.module.Color.RED)
        self.assertEqual(red, self.module.Color.RED)
        self.assertIs(blue, self.module.Color.BLUE)
        self.assertEqual(self.module.Color.BLUE.value, 30)
        self.assertEqual(red.describe(), "v2 RED")

    def test_new_member_reachable_and_value_lookup_works(self):
        Color = self.module.Color
        self.write(self.m, self.V2)
        self.deep_reload(self.module)
        yellow = Color.YELLOW
        self.assertIs(type(yellow), Color)
        self.assertIsInstance(yellow, Color)
        self.assertIs(Color(4), yellow)
        self.assertIs(Color["YELLOW"], yellow)
        self.assertIs(Color(30), Color.BLUE)
        self.assertIs(Color(1), Color.RED)
        self.assertEqual(yellow.describe(), "v2 YELLOW")

    def test_removed_member_is_gone_and_iteration_is_correct(self):
        Color = self.module.Color
        self.write(self.m, self.V2)
        self.deep_reload(self.module)
        self.assertEqual([c.name for c in Color], ["RED", "BLUE", "YELLOW"])
        self.assertEqual(list(Color), [Color.RED, Color.BLUE, Color.YELLOW])
        self.assertEqual(len(Color), 3)
        self.assertEqual(list(Color.__members__), ["RED", "BLUE", "YELLOW"])
        self.assertFalse(hasattr(Color, "GREEN"))
        with self.assertRaises(ValueError):
            Color(2)
        with self.assertRaises(ValueError):
            Color(3)  # BLUE's old value
        with self.assertRaises(KeyError):
            Color["GREEN"]


class FrozenDataclass(DeepReloadTestCase):
    V1 = '''
        from dataclasses import dataclass
        @dataclass(frozen=True)
        class D:
            x: int
            y: int = 0
            def total(self):
                return ('v1', self.x + self.y)
    '''
    V2 = '''
        from dataclasses import dataclass
        @dataclass(frozen=True)
        class D:
            x: int
            y: int = 0
            z: int = 5
            def total(self):
                return ('v2', self.x + self.y + self.z)
    '''

    def setUp(self):
        super().setUp()
        self.m = self.mod("data")
        self.write(self.m, self.V1)
        self.module = self.load(self.m)

    def test_field_added_reloads_and_new_instances_have_it(self):
        D = self.module.D
        self.write(self.m, self.V2)
        report = self.deep_reload(self.module)
        self.assertEqual(report.outcome, "reloaded")
        self.assertIs(self.module.D, D)
        self.assertEqual([f.name for f in dataclasses.fields(D)], ["x", "y", "z"])
        new = D(1, 2, 3)
        self.assertEqual((new.x, new.y, new.z), (1, 2, 3))
        self.assertEqual(D(1).z, 5)
        self.assertEqual(new.total(), ("v2", 6))
        self.assertEqual(repr(new), "D(x=1, y=2, z=3)")
        self.assertEqual(new, D(1, 2, 3))

    def test_old_instance_keeps_its_data_and_class(self):
        D = self.module.D
        old = D(1, 2)
        self.write(self.m, self.V2)
        self.deep_reload(self.module)
        self.assertEqual((old.x, old.y), (1, 2))
        self.assertIs(type(old), self.module.D)
        self.assertIsInstance(old, self.module.D)
        self.assertEqual(old.total(), ("v2", 8))  # z comes from the class default

    def test_instance_created_at_top_level_by_the_new_code(self):
        # The new code builds a frozen instance at import time; the deep update moves it to the kept class.
        D = self.module.D
        self.write(self.m, self.source(self.V2) + "ORIGIN = D(0)\n")
        report = self.deep_reload(self.module)
        self.assertEqual(report.outcome, "reloaded")
        self.assertIs(self.module.D, D)
        self.assertIs(type(self.module.ORIGIN), D)
        self.assertEqual(self.module.ORIGIN, D(0, 0, 5))

    def test_instances_stay_frozen(self):
        D = self.module.D
        old = D(1, 2)
        self.write(self.m, self.V2)
        self.deep_reload(self.module)
        new = D(1, 2, 3)
        for obj in (old, new):
            with self.assertRaises(dataclasses.FrozenInstanceError):
                obj.x = 10
            with self.assertRaises(dataclasses.FrozenInstanceError):
                obj.undeclared = 10


class NamedTuples(DeepReloadTestCase):
    def test_collections_namedtuple_field_change(self):
        m = self.mod("points")
        self.write(m, "from collections import namedtuple\nP = namedtuple('P', 'x y')\n")
        module = self.load(m)
        P = module.P
        old = P(1, 2)
        self.write(m, "from collections import namedtuple\nP = namedtuple('P', 'x y z', defaults=(0,))\n")

        report = self.deep_reload(module)

        self.assertEqual(report.outcome, "reloaded")
        self.assertEqual(module.P._fields, ("x", "y", "z"))
        new = module.P(1, 2, 3)
        self.assertEqual((new.x, new.y, new.z), (1, 2, 3))
        self.assertEqual(module.P(1, 2).z, 0)
        self.assertEqual(tuple(old), (1, 2))
        self.assertEqual((old.x, old.y), (1, 2))
        self.assertIsInstance(old, module.P)

    def test_typing_namedtuple_field_change(self):
        m = self.mod("points")
        self.write(m, self.source('''
            from typing import NamedTuple
            class T(NamedTuple):
                x: int
                y: int = 0
                def norm(self):
                    return ('v1', self.x + self.y)
        '''))
        module = self.load(m)
        T = module.T
        old = T(1, 2)
        self.write(m, self.source('''
            from typing import NamedTuple
            class T(NamedTuple):
                x: int
                y: int = 0
                z: int = 7
                def norm(self):
                    return ('v2', self.x + self.y + self.z)
        '''))

        report = self.deep_reload(module)

        self.assertEqual(report.outcome, "reloaded")
        self.assertEqual(module.T._fields, ("x", "y", "z"))
        new = module.T(1, 2)
        self.assertEqual(new.z, 7)
        self.assertEqual(new.norm(), ("v2", 10))
        self.assertEqual(tuple(old), (1, 2))
        self.assertEqual((old.x, old.y), (1, 2))
        self.assertIsInstance(old, module.T)


class Decorated(DeepReloadTestCase):
    def test_wraps_decorator_from_another_module_old_reference_runs_new_body(self):
        deco, m, app = self.mod("deco"), self.mod("plug"), self.mod("app")
        self.write(deco, '''
import functools
def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return ('logged', fn(*args, **kwargs))
    return wrapper
''')
        body = '''
from {DECO} import logged
@logged
def g(x):
    """g {V}"""
    return ('g {V}', x)
'''
        self.write(m, self.source(body, DECO=deco, V="v1"))
        self.write(app, self.source("from {M} import g\n", M=m))
        app_module = self.load(app)
        module = sys.modules[m]
        old_g = module.g
        self.assertEqual(old_g(1), ("logged", ("g v1", 1)))
        self.write(m, self.source(body, DECO=deco, V="v2"))

        report = self.deep_reload(module)

        self.assertEqual(old_g(1), ("logged", ("g v2", 1)))
        self.assertEqual(app_module.g(1), ("logged", ("g v2", 1)))
        self.assertEqual(module.g(1), ("logged", ("g v2", 1)))
        self.assertEqual(old_g.__doc__, "g v2")
        self.assertEqual(old_g.__wrapped__(1), ("g v2", 1))
        self.assertEqual(list(report.not_patched), [])

    def test_decorated_method_and_classmethod_stack(self):
        deco, m = self.mod("deco"), self.mod("plug")
        self.write(deco, '''
import functools
def tagged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return ['tagged', fn(*args, **kwargs)]
    return wrapper
''')
        body = '''
from {DECO} import tagged
class C:
    @tagged
    def run(self):
        return 'run {V}'
    @classmethod
    @tagged
    def build(cls):
        return 'build {V}'
'''
        self.write(m, self.source(body, DECO=deco, V="v1"))
        module = self.load(m)
        obj = module.C()
        build = module.C.build
        self.write(m, self.source(body, DECO=deco, V="v2"))
        self.deep_reload(module)
        self.assertEqual(obj.run(), ["tagged", "run v2"])
        self.assertEqual(build(), ["tagged", "build v2"])


    def test_lru_cache_wrapper_does_not_serve_results_of_the_old_code(self):
        m = self.mod("cached")
        body = "import functools\n@functools.lru_cache(maxsize=None)\ndef compute(x):\n    return ('{V}', x)\n"
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        old_compute = module.compute
        self.assertEqual(old_compute(1), ("v1", 1))
        self.write(m, self.source(body, V="v2"))
        self.deep_reload(module)
        self.assertEqual(module.compute(2), ("v2", 2))
        self.assertEqual(old_compute(2), ("v2", 2))
        self.assertEqual(module.compute(1), ("v2", 1))  # not the v1 result cached before the reload


class Closures(DeepReloadTestCase):
    def test_closure_whose_free_variables_change_is_rebound_and_reported(self):
        m, app = self.mod("closures"), self.mod("app")
        self.write(m, '''
def make():
    factor = 2
    def scaled(x):
        return x * factor
    return scaled
scaled = make()
''')
        self.write(app, self.source("from {M} import scaled\n", M=m))
        app_module = self.load(app)
        module = sys.modules[m]
        old_scaled = module.scaled
        self.write(m, '''
def make():
    offset = 5
    factor = 3
    def scaled(x):
        return x * factor + offset
    return scaled
scaled = make()
''')

        report = self.deep_reload(module)

        self.assertEqual(report.outcome, "reloaded")
        self.assertIsNot(module.scaled, old_scaled)
        self.assertEqual(module.scaled(1), 8)
        self.assertMentions(report.not_patched, m + ".scaled")
        self.assertNotMentions(report.patched, m + ".scaled")
        # The rebound function reaches `from m import scaled` bindings too.
        self.assertEqual(app_module.scaled(1), 8)
        # Documented: an old reference to a closure that could not be patched keeps the old code.
        self.assertEqual(old_scaled(1), 2)

    def test_closure_with_same_free_variables_but_new_cell_values_is_rebound(self):
        m = self.mod("closures")
        body = "def make():\n    factor = {N}\n    def scaled(x):\n        return x * factor\n    return scaled\nscaled = make()\n"
        self.write(m, self.source(body, N="2"))
        module = self.load(m)
        self.write(m, self.source(body, N="3"))
        report = self.deep_reload(module)
        self.assertEqual(module.scaled(1), 3)
        self.assertMentions(report.not_patched, m + ".scaled")


class SuperAndDispatch(DeepReloadTestCase):
    def test_zero_argument_super_in_patched_and_new_methods_on_old_instances(self):
        m = self.mod("family")
        self.write(m, '''
class Base:
    def greet(self):
        return 'base v1'
class Sub(Base):
    def __init__(self):
        super().__init__()
        self.made = 'v1'
    def greet(self):
        return 'sub v1 + ' + super().greet()
''')
        module = self.load(m)
        Base, Sub = module.Base, module.Sub
        obj = Sub()
        self.write(m, '''
class Base:
    def greet(self):
        return 'base v2'
    def extra(self):
        return 'base extra v2'
class Sub(Base):
    def __init__(self):
        super().__init__()
        self.made = 'v2'
    def greet(self):
        return 'sub v2 + ' + super().greet()
    def extra(self):
        return 'sub extra v2 + ' + super().extra()
''')

        self.deep_reload(module)

        self.assertIs(module.Base, Base)
        self.assertIs(module.Sub, Sub)
        self.assertEqual(obj.greet(), "sub v2 + base v2")
        self.assertEqual(obj.extra(), "sub extra v2 + base extra v2")
        fresh = module.Sub()
        self.assertEqual(fresh.made, "v2")
        self.assertEqual(fresh.extra(), "sub extra v2 + base extra v2")

    def test_zero_argument_super_in_a_method_under_a_plain_decorator_from_another_module(self):
        # The wrapper (no __wrapped__) is another module's function: the new
        # one goes into the class, and the method inside it must see the kept class.
        deco, m = self.mod("deco"), self.mod("greeter")
        self.write(deco, '''
def logged(f):
    def wrapper(self, *a):
        return f(self, *a)
    return wrapper
''')
        body = self.source('''
from {D} import logged
class Base:
    def hello(self):
        return "base"
class C(Base):
    @logged
    def hello(self):
        return "C+" + super().hello()
''', D=deco)
        self.write(m, body)
        module = self.load(m)
        C, old = module.C, module.C()
        self.append(m, "EDITED = 1\n")

        self.deep_reload(module)

        self.assertIs(module.C, C)
        self.assertEqual(old.hello(), "C+base")
        self.assertEqual(module.C().hello(), "C+base")

    def test_singledispatch_in_another_module_registered_on_a_patched_class(self):
        m, app = self.mod("shapes"), self.mod("app")
        body = "class Cls:\n    def method(self):\n        return 'method {V}'\n"
        self.write(m, self.source(body, V="v1"))
        self.write(app, self.source('''
import functools
from {M} import Cls
@functools.singledispatch
def describe(obj):
    return 'default'
@describe.register
def _(obj: Cls):
    return 'cls: ' + obj.method()
''', M=m))
        app_module = self.load(app)
        module = sys.modules[m]
        obj = module.Cls()
        self.assertEqual(app_module.describe(obj), "cls: method v1")
        self.write(m, self.source(body, V="v2"))
        self.deep_reload(module)
        self.assertEqual(app_module.describe(obj), "cls: method v2")
        self.assertEqual(app_module.describe(module.Cls()), "cls: method v2")
        self.assertEqual(app_module.describe(1), "default")

    def test_singledispatch_in_the_reloaded_module_dispatches_old_and_new_instances(self):
        m = self.mod("shapes")
        body = '''
import functools
class Cls:
    def method(self):
        return 'method {V}'
@functools.singledispatch
def describe(obj):
    return 'default {V}'
@describe.register(Cls)
def _describe_cls(obj):
    return 'cls {V}: ' + obj.method()
'''
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        obj = module.Cls()
        self.write(m, self.source(body, V="v2"))
        self.deep_reload(module)
        self.assertEqual(module.describe(1), "default v2")
        self.assertEqual(module.describe(obj), "cls v2: method v2")
        self.assertEqual(module.describe(module.Cls()), "cls v2: method v2")


class Pickling(DeepReloadTestCase):
    BODY = '''
class Cls:
    def __init__(self, data):
        self.data = data
    def method(self):
        return 'method {V}'
    class Inner:
        pass
'''

    def test_pickle_round_trip_of_an_old_instance_after_reload(self):
        m = self.mod("pickled")
        self.write(m, self.source(self.BODY, V="v1"))
        module = self.load(m)
        obj = module.Cls([1, 2, 3])
        inner = module.Cls.Inner()
        self.write(m, self.source(self.BODY, V="v2"))
        self.deep_reload(module)
        for protocol in (0, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL):
            copy = pickle.loads(pickle.dumps(obj, protocol))
            self.assertIs(type(copy), module.Cls)
            self.assertEqual(copy.data, [1, 2, 3])
            self.assertEqual(copy.method(), "method v2")
            self.assertIs(type(pickle.loads(pickle.dumps(inner, protocol))), module.Cls.Inner)

    def test_pickle_taken_before_reload_loads_after_it(self):
        m = self.mod("pickled")
        self.write(m, self.source(self.BODY, V="v1"))
        module = self.load(m)
        data = pickle.dumps(module.Cls("kept"))
        self.write(m, self.source(self.BODY, V="v2"))
        self.deep_reload(module)
        copy = pickle.loads(data)
        self.assertIs(type(copy), module.Cls)
        self.assertEqual(copy.method(), "method v2")


class ReplacedClasses(DeepReloadTestCase):
    def test_bases_changed_class_is_replaced_reported_and_instances_moved(self):
        m = self.mod("bases")
        self.write(m, '''
class A:
    def origin(self):
        return 'A'
class B:
    def origin(self):
        return 'B'
class Cls(A):
    def who(self):
        return 'v1'
''')
        module = self.load(m)
        OldCls = module.Cls
        obj = OldCls()
        obj.data = 42
        self.write(m, '''
class A:
    def origin(self):
        return 'A'
class B:
    def origin(self):
        return 'B'
class Cls(B):
    def who(self):
        return 'v2'
''')

        report = self.deep_reload(module)

        self.assertEqual(report.outcome, "reloaded")
        self.assertMentions(report.not_patched, m + ".Cls", "bases")
        self.assertIsNot(module.Cls, OldCls)
        self.assertIs(type(obj), module.Cls)  # moved: the layout allows it
        self.assertEqual(obj.data, 42)
        self.assertEqual(obj.who(), "v2")
        self.assertEqual(obj.origin(), "B")
        self.assertEqual(list(report.instances_not_moved), [])

    def test_replaced_class_inherits_from_the_classes_the_module_names(self):
        # B keeps its identity, so the replacement Cls(B) must derive from m.B.
        m = self.mod("bases")
        self.write(m, "class A:\n    pass\nclass B:\n    pass\nclass Cls(A):\n    pass\n")
        module = self.load(m)
        B = module.B
        obj = module.Cls()
        self.write(m, "class A:\n    pass\nclass B:\n    pass\nclass Cls(B):\n    pass\n")
        self.deep_reload(module)
        self.assertIs(module.B, B)
        self.assertTrue(issubclass(module.Cls, module.B))
        self.assertIsInstance(module.Cls(), module.B)
        self.assertIsInstance(obj, module.B)

    def test_metaclass_changed_class_is_replaced_and_instances_moved(self):
        m = self.mod("meta")
        self.write(m, "class Cls:\n    def who(self):\n        return 'v1'\n")
        module = self.load(m)
        OldCls = module.Cls
        obj = OldCls()
        self.write(m, "class Meta(type):\n    pass\nclass Cls(metaclass=Meta):\n    def who(self):\n        return 'v2'\n")
        report = self.deep_reload(module)
        self.assertMentions(report.not_patched, m + ".Cls", "metaclass")
        self.assertIs(type(module.Cls), module.Meta)
        self.assertIs(type(obj), module.Cls)
        self.assertEqual(obj.who(), "v2")

    def test_slots_changed_class_is_replaced_and_unmovable_instances_reported(self):
        m = self.mod("slots")
        self.write(m, "class S:\n    __slots__ = ('a',)\n    def v(self):\n        return 'v1'\n")
        module = self.load(m)
        OldS = module.S
        s = OldS()
        s.a = 1
        self.write(m, "class S:\n    __slots__ = ('a', 'b')\n    def v(self):\n        return 'v2'\n")

        report = self.deep_reload(module)

        self.assertEqual(report.outcome, "reloaded")
        self.assertMentions(report.not_patched, m + ".S", "__slots__")
        self.assertMentions(report.instances_not_moved, m + ".S")
        self.assertIsNot(module.S, OldS)
        new = module.S()
        new.b = 2
        self.assertEqual(new.v(), "v2")
        # The old instance could not move: it keeps its data on the old class.
        self.assertIs(type(s), OldS)
        self.assertEqual(s.a, 1)


class SlotsClasses(DeepReloadTestCase):
    """A class with __slots__ keeps its own slot descriptors: they describe its instances' layout."""

    SOURCE = '''
class P:
    __slots__ = ('x', 'y')
    def __init__(self, x):
        self.x = x
        self.y = 'y'
    def show(self):
        return '{V} %s %s' % (self.x, self.y)
'''

    def test_unchanged_slots_class_keeps_working_for_old_and_new_instances(self):
        m = self.mod("slotted")
        self.write(m, self.source(self.SOURCE, V="v1"))
        module = self.load(m)
        P = module.P
        old = P(1)
        self.write(m, self.source(self.SOURCE, V="v2") + "_probe = 1\n")

        report = self.deep_reload(module)

        self.assertEqual(report.outcome, "reloaded")
        self.assertMentions(report.patched, "class", m + ".P")
        self.assertIs(module.P, P)
        self.assertEqual(old.x, 1)
        self.assertEqual(old.show(), "v2 1 y")
        new = module.P(2)
        self.assertEqual(new.x, 2)
        new.x = 3
        self.assertEqual(new.show(), "v2 3 y")
        self.assertIs(type(new), P)

    def test_subclass_of_a_slots_class_in_the_same_module(self):
        m = self.mod("slotted")
        body = self.SOURCE + "class Q(P):\n    __slots__ = ('z',)\n"
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        q = module.Q(1)
        q.z = 5
        self.write(m, self.source(body, V="v2"))

        self.deep_reload(module)

        self.assertEqual((q.x, q.y, q.z), (1, "y", 5))
        fresh = module.Q(7)
        fresh.z = 8
        self.assertEqual((fresh.x, fresh.z, fresh.show()), (7, 8, "v2 7 y"))
        self.assertIsInstance(fresh, module.P)


    def test_a_module_that_deletes_slots_after_the_class_exists(self):
        # jinja2.runtime: `del Undefined.__slots__` once the classes exist.
        m = self.mod("slotted")
        body = self.SOURCE + "del P.__slots__\n"
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        P, old = module.P, module.P(1)
        self.write(m, self.source(body, V="v2"))

        report = self.deep_reload(module)

        self.assertIs(module.P, P)
        self.assertEqual(list(report.not_patched), [])
        self.assertEqual(old.show(), "v2 1 y")

    def test_a_decorator_that_returns_a_slotted_copy_keeps_the_class(self):
        # attrs' slots=True and dataclass(slots=True) build a new class from
        # the class statement's; the statement's own class has no slots.
        m = self.mod("slotted")
        body = '''
def slotted(cls):
    namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    namespace["__slots__"] = ("x",)
    return type(cls)(cls.__name__, cls.__bases__, namespace)

@slotted
class P:
    def __init__(self, x):
        self.x = x
    def show(self):
        return '{V} %s' % self.x

class Q(P):
    __slots__ = ()
'''
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        P, Q, old, sub = module.P, module.Q, module.P(1), module.Q(2)
        self.write(m, self.source(body, V="v2"))

        report = self.deep_reload(module)

        self.assertIs(module.P, P)
        self.assertIs(module.Q, Q)
        self.assertEqual(list(report.not_patched), [])
        self.assertEqual(list(report.instances_not_moved), [])
        self.assertEqual((old.show(), sub.show(), module.P(3).show()), ("v2 1", "v2 2", "v2 3"))


class ObjectsThatRunCodeWhenAsked(DeepReloadTestCase):
    """Proxies (werkzeug's LocalProxy: flask.request, flask.logging.wsgi_errors_stream)
    answer attribute lookups, isinstance() and __class__ by evaluating themselves."""

    SOURCE = '''
EVALUATED = []
class Proxy:
    __slots__ = ("_get",)
    def __init__(self, get):
        object.__setattr__(self, "_get", get)
    def _target(self):
        EVALUATED.append(1)
        return object.__getattribute__(self, "_get")()
    def __getattr__(self, name):
        return getattr(self._target(), name)
    __class__ = property(lambda self: type(self._target()))
    __dict__ = property(lambda self: self._target().__dict__)
    __wrapped__ = property(lambda self: self._target())
    def __call__(self, *args):
        return self._target()(*args)

@Proxy
def current():
    raise RuntimeError("evaluated outside of a request")

def version():
    return '{V}'
'''

    def test_deep_reload_never_evaluates_a_proxy(self):
        m = self.mod("proxies")
        self.write(m, self.source(self.SOURCE, V="v1"))
        module = self.load(m)
        version = module.version
        self.write(m, self.source(self.SOURCE, V="v2"))

        report = self.deep_reload(module)

        self.assertEqual(report.outcome, "reloaded")
        self.assertEqual(module.EVALUATED, [])
        self.assertIs(type(module.current), module.Proxy)
        self.assertEqual(version(), "v2")


class GeneratedMethods(DeepReloadTestCase):
    def test_a_method_made_by_exec_with_its_own_globals_is_rebound_not_patched(self):
        # Like attrs and dataclasses: the generated code reads names from the
        # dict it was exec'd in, which only the new function has.
        m = self.mod("generated")
        body = '''
def make_init(default):
    namespace = {"_DEFAULT_{V}": default}
    exec("def __init__(self):\\n    self.value = _DEFAULT_{V}\\n", namespace)
    return namespace["__init__"]

class Cls:
    __init__ = make_init('{V}')
Cls.__init__.__module__ = __name__
'''
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        Cls = module.Cls
        self.write(m, self.source(body, V="v2"))

        report = self.deep_reload(module)

        self.assertIs(module.Cls, Cls)
        self.assertEqual(Cls().value, "v2")
        self.assertMentions(report.not_patched, m + ".Cls.__init__", "globals")



class ClassCreationHooks(DeepReloadTestCase):
    """__init_subclass__, a metaclass and __set_name__ run with the class the new
    statement created; the name binds to the old class, which took its content."""

    def test_init_subclass_and_metaclass_registries_name_the_kept_classes(self):
        m = self.mod("registries")
        body = '''
BY_NAME = {}
BY_CLASS = {}
ORDER = []
class Meta(type):
    def __init__(cls, name, bases, namespace):
        super().__init__(name, bases, namespace)
        ORDER.append(cls)
class Base(metaclass=Meta):
    latest = None
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        BY_NAME[cls.__name__] = cls
        BY_CLASS[cls] = cls.__name__
        Base.latest = cls
class Plugin(Base):
    def run(self):
        return '{V}'
DEFAULT = BY_NAME['Plugin']()
'''
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        Base, Plugin, Meta = module.Base, module.Plugin, module.Meta
        self.write(m, self.source(body, V="v2"))

        report = self.deep_reload(module)

        self.assertEqual(list(report.not_patched), [])
        self.assertIs(module.Plugin, Plugin)
        self.assertIs(module.BY_NAME["Plugin"], Plugin)
        self.assertEqual(module.BY_CLASS, {Plugin: "Plugin"})
        self.assertIs(Base.latest, Plugin)
        self.assertEqual(module.ORDER, [Base, Plugin])
        self.assertIs(type(module.DEFAULT), Plugin)
        self.assertEqual(module.BY_NAME["Plugin"]().run(), "v2")


    def test_a_descriptor_is_told_its_owner_is_the_kept_class(self):
        m = self.mod("fields")
        body = '''
class Field:
    def __set_name__(self, owner, name):
        self.owner, self.name = owner, name
    def __get__(self, obj, owner=None):
        return self if obj is None else obj.__dict__.get(self.name, '{V} default')
class Model:
    title = Field()
'''
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        Model, old = module.Model, module.Model()
        self.write(m, self.source(body, V="v2"))

        self.deep_reload(module)

        self.assertIs(vars(Model)["title"].owner, Model)
        self.assertEqual(old.title, "v2 default")

    def test_an_abc_keeps_the_virtual_subclasses_other_modules_registered(self):
        m = self.mod("abcs")
        body = '''
import abc
class Shape(abc.ABC):
    @abc.abstractmethod
    def area(self):
        ...
    def describe(self):
        return '{V}'
'''
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        Shape = module.Shape

        class Circle:  # registered from elsewhere, as collections.abc users do
            pass
        Shape.register(Circle)
        self.assertTrue(issubclass(Circle, Shape))
        self.write(m, self.source(body, V="v2"))

        self.deep_reload(module)

        self.assertIs(module.Shape, Shape)
        self.assertTrue(issubclass(Circle, Shape))
        self.assertIsInstance(Circle(), Shape)
        with self.assertRaises(TypeError):
            Shape()


class ClassStatementsSeeTheRealBuiltins(DeepReloadTestCase):
    """The new code's class statements yield the kept classes, yet the code
    itself sees builtins exactly as python3 gives them."""

    def test_module_code_sees_the_real_build_class_and_the_old_version_dies(self):
        m = self.mod("builder")
        body = '''
import builtins
BUILD_CLASS = builtins.__build_class__
BUILTINS = __builtins__
class Outer:
    class Inner:
        pass
INNER = Outer.Inner
'''
        self.write(m, body + "class Gone:\n    pass\n")
        module = self.load(m)
        Outer, Inner, builtins_before = module.Outer, module.Outer.Inner, module.__builtins__
        gone = weakref.ref(module.Gone)
        self.write(m, body)

        self.deep_reload(module)

        self.assertIs(module.BUILD_CLASS, builtins.__build_class__)
        self.assertIs(module.BUILTINS, builtins_before)
        self.assertIs(module.__builtins__, builtins_before)
        self.assertIs(module.Outer, Outer)
        self.assertIs(module.INNER, Inner)
        self.assertFalse(hasattr(module, "Gone"))
        gc.collect()
        self.assertIsNone(gone(), "the removed class of the old version is still alive")

    def test_builtins_the_new_code_adds_while_it_runs_are_found(self):
        # gettext.install() puts _ into builtins for the code that follows.
        m = self.mod("translated")
        name = "tr_" + self.tag
        body = self.source('''
import builtins
builtins.{NAME} = str.upper
TITLE = {NAME}("title {V}")
class Page:
    HEADING = {NAME}("heading")
    def title(self):
        return {NAME}("{V}")
''', NAME=name)
        self.write(m, body.replace("{V}", "v1"))
        module = self.load(m)
        Page = module.Page
        self.write(m, body.replace("{V}", "v2"))

        self.deep_reload(module)

        self.assertEqual(module.TITLE, "TITLE V2")
        self.assertIs(module.Page, Page)
        self.assertEqual(Page.HEADING, "HEADING")
        self.assertEqual(Page().title(), "V2")


class ClassState(DeepReloadTestCase):
    def test_a_class_attribute_the_edit_left_alone_keeps_its_run_time_value(self):
        # networkx's argmap counts compiled functions in a class attribute;
        # resetting it makes their names (globals of one module) collide.
        m = self.mod("counter")
        body = '''
class Counter:
    __count = 0
    LIMIT = {LIMIT}
    @classmethod
    def next(cls):
        cls.__count += 1
        return '{V}', cls.__count
'''
        self.write(m, self.source(body, V="v1", LIMIT="3"))
        module = self.load(m)
        module.Counter.next()
        module.Counter.next()
        self.write(m, self.source(body, V="v2", LIMIT="5"))

        self.deep_reload(module)

        self.assertEqual(module.Counter.next(), ("v2", 3))
        self.assertEqual(module.Counter.LIMIT, 5)  # the edit changed this one


    def test_attributes_set_on_a_class_at_run_time_stay_when_its_module_reruns(self):
        # pygments' LexerMeta caches the compiled rules on each lexer class
        # the first time one is made; a dependent re-run must not delete them.
        meta, lexers = self.mod("meta"), self.mod("lexers")
        self.write(meta, '''
class Meta(type):
    def __call__(cls, *args):
        if "_compiled" not in cls.__dict__:
            cls._compiled = [rule.upper() for rule in cls.rules]
        return super().__call__(*args)
''')
        self.write(lexers, self.source('''
from {META} import Meta
class Lexer(metaclass=Meta):
    rules = ("a", "b")
    def lex(self):
        return self._compiled
    def removed(self):
        return "removed"
''', META=meta))
        module = self.load(lexers)
        Lexer = module.Lexer
        lexer = Lexer()
        Lexer.noted = "set by the program"
        self.assertEqual(lexer.lex(), ["A", "B"])
        self.append(meta, "EDITED = 1\n")
        self.write(lexers, self.source('''
from {META} import Meta
class Lexer(metaclass=Meta):
    rules = ("a", "b")
    def lex(self):
        return self._compiled
''', META=meta))

        report = self.deep_reload(meta, dependents=True)

        self.assertEqual(list(report.reexecuted), [meta, lexers])
        self.assertIs(module.Lexer, Lexer)
        self.assertEqual(lexer.lex(), ["A", "B"])
        self.assertEqual(Lexer().lex(), ["A", "B"])
        self.assertEqual(Lexer.noted, "set by the program")
        self.assertFalse(hasattr(Lexer, "removed"), "a method the class body no longer defines stays")

    def test_pygments_lexers_keep_working_after_a_deep_reload_of_pygments_lexer(self):
        self.copy_installed_package("pygments", "python3-pygments")
        from pygments.lexers.python import PythonLexer
        lexer = PythonLexer()
        tokens = list(lexer.get_tokens("x = 1\n"))
        self.append("pygments.lexer", "_modhost_probe = 1\n")

        report = self.deep_reload("pygments.lexer", dependents=True)

        self.assertEqual(report.outcome, "reloaded")
        self.assertIn("pygments.lexers.python", list(report.reexecuted))
        self.assertIs(sys.modules["pygments.lexers.python"].PythonLexer, PythonLexer)
        self.assertEqual(list(lexer.get_tokens("x = 1\n")), tokens)
        self.assertEqual(list(PythonLexer().get_tokens("x = 1\n")), tokens)


class ClosuresOverConstants(DeepReloadTestCase):
    def test_a_closure_over_an_equal_constant_is_patched(self):
        # jinja2.compiler's binop visitors: closures over "//", "**"... which are
        # equal but, not being identifiers, not the same string objects.
        m = self.mod("factory")
        body = "def make(op):\n    def visit(a):\n        return '{V} ' + op + str(a)\n    return visit\nfloordiv = make('/' + '/')\n"
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        held = module.floordiv
        self.write(m, self.source(body, V="v2"))

        report = self.deep_reload(module)

        self.assertEqual(list(report.not_patched), [])
        self.assertIs(module.floordiv, held)
        self.assertEqual(held(1), "v2 //1")


    def test_a_wrapper_whose_cells_hold_fresh_helper_closures_is_patched(self):
        # jinja2's async_variant: the wrapper's cells hold a helper closure the
        # decorator makes anew each time, and the undecorated function.
        deco, m = self.mod("deco"), self.mod("decorated")
        self.write(deco, """
import functools
def variant(normal):
    def decorator(other):
        def is_ok(args):
            return bool(args)
        @functools.wraps(normal)
        def wrapper(*args):
            return other(*args) if is_ok(args) else normal()
        return wrapper
    return decorator
""")
        body = self.source("""
import {D}
def plain():
    return '{V} plain'
@{D}.variant(plain)
def both(x):
    return '{V} %s' % x
""", D=deco)
        self.write(m, body.replace("{V}", "v1"))
        module = self.load(m)
        held = module.both
        self.write(m, body.replace("{V}", "v2"))

        report = self.deep_reload(module)

        self.assertEqual(list(report.not_patched), [])
        self.assertIs(module.both, held)
        self.assertEqual((held(1), held()), ("v2 1", "v2 plain"))

    def test_a_wrapper_that_names_itself_in_its_dict_still_names_itself(self):
        # networkx's argmap: `wrapper.__self__ = wrapper` marks a wrapper it made
        # (which finds itself through a keyword default), and a stacked argmap
        # unwraps only those (networkx 3.4 compiled a wrong
        # signature for every algorithm after a reload of its dependents).
        deco, m = self.mod("deco"), self.mod("stacked")
        self.write(deco, """
def tagged(fn):
    def wrapper(*args, __wrapper=None):
        inner = __wrapper.__wrapped__
        if getattr(inner, '__self__', None) is inner:
            return ('stacked', inner(*args))
        return ('single', inner(*args))
    wrapper.__kwdefaults__ = {'__wrapper': wrapper}
    wrapper.__self__ = wrapper
    wrapper.__wrapped__ = fn
    return wrapper
""")
        body = self.source("""
from {D} import tagged
@tagged
@tagged
def g(x):
    return ('{V}', x)
""", D=deco)
        self.write(m, body.replace("{V}", "v1"))
        module = self.load(m)
        held = module.g
        self.assertEqual(held(1), ("stacked", ("single", ("v1", 1))))
        self.write(m, body.replace("{V}", "v2"))

        report = self.deep_reload(module)

        self.assertEqual(list(report.not_patched), [])
        self.assertIs(module.g, held)
        self.assertIs(held.__self__, held)
        self.assertIs(held.__wrapped__.__self__, held.__wrapped__)
        self.assertEqual(held(1), ("stacked", ("single", ("v2", 1))))


class ClassesTheNewCodeStores(DeepReloadTestCase):
    """The new code's top-level statements may store its classes before deep update runs."""

    def test_class_registry_filled_by_a_decorator_names_the_kept_class(self):
        m = self.mod("registry")
        body = '''
REGISTRY = {}
def register(cls):
    REGISTRY[cls.__name__] = cls
    return cls
@register
class Cls:
    def method(self):
        return 'method {V}'
'''
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        Cls = module.Cls
        self.write(m, self.source(body, V="v2"))
        self.deep_reload(module)
        self.assertIs(module.Cls, Cls)
        self.assertIs(module.REGISTRY["Cls"], module.Cls)
        self.assertIsInstance(module.REGISTRY["Cls"](), module.Cls)

    def test_instances_created_at_top_level_inside_a_container(self):
        m = self.mod("registry")
        body = "class Cls:\n    def method(self):\n        return 'method {V}'\nINSTANCES = [Cls()]\n"
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        self.write(m, self.source(body, V="v2"))
        self.deep_reload(module)
        self.assertIsInstance(module.INSTANCES[0], module.Cls)
        self.assertIs(type(module.INSTANCES[0]), module.Cls)

    # Deep update finds what holds a discarded class by counting references
    # near the module and scans the heap only when those do not add up: each
    # of these holders must name the kept class either way.
    def test_instance_deep_inside_nested_containers_moves_to_the_kept_class(self):
        m = self.mod("registry")
        body = "class Cls:\n    def method(self):\n        return 'method {V}'\nNESTED = {'k': [(Cls(),)]}\n"
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        self.write(m, self.source(body, V="v2"))
        self.deep_reload(module)
        self.assertIs(type(module.NESTED["k"][0][0]), module.Cls)
        self.assertEqual(module.NESTED["k"][0][0].method(), "method v2")

    def test_generated_method_globals_copy_names_the_kept_class(self):
        m = self.mod("registry")
        body = '''
def generate(cls):
    scope = dict(globals())  # as attrs and dataclasses run generated code
    exec("def describe(self):\\n    return Tag.TEXT", scope)
    cls.describe = scope["describe"]
    return cls
def copied(cls):  # a decorator that returns a class of its own (attrs' slots=True)
    return type(cls.__name__, cls.__bases__, {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")})
@copied
class Tag:
    TEXT = '{V}'
@generate
class Cls:
    pass
'''
        self.write(m, self.source(body, V="v1"))
        module = self.load(m)
        Tag = module.Tag
        self.write(m, self.source(body, V="v2"))
        self.deep_reload(module)
        self.assertIs(module.Tag, Tag)
        self.assertIs(module.Cls.describe.__globals__["Tag"], module.Tag)
        self.assertEqual(module.Cls().describe(), "v2")


class ClassSource(DeepReloadTestCase):
    """inspect.getsource(cls) shows the running class body after a deep reload.

    Since 3.13 inspect finds a class by its __firstlineno__, which the class
    keeps in its own __dict__ and which assigning __module__ drops: a deep
    reload must carry the new line over, and a rolled-back one the old line.
    """
    V1 = """
        class Cls:
            def method(self):
                return 'v1'
    """
    V2 = """
        # two new lines above the class,
        # so that its first line moves
        class Cls:
            def method(self):
                return 'v2'
    """

    def test_getsource_follows_the_class_to_its_new_line(self):
        import inspect
        m = self.mod("sourced")
        self.write(m, self.V1)
        Cls = self.load(m).Cls
        self.write(m, self.V2)

        self.deep_reload(m)

        self.assertIs(sys.modules[m].Cls, Cls)
        self.assertEqual(inspect.getsource(Cls), textwrap.dedent(self.V2).split("\n", 3)[3])
        if sys.version_info >= (3, 13):
            self.assertEqual(Cls.__firstlineno__, 4)

    def test_a_rolled_back_reload_keeps_the_first_line(self):
        m = self.mod("sourced")
        self.write(m, self.V1)
        Cls = self.load(m).Cls
        before = dict(vars(Cls))
        self.write(m, textwrap.dedent(self.V2) + "raise LookupError('rolled back')\n")

        with self.assertRaises(LookupError):
            modhost.reload(m, deep=True)

        self.assertClassDictIs(Cls, before)
        self.assertEqual(Cls().method(), "v1")


if __name__ == "__main__":
    unittest.main()
