// Fuzz modhost's module-name handling: arbitrary bytes as a module name to
// module_cache::find / info / refcount / referrers / is_changed /
// dependencies / reload / unload, and, under a package of the harness's own
// (so no stdlib module with side effects is ever imported), to load().
//
// Invariants: each call returns or throws python_error / module_in_use_error
// (never another exception, a crash or a Python error left set); find() of a
// name gives exactly sys.modules' module for it or nothing; a module the
// cache tracks is in sys.modules under the very same name; the harness's
// package stays loadable and consistent.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

#include "fuzz_support.h"

namespace py = pybind11;
using modhost::fuzz::expect_clean;
using modhost::fuzz::fail;

namespace {

const char* const kPackage = "fzpkg";

void make_package(const std::filesystem::path& dir) {
  modhost::fuzz::write_file(dir / "fzpkg" / "__init__.py", "VALUE = 'package'\n");
  modhost::fuzz::write_file(dir / "fzpkg" / "a.py", "from . import b\nA = b.B + 1\n");
  modhost::fuzz::write_file(dir / "fzpkg" / "b.py", "B = 1\ndef f():\n    return B\n");
  modhost::fuzz::write_file(dir / "fzpkg" / "sub" / "__init__.py", "");
  modhost::fuzz::write_file(dir / "fzpkg" / "sub" / "c.py", "import fzpkg.a\nC = 3\n");
}

// `name` with control and non-ASCII bytes escaped, for messages (a NUL would end them).
std::string printable(const std::string& name) {
  std::string out;
  for (unsigned char c : name) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

// MODHOST_FUZZ_SKIP_KNOWN=nul skips names with a NUL byte: a triage aid so a
// run can look past a reported bug (module names with NUL bytes, see
// tests/fuzz/regressions/module_name/nul_byte_in_name) for others.
bool skip_known(const std::string& name) {
  static const char* skip = std::getenv("MODHOST_FUZZ_SKIP_KNOWN");
  return skip && std::string(skip) == "nul" && name.find('\0') != std::string::npos;
}

const std::set<std::string>& protected_names() {
  static const std::set<std::string> names{"sys", "builtins", "__main__", "modhost"};
  return names;
}

// The module sys.modules holds under exactly `name` (NUL bytes and all), or null.
PyObject* in_sys_modules(const std::string& name) {
  PyObject* key = PyUnicode_DecodeUTF8(name.data(), static_cast<Py_ssize_t>(name.size()), "strict");
  if (!key) {
    PyErr_Clear();
    return nullptr;
  }
  PyObject* value = PyDict_GetItemWithError(PyImport_GetModuleDict(), key);  // borrowed
  Py_DECREF(key);
  PyErr_Clear();
  return value;
}

void check_consistency(modhost::module_cache& cache, const std::string& name) {
  py::object found;
  expect_clean("find", [&] { found = cache.find(name); });
  PyObject* truth = in_sys_modules(name);
  if (found && found.ptr() != truth)
    fail("find('" + printable(name) + "') returned a module that is not sys.modules['" + printable(name) + "']");
  for (const auto& tracked : cache.modules()) {
    PyObject* module = in_sys_modules(tracked);
    if (!module) fail("the cache tracks '" + printable(tracked) + "', which is not in sys.modules under that name");
  }
}

void restore_package(modhost::module_cache& cache) {
  for (const char* name : {"fzpkg", "fzpkg.a", "fzpkg.b", "fzpkg.sub", "fzpkg.sub.c"}) {
    if (!expect_clean("load", [&] { (void)cache.load(name); }))
      fail(std::string("the harness's module ") + name + " no longer loads");
    py::object found = cache.find(name);
    if (!found || found.ptr() != in_sys_modules(name))
      fail(std::string("after load, find('") + name + "') is not sys.modules' module");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto& f = modhost::fuzz::get();
  make_package(f.dir);
  restore_package(f.python->cache());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto& f = modhost::fuzz::get();
  auto& cache = f.python->cache();
  const std::string raw(reinterpret_cast<const char*>(data), size);
  const bool force = size % 2 == 1;
  if (skip_known(raw)) return -1;  // -1: libFuzzer keeps it out of the corpus

  for (const std::string& name : {raw, std::string(kPackage) + "." + raw}) {
    // Read-only calls: any name at all.
    expect_clean("find", [&] { (void)cache.find(name); });
    expect_clean("info", [&] { (void)cache.info(name); });
    expect_clean("refcount", [&] { (void)cache.refcount(name); });
    expect_clean("referrers", [&] { (void)cache.referrers(name); });
    expect_clean("is_changed", [&] { (void)cache.is_changed(name); });
    expect_clean("dependencies", [&] { (void)cache.dependencies(name); });
    expect_clean("dependents", [&] { (void)cache.dependents(name); });
    expect_clean("from_imports", [&] { (void)cache.from_imports(name); });  // an empty name is a ValueError

    // Calls that change things: only names that are not a live stdlib module
    // (reloading or unloading `os` would break the harness, not find a bug),
    // the harness's own modules, and the names modhost must refuse.
    bool own = name.rfind(kPackage, 0) == 0;
    bool refused = protected_names().count(name) > 0;
    if (own || refused || !in_sys_modules(name)) {
      bool reloaded = expect_clean("reload", [&] {
        modhost::reload_options options;
        options.time_limit = std::chrono::milliseconds(2000);
        options.deep = force;
        (void)cache.reload(name, options);
      });
      bool unloaded = expect_clean("unload", [&] { (void)cache.unload(name, force); });
      if (refused && (reloaded || unloaded)) fail("modhost accepted to reload or unload '" + printable(name) + "'");
    }
    if (own) expect_clean("load", [&] { (void)cache.load(name, std::chrono::milliseconds(2000)); });
    check_consistency(cache, name);
  }
  restore_package(cache);
  modhost::fuzz::restore_interpreter_state();
  return 0;
}
