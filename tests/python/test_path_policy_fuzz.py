"""Module roots and strict mode against a reference model, on random trees.

Each tree (seeded, so a failure names what to replay) holds modules inside
and outside a root, links to files and to directories (relative, absolute,
dangling, inside and out), zip archives and links to them, and random
permissions (and, as root, another owner). A child modhost imports every
module through every directory or archive that could offer it, with
`--root` and then with `--root --strict`; `model()` says, from Python's own
os.path.realpath and os.stat, what each import must do: load, be refused,
or not be found (a missing file, or a refused zip archive, which zipimport
reports as "No module named").
"""
import json
import os
import random
import shutil
import stat
import subprocess
import tempfile
import textwrap
import unittest
import zipfile

MODHOST = os.environ["MODHOST_EXE"]
TREES = 30

CHILD = textwrap.dedent("""
    import importlib, json, sys
    cases = json.load(open(sys.argv[1]))
    base_path = list(sys.path)
    results = []
    for entry, name in cases:
        sys.path[:] = [entry] + base_path
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        sys.path_importer_cache.clear()
        try:
            module = importlib.import_module(name)
            results.append("ok " + str(module.VALUE))
        except ModuleNotFoundError:
            results.append("missing")
        except ImportError as e:
            results.append("refused " + str(e) if "modhost refuses" in str(e) else "error " + str(e))
        finally:
            sys.modules.pop(name, None)
    print(json.dumps(results))
""")


def under(path, directory):
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def model(path, root, strict, in_zip):
    """What importing the module at `path` must do: 'ok', 'refused' or 'missing'."""
    archive = os.path.dirname(path) if in_zip else path
    if not os.path.exists(archive) or (not in_zip and not os.path.isfile(path)):
        return "missing"
    real = os.path.realpath(path)
    refused = not under(real, os.path.realpath(root))
    if strict and not refused:
        walked = os.path.realpath(archive)
        while True:
            st = os.stat(walked)
            sticky = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
            if (st.st_mode & 0o022 and not sticky) or st.st_uid not in (0, os.geteuid()):
                refused = True
                break
            if walked == "/":
                break
            walked = os.path.dirname(walked)
    if refused:
        return "missing" if in_zip else "refused"
    return "ok"


class Tree:
    def __init__(self, base, seed):
        self.rng = random.Random(seed)
        self.base = base
        self.root = os.path.join(base, "root")
        self.dirs = [self.root, os.path.join(base, "outside")]
        self.modules = []  # (directory, name, value)
        self.zips = []     # (archive path, member name, value)
        self.value = 0
        for top in list(self.dirs):
            os.makedirs(top)
        for _ in range(self.rng.randint(1, 4)):
            parent = self.rng.choice(self.dirs)
            path = os.path.join(parent, f"d{len(self.dirs)}")
            os.makedirs(path)
            self.dirs.append(path)
        for _ in range(self.rng.randint(3, 7)):
            self.add_module(self.rng.choice(self.dirs))
        for _ in range(self.rng.randint(0, 2)):
            self.add_zip(self.rng.choice(self.dirs))
        for _ in range(self.rng.randint(2, 6)):
            self.add_link()
        self.scramble_permissions()

    def next_value(self):
        self.value += 1
        return self.value

    def add_module(self, directory):
        name, value = f"m{self.value + 1}", self.next_value()
        with open(os.path.join(directory, name + ".py"), "w") as f:
            f.write(f"VALUE = {value}\n")
        self.modules.append((directory, name, value))

    def add_zip(self, directory):
        value = self.next_value()
        archive = os.path.join(directory, f"z{value}.zip")
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr(f"zm{value}.py", f"VALUE = {value}\n")
        self.zips.append((archive, f"zm{value}", value))

    def target(self, path, where):
        """A link's target: absolute, or relative to the link's directory."""
        return path if self.rng.random() < 0.5 else os.path.relpath(path, where)

    def add_link(self):
        where = self.rng.choice(self.dirs)
        kind = self.rng.choice(["module", "directory", "zip", "dangling"])
        number = self.next_value()
        if kind == "module" and self.modules:
            directory, name, value = self.rng.choice(self.modules)
            link = os.path.join(where, f"l{number}.py")
            os.symlink(self.target(os.path.join(directory, name + ".py"), where), link)
            self.modules.append((where, f"l{number}", value))
        elif kind == "directory":
            directory = self.rng.choice(self.dirs)
            link = os.path.join(where, f"dl{number}")
            if under(where, directory):
                return  # a loop: nothing to import through it
            os.symlink(self.target(directory, where), link)
            for mod_dir, name, value in list(self.modules):
                if mod_dir == directory:
                    self.modules.append((link, name, value))
        elif kind == "zip" and self.zips:
            archive, member, value = self.rng.choice(self.zips)
            link = os.path.join(where, f"zl{number}.zip")
            os.symlink(self.target(archive, where), link)
            self.zips.append((link, member, value))
        else:
            link = os.path.join(where, f"l{number}.py")
            os.symlink(os.path.join(self.base, "nowhere", "gone.py"), link)
            self.modules.append((where, f"l{number}", None))

    def scramble_permissions(self):
        for directory in self.dirs:
            if self.rng.random() < 0.3:
                os.chmod(directory, self.rng.choice([0o775, 0o777, 0o1777, 0o750]))
        files = [os.path.join(d, n + ".py") for d, n, _ in self.modules] + [a for a, _, _ in self.zips]
        for path in files:
            if os.path.islink(path) or not os.path.exists(path):
                continue
            if self.rng.random() < 0.3:
                os.chmod(path, self.rng.choice([0o664, 0o666, 0o600]))
            if os.geteuid() == 0 and self.rng.random() < 0.15:
                os.chown(path, 65534, 65534)

    def cases(self):
        """(sys.path entry, module name, expected value or None, path, in_zip)."""
        for directory, name, value in self.modules:
            yield directory, name, value, os.path.join(directory, name + ".py"), False
        for archive, member, value in self.zips:
            yield archive, member, value, os.path.join(archive, member + ".py"), True


class PathPolicyFuzz(unittest.TestCase):
    def run_tree(self, seed, strict, outcomes):
        base = os.path.realpath(tempfile.mkdtemp(prefix="modhost-policy-fuzz-"))
        self.addCleanup(shutil.rmtree, base, ignore_errors=True)
        tree = Tree(base, seed)
        cases = list(tree.cases())
        case_file = os.path.join(base, "cases.json")
        with open(case_file, "w") as f:
            json.dump([[entry, name] for entry, name, *_ in cases], f)
        options = ["--root", tree.root] + (["--strict"] if strict else [])
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        done = subprocess.run([MODHOST, *options, "-c", CHILD, case_file], capture_output=True, text=True,
                              timeout=60, env=env)
        self.assertEqual(done.returncode, 0, done.stderr)
        results = json.loads(done.stdout)
        for (entry, name, value, path, in_zip), result in zip(cases, results):
            expected = model(path, tree.root, strict, in_zip)
            got = result.split(" ", 1)[0]
            self.assertEqual(got, expected, f"seed {seed}, strict {strict}: import {name} from {entry} "
                                            f"({path} -> {os.path.realpath(path)}): {result}")
            if got == "ok":
                self.assertEqual(result, f"ok {value}")
            outcomes[(strict, in_zip, got)] = outcomes.get((strict, in_zip, got), 0) + 1

    def test_roots_and_strict_mode_agree_with_the_model(self):
        outcomes = {}
        for seed in range(TREES):
            for strict in (False, True):
                self.run_tree(seed, strict, outcomes)
        # The trees exercised every outcome, in both modes, zips included.
        for strict in (False, True):
            for got in ("ok", "refused", "missing"):
                self.assertGreater(outcomes.get((strict, False, got), 0), 5, (strict, got, outcomes))
            for got in ("ok", "missing"):
                self.assertGreater(outcomes.get((strict, True, got), 0), 2, (strict, got, outcomes))


if __name__ == "__main__":
    unittest.main()
