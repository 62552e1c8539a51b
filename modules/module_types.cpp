#include "modules/module_types.h"

namespace modhost {

const char* to_string(module_kind kind) noexcept {
  switch (kind) {
    case module_kind::source: return "source";
    case module_kind::package: return "package";
    case module_kind::namespace_package: return "namespace package";
    case module_kind::builtin: return "built-in";
    case module_kind::extension: return "extension";
    case module_kind::other: return "other";
  }
  return "?";
}

bool is_reloadable(module_kind kind) noexcept {
  return kind != module_kind::builtin && kind != module_kind::extension;
}

bool has_file(module_kind kind) noexcept {
  return kind == module_kind::source || kind == module_kind::package || kind == module_kind::extension;
}

const char* to_string(module_state state) noexcept {
  switch (state) {
    case module_state::loaded: return "loaded";
    case module_state::reloading: return "reloading";
    case module_state::failed: return "failed";
    case module_state::unloaded: return "unloaded";
  }
  return "?";
}

const char* to_string(reload_outcome outcome) noexcept {
  switch (outcome) {
    case reload_outcome::reloaded: return "reloaded";
    case reload_outcome::unchanged: return "unchanged";
    case reload_outcome::not_reloadable: return "not reloadable";
    case reload_outcome::deferred: return "deferred";
    case reload_outcome::failed: return "failed";
  }
  return "?";
}

std::string join(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

module_in_use_error::module_in_use_error(const std::string& name, std::vector<std::string> referrers)
    : module_in_use_error(name, referrers,
                          "module '" + name + "' is still in use: " + join(referrers, "; ") +
                              " (drop these references, or unload with force=True)") {}

module_in_use_error::module_in_use_error(const std::string& name, std::vector<std::string> referrers,
                                         const std::string& message)
    : error(message), name_(name), referrers_(std::move(referrers)) {}

}  // namespace modhost
