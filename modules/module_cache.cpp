#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/module_cache.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>

#include "modules/cpython/log.h"
#include "modules/cpython/time_limit.h"
#include "modules/cpython/translate_errors.h"
#include "modules/internal/acquisition_ledger.h"
#include "modules/internal/import_graph.h"
#include "modules/internal/import_hook.h"
#include "modules/internal/python_helpers.h"
#include "modules/internal/registry.h"
#include "modules/internal/reload_transaction.h"
#include "modules/internal/request_checks.h"
#include "modules/internal/unload.h"

namespace py = pybind11;

namespace modhost {

using detail::cache_entry;

namespace {

// translate_errors, counted: the autoreloader's pending call can fire at any
// bytecode boundary, also inside Python code a cache call runs (its helpers,
// a module's __unload__); it must not reload modules under that call. The
// count also keeps entries forgotten meanwhile alive until the call ends.
template <class Fn>
decltype(auto) cache_call(detail::registry& modules, Fn&& fn) {
  detail::registry::call_scope counted(modules);
  return translate_errors(std::forward<Fn>(fn));
}

}  // namespace

// The pieces the facade composes, in the order they are built (and torn
// down in reverse: the hook goes before the registry it reports to).
class module_cache::impl {
 public:
  explicit impl(const cache_options& options)
      : modules(helpers, graph), hook(helpers, modules, options) {
    hook.after_failed_import([this] { detail::release_orphans(acquisitions, modules.reloading()); });
  }

  detail::python_helpers helpers;
  import_graph graph;
  detail::registry modules;
  detail::acquisition_ledger acquisitions;
  detail::import_hook hook;
  std::map<std::uint64_t, reload_callback> subscribers;
  std::uint64_t next_subscriber = 1;
  std::string last_deferral;  // the targets and the reason of the deferral told last

  detail::reload_context reload_context() { return {modules, helpers, hook, acquisitions}; }

  // Subscribers hear what happened to code: reloaded, failed (rolled back)
  // or deferred. Nothing ran for unchanged or not-reloadable modules; a
  // deferral the autoreloader meets again at every safe point is told once.
  void tell_subscribers(const reload_report& report) {
    if (report.outcome == reload_outcome::unchanged || report.outcome == reload_outcome::not_reloadable) return;
    if (report.outcome == reload_outcome::deferred) {
      std::string deferral = join(report.targets, ", ") + " | " + report.deferred_by;
      if (deferral == last_deferral) return;
      last_deferral = std::move(deferral);
    } else {
      last_deferral.clear();
    }
    for (auto& [id, callback] : std::map<std::uint64_t, reload_callback>(subscribers)) {
      try {
        callback(report);
      } catch (const std::exception& e) {
        log_line(std::string("[modhost] reload subscriber failed: ") + e.what());
      }
    }
  }
};

module_cache::module_cache(const cache_options& options) : impl_(std::make_unique<impl>(options)) {}

// What is still acquired when the cache goes (what an atexit callback
// acquired after unload_at_exit, modules/shutdown.h) is released while Python
// still runs: a host's C++ objects must not hold Python past finalization.
module_cache::~module_cache() { detail::release_all(impl_->acquisitions, "exit"); }

bool module_cache::at_safe_point() const noexcept {
  return impl_->hook.idle() && !impl_->modules.in_call() && impl_->modules.reloading().empty();
}

std::uint64_t module_cache::tracking_revision() const noexcept { return impl_->modules.tracking_revision(); }

py::object module_cache::find(const std::string& name) {
  cache_entry* entry = impl_->modules.lookup(name);
  return entry ? entry->module : py::object();
}

py::object module_cache::load(const std::string& name, std::chrono::milliseconds limit) {
  if (cache_entry* entry = impl_->modules.lookup(name)) return entry->module;
  return cache_call(impl_->modules, [&] {
    impl_->hook.settle();  // imports since the last call become entries and edges
    detail::check_name(name);
    std::optional<time_limit> guard;
    if (limit.count() > 0) guard.emplace(limit);
    py::object module = py::module_::import("importlib").attr("import_module")(name);
    impl_->modules.lookup(name);
    return module;
  });
}

reload_report module_cache::reload(const std::string& name, reload_options options) {
  return reload(std::vector<std::string>{name}, std::move(options));
}

reload_report module_cache::reload(const std::vector<std::string>& names, reload_options options) {
  return cache_call(impl_->modules, [&] {
    impl_->hook.settle();
    reload_report report = detail::reload(impl_->reload_context(), names, options);
    impl_->tell_subscribers(report);
    return report;
  });
}

reload_report module_cache::reload(py::handle module, reload_options options) {
  return reload(name_of(module), options);
}

std::string module_cache::name_of(py::handle module) {
  return cache_call(impl_->modules, [&] {
    impl_->hook.settle();
    if (!module || !PyModule_Check(module.ptr()))
      detail::raise_error(PyExc_TypeError, "reload() argument must be a module");
    py::object spec = py::getattr(module, "__spec__", py::none());
    std::string name = spec.is_none() ? py::str(module.attr("__name__")).cast<std::string>()
                                      : py::str(spec.attr("name")).cast<std::string>();
    if (PyDict_GetItemString(PyImport_GetModuleDict(), name.c_str()) != module.ptr())
      detail::raise_import_error(PyExc_ImportError, "module " + name + " not in sys.modules", name);
    return name;
  });
}

unload_report module_cache::unload(const std::string& name, bool force) {
  return cache_call(impl_->modules, [&] {
    impl_->hook.settle();
    // What the modules acquired from the host goes first, so that the host's
    // hold on their code (a registered handler, a thread) is not a holder; an
    // unload refused after this (a holder, an audit veto, __unload__ raising)
    // acquires it all again. A module being reloaded is refused untouched.
    std::vector<std::string> owners = impl_->acquisitions.holders_under(name);
    std::optional<detail::released_acquisitions> released;
    if (std::none_of(owners.begin(), owners.end(), [&](const auto& n) { return impl_->modules.reloading().count(n); }))
      released.emplace(impl_->acquisitions, owners, "unload of '" + name + "'");
    unload_report report = detail::unload(impl_->modules, impl_->helpers, name, force);
    if (released) {
      report.acquisition_errors = released->errors();
      released->keep();
    }
    return report;
  });
}

std::int64_t module_cache::refcount(const std::string& name) {
  return cache_call(impl_->modules, [&] {
    impl_->hook.settle();
    return detail::refcount(impl_->modules, name);
  });
}

std::vector<std::string> module_cache::referrers(const std::string& name) {
  return cache_call(impl_->modules, [&] {
    impl_->hook.settle();
    return detail::referrers(impl_->modules, name);
  });
}

bool module_cache::is_changed(const std::string& name) {
  return cache_call(impl_->modules, [&] {
    impl_->hook.settle();
    return impl_->modules.is_changed(*impl_->modules.require(name));
  });
}

std::vector<std::string> module_cache::changed() {
  return cache_call(impl_->modules, [&] {
    impl_->hook.settle();
    std::vector<std::string> names;
    for (const auto& name : impl_->modules.names())
      if (cache_entry* entry = impl_->modules.lookup(name); entry && impl_->modules.is_changed(*entry))
        names.push_back(name);
    return names;
  });
}

std::vector<std::string> module_cache::dependencies(const std::string& name) {
  return cache_call(impl_->modules, [&] {
    impl_->hook.settle();
    impl_->modules.require(name);
    const auto& deps = impl_->graph.dependencies(name);
    return std::vector<std::string>(deps.begin(), deps.end());
  });
}

std::vector<std::string> module_cache::dependents(const std::string& name) {
  return cache_call(impl_->modules, [&] {
    impl_->hook.settle();
    impl_->modules.require(name);
    const auto& users = impl_->graph.dependents(name);
    return std::vector<std::string>(users.begin(), users.end());
  });
}

std::unordered_map<std::string, std::vector<std::string>> module_cache::from_imports(const std::string& importer) {
  return cache_call(impl_->modules, [&] {
    impl_->hook.settle();
    detail::check_module_name(importer);  // a megabyte-long name is refused without being repeated
    impl_->modules.require(importer);     // as dependencies(): a module never imported is an error, not {}
    std::unordered_map<std::string, std::vector<std::string>> result;
    for (const auto& [module, names] : impl_->graph.from_imports(importer))
      result[module].assign(names.begin(), names.end());
    return result;
  });
}

module_info module_cache::info(const std::string& name) {
  return cache_call(impl_->modules, [&] {
    impl_->hook.settle();
    cache_entry& entry = *impl_->modules.require(name);
    module_info info;
    info.name = entry.name;
    info.path = entry.path;
    info.kind = entry.kind;
    info.state = entry.state;
    info.generation = entry.generation;
    info.reloadable = is_reloadable(entry.kind) && !detail::refusal_reason(name);
    info.fingerprint = entry.print;
    info.last_error = entry.last_error;
    const auto& deps = impl_->graph.dependencies(name);
    const auto& users = impl_->graph.dependents(name);
    info.dependencies.assign(deps.begin(), deps.end());
    info.dependents.assign(users.begin(), users.end());
    return info;
  });
}

std::vector<module_info> module_cache::entries() {
  std::vector<module_info> infos;
  for (const auto& name : modules()) infos.push_back(info(name));
  return infos;
}

std::vector<std::string> module_cache::modules() {
  return cache_call(impl_->modules, [&] {
    impl_->hook.settle();
    return impl_->modules.names();
  });
}

std::uint64_t module_cache::subscribe(reload_callback callback) {
  std::uint64_t id = impl_->next_subscriber++;
  impl_->subscribers.emplace(id, std::move(callback));
  return id;
}

void module_cache::unsubscribe(std::uint64_t id) { impl_->subscribers.erase(id); }

std::uint64_t module_cache::add_tracking_listener(std::function<void()> listener) {
  std::uint64_t id = impl_->next_subscriber++;
  impl_->modules.tracking_listeners().emplace(id, std::move(listener));
  return id;
}

void module_cache::remove_tracking_listener(std::uint64_t id) { impl_->modules.tracking_listeners().erase(id); }

detail::registry& module_cache::registry() noexcept { return impl_->modules; }

detail::acquisition_ledger& module_cache::acquisitions() noexcept { return impl_->acquisitions; }

}  // namespace modhost
