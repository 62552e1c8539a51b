// A shared library of the consumer's own that embeds Python through modhost.
// It includes every public header (the package installs no others), so that
// building it with the default visibility and -Werror proves they compile
// there without warnings.
#include "plugin.h"

#include <modhost/acquisitions.h>
#include <modhost/autoreload.h>
#include <modhost/cache_options.h>
#include <modhost/fingerprint.h>
#include <modhost/function_handle.h>
#include <modhost/gil.h>
#include <modhost/interpreter.h>
#include <modhost/log.h>
#include <modhost/modhost.h>
#include <modhost/module_cache.h>
#include <modhost/module_types.h>
#include <modhost/python_error.h>
#include <modhost/time_limit.h>
#include <modhost/visibility.h>

namespace consumer {

// Holds a modhost object by value, so it must be hidden like modhost's types
// (<modhost/visibility.h>); without MODHOST_HIDDEN, GCC warns.
class MODHOST_HIDDEN plugin_state {
 public:
  void run() {
    python_.run_string(
        "import modhost\n"
        "print(f'shared consumer: modhost {modhost.__version__} ok')\n");
  }

 private:
  modhost::interpreter python_;
};

}  // namespace consumer

int consumer_plugin_run() {
  consumer::plugin_state state;
  return modhost::interpreter::exit_code_of([&] { state.run(); });
}
