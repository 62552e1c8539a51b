// The `modhost` embedded module: the interpreter and its module cache, seen
// from scripts. Registered before Python starts (PYBIND11_EMBEDDED_MODULE);
// the interpreter attaches its cache and autoreloader (modhost_module.h).
// The names and meanings are docs/design.md's script-side contract; modhost.pyi
// beside this file is the typed stub.
// GCC 16 reports an SRA temporary of pybind11 3.1's def_readonly getter
// (pybind11.h, property_cpp_function_classic::readonly) as used
// (or maybe) uninitialized once inlined here: a false positive in the
// library's code.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 16
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <pybind11/embed.h>
#include <pybind11/functional.h>
#include <pybind11/stl.h>
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 16
#pragma GCC diagnostic pop
#endif

#include "bindings/modhost_module.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <deque>
#include <limits>
#include <stdexcept>
#include <utility>

#include "modules/acquisitions.h"
#include "modules/autoreload.h"
#include "modules/cpython/time_limit.h"
#include "modules/module_cache.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

struct attached_pieces {
  modhost::module_cache* cache = nullptr;
  modhost::autoreloader* autoreload = nullptr;
  modhost::interpreter_facts facts;
};
attached_pieces g_attached;  // under the GIL

const attached_pieces& attached() {
  if (!g_attached.cache) throw std::runtime_error("modhost: no interpreter is running");
  return g_attached;
}

modhost::module_cache& cache() { return *attached().cache; }
modhost::autoreloader& autoreload() { return *attached().autoreload; }

// A module object or a module name.
std::string module_name_of(py::handle module_or_name) {
  if (py::isinstance<py::str>(module_or_name)) {
    Py_ssize_t size = 0;
    const char* utf8 = PyUnicode_AsUTF8AndSize(module_or_name.ptr(), &size);
    if (!utf8) {
      PyErr_Clear();
      throw py::value_error("module name is not valid UTF-8: " + py::repr(module_or_name).cast<std::string>());
    }
    return std::string(utf8, static_cast<std::size_t>(size));
  }
  if (!PyModule_Check(module_or_name.ptr()))
    throw py::type_error("expected a module or a module name, got " +
                         std::string(Py_TYPE(module_or_name.ptr())->tp_name));
  return py::str(module_or_name.attr("__name__"));
}

// Every number of seconds a script passes (a time limit, a wait) becomes a
// duration here, and only here: a float cast to an integer past its range is
// undefined behaviour (timeout=inf fired at once, wait_for_calls=inf gave up
// "after waiting -9223372036854775808 ms"). inf means forever
// (milliseconds::max(), which deadline_after() turns into "never"); anything
// else rounds up to the next millisecond, so a positive limit never becomes
// zero, and saturates at max(). NaN, negative numbers and (unless
// zero_allowed) zero are a ValueError. (py::handle rather than
// std::optional<double>: GCC 12 warns falsely about the optional caster.)
std::chrono::milliseconds duration_of(py::handle seconds, const char* parameter, bool zero_allowed) {
  if (!PyFloat_Check(seconds.ptr()) && !PyLong_Check(seconds.ptr()))
    throw py::type_error(std::string(parameter) + " must be a number of seconds or None, not " +
                         Py_TYPE(seconds.ptr())->tp_name);
  double value = PyFloat_AsDouble(seconds.ptr());  // an int too large for a double: OverflowError
  if (value == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  if (std::isnan(value)) throw py::value_error(std::string(parameter) + " must be a number of seconds, not nan");
  if (value < 0 || (value == 0 && !zero_allowed))
    throw py::value_error(std::string(parameter) + (zero_allowed ? " must not be negative" : " must be positive") +
                          ", got " + py::repr(seconds).cast<std::string>());
  using limit = std::numeric_limits<std::chrono::milliseconds::rep>;
  double ms = std::ceil(value * 1000);
  // max() as a double rounds up to 2^63, which is already out of range: compare with >=.
  if (ms >= static_cast<double>(limit::max())) return std::chrono::milliseconds::max();
  return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(ms));
}

// timeout= / time_limit(seconds): None (where allowed) and inf are no limit,
// which reload_options and load() spell zero.
std::chrono::milliseconds to_limit(py::handle seconds, const char* parameter = "timeout") {
  if (seconds.is_none()) return std::chrono::milliseconds(0);
  auto limit = duration_of(seconds, parameter, false);
  return limit == std::chrono::milliseconds::max() ? std::chrono::milliseconds(0) : limit;
}

// reload(wait_for_calls=): None turns holding other threads off; inf waits
// for them as long as they run.
std::optional<std::chrono::milliseconds> to_wait(py::handle seconds) {
  if (seconds.is_none()) return std::nullopt;
  return duration_of(seconds, "wait_for_calls", true);
}

// modhost.time_limit: armed by __enter__, disarmed by __exit__ (not when the
// Python object is freed, which may be long after the block).
struct scoped_time_limit {
  std::chrono::milliseconds limit{0};
  std::optional<modhost::time_limit> armed;
  bool expired = false;
};

py::object fingerprint_object(const std::optional<modhost::fingerprint>& print) {
  if (!print) return py::none();
  py::object namespace_type = py::module_::import("types").attr("SimpleNamespace");
  return namespace_type("size"_a = print->size, "mtime_ns"_a = print->mtime_ns,
                        "ctime_ns"_a = print->ctime_ns, "inode"_a = print->inode,
                        "content_hash"_a = print->content_hash);
}

// Every other public function is what reload is (below): a plain C function of
// the module, so help() shows one signature (the text-signature block,
// "name(...)\n--\n\n", which also gives inspect.signature) and no pybind11
// capsule, forwarding its arguments as they are to the pybind11
// implementation kept as modhost._bound_NAME. A C function cannot tell which name
// it was called by, so each slot is its own instance of forward<I>.
constexpr std::size_t kMaxForwarded = 40;
PyObject* g_forwarded_names[kMaxForwarded];  // interned "_bound_NAME", set once at import
std::string g_forwarded_signatures[kMaxForwarded];  // "name(...)", for argument errors

// pybind11's "incompatible function arguments" error lists every overload
// on several lines; the one line a user can act on is the call against the
// signature.
void shorten_argument_error(const std::string& signature) {
  if (!PyErr_ExceptionMatches(PyExc_TypeError)) return;
  py::error_already_set error;  // takes it out of the interpreter
  std::string full = py::str(error.value());
  auto invoked = full.find("Invoked with: ");
  if (full.find("incompatible function arguments") == std::string::npos || invoked == std::string::npos) {
    error.restore();
    return;
  }
  std::string call = full.substr(invoked + 14);
  call.erase(std::find(call.begin(), call.end(), '\n'), call.end());
  PyErr_Format(PyExc_TypeError, "%s() got arguments it cannot take (%s); it takes %s",
               signature.substr(0, signature.find('(')).c_str(), call.c_str(), signature.c_str());
}

// modhost.reload as users see it: a C function of the module itself (so
// help() has no pybind11 capsule to mention) that hands its arguments, as
// they are, to the pybind11 implementation modhost._reload. C to C: no frame
// of its own in a traceback.
PyObject* reload_entry(PyObject* module, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  auto impl = py::reinterpret_steal<py::object>(PyObject_GetAttrString(module, "_reload"));  // steals the new reference
  if (!impl) return nullptr;
  PyObject* result = PyObject_Vectorcall(impl.ptr(), args, static_cast<size_t>(nargs), kwnames);
  if (!result)
    shorten_argument_error("reload(module, *, deep=False, dependents=False, timeout=None, wait_for_calls=1.0)");
  return result;
}

template <std::size_t I>
PyObject* forward(PyObject* module, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  auto impl = py::reinterpret_steal<py::object>(PyObject_GetAttr(module, g_forwarded_names[I]));  // new reference
  if (!impl) return nullptr;
  PyObject* result = PyObject_Vectorcall(impl.ptr(), args, static_cast<size_t>(nargs), kwnames);
  if (!result) shorten_argument_error(g_forwarded_signatures[I]);
  return result;
}

using fast_function = PyObject* (*)(PyObject*, PyObject* const*, Py_ssize_t, PyObject*);  // METH_FASTCALL | METH_KEYWORDS

template <std::size_t... I>
constexpr std::array<fast_function, sizeof...(I)> forwarders(std::index_sequence<I...>) {
  return {&forward<I>...};
}

// Replaces each public pybind11 function of `m` by its forwarder. Its
// docstring's first line, "name(args) -> result", becomes the text signature
// "name(args)" and a closing "Returns result."
void forward_public_functions(py::module_& m) {
  static const auto entries = forwarders(std::make_index_sequence<kMaxForwarded>{});
  static std::deque<PyMethodDef> definitions;  // CPython keeps pointers to them
  static std::deque<std::string> texts;
  std::size_t slot = 0;
  py::dict namespace_ = m.attr("__dict__");
  for (auto [key, value] : py::dict(namespace_)) {
    std::string name = py::str(key);
    if (name.empty() || name[0] == '_' || !PyCFunction_Check(value.ptr())) continue;
    if (PyModule_Check(PyCFunction_GetSelf(value.ptr()))) continue;  // reload, already a function of the module
    if (slot == kMaxForwarded) throw std::logic_error("modhost: raise kMaxForwarded");
    std::string doc = py::str(value.attr("__doc__"));
    std::string first = doc.substr(0, doc.find('\n'));
    std::string rest = doc.size() > first.size() ? doc.substr(std::min(doc.size(), first.size() + 2)) : "";
    auto arrow = first.find(") -> ");
    std::string signature = first.substr(0, arrow == std::string::npos ? first.size() : arrow + 1);
    if (signature.compare(0, name.size() + 1, name + "(") != 0 || signature.back() != ')')
      throw std::logic_error("modhost: the docstring of " + name + " must start with its signature");
    if (arrow != std::string::npos) rest += "\n\nReturns " + first.substr(arrow + 5) + ".";
    texts.push_back(signature + "\n--\n\n" + rest);
    g_forwarded_signatures[slot] = signature;
    g_forwarded_names[slot] = PyUnicode_InternFromString(("_bound_" + name).c_str());  // kept for the process
    texts.push_back(name);
    definitions.push_back({texts.back().c_str(), reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(entries[slot])),
                           METH_FASTCALL | METH_KEYWORDS, texts[texts.size() - 2].c_str()});
    auto function = py::reinterpret_steal<py::object>(  // steals the new function
        PyCFunction_NewEx(&definitions.back(), m.ptr(), m.attr("__name__").ptr()));
    if (!function) throw py::error_already_set();
    m.attr(("_bound_" + name).c_str()) = value;
    m.attr(name.c_str()) = function;
    ++slot;
  }
}

}  // namespace

PYBIND11_EMBEDDED_MODULE(modhost, m) {
  // The docstrings say the signatures in Python's own words (forward_public_functions).
  py::options options;
  options.disable_function_signatures();
  m.doc() =
      "modhost: reload, unload and inspect Python modules safely inside a C++ host.\n\n"
      "Every import is tracked by a C++ cache in front of sys.modules. reload() is\n"
      "atomic (a failure restores the old namespace exactly), unload() refuses while\n"
      "anything still holds the module or its code and says who, is_changed() compares\n"
      "fingerprints confirmed by a content hash.";
  m.attr("__version__") = MODHOST_VERSION;

  py::exception<modhost::module_in_use_error> module_in_use(m, "ModuleInUseError",
                                                            PyExc_RuntimeError);
  module_in_use.doc() =
      "unload() refused: something outside sys.modules and the cache still holds the\n"
      "module or its code; or reload() found other threads still running its code\n"
      "after wait_for_calls. .name is the module, .referrers describes each holder.";
  // The exception translator is registered by attach_bindings(): a host's
  // own bindings that call the cache (modhost::attach_release) need it even
  // if no script imports modhost.

  // Made where time limits live; the class says module "modhost", so export it here.
  m.attr("TimeLimitExceeded") = modhost::time_limit_exceeded();

  py::class_<modhost::module_info>(m, "ModuleInfo", "What the cache knows about one module.")
      .def_readonly("name", &modhost::module_info::name)
      .def_property_readonly("path", [](const modhost::module_info& i) -> py::object {
        if (i.path.empty()) return py::none();
        return py::str(i.path.string());
      }, "Origin file, or None for built-in modules and namespace packages.")
      .def_property_readonly("kind", [](const modhost::module_info& i) { return modhost::to_string(i.kind); },
                             "'source', 'package', 'namespace package', 'built-in', 'extension' or 'other'.")
      .def_property_readonly("state", [](const modhost::module_info& i) { return modhost::to_string(i.state); },
                             "'loaded', 'reloading', 'failed' (last reload failed; old code runs) or 'unloaded'.")
      .def_readonly("generation", &modhost::module_info::generation,
                    "1 at first load, +1 per successful reload.")
      .def_readonly("reloadable", &modhost::module_info::reloadable,
                    "False for built-in and extension modules, sys, builtins, __main__, modhost\n"
                    "and the import machinery (_frozen_importlib, zipimport, ...).")
      .def_property_readonly("fingerprint", [](const modhost::module_info& i) { return fingerprint_object(i.fingerprint); },
                             "size, mtime_ns, ctime_ns, inode, content_hash of the file whose code runs.")
      .def_property_readonly("last_error", [](const modhost::module_info& i) -> py::object {
        if (i.last_error.empty()) return py::none();
        return py::str(i.last_error);
      }, "'Type: message' of the last failed reload, or None.")
      .def_readonly("dependencies", &modhost::module_info::dependencies)
      .def_readonly("dependents", &modhost::module_info::dependents)
      .def("__repr__", [](const modhost::module_info& i) {
        return "<ModuleInfo " + i.name + " " + modhost::to_string(i.kind) + " generation " +
               std::to_string(i.generation) + " " + modhost::to_string(i.state) + ">";
      });

  py::class_<modhost::unload_report>(m, "UnloadReport",
                                             "What unload() did: the modules removed, what still lingers, whether it was freed.")
      .def_readonly("unloaded", &modhost::unload_report::unloaded,
                    "The module and its submodules, deepest first.")
      .def_readonly("lingering", &modhost::unload_report::lingering,
                    "With force=True: holders that still keep old code alive.")
      .def_readonly("freed", &modhost::unload_report::freed,
                    "The module object itself was freed.")
      .def_readonly("acquisition_errors", &modhost::unload_report::acquisition_errors,
                    "Releases of what the modules acquired (modhost.acquire) that raised; the others\n"
                    "still ran. Each was also printed through sys.unraisablehook.")
      .def("__repr__", [](const modhost::unload_report& r) {
        return "<UnloadReport unloaded=" + py::repr(py::cast(r.unloaded)).cast<std::string>() +
               " freed=" + (r.freed ? "True" : "False") + ">";
      });

  m.def(
      "load",
      [](const std::string& name, py::object timeout) {
        return cache().load(name, to_limit(timeout));
      },
      "name"_a, py::kw_only(), "timeout"_a = py::none(),
      "load(name, *, timeout=None) -> module\n\nImport `name` through the cache, like importlib.import_module\n"
      "(absolute names). A loaded module is a C++ hash-map hit. timeout (seconds)\n"
      "interrupts module code that runs longer with TimeLimitExceeded.");

  // reload is the call users read help() for: it gets one signature, the
  // one inspect.signature() gives. What users call is a plain C function of
  // the module (reload_entry) whose docstring starts with CPython's
  // text-signature block ("name(...)\n--\n\n": __text_signature__, cut from
  // __doc__). It forwards to this pybind11 function, kept as modhost._reload
  // but named reload in its argument errors; shown itself, it would add
  // pybind11's own signature line ("reload(module: object, ...) -> object")
  // and "method of builtins.PyCapsule instance" (its __self__).
  py::cpp_function reload_impl(
      [](py::object module_or_name, bool deep, py::object dependents, py::object timeout,
         py::object wait_for_calls) -> py::object {
        modhost::reload_options options;
        options.time_limit = to_limit(timeout);
        options.wait_for_calls = to_wait(wait_for_calls);
        options.deep = deep;
        if (py::isinstance<py::str>(dependents)) {
          if (dependents.cast<std::string>() != "as_needed")
            throw py::value_error("dependents must be True, False or 'as_needed', not " +
                                  py::repr(dependents).cast<std::string>());
          options.dependents = options.dependents_as_needed = true;
        } else {
          options.dependents = py::bool_(dependents);
        }
        modhost::reload_report report;
        const bool several = py::isinstance<py::list>(module_or_name) || py::isinstance<py::tuple>(module_or_name);
        if (several) {
          std::vector<std::string> names;
          for (py::handle item : module_or_name)
            names.push_back(py::isinstance<py::str>(item) ? module_name_of(py::reinterpret_borrow<py::object>(item))
                                                          : cache().name_of(item));
          report = cache().reload(names, options);
        } else if (py::isinstance<py::str>(module_or_name)) {
          report = cache().reload(module_name_of(module_or_name), options);
        } else {
          report = cache().reload(module_or_name, options);
        }
        modhost::reload_report kept = report;
        kept.module = py::object();  // the report must not keep the module alive (unload would refuse)
        py::module_::import("modhost").attr("_last_reload") = std::move(kept);
        if (report.error) {
          report.error->restore();
          throw py::error_already_set();
        }
        if (several) {  // the modules, in the order asked for
          py::list modules;
          for (const auto& name : report.targets) modules.append(cache().find(name));
          return py::object(std::move(modules));
        }
        return report.module;
      },
      py::name("reload"), py::scope(m), "module"_a, py::kw_only(), "deep"_a = false, "dependents"_a = false,
      "timeout"_a = py::none(), "wait_for_calls"_a = 1.0, "The implementation of modhost.reload.");
  m.add_object("_reload", reload_impl);
  static PyMethodDef reload_def = {
      "reload", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&reload_entry)),
      METH_FASTCALL | METH_KEYWORDS,
      "reload(module, *, deep=False, dependents=False, timeout=None, wait_for_calls=1.0)\n--\n\n"
      "Reload a module (the module object, or its name) and return it.\n\n"
      "A drop-in for importlib.reload that is atomic. The module's current source is\n"
      "compiled from disk (never a stale bytecode cache) and run in its own namespace;\n"
      "the same module object comes back. If anything raises (a syntax error, an\n"
      "exception at any statement, KeyboardInterrupt), the namespace is restored\n"
      "exactly (same keys, same objects) and the original exception propagates.\n\n"
      "deep=True puts the new code into the objects that exist: names the new source\n"
      "no longer defines are removed; functions are patched in place (old references\n"
      "and `from m import f` bindings run the new body); classes are updated in place\n"
      "(identity kept: isinstance, pickling and existing instances see the new\n"
      "methods); enum members present in both versions stay the same objects; other\n"
      "modules' `from m import NAME` globals are rebound. An unchanged source is a\n"
      "no-op. If the new module defines __reload__(old), it is called with the old\n"
      "namespace before the reload commits; if it raises, everything rolls back.\n"
      "modhost.last_reload() says what was patched and what could not be.\n\n"
      "dependents=True also re-executes every loaded module that imported it,\n"
      "transitively, dependencies first, a cycle as one unit; if any fails, all of\n"
      "them are rolled back. dependents='as_needed' (with deep=True, what the\n"
      "autoreloader does) re-runs a dependent only when patching in place cannot\n"
      "reach what its top level kept (docs/live-reload.md says the rule); the\n"
      "others are in last_reload().spared. What the modules acquired through modhost.acquire is\n"
      "released before their code re-runs and acquired again, exactly, if the reload\n"
      "fails (see help(modhost.acquire)). Built-in and extension modules behave as with\n"
      "importlib.reload: nothing runs again. sys, builtins, __main__, modhost and the\n"
      "import machinery (_frozen_importlib, importlib._bootstrap, zipimport, _imp, ...)\n"
      "are refused with ValueError. timeout (seconds; None or inf: no limit) interrupts\n"
      "module code that runs longer (TimeLimitExceeded) and rolls the reload back.\n\n"
      "Other threads see one version: while the module re-executes, their calls into\n"
      "it, attribute reads and writes on it and C++ handle calls wait, then run the\n"
      "new version (the old one if the reload rolled back). Calls already running in\n"
      "other threads are waited for up to wait_for_calls seconds; if one still runs,\n"
      "ModuleInUseError names the thread and nothing is reloaded. The calling\n"
      "thread's own frames never count. wait_for_calls=inf waits as long as they run;\n"
      "wait_for_calls=None: no waiting, no holding.\n\n"
      "reload([a, b, ...]) reloads several modules (objects or names) as one\n"
      "transaction, dependencies first (with dependents=True, their dependents too):\n"
      "all of them go live, or none does. It returns the modules in the order given.\n"
      "A rename across two files needs this: neither half imports alone."};
  auto reload = py::reinterpret_steal<py::object>(  // steals the new function
      PyCFunction_NewEx(&reload_def, m.ptr(), m.attr("__name__").ptr()));
  if (!reload) throw py::error_already_set();
  m.attr("reload") = reload;

  py::class_<modhost::reload_report>(m, "ReloadReport",
                                     "What the last reload did: outcome, generation, what ran, what was patched.")
      .def_readonly("name", &modhost::reload_report::name)
      .def_readonly("targets", &modhost::reload_report::targets, "Every module asked for (several: reloaded as one set).")
      .def_property_readonly("outcome", [](const modhost::reload_report& r) { return modhost::to_string(r.outcome); },
                             "'reloaded', 'unchanged' (deep, same content), 'not reloadable', 'deferred' or 'failed'.")
      .def_readonly("generation", &modhost::reload_report::generation)
      .def_property_readonly("duration", [](const modhost::reload_report& r) {
        return std::chrono::duration<double>(r.duration).count();
      }, "Seconds.")
      .def_readonly("added", &modhost::reload_report::added)
      .def_readonly("removed", &modhost::reload_report::removed)
      .def_readonly("reexecuted", &modhost::reload_report::reexecuted)
      .def_readonly("patched", &modhost::reload_report::patched)
      .def_readonly("not_patched", &modhost::reload_report::not_patched)
      .def_readonly("instances_not_moved", &modhost::reload_report::instances_not_moved)
      .def_readonly("rebound", &modhost::reload_report::rebound)
      .def_readonly("spared", &modhost::reload_report::spared,
                    "dependents='as_needed': dependents left to in-place patching, not re-run.")
      .def_readonly("rolled_back", &modhost::reload_report::rolled_back)
      .def_readonly("acquisition_errors", &modhost::reload_report::acquisition_errors,
                    "Releases and re-acquisitions (modhost.acquire) that raised; the others still ran.")
      .def_readonly("failed_module", &modhost::reload_report::failed_module)
      .def_property_readonly("error", [](const modhost::reload_report& r) -> py::object {
        if (!r.error) return py::none();
        return py::str(r.error->what());
      }, "'Type: message' of the failure, or None.")
      .def_property_readonly("error_type", [](const modhost::reload_report& r) -> py::object {
        return r.error ? py::object(py::str(r.error->type_name())) : py::none();
      }, "The failure's exception type ('ZeroDivisionError', 'json.decoder.JSONDecodeError'), or None.")
      .def_property_readonly("error_message", [](const modhost::reload_report& r) -> py::object {
        return r.error ? py::object(py::str(r.error->message())) : py::none();
      }, "str() of the failure's exception, or None.")
      .def_property_readonly("error_file", [](const modhost::reload_report& r) -> py::object {
        return r.error && !r.error->file().empty() ? py::object(py::str(r.error->file())) : py::none();
      }, "The file it was raised in (a SyntaxError's own file), or None.")
      .def_property_readonly("error_line", [](const modhost::reload_report& r) -> py::object {
        return r.error && r.error->line() > 0 ? py::object(py::int_(r.error->line())) : py::none();
      }, "The line it was raised at, or None.")
      .def_readonly("deferred_by", &modhost::reload_report::deferred_by,
                    "A deferred autoreload: the module whose code the main thread was running.")
      .def("__repr__", [](const modhost::reload_report& r) {
        return "<ReloadReport " + r.name + " " + modhost::to_string(r.outcome) + " generation " +
               std::to_string(r.generation) + ">";
      });
  m.attr("_last_reload") = py::none();
  m.def("last_reload", [] { return py::module_::import("modhost").attr("_last_reload"); },
        "last_reload() -> ReloadReport | None\n\nThe report of the most recent modhost.reload call from a script.");

  m.def(
      "unload",
      [](const std::string& name, bool force) { return cache().unload(name, force); }, "name"_a,
      py::kw_only(), "force"_a = false,
      "unload(name, *, force=False) -> UnloadReport\n\n"
      "Remove the module (and its loaded submodules) from sys.modules and the cache.\n"
      "What they acquired (modhost.acquire) is released first, newest first, then their\n"
      "__unload__() runs; a refused unload acquires it all again.\n"
      "Refuses with ModuleInUseError (a RuntimeError; .referrers names the holders)\n"
      "while anything else holds the module or its code: another module's global,\n"
      "a `from plug import hook` binding, an instance of its classes, a running frame,\n"
      "a C++ handle, or a hook the interpreter calls (a signal handler, an atexit\n"
      "callback, an audit hook, sys.excepthook and its kind, threading.excepthook, a\n"
      "profile or trace function). force=True unloads anyway; .lingering lists what\n"
      "still holds old code. A later import loads fresh code.");

  m.def(
      "acquire",
      [](py::object acquire, py::object release, py::object module) {
        return modhost::acquire(cache(), std::move(acquire), std::move(release),
                                module.is_none() ? std::string() : module_name_of(module));
      },
      "acquire"_a, "release"_a, py::kw_only(), "module"_a = py::none(),
      "acquire(acquire, release, *, module=None) -> object\n\n"
      "Call acquire() now and return its result; record release against the module\n"
      "whose code makes this call (its top-level code or one of its functions), so\n"
      "that what a plugin takes from its host (a handler registered under a key, a\n"
      "route, a thread or timer started, a port bound) follows its reloads exactly:\n\n"
      "- before a reload re-executes the module, release(result) runs for each of its\n"
      "  acquisitions, newest first; the new code acquires afresh. A thread started\n"
      "  through acquire is stopped by its release before the new code starts\n"
      "  another, so a server thread can bind the same port again;\n"
      "- if the reload fails (the module, a dependent, a __reload__ hook, a time\n"
      "  limit, a thread still in its code), what the new code acquired is released,\n"
      "  newest first, and the old acquisitions are acquired again in their original\n"
      "  order with the very same callables: the host ends as it was. With\n"
      "  dependents=True every module of the reload is one unit;\n"
      "- unload() releases them before it looks for holders (what the host holds\n"
      "  only through them does not keep the module), then calls __unload__; an\n"
      "  unload that is refused acquires them again;\n"
      "- a deep reload behaves the same; an unchanged source touches nothing.\n\n"
      "release takes one argument: what acquire() returned (after a re-acquire, what\n"
      "it returned then), e.g. modhost.acquire(lambda: start_worker(), lambda w: w.stop()).\n"
      "A release that raises does not stop the others: the error goes to\n"
      "sys.unraisablehook and to the report's acquisition_errors. If acquire() raises,\n"
      "nothing is recorded. ValueError if no tracked module's code makes the call (a\n"
      "script's __main__, exec'd code) and module= (a name or a module) is not given.");
  m.def("acquired", [](py::object module) { return modhost::acquired(cache(), module_name_of(module)); },
        "name"_a,
        "acquired(name) -> list[str]\n\nOne line per live acquisition of the module, oldest first: what was\n"
        "acquired, where, and what releases it, e.g.\n"
        "'plug.start_worker() at plug.py:12, released by plug.stop_worker'.");

  m.def("refcount", [](const std::string& name) { return cache().refcount(name); }, "name"_a,
        "refcount(name) -> int\n\nReferences to the module object beyond sys.modules, the cache and\n"
        "its parent package's attribute. 0: nothing else holds it (the old idiom\n"
        "sys.getrefcount(m) <= 3).");

  m.def("referrers", [](const std::string& name) { return cache().referrers(name); }, "name"_a,
        "referrers(name) -> list[str]\n\nWho keeps the module or its code alive, readable:\n"
        "\"module 'app' global 'plug'\", \"module 'app' global 'hook' (function plug.hook)\",\n"
        "\"thread main frame plug.run\", \"C++ handle plug.on_event\",\n"
        "\"signal handler for SIGUSR1 (function plug.on_signal)\", \"atexit callback (...)\",\n"
        "\"audit hook (...)\", \"sys.excepthook (...)\", \"trace function of thread main (...)\".");

  m.def("is_changed", [](py::object module) { return cache().is_changed(module_name_of(module)); },
        "name"_a,
        "is_changed(name) -> bool\n\nThe source on disk differs from what runs (size, mtime_ns, ctime_ns,\n"
        "inode, confirmed by a content hash: a touch is not a change). A deleted file counts.");

  m.def("changed", [] { return cache().changed(); },
        "changed() -> list[str]\n\nEvery tracked module whose file changed on disk.");

  m.def("dependencies", [](py::object module) { return cache().dependencies(module_name_of(module)); },
        "name"_a, "dependencies(name) -> list[str]\n\nWhat the module imported while its top-level code ran.");
  m.def("dependents", [](py::object module) { return cache().dependents(module_name_of(module)); },
        "name"_a, "dependents(name) -> list[str]\n\nThe modules that imported it while their top-level code ran.");
  m.def("from_imports", [](py::object module) { return cache().from_imports(module_name_of(module)); },
        "name"_a,
        "from_imports(name) -> dict[str, list[str]]\n\nFor each `from x import a, b` the module ran at top level: x -> [a, b].");

  m.def("info", [](py::object module) { return cache().info(module_name_of(module)); }, "name"_a,
        "info(name) -> ModuleInfo\n\nname, path, kind, state, generation, reloadable, fingerprint, last_error,\n"
        "dependencies, dependents.");

  m.def("modules", [] { return cache().modules(); },
        "modules() -> list[str]\n\nThe names the cache tracks (every module in sys.modules), sorted.");

  m.def(
      "on_reload",
      [](py::function callback) {
        auto id = cache().subscribe([callback](const modhost::reload_report& report) {
          if (report.outcome != modhost::reload_outcome::reloaded) return;
          for (const auto& name : report.reexecuted) {  // the target and, with dependents, the rest
            try {
              callback(name, cache().info(name).generation);
            } catch (py::error_already_set& e) {
              e.discard_as_unraisable("modhost reload callback");
            } catch (const modhost::python_error& e) {
              e.restore();
              PyErr_WriteUnraisable(callback.ptr());
            }
          }
        });
        return py::cpp_function([id] { cache().unsubscribe(id); });
      },
      "callback"_a,
      "on_reload(callback) -> unsubscribe\n\nCall callback(name, generation) after every successful reload, once for\n"
      "each module it re-executed. An exception in the callback is printed, not raised.\n"
      "Returns a function that removes the subscription.");

  m.def(
      "subscribe",
      [](py::function callback) {
        return cache().subscribe([callback](const modhost::reload_report& report) {
          modhost::reload_report told = report;
          told.module = py::object();  // as last_reload(): a kept report must not keep the module alive
          try {
            callback(std::move(told));
          } catch (py::error_already_set& e) {
            e.discard_as_unraisable("modhost subscriber");
          }
        });
      },
      "callback"_a,
      "subscribe(callback) -> token\n\nCall callback(report) with the ReloadReport of every reload that reloaded,\n"
      "failed (rolled back; report.error_type, error_message, error_file, error_line) or was\n"
      "deferred, the autoreloader's included, once per reload call for its whole set of\n"
      "modules (report.targets, report.reexecuted). Not for unchanged modules. An exception in\n"
      "the callback is printed, not raised. unsubscribe(token) removes it.");
  m.def(
      "unsubscribe", [](std::uint64_t token) { cache().unsubscribe(token); }, "token"_a,
      "unsubscribe(token)\n\nRemoves a subscription made by subscribe(); an unknown token is ignored.");

  m.def(
      "autoreload",
      [](std::optional<std::string> mode) {
        auto& reloader = autoreload();
        if (mode) {
          auto parsed = modhost::parse_autoreload_mode(*mode);
          if (!parsed)
            throw py::value_error("autoreload mode must be 'off', 'explicit' or 'all', not '" + *mode + "'");
          reloader.set_mode(*parsed);
        }
        return std::string(modhost::to_string(reloader.mode()));
      },
      "mode"_a = py::none(),
      "autoreload(mode=None) -> str\n\n'off', 'explicit' (only watched modules and modules under watched\n"
      "directories) or 'all' (every source module under the module search paths,\n"
      "plus watched ones; the stdlib and site-packages only when watched). Returns\n"
      "the mode in force. Changes are applied by check(), or by themselves between\n"
      "bytecodes when the host program runs with --autoreload.");
  m.def("watch", [](py::object module) { autoreload().watch(module_name_of(module)); }, "name"_a,
        "watch(name)\n\nCover a module in 'explicit' mode (and undo unwatch). It need not be\n"
        "imported yet; ValueError for a name no module can have ('', NUL, '..').");
  m.def("unwatch", [](py::object module) { autoreload().unwatch(module_name_of(module)); }, "name"_a,
        "unwatch(name)\n\nExclude a module from autoreload, also in 'all' mode.");
  m.def(
      "watch_directory",
      [](py::object directory) {
        // A str or an os.PathLike, as os functions take; converted here rather than by
        // pybind11's path caster, which turns a NUL into a TypeError about the signature.
        py::object text = py::module_::import("os").attr("fspath")(directory);
        if (!py::isinstance<py::str>(text))
          throw py::type_error("watch_directory: directory must be a str or an os.PathLike of str");
        autoreload().watch_directory(text.cast<std::string>());
      },
      "directory"_a,
      "watch_directory(directory)\n\nCover every module under a directory (a str or os.PathLike; '.',\n"
      "'dir/' and a symbolic link all work), and make new files there importable as\n"
      "soon as they are saved. FileNotFoundError or NotADirectoryError if it is not an\n"
      "existing directory.");
  m.def("check", [] { return autoreload().poll(); },
        "check() -> list[str]\n\nApply the autoreload policy now: every complete save pending is one changeset,\n"
        "deep-reloaded as one transaction with what must re-run; returns the modules\n"
        "reloaded. A failure is one line `[modhost] reload of NAME failed: ...` through the\n"
        "host's log sink (default stderr) and a failed report to subscribers; the old code\n"
        "keeps running and the set is retried, whole, when any of its files changes again.\n"
        "Cheap when nothing changed.");
  m.def(
      "watcher_info",
      [] {
        const auto status = autoreload().describe_watcher();
        py::dict result;
        result["mode"] = status.mode;
        result["fallback_reason"] = status.fallback_reason;
        result["debounce_ms"] = status.debounce.count();
        return result;
      },
      "watcher_info() -> dict\n\nThe file watcher: mode ('inotify' or 'polling'), why it polls, debounce in ms.");

  py::class_<scoped_time_limit>(m, "time_limit",
                                "with modhost.time_limit(seconds): ... — interrupt the block with\n"
                                "TimeLimitExceeded if it runs longer (at the next bytecode; a blocking C call\n"
                                "is interrupted when it returns). The clock starts at the `with`.")
      .def(py::init([](py::object seconds) {
             if (seconds.is_none()) throw py::value_error("time_limit needs a number of seconds");
             auto scope = std::make_unique<scoped_time_limit>();
             scope->limit = to_limit(seconds, "seconds");
             return scope;
           }),
           "seconds"_a)
      .def("__enter__", [](py::object self) {
        auto& scope = self.cast<scoped_time_limit&>();
        if (scope.limit.count() > 0) scope.armed.emplace(scope.limit);  // zero: inf, no limit
        return self;
      })
      .def("__exit__", [](scoped_time_limit& scope, py::args) {
        if (scope.armed) scope.expired = scope.armed->expired();
        scope.armed.reset();  // disarmed: nothing is raised after the block
        return false;
      })
      .def_property_readonly("expired", [](const scoped_time_limit& scope) {
        return scope.armed ? scope.armed->expired() : scope.expired;
      }, "The limit ran out inside the block.");

  m.def(
      "interpreter_info",
      [] {
        const auto& facts = attached().facts;
        py::dict result;
        result["version"] = facts.version;
        result["home"] = facts.home;
        result["library"] = facts.library;
        result["module_paths"] = py::cast(facts.module_paths);
        return result;
      },
      "interpreter_info() -> dict\n\nThe running interpreter: Python version, home (the prefix whose stdlib is\n"
      "loaded), library (the libpython file in use) and the host's module paths.");
  forward_public_functions(m);
}

namespace modhost {

void attach_bindings(module_cache& cache, autoreloader& autoreload, interpreter_facts facts) {
  g_attached = {&cache, &autoreload, std::move(facts)};
  static bool translating = false;  // pybind11 keeps translators for the process
  if (translating) return;
  translating = true;
  // modhost's C++ errors, thrown through any pybind11-bound function (ours or
  // a host's), reach Python as the exception they carry.
  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const python_error& e) {
      e.restore();
    } catch (const module_in_use_error& e) {
      py::object type = py::module_::import("modhost").attr("ModuleInUseError");
      py::object exc = type(e.what());
      exc.attr("name") = e.name();
      exc.attr("referrers") = e.referrers();
      PyErr_SetObject(type.ptr(), exc.ptr());
    }
  });
}

void detach_bindings() noexcept { g_attached = {}; }

}  // namespace modhost
