// modhost::python_error — a Python exception seen from C++.
//
// Every CPython failure inside modhost becomes a python_error on the next
// line. It carries what a user needs to act on (type name, message,
// formatted traceback) and keeps the exception object itself, so bindings can
// raise the very same exception back into Python with its own type.
#pragma once

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "modules/cpython/visibility.h"

namespace modhost MODHOST_API {

// What modhost throws, one hierarchy: python_error (a Python exception),
// module_in_use_error (modules/module_types.h), and plain modhost::error
// (Python cannot start, a handle outlived its interpreter). A host that
// calls plugins catches modhost::error; std::logic_error stays for misuse
// (a second interpreter in one process).
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class python_error : public error {
 public:
  // Takes (steals) the exception currently set in the interpreter and clears
  // it. The GIL must be held. If no exception is set, describes a SystemError.
  static python_error fetch();

  // The exception's type name, qualified for non-builtins ("json.decoder.JSONDecodeError").
  const std::string& type_name() const noexcept { return type_name_; }
  // str(exception).
  const std::string& message() const noexcept { return message_; }
  // The traceback as Python prints it, ending with "Type: message".
  const std::string& traceback() const noexcept { return traceback_; }
  // Where it was raised: a SyntaxError's own file and line (its traceback
  // ends in the import machinery), else the innermost traceback entry's.
  // Empty and 0 when unknown.
  const std::string& file() const noexcept { return file_; }
  int line() const noexcept { return line_; }
  // For SystemExit: the process exit code Python would use (None -> 0,
  // int -> itself, anything else -> 1 after printing it). Empty otherwise.
  std::optional<int> exit_code() const noexcept { return exit_code_; }
  // True if the exception is an instance of the named builtin exception type
  // (or a subclass), e.g. matches("KeyError").
  bool matches(const char* builtin_type_name) const;

  // Sets this exception as the interpreter's current error (for returning
  // into Python). The GIL must be held.
  void restore() const;

 private:
  struct holder;
  python_error(std::shared_ptr<holder> exc, std::string type_name, std::string message,
               std::string traceback, std::optional<int> exit_code);
  void locate();

  std::shared_ptr<holder> exception_;
  std::string type_name_;
  std::string message_;
  std::string traceback_;
  std::string file_;
  int line_ = 0;
  std::optional<int> exit_code_;
};

}  // namespace modhost
