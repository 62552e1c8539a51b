"""bindings/modhost.pyi describes the real `modhost` module, no more and no less."""
import ast
import os
import unittest

import modhost

STUB = os.path.join(os.path.dirname(__file__), "..", "..", "bindings", "modhost.pyi")


class Stub(unittest.TestCase):
    def setUp(self):
        with open(STUB) as f:
            self.tree = ast.parse(f.read())

    def test_every_public_name_is_in_the_stub_and_exists(self):
        stubbed = {node.name for node in self.tree.body
                   if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        stubbed |= {node.target.id for node in self.tree.body if isinstance(node, ast.AnnAssign)}
        public = {name for name in dir(modhost) if not name.startswith("_")} | {"__version__"}
        self.assertEqual(stubbed, public)

    def test_every_function_has_a_docstring(self):
        for name in dir(modhost):
            value = getattr(modhost, name)
            if callable(value) and not name.startswith("_"):
                self.assertTrue(value.__doc__ and len(value.__doc__) > 20, name)


if __name__ == "__main__":
    unittest.main()
