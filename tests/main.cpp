// One interpreter for the whole test process: CPython cannot be restarted.
#include <gtest/gtest.h>

#include "interpreter/interpreter.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  modhost::interpreter_config config;
  config.argv = {"modhost_tests", "--flag", "value"};
  modhost::interpreter python(config);
  return RUN_ALL_TESTS();
}
