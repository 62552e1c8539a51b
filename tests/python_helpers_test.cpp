// The typed boundary to the embedded Python helpers: every handle resolves on
// first use, and each helper file runs in a namespace of its own.
#include <gtest/gtest.h>
#include <pybind11/embed.h>

#include "modules/internal/python_helpers.h"

namespace py = pybind11;

TEST(PythonHelpers, EveryHandleResolvesToACallable) {
  modhost::detail::python_helpers helpers;
  for (const py::object* handle :
       {&helpers->find_spec, &helpers->source_path, &helpers->read_source, &helpers->execute, &helpers->hand_over,
        &helpers->call_unload_hook, &helpers->drop_bytecode_cache, &helpers->undo, &helpers->deep_update,
        &helpers->rebind_from_imports}) {
    ASSERT_TRUE(*handle);
    EXPECT_TRUE(PyCallable_Check(handle->ptr()));
  }
}

TEST(PythonHelpers, EachFileRunsInANamespaceOfItsOwn) {
  modhost::detail::python_helpers helpers;
  py::dict support = helpers->execute.attr("__globals__");
  py::dict deep = helpers->rebind_from_imports.attr("__globals__");
  EXPECT_NE(support.ptr(), deep.ptr());
  EXPECT_EQ(py::str(support["__name__"]).cast<std::string>(), "modhost._reload_support");
  EXPECT_EQ(py::str(deep["__name__"]).cast<std::string>(), "modhost._deep_update");
  EXPECT_FALSE(deep.contains("execute")) << "deep_update.py sees only what it was handed";
  EXPECT_TRUE(deep.contains("IMPORT_DUNDERS"));
  py::dict main = py::module_::import("__main__").attr("__dict__");
  EXPECT_FALSE(main.contains("find_spec")) << "no helper leaks into __main__";
}
