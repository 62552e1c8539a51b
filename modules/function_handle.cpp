#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/function_handle.h"

#include <algorithm>

#include "modules/cpython/translate_errors.h"
#include "modules/internal/call_gate.h"
#include "modules/internal/handle_safe_point.h"
#include "modules/internal/registry.h"
#include "modules/internal/request_checks.h"
#include "modules/module_cache.h"

namespace py = pybind11;

namespace modhost {

namespace detail {

std::atomic<bool> g_handle_safe_point_wanted{false};

namespace {
std::atomic<handle_safe_point_hook> g_hook{nullptr};
std::atomic<unsigned long> g_hook_thread{0};
}  // namespace

void set_handle_safe_point_hook(handle_safe_point_hook hook, unsigned long main_thread) {
  g_hook_thread = main_thread;
  g_hook = hook;
  if (!hook) g_handle_safe_point_wanted = false;
}

void offer_handle_safe_point() {
  handle_safe_point_hook hook = g_hook.load();
  if (!hook || PyEval_GetFrame() || PyThread_get_thread_ident() != g_hook_thread.load()) return;
  if (hook(nullptr) != 0) throw python_error::fetch();
}

}  // namespace detail

function_handle::function_handle(module_cache& cache, std::string module, std::string attribute)
    : slot_(std::make_shared<detail::handle_slot>()) {
  slot_->cache = &cache.registry();
  slot_->module = std::move(module);
  slot_->attribute = std::move(attribute);
  slot_->cache->handles().push_back(slot_.get());
}

function_handle::~function_handle() {
  if (slot_->cache) {
    auto& handles = slot_->cache->handles();
    handles.erase(std::remove(handles.begin(), handles.end(), slot_.get()), handles.end());
  }
}

const std::string& function_handle::module_name() const noexcept { return slot_->module; }
const std::string& function_handle::attribute() const noexcept { return slot_->attribute; }

py::object function_handle::current() {
  detail::handle_slot& slot = *slot_;
  // The interpreter is gone (an application that keeps a handle past it):
  // no Python may be touched, not even to raise an exception.
  if (!slot.cache && !Py_IsInitialized())
    throw error("C++ handle " + slot.module + "." + slot.attribute + ": the interpreter is gone");
  if (detail::handle_safe_point_wanted()) detail::offer_handle_safe_point();
  if (detail::any_gate_closed() && slot.cache)  // another thread may be reloading it: wait for the new version
    if (detail::cache_entry* entry = slot.cache->find_tracked(slot.module))
      detail::admit(PyModule_GetDict(entry->module.ptr()));
  if (slot.function && slot.revision && *slot.revision == slot.seen_revision) return slot.function;
  return translate_errors([&] {
    std::string label = "C++ handle " + slot.module + "." + slot.attribute;
    if (!slot.cache) detail::raise_error(PyExc_RuntimeError, label + ": the interpreter's cache is gone");
    slot.function = py::object();
    detail::cache_entry* entry = slot.cache->lookup(slot.module);
    if (!entry)
      detail::raise_import_error(PyExc_ImportError, "module '" + slot.module + "' is not loaded (" + label + ")",
                                 slot.module);
    if (!py::hasattr(entry->module, slot.attribute.c_str()))
      detail::raise_error(PyExc_AttributeError, "module '" + slot.module + "' has no attribute '" +
                                                    slot.attribute + "' (" + label + ")");
    slot.revision = entry->revision;
    slot.seen_revision = *entry->revision;
    slot.function = entry->module.attr(slot.attribute.c_str());
    return slot.function;
  });
}

}  // namespace modhost
