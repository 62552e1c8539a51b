// modhost acquisitions — what a module acquires from its host follows its
// reloads and its unload, exactly.
//
// The cache makes a module's namespace transactional; a plugin's effects on
// its host (a handler registered under a key, a route added, a thread or
// timer started, a port bound) live outside it. Recorded through these
// calls, each effect has a release that undoes it and a way to make it
// again, against the module whose code made it:
//  - before a reload re-executes the module, its releases run, newest first,
//    so the new code acquires afresh (a server thread stops and frees its
//    port before the new code starts another);
//  - if the reload fails (the module's code, a dependent, a __reload__
//    hook, a time limit, busy threads), what the new code acquired is
//    released, newest first, and the old acquisitions are made again in
//    their original order with the very same callables: the host ends as it
//    was. With reload_options::dependents every module of the reload is one
//    unit;
//  - unload releases them before it looks for holders (what the host holds
//    only through them does not keep the module), so __unload__ runs after
//    them; an unload that is refused acquires them again;
//  - a deep reload behaves the same; an unchanged source touches nothing.
// A release or re-acquire that raises does not stop the others; each
// failure goes to sys.unraisablehook and to the report's acquisition_errors.
// Every function needs the GIL.
#pragma once

#include <pybind11/pytypes.h>

#include <functional>
#include <string>
#include <vector>

#include "modules/cpython/visibility.h"

namespace modhost MODHOST_API {

class module_cache;

// modhost.acquire: calls `acquire_fn()` now and returns its result, then
// records `release_fn` (called later with that result) against the module whose
// Python code is calling, or against `module` if it is not empty. A failed
// reload calls `acquire_fn()` again and keeps the new result for `release_fn`.
// Throws python_error: ValueError if no tracked, reloadable module's code is
// calling and `module` is empty; TypeError if an argument is not callable or
// `release_fn` cannot take one argument; whatever acquire_fn() raises (then
// nothing is recorded).
pybind11::object acquire(module_cache& cache, pybind11::object acquire_fn, pybind11::object release_fn,
                         const std::string& module = {});

// For a pybind11-bound host function: makes an effect on the host now by
// calling `acquire()`, and attaches it to the module whose Python code called
// the host function (or to `module`): `release` undoes it before that
// module's code re-runs or it unloads; a failed reload calls `acquire()`
// again (the very same callable) and `release` later undoes that. The
// calling module is checked before anything happens: python_error
// (ValueError) if no tracked, reloadable module's code is calling. If
// `acquire()` throws, nothing is recorded and the exception propagates. Both
// must stay callable while the module is loaded; they may throw
// python_error, pybind11::error_already_set or any std::exception. `what`
// names the effect in acquired().
//
//   m.def("add_route", [&](std::string path, py::function handler) {
//     modhost::attach_release(cache, "route " + path,
//                             [&, path, handler] { router.add(path, handler); },  // refuses a duplicate
//                             [&, path] { router.remove(path); });
//   });
void attach_release(module_cache& cache, const std::string& what, std::function<void()> acquire,
                    std::function<void()> release, const std::string& module = {});

// One line per live acquisition of `module`, oldest first: what it is, where
// it was acquired, what releases it, e.g.
// "plug.start_worker() at plug.py:12, released by plug.stop_worker".
// ImportError if the module is not loaded.
std::vector<std::string> acquired(module_cache& cache, const std::string& module);

}  // namespace modhost
