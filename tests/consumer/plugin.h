// The consumer's own shared library: one exported function (default visibility).
#pragma once

// Starts Python through modhost, runs a line, and returns the exit code.
int consumer_plugin_run();
