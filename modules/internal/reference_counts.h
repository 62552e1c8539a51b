// Reference accounting for deep reload: which references to an object a set
// of known holders explains, read through the holders' tp_traverse (what
// gc.get_referents visits) without building lists of ids in Python.
#pragma once

#include <pybind11/pytypes.h>

namespace modhost::detail {

// For each object of `objects` (a list), its refcount less the references
// the objects of `holders` (a list) account for: those each holder's
// tp_traverse visits (a holder listed twice is traversed once) and the one
// `holders` holds per entry. Zero: every holder is among `holders`.
pybind11::list uncounted_references(const pybind11::list& objects, const pybind11::list& holders);

// The distinct objects of `holders`, but those of `ignored` (the caller's own
// lists and maps), whose tp_traverse visits one of `objects`.
pybind11::list holders_among(const pybind11::list& holders, const pybind11::list& objects,
                             const pybind11::list& ignored);

}  // namespace modhost::detail
