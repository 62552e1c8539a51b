// Imports (what the import hook records for every module, without dis and
// without replacing __import__) and bound names (what a deep reload may
// remove), read from bytecode.
#include <gtest/gtest.h>
#include <pybind11/embed.h>

#include <map>
#include <set>

#include "modules/internal/bytecode_imports.h"

namespace py = pybind11;
using modhost::detail::bytecode_opcodes;
using modhost::detail::import_statement;
using modhost::detail::imports_of;

namespace {
std::vector<import_statement> scan(const char* source) {
  py::object code = py::module_::import("builtins").attr("compile")(source, "<test>", "exec");
  return imports_of(bytecode_opcodes::load(), code.ptr());
}
}  // namespace

TEST(BytecodeImports, ImportStatementsWithLevelFromlistAndBoundNames) {
  auto found = scan("import a.b.c\nfrom m import LIMIT as CAP, f\nfrom . import sib\nfrom ..up import *\n");
  ASSERT_EQ(found.size(), 4u);
  EXPECT_EQ(found[0].module, "a.b.c");
  EXPECT_FALSE(found[0].has_fromlist);
  EXPECT_EQ(found[1].module, "m");
  EXPECT_EQ(found[1].fromlist, (std::vector<std::string>{"LIMIT", "f"}));
  EXPECT_EQ(found[1].bound, (std::vector<std::pair<std::string, std::string>>{{"LIMIT", "CAP"}, {"f", "f"}}));
  EXPECT_EQ(found[2].module, "");
  EXPECT_EQ(found[2].level, 1);
  EXPECT_EQ(found[3].module, "up");
  EXPECT_EQ(found[3].level, 2);
  EXPECT_EQ(found[3].fromlist, (std::vector<std::string>{"*"}));
  EXPECT_TRUE(found[3].bound.empty());
}

TEST(BytecodeImports, ClassBodiesCountFunctionBodiesDoNot) {
  auto found = scan("class C:\n    from inner import x\n    def f(self):\n        import later\n"
                    "def g():\n    import never\n");
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].module, "inner");
  EXPECT_EQ(found[0].bound, (std::vector<std::pair<std::string, std::string>>{{"x", "x"}}));
}

TEST(BytecodeImports, ExtendedArgumentsAreFolded) {
  std::string source;
  for (int i = 0; i < 300; ++i) source += "n" + std::to_string(i) + " = " + std::to_string(i) + "\n";
  source += "from far_away import thing as alias\n";  // name indexes above 255
  auto found = scan(source.c_str());
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].module, "far_away");
  EXPECT_EQ(found[0].bound, (std::vector<std::pair<std::string, std::string>>{{"thing", "alias"}}));
}

TEST(BytecodeImports, NamesBoundAtTopLevelAndThroughGlobalInFunctions) {
  std::string source =
      "import os.path\nfrom m import a as b\nx: int = 1\ndel_me = 2\ndel del_me\n"
      "class C:\n    inner = 1\n    def method(self):\n        global from_method\n        from_method = 1\n"
      "def f():\n    local = 1\n    global from_f\n    from_f = 2\n    del from_f\n"
      "for loop_var in (): pass\nfrom star import *\n";
  for (int i = 0; i < 300; ++i) source += "n" + std::to_string(i) + " = " + std::to_string(i) + "\n";
  py::object code = py::module_::import("builtins").attr("compile")(source, "<test>", "exec");
  auto bound = modhost::detail::names_bound_by(bytecode_opcodes::load(), code.ptr());
  std::set<std::string> top(bound.top_level.begin(), bound.top_level.end());
  std::set<std::string> in_functions(bound.in_functions.begin(), bound.in_functions.end());
  for (const char* name : {"os", "b", "x", "__annotations__", "del_me", "C", "f", "loop_var", "n299"})
    EXPECT_TRUE(top.count(name)) << name;
  for (const char* name : {"inner", "local", "from_method", "from_f", "a", "star"})
    EXPECT_FALSE(top.count(name)) << name;
  EXPECT_EQ(in_functions, (std::set<std::string>{"from_method", "from_f"}));
}

TEST(BytecodeImports, ConstantsOfAClassBody) {
  std::string source = "class C:\n    LIMIT = 3\n    NAME = 'x'\n    TWICE = 1\n    TWICE = 2\n    made = len('ab')\n"
                       "    def f(self):\n        INSIDE = 5\n";
  py::object code = py::module_::import("builtins").attr("compile")(source, "<test>", "exec");
  py::object body;
  for (py::handle item : code.attr("co_consts"))
    if (py::isinstance(item, py::module_::import("types").attr("CodeType"))) body = py::reinterpret_borrow<py::object>(item);
  ASSERT_TRUE(body);
  std::map<std::string, py::object> found;
  for (const auto& [name, constant] : modhost::detail::constants_bound_by(bytecode_opcodes::load(), body.ptr()))
    found[name] = py::reinterpret_borrow<py::object>(constant);
  // Not TWICE (bound twice), made (a call), INSIDE (the method's). Python 3.13's compiler also
  // binds __firstlineno__ and __static_attributes__ as constants.
  EXPECT_EQ(found.count("TWICE") + found.count("made") + found.count("INSIDE"), 0u);
  EXPECT_EQ(found["__qualname__"].cast<std::string>(), "C");  // the compiler's own `__qualname__ = 'C'`
  EXPECT_EQ(found["LIMIT"].cast<int>(), 3);
  EXPECT_EQ(found["NAME"].cast<std::string>(), "x");
}

TEST(BytecodeImports, NamesReadAtTopLevelNotInFunctions) {
  std::string source =
      "import a\nX = a.CONST * 2\nTABLE = {k: a.table_entry for k in range(2)}\n"
      "class C(a.Base):\n    size = a.SIZE\n    def method(self):\n        return a.in_method\n"
      "def f():\n    return a.in_function()\ng = lambda: a.in_lambda\n";
  for (int i = 0; i < 300; ++i) source += "n" + std::to_string(i) + " = a.far" + std::to_string(i) + "\n";
  py::object code = py::module_::import("builtins").attr("compile")(source, "<test>", "exec");
  auto found = modhost::detail::names_read_at_top_level(bytecode_opcodes::load(), code.ptr());
  std::set<std::string> read(found.begin(), found.end());
  for (const char* name : {"a", "CONST", "table_entry", "range", "Base", "SIZE", "far299"})
    EXPECT_TRUE(read.count(name)) << name;
  for (const char* name : {"in_method", "in_function", "in_lambda", "X", "f"}) EXPECT_FALSE(read.count(name)) << name;
}
