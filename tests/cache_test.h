// A GoogleTest fixture for tests of the module cache: real .py files in a
// temp dir on sys.path; the modules a test imported from there are removed
// from sys.modules afterwards, so each test starts clean in the process's
// one interpreter.
#pragma once

#include <gtest/gtest.h>
#include <pybind11/embed.h>

#include <algorithm>
#include <string>
#include <vector>

#include "interpreter/interpreter.h"
#include "modules/module_cache.h"
#include "tests/test_support.h"

namespace modhost::testing {

class cache_test : public ::testing::Test {
 protected:
  void SetUp() override { sys_path().attr("insert")(0, dir_.path().string()); }
  void TearDown() override {
    sys_path().attr("remove")(dir_.path().string());
    exec("import sys\n"
         "for _n in [n for n, m in list(sys.modules.items())\n"
         "           if (getattr(m, '__file__', None) or '').startswith(" +
         repr(dir_.path().string()) + ")]:\n"
         "    del sys.modules[_n]\n");
    exec("import gc; gc.collect()");
  }

  static std::string repr(const std::string& s) { return pybind11::repr(pybind11::str(s)).cast<std::string>(); }
  static pybind11::object sys_path() { return pybind11::module_::import("sys").attr("path"); }
  module_cache& cache() { return interpreter::current()->cache(); }
  void write(const std::string& relative, const std::string& text) { dir_.write(relative, text); }
  pybind11::object import(const std::string& name) { return pybind11::module_::import(name.c_str()); }

  temp_dir dir_;
};

// Identity (`a is b`), for attribute and item accessors too.
inline bool same(const pybind11::object& a, const pybind11::object& b) { return a.ptr() == b.ptr(); }

inline bool contains(const std::vector<std::string>& items, const std::string& needle) {
  return std::find(items.begin(), items.end(), needle) != items.end();
}

}  // namespace modhost::testing
