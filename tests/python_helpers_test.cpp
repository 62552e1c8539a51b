// The typed boundary to the embedded Python helpers: every handle resolves at
// start-up, and each helper file runs in a namespace of its own.
#include <gtest/gtest.h>
#include <pybind11/embed.h>

#include "modules/internal/python_helpers.h"

namespace py = pybind11;

TEST(PythonHelpers, EveryHandleResolvesToACallable) {
  auto h = modhost::detail::python_helpers::load();
  for (const py::object* handle :
       {&h.find_spec, &h.source_path, &h.read_source, &h.execute, &h.hand_over, &h.call_unload_hook,
        &h.drop_bytecode_cache, &h.undo, &h.deep_update, &h.rebind_from_imports}) {
    ASSERT_TRUE(*handle);
    EXPECT_TRUE(PyCallable_Check(handle->ptr()));
  }
}

TEST(PythonHelpers, EachFileRunsInANamespaceOfItsOwn) {
  auto h = modhost::detail::python_helpers::load();
  py::dict support = h.execute.attr("__globals__");
  py::dict deep = h.rebind_from_imports.attr("__globals__");
  EXPECT_NE(support.ptr(), deep.ptr());
  EXPECT_EQ(py::str(support["__name__"]).cast<std::string>(), "modhost._reload_support");
  EXPECT_EQ(py::str(deep["__name__"]).cast<std::string>(), "modhost._deep_update");
  EXPECT_FALSE(deep.contains("execute")) << "deep_update.py sees only what it was handed";
  EXPECT_TRUE(deep.contains("IMPORT_DUNDERS"));
  py::dict main = py::module_::import("__main__").attr("__dict__");
  EXPECT_FALSE(main.contains("find_spec")) << "no helper leaks into __main__";
}
