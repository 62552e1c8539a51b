// modhost::log_line — where modhost's own messages go.
//
// The autoreloader's outcomes ("[modhost] reload of plug failed: ..."),
// failures at exit and a subscriber that threw are one line each. By default
// a line goes to stderr in a single write(), so it never lands inside a line
// another thread writes. A host sends them elsewhere (its log, a console
// window) with set_log_sink.
#pragma once

#include <functional>
#include <string>

#include "modules/cpython/visibility.h"

namespace modhost MODHOST_API {

// Called with one line, without its newline, on whichever thread logs (with
// the GIL when that thread holds it). It must not call into modhost; an
// exception it throws is dropped and the line goes to stderr.
using log_sink = std::function<void(const std::string& line)>;

// Replaces the process's sink; an empty function restores stderr. Thread-safe.
void set_log_sink(log_sink sink);

// Gives `line` to the sink.
void log_line(const std::string& line);

}  // namespace modhost
