// The `modhost` embedded module (bindings/modhost_module.cpp), as seen by
// whatever composes the pieces (modhost::interpreter).
//
// The bindings sit above the cache and the autoreloader and below the
// composition: they never reach up for the interpreter; it attaches the
// pieces to them. The module registers itself in CPython's table of built-in
// modules from a static initializer (PYBIND11_EMBEDDED_MODULE) before Python
// starts; a static library's object file is linked only if something
// references it, and attach_bindings() being called is that reference.
#pragma once

#include <string>
#include <vector>

#include "modules/cpython/visibility.h"

// Declared with the public headers' visibility: a class's first declaration
// sets it, and a shared libmodhost exports these two.
namespace modhost MODHOST_API {
class autoreloader;
class module_cache;
}  // namespace modhost

namespace modhost MODHOST_HIDDEN {

// What `modhost.interpreter_info()` reports.
struct interpreter_facts {
  std::string version;  // "3.11.2"
  std::string home;     // the prefix whose stdlib is loaded
  std::string library;  // the libpython file in use
  std::vector<std::string> module_paths;
};

// From now on `import modhost` works on these. Until attached (and after
// detach_bindings()), its functions raise RuntimeError.
void attach_bindings(module_cache& cache, autoreloader& autoreload, interpreter_facts facts);
void detach_bindings() noexcept;

}  // namespace modhost
