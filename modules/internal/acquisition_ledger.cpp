#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/acquisition_ledger.h"

#include <algorithm>
#include <exception>
#include <iterator>
#include <utility>

#include "modules/cpython/error_scope.h"
#include "modules/cpython/python_error.h"

namespace py = pybind11;

namespace modhost::detail {

namespace {

// Runs `step`; if it throws, the failure becomes a line in `errors` and goes
// to sys.unraisablehook (printed with its traceback unless a hook says
// otherwise), so it is reported, never swallowed, and never stops the caller.
template <class Step>
void run_reporting(Step&& step, const std::string& label, std::vector<std::string>& errors) {
  try {
    step();
    return;
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const python_error& e) {
    e.restore();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  } catch (...) {
    PyErr_SetString(PyExc_RuntimeError, "an unknown C++ exception");
  }
  python_error error = python_error::fetch();
  errors.push_back(label + ": " + error.what());
  error.restore();
  py::str context(label);
  PyErr_WriteUnraisable(context.ptr());  // clears the error
}

void release_newest_first(std::vector<acquisition>& items, const std::string& during,
                          std::vector<std::string>& errors) {
  error_scope keep;  // an exception on its way out (a rollback) stays what the caller sees
  for (auto it = items.rbegin(); it != items.rend(); ++it)
    run_reporting(it->release, "release of " + it->description + " (" + during + ")", errors);
}

}  // namespace

void acquisition_ledger::record(acquisition item) {
  item.order = next_order_++;
  auto& items = live_[item.module];
  items.push_back(std::move(item));
}

std::vector<acquisition> acquisition_ledger::take(const std::vector<std::string>& modules) {
  std::vector<acquisition> taken;
  for (const auto& name : modules) {
    auto it = live_.find(name);
    if (it == live_.end()) continue;
    for (auto& item : it->second) taken.push_back(std::move(item));
    live_.erase(it);
  }
  std::sort(taken.begin(), taken.end(),
            [](const acquisition& a, const acquisition& b) { return a.order < b.order; });
  return taken;
}

void acquisition_ledger::put_back(std::vector<acquisition> items) {
  for (auto& item : items) {
    auto& list = live_[item.module];
    auto at = std::upper_bound(list.begin(), list.end(), item.order,
                               [](std::uint64_t order, const acquisition& a) { return order < a.order; });
    list.insert(at, std::move(item));
  }
}

std::vector<std::string> acquisition_ledger::describe(const std::string& module) const {
  std::vector<std::string> lines;
  auto it = live_.find(module);
  if (it != live_.end())
    for (const auto& item : it->second) lines.push_back(item.description);
  return lines;
}

std::vector<std::string> acquisition_ledger::holders_under(const std::string& name) const {
  std::vector<std::string> names;
  const std::string prefix = name + ".";
  for (const auto& [module, items] : live_)
    if (!items.empty() && (module == name || module.compare(0, prefix.size(), prefix) == 0)) names.push_back(module);
  return names;
}

std::vector<std::string> acquisition_ledger::holders() const {
  std::vector<std::string> names;
  for (const auto& [module, items] : live_)
    if (!items.empty()) names.push_back(module);
  return names;
}

std::vector<acquisition> acquisition_ledger::take_orphans(const std::set<std::string>& skip) {
  std::vector<acquisition> taken;
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  for (auto it = live_.begin(); it != live_.end();) {
    auto& items = it->second;
    if (!skip.count(it->first)) {
      PyObject* current = PyDict_GetItemString(modules, it->first.c_str());  // borrowed
      auto orphaned = [&](const acquisition& item) {
        if (!current || !PyModule_Check(current)) return true;
        if (!item.owner) return false;
        py::object target = item.owner();  // the module, or None once it died
        return target.ptr() != current;
      };
      std::vector<acquisition> kept;
      for (auto& item : items) (orphaned(item) ? taken : kept).push_back(std::move(item));
      items = std::move(kept);
    }
    it = items.empty() ? live_.erase(it) : std::next(it);
  }
  std::sort(taken.begin(), taken.end(),
            [](const acquisition& a, const acquisition& b) { return a.order < b.order; });
  return taken;
}

void release_orphans(acquisition_ledger& ledger, const std::set<std::string>& skip) {
  std::vector<acquisition> items = ledger.take_orphans(skip);
  if (items.empty()) return;
  std::vector<std::string> errors;
  release_newest_first(items, "'" + items.front().module + "' is no longer in sys.modules", errors);
}

void release_all(acquisition_ledger& ledger, const std::string& during) {
  std::vector<acquisition> items = ledger.take(ledger.holders());
  std::vector<std::string> errors;
  release_newest_first(items, during, errors);
}

released_acquisitions::released_acquisitions(acquisition_ledger& ledger, std::vector<std::string> modules,
                                             std::string during)
    : ledger_(ledger), modules_(std::move(modules)), during_(std::move(during)) {
  old_ = ledger_.take(modules_);
  release_newest_first(old_, during_, errors_);
}

released_acquisitions::~released_acquisitions() {
  if (settled_) return;
  release_new();
  restore();
}

void released_acquisitions::release_new() {
  if (settled_ || new_released_) return;
  new_released_ = true;
  std::vector<acquisition> fresh = ledger_.take(modules_);
  release_newest_first(fresh, during_ + ", rolled back", errors_);
}

void released_acquisitions::restore() {
  if (settled_) return;
  settled_ = true;
  reacquire(std::move(old_), "rolled back");
  old_.clear();
}

void released_acquisitions::give_back(const std::vector<std::string>& modules) {
  if (settled_ || modules.empty()) return;
  auto given = [&](const std::string& name) { return std::find(modules.begin(), modules.end(), name) != modules.end(); };
  std::vector<acquisition> back, kept;
  for (auto& item : old_) (given(item.module) ? back : kept).push_back(std::move(item));
  old_ = std::move(kept);
  modules_.erase(std::remove_if(modules_.begin(), modules_.end(), given), modules_.end());
  reacquire(std::move(back), "its code did not re-run");
}

void released_acquisitions::reacquire(std::vector<acquisition> items, const char* why) {
  error_scope keep;
  std::vector<acquisition> again;
  for (auto& item : items) {
    bool made = true;
    run_reporting(
        [&] {
          try {
            item.reacquire();
          } catch (...) {
            made = false;  // nothing was acquired: there is nothing to release later
            throw;
          }
        },
        "acquiring again " + item.description + " (" + during_ + ", " + why + ")", errors_);
    if (made) again.push_back(std::move(item));
  }
  ledger_.put_back(std::move(again));
}

void released_acquisitions::keep() noexcept { settled_ = true; }

}  // namespace modhost::detail
