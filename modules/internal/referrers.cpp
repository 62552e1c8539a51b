#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/referrers.h"

#include <frameobject.h>

#include <set>
#include <unordered_map>
#include <unordered_set>

namespace py = pybind11;

namespace modhost::detail {
namespace {

constexpr std::size_t kMaxInstanceReports = 20;

std::string str_attr(py::handle obj, const char* attr) {
  PyObject* value = PyObject_GetAttrString(obj.ptr(), attr);
  if (!value) {
    PyErr_Clear();
    return "?";
  }
  py::object owned = py::reinterpret_steal<py::object>(value);
  return PyUnicode_Check(value) ? owned.cast<std::string>() : std::string("?");
}

// What the examined modules own, and how to describe a reference to it.
class ownership {
 public:
  explicit ownership(const referrer_query& query) {
    for (const auto& [name, module] : query.modules) {
      modules_[module.ptr()] = name;
      dicts_.insert(PyModule_GetDict(module.ptr()));
      names_.insert(name);
    }
  }

  bool is_examined_module(PyObject* obj) const { return modules_.count(obj) != 0; }
  bool is_examined_dict(PyObject* obj) const { return dicts_.count(obj) != 0; }
  const std::string& module_name(PyObject* module) const { return modules_.at(module); }

  // A class defined in an examined module.
  bool owns_class(PyObject* type) const {
    if (!PyType_Check(type) || !(reinterpret_cast<PyTypeObject*>(type)->tp_flags & Py_TPFLAGS_HEAPTYPE))
      return false;
    return names_.count(str_attr(type, "__module__")) != 0;
  }

  // "function plug.hook", "class plug.Widget", "instance of plug.Widget",
  // "module plug", or "" when `value` is not the examined modules' code.
  std::string describe(PyObject* value) const {
    if (is_examined_module(value)) return "module " + module_name(value);
    if (PyFunction_Check(value) && is_examined_dict(PyFunction_GET_GLOBALS(value)))
      return "function " + qualified(value);
    if (PyMethod_Check(value)) {
      PyObject* function = PyMethod_GET_FUNCTION(value);
      if (PyFunction_Check(function) && is_examined_dict(PyFunction_GET_GLOBALS(function)))
        return "method " + qualified(function);
    }
    if (owns_class(value)) return "class " + qualified(value);
    if (!PyType_Check(value) && owns_class(reinterpret_cast<PyObject*>(Py_TYPE(value))))
      return "instance of " + qualified(reinterpret_cast<PyObject*>(Py_TYPE(value)));
    return {};
  }

  // describe(), looking one level into lists, tuples, sets and dict values
  // (not into sys.modules, whose references are accounted for). Counts the
  // references to examined modules it sees in `module_refs`.
  std::string describe_value(PyObject* value,
                             std::unordered_map<PyObject*, std::int64_t>& module_refs) const {
    if (is_examined_module(value)) {
      ++module_refs[value];
      return {};
    }
    std::string direct = describe(value);
    if (!direct.empty()) return direct;
    if (value == PyImport_GetModuleDict()) return {};
    if (!(PyList_Check(value) || PyTuple_Check(value) || PyAnySet_Check(value) || PyDict_Check(value)))
      return {};
    py::object items = PyDict_Check(value)
                           ? py::reinterpret_steal<py::object>(PyDict_Values(value))
                           : py::reinterpret_borrow<py::object>(value);
    for (py::handle item : items) {
      std::string inner = describe(item.ptr());
      if (inner.empty()) continue;
      if (is_examined_module(item.ptr())) ++module_refs[item.ptr()];
      return std::string(Py_TYPE(value)->tp_name) + " holding " + inner;
    }
    return {};
  }

 private:
  static std::string qualified(PyObject* obj) {
    return str_attr(obj, "__module__") + "." + str_attr(obj, "__qualname__");
  }

  std::unordered_map<PyObject*, std::string> modules_;
  std::unordered_set<PyObject*> dicts_;
  std::set<std::string> names_;
};

std::string thread_name(long long ident, py::handle threading) {
  if (!threading) return "tid " + std::to_string(ident);
  py::object thread = threading.attr("_active").attr("get")(ident);
  if (thread.is_none()) return "tid " + std::to_string(ident);
  if (thread.is(threading.attr("main_thread")())) return "main";
  return thread.attr("name").cast<std::string>();
}

}  // namespace

std::vector<std::string> find_referrers(const referrer_query& query) {
  ownership owned(query);
  std::vector<std::string> found;
  std::unordered_map<PyObject*, std::int64_t> module_refs;  // references explained so far
  std::unordered_set<PyObject*> reported;                   // objects already named

  // References among the examined modules (pkg.sub's global `pkg`) are theirs.
  for (const auto& [name, module] : query.modules) {
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    PyObject* dict = PyModule_GetDict(module.ptr());
    while (PyDict_Next(dict, &pos, &key, &value)) {
      if (owned.is_examined_module(value)) ++module_refs[value];
      reported.insert(value);  // instances kept by the module itself are its own
      if (PyList_Check(value) || PyTuple_Check(value) || PyDict_Check(value) || PyAnySet_Check(value)) {
        py::object items = PyDict_Check(value) ? py::reinterpret_steal<py::object>(PyDict_Values(value))
                                               : py::reinterpret_borrow<py::object>(value);
        for (py::handle item : items) reported.insert(item.ptr());
      }
    }
  }

  // 1. Globals of every other module.
  py::dict sys_modules = py::reinterpret_borrow<py::dict>(PyImport_GetModuleDict());
  for (auto [key, module] : sys_modules) {
    if (!PyModule_Check(module.ptr()) || owned.is_examined_module(module.ptr())) continue;
    std::string holder = py::str(key);
    PyObject* dict = PyModule_GetDict(module.ptr());
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(dict, &pos, &name, &value)) {
      if (!PyUnicode_Check(name)) continue;
      std::string global = PyUnicode_AsUTF8(name);
      if (owned.is_examined_module(value)) {
        ++module_refs[value];
        found.push_back("module '" + holder + "' global '" + global + "'");
        continue;
      }
      std::string what = owned.describe_value(value, module_refs);
      if (what.empty()) continue;
      reported.insert(value);
      found.push_back("module '" + holder + "' global '" + global + "' (" + what + ")");
    }
  }

  // 2. Frames of every thread: running the modules' code, or holding it in a local.
  py::module_ sys = py::module_::import("sys");
  py::object threading = sys_modules.contains("threading") ? sys_modules["threading"] : py::object();
  py::dict frames = sys.attr("_current_frames")();
  for (auto [ident, top] : frames) {
    std::string thread = thread_name(ident.cast<long long>(), threading);
    for (py::object frame = py::reinterpret_borrow<py::object>(top); !frame.is_none();
         frame = frame.attr("f_back")) {
      auto* raw = reinterpret_cast<PyFrameObject*>(frame.ptr());
      py::object code = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(PyFrame_GetCode(raw)));
      py::object globals = frame.attr("f_globals");
      std::string module_name = py::str(globals.attr("get")("__name__", "?"));
      std::string where =
          "thread " + thread + " frame " + module_name + "." + str_attr(code, "co_qualname");
      if (owned.is_examined_dict(globals.ptr())) {
        found.push_back(where);
        continue;
      }
      if (!(reinterpret_cast<PyCodeObject*>(code.ptr())->co_flags & CO_OPTIMIZED)) continue;
      py::dict locals = frame.attr("f_locals");
      for (auto [local, value] : locals) {
        if (owned.is_examined_module(value.ptr())) {
          module_refs[value.ptr()] += 2;  // the fast local and f_locals' copy
          found.push_back(where + " local '" + py::str(local).cast<std::string>() + "'");
          continue;
        }
        std::string what = owned.describe_value(value.ptr(), module_refs);
        if (!what.empty()) {
          reported.insert(value.ptr());
          found.push_back(where + " local '" + py::str(local).cast<std::string>() + "' (" + what + ")");
        }
      }
    }
  }

  // 3. C++ handles: invisible to gc, so the cache tells us.
  for (const auto& handle : query.cpp_handles) found.push_back("C++ handle " + handle);

  // 4. Instances of the modules' classes held anywhere else (a list inside an
  // object, a C++ container...): found through their class.
  py::list classes;
  for (const auto& [name, module] : query.modules) {
    for (auto [key, value] : py::reinterpret_borrow<py::dict>(PyModule_GetDict(module.ptr())))
      if (owned.owns_class(value.ptr())) classes.append(value);
  }
  if (!classes.empty()) {
    py::module_ gc = py::module_::import("gc");
    py::list holders_of_classes = gc.attr("get_referrers")(*classes);
    std::size_t unnamed = 0;
    for (py::handle obj : holders_of_classes) {
      if (PyType_Check(obj.ptr()) || reported.count(obj.ptr())) continue;
      std::string what = owned.describe(obj.ptr());
      if (what.rfind("instance of ", 0) != 0) continue;
      reported.insert(obj.ptr());
      if (found.size() > kMaxInstanceReports + query.cpp_handles.size()) {
        ++unnamed;
        continue;
      }
      py::list holders = gc.attr("get_referrers")(obj);
      std::string by = holders.empty() ? "C++ or an untracked object"
                                       : std::string("a ") + Py_TYPE(holders[0].ptr())->tp_name;
      found.push_back(what + " held by " + by);
    }
    if (unnamed) found.push_back(std::to_string(unnamed) + " more instances of its classes");
  }

  // 5. References to the module objects that nothing above explains.
  for (std::size_t i = 0; i < query.modules.size(); ++i) {
    PyObject* module = query.modules[i].second.ptr();
    std::int64_t extra = Py_REFCNT(module) - query.accounted_refs[i] - module_refs[module];
    if (extra > 0)
      found.push_back(std::to_string(extra) + " other reference" + (extra > 1 ? "s" : "") +
                      " to module '" + query.modules[i].first +
                      "' (from C++ or an object the scan does not reach)");
  }
  return found;
}

}  // namespace modhost::detail
