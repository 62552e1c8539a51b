// detail::acquisition_ledger — what each module acquired from its host, and
// how to undo and redo it.
//
// A module's namespace is the cache's to restore; its effects on the host (a
// handler registered, a route added, a thread started) are not. Each such
// effect is recorded here with a release that undoes it and a re-acquire
// that makes it again, against the module whose code made it. A reload or an
// unload takes a module's acquisitions off the host for its duration
// (released_acquisitions, RAII): they are released newest first before the
// module's code runs again, and if the reload fails (or the unload is
// refused) what the new code acquired is released and the old acquisitions
// are made again, in their original order, with the very same callables.
// Every function needs the GIL.
#pragma once

#include <pybind11/pytypes.h>

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace modhost::detail {

// One effect a module had on its host.
struct acquisition {
  std::uint64_t order = 0;  // process-wide: a larger number was acquired later
  std::string module;       // whose code acquired it
  pybind11::object owner;   // a weak reference to that module object
  std::string description;  // acquired()'s line: where it was acquired, what releases it
  std::function<void()> release;    // undoes it; may throw
  std::function<void()> reacquire;  // makes it again (after a failed reload); may throw
};

class acquisition_ledger {
 public:
  acquisition_ledger() = default;
  acquisition_ledger(const acquisition_ledger&) = delete;
  acquisition_ledger& operator=(const acquisition_ledger&) = delete;

  // Records `item` as a live acquisition of item.module, numbered now.
  void record(acquisition item);
  // The live acquisitions of `modules`, oldest first, taken out of the ledger.
  std::vector<acquisition> take(const std::vector<std::string>& modules);
  // Makes `items` live again, each under its module, in acquisition order.
  void put_back(std::vector<acquisition> items);
  // acquired()'s lines for `module`, oldest first.
  std::vector<std::string> describe(const std::string& module) const;
  // `name` and those of its submodules that hold acquisitions.
  std::vector<std::string> holders_under(const std::string& name) const;
  // Every module that holds acquisitions.
  std::vector<std::string> holders() const;
  // `module` holds acquisitions.
  bool holds(const std::string& module) const { return live_.count(module) != 0; }
  // Acquisitions whose module object is no longer the one in sys.modules
  // (its first import failed, or it was deleted or replaced behind the
  // cache's back), taken out of the ledger, oldest first; modules in `skip`
  // (being reloaded: sys.modules may differ briefly) are left alone.
  std::vector<acquisition> take_orphans(const std::set<std::string>& skip);

 private:
  std::map<std::string, std::vector<acquisition>> live_;
  std::uint64_t next_order_ = 1;
};

// Releases, newest first, what take_orphans(skip) takes: a module whose
// first import failed half-way leaves none of its registrations behind, and
// a module imported again after a `del sys.modules[name]` starts from a host
// without the old incarnation's. Failures go to sys.unraisablehook. Called
// after every failed import and before every new acquisition; cheap when
// the ledger is empty.
void release_orphans(acquisition_ledger& ledger, const std::set<std::string>& skip);

// Releases, newest first, every live acquisition, whatever its module, for
// good (the end of the process: nothing may hold Python past finalization).
// Failures go to sys.unraisablehook. `during` says what for in error lines.
void release_all(acquisition_ledger& ledger, const std::string& during);

// A reload or an unload holding `modules`' acquisitions off the host: the
// constructor releases them (newest first, across all the modules: they are
// one unit); unless keep() is called, the destructor releases whatever the
// modules acquired meanwhile and acquires the old ones again. A release or
// re-acquire that raises does not stop the others: each failure goes to
// sys.unraisablehook and to errors().
class released_acquisitions {
 public:
  // `during` says what for in error lines: "reload of 'plug'".
  released_acquisitions(acquisition_ledger& ledger, std::vector<std::string> modules, std::string during);
  ~released_acquisitions();
  released_acquisitions(const released_acquisitions&) = delete;
  released_acquisitions& operator=(const released_acquisitions&) = delete;

  // A failed reload's first step: releases, newest first, what the modules
  // acquired since the constructor (the new code's acquisitions).
  void release_new();
  // A failed reload's last step, once the old namespaces are back: acquires
  // the old acquisitions again in their original order; they are live again.
  void restore();
  // Acquires again, in their original order, the old acquisitions of those
  // of the modules whose code did not run after all (a dependent a reload
  // spared); from here on they are live and this object leaves them alone.
  void give_back(const std::vector<std::string>& modules);
  // The old acquisitions stay released for good (a committed reload, a done unload).
  void keep() noexcept;
  // "release of ... (reload of 'plug'): ValueError: boom", one per failure so far.
  const std::vector<std::string>& errors() const noexcept { return errors_; }

 private:
  acquisition_ledger& ledger_;
  std::vector<std::string> modules_;
  std::string during_;
  void reacquire(std::vector<acquisition> items, const char* why);  // in order; puts back what was made

  std::vector<acquisition> old_;
  std::vector<std::string> errors_;
  bool new_released_ = false;
  bool settled_ = false;  // kept or restored
};

}  // namespace modhost::detail
