"""The import-system steps of a reload, run by modhost's C++ module cache.

They are importlib's own steps (spec lookup, module lock, module attributes),
so they stay in Python; the cache decides what code runs and undoes it on
failure. Nothing here runs during an import: recording imports, the load
policy and classifying modules are C++ (import_hook.cpp, registry.cpp), so
no modhost frame shows in a user's tracer, profiler or debugger. Embedded
into the library at build time (see CMakeLists.txt).
"""
import sys
from importlib import _bootstrap, machinery
from io import open_code

def find_spec(name, module, dependent=False):
    """importlib.reload's spec lookup, and its errors.

    dependent: the module runs again only because it imports the target. One
    no finder finds any more (made by spec_from_file_location from a file off
    sys.path, or by a finder since removed, such as pytest's) runs again by
    the spec it was loaded with: failing the reload would punish recording
    its imports, and skipping it would leave it with the old objects.
    """
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
    if spec is None and dependent:
        own = vars(module).get("__spec__")
        if own is not None and getattr(own, "loader", None) is not None:
            return own
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

def execute(name, module, spec, code, fresh, run=None, old_code=None):
    """Run `code` (or the loader) in `module`, under the module's import lock.

    run(code), when given, runs the code instead of exec() (a deep reload's
    DeepUpdate.run_code); the loader's exec_module runs as it is.

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
        # Since 3.14 (PEP 649) a module's annotations are computed from its
        # __annotate__ when first read and cached in its namespace as
        # __annotations__: the code run again binds a new __annotate__, and
        # the cache would keep showing the old annotations (importlib.reload's
        # do). The transaction's snapshot puts it back if the reload fails.
        if "__annotate__" in namespace:
            namespace.pop("__annotations__", None)
        elif type(namespace.get("__annotations__")) is dict:
            # Before 3.14 the code fills the module's __annotations__ dict in
            # place: it fills a copy, so the dict the snapshot holds keeps
            # the old annotations for a rollback.
            namespace["__annotations__"] = dict(namespace["__annotations__"])
        if fresh:
            old_top, old_nested = defined_names(old_code) if old_code is not None else (None, set())
            before = dict(namespace)
            for key, value in before.items():
                if key in IMPORT_DUNDERS or _is_submodule_attribute(name, key, value):
                    continue
                if old_top is None or key in old_top:
                    del namespace[key]
        try:
            if code is not None:
                if run is not None:
                    run(code)
                else:
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

# --- Hooks the interpreter calls, for unload's list of holders (referrers.cpp)

class _AtexitProbe:
    """Equal to nothing; remembers every object it was compared with."""
    __hash__ = None

    def __init__(self):
        self.seen = []

    def __eq__(self, other):
        self.seen.append(other)
        return False

def atexit_callbacks():
    """The callables atexit will call at exit, in registration order.

    atexit keeps them in a C array that gc cannot see and has no function to
    list them (3.11-3.13). atexit.unregister(x) compares each callback with
    x, and a function's, method's or partial's own comparison answers
    NotImplemented for an object it does not know, so Python asks x's
    reflected __eq__: a probe that answers False sees every such callback
    and removes none. A callable instance whose class compares itself
    without deferring is not seen (one that said True would be removed: no
    stdlib callable does).
    """
    atexit = sys.modules.get("atexit")
    if atexit is None:
        # Not imported (so nothing registered through it, unless it left
        # sys.modules since): a private instance reads the same
        # per-interpreter list, and asking adds no module to sys.modules.
        import _imp
        atexit = _imp.create_builtin(machinery.ModuleSpec("atexit", machinery.BuiltinImporter,
                                                          origin="built-in"))
    probe = _AtexitProbe()
    atexit.unregister(probe)
    return probe.seen

_audit_hooks = None  # the interpreter's list, once found
_audit_searched = False  # the marker is added once, found or not

def _audit_marker(event, args):
    # Runs for every audit event once added: one comparison.
    if event == "modhost.find_audit_hooks":
        args[0].append(_running_hook_list())

def _running_hook_list():
    """The list sys.audit is iterating right now: the list iterator it made
    (gc-tracked, unlike the list) that refers to a list holding this marker."""
    import gc
    for generation in (0, None):  # the iterator is new; a collection may have aged it
        objects = gc.get_objects() if generation is None else gc.get_objects(generation)
        for obj in objects:
            if type(obj).__name__ != "list_iterator":
                continue
            for seq in gc.get_referents(obj):
                if type(seq) is list and any(hook is _audit_marker for hook in seq):
                    return seq
    return None

def audit_hooks():
    """sys.addaudithook's hooks: the interpreter's own list (do not modify), or None.

    The list hangs off the interpreter state only, and CPython untracks it
    from gc; the "sys.addaudithook" event does not pass the new hook. But
    sys.audit iterates the list with an ordinary, gc-tracked list iterator
    (3.8-3.13), so a marker hook of our own, called from that loop, finds the
    list through it. The marker is added on the first call only (a process
    that never asks pays nothing; afterwards each audit event costs one
    Python call more), and the list is kept: it lives until finalization.
    None when a hook vetoed adding the marker or the event, or CPython's loop
    changed: then audit hooks are not checked (and not looked for again).
    """
    global _audit_hooks, _audit_searched
    if not _audit_searched:
        _audit_searched = True
        sys.addaudithook(_audit_marker)  # a hook raising RuntimeError silently refuses it
        found = []
        try:
            sys.audit("modhost.find_audit_hooks", found)
        except Exception:
            return None
        _audit_hooks = next((hooks for hooks in found if hooks is not None), None)
    return _audit_hooks
