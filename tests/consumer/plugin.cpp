// A shared library of the consumer's own that embeds Python through modhost.
// It includes every public header, so that building it with the default
// visibility and -Werror proves they compile there without warnings.
#include "plugin.h"

#include "bindings/modhost_module.h"
#include "interpreter/error_scope.h"
#include "interpreter/gil.h"
#include "interpreter/interpreter.h"
#include "interpreter/log.h"
#include "interpreter/python_error.h"
#include "interpreter/reference.h"
#include "interpreter/time_limit.h"
#include "interpreter/translate_errors.h"
#include "interpreter/visibility.h"
#include "modules/acquisitions.h"
#include "modules/autoreload.h"
#include "modules/cache_options.h"
#include "modules/file_watcher.h"
#include "modules/fingerprint.h"
#include "modules/function_handle.h"
#include "modules/import_graph.h"
#include "modules/module_cache.h"
#include "modules/module_types.h"

namespace consumer {

// Holds a modhost object by value, so it must be hidden like modhost's types
// (interpreter/visibility.h); without MODHOST_HIDDEN, GCC warns.
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
