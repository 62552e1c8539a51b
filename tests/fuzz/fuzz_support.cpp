#include "fuzz_support.h"

#include <unistd.h>

#include <fstream>

namespace py = pybind11;

namespace modhost::fuzz {

fixture& get() {
  static fixture* instance = [] {
    auto* f = new fixture;
    char pattern[] = "/tmp/modhost-fuzz-XXXXXX";
    if (!mkdtemp(pattern)) fail("mkdtemp failed");
    f->dir = pattern;
    modhost::interpreter_config config;
    config.module_paths = {f->dir};
    config.install_signal_handlers = false;  // libFuzzer owns SIGINT
    f->python = new modhost::interpreter(config);  // never finalized: see fuzz_support.h
    py::module_ sys = py::module_::import("sys");
    f->state = py::dict();
    f->state["path"] = py::list(sys.attr("path"));
    f->state["meta_path"] = py::list(sys.attr("meta_path"));
    f->state["path_hooks"] = py::list(sys.attr("path_hooks"));
    f->state["import"] = py::module_::import("builtins").attr("__import__");
    f->state["recursion_limit"] = sys.attr("getrecursionlimit")();
    // Fuzzed code may print a lot; keep the fuzzer's output readable.
    sys.attr("stdout") = py::module_::import("io").attr("StringIO")();
    f->state["stdout"] = sys.attr("stdout");
    return f;
  }();
  return *instance;
}

void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::filesystem::create_directories(path.parent_path());
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) fail("cannot write " + path.string());
  }
  py::module_::import("importlib").attr("invalidate_caches")();
}

void restore_interpreter_state() {
  fixture& f = get();
  py::module_ sys = py::module_::import("sys");
  auto put_back = [&](const char* attr) {
    py::list saved = f.state[attr];
    py::object current = sys.attr(attr);
    if (!py::isinstance<py::list>(current)) {
      sys.attr(attr) = py::list(saved);
      return;
    }
    py::list list = current;
    if (!list.equal(saved)) {
      PySequence_DelSlice(list.ptr(), 0, PY_SSIZE_T_MAX);
      for (py::handle item : saved) list.append(item);
    }
  };
  put_back("path");
  put_back("meta_path");
  put_back("path_hooks");
  py::module_::import("builtins").attr("__import__") = f.state["import"];
  sys.attr("setrecursionlimit")(f.state["recursion_limit"]);
  sys.attr("stdout") = f.state["stdout"];
  f.state["stdout"].attr("seek")(0);
  f.state["stdout"].attr("truncate")();
}

[[noreturn]] void fail(const std::string& why) {
  std::fprintf(stderr, "\n[modhost fuzz] INVARIANT BROKEN: %s\n", why.c_str());
  if (PyErr_Occurred()) PyErr_Print();
  std::fflush(stderr);
  std::abort();
}

}  // namespace modhost::fuzz
