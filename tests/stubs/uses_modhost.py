# Checked by mypy against the installed stub (package.stubs): the calls a
# script makes type-check, and the last line is the one error expected.
import modhost

module = modhost.reload("plug", deep=True, dependents="as_needed")
report = modhost.last_reload()
if report is not None and report.error_line is not None:
    line: int = report.error_line
token: int = modhost.subscribe(lambda r: print(r.outcome, r.targets))
modhost.unsubscribe(token)
names: list[str] = modhost.check()
modhost.unload(42)
