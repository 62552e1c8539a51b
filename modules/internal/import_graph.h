// modhost::import_graph — who imported whom while their top-level code ran.
//
// Edges point from importer to imported ("app depends on plug"). It also
// remembers the names each importer took with `from x import name`, which a
// deep reload rebinds.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "modules/cpython/visibility.h"

namespace modhost MODHOST_HIDDEN {

class import_graph {
 public:
  using name_set = std::set<std::string>;
  // importer's from-imports: imported module -> names taken
  using from_map = std::map<std::string, name_set>;

  void add_dependency(const std::string& importer, const std::string& imported);
  void add_from_import(const std::string& importer, const std::string& imported,
                       const std::string& name);

  // What `name` imported.
  const name_set& dependencies(const std::string& name) const;
  // Who imported `name`.
  const name_set& dependents(const std::string& name) const;
  const from_map& from_imports(const std::string& importer) const;

  // A module's outgoing edges and from-imports, to restore after a failed reload.
  struct node_state {
    name_set dependencies;
    from_map from_imports;
  };
  // Forgets `name`'s outgoing edges (its code is about to run again) and returns them.
  node_state take_outgoing(const std::string& name);
  void restore_outgoing(const std::string& name, node_state state);
  // Forgets `name` entirely (unloaded).
  void remove(const std::string& name);

  // `name` and every module that depends on it transitively, grouped into
  // strongly connected components (a cycle is one unit) and ordered so that
  // each unit comes after the units it depends on. Inside a unit, a submodule
  // runs before the package it belongs to (its edge to the package is only
  // how relative imports resolve); what still cycles is led by `name`.
  std::vector<std::vector<std::string>> reload_order(const std::string& name) const;
  // The same for several modules reloaded as one set, with or without their
  // dependents; a cycle is led by the first of `names` in it.
  std::vector<std::vector<std::string>> reload_order(const std::vector<std::string>& names,
                                                     bool with_dependents) const;

 private:
  std::map<std::string, name_set> dependencies_;
  std::map<std::string, name_set> dependents_;
  std::map<std::string, from_map> from_imports_;
};

}  // namespace modhost
