"""A second plugin: /status. Unloading it (modhost.unload / cache.unload)
removes its route from the router."""
import router


def status(method: str, path: str) -> tuple[int, str]:
    return 200, "ok"


router.add_route("/status", status)
