// The `modhost` embedded module (bindings/modhost_module.cpp), as seen by
// whatever starts the interpreter.
//
// The module registers itself in CPython's table of built-in modules from a
// static initializer (PYBIND11_EMBEDDED_MODULE), which must run before
// Python starts. When modhost is linked as a static library, the linker
// keeps an object file only if something references it; nothing else in
// the bindings is referenced from C++, so without this call `import modhost`
// would fail with ModuleNotFoundError.
#pragma once

namespace modhost {

// Keeps the bindings linked in, so `import modhost` works; call it before
// Python starts (the interpreter's constructor does). Does nothing at run time.
void link_bindings();

}  // namespace modhost
