// detail::cache_access — what the cache's free-standing companions
// (modules/acquisitions.cpp, modules/shutdown.cpp) need of its insides; a
// friend of module_cache.
#pragma once

#include "modules/module_cache.h"

namespace modhost::detail {

class registry;
class acquisition_ledger;

struct cache_access {
  static registry& modules(module_cache& cache) { return cache.registry(); }
  static acquisition_ledger& ledger(module_cache& cache) { return cache.acquisitions(); }
};

}  // namespace modhost::detail
