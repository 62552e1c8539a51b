#include "modules/internal/import_graph.h"

#include <algorithm>
#include <functional>
#include <unordered_map>

namespace modhost {
namespace {
const import_graph::name_set kNoNames;
const import_graph::from_map kNoFromImports;

template <class Map>
const typename Map::mapped_type& lookup(const Map& map, const std::string& key,
                                        const typename Map::mapped_type& fallback) {
  auto it = map.find(key);
  return it == map.end() ? fallback : it->second;
}
}  // namespace

void import_graph::add_dependency(const std::string& importer, const std::string& imported) {
  if (importer == imported) return;
  dependencies_[importer].insert(imported);
  dependents_[imported].insert(importer);
}

void import_graph::add_from_import(const std::string& importer, const std::string& imported,
                                   const std::string& name) {
  from_imports_[importer][imported].insert(name);
}

const import_graph::name_set& import_graph::dependencies(const std::string& name) const {
  return lookup(dependencies_, name, kNoNames);
}

const import_graph::name_set& import_graph::dependents(const std::string& name) const {
  return lookup(dependents_, name, kNoNames);
}

const import_graph::from_map& import_graph::from_imports(const std::string& importer) const {
  return lookup(from_imports_, importer, kNoFromImports);
}

import_graph::node_state import_graph::take_outgoing(const std::string& name) {
  node_state state;
  if (auto it = dependencies_.find(name); it != dependencies_.end()) {
    for (const auto& dep : it->second) {
      auto back = dependents_.find(dep);
      if (back != dependents_.end() && back->second.erase(name) && back->second.empty())
        dependents_.erase(back);
    }
    state.dependencies = std::move(it->second);
    dependencies_.erase(it);
  }
  if (auto it = from_imports_.find(name); it != from_imports_.end()) {
    state.from_imports = std::move(it->second);
    from_imports_.erase(it);
  }
  return state;
}

void import_graph::restore_outgoing(const std::string& name, node_state state) {
  take_outgoing(name);  // drop whatever the failed run recorded
  for (const auto& dep : state.dependencies) add_dependency(name, dep);
  if (!state.from_imports.empty()) from_imports_[name] = std::move(state.from_imports);
}

void import_graph::remove(const std::string& name) {
  take_outgoing(name);
  if (auto it = dependents_.find(name); it != dependents_.end()) {
    for (const auto& importer : it->second) {
      auto deps = dependencies_.find(importer);
      if (deps != dependencies_.end() && deps->second.erase(name) && deps->second.empty())
        dependencies_.erase(deps);
    }
    dependents_.erase(it);
  }
}

namespace {

// `package` is a package that contains `module` ("pkg" contains "pkg.sub.x").
bool is_ancestor_package(const std::string& package, const std::string& module) {
  return module.size() > package.size() && module.compare(0, package.size(), package) == 0 &&
         module[package.size()] == '.';
}

// Tarjan's strongly connected components of `nodes` over the edges `edges_of`
// returns: a component is emitted only after every component it depends on,
// which is exactly the order in which code must run again. Members of a
// component are sorted by name.
template <class Edges>
std::vector<std::vector<std::string>> components_in_dependency_order(const std::set<std::string>& nodes,
                                                                     const Edges& edges_of) {
  struct mark {
    int index, low;
    bool on_stack;
  };
  std::unordered_map<std::string, mark> marks;
  std::vector<std::string> stack;
  std::vector<std::vector<std::string>> order;
  int next_index = 0;
  std::function<void(const std::string&)> visit = [&](const std::string& node) {
    marks[node] = {next_index, next_index, true};
    ++next_index;
    stack.push_back(node);
    for (const auto& dep : edges_of(node)) {
      if (!nodes.count(dep)) continue;
      auto it = marks.find(dep);
      if (it == marks.end()) {
        visit(dep);
        marks[node].low = std::min(marks[node].low, marks[dep].low);
      } else if (it->second.on_stack) {
        marks[node].low = std::min(marks[node].low, it->second.index);
      }
    }
    if (marks[node].low != marks[node].index) return;
    std::vector<std::string> component;
    std::string member;
    do {
      member = stack.back();
      stack.pop_back();
      marks[member].on_stack = false;
      component.push_back(member);
    } while (member != node);
    std::sort(component.begin(), component.end());
    order.push_back(std::move(component));
  };
  for (const auto& node : nodes)
    if (!marks.count(node)) visit(node);
  return order;
}

}  // namespace

std::vector<std::vector<std::string>> import_graph::reload_order(const std::string& name) const {
  return reload_order(std::vector<std::string>{name}, true);
}

std::vector<std::vector<std::string>> import_graph::reload_order(const std::vector<std::string>& names,
                                                                 bool with_dependents) const {
  // The affected set: the names, plus their transitive dependents.
  std::set<std::string> affected(names.begin(), names.end());
  std::vector<std::string> todo = with_dependents ? names : std::vector<std::string>{};
  while (!todo.empty()) {
    auto current = todo.back();
    todo.pop_back();
    for (const auto& importer : dependents(current))
      if (affected.insert(importer).second) todo.push_back(importer);
  }

  std::vector<std::vector<std::string>> order = components_in_dependency_order(
      affected, [&](const std::string& node) -> const name_set& { return dependencies(node); });

  // Inside a cycle, an edge from a submodule to its own package is the weak
  // one: Python imports a package's submodule while the package's __init__
  // runs, and the submodule finishes first (its `from . import x` only needs
  // the package object, which exists). So a cycle runs again in the order of
  // its edges without those, which puts `pkg.core` before the `pkg` whose
  // `from .core import Err` must see the new Err. What still cycles is led by
  // the first of the reload's targets in it, then by name.
  std::vector<std::vector<std::string>> result;
  for (auto& unit : order) {
    if (unit.size() > 1) {
      std::set<std::string> members(unit.begin(), unit.end());
      unit.clear();
      auto strong_edges = [&](const std::string& node) {
        name_set strong;
        for (const auto& dep : dependencies(node))
          if (!is_ancestor_package(dep, node)) strong.insert(dep);
        return strong;
      };
      for (auto& part : components_in_dependency_order(members, strong_edges)) {
        auto lead = std::find_first_of(part.begin(), part.end(), names.begin(), names.end());
        if (lead != part.end()) std::rotate(part.begin(), lead, lead + 1);
        unit.insert(unit.end(), part.begin(), part.end());
      }
    }
    result.push_back(std::move(unit));
  }
  return result;
}

}  // namespace modhost
