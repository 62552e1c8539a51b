"""The import-system steps of a reload, run by modhost's C++ module cache.

They are importlib's own steps (spec lookup, module lock, module attributes),
so they stay in Python; the cache decides what code runs and undoes it on
failure. Nothing here runs during an import: recording imports, the load
policy and classifying modules are C++ (import_hook.cpp, registry.cpp), so
no modhost frame shows in a user's tracer, profiler or debugger. Embedded
into the library at build time (see CMakeLists.txt).
"""
import sys
from contextlib import nullcontext as _nothing
from importlib import _bootstrap, machinery
from io import open_code

def find_spec(name, module):
    parent_name = name.rpartition('.')[0]
    if parent_name:
        try:
            parent = sys.modules[parent_name]
        except KeyError:
            raise ImportError(f"parent {parent_name!r} not in sys.modules", name=parent_name) from None
        pkgpath = parent.__path__
    else:
        pkgpath = None
    spec = _bootstrap._find_spec(name, pkgpath, module)
    if spec is None:
        raise ModuleNotFoundError(f"spec not found for the module {name!r}", name=name)
    return spec

def source_path(spec):
    """The .py file the cache compiles itself, or None to let the loader run."""
    if spec.has_location and isinstance(spec.loader, machinery.SourceFileLoader):
        return spec.origin
    return None

def read_source(path):
    with open_code(path) as f:
        return f.read()

# What the import system puts in a module's namespace; a deep reload keeps
# only these, so names the new source no longer defines cannot survive.
IMPORT_DUNDERS = frozenset({
    "__name__", "__doc__", "__package__", "__loader__", "__spec__", "__path__",
    "__file__", "__cached__", "__builtins__",
})

# defined_names(code) -> (top_level, in_functions), the names a module's code
# binds: given by python_helpers.cpp (bytecode_imports.h's names_bound_by).

def _is_submodule_attribute(name, key, value):
    """The import system's attribute on package `name` for its submodule `key`."""
    # type(), not isinstance(): isinstance looks up __class__, which a proxy
    # object (werkzeug's LocalProxy) answers by running code.
    return issubclass(type(value), type(sys)) and sys.modules.get(f"{name}.{key}") is value

def execute(name, module, spec, code, fresh, around=None, old_code=None):
    """Run `code` (or the loader) in `module`, under the module's import lock.

    fresh (a deep reload): names the running code's source defined at top
    level are removed first, so what the new source no longer defines cannot
    survive, and afterwards the names its functions set through `global` that
    the new source no longer sets anywhere. What the module's statements did
    not create stays, as importlib.reload keeps it: the import system's
    submodule attributes, globals made at run time (exec into its globals,
    another module setting them). Without `old_code` (a module loaded before
    the cache, or by another loader) every name but those attributes goes.
    """
    with _bootstrap._ModuleLockManager(name):
        if sys.modules.get(name) is not module:
            raise ImportError(f"module {name!r} not in sys.modules", name=name)
        _bootstrap._init_module_attrs(spec, module, override=True)
        namespace = module.__dict__
        if fresh:
            old_top, old_nested = defined_names(old_code) if old_code is not None else (None, set())
            before = dict(namespace)
            for key, value in before.items():
                if key in IMPORT_DUNDERS or _is_submodule_attribute(name, key, value):
                    continue
                if old_top is None or key in old_top:
                    del namespace[key]
        try:
            with around if around is not None else _nothing():
                if code is not None:
                    exec(code, module.__dict__)
                elif spec.loader is not None:
                    spec.loader.exec_module(module)
            if fresh and code is not None and old_nested:
                new_top, new_nested = defined_names(code)
                for key in old_nested - old_top - new_top - new_nested:
                    if key in namespace and namespace[key] is before.get(key):
                        del namespace[key]
        finally:
            current = sys.modules.pop(name, None)
            if current is not None:
                sys.modules[name] = current
        if current is None:
            raise ImportError(f"module {name!r} removed itself from sys.modules while it ran",
                              name=name)
        if not isinstance(current, type(sys)):
            raise ImportError(f"module {name!r} replaced itself in sys.modules with a "
                              f"{type(current).__name__} object; the cache tracks modules only",
                              name=name)
    return current

def hand_over(module, old):
    """Call the new code's __reload__(old) with a read-only view of the old namespace."""
    hook = module.__dict__.get("__reload__")
    if hook is not None:
        from types import MappingProxyType
        hook(MappingProxyType(old))

def call_unload_hook(module):
    hook = module.__dict__.get("__unload__")
    if hook is not None:
        hook()

def drop_bytecode_cache(path):
    from importlib.util import cache_from_source
    import os
    try:
        os.remove(cache_from_source(path))
    except (OSError, ValueError, NotImplementedError):
        pass
