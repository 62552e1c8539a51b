// The cache's value types: names a user reads in reports and errors.
#include <gtest/gtest.h>

#include "modules/module_types.h"

using namespace modhost;

TEST(ModuleTypes, StatesKindsAndOutcomesHaveTheirNames) {
  EXPECT_STREQ(to_string(module_state::failed), "failed");
  EXPECT_STREQ(to_string(module_kind::namespace_package), "namespace package");
  EXPECT_STREQ(to_string(reload_outcome::not_reloadable), "not reloadable");
  EXPECT_FALSE(is_reloadable(module_kind::extension));
  EXPECT_TRUE(is_reloadable(module_kind::package));
  EXPECT_TRUE(has_file(module_kind::extension));
  EXPECT_FALSE(has_file(module_kind::namespace_package));
}

TEST(ModuleTypes, ModuleInUseErrorNamesEveryHolderAndTheWayOut) {
  module_in_use_error error("plug", {"module 'app' global 'plug'", "thread main frame plug.run"});
  std::string message = error.what();
  EXPECT_NE(message.find("'plug'"), std::string::npos);
  EXPECT_NE(message.find("module 'app' global 'plug'; thread main frame plug.run"), std::string::npos);
  EXPECT_NE(message.find("force=True"), std::string::npos);
  EXPECT_EQ(error.referrers().size(), 2u);
  EXPECT_EQ(error.name(), "plug");
}

TEST(ModuleTypes, AReportIsFalseOnlyWhenTheReloadFailed) {
  reload_report report;
  report.outcome = reload_outcome::unchanged;
  EXPECT_TRUE(report);
  report.outcome = reload_outcome::failed;
  EXPECT_FALSE(report);
}
