// The eval-frame hook (PEP 523) receives CPython's _PyInterpreterFrame;
// interpreter_frame.h reads it, so this file needs no internal header.
#include "modules/internal/call_gate.h"

#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "modules/cpython/error_scope.h"
#include "modules/cpython/gil.h"
#include "modules/cpython/python_error.h"
#include "modules/cpython/reference.h"
#include "modules/cpython/time_limit.h"
#include "modules/internal/interpreter_frame.h"
#include "modules/internal/referrers.h"

namespace py = pybind11;

namespace modhost::detail {

std::atomic<bool> g_any_gate_closed{false};

namespace {

struct closed_module {
  py::object module;
  py::object namespace_;
  bool class_switched;  // we set its __class__ to the gated type
};

// The process's gates. Changed only with the GIL held; `changes` (under
// `mutex`) lets threads that wait without the GIL know when to look again.
struct gate_state {
  PyThreadState* owner = nullptr;  // the thread whose reload closed them
  unsigned long owner_ident = 0;   // its thread id, as importlib's module locks name owners
  std::vector<closed_module> closed;
  _PyFrameEvalFunction previous_eval = nullptr;
  PyObject* gated_type = nullptr;  // ModuleType subclass with waiting getattr/setattr
  // Threads started by the reload's own code while closed (wrap_thread_starts).
  std::vector<unsigned long> started;
  struct replaced_starter {
    py::object module;
    const char* attribute;
    py::object original;
  };
  std::vector<replaced_starter> replaced_starters;
  std::mutex mutex;
  std::condition_variable changed;
  std::uint64_t changes = 0;
};

gate_state& gates() {
  static gate_state* state = new gate_state;  // outlives every thread that might wait on it
  return *state;
}

bool is_closed(PyObject* namespace_) {
  for (const auto& m : gates().closed)
    if (m.namespace_.ptr() == namespace_) return true;
  return false;
}

// The calling thread runs code of a closed module somewhere up its stack.
bool runs_closed_code(PyThreadState* tstate) {
  for (py::object frame = steal(PyThreadState_GetFrame(tstate)); frame;) {  // new references
    auto* f = reinterpret_cast<PyFrameObject*>(frame.ptr());
    if (is_closed(steal(PyFrame_GetGlobals(f)).ptr())) return true;
    frame = steal(PyFrame_GetBack(f));
  }
  return false;
}

bool started_by_reload(unsigned long ident) {
  const auto& started = gates().started;
  return std::find(started.begin(), started.end(), ident) != started.end();
}

// Must the calling thread wait before it uses this namespace?
bool held_out(PyThreadState* tstate, PyObject* namespace_) {
  const gate_state& g = gates();
  return g.owner && g.owner != tstate && is_closed(namespace_) && !runs_closed_code(tstate) &&
         !started_by_reload(PyThread_get_thread_ident());
}

// Sleeps without the GIL until the gates change (or `at_most` passed).
// Called with the GIL, which is also what every change holds: a change
// cannot slip in between the caller's look at the state and `seen`.
void wait_for_change(std::chrono::milliseconds at_most = std::chrono::milliseconds::max()) {
  gate_state& g = gates();
  std::uint64_t seen;
  {
    std::lock_guard<std::mutex> lock(g.mutex);
    seen = g.changes;
  }
  gil_release released;
  std::unique_lock<std::mutex> lock(g.mutex);  // released before the GIL is taken again
  if (at_most == std::chrono::milliseconds::max())
    g.changed.wait(lock, [&] { return g.changes != seen; });
  else
    g.changed.wait_for(lock, at_most, [&] { return g.changes != seen; });
}

void announce_change() {
  gate_state& g = gates();
  {
    std::lock_guard<std::mutex> lock(g.mutex);
    ++g.changes;
  }
  g.changed.notify_all();
}

// Does the reloading thread wait, directly or through other threads, for a
// module lock that thread `me` holds? Then `me` is importing a module that
// the new code imports too (importlib's per-module locks), and holding `me`
// at the gate would leave both waiting for ever. importlib's own deadlock
// detection reads the same graph: _blocking_on maps a thread id to the lock
// it waits for (3.11) or a list of them (3.12 on), and a lock knows its owner.
bool reload_waits_for_import_of(unsigned long me) {
  PyObject* bootstrap = PyDict_GetItemString(PyImport_GetModuleDict(), "_frozen_importlib");  // borrowed
  if (!bootstrap) return false;
  error_scope keep;  // reading the graph runs Python code (3.12's _WeakValueDictionary)
  try {
    py::object blocking_on = py::getattr(bootstrap, "_blocking_on", py::none());
    if (blocking_on.is_none()) return false;
    std::vector<unsigned long> waiting{gates().owner_ident};
    std::vector<unsigned long> seen;
    while (!waiting.empty() && seen.size() < 64) {
      unsigned long thread = waiting.back();
      waiting.pop_back();
      if (std::find(seen.begin(), seen.end(), thread) != seen.end()) continue;
      seen.push_back(thread);
      py::object locks = blocking_on.attr("get")(thread);
      if (locks.is_none()) continue;
      if (!PyList_Check(locks.ptr())) locks = py::make_tuple(locks);
      for (py::handle lock : locks) {
        py::object owner = py::getattr(lock, "owner", py::none());
        if (!PyLong_Check(owner.ptr())) continue;
        unsigned long holder = owner.cast<unsigned long>();
        if (holder == me) return true;
        waiting.push_back(holder);
      }
    }
  } catch (py::error_already_set&) {
    PyErr_Clear();  // a layout this code does not know: hold the thread as before
  }
  return false;
}

// Does thread `me` own one of importlib's module locks (it is importing)?
// It cannot take or drop one while it is held.
bool holds_import_lock(unsigned long me) {
  PyObject* bootstrap = PyDict_GetItemString(PyImport_GetModuleDict(), "_frozen_importlib");  // borrowed
  if (!bootstrap) return false;
  error_scope keep;
  try {
    py::object locks = py::getattr(bootstrap, "_module_locks", py::none());
    if (!PyDict_Check(locks.ptr())) return false;
    for (auto [name, ref] : py::reinterpret_borrow<py::dict>(locks)) {
      py::object lock = py::reinterpret_borrow<py::object>(ref)();
      py::object owner = py::getattr(lock, "owner", py::none());
      if (PyLong_Check(owner.ptr()) && owner.cast<unsigned long>() == me) return true;
    }
  } catch (py::error_already_set&) {
    PyErr_Clear();
  }
  return false;
}

void wait_until_admitted(PyThreadState* tstate, PyObject* namespace_) {
  if (!held_out(tstate, namespace_)) return;
  const unsigned long me = PyThread_get_thread_ident();
  // A thread that holds a module lock is looked at again every few
  // milliseconds: the reloading thread starting to wait for that lock is no
  // change of the gates that would wake it.
  const bool importing = holds_import_lock(me);
  do {
    if (importing && reload_waits_for_import_of(me)) return;
    wait_for_change(importing ? std::chrono::milliseconds(5) : std::chrono::milliseconds::max());
  } while (held_out(tstate, namespace_));
}

// A frame built before a deep reload patched its function holds the old code
// object: call the function again with the same arguments, so the call runs
// the new code. The arguments are still as the call bound them (nothing of
// the frame ran). Null with an error if the call raised; `ran` false if the
// frame cannot be redone (then it runs as built).
PyObject* call_again(_PyInterpreterFrame* frame, PyObject* function, bool& ran) {
  ran = false;
  PyCodeObject* code = frame_code(frame);
  auto locals = [frame](int index) { return frame_fast_local(frame, index); };
  const int positional = code->co_argcount, keyword_only = code->co_kwonlyargcount;
  int next = positional + keyword_only;
  PyObject* varargs = (code->co_flags & CO_VARARGS) ? locals(next++) : nullptr;
  PyObject* varkw = (code->co_flags & CO_VARKEYWORDS) ? locals(next++) : nullptr;
  for (int i = 0; i < positional + keyword_only; ++i)
    if (!locals(i)) return nullptr;
  if ((varargs && !PyTuple_Check(varargs)) || (varkw && !PyDict_Check(varkw))) return nullptr;

  ran = true;
  try {  // no C++ exception may cross the interpreter's C frames
    Py_ssize_t extra = varargs ? PyTuple_GET_SIZE(varargs) : 0;
    py::tuple args(positional + extra);
    for (int i = 0; i < positional; ++i) PyTuple_SET_ITEM(args.ptr(), i, borrow(locals(i)).release().ptr());  // the tuple steals
    for (Py_ssize_t i = 0; i < extra; ++i)
      PyTuple_SET_ITEM(args.ptr(), positional + i, borrow(PyTuple_GET_ITEM(varargs, i)).release().ptr());
    py::dict kwargs;
    if (keyword_only) {
      // Arguments come first among the local variable names.
      py::tuple names = py::reinterpret_steal<py::tuple>(PyCode_GetVarnames(code));
      if (!names) return nullptr;
      for (int i = 0; i < keyword_only; ++i)
        if (PyDict_SetItem(kwargs.ptr(), names[positional + i].ptr(), locals(positional + i)) < 0)
          return nullptr;
    }
    if (varkw && PyDict_Update(kwargs.ptr(), varkw) < 0) return nullptr;
    return PyObject_Call(function, args.ptr(), kwargs.ptr());
  } catch (py::error_already_set& e) {
    e.restore();
    return nullptr;
  }
}

PyObject* gated_eval_frame(PyThreadState* tstate, _PyInterpreterFrame* frame, int throwflag) {
  gate_state& g = gates();
  _PyFrameEvalFunction run = g.previous_eval;
  PyObject* globals = frame_globals(frame);
  if (held_out(tstate, globals)) {
    wait_until_admitted(tstate, globals);
    PyObject* function = frame_function(frame);
    if (!throwflag && function && PyFunction_Check(function) && frame_not_started(frame) &&
        PyFunction_GetCode(function) != reinterpret_cast<PyObject*>(frame_code(frame))) {
      bool ran;
      PyObject* result = call_again(frame, function, ran);
      if (ran) return result;
      PyErr_Clear();
    }
  }
  return run(tstate, frame, throwflag);
}

PyObject* gated_getattro(PyObject* module, PyObject* name) {
  admit(PyModule_GetDict(module));
  return PyModule_Type.tp_getattro(module, name);
}

int gated_setattro(PyObject* module, PyObject* name, PyObject* value) {
  admit(PyModule_GetDict(module));
  return PyModule_Type.tp_setattro(module, name, value);
}

// A module whose code starts a thread and waits for it (a server that
// signals "ready" from its own function) would wait forever if that thread
// were held until the reload ends. So threads that the reloading thread, or a
// thread it started, starts while the gate is closed are let through: they
// belong to the new code. The functions that start threads are wrapped for
// that long: _thread.start_new_thread and threading's copy of it, and since
// 3.13, where threading.Thread.start uses it instead,
// _thread.start_joinable_thread (it returns a handle that knows the ident).
void wrap_thread_starts() {
  gate_state& g = gates();
  struct starter {
    const char* module;
    const char* attribute;
  };
  static const starter starters[] = {{"_thread", "start_new_thread"},
                                     {"threading", "_start_new_thread"},
                                     {"_thread", "start_joinable_thread"},
                                     {"threading", "_start_joinable_thread"}};
  PyObject* modules = PyImport_GetModuleDict();
  for (const starter& s : starters) {
    PyObject* module = PyDict_GetItemString(modules, s.module);
    if (!module || !PyObject_HasAttrString(module, s.attribute)) continue;
    py::object holder = py::reinterpret_borrow<py::object>(module);
    py::object original = holder.attr(s.attribute);
    py::cpp_function start([original](py::args args, py::kwargs kwargs) {
      py::object started = original(*args, **kwargs);
      gate_state& g = gates();
      if (g.owner == PyThreadState_Get() || started_by_reload(PyThread_get_thread_ident())) {
        py::object ident = PyLong_Check(started.ptr()) ? started : started.attr("ident");
        g.started.push_back(ident.cast<unsigned long>());
        announce_change();  // the thread may be held already: let it look again
      }
      return started;
    });
    g.replaced_starters.push_back({holder, s.attribute, original});
    holder.attr(s.attribute) = start;
  }
}

void unwrap_thread_starts() {
  gate_state& g = gates();
  for (const auto& starter : g.replaced_starters)
    if (PyObject_SetAttrString(starter.module.ptr(), starter.attribute, starter.original.ptr()) < 0)
      PyErr_Clear();
  g.replaced_starters.clear();
  g.started.clear();
}

PyObject* gated_module_type() {
  gate_state& g = gates();
  if (!g.gated_type) {
    static PyType_Slot slots[] = {{Py_tp_getattro, reinterpret_cast<void*>(gated_getattro)},
                                  {Py_tp_setattro, reinterpret_cast<void*>(gated_setattro)},
                                  {0, nullptr}};
    // Named "module" so that repr() and type() errors read as usual.
    static PyType_Spec spec = {"builtins.module", 0, 0, Py_TPFLAGS_DEFAULT, slots};
    g.gated_type = PyType_FromSpecWithBases(&spec, reinterpret_cast<PyObject*>(&PyModule_Type));
    if (!g.gated_type) throw py::error_already_set();
  }
  return g.gated_type;
}

// "thread worker frame plug.loop (line 12)" for each other thread that runs
// code of the gates closed from index `from` on.
std::vector<std::string> running_elsewhere(std::size_t from) {
  std::vector<std::string> found;
  const auto& closed = gates().closed;
  py::dict frames = py::module_::import("sys").attr("_current_frames")();
  const long long me = static_cast<long long>(PyThread_get_thread_ident());
  for (auto [ident, top] : frames) {
    if (ident.cast<long long>() == me) continue;
    for (py::object frame = py::reinterpret_borrow<py::object>(top); !frame.is_none();
         frame = frame.attr("f_back")) {
      PyObject* globals = frame.attr("f_globals").ptr();
      if (std::none_of(closed.begin() + static_cast<std::ptrdiff_t>(from), closed.end(),
                       [&](const closed_module& m) { return m.namespace_.ptr() == globals; }))
        continue;
      py::dict ns = frame.attr("f_globals");
      found.push_back("thread " + thread_name(ident.cast<long long>()) + " frame " +
                      py::str(ns.attr("get")("__name__", "?")).cast<std::string>() + "." +
                      frame.attr("f_code").attr("co_qualname").cast<std::string>() + " (line " +
                      std::to_string(frame.attr("f_lineno").cast<long>()) + ")");
      break;
    }
  }
  return found;
}

}  // namespace

closed_gate::closed_gate(const std::vector<py::object>& modules, std::chrono::milliseconds wait) {
  gate_state& g = gates();
  PyThreadState* me = PyThreadState_Get();
  while (g.owner && g.owner != me) wait_for_change();  // another thread's reload goes first
  PyObject* gated_type = gated_module_type();

  mark_ = g.closed.size();
  if (!g.owner) {
    // A layout that no longer matches the running libpython would read the
    // frames the hook is given wrongly: refuse loudly, before installing it.
    static const std::string layout_mismatch = frame_layout_mismatch();
    if (!layout_mismatch.empty()) throw error(layout_mismatch);
    g.owner = me;
    g.owner_ident = PyThread_get_thread_ident();
    g.previous_eval = _PyInterpreterState_GetEvalFrameFunc(PyThreadState_GetInterpreter(me));
    _PyInterpreterState_SetEvalFrameFunc(PyThreadState_GetInterpreter(me), gated_eval_frame);
    g_any_gate_closed = true;
  }
  try {
    if (mark_ == 0) wrap_thread_starts();
    close(modules, gated_type, wait);
  } catch (...) {
    open();
    throw;
  }
}

void closed_gate::close(const std::vector<py::object>& modules, PyObject* gated_type,
                        std::chrono::milliseconds wait) {
  gate_state& g = gates();
  for (const auto& module : modules) {
    PyObject* m = module.ptr();
    g.closed.push_back({module, borrow(PyModule_GetDict(m)), false});
    if (Py_TYPE(m) == &PyModule_Type) {
      if (PyObject_SetAttrString(m, "__class__", gated_type) == 0)
        g.closed.back().class_switched = true;
      else
        PyErr_Clear();  // calls are still held; attribute reads are not
    }
  }

  // Calls already running in other threads finish on the old version first.
  const auto deadline = deadline_after(wait);  // milliseconds::max(): as long as they run
  for (;;) {
    busy_ = running_elsewhere(mark_);
    if (busy_.empty()) return;
    if (std::chrono::steady_clock::now() >= deadline) break;
    gil_release released;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  open();
}

closed_gate::~closed_gate() { open(); }

void closed_gate::open() {
  if (open_) return;
  open_ = true;
  gate_state& g = gates();
  error_scope in_flight;  // an exception on its way out must survive
  while (g.closed.size() > mark_) {
    closed_module m = std::move(g.closed.back());
    g.closed.pop_back();
    if (m.class_switched && Py_TYPE(m.module.ptr()) == reinterpret_cast<PyTypeObject*>(g.gated_type) &&
        PyObject_SetAttrString(m.module.ptr(), "__class__", reinterpret_cast<PyObject*>(&PyModule_Type)) < 0)
      PyErr_Clear();  // cannot happen: the layouts are the same
  }
  if (g.closed.empty() && mark_ == 0) {
    PyThreadState* me = PyThreadState_Get();
    PyInterpreterState* interp = PyThreadState_GetInterpreter(me);
    if (_PyInterpreterState_GetEvalFrameFunc(interp) == gated_eval_frame)
      _PyInterpreterState_SetEvalFrameFunc(interp, g.previous_eval);
    g.owner = nullptr;
    g_any_gate_closed = false;
    unwrap_thread_starts();
  }
  announce_change();
}

void admit(PyObject* module_namespace) {
  if (!any_gate_closed()) return;
  wait_until_admitted(PyThreadState_Get(), module_namespace);
}

}  // namespace modhost::detail
