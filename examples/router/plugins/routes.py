"""The router's routes. Edit this file while the router runs: the next
request is answered by the new code, without a restart. Each add_route
belongs to this plugin: delete one and it is gone after the reload; break
the file and exactly the routes below keep serving."""
import router
from auth import allowed

VERSION = 1
ITEMS = {1: "apple", 2: "pear", 3: "plum"}


def hello(method: str, path: str) -> tuple[int, str]:
    return 200, f"hello from routes v{VERSION}"


def item(method: str, path: str) -> tuple[int, str]:
    key = int(path.rsplit("/", 1)[1])
    return (200, ITEMS[key]) if key in ITEMS else (404, "no such item")


def other(method: str, path: str) -> tuple[int, str]:
    return (404, "not found") if allowed(path) else (403, "forbidden")


router.add_route("/hello", hello)
router.add_route("/items/", item)
router.add_route("/", other)
