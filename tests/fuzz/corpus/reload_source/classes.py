import enum, dataclasses, functools
class Color(enum.Enum):
    RED = 1
@dataclasses.dataclass
class P:
    x: int = 0
@functools.lru_cache
def f(n):
    return n
class Thing:
    def m(self):
        return 1
