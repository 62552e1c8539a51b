#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/import_hook.h"

#include "interpreter/error_scope.h"
#include "interpreter/translate_errors.h"
#include "modules/internal/python_helpers.h"
#include "modules/internal/registry.h"

namespace py = pybind11;

namespace modhost::detail {

namespace {

import_hook* g_hook = nullptr;  // the hooks' way back; one cache per process
int g_imports_running = 0;      // imports in progress, on any thread (under the GIL)
// record_import is running on this thread: it must not recurse, and another
// thread that takes the GIL meanwhile must still record its own imports.
thread_local bool t_recording = false;

// Positional or keyword argument `index` of __import__(name, globals, locals, fromlist, level).
PyObject* import_argument(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, int index) {
  static const char* const names[] = {"name", "globals", "locals", "fromlist", "level"};
  if (index < nargs) return args[index];
  if (!kwnames) return nullptr;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); ++i)
    if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), names[index]) == 0)
      return args[nargs + i];
  return nullptr;
}

template <class Fn>
PyCFunction as_cfunction(Fn fn) {
  return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fn));
}

}  // namespace

// builtins.__import__ while the cache lives: the original, then a note of
// what was imported and by whom.
PyObject* import_hook::import_(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  import_hook* hook = g_hook;
  if (!hook) return nullptr;
  ++g_imports_running;
  PyObject* result = PyObject_Vectorcall(hook->original_import_.ptr(), args, nargsf, kwnames);
  --g_imports_running;
  if (!result) hook->failed_import();
  if (!result || t_recording) return result;
  Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  t_recording = true;
  try {
    hook->record_import(import_argument(args, nargs, kwnames, 0), import_argument(args, nargs, kwnames, 1),
                        import_argument(args, nargs, kwnames, 3), import_argument(args, nargs, kwnames, 4));
  } catch (...) {
    PyErr_Clear();
  }
  t_recording = false;
  return result;
}

// importlib.import_module(name, package=None): the original, then recorded
// like `import name` from the caller's module.
PyObject* import_hook::import_module(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  import_hook* hook = g_hook;
  if (!hook) return nullptr;
  ++g_imports_running;
  PyObject* result = PyObject_Vectorcall(hook->original_import_module_.ptr(), args, nargsf, kwnames);
  --g_imports_running;
  if (!result) hook->failed_import();
  if (!result || t_recording || !PyModule_Check(result)) return result;
  t_recording = true;
  try {
    auto name = py::reinterpret_steal<py::object>(PyModule_GetNameObject(result));  // new reference
    PyObject* globals = PyEval_GetGlobals();  // borrowed: the caller's module
    if (name) hook->record_import(name.ptr(), globals, nullptr, nullptr);
  } catch (...) {
  }
  PyErr_Clear();
  t_recording = false;
  return result;
}

PyObject* import_hook::note_source(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  import_hook* hook = g_hook;
  if (!hook || nargs != 3 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1]) || !PyBytes_Check(args[2]))
    Py_RETURN_NONE;
  const char* name = PyUnicode_AsUTF8(args[0]);
  const char* path = PyUnicode_AsUTF8(args[1]);
  if (!name || !path) return nullptr;
  fingerprint print = stat_fingerprint(path).value_or(fingerprint{});
  print.content_hash = content_hash(
      std::string_view(PyBytes_AS_STRING(args[2]), static_cast<std::size_t>(PyBytes_GET_SIZE(args[2]))));
  hook->registry_.note_source(name, print);
  Py_RETURN_NONE;
}

namespace {
PyMethodDef g_note_source_def = {"note_source", nullptr, METH_FASTCALL,
                                 "Records the fingerprint of source bytes a loader compiles."};
PyMethodDef g_import_def = {"__import__", nullptr, METH_FASTCALL | METH_KEYWORDS,
                            "__import__ as recorded by modhost's module cache."};
PyMethodDef g_import_module_def = {"import_module", nullptr, METH_FASTCALL | METH_KEYWORDS,
                                   "importlib.import_module as recorded by modhost's module cache."};

py::object new_function(PyMethodDef& def) {
  return py::reinterpret_steal<py::object>(PyCFunction_NewEx(&def, nullptr, nullptr));  // new reference
}
}  // namespace

import_hook::import_hook(const python_helpers& helpers, registry& registry, const cache_options& options)
    : helpers_(helpers), registry_(registry) {
  g_note_source_def.ml_meth = as_cfunction(&import_hook::note_source);
  g_import_def.ml_meth = as_cfunction(&import_hook::import_);
  g_import_module_def.ml_meth = as_cfunction(&import_hook::import_module);
  translate_errors([&] {
    py::module_ builtins = py::module_::import("builtins");
    py::module_ importlib = py::module_::import("importlib");
    py::list roots;
    for (const auto& root : options.module_roots) roots.append(root.string());
    check_ = helpers_.make_policy(roots, options.strict_permissions);
    guard_ = helpers_.load_guard(check_);
    py::module_::import("sys").attr("meta_path").attr("insert")(0, guard_);
    helpers_.install_source_loader(new_function(g_note_source_def));
    original_import_ = builtins.attr("__import__");
    original_import_module_ = importlib.attr("import_module");
    builtins.attr("__import__") = new_function(g_import_def);
    importlib.attr("import_module") = new_function(g_import_module_def);
  });
  g_hook = this;
}

import_hook::~import_hook() {
  g_hook = nullptr;
  if (!Py_IsInitialized()) return;
  try {
    py::module_::import("builtins").attr("__import__") = original_import_;
    py::module_::import("importlib").attr("import_module") = original_import_module_;
    py::list meta_path = py::module_::import("sys").attr("meta_path");
    if (meta_path.contains(guard_)) meta_path.attr("remove")(guard_);
  } catch (py::error_already_set&) {
    PyErr_Clear();
  }
}

void import_hook::check_load(const std::string& name, py::handle origin, const char* event) const {
  check_(name, origin, event);
}

bool import_hook::idle() noexcept { return g_imports_running == 0; }

void import_hook::failed_import() noexcept {
  if (!after_failed_import_ || t_recording) return;
  error_scope keep;  // the import's own exception is what the importer sees
  t_recording = true;
  try {
    after_failed_import_();
  } catch (...) {
    PyErr_Clear();
  }
  t_recording = false;
}

// A module's imports count as its dependencies while its top-level code
// runs: during its first import (spec._initializing), during a reload by the
// cache, and always for __main__ (the running program).
bool import_hook::runs_top_level(const std::string& importer, PyObject* globals) {
  if (importer == "__main__" || registry_.reloading().count(importer)) return true;
  PyObject* module = PyDict_GetItemString(PyImport_GetModuleDict(), importer.c_str());  // borrowed
  if (!module || PyModule_GetDict(module) != globals) return false;
  return helpers_.is_initializing(py::handle(module)).cast<bool>();
}

void import_hook::record_import(PyObject* name_obj, PyObject* globals, PyObject* fromlist, PyObject* level_obj) {
  if (!name_obj || !PyUnicode_Check(name_obj)) return;
  const char* name_utf8 = PyUnicode_AsUTF8(name_obj);
  if (!name_utf8) return;
  std::string name = name_utf8;
  long level = level_obj && PyLong_Check(level_obj) ? PyLong_AsLong(level_obj) : 0;
  if (globals && !PyDict_Check(globals)) globals = nullptr;

  std::string importer;
  if (globals)
    if (PyObject* n = PyDict_GetItemString(globals, "__name__"); n && PyUnicode_Check(n))  // borrowed
      importer = PyUnicode_AsUTF8(n);

  std::string absolute = name;
  if (level > 0) {  // importlib's _calc___package__ and _resolve_name
    if (!globals) return;
    std::string package;
    PyObject* pkg = PyDict_GetItemString(globals, "__package__");  // borrowed
    if (pkg && PyUnicode_Check(pkg)) {
      package = PyUnicode_AsUTF8(pkg);
    } else {
      package = importer;
      if (!PyDict_GetItemString(globals, "__path__"))
        package = package.substr(0, package.rfind('.') == std::string::npos ? 0 : package.rfind('.'));
    }
    for (long i = 1; i < level; ++i) {
      auto dot = package.rfind('.');
      if (dot == std::string::npos) return;
      package.resize(dot);
    }
    absolute = name.empty() ? package : package + "." + name;
  }

  // Track the module and its parents (`import a.b.c` loads all three).
  for (auto dot = absolute.find('.'); dot != std::string::npos; dot = absolute.find('.', dot + 1))
    registry_.lookup(absolute.substr(0, dot));
  if (!registry_.lookup(absolute)) return;

  import_graph& graph = registry_.graph();
  bool top_level = !importer.empty() && runs_top_level(importer, globals);
  if (top_level) graph.add_dependency(importer, absolute);
  if (!fromlist || fromlist == Py_None) return;
  for (py::handle item : py::reinterpret_borrow<py::object>(fromlist)) {
    if (!PyUnicode_Check(item.ptr())) continue;
    std::string what = PyUnicode_AsUTF8(item.ptr());
    if (what != "*" && registry_.lookup(absolute + "." + what) && top_level)  // `from pkg import submodule`
      graph.add_dependency(importer, absolute + "." + what);
  }
  if (!top_level) return;
  // The names the importer binds (`from m import LIMIT as CAP`) are in its bytecode.
  PyFrameObject* frame = PyEval_GetFrame();  // borrowed: the frame running the import
  if (!frame) return;
  for (py::handle pair : helpers_.from_import_targets(py::handle(reinterpret_cast<PyObject*>(frame)))) {
    std::string what = py::str(pair[py::int_(0)]), bound = py::str(pair[py::int_(1)]);
    if (!registry_.lookup(absolute + "." + what))
      graph.add_from_import(importer, absolute, what == bound ? what : what + " as " + bound);
  }
}

}  // namespace modhost::detail
