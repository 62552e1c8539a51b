#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/referrers.h"

#include <frameobject.h>

#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace py = pybind11;

namespace modhost::detail {
namespace {

constexpr std::size_t kMaxInstanceReports = 20;  // lines from the gc scan, then a count

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
    partial_type_ = py::module_::import("functools").attr("partial");
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
  // "functools.partial of function plug.hook", "module plug", or "" when
  // `value` is not the examined modules' code.
  std::string describe(PyObject* value) const {
    if (is_examined_module(value)) return "module " + module_name(value);
    if (PyFunction_Check(value) && is_examined_dict(PyFunction_GET_GLOBALS(value)))
      return "function " + qualified(value);
    // A decorator's wrapper made elsewhere still names the module it wraps
    // (functools.wraps copies __module__): read from the field, running no code.
    if (PyFunction_Check(value)) {
      PyObject* module = reinterpret_cast<PyFunctionObject*>(value)->func_module;  // borrowed
      if (module && PyUnicode_Check(module) && names_.count(PyUnicode_AsUTF8(module)))
        return "function " + qualified(value);
    }
    // partial's func is a read-only member (a subclass could make it run code: not looked at).
    if (Py_TYPE(value) == reinterpret_cast<PyTypeObject*>(partial_type_.ptr())) {
      py::object function = py::reinterpret_steal<py::object>(PyObject_GetAttrString(value, "func"));
      if (!function) PyErr_Clear();
      std::string inner = function ? describe(function.ptr()) : std::string();
      if (!inner.empty()) return "functools.partial of " + inner;
    }
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
    if (value == PyImport_GetModuleDict() || value == PyEval_GetBuiltins()) return {};  // accounted / shared by all
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
  py::object partial_type_;
};

bool is_container(PyObject* obj) {
  return PyList_Check(obj) || PyTuple_Check(obj) || PyDict_Check(obj) || PyAnySet_Check(obj);
}

// Adds `obj` and, for a container, the objects it holds directly.
void mark_with_items(PyObject* obj, std::unordered_set<PyObject*>& set) {
  set.insert(obj);
  if (!is_container(obj)) return;
  py::object items = PyDict_Check(obj) ? py::reinterpret_steal<py::object>(PyDict_Values(obj))
                                       : py::reinterpret_borrow<py::object>(obj);
  for (py::handle item : items) set.insert(item.ptr());
}

// gc.get_referrers(*objects), called without an argument tuple of our own:
// it skips the tuple its arguments arrive in, but since 3.13 (Argument
// Clinic) that is a copy, so a tuple built for the call (pybind11's *args)
// would show up as "a tuple" holding every object asked about.
py::list referrers_of(py::handle get_referrers, const std::vector<PyObject*>& objects) {
  PyObject* found = PyObject_Vectorcall(get_referrers.ptr(), objects.data(), objects.size(), nullptr);
  if (!found) throw py::error_already_set();
  return py::reinterpret_steal<py::list>(found);
}

std::vector<PyObject*> pointers(const py::list& objects) {
  std::vector<PyObject*> result;
  for (py::handle obj : objects) result.push_back(obj.ptr());
  return result;
}

// What the interpreter calls through a global of sys or threading, by the
// name a user sets it with; "" for any other global.
std::string hook_global(const std::string& module, const std::string& global) {
  static const std::map<std::pair<std::string, std::string>, std::string> names = {
      {{"sys", "excepthook"}, "sys.excepthook"},
      {{"sys", "unraisablehook"}, "sys.unraisablehook"},
      {{"sys", "displayhook"}, "sys.displayhook"},
      {{"sys", "breakpointhook"}, "sys.breakpointhook"},
      {{"threading", "excepthook"}, "threading.excepthook"},
      // threading.setprofile/settrace (and *_all_threads since 3.12) keep the
      // function for threads started later in these globals (3.11-3.13).
      {{"threading", "_profile_hook"}, "threading.setprofile hook"},
      {{"threading", "_trace_hook"}, "threading.settrace hook"},
  };
  auto it = names.find({module, global});
  return it == names.end() ? std::string() : it->second;
}

// Holders the interpreter itself calls and gc cannot see: signal handlers
// (a C array of the signal module), atexit callbacks (a C array), audit
// hooks (a list gc does not track) and each thread's profile and trace
// functions (fields of its thread state). Unloading a module whose code one
// of them still holds would leave the old code running when the signal
// arrives, the process exits, or the next call is traced.
void find_interpreter_hooks(const referrer_query& query, const ownership& owned, std::vector<std::string>& found,
                            std::unordered_set<PyObject*>& reported) {
  auto note = [&](py::handle hook, const std::string& holder) {
    std::string what = owned.describe(hook.ptr());
    if (what.empty()) return;
    mark_with_items(hook.ptr(), reported);  // a partial in there is named here, not again by the gc scan
    found.push_back(holder + " (" + what + ")");
  };

  // signal.getsignal reads every handler, whichever thread or module set it.
  py::module_ signal = py::module_::import("signal");
  py::object getsignal = signal.attr("getsignal");
  py::object signals = signal.attr("Signals");
  for (py::handle number : signal.attr("valid_signals")()) {
    py::object handler = py::reinterpret_steal<py::object>(PyObject_CallOneArg(getsignal.ptr(), number.ptr()));
    if (!handler) {
      PyErr_Clear();
      continue;
    }
    if (owned.describe(handler.ptr()).empty()) continue;
    py::object named = py::reinterpret_steal<py::object>(PyObject_CallOneArg(signals.ptr(), number.ptr()));
    std::string name = named ? str_attr(named, "name") : "signal " + py::str(number).cast<std::string>();
    if (!named) PyErr_Clear();
    note(handler, "signal handler for " + name);
  }

  if (query.atexit_callbacks)
    for (py::handle callback : query.atexit_callbacks()) note(callback, "atexit callback");

  if (query.audit_hooks) {
    py::object hooks = query.audit_hooks();
    if (!hooks.is_none()) {
      reported.insert(hooks.ptr());  // the interpreter's list, should a scan ever reach it
      for (py::handle hook : hooks) note(hook, "audit hook");
    }
  }

  // sys.setprofile/settrace set the calling thread's functions only, so
  // every thread state is read (the fields are public in 3.11-3.13's
  // cpython/pystate.h; they change only under the GIL, which we hold). They
  // are collected first, with no Python code run meanwhile: naming a thread
  // runs some, which lets other threads in, and one that ends frees its
  // thread state while the walk would still be on it.
  struct thread_hooks {
    long long ident;
    py::object profile, trace;
  };
  std::vector<thread_hooks> threads;
  for (PyThreadState* thread = PyInterpreterState_ThreadHead(PyInterpreterState_Get()); thread;
       thread = PyThreadState_Next(thread))
    if (thread->c_profileobj || thread->c_traceobj)
      threads.push_back({static_cast<long long>(thread->thread_id),
                         py::reinterpret_borrow<py::object>(thread->c_profileobj),
                         py::reinterpret_borrow<py::object>(thread->c_traceobj)});
  for (const auto& thread : threads) {
    std::string name = thread_name(thread.ident);
    if (thread.profile) note(thread.profile, "profile function of thread " + name);
    if (thread.trace) note(thread.trace, "trace function of thread " + name);
  }
}

}  // namespace

std::string thread_name(long long ident) {
  PyObject* threading = PyDict_GetItemString(PyImport_GetModuleDict(), "threading");
  if (!threading) return "tid " + std::to_string(ident);
  py::object thread = py::handle(threading).attr("_active").attr("get")(ident);
  if (thread.is_none()) return "tid " + std::to_string(ident);
  if (thread.is(py::handle(threading).attr("main_thread")())) return "main";
  return thread.attr("name").cast<std::string>();
}

std::vector<std::string> find_referrers(const referrer_query& query) {
  // typing's caches (Optional[Widget] and the key tuples that made it) keep
  // whatever class a hint named: a cache, not a holder. regrtest clears them
  // the same way between tests; they fill again on use.
  if (PyObject* typing = PyDict_GetItemString(PyImport_GetModuleDict(), "typing")) {  // borrowed
    py::object cleanups = py::reinterpret_steal<py::object>(PyObject_GetAttrString(typing, "_cleanups"));
    if (!cleanups) PyErr_Clear();
    if (cleanups && PyList_Check(cleanups.ptr())) {
      for (py::handle clear : py::list(cleanups)) {
        py::object result = py::reinterpret_steal<py::object>(PyObject_CallNoArgs(clear.ptr()));
        if (!result) PyErr_Clear();
      }
    }
  }
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
      mark_with_items(value, reported);  // what the module keeps itself is its own
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
      // The parent package's attribute for its submodule is the import
      // system's bookkeeping, not a holder: the query accounts for it (see
      // referrer_query::accounted_refs) and unload removes it with the module.
      if (owned.is_examined_module(value) && owned.module_name(value) == holder + "." + global) continue;
      if (owned.is_examined_module(value)) {
        ++module_refs[value];
        found.push_back("module '" + holder + "' global '" + global + "'");
        continue;
      }
      std::string what = owned.describe_value(value, module_refs);
      if (what.empty()) continue;
      mark_with_items(value, reported);
      std::string hook = hook_global(holder, global);
      found.push_back((hook.empty() ? "module '" + holder + "' global '" + global + "'" : hook) + " (" + what + ")");
    }
  }

  // 1b. What the interpreter calls: signal handlers, atexit, audit, profile and trace hooks.
  find_interpreter_hooks(query, owned, found, reported);

  // 2. Frames of every thread: running the modules' code, or holding it in a local.
  py::module_ sys = py::module_::import("sys");
  py::dict frames = sys.attr("_current_frames")();
  for (auto [ident, top] : frames) {
    std::string thread = thread_name(ident.cast<long long>());
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
      py::object frame_locals = frame.attr("f_locals");
      // Up to 3.12 f_locals is a dict the frame keeps from now on: a second
      // reference to each local. Since 3.13 (PEP 667) it is a view of the
      // fast locals, and the dict made from it here is gone before step 5.
      const std::int64_t references_per_local = PyDict_Check(frame_locals.ptr()) ? 2 : 1;
      py::dict locals(frame_locals);
      for (auto [local, value] : locals) {
        if (owned.is_examined_module(value.ptr())) {
          module_refs[value.ptr()] += references_per_local;
          found.push_back(where + " local '" + py::str(local).cast<std::string>() + "'");
          continue;
        }
        std::string what = owned.describe_value(value.ptr(), module_refs);
        if (!what.empty()) {
          mark_with_items(value.ptr(), reported);
          found.push_back(where + " local '" + py::str(local).cast<std::string>() + "' (" + what + ")");
        }
      }
    }
  }

  // 3. C++ handles: invisible to gc, so the cache tells us.
  for (const auto& handle : query.cpp_handles) found.push_back("C++ handle " + handle);

  // 4. The modules' code held anywhere else: a function in a list inside an
  // object, a functools.partial, a suspended generator, a subclass defined
  // elsewhere, an instance. Found through gc from the code's side: functions
  // whose globals are the modules' dicts, and the modules' classes.
  py::module_ gc = py::module_::import("gc");
  std::unordered_set<PyObject*> internal;  // the modules' own structure
  // Type hints in the modules' own annotations (Optional[Widget] holds
  // Widget in its __args__ tuple) are their own structure too.
  std::function<void(PyObject*, int)> mark_hint = [&](PyObject* hint, int depth) {
    if (depth > 4 || PyType_Check(hint) || !internal.insert(hint).second) return;
    std::string module = str_attr(reinterpret_cast<PyObject*>(Py_TYPE(hint)), "__module__");
    if (module != "typing" && module != "types") return;  // only the stdlib's own hint objects are asked
    PyObject* args = PyObject_GetAttrString(hint, "__args__");
    if (!args) {
      PyErr_Clear();
      return;
    }
    py::object owned_args = py::reinterpret_steal<py::object>(args);
    if (!PyTuple_Check(args)) return;
    internal.insert(args);
    for (py::handle arg : owned_args) mark_hint(arg.ptr(), depth + 1);
  };
  // A dict, or (a function whose __annotations__ nobody asked for yet) the
  // compiler's tuple of names and hints.
  auto mark_annotations = [&](PyObject* annotations) {
    if (!annotations || !(PyDict_Check(annotations) || PyTuple_Check(annotations))) return;
    internal.insert(annotations);
    py::object hints = PyDict_Check(annotations)
                           ? py::reinterpret_steal<py::object>(PyDict_Values(annotations))
                           : py::reinterpret_borrow<py::object>(annotations);
    for (py::handle hint : hints) mark_hint(hint.ptr(), 0);
  };
  // A function the modules keep (perhaps a decorator's wrapper from another
  // module): its closure cells, __dict__, defaults and annotations are theirs
  // too, down the __wrapped__ chain.
  auto mark_function_parts = [&](PyObject* value) {
    py::object obj = py::reinterpret_borrow<py::object>(value);
    if (PyObject_TypeCheck(value, &PyClassMethod_Type) || PyObject_TypeCheck(value, &PyStaticMethod_Type))
      obj = obj.attr("__func__");
    for (int depth = 0; depth < 8 && obj; ++depth) {
      // __wrapped__ only from an instance dict: asking an arbitrary global
      // for an attribute runs its code (werkzeug's LocalProxy evaluates itself).
      PyObject* own_dict = nullptr;
      if (PyFunction_Check(obj.ptr())) {
        auto* function = reinterpret_cast<PyFunctionObject*>(obj.ptr());
        for (PyObject* part : {function->func_closure, function->func_dict, function->func_defaults})
          if (part) mark_with_items(part, internal);
        mark_annotations(function->func_annotations);
        own_dict = function->func_dict;
      } else if (!PyType_Check(obj.ptr())) {  // a wrapper object (lru_cache...): its __dict__
        if (PyObject** dict = _PyObject_GetDictPtr(obj.ptr()); dict && *dict) {
          mark_with_items(*dict, internal);
          own_dict = *dict;
        }
      }
      PyObject* inner = own_dict && PyDict_Check(own_dict) ? PyDict_GetItemString(own_dict, "__wrapped__") : nullptr;
      obj = py::reinterpret_borrow<py::object>(inner);  // borrowed from the dict, or empty
    }
  };
  std::unordered_map<PyObject*, std::string> targets;
  py::list target_list;
  py::list dicts;
  for (const auto& [name, module] : query.modules) {
    PyObject* dict = PyModule_GetDict(module.ptr());
    dicts.append(dict);
    mark_with_items(dict, internal);
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(dict, &pos, &key, &value)) {
      mark_function_parts(value);
      if (!owned.owns_class(value)) continue;
      auto* type = reinterpret_cast<PyTypeObject*>(value);
      targets[value] = owned.describe(value);
      target_list.append(value);
      mark_with_items(type->tp_dict, internal);
      mark_annotations(PyDict_GetItemString(type->tp_dict, "__annotations__"));
      internal.insert(type->tp_mro);
      internal.insert(type->tp_bases);
      for (py::handle member : py::reinterpret_borrow<py::dict>(type->tp_dict).attr("values")()) {
        mark_function_parts(member.ptr());
        if (PyObject_TypeCheck(member.ptr(), &PyClassMethod_Type) ||
            PyObject_TypeCheck(member.ptr(), &PyStaticMethod_Type) ||
            PyObject_TypeCheck(member.ptr(), &PyProperty_Type))
          internal.insert(member.ptr());
      }
      // type.__subclasses__(cls), not cls.__subclasses__(): for a metaclass
      // (a subclass of type) the attribute lookup finds type's own unbound
      // method first, and calling it without an argument raises TypeError.
      py::list subclasses =
          py::handle(reinterpret_cast<PyObject*>(&PyType_Type)).attr("__subclasses__")(py::handle(value));
      for (py::handle sub : subclasses) {
        auto* subtype = reinterpret_cast<PyTypeObject*>(sub.ptr());
        internal.insert(subtype->tp_mro);
        internal.insert(subtype->tp_bases);
        if (!owned.owns_class(sub.ptr()))
          found.push_back(targets[value] + " subclassed by class " + str_attr(sub, "__module__") + "." +
                          str_attr(sub, "__qualname__"));
      }
    }
  }
  for (py::handle obj : referrers_of(gc.attr("get_referrers"), pointers(dicts))) {
    if (!PyFunction_Check(obj.ptr()) || !owned.is_examined_dict(PyFunction_GET_GLOBALS(obj.ptr()))) continue;
    auto* function = reinterpret_cast<PyFunctionObject*>(obj.ptr());
    targets[obj.ptr()] = owned.describe(obj.ptr());
    target_list.append(obj);
    for (PyObject* part : {function->func_closure, function->func_dict, function->func_defaults})
      if (part) mark_with_items(part, internal);
  }
  std::unordered_set<PyObject*> module_dicts;
  for (auto [key, module] : sys_modules)
    if (PyModule_Check(module.ptr())) module_dicts.insert(PyModule_GetDict(module.ptr()));

  std::set<std::string> held;  // one line per holder/target pair
  std::size_t unnamed = 0;
  auto holder_kind = [](PyObject* holder) {
    if (PyGen_Check(holder) || PyCoro_CheckExact(holder)) return std::string("a suspended ") + Py_TYPE(holder)->tp_name;
    return std::string("a ") + Py_TYPE(holder)->tp_name;
  };
  if (!target_list.empty()) {
    py::list all_holders = referrers_of(gc.attr("get_referrers"), pointers(target_list));
    for (py::handle holder : all_holders) {
      PyObject* h = holder.ptr();
      if (internal.count(h) || reported.count(h) || module_dicts.count(h) || targets.count(h) ||
          PyFrame_Check(h) || PyWeakref_Check(h) || h == target_list.ptr())
        continue;
      for (py::handle part : py::list(gc.attr("get_referents")(holder))) {
        auto target = targets.find(part.ptr());
        if (target == targets.end()) continue;
        std::string line;
        std::string instance = owned.describe(h);
        if (instance.rfind("instance of ", 0) == 0) {  // holds its class: find who holds it
          // Not the scan's own list of holders, nor a frame of the scan.
          PyObject* first = nullptr;
          for (py::handle by : referrers_of(gc.attr("get_referrers"), {h}))
            if (by.ptr() != all_holders.ptr() && !PyFrame_Check(by.ptr())) {
              first = by.ptr();
              break;
            }
          line = instance + " held by " + (first ? holder_kind(first) : std::string("C++ or an untracked object"));
        } else {
          line = target->second + " held by " + holder_kind(h);
        }
        if (held.size() >= kMaxInstanceReports) {
          ++unnamed;
        } else if (held.insert(line).second) {
          found.push_back(line);
        }
        break;
      }
    }
  }
  if (unnamed) found.push_back(std::to_string(unnamed) + " more holders of its code");

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
