// detail::reload_transaction — one reload, all or nothing.
//
// Constructing it takes the modules out of others' hands: they are marked
// as reloading, other threads are held out of their code (the call gate),
// and the time limit is armed. run() snapshots every module's namespace,
// then executes each module's new code in order, taking its import-graph
// edges first. commit()
// makes the new code the cache's; if it is not called, the destructor rolls
// every namespace, graph edge and patched object back exactly, the way
// cr.h's cr_plugin_rollback restores the last working version.
//
// reload() is the whole request as a sequence of named steps: check the
// request, early outcomes, plan the order, run, commit.
#pragma once

#include <pybind11/pytypes.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "modules/cpython/time_limit.h"
#include "modules/internal/acquisition_ledger.h"
#include "modules/internal/call_gate.h"
#include "modules/internal/import_graph.h"
#include "modules/module_types.h"

namespace modhost::detail {

struct cache_entry;
class python_helpers;
class import_hook;
class registry;

// What a reload works with.
struct reload_context {
  registry& modules;
  const python_helpers& helpers;
  import_hook& hook;  // records what a reload imports
  acquisition_ledger& acquisitions;  // what the modules acquired from the host
};

class reload_transaction {
 public:
  // Releases what the modules acquired from the host (newest first), then
  // closes the gate. Throws module_in_use_error naming the threads that
  // still run the modules' code after options.wait_for_calls; the
  // acquisitions are made again then and nothing has changed.
  // `targets`: the modules asked for, which always run (with
  // options.dependents_as_needed the others may not); empty: all of order.
  reload_transaction(const reload_context& context, const std::string& target, std::vector<cache_entry*> order,
                     const reload_options& options, std::vector<std::string> targets = {});
  ~reload_transaction();  // rolls back unless committed
  reload_transaction(const reload_transaction&) = delete;
  reload_transaction& operator=(const reload_transaction&) = delete;

  enum class run_result {
    ran,      // every module's code ran: commit() or let it roll back
    raised,   // a module's code raised: report.error and report.failed_module say which
    in_flux,  // a source was being written (reload_options::quiet_for): try again later
  };
  // Runs the modules' new code in order; deep-reload findings go into `report`.
  run_result run(reload_report& report);
  // The new code becomes the cache's (and so do its acquisitions):
  // generations move on, report says what was added and removed in the
  // target's namespace.
  void commit(reload_report& report);

  // Marks the order as reloading for exactly its own lifetime (names already
  // marked by an enclosing claim stay marked when it ends).
  struct reloading_marks {
    registry& modules;
    std::vector<cache_entry*> order;
    std::vector<std::string> marked;
    reloading_marks(registry& modules, std::vector<cache_entry*> order);
    ~reloading_marks();
    reloading_marks(const reloading_marks&) = delete;
    reloading_marks& operator=(const reloading_marks&) = delete;
  };

 private:
  struct snapshot;
  struct pending_commit;
  pending_commit run_code(cache_entry& entry, const snapshot& before, reload_report& report);
  // reload_options::dependents_as_needed: must this dependent's code run,
  // now that the modules before it in the order ran?
  bool needs_rerun(const cache_entry& entry) const;
  void rollback();

  const reload_context& context_;
  reload_options options_;
  std::string target_;  // the module asked for; the others run as its dependents
  std::vector<std::string> targets_;
  // Deep reloads that ran, for dependents_as_needed: module -> (names whose
  // value changed, names of its functions), frozensets.
  std::map<std::string, std::pair<pybind11::object, pybind11::object>> changes_;
  std::vector<std::string> spared_;  // dependents that did not run
  reloading_marks marks_;
  // Before the gate: its wait must not count a thread the release stops.
  std::optional<released_acquisitions> released_;
  std::optional<closed_gate> gate_;
  std::optional<time_limit> limit_;
  pybind11::object undo_;  // what a deep reload changed outside the namespaces
  std::vector<snapshot> snapshots_;
  std::vector<pending_commit> commits_;
  bool committed_ = false;
  reload_report* report_ = nullptr;  // run()'s, for what a rollback's releases report
};

// Reloads `name` (and with options.dependents its dependents) as one
// transaction. Throws python_error for a bad request (see
// module_cache::reload) and module_in_use_error for busy threads.
reload_report reload(const reload_context& context, const std::string& name, const reload_options& options);
// Reloads several modules (with options.dependents, their dependents too) as
// one transaction, dependencies first: all of it commits, or all of it rolls
// back. A bad request for any name changes nothing.
reload_report reload(const reload_context& context, const std::vector<std::string>& names,
                     const reload_options& options);

}  // namespace modhost::detail
