#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/reload_transaction.h"

#include <algorithm>
#include <chrono>
#include <tuple>

#include "modules/cpython/reference.h"
#include "modules/cpython/translate_errors.h"
#include "modules/internal/import_hook.h"
#include "modules/internal/python_helpers.h"
#include "modules/internal/registry.h"
#include "modules/internal/request_checks.h"

namespace py = pybind11;

namespace modhost::detail {

namespace {
// run_code() found the source mid-save (reload_options::quiet_for).
struct file_in_flux {};
}  // namespace

struct reload_transaction::snapshot {
  cache_entry* entry;
  py::object module;
  py::dict namespace_copy;
  std::optional<import_graph::node_state> edges;  // taken when its code runs
};

struct reload_transaction::pending_commit {
  cache_entry* entry;
  py::object module;
  py::object code;
  std::optional<fingerprint> print;
  module_kind kind;
  std::filesystem::path path;
  py::object deep_update;  // the DeepUpdate that patched live objects, for commit()
};

reload_transaction::reloading_marks::reloading_marks(registry& modules, std::vector<cache_entry*> order)
    : modules(modules), order(std::move(order)) {
  for (auto* entry : this->order)
    if (modules.reloading().insert(entry->name).second) marked.push_back(entry->name);
}

reload_transaction::reloading_marks::~reloading_marks() {
  for (const auto& name : marked) modules.reloading().erase(name);
}

reload_transaction::reload_transaction(const reload_context& context, const std::string& target,
                                       std::vector<cache_entry*> order, const reload_options& options,
                                       std::vector<std::string> targets)
    : context_(context),
      options_(options),
      target_(target),
      targets_(std::move(targets)),
      marks_(context.modules, std::move(order)) {
  undo_ = context_.helpers->undo();
  // What the modules acquired from the host is released first, newest first:
  // a thread started through modhost.acquire stops (and frees its port)
  // before the gate waits for threads and before the new code starts another.
  std::vector<std::string> names;
  for (auto* entry : marks_.order) names.push_back(entry->name);
  released_.emplace(context_.acquisitions, std::move(names), "reload of '" + target + "'");
  if (options_.wait_for_calls) {
    std::vector<py::object> modules;
    for (auto* entry : marks_.order) modules.push_back(entry->module);
    gate_.emplace(modules, *options_.wait_for_calls);
    if (!gate_->busy().empty())
      throw module_in_use_error(target, gate_->busy(),
                                "cannot reload '" + target + "': other threads still run its code after waiting " +
                                    std::to_string(options_.wait_for_calls->count()) +
                                    " ms: " + join(gate_->busy(), "; ") +
                                    " (let those calls return, or reload with a longer wait_for_calls; a thread "
                                    "the module starts itself is stopped by each reload and started again by the "
                                    "new code if it is started through modhost.acquire(start, stop))");
  }
  if (options_.time_limit.count() > 0) limit_.emplace(options_.time_limit);
}

reload_transaction::~reload_transaction() {
  limit_.reset();
  if (!committed_) rollback();
  // Then the members go: the gate opens, the reloading marks are cleared.
}

reload_transaction::run_result reload_transaction::run(reload_report& report) {
  report_ = &report;
  run_result result = run_result::ran;
  try {
    // Every namespace is copied before any code runs: a deep update rebinds
    // the `from m import x` names of m's importers, dependents that run after
    // m among them, and a rollback must give those back their old objects too.
    for (auto* entry : marks_.order) {
      py::dict copy = py::reinterpret_steal<py::dict>(PyDict_Copy(entry->module.attr("__dict__").ptr()));
      if (!copy) throw py::error_already_set();
      snapshots_.push_back({entry, entry->module, copy, std::nullopt});
    }
    const bool as_needed = options_.deep && options_.dependents_as_needed && !targets_.empty();
    for (auto& before : snapshots_) {
      cache_entry* entry = before.entry;
      bool target = std::find(targets_.begin(), targets_.end(), entry->name) != targets_.end();
      if (as_needed && !target && !needs_rerun(*entry)) {
        // Its namespace snapshot stays: a rebound from-import is undone
        // with the rest if the set rolls back.
        spared_.push_back(entry->name);
        report.spared.push_back(entry->name);
        continue;
      }
      before.edges = context_.modules.graph().take_outgoing(entry->name);
      entry->state = module_state::reloading;
      report.reexecuted.push_back(entry->name);
      try {
        commits_.push_back(run_code(*entry, before, report));
      } catch (...) {
        report.failed_module = entry->name;
        throw;
      }
    }
  } catch (py::error_already_set& e) {
    // Disarmed first: the watchdog raises again every 100 ms, and formatting
    // the error (linecache reads the source) must not be interrupted.
    limit_.reset();
    e.restore();
    report.error = python_error::fetch();
    result = run_result::raised;
  } catch (python_error& e) {
    report.error = e;
    result = run_result::raised;
  } catch (const file_in_flux&) {
    result = run_result::in_flux;
  }
  limit_.reset();  // from here on nothing may be interrupted
  return result;
}

reload_transaction::pending_commit reload_transaction::run_code(cache_entry& entry, const snapshot& before,
                                                                reload_report& report) {
  const python_helpers& helpers = context_.helpers;
  const bool deep = options_.deep;
  pending_commit commit{&entry, entry.module, py::object(), std::nullopt, entry.kind, entry.path, py::object()};
  py::object spec = helpers->find_spec(entry.name, entry.module, entry.name != target_);
  py::object origin = py::none();
  if (spec.attr("has_location").cast<bool>()) origin = spec.attr("origin");
  context_.hook.check_load(entry.name, origin, "modhost.reload");  // audit event, module roots, strict permissions
  py::object source = helpers->source_path(spec);
  if (!source.is_none()) {
    commit.path = source.cast<std::string>();
    commit.kind = spec.attr("submodule_search_locations").is_none() ? module_kind::source : module_kind::package;
    // Compile from the source on disk, never a bytecode cache that a
    // same-size edit within one second fools. An unchanged file (same
    // fingerprint) reuses the code compiled for it last time, unless that was
    // read within a timestamp tick of a change (a save applied at once can be
    // followed by another with equal stat fields).
    auto stat = stat_fingerprint(commit.path);
    if (stat && entry.code && entry.print && commit.path == entry.path && stat->same_stat(*entry.print) &&
        entry.print->stat_trusted()) {
      commit.code = entry.code;
      commit.print = entry.print;
    } else {
      py::bytes bytes = helpers->read_source(source);
      std::string_view view(PyBytes_AS_STRING(bytes.ptr()), static_cast<std::size_t>(PyBytes_GET_SIZE(bytes.ptr())));
      // A save that truncates and then writes can leave the file empty for
      // a while (ext4 makes the write wait for the previous save's
      // writeback; some editors close the truncated file and write it again
      // later): a source that was not empty before and is empty now must
      // have been quiet for 3 s before it replaces the module.
      const bool emptied = view.empty() && entry.print && entry.print->size > 0;
      const auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
      const auto emptied_quiet = std::chrono::seconds(3);
      if (options_.quiet_for.count() > 0 || options_.source_at_rest) {  // read between two stats of a file at rest
        auto quiet = options_.quiet_for;
        if (emptied) quiet = std::max<std::chrono::milliseconds>(quiet, emptied_quiet);
        auto after = stat_fingerprint(commit.path);
        if (!stat || !after || !after->same_stat(*stat) ||
            now_ns - stat->ctime_ns < std::chrono::nanoseconds(quiet).count())
          throw file_in_flux{};
        if (options_.source_at_rest && !options_.source_at_rest(commit.path)) throw file_in_flux{};  // written meanwhile
      } else if (emptied && (!stat || now_ns - stat->ctime_ns < std::chrono::nanoseconds(emptied_quiet).count())) {
        // An explicit reload fails instead of waiting: re-run empty, the
        // module (a dependent the caller never named, often) would lose
        // every global its code made.
        raise_error(PyExc_ImportError,
                    "the source of '" + entry.name + "' (" + commit.path.string() +
                        ") is empty, and was not when its code ran: a save still in progress? Reload once it "
                        "is written (a source left empty for 3 s is taken as it is)");
      }
      std::uint64_t hash = content_hash(view);
      commit.print = stat ? stat : fingerprint{};
      commit.print->content_hash = hash;
      if (entry.code && entry.print && commit.path == entry.path && entry.print->content_hash == hash) {
        commit.code = entry.code;  // touched, not changed
      } else if (entry.compared_code && commit.path == entry.path && entry.compared_hash == hash) {
        commit.code = entry.compared_code;  // compiled from these very bytes to tell the edit from a touch
      } else {
        commit.code = py::module_::import("builtins").attr("compile")(bytes, source, "exec", 0, true);
      }
    }
  }
  // The code that runs now (the import's or the last reload's, when known):
  // a deep reload removes only names that code defined and the new one does
  // not, and keeps class attributes whose initial value the edit left alone.
  py::object old_code = entry.code ? entry.code : py::none();
  py::object run = py::none();  // how the code runs: exec(), or the deep update's run_code
  if (deep) {
    commit.deep_update = helpers->deep_update(entry.module, before.namespace_copy, undo_, old_code);
    run = commit.deep_update.attr("run_code");
  }
  commit.module =
      helpers->execute(entry.name, entry.module, spec, commit.code ? commit.code : py::none(), deep, run, old_code);
  // What the new code imports (its edges were taken before it ran; a rollback restores them).
  py::object ran = commit.code ? commit.code : context_.hook.take_reload_code(entry.name);
  if (ran) context_.hook.record_imports(entry.name, ran.ptr(), PyModule_GetDict(commit.module.ptr()));
  if (deep) {
    auto append = [](std::vector<std::string>& to, py::handle items) {
      for (py::handle item : items) to.push_back(py::str(item));
    };
    py::tuple lists = commit.deep_update.attr("finish")();
    append(report.patched, lists[0]);
    append(report.not_patched, lists[1]);
    append(report.instances_not_moved, lists[2]);
    import_graph& graph = context_.modules.graph();
    for (const auto& importer : graph.dependents(entry.name)) {
      const auto& from = graph.from_imports(importer);
      auto taken = from.find(entry.name);
      cache_entry* holder = taken == from.end() ? nullptr : context_.modules.lookup(importer);
      if (!holder) continue;
      py::list names;
      for (const auto& n : taken->second) names.append(n);
      append(report.rebound,
             helpers->rebind_from_imports(commit.module, before.namespace_copy, holder->module, names, undo_));
    }
  }
  if (deep && options_.dependents_as_needed) {
    // After finish(): what deep update kept in place is the same object again.
    py::tuple changed = helpers->changed_names(commit.module, before.namespace_copy);
    changes_[entry.name] = {changed[0], changed[1]};
  }
  helpers->hand_over(commit.module, before.namespace_copy);
  if (source.is_none()) {
    std::tie(commit.kind, commit.path) = context_.modules.classify(entry.name, commit.module);
    commit.print = has_file(commit.kind) ? take_fingerprint(commit.path) : std::nullopt;
  }
  return commit;
}

// Deep update already put the new code into the functions and classes that
// exist and rebound the from-imports that held replaced objects; what it
// cannot reach is a value the dependent's top level computed from the
// module's values (`X = a.CONST * 2`, `TABLE = {k: a.f ...}`), or state it
// put into the module's objects by calling its functions (`a.register(h)`,
// whose registry the module's new code made empty again). So a dependent
// re-runs when a module it imports changed a value it took or may have read
// at top level. Reading is judged by name, not by object: a false yes only
// costs a re-run.
bool reload_transaction::needs_rerun(const cache_entry& entry) const {
  import_graph& graph = context_.modules.graph();
  py::object reads;  // read on first need: most dependents are decided by their imports
  for (const auto& dependency : graph.dependencies(entry.name)) {
    auto ran = changes_.find(dependency);
    if (ran == changes_.end()) continue;  // did not run: nothing new to see
    py::frozenset changed = ran->second.first;
    py::frozenset functions = ran->second.second;
    if (changed.size() == 0) continue;  // everything it has was patched in place
    if (!entry.code) return true;       // loaded by another loader: its top level cannot be read
    const auto& from = graph.from_imports(entry.name);
    if (auto taken = from.find(dependency); taken != from.end())
      for (const auto& bound : taken->second) {
        std::string name = bound.substr(0, bound.find(" as "));
        if (name == "*" || changed.contains(py::str(name))) return true;
      }
    if (!reads) reads = context_.helpers->top_level_reads(entry.code);
    for (py::handle name : reads)
      if (changed.contains(name) || functions.contains(name)) return true;
  }
  return false;
}

void reload_transaction::commit(reload_report& report) {
  for (auto& commit : commits_) {
    cache_entry& entry = *commit.entry;
    entry.module = commit.module;
    entry.confirmed_version = registry::sys_modules_version();
    entry.kind = commit.kind;
    entry.path = commit.path;
    entry.print = commit.print;
    entry.code = commit.code;
    entry.compared_code = py::object();  // of a source older than what runs now, or what runs
    entry.state = module_state::loaded;
    entry.last_error.clear();
    ++entry.generation;
    ++*entry.revision;
    if (commit.deep_update) commit.deep_update.attr("commit")();
  }
  committed_ = true;
  // A dependent that did not run makes what it acquired again: its code,
  // which made them, stays the code that runs.
  released_->give_back(spared_);
  released_->keep();  // the new code's acquisitions are the live ones now
  report.acquisition_errors = released_->errors();
  const snapshot& target = snapshots_.front();
  py::dict fresh = target.entry->module.attr("__dict__");
  for (auto [key, value] : fresh)
    if (!target.namespace_copy.contains(key)) report.added.push_back(py::str(key));
  for (auto [key, value] : target.namespace_copy)
    if (!fresh.contains(key)) report.removed.push_back(py::str(key));
}

// Never throws: it runs from the destructor, possibly while an exception unwinds.
void reload_transaction::rollback() {
  released_->release_new();  // while the new code's namespace is still there to run them
  try {
    undo_.attr("rollback")();
  } catch (py::error_already_set&) {
    PyErr_Clear();  // an undo step failed: the namespaces below are restored all the same
  }
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  for (auto it = snapshots_.rbegin(); it != snapshots_.rend(); ++it) {
    PyObject* ns = PyModule_GetDict(it->module.ptr());  // borrowed
    // What the failed run left dies only once the namespace is whole again:
    // a __del__ it triggers must not see the module empty or half restored.
    py::object displaced = steal(PyDict_Copy(ns));
    PyDict_Clear(ns);
    PyDict_Update(ns, it->namespace_copy.ptr());
    displaced = py::object();
    PyDict_SetItemString(modules, it->entry->name.c_str(), it->module.ptr());
    it->entry->confirmed_version = registry::sys_modules_version();
    if (it->edges) context_.modules.graph().restore_outgoing(it->entry->name, std::move(*it->edges));
  }
  for (auto* entry : marks_.order)
    if (entry->state == module_state::reloading) entry->state = module_state::loaded;
  PyErr_Clear();
  released_->restore();  // the old code's acquisitions, same callables, original order
  if (report_) report_->acquisition_errors = released_->errors();
}

namespace {

// The request itself is wrong: nothing is touched.
cache_entry* check_request(const reload_context& context, const std::string& name) {
  cache_entry* target = context.modules.require(name);
  if (const char* reason = refusal_reason(name))
    raise_error(PyExc_ValueError, "modhost refuses to reload '" + name + "': " + reason);
  if (context.modules.reloading().count(name))
    raise_error(PyExc_RuntimeError, "reload of '" + name + "' requested while '" + name +
                                        "' is being reloaded (from its own top-level code?)");
  if (context.modules.unloading().count(name))
    raise_error(PyExc_RuntimeError, "cannot reload '" + name + "' while it is being unloaded");
  if (registry::initializing(target->module))
    raise_error(PyExc_RuntimeError,
                "module '" + name + "' is still being imported; reload it after its import finishes");
  return target;
}

// Outcomes decided before any code runs: a module that cannot re-run, or a
// deep reload of a source whose content did not change.
std::optional<reload_outcome> early_outcome(const reload_context& context, cache_entry& target,
                                            const reload_options& options, reload_report& report) {
  if (!is_reloadable(target.kind)) {
    // As importlib.reload: built-in and extension modules are not re-run.
    report.module = translate_errors([&] { return py::module_::import("importlib").attr("reload")(target.module); });
    return reload_outcome::not_reloadable;
  }
  if (options.deep && has_file(target.kind) && target.print) {
    auto change = context.modules.compare(target);
    if (change == file_change::unchanged || change == file_change::touched) {
      if (target.state == module_state::failed) {  // the file is back to the code that runs
        target.state = module_state::loaded;
        target.last_error.clear();
      }
      return reload_outcome::unchanged;
    }
  }
  return std::nullopt;
}

// The targets alone, or with options.dependents every reloadable module
// that depends on one of them, dependencies first, a cycle as one unit.
std::vector<cache_entry*> plan_order(const reload_context& context, const std::vector<cache_entry*>& targets,
                                     const reload_options& options) {
  if (!options.dependents && targets.size() == 1) return targets;
  std::vector<std::string> names;
  for (auto* target : targets) names.push_back(target->name);
  std::vector<cache_entry*> order;
  for (const auto& unit : context.modules.graph().reload_order(names, options.dependents))
    for (const auto& member : unit) {
      auto target = std::find_if(targets.begin(), targets.end(), [&](cache_entry* t) { return t->name == member; });
      cache_entry* entry = target != targets.end() ? *target : context.modules.lookup(member);
      // A dependent still being imported (by another thread: the gate holds
      // it) is not re-run under its import; it runs the new code when it goes on.
      if (target != targets.end() ||
          (entry && is_reloadable(entry->kind) && !refusal_reason(member) && !context.modules.reloading().count(member) &&
           !context.modules.unloading().count(member) && !registry::initializing(entry->module)))
        order.push_back(entry);
    }
  return order;
}

// The module of these whose code runs on the calling thread (a frame up its
// stack: the main thread's, for the autoreloader), or empty.
std::string running_here(const std::vector<cache_entry*>& order) {
  for (py::object frame = borrow(reinterpret_cast<PyObject*>(PyEval_GetFrame())); frame;) {
    auto* f = reinterpret_cast<PyFrameObject*>(frame.ptr());
    py::object globals = steal(PyFrame_GetGlobals(f));
    for (auto* entry : order)
      if (globals.ptr() == PyModule_GetDict(entry->module.ptr())) return entry->name;
    frame = steal(reinterpret_cast<PyObject*>(PyFrame_GetBack(f)));
  }
  return {};
}

}  // namespace

reload_report reload(const reload_context& context, const std::string& name, const reload_options& options) {
  return reload(context, std::vector<std::string>{name}, options);
}

reload_report reload(const reload_context& context, const std::vector<std::string>& names,
                     const reload_options& options) {
  auto started = std::chrono::steady_clock::now();
  if (names.empty()) raise_error(PyExc_ValueError, "reload of an empty list of modules");
  std::vector<cache_entry*> targets;
  for (const auto& name : names) {
    cache_entry* target = check_request(context, name);
    if (std::find(targets.begin(), targets.end(), target) == targets.end()) targets.push_back(target);
  }
  // Claimed from here on: the checks below run Python code (a comparison
  // reads the source), and an unload another thread requests meanwhile must
  // be refused rather than free the entries this reload holds.
  reload_transaction::reloading_marks claim(context.modules, targets);
  const std::string label = join(names, ", ");
  reload_report report;
  report.name = names.front();
  report.targets = names;
  // What needs no transaction: a single module that cannot re-run, or (deep)
  // sources whose content did not change.
  std::vector<cache_entry*> changed;
  for (auto* target : targets) {
    if (targets.size() > 1 && !is_reloadable(target->kind)) continue;  // as importlib would: nothing re-runs
    reload_report early;
    if (auto outcome = early_outcome(context, *target, options, early)) {
      if (targets.size() == 1) {
        report.outcome = *outcome;
        report.module = early.module;
      }
      continue;
    }
    changed.push_back(target);
  }
  if (changed.empty()) {
    if (targets.size() > 1) report.outcome = reload_outcome::unchanged;
  } else {
    auto order = plan_order(context, changed, options);
    std::string running = options.defer_if_running ? running_here(order) : std::string();
    if (!running.empty()) {  // this thread is inside their code: try again once it left
      report.outcome = reload_outcome::deferred;
      report.deferred_by = running;
    } else {
      std::vector<std::string> asked;
      for (auto* target : changed) asked.push_back(target->name);
      reload_transaction transaction(context, label, std::move(order), options, std::move(asked));
      auto result = transaction.run(report);
      if (result == reload_transaction::run_result::ran && options.still_complete && !options.still_complete())
        result = reload_transaction::run_result::in_flux;
      switch (result) {
        case reload_transaction::run_result::ran:
          transaction.commit(report);
          report.outcome = reload_outcome::reloaded;
          break;
        case reload_transaction::run_result::raised:
          report.outcome = reload_outcome::failed;
          report.rolled_back = true;
          report.patched.clear();  // all undone
          report.not_patched.clear();
          report.instances_not_moved.clear();
          report.rebound.clear();
          report.spared.clear();
          break;
        case reload_transaction::run_result::in_flux:  // a save in progress: nothing happened (rolled back)
          report = reload_report{};
          report.name = names.front();
          report.targets = names;
          report.outcome = reload_outcome::deferred;
          break;
      }
    }  // a transaction not committed rolls back here
  }
  if (report.outcome == reload_outcome::failed)
    if (cache_entry* failed = context.modules.lookup(report.failed_module)) {
      failed->state = module_state::failed;
      failed->last_error = report.error->what();
    }
  report.generation = targets.front()->generation;
  if (!report.module) report.module = targets.front()->module;
  report.duration = std::chrono::steady_clock::now() - started;
  return report;
}

}  // namespace modhost::detail
