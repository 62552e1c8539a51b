"""Deep reload and annotations. Since 3.14 (PEP 649/749) annotations are
deferred: modules, classes and functions carry an __annotate__ function, and
__annotations__ is computed from it on first read (and cached: a module keeps
it in its namespace, a class in __annotations_cache__). Reading it can raise
(a forward reference to a name that is not defined), so deep reload must move
__annotate__, not compute __annotations__; a deep reload's result must show the
new annotations even where the old ones were read already; a rollback puts the
old ones back. On 3.11-3.13 the same cases run with eager annotations.
"""
import inspect
import sys
import typing
import unittest

from cache_fixtures import DeepReloadTestCase, modhost

V1 = '''
LIMIT: int = 1
def f(x: int) -> int:
    return x
def forward(x: "NotDefinedYet") -> None:
    return "forward v1"
class Point:
    x: int
    def move(self, dx: int) -> None:
        pass
'''

V2 = '''
LIMIT: str = "one"
def f(x: str) -> str:
    return x * 2
def forward(x: NotDefinedAnywhere) -> None:
    return "forward v2"
class Point:
    x: float
    y: float
    def move(self, dx: float) -> None:
        pass
'''

LAZY = sys.version_info >= (3, 14)
if not LAZY:  # evaluated at definition: the name would fail every import of V2
    V2 = V2.replace("x: NotDefinedAnywhere", 'x: "NotDefinedAnywhere"')


class DeepReloadAnnotations(DeepReloadTestCase):
    def setUp(self):
        super().setUp()
        self.m = self.mod("ann")
        self.write(self.m, V1)
        self.module = self.load(self.m)
        self.f, self.Point = self.module.f, self.module.Point
        # Read them all first: the cached dicts must not survive the reload.
        self.assertEqual(self.module.__annotations__, {"LIMIT": int})
        self.assertEqual(self.f.__annotations__, {"x": int, "return": int})
        self.assertEqual(self.Point.__annotations__, {"x": int})

    @unittest.skipUnless(LAZY, "annotations are evaluated at definition before 3.14")
    def test_an_unresolvable_forward_reference_does_not_stop_the_reload(self):
        self.write(self.m, V2)
        report = self.deep_reload(self.m)
        self.assertEqual(report.outcome, "reloaded")
        self.assertEqual(self.module.forward(None), "forward v2")
        with self.assertRaises(NameError):
            self.module.forward.__annotations__

    @unittest.skipUnless(LAZY, "annotations are evaluated at definition before 3.14")
    def test_patched_objects_show_the_new_annotations(self):
        self.write(self.m, V2)
        self.deep_reload(self.m)
        self.assertIs(self.module.f, self.f)
        self.assertIs(self.module.Point, self.Point)
        self.assertEqual(self.f("a"), "aa")
        self.assertEqual(self.f.__annotations__, {"x": str, "return": str})
        self.assertEqual(self.Point.__annotations__, {"x": float, "y": float})
        self.assertEqual(self.Point.move.__annotations__, {"dx": float, "return": None})
        self.assertEqual(self.module.__annotations__, {"LIMIT": str})

    def test_get_type_hints_and_get_annotations_see_the_new_annotations(self):
        # Both read (and, where they cache, cache) the old ones first.
        self.assertEqual(typing.get_type_hints(self.Point), {"x": int})
        self.assertEqual(inspect.get_annotations(self.Point), {"x": int})
        self.assertEqual(typing.get_type_hints(self.f), {"x": int, "return": int})
        self.write(self.m, V2)

        self.deep_reload(self.m)

        self.assertIs(self.module.Point, self.Point)
        self.assertEqual(typing.get_type_hints(self.Point), {"x": float, "y": float})
        self.assertEqual(inspect.get_annotations(self.Point), {"x": float, "y": float})
        self.assertEqual(typing.get_type_hints(self.Point.move), {"dx": float, "return": type(None)})
        self.assertEqual(typing.get_type_hints(self.f), {"x": str, "return": str})
        self.assertEqual(inspect.get_annotations(self.f), {"x": str, "return": str})
        self.assertEqual(inspect.get_annotations(self.module), {"LIMIT": str})

    def test_a_failed_reload_puts_the_old_annotations_back(self):
        self.write(self.m, V2.replace("LIMIT: str", "1 / 0\nLIMIT: str") + "\nraise ValueError('late')\n")
        with self.assertRaises(ZeroDivisionError):
            modhost.reload(self.m, deep=True)
        self.assertIs(self.module.f, self.f)
        self.assertEqual(self.f(3), 3)
        self.assertEqual(self.f.__annotations__, {"x": int, "return": int})
        self.assertEqual(self.Point.__annotations__, {"x": int})
        self.assertEqual(self.module.__annotations__, {"LIMIT": int})

    def test_a_reload_failing_after_the_patch_puts_the_old_annotations_back(self):
        self.write(self.m, V2 + "\nraise ValueError('late')\n")
        with self.assertRaises(ValueError):
            modhost.reload(self.m, deep=True)
        self.assertEqual(self.f(3), 3)
        self.assertEqual(self.f.__annotations__, {"x": int, "return": int})
        self.assertEqual(self.Point.__annotations__, {"x": int})
        self.assertEqual(self.Point.move.__annotations__, {"dx": int, "return": None})
        self.assertEqual(self.module.__annotations__, {"LIMIT": int})

    @unittest.skipUnless(LAZY, "annotations are evaluated at definition before 3.14")
    def test_a_plain_reload_shows_the_new_module_annotations(self):
        self.write(self.m, V2)
        modhost.reload(self.m)
        self.assertEqual(self.module.__annotations__, {"LIMIT": str})

    def test_a_failed_plain_reload_keeps_the_namespace_with_its_annotations(self):
        before = self.snapshot(self.module)
        self.write(self.m, V2 + "\nraise ValueError('late')\n")
        with self.assertRaises(ValueError):
            modhost.reload(self.m)
        self.assertNamespaceIs(self.module, before)
        self.assertEqual(self.module.__annotations__, {"LIMIT": int})


if __name__ == "__main__":
    unittest.main()
