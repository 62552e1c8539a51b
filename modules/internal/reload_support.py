"""The import-system steps of a reload, run by modhost's C++ module cache.

They are importlib's own steps (spec lookup, module lock, module attributes),
so they stay in Python; the cache decides what code runs and undoes it on
failure. Embedded into the library at build time (see CMakeLists.txt).
"""
import sys
from contextlib import nullcontext as _nothing
from importlib import _bootstrap, machinery
from io import open_code
from opcode import opmap as _opmap

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

# Opcodes that bind a name in a module's namespace (_defined_names).
_EXTENDED_ARG = _opmap["EXTENDED_ARG"]
_SETUP_ANNOTATIONS = _opmap["SETUP_ANNOTATIONS"]
_NAME_STORES = frozenset({_opmap["STORE_NAME"], _opmap["DELETE_NAME"]})
_GLOBAL_STORES = frozenset({_opmap["STORE_GLOBAL"], _opmap["DELETE_GLOBAL"]})

def _defined_names(code):
    """(top_level, in_functions): the names `code`'s own statements bind in its module.

    top_level: what the module's top-level statements assign, import or
    delete (STORE_NAME and friends), plus __annotations__ when it has
    annotations. in_functions: what its functions and class bodies assign
    through a `global` statement. `from x import *` is not counted: those
    names are x's. Read straight from the bytecode (no dis: this runs on
    every deep reload of every module).
    """
    top, nested = set(), set()
    todo = [(code, True)]
    while todo:
        co, is_module = todo.pop()
        ops, names, extended = co.co_code, co.co_names, 0
        for i in range(0, len(ops), 2):
            op, arg = ops[i], ops[i + 1] | extended
            extended = arg << 8 if op == _EXTENDED_ARG else 0
            if op in _GLOBAL_STORES:
                (top if is_module else nested).add(names[arg])
            elif is_module and op in _NAME_STORES:
                top.add(names[arg])
            elif is_module and op == _SETUP_ANNOTATIONS:
                top.add("__annotations__")
        todo.extend((const, False) for const in co.co_consts if isinstance(const, type(code)))
    return top, nested

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
            old_top, old_nested = _defined_names(old_code) if old_code is not None else (None, set())
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
                new_top, new_nested = _defined_names(code)
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

def is_initializing(module):
    return getattr(getattr(module, '__spec__', None), '_initializing', False)

def drop_bytecode_cache(path):
    from importlib.util import cache_from_source
    import os
    try:
        os.remove(cache_from_source(path))
    except (OSError, ValueError, NotImplementedError):
        pass

def install_source_loader(note_source):
    """Source files load through TrackedSourceLoader from now on.

    It hands the source bytes it read to `note_source(name, path, bytes, None)`
    and then the code it made of them (`note_source(name, path, bytes, code)`),
    so the cache fingerprints the very source whose code runs (not the file as
    it is after the import finished) and knows which names that code defines,
    and it compiles from that source whenever
    the bytecode cache could be stale: a .pyc only records the source's mtime
    in whole seconds and its size, so an edit that keeps the size and the mtime
    (to the second) would otherwise bring back old code.
    """
    import os
    from importlib.util import cache_from_source

    class TrackedSourceLoader(machinery.SourceFileLoader):
        def get_code(self, fullname):
            source_path = self.get_filename(fullname)
            source = self.get_data(source_path)
            note_source(fullname, source_path, source, None)
            try:
                # ctime: an edit moves it even when the mtime is put back.
                source_ctime_ns = os.stat(source_path).st_ctime_ns
                pyc_mtime_ns = os.stat(cache_from_source(source_path)).st_mtime_ns
            except (OSError, NotImplementedError, ValueError):
                code = super().get_code(fullname)
            else:
                if pyc_mtime_ns <= source_ctime_ns:  # written before the last edit: may be stale
                    code = self.source_to_code(source, source_path)
                else:
                    code = super().get_code(fullname)
            note_source(fullname, source_path, source, code)
            return code

    loaders = [(machinery.ExtensionFileLoader, machinery.EXTENSION_SUFFIXES),
               (TrackedSourceLoader, machinery.SOURCE_SUFFIXES),
               (machinery.SourcelessFileLoader, machinery.BYTECODE_SUFFIXES)]
    for i, hook in enumerate(sys.path_hooks):
        if getattr(hook, "__name__", "") == "path_hook_for_FileFinder":
            sys.path_hooks[i] = machinery.FileFinder.path_hook(*loaders)
            sys.path_importer_cache.clear()
            return True
    return False

_from_import_code = (None, {}, [])  # the code last looked at: offsets, instructions

def from_import_targets(frame):
    """[(name, bound_as)] for the `from x import name as bound_as` that `frame` is running.

    The names bound are only in the bytecode: IMPORT_NAME, then an IMPORT_FROM
    and a STORE_* for each name.
    """
    global _from_import_code
    import dis
    code = frame.f_code
    if _from_import_code[0] is not code:  # a module's imports come one after another
        instructions = list(dis.get_instructions(code))
        _from_import_code = (code, {ins.offset: k for k, ins in enumerate(instructions)}, instructions)
    _, index, instructions = _from_import_code
    k = index.get(frame.f_lasti)
    if k is None or instructions[k].opname != "IMPORT_NAME":
        return []
    pairs = []
    k += 1
    while k + 1 < len(instructions) and instructions[k].opname == "IMPORT_FROM":
        store = instructions[k + 1]
        if not store.opname.startswith("STORE_"):
            break
        pairs.append((instructions[k].argval, store.argval))
        k += 2
    return pairs

def make_policy(roots, strict):
    """check(name, origin, event): announce a load or reload, then enforce the rules.

    The audit event (modhost.load / modhost.reload with the name and path)
    lets a host's audit hook log or veto it. Module roots: the file, with
    symlinks resolved, must be under one of `roots` or in the stdlib. Strict
    permissions: neither the file nor its directory may be writable by group
    or others, or owned by another user than this process's (or root).
    """
    import os
    import sysconfig
    roots = [os.path.realpath(r) for r in roots]
    stdlib = [os.path.realpath(sysconfig.get_paths()[key]) for key in ("stdlib", "platstdlib")]

    def under(path, dirs):
        return any(path == d or path.startswith(d.rstrip(os.sep) + os.sep) for d in dirs)

    def refuse(name, origin, why):
        raise ImportError(f"modhost refuses to load {name!r} from {origin}: {why}", name=name, path=origin)

    def check(name, origin, event):
        sys.audit(event, name, origin)
        if origin is None or not (roots or strict):
            return
        real = os.path.realpath(origin)
        if roots and not under(real, roots) and not under(real, stdlib):
            resolved = f" (it resolves to {real})" if real != os.path.abspath(origin) else ""
            refuse(name, origin, f"outside the module roots {roots}{resolved}")
        if strict:
            for path in (real, os.path.dirname(real)):
                st = os.stat(path)
                if st.st_mode & 0o022:
                    refuse(name, origin, f"{path} is writable by group or others "
                                         f"(mode {st.st_mode & 0o777:o}; strict permissions)")
                if st.st_uid not in (os.getuid(), 0):
                    refuse(name, origin, f"{path} is owned by uid {st.st_uid}, not by this "
                                         f"process's user or root (strict permissions)")
    return check


class LoadGuard:
    """First on sys.meta_path: each module found is checked before any of its code runs."""

    def __init__(self, check):
        self.check = check

    def find_spec(self, name, path=None, target=None):
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(name, path, target)
            if spec is not None:
                if name not in sys.modules:  # a reload checks (and announces) itself
                    self.check(name, spec.origin if spec.has_location else None, "modhost.load")
                return spec
        return None

