// Helpers for tests: a temporary directory of real .py files, and short ways
// to evaluate Python in the test process's single interpreter.
#pragma once

#include <filesystem>
#include <string>

#include <pybind11/embed.h>

namespace modhost::testing {

// A fresh directory under the system temp dir, removed with everything in it
// when the object goes away.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Writes `text` to path()/relative (creating parent directories) and returns the full path.
  std::filesystem::path write(const std::string& relative, const std::string& text) const;

 private:
  std::filesystem::path path_;
};

// eval(expr) in __main__'s namespace.
pybind11::object eval(const std::string& expr);
// exec(code) in __main__'s namespace.
void exec(const std::string& code);

}  // namespace modhost::testing
