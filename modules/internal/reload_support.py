"""The import-system steps of a reload, run by modhost's C++ module cache.

They are importlib's own steps (spec lookup, module lock, module attributes),
so they stay in Python; the cache decides what code runs and undoes it on
failure. Embedded into the library at build time (see CMakeLists.txt).
"""
import sys
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

def execute(name, module, spec, code):
    with _bootstrap._ModuleLockManager(name):
        if sys.modules.get(name) is not module:
            raise ImportError(f"module {name!r} not in sys.modules", name=name)
        _bootstrap._init_module_attrs(spec, module, override=True)
        try:
            if code is not None:
                exec(code, module.__dict__)
            elif spec.loader is not None:
                spec.loader.exec_module(module)
        finally:
            current = sys.modules.pop(name, None)
            if current is not None:
                sys.modules[name] = current
        if current is None:
            raise ImportError(f"module {name!r} removed itself from sys.modules while it ran",
                              name=name)
    return current

def classify(name, module):
    """(kind, path) of a module, from its spec."""
    if name in sys.builtin_module_names:
        return 'builtin', None
    spec = getattr(module, '__spec__', None)
    if spec is None:
        return 'other', getattr(module, '__file__', None)
    origin, locations = spec.origin, spec.submodule_search_locations
    if origin in ('built-in', 'frozen'):
        return 'builtin', None
    if origin is None or not spec.has_location:
        return ('namespace_package' if locations is not None else 'other'), None
    if origin.endswith(tuple(machinery.EXTENSION_SUFFIXES)):
        return 'extension', origin
    if origin.endswith('.py'):
        return ('package' if locations is not None else 'source'), origin
    return 'other', origin

def is_initializing(module):
    return getattr(getattr(module, '__spec__', None), '_initializing', False)

def drop_bytecode_cache(path):
    from importlib.util import cache_from_source
    import os
    try:
        os.remove(cache_from_source(path))
    except (OSError, ValueError, NotImplementedError):
        pass
