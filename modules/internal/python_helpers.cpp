#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/python_helpers.h"

#include <initializer_list>
#include <string>

#include "modules/cpython/translate_errors.h"
#include "modules/internal/bytecode_imports.h"
#include "modules/internal/reference_counts.h"

namespace py = pybind11;

namespace modhost::detail {

// modules/internal/*.py, embedded at build time (CMakeLists.txt).
extern const char* const reload_support_source;
extern const char* const deep_update_source;

namespace {

// Executes modules/internal/<stem>.py in a fresh namespace of its own.
// `given` names what the file takes from another helper instead of importing it.
py::dict run_helper(const char* source, const std::string& stem, py::dict given = py::dict()) {
  py::module_ builtins = py::module_::import("builtins");
  py::dict ns = given;
  ns["__name__"] = "modhost._" + stem;
  ns["__builtins__"] = builtins;
  builtins.attr("exec")(builtins.attr("compile")(source, "modhost/modules/internal/" + stem + ".py", "exec"), ns);
  return ns;
}

py::object resolve(const py::dict& ns, const char* file, const char* name,
                   std::initializer_list<const char*> methods = {}) {
  if (!ns.contains(name))
    throw py::import_error(std::string("modhost: helper ") + file + " defines no '" + name + "'");
  py::object helper = ns[name];
  for (const char* method : methods)
    if (!py::hasattr(helper, method))
      throw py::import_error(std::string("modhost: helper ") + file + "'s " + name + " has no '" + method + "'");
  return helper;
}

// Runs both files and resolves every handle.
python_helper_handles run_helpers() {
  return translate_errors([] {
    python_helper_handles h;
    const char* file = "reload_support.py";
    py::dict support_given;
    // (top_level, in_functions) frozensets of the names a module's code binds,
    // read in C++ (a walk of the bytecode in Python took milliseconds).
    support_given["defined_names"] = py::cpp_function([ops = bytecode_opcodes::load()](py::handle code) {
      bound_names bound = names_bound_by(ops, code.ptr());
      auto as_set = [](const std::vector<std::string>& names) {
        py::set out;
        for (const auto& name : names) out.add(py::str(name));
        return py::frozenset(out);
      };
      return py::make_tuple(as_set(bound.top_level), as_set(bound.in_functions));
    });
    py::dict support = run_helper(reload_support_source, "reload_support", support_given);
    h.find_spec = resolve(support, file, "find_spec");
    h.source_path = resolve(support, file, "source_path");
    h.read_source = resolve(support, file, "read_source");
    h.execute = resolve(support, file, "execute");
    h.hand_over = resolve(support, file, "hand_over");
    h.call_unload_hook = resolve(support, file, "call_unload_hook");
    h.drop_bytecode_cache = resolve(support, file, "drop_bytecode_cache");
    h.atexit_callbacks = resolve(support, file, "atexit_callbacks");
    h.audit_hooks = resolve(support, file, "audit_hooks");

    file = "deep_update.py";
    py::dict given;
    given["IMPORT_DUNDERS"] = resolve(support, "reload_support.py", "IMPORT_DUNDERS");
    // The names a class body binds (what a deep reload may delete from the kept class).
    given["defined_names"] = support_given["defined_names"];
    // {name: constant} of a class body's `name = constant` statements, read in C++.
    given["class_constants"] = py::cpp_function([ops = bytecode_opcodes::load()](py::handle body) {
      py::dict found;
      for (const auto& [name, constant] : constants_bound_by(ops, body.ptr())) found[py::str(name)] = constant;
      return found;
    });
    // Reference accounting over tp_traverse, without lists of ids in Python.
    given["uncounted_references"] = py::cpp_function(&uncounted_references);
    given["holders_among"] = py::cpp_function(&holders_among);
    py::dict deep = run_helper(deep_update_source, "deep_update", given);
    h.undo = resolve(deep, file, "Undo", {"rollback"});
    h.deep_update = resolve(deep, file, "DeepUpdate", {"run_code", "finish", "commit"});
    h.rebind_from_imports = resolve(deep, file, "rebind_from_imports");
    h.changed_names = resolve(deep, file, "changed_names");
    h.top_level_reads = py::cpp_function([ops = bytecode_opcodes::load()](py::handle code) {
      py::set out;
      for (const auto& name : names_read_at_top_level(ops, code.ptr())) out.add(py::str(name));
      return py::frozenset(out);
    });
    return h;
  });
}

}  // namespace

void python_helpers::load() const {
  if (handles_) return;
  auto loaded = std::make_unique<python_helper_handles>(run_helpers());
  // Running the helpers runs Python code, which may let another thread in
  // to load them too: the first one kept stays, for whoever already holds it.
  if (!handles_) handles_ = std::move(loaded);
}

const python_helper_handles* python_helpers::operator->() const {
  load();
  return handles_.get();
}

}  // namespace modhost::detail
