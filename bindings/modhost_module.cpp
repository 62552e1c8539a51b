// The `modhost` embedded module: the interpreter and its module cache, seen
// from scripts. Registered before Python starts (PYBIND11_EMBEDDED_MODULE);
// the interpreter calls detail::link_bindings() so the linker keeps this file.
#include <pybind11/embed.h>
#include <pybind11/stl.h>

#include "interpreter/interpreter.h"

namespace py = pybind11;

namespace modhost::detail {
void link_bindings() {}
}  // namespace modhost::detail

PYBIND11_EMBEDDED_MODULE(modhost, m) {
  m.doc() = "modhost: reload, unload and inspect Python modules safely inside a C++ host.";
  m.attr("__version__") = MODHOST_VERSION;

  m.def(
      "interpreter_info",
      [] {
        auto* interp = modhost::interpreter::current();
        if (!interp) throw std::runtime_error("modhost: no interpreter is running");
        const auto& info = interp->info();
        py::dict result;
        result["version"] = info.version;
        result["home"] = info.home.string();
        result["library"] = info.library.string();
        py::list paths;
        for (const auto& p : interp->config().module_paths) paths.append(p.string());
        result["module_paths"] = paths;
        return result;
      },
      "The running interpreter: Python version, home (the prefix whose stdlib is\n"
      "loaded), library (the libpython file in use) and the host's module paths.");
}
