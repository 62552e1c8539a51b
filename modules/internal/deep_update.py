"""Deep reload: put a module's new code into the objects that already exist.

Run by modhost's C++ module cache after a module's new source ran in a fresh
namespace (only the import-system dunders kept). Existing functions get the
new code, existing classes are updated in place (identity preserved), names
other modules took with `from m import name` are rebound, and `__reload__(old)`
hands state over. Every change to an object outside the module's own
namespace goes through an Undo, so a failure at any point restores them all;
the cache restores the namespace itself. Embedded into the library at build
time (see CMakeLists.txt).
"""
import builtins
import contextlib
import enum
import gc
import types

# IMPORT_DUNDERS is handed over from reload_support.py (python_helpers.cpp).
# Per-class descriptors that belong to their own class object.
CLASS_OWN = frozenset({"__dict__", "__weakref__"})
FUNCTION_STATE = ("__code__", "__defaults__", "__kwdefaults__", "__doc__", "__annotations__", "__dict__")
ENUM_INTERNALS = ("_member_names_", "_member_map_", "_value2member_map_", "_unhashable_values_")
MISSING = object()


class Undo:
    """A log of changes to live objects, undone newest first."""

    def __init__(self):
        self._steps = []

    def setattr(self, obj, name, value, setter=setattr, deleter=delattr):
        old = obj.__dict__.get(name, MISSING) if isinstance(obj, type) else getattr(obj, name, MISSING)
        setter(obj, name, value)
        self._steps.append(lambda: deleter(obj, name) if old is MISSING else setter(obj, name, old))

    def delattr(self, obj, name, setter=setattr, deleter=delattr):
        old = obj.__dict__[name] if isinstance(obj, type) else getattr(obj, name)
        deleter(obj, name)
        self._steps.append(lambda: setter(obj, name, old))

    def setitem(self, mapping, key, value):
        old = mapping.get(key, MISSING)
        mapping[key] = value
        self._steps.append(lambda: mapping.pop(key, None) if old is MISSING else mapping.__setitem__(key, old))

    def rollback(self):
        while self._steps:
            self._steps.pop()()


def class_set(undo, cls, name, value):
    # type.__setattr__ skips metaclass hooks (EnumType refuses to reassign members).
    undo.setattr(cls, name, value, setter=type.__setattr__, deleter=type.__delattr__)


def class_del(undo, cls, name):
    undo.delattr(cls, name, setter=type.__setattr__, deleter=type.__delattr__)


class DeepUpdate:
    def __init__(self, module, old, undo):
        self.module = module
        self.name = module.__name__
        self.old = old  # the namespace before the reload (a copy)
        self.undo = undo
        self.patched = []       # updated in place
        self.not_patched = []   # rebound to the new object, with the reason
        self.not_moved = []     # instances left on a replaced class
        self.class_map = {}     # new class -> the old class that now carries its content
        self.function_map = {}  # id(new function) -> (new, the old function that now runs its code)
        self.after_commit = []  # what cannot be undone (clearing caches), run once the reload commits

    # -- class statements -------------------------------------------------

    @contextlib.contextmanager
    def class_statements(self):
        """While the new code runs, its class statements yield the existing classes.

        `class Cls:` pours the new body into the old Cls and binds that, so
        whatever the new code does with the class at once (a registry, a
        singledispatch registration, instances in a list, a subclass's bases)
        already has the class that stays.
        """
        original = builtins.__build_class__
        namespace = self.module.__dict__

        def build_class(body, name, *bases, **keywords):
            new = original(body, name, *bases, **keywords)
            if getattr(body, "__globals__", None) is not namespace:
                return new  # another module's class statement (another thread)
            old = self.old_class(new.__qualname__)
            if old is None or not self.owns_class(new):
                return new
            return self.update_class(old, new, f"{self.name}.{new.__qualname__}")

        builtins.__build_class__ = build_class
        try:
            yield
        finally:
            builtins.__build_class__ = original

    def old_class(self, qualname):
        """The class the old namespace had under `qualname` (nested classes too)."""
        parts = qualname.split(".")
        if "<locals>" in parts:
            return None
        obj = self.old.get(parts[0])
        for part in parts[1:]:
            obj = obj.__dict__.get(part) if isinstance(obj, type) else None
        return obj if self.owns_class(obj) else None

    # -- ownership --------------------------------------------------------

    def owns_function(self, obj):
        return isinstance(obj, types.FunctionType) and obj.__module__ == self.name

    def owns_class(self, obj):
        return isinstance(obj, type) and obj.__module__ == self.name

    @staticmethod
    def innermost(obj):
        """The function a decorator wrapper keeps in __wrapped__ (or obj)."""
        seen = set()
        while hasattr(obj, "__wrapped__") and id(obj) not in seen:
            seen.add(id(obj))
            obj = obj.__wrapped__
        return obj

    # -- functions --------------------------------------------------------

    def same_cells(self, old, new):
        """Closures carry state the code cannot: they must hold the same things."""
        for name, a, b in zip(new.__code__.co_freevars, old.__closure__ or (), new.__closure__ or ()):
            if name == "__class__":
                continue  # the class the method lives in: the old one stays
            try:
                a_value, b_value = a.cell_contents, b.cell_contents
            except ValueError:  # an empty cell
                return False
            if type(a_value) is type(b_value) and type(a_value) in (set, dict, list) and not b_value:
                continue  # per-wrapper bookkeeping started afresh (reprlib.recursive_repr's set)
            if isinstance(b_value, type) and self.class_map.get(b_value) is a_value:
                continue  # the class it was made for (a dataclass's generated methods)
            new_and_old = self.function_map.get(id(b_value))
            if (new_and_old[1] if new_and_old and new_and_old[0] is b_value else b_value) is not a_value:
                return False
        return True

    def patch_function(self, old, new):
        """Put new's code into old. False when it cannot go in (free variables differ)."""
        if old is new:
            return True
        if old.__code__.co_freevars != new.__code__.co_freevars or not self.same_cells(old, new):
            return False
        state = {attr: getattr(new, attr) for attr in FUNCTION_STATE}
        if hasattr(old, "__wrapped__") and hasattr(new, "__wrapped__"):
            state["__dict__"] = dict(state["__dict__"], __wrapped__=old.__wrapped__)
        for attr, value in state.items():
            self.undo.setattr(old, attr, value)
        self.function_map[id(new)] = (new, old)
        return True

    def patch_callable(self, old, new, where):
        """Functions and decorator wrappers: patch the innermost functions in place."""
        if not self.owns_function(self.innermost(old)):
            return False  # someone else's function: never rewrite it
        if isinstance(old, types.FunctionType) and isinstance(new, types.FunctionType):
            if hasattr(old, "__wrapped__") and hasattr(new, "__wrapped__"):
                if not self.patch_callable(old.__wrapped__, new.__wrapped__, where):
                    return False
            if self.patch_function(old, new):
                return True
            self.not_patched.append(f"function {where} (its free variables changed)")
            return False
        inner_old, inner_new = self.innermost(old), self.innermost(new)
        if inner_old is old or inner_new is new or not self.owns_function(inner_old):
            return False
        if type(old) is not type(new) or not self.patch_function(inner_old, inner_new):
            self.not_patched.append(f"function {where} (its wrapper or free variables changed)")
            return False
        if callable(getattr(old, "cache_clear", None)):  # functools.lru_cache: results of old code
            self.after_commit.append(old.cache_clear)
        return True

    def adopt_class_cells(self, value, cls):
        """Zero-argument super() in a function moved into `cls` must see `cls`."""
        functions = [value]
        if isinstance(value, (classmethod, staticmethod)):
            functions = [value.__func__]
        elif isinstance(value, property):
            functions = [value.fget, value.fset, value.fdel]
        for function in functions:
            function = self.innermost(function)
            if not isinstance(function, types.FunctionType) or not function.__closure__:
                continue
            for name, cell in zip(function.__code__.co_freevars, function.__closure__):
                try:
                    content = cell.cell_contents
                except ValueError:
                    continue
                target = cls if name == "__class__" else self.class_map.get(content) if isinstance(content, type) else None
                if target is not None and content is not target:
                    self.undo.setattr(cell, "cell_contents", target)

    # -- classes ----------------------------------------------------------

    def layout_change(self, old, new):
        """Why `new` cannot be poured into `old`, or None."""
        if tuple(self.class_map.get(b, b) for b in new.__bases__) != old.__bases__:
            return "its bases changed"
        if self.class_map.get(type(new), type(new)) is not type(old):
            return "its metaclass changed"
        if old.__dict__.get("__slots__") != new.__dict__.get("__slots__"):
            return "its __slots__ changed"
        if (old.__basicsize__, old.__itemsize__) != (new.__basicsize__, new.__itemsize__):
            return "its instance layout changed"
        return None

    def update_class(self, old, new, where):
        """Update `old` in place from `new`; returns the class the name must bind to."""
        if old is new:
            return old
        if new in self.class_map:  # already poured into an old class (an alias)
            return self.class_map[new]
        reason = self.layout_change(old, new)
        if reason:
            self.replace_class(old, new, where, reason)
            return new
        self.class_map[new] = old
        enum_members = set()
        if issubclass(old, enum.Enum):
            enum_members = self.update_enum_members(old, new)
        for key, value in new.__dict__.items():
            if key in CLASS_OWN or key in enum_members or key in ENUM_INTERNALS:
                continue
            current = old.__dict__.get(key, MISSING)
            if current is value:
                continue
            if self.patch_member(current, value, f"{where}.{key}"):
                continue
            self.adopt_class_cells(value, old)
            class_set(self.undo, old, key, value)
        for key in list(old.__dict__):
            if key not in new.__dict__ and key not in CLASS_OWN and key not in ENUM_INTERNALS:
                class_del(self.undo, old, key)
        self.patched.append(f"class {where}")
        return old

    def patch_member(self, current, value, where):
        """Patch a class member in place where both versions are the same kind of thing."""
        if current is MISSING:
            return False
        if isinstance(current, type) and isinstance(value, type) and self.owns_class(value):
            bound = self.update_class(current, value, where)
            return bound is current
        if isinstance(current, (classmethod, staticmethod)) and type(current) is type(value):
            return self.patch_callable(current.__func__, value.__func__, where)
        if callable(current) and callable(value) and not isinstance(value, type):
            return self.patch_callable(current, value, where)
        return False

    def update_enum_members(self, old, new):
        """Keep every member present in both versions as the same object."""
        members = {}
        for name in new._member_names_:
            member = new._member_map_[name]
            kept = old._member_map_.get(name)
            if kept is not None:
                if kept._value_ != member._value_:
                    self.undo.setattr(kept, "_value_", member._value_, setter=object.__setattr__)
                member = kept
            else:
                self.undo.setattr(member, "__class__", old, setter=object.__setattr__)
            members[name] = member
        value_map = {}
        unhashable = []
        for member in members.values():
            try:
                value_map.setdefault(member._value_, member)
            except TypeError:
                unhashable.append(member._value_)
        for name in old._member_names_:
            if name not in members and name in old.__dict__:
                class_del(self.undo, old, name)
        for name, member in members.items():
            if old.__dict__.get(name) is not member:
                class_set(self.undo, old, name, member)
        class_set(self.undo, old, "_member_names_", list(members))
        class_set(self.undo, old, "_member_map_", members)
        class_set(self.undo, old, "_value2member_map_", value_map)
        if "_unhashable_values_" in old.__dict__:
            class_set(self.undo, old, "_unhashable_values_", unhashable)
        return set(members) | set(old._member_names_)

    def replace_class(self, old, new, where, reason):
        """The name binds to the new class; live instances move where their layout allows."""
        self.not_patched.append(f"class {where} (replaced: {reason})")
        stuck = 0
        for obj in gc.get_referrers(old):
            if type(obj) is old:
                try:
                    self.undo.setattr(obj, "__class__", new, setter=object.__setattr__)
                except TypeError:
                    stuck += 1
        if stuck:
            self.not_moved.append(f"{stuck} instance(s) of {where} stay on the old class")

    # -- the module -------------------------------------------------------

    def run(self):
        namespace = self.module.__dict__
        for key, new in list(namespace.items()):
            if key in IMPORT_DUNDERS:
                continue
            old = self.old.get(key, MISSING)
            if old is MISSING or old is new:
                continue
            where = f"{self.name}.{key}"
            if self.owns_class(old) and self.owns_class(new):
                namespace[key] = self.update_class(old, new, where)
            elif callable(old) and callable(new) and not isinstance(old, type) and not isinstance(new, type):
                if self.patch_callable(old, new, where):
                    namespace[key] = old
                    self.patched.append(f"function {where}")
        # Instances the new code created at top level belong to the classes that stay.
        for key, value in list(namespace.items()):
            target = self.class_map.get(type(value))
            if target is not None:
                try:
                    self.undo.setattr(value, "__class__", target, setter=object.__setattr__)
                except TypeError:
                    pass
        return self


    def finish(self):
        """After the new code ran: patch what class statements did not. Returns the report lists."""
        self.run()
        return self.patched, self.not_patched, self.not_moved

    def commit(self):
        for step in self.after_commit:
            step()


def rebind_from_imports(module, old, importer, names, undo):
    """`from module import name [as bound]` in `importer`: rebind what still holds the old value."""
    namespace = importer.__dict__
    rebound = []
    for entry in names:
        name, _, bound = entry.partition(" as ")
        bound = bound or name
        if name not in module.__dict__ or bound not in namespace:
            continue
        if namespace[bound] is old.get(name, MISSING) and namespace[bound] is not module.__dict__[name]:
            undo.setitem(namespace, bound, module.__dict__[name])
            rebound.append(f"{importer.__name__}.{bound}")
    return rebound

