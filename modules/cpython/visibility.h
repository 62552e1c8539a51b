// MODHOST_API: the visibility of every declaration in modhost's public
// headers, written on each `namespace modhost MODHOST_API {` block.
// MODHOST_HIDDEN: hidden, for modhost's internals and a consumer's classes.
//
// pybind11 declares its own namespace hidden, and modhost's classes hold
// py::object members; a class holding a hidden type must be hidden itself or
// GCC warns (-Wattributes: "declared with greater visibility than the type of
// its field"), unless its visibility was given explicitly. Saying it here,
// in the headers, lets a consumer compile with the default visibility, so
// that its own shared libraries export their functions, without warnings
// from modhost and without -fvisibility=hidden.
//
// The static library (the default) is hidden throughout, like pybind11. A
// shared libmodhost (BUILD_SHARED_LIBS) exports its API: the package then
// defines MODHOST_SHARED for its consumers, and MODHOST_API is "default",
// explicitly (which GCC does not warn about).
//
// The same rule reaches a consumer's types: a class that holds a modhost or
// pybind11 object by value, or derives from one, must be hidden too:
//
//   BAD:  class plugin_host { modhost::interpreter python_; };   // warns
//   GOOD: class MODHOST_HIDDEN plugin_host { modhost::interpreter python_; };
//
// A nested namespace definition cannot carry the attribute
// (`namespace modhost::detail MODHOST_HIDDEN` does not compile); open
// `namespace detail` inside the hidden block instead.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define MODHOST_HIDDEN __attribute__((visibility("hidden")))
#if defined(MODHOST_SHARED)
#define MODHOST_API __attribute__((visibility("default")))
#else
#define MODHOST_API MODHOST_HIDDEN
#endif
#else
#define MODHOST_HIDDEN
#define MODHOST_API
#endif
