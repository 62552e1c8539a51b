// detail::find_referrers as a unit: who keeps a module, or its code, alive,
// in the words modhost.referrers() and ModuleInUseError show a user.
#include <gtest/gtest.h>
#include <pybind11/embed.h>

#include <algorithm>
#include <string>
#include <vector>

#include "modules/internal/referrers.h"
#include "tests/test_support.h"

namespace py = pybind11;
using modhost::detail::find_referrers;
using modhost::detail::referrer_query;
using modhost::detail::thread_name;
using modhost::testing::eval;
using modhost::testing::exec;
using modhost::testing::temp_dir;

namespace {

std::string joined(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) text += "\n  " + line;
  return text;
}

bool has(const std::vector<std::string>& lines, const std::string& line) {
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

// Modules written into a temp dir on sys.path. Each test examines modules
// it imported itself; the query counts every reference to them that exists
// when it is made as accounted for (sys.modules, the cache, this test), so
// what the scan reports is only what the test adds afterwards.
class ReferrersTest : public ::testing::Test {
 protected:
  void SetUp() override { sys_path().attr("insert")(0, dir_.path().string()); }
  void TearDown() override { sys_path().attr("remove")(dir_.path().string()); }

  static py::object sys_path() { return py::module_::import("sys").attr("path"); }
  void write(const std::string& relative, const std::string& text) { dir_.write(relative, text); }
  py::object import(const std::string& name) { return py::module_::import(name.c_str()); }

  referrer_query query(const std::vector<std::string>& names) {
    referrer_query q;
    for (const auto& name : names) q.modules.emplace_back(name, import(name));
    for (const auto& [name, module] : q.modules) q.accounted_refs.push_back(Py_REFCNT(module.ptr()));
    return q;
  }

  temp_dir dir_;
};

}  // namespace

TEST_F(ReferrersTest, NoneWhenNothingElseHoldsTheModule) {
  write("ref_alone.py",
        "import os\n"
        "handlers = []\n"
        "def hook():\n    return 1\n"
        "handlers.append(hook)\n"          // its own list of its own function
        "class Widget:\n    pass\n"
        "default = Widget()\n");         // its own instance
  auto q = query({"ref_alone"});
  auto found = find_referrers(q);
  EXPECT_TRUE(found.empty()) << joined(found);
}

TEST_F(ReferrersTest, NamesAnotherModulesGlobals) {
  write("ref_plug.py", "def hook():\n    return 1\n");
  auto q = query({"ref_plug"});
  write("ref_app.py",
        "import ref_plug as plug\n"
        "from ref_plug import hook\n"
        "handlers = [plug.hook]\n");
  import("ref_app");
  auto found = find_referrers(q);
  EXPECT_TRUE(has(found, "module 'ref_app' global 'plug'")) << joined(found);
  EXPECT_TRUE(has(found, "module 'ref_app' global 'hook' (function ref_plug.hook)")) << joined(found);
  EXPECT_TRUE(has(found, "module 'ref_app' global 'handlers' (list holding function ref_plug.hook)"))
      << joined(found);
  EXPECT_EQ(found.size(), 3u) << joined(found);
}

TEST_F(ReferrersTest, NamesThreadsRunningItsCodeOrHoldingItInALocal) {
  write("ref_busy.py",
        "import threading\n"
        "entered, release = threading.Event(), threading.Event()\n"
        "def run():\n    entered.set()\n    release.wait()\n"
        "class Widget:\n    pass\n");
  auto q = query({"ref_busy"});
  write("ref_holder.py",
        "import threading\n"
        "entered, release = threading.Event(), threading.Event()\n"
        "def work():\n"
        "    import ref_busy\n"
        "    w = ref_busy.Widget()\n"
        "    del ref_busy\n"
        "    entered.set()\n"
        "    release.wait()\n");
  exec("import threading, ref_busy, ref_holder\n"
       "busy = threading.Thread(target=ref_busy.run, name='busy')\n"
       "holder = threading.Thread(target=ref_holder.work, name='holder')\n"
       "busy.start(); holder.start()\n"
       "ref_busy.entered.wait(); ref_holder.entered.wait()\n"
       "del ref_busy\n");
  auto found = find_referrers(q);
  exec("import ref_busy\nref_busy.release.set(); ref_holder.release.set()\n"
       "busy.join(); holder.join()\ndel ref_busy\n");
  EXPECT_TRUE(has(found, "thread busy frame ref_busy.run")) << joined(found);
  EXPECT_TRUE(has(found, "thread holder frame ref_holder.work local 'w' (instance of ref_busy.Widget)"))
      << joined(found);
}

TEST_F(ReferrersTest, NamesCppHandlesItIsTold) {
  write("ref_handled.py", "def on_event():\n    pass\n");
  auto q = query({"ref_handled"});
  q.cpp_handles.push_back("ref_handled.on_event");
  auto found = find_referrers(q);
  EXPECT_EQ(found, std::vector<std::string>{"C++ handle ref_handled.on_event"});
}

TEST_F(ReferrersTest, CountsReferencesItCannotName) {
  write("ref_counted.py", "X = 1\n");
  auto q = query({"ref_counted"});
  py::object one = import("ref_counted"), two = import("ref_counted");  // held from C++
  auto found = find_referrers(q);
  EXPECT_EQ(found, std::vector<std::string>{
                       "2 other references to module 'ref_counted' (from C++ or an object the scan "
                       "does not reach)"});
}

TEST_F(ReferrersTest, NamesHoldersOfItsCodeAnywhere) {
  write("ref_lib.py",
        "class Widget:\n    pass\n"
        "def callback():\n    pass\n");
  auto q = query({"ref_lib"});
  write("ref_user.py",
        "import ref_lib as _lib\n"
        "class Box:\n    pass\n"
        "box = Box()\n"
        "box.items = [_lib.Widget()]\n"        // an instance deep inside another object
        "class Special(_lib.Widget):\n    pass\n"
        "box.callbacks = {'on': [_lib.callback]}\n"
        "del _lib\n");
  import("ref_user");
  auto found = find_referrers(q);
  EXPECT_TRUE(has(found, "instance of ref_lib.Widget held by a list")) << joined(found);
  EXPECT_TRUE(has(found, "class ref_lib.Widget subclassed by class ref_user.Special")) << joined(found);
  EXPECT_TRUE(has(found, "function ref_lib.callback held by a list")) << joined(found);
}

TEST_F(ReferrersTest, APackageAndItsSubmoduleExaminedTogetherHoldEachOther) {
  write("ref_pkg/__init__.py", "from . import sub\nfrom .sub import helper\n");
  write("ref_pkg/sub.py", "import ref_pkg\ndef helper():\n    pass\n");
  // Accounted as the cache does, so that the references between the two
  // (the package's attribute `sub`, the submodule's global `ref_pkg`) must be
  // recognised by the scan: sys.modules, the cache's entry and the query.
  referrer_query q;
  for (const char* name : {"ref_pkg", "ref_pkg.sub"}) {
    q.modules.emplace_back(name, import(name));
    q.accounted_refs.push_back(3);
  }
  auto found = find_referrers(q);
  EXPECT_TRUE(found.empty()) << joined(found);
  write("ref_pkg_user.py", "from ref_pkg.sub import helper\n");
  import("ref_pkg_user");
  found = find_referrers(q);
  EXPECT_EQ(found, std::vector<std::string>{"module 'ref_pkg_user' global 'helper' (function ref_pkg.sub.helper)"});
}

TEST(Referrers, ThreadNamesReadAsInPython) {
  exec("import threading\n"
       "main_ident = threading.main_thread().ident\n"
       "ready, stop = threading.Event(), threading.Event()\n"
       "def idle():\n    ready.set()\n    stop.wait()\n"
       "named = threading.Thread(target=idle, name='loader')\n"
       "named.start(); ready.wait()\n");
  EXPECT_EQ(thread_name(eval("main_ident").cast<long long>()), "main");
  EXPECT_EQ(thread_name(eval("named.ident").cast<long long>()), "loader");
  EXPECT_EQ(thread_name(12345), "tid 12345");
  exec("stop.set(); named.join()\n");
}
