"""Who may see what: the router asks before every request."""

BLOCKED_PREFIXES = ("/admin",)


def allowed(path: str) -> bool:
    return not path.startswith(BLOCKED_PREFIXES)
