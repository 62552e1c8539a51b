"""Real packages, not fixtures: deep reload, dependents and unload on jinja2, click,
flask, attrs, jsonschema, idna and networkx (Debian's python3-* packages,
installed by scripts/setup.sh, copied into a temporary directory).

For every module the workloads load: a harmless edit (an appended
`_modhost_probe = 1`) and modhost.reload(m, deep=True), after which the
package's workload gives its first answer again, wherever importlib.reload
keeps it working (python3 itself runs the same edits with importlib.reload
in a subprocess: real_packages.py). Then dependents=True on each package's
most-imported module; unload of every leaf module with refcount() == 0; and
referrers()/unload() of every module raise nothing but ModuleInUseError.
Prints the counts.
"""
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import warnings

import modhost
import real_packages as corpus


def reference_python():
    """python3 of the installation modhost links (its stdlib is the one modhost runs)."""
    candidate = os.path.join(sys.base_prefix, "bin", "python%d.%d" % sys.version_info[:2])
    return candidate if os.access(candidate, os.X_OK) else None


def purge():
    """Every corpus module unloaded (force: the previous round's objects may still be held)."""
    tops = {name.split(".")[0] for name in corpus.corpus_modules()}
    for top in sorted(tops):
        if top in sys.modules:
            modhost.unload(top, force=True)
    for name in corpus.corpus_modules():  # a submodule whose package had already gone
        modhost.unload(name, force=True)
    gc.collect()


class RealPackageCorpus(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.started = time.monotonic()
        # networkx warns (ImportWarning) about every optional dependency it lacks.
        warnings.filterwarnings("ignore", category=ImportWarning)
        cls.work = tempfile.mkdtemp(prefix="modhost-corpus-")
        cls.ref_dir = tempfile.mkdtemp(prefix="modhost-corpus-ref-")
        missing = corpus.copy_packages(cls.work)
        if missing:
            raise AssertionError("Debian packages missing for %s: run scripts/setup.sh as root "
                                 "(it installs python3-jinja2 python3-click python3-flask python3-attr "
                                 "python3-jsonschema python3-idna python3-networkx)" % missing)
        python = reference_python()
        if python is None:
            raise AssertionError("no python%d.%d beside %s to run the importlib reference"
                                 % (sys.version_info[:2] + (sys.base_prefix,)))
        # The reference runs beside this test (the machine has two cores).
        cls.reference_run = subprocess.Popen(
            [python, corpus.__file__, cls.ref_dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        sys.path.insert(0, cls.work)
        corpus.use_debian_dependencies()

    @classmethod
    def tearDownClass(cls):
        purge()
        sys.path.remove(cls.work)
        shutil.rmtree(cls.work, ignore_errors=True)
        shutil.rmtree(cls.ref_dir, ignore_errors=True)

    def reference(self):
        out, err = self.reference_run.communicate(timeout=300)
        self.assertEqual(self.reference_run.returncode, 0, "the importlib reference failed:\n" + err.decode())
        return json.loads(out)

    def test_deep_reload_dependents_and_unload_keep_every_package_working(self):
        counts = dict(modules=0, reloaded=0, patched=0, not_patched=0, broken_as_with_importlib=0,
                      dependents_reexecuted=0, leaves_unloaded=0, leaves_whose_code_is_held=0,
                      refused_in_use=0, raised_as_with_importlib=0)
        held = []           # leaves refused because live objects hold their code, and by whom
        failures = []       # (module, what went wrong)
        changed = {}        # module -> the workload's answer after its deep reload, when it changed
        raised = {}         # module -> what its deep reload raised (rolled back)

        phase_seconds = dict(reload=0.0, dependents=0.0, unload=0.0)
        for package in corpus.PACKAGES:
            phase_started = time.monotonic()
            purge()
            first = corpus.answer(package)
            self.assertNotIn("raised", first[:8], "the %s workload fails before any reload" % package)

            # 1. Every module: a harmless edit and a deep reload, then the workload.
            for name in corpus.package_modules(package):
                module = sys.modules.get(name)
                if module is None:
                    continue
                counts["modules"] += 1
                corpus.append_probe(module)
                try:
                    self.assertIs(modhost.reload(module, deep=True), module)
                except Exception as e:
                    # Fine where importlib.reload raises too (checked below), if
                    # the rollback left the package working as it was.
                    raised[name] = "deep reload raised %s: %s" % (type(e).__name__, e)
                    now = corpus.answer(package)
                    if now != first:
                        failures.append((name, "the package stopped working after a failed deep reload "
                                               "(%s): %s" % (raised[name], now[:300])))
                        purge()
                        corpus.answer(package)
                    continue
                report = modhost.last_reload()
                if report.outcome != "reloaded" or vars(module).get("_modhost_probe") != 1:
                    failures.append((name, "the edit did not run (outcome %s)" % report.outcome))
                counts["reloaded"] += report.outcome == "reloaded"
                counts["patched"] += len(report.patched)
                counts["not_patched"] += len(report.not_patched)
                now = corpus.answer(package)
                if now != first:
                    changed[name] = now
                    purge()  # the next module starts from a working package, as in the reference
                    corpus.answer(package)

            phase_seconds["reload"] += time.monotonic() - phase_started
            phase_started = time.monotonic()

            # 2. dependents=True on the module most others import.
            names = corpus.package_modules(package)
            target = max(names, key=lambda n: (len(modhost.dependents(n)), n))
            corpus.append_probe(sys.modules[target])
            try:
                modhost.reload(target, deep=True, dependents=True)
                report = modhost.last_reload()
                counts["dependents_reexecuted"] += len(report.reexecuted)
                now = corpus.answer(package)
                if now != first:
                    failures.append((target, "dependents=True changed the workload's answer: " + now[:300]))
            except Exception as e:
                failures.append((target, "dependents=True raised %s: %s" % (type(e).__name__, e)))

            phase_seconds["dependents"] += time.monotonic() - phase_started
            phase_started = time.monotonic()

            # 3. Unload of every leaf nothing holds (the workloads' objects are
            # garbage by now, some of them in cycles). referrers() runs the scan
            # that unload() runs, so step 4's unload of every module covers it.
            gc.collect()
            names = corpus.package_modules(package)
            loaded = set(names)
            leaves = [n for n in names
                      if not modhost.dependents(n) and not any(o.startswith(n + ".") for o in loaded)]
            for name in leaves:
                if modhost.refcount(name) != 0:
                    continue
                try:
                    holders = modhost.referrers(name)
                except Exception as e:
                    failures.append((name, "referrers() raised %s: %s" % (type(e).__name__, e)))
                    continue
                if holders:
                    # Nothing holds the module, but live objects hold its code
                    # (click's stream cache keeps CliRunner's wrappers): soft purge refuses.
                    try:
                        modhost.unload(name)
                        failures.append((name, "unloaded while referrers() named %s" % holders))
                    except modhost.ModuleInUseError as e:
                        counts["leaves_whose_code_is_held"] += 1
                        held.append("%s: %s" % (name, "; ".join(e.referrers)))
                    except Exception as e:
                        failures.append((name, "unload raised %s: %s" % (type(e).__name__, e)))
                    continue
                try:
                    report = modhost.unload(name)
                    self.assertEqual(list(report.unloaded), [name])
                    self.assertNotIn(name, sys.modules)
                    parent, _, attribute = name.rpartition(".")
                    if parent in sys.modules:
                        self.assertNotIn(attribute, vars(sys.modules[parent]), name)
                    counts["leaves_unloaded"] += 1
                except Exception as e:
                    failures.append((name, "unload of a leaf with refcount() == 0 raised %s: %s"
                                     % (type(e).__name__, e)))

            # 4. unload() of everything else, deepest first: in use, or gone.
            for name in sorted(corpus.package_modules(package), key=lambda n: (-n.count("."), n)):
                if name not in sys.modules:
                    continue
                try:
                    modhost.unload(name)
                except modhost.ModuleInUseError:
                    counts["refused_in_use"] += 1
                except Exception as e:
                    failures.append((name, "unload() raised %s: %s" % (type(e).__name__, e)))
            phase_seconds["unload"] += time.monotonic() - phase_started

        # Where importlib.reload keeps the workload working, deep reload must too.
        reference = self.reference()
        for name, answer in sorted(changed.items()):
            if reference.get(name, "kept") == "kept":
                failures.append((name, "deep reload changed the workload's answer (importlib.reload "
                                       "keeps it): " + answer[:300]))
            else:
                counts["broken_as_with_importlib"] += 1
        for name, what in sorted(raised.items()):
            if reference.get(name) == "raised":
                counts["raised_as_with_importlib"] += 1
            else:
                failures.append((name, what + " (importlib.reload does not raise)"))
        counts["importlib_keeps_working"] = sum(v == "kept" for v in reference.values())
        counts["seconds"] = round(time.monotonic() - self.started, 1)
        counts.update(("seconds_" + phase, round(spent, 1)) for phase, spent in phase_seconds.items())
        print("\nreal-package corpus: " + ", ".join("%s %s" % item for item in counts.items()),
              file=sys.stderr)
        for line in held:
            print("  refused (its code is in use): " + line, file=sys.stderr)
        for name, what in failures:
            print("  FAILED %s: %s" % (name, what), file=sys.stderr)
        self.assertEqual(failures, [])
        self.assertGreater(counts["modules"], 300)
        # networkx 3.4 (Debian sid) refuses to run most of its modules twice.
        self.assertGreater(counts["reloaded"], 100)


if __name__ == "__main__":
    unittest.main()
