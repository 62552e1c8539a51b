// The import hook: what a module imports while its top-level code runs is
// recorded as its dependencies, with the names `from x import name` bound.
#include <gtest/gtest.h>
#include <pybind11/embed.h>

#include "modules/module_cache.h"
#include "tests/cache_test.h"

using namespace modhost::testing;

namespace {
class ImportHook : public cache_test {};
}  // namespace

TEST_F(ImportHook, TopLevelImportsAreDependenciesImportsInFunctionsAreNot) {
  write("ih_b.py", "B = 1\n");
  write("ih_c.py", "C = 1\n");
  write("ih_a.py", "import ih_b\ndef later():\n    import ih_c\n    return ih_c.C\n");
  import("ih_a").attr("later")();
  auto deps = cache().dependencies("ih_a");
  EXPECT_TRUE(contains(deps, "ih_b"));
  EXPECT_FALSE(contains(deps, "ih_c"));
  EXPECT_TRUE(contains(cache().dependents("ih_b"), "ih_a"));
  EXPECT_TRUE(cache().find("ih_c")) << "a module imported later is still tracked";
}

TEST_F(ImportHook, FromImportRecordsTheNamesAndTheirAliases) {
  write("ih_limits.py", "LIMIT = 1\ndef f():\n    return 2\n");
  write("ih_user.py", "from ih_limits import LIMIT as CAP, f\n");
  import("ih_user");
  auto from = cache().from_imports("ih_user");
  ASSERT_EQ(from.count("ih_limits"), 1u);
  EXPECT_TRUE(contains(from["ih_limits"], "LIMIT as CAP"));
  EXPECT_TRUE(contains(from["ih_limits"], "f"));
}

TEST_F(ImportHook, ImportModuleIsRecordedLikeImport) {
  write("ih_target.py", "X = 1\n");
  write("ih_dynamic.py", "import importlib\nplugin = importlib.import_module('ih_target')\n");
  import("ih_dynamic");
  EXPECT_TRUE(contains(cache().dependencies("ih_dynamic"), "ih_target"));
}

TEST_F(ImportHook, RelativeImportsResolveAgainstThePackage) {
  write("ih_pkg/__init__.py", "");
  write("ih_pkg/util.py", "def ok():\n    return True\n");
  write("ih_pkg/core.py", "from . import util\nfrom .util import ok\n");
  import("ih_pkg.core");
  auto deps = cache().dependencies("ih_pkg.core");
  EXPECT_TRUE(contains(deps, "ih_pkg.util"));
  EXPECT_TRUE(contains(cache().from_imports("ih_pkg.core")["ih_pkg.util"], "ok"));
}

TEST_F(ImportHook, AFailedImportRecordsNothingAndStillRaises) {
  write("ih_tries.py",
        "try:\n    import ih_never_there\nexcept ImportError as e:\n    caught = type(e).__name__\n");
  auto module = import("ih_tries");
  EXPECT_EQ(module.attr("caught").cast<std::string>(), "ModuleNotFoundError");
  EXPECT_TRUE(cache().dependencies("ih_tries").empty());
  EXPECT_FALSE(cache().find("ih_never_there"));
}
