#include "tests/test_support.h"

#include <stdlib.h>

#include <fstream>
#include <stdexcept>

namespace py = pybind11;

namespace modhost::testing {

temp_dir::temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "modhost-test-XXXXXX").string();
  if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::filesystem::path temp_dir::write(const std::string& relative, const std::string& text) const {
  auto file = path_ / relative;
  std::filesystem::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + file.string());
  return file;
}

py::object eval(const std::string& expr) {
  return py::eval(expr, py::module_::import("__main__").attr("__dict__"));
}

void exec(const std::string& code) {
  py::exec(code, py::module_::import("__main__").attr("__dict__"));
}

}  // namespace modhost::testing
