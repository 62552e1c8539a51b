// modhost::module_cache — the C++ cache in front of sys.modules.
#pragma once

namespace modhost {

class module_cache {
 public:
  module_cache() = default;
  module_cache(const module_cache&) = delete;
  module_cache& operator=(const module_cache&) = delete;
};

}  // namespace modhost
