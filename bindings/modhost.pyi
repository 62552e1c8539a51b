"""Type stub for `modhost`, the module cache seen from scripts (bindings/modhost_module.cpp)."""
import os
from types import ModuleType, SimpleNamespace
from typing import Callable, Literal, TypeVar

__version__: str

class ModuleInUseError(RuntimeError):
    """unload() refused: something still holds the module or its code; or reload()
    found other threads still running its code after wait_for_calls."""
    name: str
    referrers: list[str]

class TimeLimitExceeded(BaseException): ...

class time_limit:
    expired: bool
    def __init__(self, seconds: float) -> None:
        """seconds > 0; float('inf') is no limit. NaN, 0 and negatives: ValueError."""
    def __enter__(self) -> "time_limit": ...
    def __exit__(self, *args: object) -> bool: ...

class ModuleInfo:
    name: str
    path: str | None
    kind: str  # 'source', 'package', 'namespace package', 'built-in', 'extension', 'other'
    state: str  # 'loaded', 'reloading', 'failed', 'unloaded'
    generation: int
    reloadable: bool
    fingerprint: SimpleNamespace | None  # size, mtime_ns, ctime_ns, inode, content_hash
    last_error: str | None
    dependencies: list[str]
    dependents: list[str]

class ReloadReport:
    name: str
    targets: list[str]  # every module asked for (several: reloaded as one set)
    outcome: str  # 'reloaded', 'unchanged', 'not reloadable', 'deferred', 'failed'
    generation: int
    duration: float  # seconds
    added: list[str]
    removed: list[str]
    reexecuted: list[str]
    patched: list[str]
    not_patched: list[str]
    instances_not_moved: list[str]
    rebound: list[str]
    spared: list[str]  # dependents='as_needed': dependents not re-run
    rolled_back: bool
    acquisition_errors: list[str]  # releases / re-acquisitions that raised
    failed_module: str
    error: str | None  # 'Type: message'
    error_type: str | None
    error_message: str | None
    error_file: str | None  # where it was raised (a SyntaxError's own file)
    error_line: int | None
    deferred_by: str  # a deferred autoreload: the module the main thread was running

class UnloadReport:
    unloaded: list[str]
    lingering: list[str]
    freed: bool
    acquisition_errors: list[str]  # releases that raised (the others still ran)

# timeout: seconds > 0, None or float('inf') for no limit; wait_for_calls: seconds >= 0,
# float('inf') to wait as long as the calls run, None for no waiting and no holding.
# NaN and negative numbers are a ValueError.
def load(name: str, *, timeout: float | None = None) -> ModuleType: ...
# reload([a, b, ...]) reloads several modules as one transaction and returns them in that order.
def reload(module: ModuleType | str | list[ModuleType | str], *, deep: bool = False,
           dependents: bool | Literal["as_needed"] = False, timeout: float | None = None,
           wait_for_calls: float | None = 1.0) -> ModuleType | list[ModuleType]: ...
def last_reload() -> ReloadReport | None: ...
def unload(name: str, *, force: bool = False) -> UnloadReport:
    """Refuses (ModuleInUseError) while anything holds the module or its code, also a
    signal handler, atexit callback, audit hook, sys/threading excepthook or a profile
    or trace function; force=True unloads anyway and lists them in .lingering."""
_T = TypeVar("_T")
def acquire(acquire: Callable[[], _T], release: Callable[[_T], object], *,
            module: ModuleType | str | None = None) -> _T:
    """Call acquire() now and return its result; release(result) runs before the calling
    module's code re-runs (newest first) and when it unloads. A failed reload releases
    what the new code acquired and acquires the old ones again with the same callables.
    ValueError if no tracked module's code calls it and module= is not given."""
def acquired(name: ModuleType | str) -> list[str]:
    """One line per live acquisition: what, where it was acquired, what releases it."""
def refcount(name: str) -> int: ...
def referrers(name: str) -> list[str]:
    """Who holds the module or its code: "module 'app' global 'hook' (function plug.hook)",
    "signal handler for SIGUSR1 (function plug.on_signal)", "atexit callback (...)",
    "audit hook (...)", "sys.excepthook (...)", "trace function of thread main (...)"..."""
def is_changed(name: ModuleType | str) -> bool: ...
def changed() -> list[str]: ...
def dependencies(name: ModuleType | str) -> list[str]: ...
def dependents(name: ModuleType | str) -> list[str]: ...
def from_imports(name: ModuleType | str) -> dict[str, list[str]]: ...  # ImportError if not loaded
def info(name: ModuleType | str) -> ModuleInfo: ...
def modules() -> list[str]: ...
def on_reload(callback: Callable[[str, int], object]) -> Callable[[], None]: ...
def subscribe(callback: Callable[[ReloadReport], object]) -> int:
    """Every reload that reloaded, failed or was deferred (the autoreloader's too), once
    per reload call for its whole set; not unchanged modules."""
def unsubscribe(token: int) -> None: ...
def autoreload(mode: str | None = None) -> str: ...
# watch/unwatch: the module need not be imported yet; ValueError for a name no module can have.
def watch(name: ModuleType | str) -> None: ...
def unwatch(name: ModuleType | str) -> None: ...
def watch_directory(directory: str | os.PathLike[str]) -> None:
    """Any spelling ('.', 'dir/', a symlink); FileNotFoundError / NotADirectoryError otherwise."""
def check() -> list[str]: ...
def watcher_info() -> dict[str, object]: ...
def interpreter_info() -> dict[str, object]: ...
