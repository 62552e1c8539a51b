#include "modules/import_graph.h"

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

std::vector<std::vector<std::string>> import_graph::reload_order(const std::string& name) const {
  // The affected set: name plus its transitive dependents.
  std::set<std::string> affected{name};
  std::vector<std::string> todo{name};
  while (!todo.empty()) {
    auto current = todo.back();
    todo.pop_back();
    for (const auto& importer : dependents(current))
      if (affected.insert(importer).second) todo.push_back(importer);
  }

  // Tarjan's SCC over "depends on" edges inside the affected set: it emits a
  // component only after every component it depends on, which is exactly
  // the order in which code must run again.
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
    for (const auto& dep : dependencies(node)) {
      if (!affected.count(dep)) continue;
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
    auto lead = std::find(component.begin(), component.end(), name);
    if (lead != component.end()) std::rotate(component.begin(), lead, lead + 1);
    order.push_back(std::move(component));
  };
  for (const auto& node : affected)
    if (!marks.count(node)) visit(node);
  return order;
}

}  // namespace modhost
