// Shared set-up of modhost's libFuzzer harnesses: one interpreter per fuzz
// process, started on first use and never finalized (CPython cannot restart,
// and finalizing at exit() only adds noise), with a private temporary
// directory of plugin modules first on sys.path.
#pragma once

#include <pybind11/embed.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "interpreter/interpreter.h"
#include "modules/module_cache.h"

namespace modhost::fuzz {

struct fixture {
  modhost::interpreter* python = nullptr;
  std::filesystem::path dir;  // on sys.path; the harness's modules live here
  pybind11::object state;     // a dict (made once Python runs): sys.path, sys.meta_path, ... as they were: restored after each input
};

// Starts the interpreter on the first call; later calls return the same fixture.
fixture& get();

// Writes `bytes` to dir/relative (creating directories) and invalidates the import caches.
void write_file(const std::filesystem::path& path, const std::string& bytes);

// Puts sys.path, sys.meta_path, sys.path_hooks, the builtins' __import__ and
// the recursion limit back as they were at start-up: a fuzzed module may change them.
void restore_interpreter_state();

// A harness's invariant broke: print why (and the Python error, if one is
// set) and abort, so libFuzzer records the input as a crash.
[[noreturn]] void fail(const std::string& why);

// Runs `call`; a python_error or module_in_use_error is the expected way to
// refuse bad input. Anything else escaping, or a Python error left set
// afterwards, is a bug: fail().
template <class Fn>
bool expect_clean(const char* what, Fn&& call) {
  bool ok = false;
  try {
    call();
    ok = true;
  } catch (const modhost::python_error&) {
  } catch (const modhost::module_in_use_error&) {
  } catch (const pybind11::error_already_set& e) {
    fail(std::string(what) + ": pybind11::error_already_set escaped instead of python_error: " + e.what());
  } catch (const std::exception& e) {
    fail(std::string(what) + ": unexpected C++ exception: " + e.what());
  }
  if (PyErr_Occurred()) fail(std::string(what) + ": returned with a Python error still set");
  return ok;
}

}  // namespace modhost::fuzz
