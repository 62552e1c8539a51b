#include <gtest/gtest.h>

#include "modules/internal/import_graph.h"

using modhost::import_graph;
using order = std::vector<std::vector<std::string>>;

TEST(ImportGraph, ReloadOrderPutsDependenciesFirst) {
  import_graph graph;
  graph.add_dependency("app", "plug");
  graph.add_dependency("app", "util");
  graph.add_dependency("util", "plug");
  graph.add_dependency("unrelated", "json");
  EXPECT_EQ(graph.reload_order("plug"), (order{{"plug"}, {"util"}, {"app"}}));
}

TEST(ImportGraph, ACycleIsOneUnitLedByTheTarget) {
  import_graph graph;
  graph.add_dependency("a", "b");
  graph.add_dependency("b", "a");
  graph.add_dependency("c", "a");
  EXPECT_EQ(graph.reload_order("b"), (order{{"b", "a"}, {"c"}}));
}

TEST(ImportGraph, ASubmoduleRunsBeforeThePackageThatImportsIt) {
  // pkg/__init__: `from .core import Err`; pkg/core: `from . import util`
  // (recorded against both the package and pkg.util).
  import_graph graph;
  graph.add_dependency("pkg", "pkg.core");
  graph.add_dependency("pkg.core", "pkg");
  graph.add_dependency("pkg.core", "pkg.util");
  EXPECT_EQ(graph.reload_order("pkg.util"), (order{{"pkg.util"}, {"pkg.core", "pkg"}}));
  EXPECT_EQ(graph.reload_order("pkg"), (order{{"pkg.core", "pkg"}}));
}

TEST(ImportGraph, ATrueCycleInsideAPackageIsStillLedByTheTarget) {
  import_graph graph;
  graph.add_dependency("pkg.a", "pkg.b");
  graph.add_dependency("pkg.b", "pkg.a");
  graph.add_dependency("pkg.a", "pkg");
  graph.add_dependency("pkg", "pkg.a");
  EXPECT_EQ(graph.reload_order("pkg.b"), (order{{"pkg.b", "pkg.a", "pkg"}}));
}

TEST(ImportGraph, FailedRunRestoresOutgoingEdges) {
  import_graph graph;
  graph.add_dependency("app", "plug");
  graph.add_from_import("app", "plug", "hook");
  auto saved = graph.take_outgoing("app");
  EXPECT_TRUE(graph.dependents("plug").empty());
  graph.add_dependency("app", "other");  // what the failed run recorded
  graph.restore_outgoing("app", std::move(saved));
  EXPECT_EQ(graph.dependencies("app"), import_graph::name_set{"plug"});
  EXPECT_EQ(graph.dependents("plug"), import_graph::name_set{"app"});
  EXPECT_TRUE(graph.dependents("other").empty());
  EXPECT_EQ(graph.from_imports("app").at("plug"), import_graph::name_set{"hook"});
}

TEST(ImportGraph, RemoveForgetsBothDirections) {
  import_graph graph;
  graph.add_dependency("app", "plug");
  graph.add_dependency("plug", "util");
  graph.remove("plug");
  EXPECT_TRUE(graph.dependencies("app").empty());
  EXPECT_TRUE(graph.dependents("util").empty());
}
