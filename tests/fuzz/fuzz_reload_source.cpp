// Fuzz reload of mutated sources: the input's bytes become the source file of
// a loaded plugin, then module_cache::reload runs it (deep when the input's
// length is odd), bounded by a time limit so an endless loop rolls back.
// Invalid UTF-8, NUL bytes, deep nesting, huge literals, code that raises or
// replaces itself: the reload must succeed or fail as a value (a failed
// reload_report), never crash, never throw for it, and leave the cache
// consistent: the plugin still in sys.modules, find() returning it, a failed
// reload restoring the namespace (same keys, same objects) and keeping the
// generation, a successful one adding one.
#include <cstdint>
#include <string>

#include "fuzz_support.h"

namespace py = pybind11;
using modhost::fuzz::fail;

namespace {

const char* const kPlugin = "fzplug";
const char* const kInitial = "VALUE = 1\ndef hook():\n    return VALUE\nclass Thing:\n    pass\n";

py::object g_plugin;  // the module object the plugin was first loaded as

std::filesystem::path plugin_path() { return modhost::fuzz::get().dir / "fzplug.py"; }

// Same keys in the same order, bound to the same objects.
bool same_namespace(py::dict now, py::dict before) {
  if (!py::list(now.attr("keys")()).equal(py::list(before.attr("keys")()))) return false;
  for (auto [key, value] : before)
    if (PyDict_GetItemWithError(now.ptr(), key.ptr()) != value.ptr()) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto& f = modhost::fuzz::get();
  modhost::fuzz::write_file(plugin_path(), kInitial);
  g_plugin = f.python->cache().load(kPlugin);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto& f = modhost::fuzz::get();
  auto& cache = f.python->cache();
  py::dict modules = py::reinterpret_borrow<py::dict>(PyImport_GetModuleDict());

  // A previous input may have replaced the plugin in sys.modules: put the
  // original back (the cache follows sys.modules) and give it a sane source.
  if (!modules.contains(kPlugin) || modules[kPlugin].ptr() != g_plugin.ptr()) {
    modules[kPlugin] = g_plugin;
  }
  modhost::fuzz::write_file(plugin_path(), std::string(reinterpret_cast<const char*>(data), size));

  py::dict before = py::reinterpret_steal<py::dict>(PyDict_Copy(g_plugin.attr("__dict__").ptr()));
  std::uint64_t generation = 0;
  if (!modhost::fuzz::expect_clean("info", [&] { generation = cache.info(kPlugin).generation; }))
    fail("info() of the loaded plugin failed");

  modhost::reload_options options;
  options.time_limit = std::chrono::milliseconds(1000);
  options.deep = size % 2 == 1;
  std::optional<modhost::reload_report> report;
  if (!modhost::fuzz::expect_clean("reload", [&] { report.emplace(cache.reload(kPlugin, options)); }))
    fail("reload() of a loaded plugin threw instead of reporting a failure");
  if (PyErr_Occurred()) fail("reload() left a Python error set");

  // The cache is consistent with sys.modules.
  if (!modules.contains(kPlugin)) fail("the plugin left sys.modules");
  py::object current = modules[kPlugin];
  py::object found = cache.find(kPlugin);
  if (!found || found.ptr() != current.ptr()) fail("find() does not return sys.modules' plugin");

  modhost::module_info info;
  if (!modhost::fuzz::expect_clean("info", [&] { info = cache.info(kPlugin); }))
    fail("info() failed after the reload");
  if (!*report) {
    if (current.ptr() != g_plugin.ptr()) fail("a failed reload left another module in sys.modules");
    if (!report->rolled_back) fail("a failed reload was not rolled back");
    if (!same_namespace(g_plugin.attr("__dict__"), before)) fail("a failed reload changed the namespace");
    if (info.generation != generation) fail("a failed reload changed the generation");
    if (info.state != modhost::module_state::failed) fail("a failed reload left the state " +
                                                          std::string(modhost::to_string(info.state)));
    if (!report->error) fail("a failed reload carries no error");
  } else if (current.ptr() == g_plugin.ptr()) {
    std::uint64_t expected = report->outcome == modhost::reload_outcome::unchanged ? generation : generation + 1;
    if (info.generation != expected) fail("a successful reload did not move the generation by one");
    if (info.state != modhost::module_state::loaded) fail("a successful reload left the state " +
                                                          std::string(modhost::to_string(info.state)));
  }
  modhost::fuzz::restore_interpreter_state();
  return 0;
}
