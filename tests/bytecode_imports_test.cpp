// Imports read from bytecode: what the import hook records for every module
// without dis and without replacing __import__.
#include <gtest/gtest.h>
#include <pybind11/embed.h>

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
