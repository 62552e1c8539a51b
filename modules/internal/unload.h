// detail unload, refcount, referrers — removing a module only when nothing
// still runs or holds its code (Erlang's soft purge), and saying who does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "modules/module_types.h"

namespace modhost::detail {

struct python_helpers;
class registry;

// References to the module beyond sys.modules, the cache and its parent
// package's attribute.
std::int64_t refcount(registry& modules, const std::string& name);
// Who keeps the module, one of its submodules, or their code alive.
std::vector<std::string> referrers(registry& modules, const std::string& name);
// See module_cache::unload.
unload_report unload(registry& modules, const python_helpers& helpers, const std::string& name, bool force);

}  // namespace modhost::detail
