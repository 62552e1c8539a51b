"""Deep reload: put a module's new code into the objects that already exist.

Run by modhost's C++ module cache after a module's new source ran in a
namespace without the names the old source defined (reload_support.execute).
Existing functions get the new code, existing classes are updated in place
(identity preserved: their own slot descriptors, ABC registry and run-time
class state stay; what __init_subclass__ or a metaclass registered names the
kept class), stateless sentinels keep identity, names other modules took
with `from m import name` are rebound, and `__reload__(old)` hands state
over. What cannot take the new code (closures over other state, methods exec'd
with globals of their own) is rebound and listed in not_patched; nothing is
asked of an object it does not own except through its type (proxies
evaluate themselves). Every change to an object outside the module's own
namespace goes through an Undo, so a failure at any point restores them all;
the cache restores the namespace itself. Embedded into the library at build
time (see CMakeLists.txt).
"""
import builtins
import enum
import gc
from functools import partial
import sys
import types

# IMPORT_DUNDERS and defined_names(code) -> (top_level, in_functions)
# (reload_support.py's), class_constants(body) -> {name:
# constant} (bytecode_imports.h's constants_bound_by), uncounted_references and
# holders_among (reference_counts.h) are handed over by python_helpers.cpp.
# Per-class descriptors that belong to their own class object.
CLASS_OWN = frozenset({"__dict__", "__weakref__"})
# An ABC's registry of virtual subclasses (`Base.register(Other)`, done by
# other modules) and its subclass-check caches: the old class keeps its own.
ABC_STATE = "_abc_impl"
FUNCTION_STATE = ("__code__", "__defaults__", "__kwdefaults__", "__doc__", "__dict__")  # + annotation_state()
ENUM_INTERNALS = ("_member_names_", "_member_map_", "_value2member_map_", "_unhashable_values_")
MISSING = object()
# Values whose equality is all there is to them (no identity worth keeping).
IMMUTABLE = frozenset({str, bytes, int, float, complex, bool, type(None), frozenset, range})
# Values that nothing tells apart when equal (unlike 0.0 and -0.0).
SAME_WHEN_EQUAL = frozenset({str, bytes, int, bool, type(None)})


def is_dunder(name):
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def interchangeable(a, b):
    """Setting b where a is would change nothing (an unchanged docstring, constant, empty dict)."""
    if a is b:
        return True
    kind = type(a)
    return kind is type(b) and ((kind in SAME_WHEN_EQUAL and a == b) or (kind is dict and not a and not b))


# A module's globals and class attributes can be proxies (werkzeug's
# LocalProxy, lazy objects) that evaluate themselves on any attribute lookup,
# and isinstance() looks up __class__. So what deep update asks of an object
# it does not own goes through its type, never through the object.
def is_a(obj, cls):
    """isinstance() by the real type only."""
    return issubclass(type(obj), cls)


def same_items(a, b):
    """Two sequences (or Nones) holding the very same objects: no __eq__ runs."""
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(x is y or (type(x) is tuple and same_items(x, y)) for x, y in zip(a, b))


def instance_dict(obj):
    """obj's own __dict__, or None; never runs obj's code (a proxy's __dict__ lookup would)."""
    for klass in type(obj).__mro__:
        entry = klass.__dict__.get("__dict__")
        if entry is not None:
            if type(entry) is not types.GetSetDescriptorType:
                return None  # the class computes __dict__ itself
            break
    else:
        return None
    try:
        found = entry.__get__(obj, type(obj))
    except (AttributeError, TypeError):
        return None
    return found if type(found) is dict else None


def wrapped_of(obj):
    """The function a decorator stored in obj.__wrapped__ (functools.wraps), or None."""
    found = instance_dict(obj)
    return None if found is None else found.get("__wrapped__")


class FrameBuiltins(dict):
    """The builtins of the frames that run a deep reload's module code: the few
    entries DeepUpdate.run_code puts in, everything else read from the
    module's real builtins when asked, so what the code adds to builtins while
    it runs (gettext.install's `_`) is found at once."""

    __slots__ = ("real",)

    def __init__(self, real):
        super().__init__()
        self.real = real

    def __missing__(self, key):
        return self.real[key]


class Undo:
    """A log of changes to live objects, undone newest first."""

    def __init__(self):
        self._steps = []

    def setattr(self, obj, name, value, setter=setattr, deleter=delattr):
        if name == "__class__":
            old = type(obj)  # getattr would ask the object (a proxy answers for its target)
        else:
            old = obj.__dict__.get(name, MISSING) if is_a(obj, type) else getattr(obj, name, MISSING)
        setter(obj, name, value)
        # partial, not a lambda: one object per step instead of a function and its cells.
        self._steps.append(partial(deleter, obj, name) if old is MISSING else partial(setter, obj, name, old))

    def set_function_state(self, function, name, value, old, old_name=None):
        """setattr of a function's own state (__code__, __defaults__...), whose old value the caller read
        (as `old_name`, when that was another attribute: __annotate__ and __annotations__)."""
        setattr(function, name, value)
        self._steps.append(partial(setattr, function, old_name or name, old))

    def delattr(self, obj, name, setter=setattr, deleter=delattr):
        old = obj.__dict__[name] if is_a(obj, type) else getattr(obj, name)
        deleter(obj, name)
        self._steps.append(partial(setter, obj, name, old))

    def setitem(self, mapping, key, value):
        old = mapping.get(key, MISSING)
        mapping[key] = value
        self._steps.append(lambda: mapping.pop(key, None) if old is MISSING else mapping.__setitem__(key, old))

    def setindex(self, sequence, index, value):
        old = sequence[index]
        sequence[index] = value
        self._steps.append(partial(sequence.__setitem__, index, old))

    def rekey(self, mapping, key, new_key):
        """mapping[new_key] takes mapping[key]'s value (and place at the end)."""
        value = mapping.pop(key)
        mapping[new_key] = value

        def undo():
            mapping.pop(new_key, None)
            mapping[key] = value
        self._steps.append(undo)

    def rollback(self):
        while self._steps:
            self._steps.pop()()


def class_set(undo, cls, name, value):
    if name == "__module__" and "__firstlineno__" in cls.__dict__:
        # Since 3.13, assigning __module__ drops __firstlineno__ too. Recorded
        # first, so that a rollback puts it back after restoring __module__.
        class_set(undo, cls, "__firstlineno__", cls.__dict__["__firstlineno__"])
    # type.__setattr__ skips metaclass hooks (EnumType refuses to reassign members).
    undo.setattr(cls, name, value, setter=type.__setattr__, deleter=type.__delattr__)


def class_del(undo, cls, name):
    undo.delattr(cls, name, setter=type.__setattr__, deleter=type.__delattr__)


def annotation_state(function):
    """(attribute, value) that gives a function its annotations without computing them.

    Since 3.14 (PEP 649) a function's annotations are made by its __annotate__
    the first time __annotations__ is read, and making them can raise (a
    forward reference to a name defined later, or never): while there is an
    __annotate__, it is what moves (setting it drops the dict made from the
    previous one). Without one, __annotations__ is a plain dict (before 3.14:
    always).
    """
    annotate = getattr(function, "__annotate__", None)
    if annotate is not None:
        return "__annotate__", annotate
    return "__annotations__", function.__annotations__


def _references_of_the_call():
    probes = [object()]  # its only holder is the list, itself a holder
    return uncounted_references(probes, [probes])[0]


# The temporaries uncounted_references itself adds, should a version's C API
# take any: measured once.
UNCOUNTED_BY_THE_CALL = _references_of_the_call()


CO_OPTIMIZED = 0x1  # a function's code (fast locals); never a class body's


def class_bodies(code):
    """{qualname: code} of the class bodies in a module's code, nested classes
    included; not those inside functions (their classes are not the module's)."""
    bodies, todo = {}, [code]
    while todo:
        co = todo.pop()
        for const in co.co_consts:
            if type(const) is type(code) and not const.co_flags & CO_OPTIMIZED:
                bodies.setdefault(const.co_qualname, const)
                todo.append(const)
    return bodies


class DeepUpdate:
    def __init__(self, module, old, undo, old_code=None):
        self.module = module
        # Class bodies of the code that ran before and of the new code, by qualname.
        self.old_bodies = class_bodies(old_code) if old_code is not None else {}
        self.new_bodies = {}
        # id(class body code) -> (the code, class_constants(code)); by id, since
        # an unchanged class's old and new bodies are equal and comparing two
        # code objects walks every method's code.
        self.body_constants = {}
        self.body_names = {}  # id(class body code) -> (the code, the names it binds)
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

    def run_code(self, code):
        """Runs the module's new code; its class statements yield the existing classes.

        `class Cls:` pours the new body into the old Cls and binds that, so
        whatever the new code does with the class at once (a registry, a
        singledispatch registration, instances in a list, a subclass's bases)
        already has the class that stays.

        Only the frames of the module's top level and of its class bodies see
        this: a class statement looks __build_class__ up in its frame's
        builtins, and those frames get builtins of their own (FrameBuiltins).
        The builtins module, the module's `__builtins__` and the functions the
        code defines (they take their builtins from the module's globals when
        they are made) stay as python3 has them, so the code reads the real
        builtins.__build_class__ and nothing it keeps holds this update.
        """
        namespace = self.module.__dict__
        if "__builtins__" not in namespace:
            namespace["__builtins__"] = builtins.__dict__  # what exec() would insert
        module_builtins = namespace["__builtins__"]
        real = vars(module_builtins) if is_a(module_builtins, types.ModuleType) else module_builtins
        original = real["__build_class__"]
        frame_builtins = FrameBuiltins(real)

        def with_frame_builtins(code, name=None, defaults=None, closure=None):
            # A function takes its builtins from its globals' __builtins__ when
            # it is made; the module's own entry is back before any code runs.
            current = namespace.get("__builtins__", MISSING)
            namespace["__builtins__"] = frame_builtins
            try:
                return types.FunctionType(code, namespace, name, defaults, closure)
            finally:
                if current is MISSING:
                    del namespace["__builtins__"]
                else:
                    namespace["__builtins__"] = current

        def build_class(body, name, *bases, **keywords):
            if type(body) is not types.FunctionType or body.__globals__ is not namespace:
                return original(body, name, *bases, **keywords)
            # The body runs with these builtins too: nested class statements.
            body = with_frame_builtins(body.__code__, body.__name__, body.__defaults__, body.__closure__)
            new = original(body, name, *bases, **keywords)
            self.new_bodies[body.__code__.co_qualname] = body.__code__
            old = self.old_class(new.__qualname__)
            if old is None or not self.owns_class(new) or self.layout_change(old, new):
                # A layout change is decided where the name is bound (run()):
                # a decorator may still make the class that gets bound (attrs
                # and dataclass(slots=True) build a slotted copy of it).
                return new
            return self.update_class(old, new, f"{self.name}.{new.__qualname__}")

        frame_builtins["__build_class__"] = build_class
        # IMPORT_NAME reads __import__ from the frame's builtins as a plain dict.
        frame_builtins["__import__"] = real["__import__"]
        top_level = with_frame_builtins(code)
        sys.audit("exec", code)  # what exec() tells audit hooks
        try:
            # A module's code (no CO_OPTIMIZED) called as a function runs with
            # its globals as its locals, as exec(code, namespace) runs it.
            top_level()
        finally:
            frame_builtins.clear()  # what the code keeps of its frames holds nothing of this update

    def old_class(self, qualname):
        """The class the old namespace had under `qualname` (nested classes too)."""
        parts = qualname.split(".")
        if "<locals>" in parts:
            return None
        obj = self.old.get(parts[0])
        for part in parts[1:]:
            obj = obj.__dict__.get(part) if is_a(obj, type) else None
        return obj if self.owns_class(obj) else None

    # -- ownership --------------------------------------------------------

    def owns_function(self, obj):
        return type(obj) is types.FunctionType and obj.__module__ == self.name

    def owns_class(self, obj):
        return is_a(obj, type) and obj.__dict__.get("__module__") == self.name

    @staticmethod
    def innermost(obj):
        """The function a decorator wrapper keeps in __wrapped__ (or obj)."""
        if type(obj) is types.FunctionType and "__wrapped__" not in obj.__dict__:
            return obj  # a plain function, the common case
        seen = set()
        while id(obj) not in seen:
            seen.add(id(obj))
            inner = wrapped_of(obj)
            if inner is None:
                break
            obj = inner
        return obj

    # -- functions --------------------------------------------------------

    def same_cells(self, old, new, depth=0):
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
            if is_a(b_value, type) and self.class_map.get(b_value) is a_value:
                continue  # the class it was made for (a dataclass's generated methods)
            if type(a_value) is type(b_value) and type(a_value) in IMMUTABLE and a_value == b_value:
                continue  # equal constants ("//" in jinja2's binop factories) are interchangeable
            new_and_old = self.function_map.get(id(b_value))
            if (new_and_old[1] if new_and_old and new_and_old[0] is b_value else b_value) is a_value:
                continue
            if depth < 3 and self.same_function(a_value, b_value, depth + 1):
                continue
            return False
        return True

    def same_function(self, old, new, depth):
        """Two functions a decorator made the same way for the old and the new code:
        the module's own function (the undecorated `async def` that jinja2's
        async_variant keeps in a cell) takes the new code; another module's helper
        closure is the same when its code is equal (that module may have been deep-reloaded
        since: its old closures keep their code objects) and its cells are too."""
        if type(old) is not types.FunctionType or type(new) is not types.FunctionType:
            return False
        if old.__qualname__ != new.__qualname__:
            return False
        if self.owns_function(old) and self.owns_function(new):
            return self.patch_function(old, new) is None
        return (old.__code__ == new.__code__ and old.__globals__ is new.__globals__
                and same_items(old.__defaults__, new.__defaults__)
                and same_items(old.__kwdefaults__ and list(old.__kwdefaults__.items()),
                               new.__kwdefaults__ and list(new.__kwdefaults__.items()))
                and self.same_cells(old, new, depth))

    def patch_function(self, old, new):
        """Put new's code into old. Returns why it cannot go in, or None once it is in."""
        if old is new:
            return None
        if old.__globals__ is not new.__globals__:
            # Code made by exec into a dict of its own (attrs' and dataclasses'
            # generated methods, namedtuple's __new__) reads names only that
            # dict has; the new code in the old function would not find them.
            return "its globals are not the module's"
        if old.__code__.co_freevars != new.__code__.co_freevars:
            return "its free variables changed"
        if new.__closure__ and not self.same_cells(old, new):
            return "its free variables changed"
        state = {attr: getattr(new, attr) for attr in FUNCTION_STATE}
        # A default or attribute that is the new function itself must be the
        # function that stays: networkx's argmap keeps its wrapper in a keyword
        # default and marks it with `wrapper.__self__ = wrapper`.
        if state["__defaults__"] and any(value is new for value in state["__defaults__"]):
            state["__defaults__"] = tuple(old if value is new else value for value in state["__defaults__"])
        for attr in ("__kwdefaults__", "__dict__"):
            if state[attr] and any(value is new for value in state[attr].values()):
                state[attr] = {key: old if value is new else value for key, value in state[attr].items()}
        if "__wrapped__" in old.__dict__ and "__wrapped__" in new.__dict__:
            state["__dict__"] = dict(state["__dict__"], __wrapped__=old.__dict__["__wrapped__"])
        for attr, value in state.items():
            current = getattr(old, attr)
            if not interchangeable(current, value):  # each change is logged for a rollback
                self.undo.set_function_state(old, attr, value, current)
        (attr, value), (old_attr, current) = annotation_state(new), annotation_state(old)
        if attr != old_attr or not interchangeable(current, value):
            self.undo.set_function_state(old, attr, value, current, old_name=old_attr)
        self.function_map[id(new)] = (new, old)
        return None

    def patch_callable(self, old, new, where):
        """Functions and decorator wrappers: patch the innermost functions in place."""
        if not self.owns_function(self.innermost(old)):
            return False  # someone else's function: never rewrite it
        if type(old) is types.FunctionType and type(new) is types.FunctionType:
            if "__wrapped__" in old.__dict__ and "__wrapped__" in new.__dict__:
                if not self.patch_callable(old.__dict__["__wrapped__"], new.__dict__["__wrapped__"], where):
                    return False
            reason = self.patch_function(old, new)
            if reason is None:
                return True
            self.not_patched.append(f"function {where} ({reason})")
            return False
        inner_old, inner_new = self.innermost(old), self.innermost(new)
        if inner_old is old or inner_new is new or not self.owns_function(inner_old):
            return False
        reason = "its wrapper changed" if type(old) is not type(new) else self.patch_function(inner_old, inner_new)
        if reason is not None:
            self.not_patched.append(f"function {where} ({reason})")
            return False
        if callable(getattr(type(old), "cache_clear", None)):  # functools.lru_cache: results of old code
            self.after_commit.append(old.cache_clear)
        return True

    def adopt_class_cells(self, value, cls):
        """Zero-argument super() in a function moved into `cls` must see `cls`.

        The function may sit inside a decorator's wrapper: behind __wrapped__
        (innermost), or only in a cell of the wrapper's closure when the
        decorator (often another module's) kept no __wrapped__. There its
        __class__ cell names the class the new statement made, which this
        update discards: such cells, a few closures deep, name the kept class.
        """
        functions = [value]
        if is_a(value, (classmethod, staticmethod)):
            functions = [value.__func__]
        elif is_a(value, property):
            functions = [value.fget, value.fset, value.fdel]
        todo = [(self.innermost(function), 0) for function in functions]
        seen = set()
        while todo:
            function, depth = todo.pop()
            if type(function) is not types.FunctionType or not function.__closure__ or id(function) in seen:
                continue
            seen.add(id(function))
            for name, cell in zip(function.__code__.co_freevars, function.__closure__):
                try:
                    content = cell.cell_contents
                except ValueError:
                    continue
                if is_a(content, type):
                    # The member's own __class__ cell is cls's whatever it names;
                    # deeper ones only when they name a class this update discards.
                    target = cls if name == "__class__" and depth == 0 else self.class_map.get(content)
                    if target is not None and content is not target:
                        self.undo.setattr(cell, "cell_contents", target)
                elif depth < 3 and type(content) is types.FunctionType:
                    todo.append((self.innermost(content), depth + 1))

    # -- classes ----------------------------------------------------------

    def layout_change(self, old, new):
        """Why `new` cannot be poured into `old`, or None."""
        if tuple(self.class_map.get(b, b) for b in new.__bases__) != old.__bases__:
            return "its bases changed"
        if self.class_map.get(type(new), type(new)) is not type(old):
            return "its metaclass changed"
        if self.slot_names(old) != self.slot_names(new):
            return "its __slots__ changed"
        if self.layout(old) != self.layout(new):
            return "its instance layout changed"
        return None

    @staticmethod
    def slot_names(cls):
        """The slots its instances have, in order, from the slot descriptors themselves:
        a module may delete __slots__ once the class exists (jinja2.runtime does)."""
        return [key for key, value in cls.__dict__.items()
                if type(value) is types.MemberDescriptorType and value.__objclass__ is cls]

    @staticmethod
    def layout(cls):
        return cls.__basicsize__, cls.__itemsize__, cls.__dictoffset__, cls.__weakrefoffset__

    @staticmethod
    def is_layout_descriptor(value, cls):
        """A slot (member) or __dict__/__weakref__ (getset) descriptor made for `cls`.

        It reads a fixed offset of `cls`'s instances and checks that the
        instance is a `cls`, so it only ever works on the class it was made
        for; the kept class has its own, for the same layout.
        """
        return (type(value) in (types.MemberDescriptorType, types.GetSetDescriptorType)
                and value.__objclass__ is cls)

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
            if key == ABC_STATE and key in old.__dict__:
                continue
            if self.is_layout_descriptor(value, new):
                continue  # old's own slot descriptor stays: it is the one that fits old's instances
            current = old.__dict__.get(key, MISSING)
            if interchangeable(current, value):  # setting a class attribute clears the type's caches
                continue
            if self.patch_member(current, value, f"{where}.{key}"):
                continue
            if self.set_by_metaclass(old, key):
                self.not_patched.append(f"attribute {where}.{key} (kept the old one: only a class "
                                        f"statement can put a {key} in a class)")
                continue
            if self.is_run_time_state(old, new, key, current):
                continue
            self.adopt_class_cells(value, old)
            class_set(self.undo, old, key, value)
        bound = self.bound_by_the_old_body(old)
        for key in list(old.__dict__):
            if key not in new.__dict__ and key not in CLASS_OWN and key not in ENUM_INTERNALS and key != ABC_STATE:
                if bound is not None and key not in bound and not is_dunder(key):
                    continue  # set at run time (a metaclass's cache, the program): it stays
                if self.set_by_metaclass(old, key):
                    self.not_patched.append(f"attribute {where}.{key} (kept the old one: only a class "
                                            f"statement can take a {key} out of a class)")
                    continue
                class_del(self.undo, old, key)
        clear_caches = getattr(type(old), "_abc_caches_clear", None)
        if ABC_STATE in old.__dict__ and clear_caches is not None:
            # Subclass checks cached against the old body may not hold for the new one.
            clear_caches(old)
        self.patched.append(f"class {where}")
        return old

    def is_run_time_state(self, old, new, key, current):
        """A class attribute whose `key = constant` the edit left alone, and which
        the running program has changed since (networkx's argmap counts the
        functions it compiles in `__count`, and their names must stay unique):
        its value is state, not code, and the class keeps it, as the old class
        would with importlib.reload."""
        old_body = self.old_bodies.get(old.__qualname__)
        new_body = self.new_bodies.get(new.__qualname__)
        if old_body is None or new_body is None or current is MISSING:
            return False
        before = self.constants_of(old_body).get(key, MISSING)
        after = self.constants_of(new_body).get(key, MISSING)
        if before is MISSING or type(before) is not type(after) or before != after:
            return False  # not a constant, or the edit changed it: the new value wins
        return type(current) is not type(before) or current != before

    def bound_by_the_old_body(self, old):
        """The names the class body that made `old` binds, or None when that body
        is not known (a module run before the cache saw its code).

        Only those, and dunders, go when the new body no longer binds them: a
        dunder is what class creation makes (type, the metaclass, a class
        decorator such as dataclass), so it goes with the statement that made
        it; any other attribute the body never bound was set at run time (a
        metaclass caching per class, like pygments' LexerMeta its `_tokens`;
        the program) and stays, as module globals set at run time do.
        """
        body = self.old_bodies.get(old.__qualname__)
        if body is None:
            return None
        found = self.body_names.get(id(body))
        if found is None:
            found = self.body_names[id(body)] = (body, defined_names(body)[0])
        return found[1]

    def constants_of(self, body):
        """class_constants(body), read once per body and reload (it walks the bytecode)."""
        found = self.body_constants.get(id(body))
        if found is None:
            found = self.body_constants[id(body)] = (body, class_constants(body))
        return found[1]

    # Names the metaclass's own data descriptors store in the class's dict,
    # so setattr on the class puts them there like any other attribute.
    DICT_BACKED = frozenset({"__doc__", "__module__", "__annotations__", "__abstractmethods__"})

    @classmethod
    def set_by_metaclass(cls, klass, key):
        """setattr(klass, key) would change the class object itself (its __class__,
        __name__, __bases__...) instead of storing `key` in its dict: a class body
        defining `__class__` (werkzeug's LocalProxy) gets it into the dict, a setattr cannot."""
        if key in cls.DICT_BACKED:
            return False
        for base in type(klass).__mro__:
            found = base.__dict__.get(key, MISSING)
            if found is not MISSING:
                return hasattr(type(found), "__set__")
        return False

    def patch_member(self, current, value, where):
        """Patch a class member in place where both versions are the same kind of thing."""
        if current is MISSING:
            return False
        if is_a(current, type) and is_a(value, type) and self.owns_class(value):
            bound = self.update_class(current, value, where)
            return bound is current
        if is_a(current, (classmethod, staticmethod)) and type(current) is type(value):
            return self.patch_callable(current.__func__, value.__func__, where)
        if type(current) is property and type(value) is property:
            # The property object stays (a subclass or another module may hold
            # it) when each of its functions can take the new code.
            pairs = [(getattr(current, part), getattr(value, part)) for part in ("fget", "fset", "fdel")]
            if all((a is None) == (b is None) for a, b in pairs) and current.__doc__ == value.__doc__:
                if all(a is None or self.patch_callable(a, b, where) for a, b in pairs):
                    return True
        if callable(current) and callable(value) and not is_a(value, type):
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

    def is_sentinel(self, old, new):
        """Two stateless markers made the same way (`_missing = object()`, jinja2's
        `missing = type("MissingType", (), {...})()`): code compares them by identity,
        and callers still hold the old one, so the old one must stay."""
        if type(old) is object and type(new) is object:
            return True
        old_type, new_type = type(old), type(new)
        if not (self.owns_class(old_type) and self.owns_class(new_type)):
            return False
        if self.class_map.get(new_type, new_type) is not old_type and old_type.__qualname__ != new_type.__qualname__:
            return False
        if any(attr in vars(klass) for klass in (old_type, new_type) for attr in ("__eq__", "__slots__")):
            return False  # compared by value, or holds state in slots
        return instance_dict(old) == {} and instance_dict(new) == {}

    def keep_sentinels(self, namespace):
        """Bind every sentinel the new code made again to the old one, wherever the
        module's own code took it (defaults, closures, class attributes)."""
        kept = {}
        for key, new in list(namespace.items()):
            old = self.old.get(key, MISSING)
            if key in IMPORT_DUNDERS or old is MISSING or old is new or not self.is_sentinel(old, new):
                continue
            kept[id(new)] = (new, old)
            namespace[key] = old
        if not kept:
            return

        def mapped(value):
            pair = kept.get(id(value))
            return pair[1] if pair is not None and pair[0] is value else value

        functions, seen = [], set()

        def collect(value):
            if is_a(value, (classmethod, staticmethod)):
                value = value.__func__
            elif type(value) is property:
                for part in (value.fget, value.fset, value.fdel):
                    collect(part)
                return
            value = self.innermost(value)
            if type(value) is types.FunctionType and value.__globals__ is namespace and id(value) not in seen:
                seen.add(id(value))
                functions.append(value)

        classes = [value for value in namespace.values() if self.owns_class(value)]
        for cls in classes:
            for key, value in list(cls.__dict__.items()):
                if mapped(value) is not value:
                    class_set(self.undo, cls, key, mapped(value))
                collect(value)
        for value in list(namespace.values()):
            collect(value)
        for function in functions:
            if function.__defaults__ and any(mapped(v) is not v for v in function.__defaults__):
                self.undo.setattr(function, "__defaults__", tuple(mapped(v) for v in function.__defaults__))
            if function.__kwdefaults__ and any(mapped(v) is not v for v in function.__kwdefaults__.values()):
                self.undo.setattr(function, "__kwdefaults__",
                                  {k: mapped(v) for k, v in function.__kwdefaults__.items()})
            for cell in function.__closure__ or ():
                try:
                    content = cell.cell_contents
                except ValueError:
                    continue
                if mapped(content) is not content:
                    self.undo.setattr(cell, "cell_contents", mapped(content))

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
            elif callable(old) and callable(new) and not is_a(old, type) and not is_a(new, type):
                if self.patch_callable(old, new, where):
                    namespace[key] = old
                    self.patched.append(f"function {where}")
        return self

    def holders_of(self, news):
        """What holds the discarded classes, besides their own structure.

        A heap scan finds it, at a cost in proportion to every object of the
        process; counting references avoids it where it can. Most class
        statements leave their class held only by what the statement itself
        made (its MRO, a subclass's bases, its own descriptors, a method's
        __class__ cell, a generated method's copy of the module's namespace)
        and by this update's maps: when those account for the whole
        refcount, the holders are among them. A registry the new code filled at
        top level lives in the module's namespace or one step from it: when
        that accounts for the rest, its holders are known. Anything else (an
        instance or registry elsewhere) leaves references unaccounted for,
        and the heap is scanned.
        """
        holders = self.made_by_the_statements(news)
        internal = [self.class_map, self.old, self.function_map, news, holders]
        if not self.all_accounted_for(news, holders):
            self.add_around_the_namespace(holders)
            if not self.all_accounted_for(news, holders):
                holders = gc.get_referrers(*news)
        return holders_among(holders, news, internal)

    @staticmethod
    def all_accounted_for(news, holders):
        return all(count <= UNCOUNTED_BY_THE_CALL for count in uncounted_references(news, holders))

    def made_by_the_statements(self, news):
        """What class statements made that holds classes, and the update's own maps (a list)."""
        holders = [news, self.class_map]
        for cls in (*news, *self.class_map.values()):
            holders += (cls, cls.__mro__, cls.__bases__)
            for value in cls.__dict__.values():
                holders.append(value)
                function = value.__func__ if type(value) in (classmethod, staticmethod) else value
                if type(function) is types.FunctionType:
                    holders += function.__closure__ or ()
                    # Generated methods (attrs, dataclasses) run in globals of
                    # their own, often a copy of the module's namespace.
                    if function.__globals__ is not self.module.__dict__:
                        holders.append(function.__globals__)
        return holders

    def add_around_the_namespace(self, holders):
        """Adds the module's namespace, its values and what they hold (other modules aside)."""
        namespace = self.module.__dict__
        near = [namespace, *namespace.values()]
        holders += near
        holders += gc.get_referents(*[obj for obj in near if type(obj) is not types.ModuleType])

    def redirect_to_kept_classes(self):
        """What creating a new class put elsewhere now names the class that stays.

        Python runs a base's __init_subclass__, a metaclass's __new__/__init__
        and the new code's own statements with the class the statement created;
        the name then binds to the old class, which took that class's content.
        So registries they filled (`Base.registry[cls.__name__] = cls`, a dict
        keyed by class, a list) get the old class, and instances of the
        discarded class (made at top level, or by a registry) move onto it.
        At most one heap scan for all of the module's classes (holders_of).
        """
        news = [new for new, old in self.class_map.items() if new is not old]
        holders = self.holders_of(news) if news else []
        if not holders:
            return
        kept = {id(new): self.class_map[new] for new in news}

        def target(value):
            return kept.get(id(value)) if is_a(value, type) else None

        # A class's own namespace changes through setattr (the type's attribute
        # cache). type.__new__ puts __module__ into every class's namespace, so
        # only such a dict needs the second scan that finds its class.
        dicts = [h for h in holders if type(h) is dict and "__module__" in h]
        owner_of = {}
        if dicts:
            wanted = {id(d) for d in dicts}
            for holder in gc.get_referrers(*dicts):
                if is_a(holder, type):
                    for part in gc.get_referents(holder):
                        if id(part) in wanted:
                            owner_of[id(part)] = holder
        for holder in holders:
            kind = type(holder)
            if kind is dict:
                owner = owner_of.get(id(holder))
                for key, value in list(holder.items()):
                    old = target(value)
                    if old is not None:
                        if owner is not None:
                            class_set(self.undo, owner, key, old)
                        else:
                            self.undo.setitem(holder, key, old)
                    old_key = target(key)
                    if owner is None and old_key is not None and old_key not in holder:
                        self.undo.rekey(holder, key, old_key)
            elif kind is list:
                for index, value in enumerate(holder):
                    old = target(value)
                    if old is not None:
                        self.undo.setindex(holder, index, old)
            elif id(kind) in kept:  # an instance of a discarded class
                try:
                    self.undo.setattr(holder, "__class__", kept[id(kind)], setter=object.__setattr__)
                except TypeError:
                    pass
            else:
                # An object whose attributes live in the object itself, not in
                # a dict gc sees (3.13's inline values): a descriptor's owner.
                try:
                    attributes = object.__getattribute__(holder, "__dict__")
                except (AttributeError, TypeError):
                    continue
                if type(attributes) is dict:
                    for key, value in list(attributes.items()):
                        old = target(value)
                        if old is not None:
                            self.undo.setitem(attributes, key, old)


    def finish(self):
        """After the new code ran: patch what class statements did not. Returns the report lists."""
        self.run()
        self.keep_sentinels(self.module.__dict__)
        self.redirect_to_kept_classes()
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



# Containers compared by value when everything in them is (an `__all__`, a
# table of strings): a dependent holding the old copy reads the same contents.
PLAIN_CONTAINERS = frozenset({tuple, list, frozenset, set, dict})


def same_plain_value(a, b, depth=0):
    """a and b are equal values of plain data: comparing them runs no one's __eq__."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind in SAME_WHEN_EQUAL:
        return a == b
    if kind not in PLAIN_CONTAINERS or depth > 8 or len(a) != len(b) or len(a) > 10000:
        return False
    if kind is dict:
        return all(type(k) in SAME_WHEN_EQUAL and k in b and same_plain_value(v, b[k], depth + 1)
                   for k, v in a.items())
    if kind in (set, frozenset):
        return all(type(x) in SAME_WHEN_EQUAL for x in a) and a == b
    return all(same_plain_value(x, y, depth + 1) for x, y in zip(a, b))


def changed_names(module, old):
    """After a deep reload of `module` (old: its namespace before): what its
    importers could hold stale.

    Returns (changed, functions), frozensets of names. changed: the names
    whose value is not the object it was (deep update keeps patched functions
    and classes, so those are not changed), plain equal values aside, and the
    names gone or new. functions: the names bound to plain functions, which
    a dependent's top level may have called to compute something from the
    module's state. The import system's attributes do not count (a new spec
    describes the same file)."""
    namespace = module.__dict__
    changed = set()
    for key in set(old) | set(namespace):
        if key in IMPORT_DUNDERS:
            continue
        before, after = old.get(key, MISSING), namespace.get(key, MISSING)
        if before is after or (before is not MISSING and after is not MISSING and same_plain_value(before, after)):
            continue
        changed.add(key)
    functions = {key for key, value in namespace.items() if type(value) is types.FunctionType}
    return frozenset(changed), frozenset(functions)
