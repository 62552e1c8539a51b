"""Runs CPython's own tests under modhost and under python3.NN (3.11, 3.14, 3.15), and compares.

Driven by scripts/cpython-tests (which builds modhost and installs Debian's
libpython3.11-testsuite). Usage:

    python3 scripts/cpython_tests.py MODHOST PYTHON [--jobs N] [--timeout S] [TEST ...]

Every test module runs twice, once per interpreter, as `-m test -v TEST`,
each in its own process, at most --jobs at a time (longest first). The
verbose output names every test case that fails or errors (subtests and
setUpClass included) and says how many ran. A test case that fails under
modhost but not under python3.11 is run again, alone, under both: a failure
that does not come back is reported as flaky and does not fail the run
(regrtest's own --rerun does the same). Exits 1 when modhost adds a failure.

What makes the comparison fair:
- One test module per process and no `-j` inside regrtest: `-j` starts its
  workers with sys.executable, which under modhost is a python3 of the same
  installation (so subprocess and multiprocessing work), so the tests would
  not run under modhost at all.
- The baseline is `python3.11 -P -m test`. modhost puts no working directory
  on sys.path unless asked (`--cwd-path`) and starts CPython with
  PyConfig.safe_path, so sys.flags.safe_path is 1 and children started with
  support.args_from_interpreter_flags() get -P too; `python3.11 -P` has the
  same sys.path, the same flags and the same children. Running modhost with
  --cwd-path instead would still differ from `python3 -m` (it adds '' where
  -m adds the absolute directory) and would not test modhost as users run it.
- Same working directory (an empty temporary one, so nothing in it can
  shadow a module), same environment, with PYTHON* variables removed:
  modhost ignores PYTHONHOME and python3.11 does not, and a caller's
  PYTHONPATH must not make the two runs import different things.
- Children that tests start with sys.executable run python3.11 under both
  interpreters; what differs is the interpreter running the tests.
"""
import argparse
import concurrent.futures
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

# The 18 modules issue 11 names and those that watch what modhost must keep
# invisible or must start like python3 (tracebacks, tracers, profilers, the
# debugger, doctest's and linecache's view of modules, site and atexit at
# start-up and exit). Not here: tests whose subject runs in a child started
# with sys.executable (test_cmd_line*, test_subprocess: python3.11 in both
# runs) and slow ones about the compiler alone (test_compileall). Slowest
# first (as measured under python3.11), so that the workers finish together.
TESTS = [
    "test_signal", "test_weakref", "test_faulthandler", "test_threading", "test_importlib",
    "test_pydoc", "test_trace", "test_gc", "test_exceptions", "test_doctest", "test_sys_settrace",
    "test_pyclbr", "test_sys", "test_inspect", "test_traceback", "test_runpy", "test_enum",
    "test_import", "test_warnings", "test_cprofile", "test_dataclasses", "test_zipimport",
    "test_pdb", "test_py_compile", "test_modulefinder", "test_site", "test_zipimport_support",
    "test_pkgutil", "test_bdb", "test_profile", "test_atexit", "test_module", "test_linecache",
    "test_sys_setprofile",
]

SEPARATOR = "=" * 70
# unittest's summary of each failure: "FAIL: test_x (test.test_m.Cls.test_x) (i=1)";
# setUpClass/setUpModule errors read "ERROR: setUpClass (test.test_m.Cls)".
FAILURE_HEADER = re.compile(r"^(FAIL|ERROR): (\S+) \(([^)\s]+)\)(.*)$")
CASE_LINE = re.compile(r"^(\S+) \(([^)\s]+)\)")
RAN = re.compile(r"^Ran (\d+) tests? in ")
SKIPPED = re.compile(r"^(?:OK|FAILED) \(.*\bskipped=(\d+)")
ADDRESS = re.compile(r" at 0x[0-9a-f]+")


@dataclasses.dataclass
class Outcome:
    """One test module under one interpreter."""
    test: str
    interpreter: str
    ran: int = 0
    skipped: int = 0
    # test id -> the first failure line naming it ("FAIL: ..."), for the report
    failures: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    returncode: int = 0
    log: str = ""


def case_key(name, test_id):
    """The test id a failure belongs to: test.test_m.Cls.test_x, or
    test.test_m.Cls.setUpClass for a class fixture."""
    if test_id == name or test_id.endswith("." + name):
        return test_id
    return f"{test_id}.{name}"


def parse(test, interpreter, text):
    outcome = Outcome(test, interpreter)
    lines = text.splitlines()
    completed = False
    last_case = None
    for i, line in enumerate(lines):
        if m := RAN.match(line):
            outcome.ran += int(m.group(1))
            completed = True
        elif m := SKIPPED.match(line):
            outcome.skipped += int(m.group(1))
        elif (m := FAILURE_HEADER.match(line)) and i > 0 and lines[i - 1] == SEPARATOR:
            key = case_key(m.group(2), m.group(3))
            outcome.failures.setdefault(key, ADDRESS.sub("", line))
        elif m := CASE_LINE.match(line):
            last_case = case_key(m.group(1), m.group(2))
        if line.endswith("... unexpected success") and last_case:
            outcome.failures.setdefault(last_case, f"UNEXPECTED SUCCESS: {last_case}")
    # What unittest's own report cannot say: the module did not finish (a
    # crash, regrtest's --timeout, an import error) or changed the environment
    # (threads, files, signal handlers left behind).
    if not completed:
        reason = "timed out" if re.search(r"^Timeout \(", text, re.M) else "did not complete"
        outcome.failures[f"{test} [{reason}]"] = f"{test}: {reason}, see the log"
    if re.search(rf"^{test} failed \(env changed\)", text, re.M) or \
            re.search(r"^== Tests result: ENV CHANGED", text, re.M):
        outcome.failures[f"{test} [environment changed]"] = f"{test}: regrtest says the environment changed"
    return outcome


def match_pattern(key):
    """The --match pattern that runs just that test case again."""
    if key.endswith((".setUpClass", ".tearDownClass")):
        return key.rsplit(".", 1)[0] + ".*"
    if key.endswith((".setUpModule", ".tearDownModule")) or " [" in key:
        return None  # the whole module
    return key


def run(command, test, interpreter, cwd, env, log_dir, timeout, match=()):
    suffix = "-rerun" if match else ""
    log = os.path.join(log_dir, f"{test}-{interpreter}{suffix}.log")
    args = [*command, "-m", "test", "-v", "--timeout", str(timeout)]
    for pattern in match:
        args += ["--match", pattern]
    args.append(test)
    start = time.monotonic()
    with open(log, "w") as out:
        try:
            # regrtest's --timeout dumps the threads and exits; this one is
            # for a process that hangs where faulthandler cannot help.
            returncode = subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, timeout=timeout + 120).returncode
        except subprocess.TimeoutExpired:
            returncode = None
    with open(log, errors="replace") as f:
        outcome = parse(test, interpreter, f.read())
    outcome.seconds = time.monotonic() - start
    outcome.returncode = returncode
    outcome.log = log
    if returncode is None:
        outcome.failures[f"{test} [killed]"] = f"{test}: killed after {timeout + 120} s"
    return outcome


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modhost")
    parser.add_argument("python")
    parser.add_argument("tests", nargs="*", default=TESTS)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--timeout", type=int, default=900, help="per test module, as regrtest's --timeout")
    parser.add_argument("--keep", help="write the logs here (default: a temporary directory, removed on success)")
    ns = parser.parse_intermixed_args()

    work = tempfile.mkdtemp(prefix="modhost-cpython-tests-")
    cwd = os.path.join(work, "cwd")
    log_dir = ns.keep or os.path.join(work, "logs")
    os.makedirs(cwd)
    os.makedirs(log_dir, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    baseline = os.path.basename(ns.python)  # python3.11, python3.14, ...
    interpreters = {baseline: [ns.python, "-P"], "modhost": [ns.modhost]}

    start = time.monotonic()
    jobs = [(test, name) for test in ns.tests for name in interpreters]
    outcomes = {}
    with concurrent.futures.ThreadPoolExecutor(ns.jobs) as pool:
        futures = {pool.submit(run, interpreters[name], test, name, cwd, env, log_dir, ns.timeout): (test, name)
                   for test, name in jobs}
        for future in concurrent.futures.as_completed(futures):
            outcome = future.result()
            outcomes[outcome.test, outcome.interpreter] = outcome
            print(f"  {outcome.test:<22} {outcome.interpreter:<10} ran {outcome.ran:>5}  "
                  f"failed {len(outcome.failures):>3}  {outcome.seconds:6.1f} s", flush=True)

    # A failure modhost adds must come back when that test case runs alone
    # under both interpreters, or it counts as flaky.
    added, flaky = {}, {}
    for test in ns.tests:
        base, ours = outcomes[test, baseline], outcomes[test, "modhost"]
        new = [key for key in ours.failures if key not in base.failures]
        if not new:
            continue
        patterns = [match_pattern(key) for key in new]
        match = () if None in patterns else sorted(set(patterns))
        again = {name: run(interpreters[name], test, name, cwd, env, log_dir, ns.timeout, match)
                 for name in interpreters}
        for key in new:
            pattern = match_pattern(key)
            # A module-level failure counts if it comes back as any failure.
            still = key in again["modhost"].failures if pattern else bool(again["modhost"].failures)
            if still and key not in again[baseline].failures:
                added[key] = ours.failures[key]
            else:
                flaky[key] = ours.failures[key]
    elapsed = time.monotonic() - start

    def ran(name):
        return sum(outcomes[t, name].ran for t in ns.tests)

    def failed(name):
        return sum(len(outcomes[t, name].failures) for t in ns.tests)

    print(f"\nCPython's test suite ({len(ns.tests)} modules), modhost vs {baseline} -P, in {elapsed / 60:.1f} min:")
    print(f"{'module':<22} {'run (py/mh)':>13} {'failed py':>10} {'failed mh':>10} {'added':>6}")
    for test in ns.tests:
        base, ours = outcomes[test, baseline], outcomes[test, "modhost"]
        n_added = sum(1 for key in added if key.startswith(f"test.{test}.") or key.startswith(f"{test} ["))
        print(f"{test:<22} {base.ran:>6}/{ours.ran:<6} {len(base.failures):>10} {len(ours.failures):>10} {n_added:>6}")
    print(f"{'total':<22} {ran(baseline):>6}/{ran('modhost'):<6} "
          f"{failed(baseline):>10} {failed('modhost'):>10} {len(added):>6}")
    for test in ns.tests:  # not a failure, but a test that modhost keeps from running
        base, ours = outcomes[test, baseline], outcomes[test, "modhost"]
        if ours.skipped > base.skipped:
            print(f"note: {test} skips {ours.skipped} test cases under modhost, {base.skipped} under {baseline}")
    for key in sorted(flaky):
        print(f"flaky (passed when run again, not counted): {flaky[key]}")
    for key in sorted(added):
        print(f"added by modhost: {added[key]}")
    if added:
        print(f"\n{len(added)} failure(s) that {baseline} does not have; logs in {log_dir}")
        return 1
    print("\nmodhost adds no failure")
    if not ns.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
