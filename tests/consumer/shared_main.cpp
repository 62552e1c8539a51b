// Calls into the consumer's shared library: links only if the library still
// exports its function (modhost does not impose -fvisibility=hidden on it).
#include "plugin.h"

int main() { return consumer_plugin_run(); }
