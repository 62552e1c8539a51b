"""Type stub for `modhost`, the module cache seen from scripts (bindings/modhost_module.cpp)."""
from types import ModuleType, SimpleNamespace
from typing import Callable

__version__: str

class ModuleInUseError(RuntimeError):
    """unload() refused: something still holds the module or its code."""
    name: str
    referrers: list[str]

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
    outcome: str  # 'reloaded', 'unchanged', 'not reloadable', 'failed'
    generation: int
    duration: float  # seconds
    added: list[str]
    removed: list[str]
    reexecuted: list[str]
    patched: list[str]
    not_patched: list[str]
    instances_not_moved: list[str]
    rebound: list[str]
    rolled_back: bool
    failed_module: str
    error: str | None

class UnloadReport:
    unloaded: list[str]
    lingering: list[str]
    freed: bool

def load(name: str) -> ModuleType: ...
def reload(module: ModuleType | str, *, deep: bool = False, dependents: bool = False) -> ModuleType: ...
def last_reload() -> ReloadReport | None: ...
def unload(name: str, *, force: bool = False) -> UnloadReport: ...
def refcount(name: str) -> int: ...
def referrers(name: str) -> list[str]: ...
def is_changed(name: ModuleType | str) -> bool: ...
def changed() -> list[str]: ...
def dependencies(name: ModuleType | str) -> list[str]: ...
def dependents(name: ModuleType | str) -> list[str]: ...
def from_imports(name: ModuleType | str) -> dict[str, list[str]]: ...
def info(name: ModuleType | str) -> ModuleInfo: ...
def modules() -> list[str]: ...
def on_reload(callback: Callable[[str, int], object]) -> Callable[[], None]: ...
def interpreter_info() -> dict[str, object]: ...
