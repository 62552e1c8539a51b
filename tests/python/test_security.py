"""Nobody gets code in where it does not belong: module roots, strict permissions, audit events.

Roots and strict mode are start-up options of the host program, so those tests
run a child modhost (--root DIR, --strict, --audit-log FILE). Audit hooks
cannot be removed once added, so the in-process tests share one hook whose
behaviour each test sets (and the cleanup resets).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

from cache_fixtures import CacheTestCase, modhost

MODHOST = os.environ["MODHOST_EXE"]


def run(*args, timeout=60, **environment):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **environment)
    return subprocess.run([MODHOST, *args], capture_output=True, text=True, timeout=timeout, env=env)


class ChildCase(unittest.TestCase):
    """A private directory tree (mode 0700, owned by us) for a child modhost."""

    def setUp(self):
        self.base = os.path.realpath(tempfile.mkdtemp(prefix="modhost-security-"))
        self.addCleanup(shutil.rmtree, self.base, ignore_errors=True)

    def make_dir(self, *parts, mode=0o755):
        path = os.path.join(self.base, *parts)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        return path

    def write(self, directory, name, text, mode=0o644):
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        os.chmod(path, mode)
        return path

    def child(self, code, *options):
        """Runs `code` in a child modhost; it prints one JSON line per result."""
        return run(*options, "-c", textwrap.dedent(code))

    def outcome(self, name, *options):
        """'ok' or 'ExceptionType: message' for importing `name` in a child."""
        result = self.child(f"""
            import importlib
            try:
                importlib.import_module({name!r})
                print('ok')
            except BaseException as e:
                print(type(e).__name__ + ': ' + str(e))
        """, *options)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.strip()


class ModuleRoots(ChildCase):
    def setUp(self):
        super().setUp()
        self.root = self.make_dir("root")
        self.outside = self.make_dir("outside")
        self.write(self.root, "inside.py", "VALUE = 'inside'\n")
        self.write(self.outside, "outside.py", "VALUE = 'outside'\n")
        self.options = ("--root", self.root, "-p", self.root, "-p", self.outside)

    def test_module_inside_the_root_loads(self):
        self.assertEqual(self.outcome("inside", *self.options), "ok")

    def test_module_outside_the_roots_is_refused_naming_the_roots(self):
        message = self.outcome("outside", *self.options)
        self.assertTrue(message.startswith("ImportError: "), message)
        self.assertIn("'outside'", message)
        self.assertIn(os.path.join(self.outside, "outside.py"), message)
        self.assertIn("outside the module roots", message)
        self.assertIn(self.root, message)

    def test_without_roots_everything_loads(self):
        self.assertEqual(self.outcome("outside", "-p", self.outside), "ok")

    def test_stdlib_still_imports(self):
        for name in ("json", "email.mime.text", "sqlite3", "xml.etree.ElementTree"):
            with self.subTest(name=name):
                self.assertEqual(self.outcome(name, *self.options), "ok")

    def test_symlink_inside_the_root_pointing_outside_is_refused(self):
        target = self.write(self.outside, "evil.py", "VALUE = 'evil'\n")
        os.symlink(target, os.path.join(self.root, "innocent.py"))
        message = self.outcome("innocent", *self.options)
        self.assertTrue(message.startswith("ImportError: "), message)
        self.assertIn("outside the module roots", message)
        self.assertIn(f"it resolves to {target}", message)

    def test_symlinked_package_directory_pointing_outside_is_refused(self):
        package = self.make_dir("outside", "pkg")
        self.write(package, "__init__.py", "VALUE = 'evil package'\n")
        os.symlink(package, os.path.join(self.root, "pkg"))
        message = self.outcome("pkg", *self.options)
        self.assertTrue(message.startswith("ImportError: "), message)
        self.assertIn("resolves to", message)

    def test_symlink_inside_the_root_pointing_inside_loads(self):
        sub = self.make_dir("root", "real")
        target = self.write(sub, "target.py", "VALUE = 'fine'\n")
        os.symlink(target, os.path.join(self.root, "alias.py"))
        self.assertEqual(self.outcome("alias", *self.options), "ok")

    def test_sibling_directory_sharing_the_roots_prefix_is_outside(self):
        twin = self.make_dir("root2")
        self.write(twin, "twin.py", "VALUE = 'twin'\n")
        message = self.outcome("twin", "--root", self.root, "-p", twin)
        self.assertIn("outside the module roots", message)

    def test_roots_hold_in_a_subinterpreter(self):
        # The cache does not track a subinterpreter's modules; the roots still apply.
        code = f"""
            try:
                import _interpreters as interpreters  # 3.13+
            except ImportError:
                import _xxsubinterpreters as interpreters
            run = getattr(interpreters, "exec", None) or interpreters.run_string
            for name in ("inside", "outside", "json"):
                interpreter = interpreters.create()
                try:
                    failure = run(interpreter, f"import sys; sys.path[:0] = {[self.root, self.outside]!r}; import {{name}}")
                    print(name, "ok" if failure is None else failure)
                except Exception as e:  # 3.11, 3.12: raised
                    print(name, e)
                finally:
                    interpreters.destroy(interpreter)
        """
        result = self.child(code, *self.options)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], "inside ok")
        self.assertTrue(lines[1].startswith("outside "), lines)
        self.assertIn("modhost refuses to load", lines[1])
        self.assertIn(os.path.join(self.outside, "outside.py"), lines[1])
        self.assertIn("outside the module roots", lines[1])
        self.assertEqual(lines[2], "json ok")

    def test_root_given_through_a_symlink(self):
        link = os.path.join(self.base, "root-link")
        os.symlink(self.root, link)
        self.assertEqual(self.outcome("inside", "--root", link, "-p", link), "ok")

    def test_reload_of_a_file_swapped_for_an_outside_symlink_is_refused_and_rolled_back(self):
        evil = self.write(self.outside, "evil.py", "VALUE = 'evil'\ndef hook():\n    return 'evil'\n")
        plugin = os.path.join(self.root, "inside.py")
        result = self.child(f"""
            import json, os, sys, importlib, modhost
            import inside
            before = dict(vars(inside))
            os.remove({plugin!r})
            os.symlink({evil!r}, {plugin!r})
            importlib.invalidate_caches()
            try:
                modhost.reload('inside')
                print(json.dumps(['reloaded', inside.VALUE]))
            except ImportError as e:
                same = vars(inside).keys() == before.keys() and all(vars(inside)[k] is v for k, v in before.items())
                print(json.dumps([type(e).__name__, str(e), same, inside.VALUE,
                                  modhost.info('inside').generation]))
        """, *self.options)
        self.assertEqual(result.returncode, 0, result.stderr)
        kind, message, same, value, generation = json.loads(result.stdout)
        self.assertEqual((kind, same, value, generation), ("ImportError", True, "inside", 1))
        self.assertIn(f"it resolves to {evil}", message)

    def test_importlib_reload_of_a_file_swapped_for_an_outside_symlink_is_refused(self):
        evil = self.write(self.outside, "evil.py", "VALUE = 'evil'\n")
        plugin = os.path.join(self.root, "inside.py")
        result = self.child(f"""
            import json, os, importlib
            import inside
            os.remove({plugin!r})
            os.symlink({evil!r}, {plugin!r})
            try:
                importlib.reload(inside)
                print(json.dumps(['reloaded', inside.VALUE]))
            except ImportError as e:
                print(json.dumps([str(e), inside.VALUE]))
        """, *self.options)
        self.assertEqual(result.returncode, 0, result.stderr)
        message, value = json.loads(result.stdout)
        self.assertIn(f"it resolves to {evil}", message)
        self.assertEqual(value, "inside")

    def test_a_loader_called_directly_is_held_to_the_roots(self):
        # The importlib docs' recipe for importing a source file directly,
        # with and without the sys.modules entry.
        outside = os.path.join(self.outside, "outside.py")
        result = self.child(f"""
            import json, sys, importlib.util
            for register in (True, False):
                spec = importlib.util.spec_from_file_location("by_path", {outside!r})
                module = importlib.util.module_from_spec(spec)
                if register:
                    sys.modules["by_path"] = module
                try:
                    spec.loader.exec_module(module)
                    print(json.dumps(['ran', module.VALUE]))
                except ImportError as e:
                    print(json.dumps([type(e).__name__, str(e), hasattr(module, 'VALUE')]))
            spec = importlib.util.spec_from_file_location("in_root", {os.path.join(self.root, "inside.py")!r})
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            print(json.dumps(['ran', module.VALUE]))
        """, *self.options)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        for kind, message, ran in lines[:2]:
            self.assertEqual((kind, ran), ("ImportError", False))
            self.assertIn(f"modhost refuses to load 'by_path' from {outside}: outside the module roots", message)
        self.assertEqual(lines[2], ["ran", "inside"])

    def test_a_zip_in_the_root_that_links_outside_is_refused(self):
        import zipfile
        evil = os.path.join(self.outside, "evil.zip")
        with zipfile.ZipFile(evil, "w") as archive:
            archive.writestr("zevil.py", "VALUE = 'evil'\n")
        link = os.path.join(self.root, "z.zip")
        os.symlink(evil, link)
        result = self.child(f"""
            import sys
            sys.path.insert(0, {link!r})
            try:
                import zevil
                print('ran', zevil.VALUE)
            except ImportError as e:
                print(e)
        """, *self.options)
        # zipimport says "No module named" for an archive it cannot open;
        # modhost says why on stderr.
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "No module named 'zevil'")
        self.assertIn(f"[modhost] refused to open {link}: outside the module roots", result.stderr)
        self.assertIn(f"it resolves to {evil}", result.stderr)

    def test_a_zip_inside_the_root_loads(self):
        import zipfile
        archive_path = os.path.join(self.root, "good.zip")
        with zipfile.ZipFile(archive_path, "w") as archive:
            archive.writestr("zgood.py", "VALUE = 'zipped'\n")
        result = self.child(f"""
            import sys
            sys.path.insert(0, {archive_path!r})
            import zgood
            print(zgood.VALUE)
        """, *self.options)
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "zipped"), result.stderr)

    def test_the_script_the_host_runs_may_be_outside_the_roots(self):
        script = self.write(self.outside, "script.py", "import inside\nprint('script', inside.VALUE)\n")
        result = run(*self.options, script)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "script inside")


class CheckedThenRead(ChildCase):
    """What runs is what was checked: another user swaps a module's link
    between a file inside the root (which they may write: no --strict) and
    one outside while the program loads it. The outside file counts its
    runs. (Not root, or no setpriv: the attacker is a process of this user.)"""

    SECONDS = 3

    def setUp(self):
        super().setUp()
        self.root = self.make_dir("root")
        self.outside = self.make_dir("outside")
        self.good = self.write(self.root, "good.py", "VALUE = 'good'\n")
        # Large, so that compiling it keeps the window between the loader's
        # read and the code running wide open.
        padding = "".join(f"_pad{i} = {i}\n" for i in range(20000))
        self.evil = self.write(self.outside, "evil.py", "import sys\nsys.evil_runs = getattr(sys, 'evil_runs', 0) + 1\n"
                               "VALUE = 'evil'\n" + padding)
        self.link = os.path.join(self.root, "plug.py")
        os.symlink(self.good, self.link)

    def bytecode_only(self):
        """The module as bytecode alone: plug.pyc, a link to good's or evil's."""
        import py_compile
        os.remove(self.link)
        for name in ("good", "evil"):
            source = getattr(self, name)
            setattr(self, name, py_compile.compile(source, cfile=source + "c", doraise=True))
            os.remove(source)
        self.link = os.path.join(self.root, "plug.pyc")
        os.symlink(self.good, self.link)

    def attacker(self):
        """The command that runs the attacker's Python: as another user, if possible,
        with the system's python3 (another user may not reach this one's files)."""
        system_python = shutil.which("python3", path="/usr/bin:/bin")
        if os.geteuid() != 0 or not shutil.which("setpriv") or not system_python:
            return [sys.executable]
        os.chmod(self.base, 0o755)
        os.chmod(self.root, 0o777)
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", system_python]

    def race(self, attempt):
        swapper = f"""
            import os
            link, spare = {self.link!r}, {self.link + ".swap"!r}
            targets = [{self.evil!r}, {self.good!r}]
            i = 0
            while True:
                os.symlink(targets[i % 2], spare)
                os.replace(spare, link)
                i += 1
        """
        result = self.child(f"""
            import importlib, json, subprocess, sys, textwrap, time
            import modhost
            import plug
            swapper = subprocess.Popen({self.attacker()!r} + ["-c", textwrap.dedent({swapper!r})],
                                       stderr=subprocess.PIPE, text=True)
            loaded = refused = 0
            end = time.monotonic() + {self.SECONDS}
            try:
                while time.monotonic() < end:
                    try:
                        {attempt}
                        loaded += 1
                    except ImportError:
                        refused += 1
            finally:
                attacker_died = swapper.poll() is not None
                swapper.kill()
            print(json.dumps([getattr(sys, "evil_runs", 0), loaded, refused,
                              swapper.communicate()[1] if attacker_died else None]))
        """, "--root", self.root, "-p", self.root)
        self.assertEqual(result.returncode, 0, result.stderr)
        evil_runs, loaded, refused, attacker_error = json.loads(result.stdout)
        self.assertIsNone(attacker_error, "the attacker's process ended early")
        self.assertEqual(evil_runs, 0, f"outside code ran {evil_runs} times ({loaded} loads, {refused} refused)")
        self.assertGreater(loaded, 0)
        self.assertGreater(refused, 0)  # the race was run: the link pointed outside at times

    def test_a_reload_runs_only_what_it_checked(self):
        self.race("modhost.reload('plug')")

    def test_an_import_runs_only_what_it_checked(self):
        self.race("sys.modules.pop('plug', None); importlib.invalidate_caches(); import plug")

    def test_an_import_of_bytecode_alone_runs_only_what_it_checked(self):
        self.bytecode_only()
        self.race("sys.modules.pop('plug', None); importlib.invalidate_caches(); import plug")


class StartUpWithRoots(ChildCase):
    """What python3 loads before any import hook exists, or beside it."""

    def setUp(self):
        super().setUp()
        self.root = self.make_dir("root")
        self.outside = self.make_dir("outside")
        self.write(self.root, "inside.py", "VALUE = 'inside'\n")

    def test_pythonpath_loads_nothing_and_is_named(self):
        self.write(self.outside, "sitecustomize.py", "print('sitecustomize from outside ran')\n")
        self.write(self.outside, "fromenv.py", "VALUE = 1\n")
        code = "import importlib.util, inside; print(importlib.util.find_spec('fromenv') is None)"
        without = run("-p", self.root, "-c", code, PYTHONPATH=self.outside)
        self.assertEqual(without.stdout.split(), ["sitecustomize", "from", "outside", "ran", "False"], without.stderr)
        result = run("--root", self.root, "-p", self.root, "-c", code, PYTHONPATH=self.outside)
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "True"), result.stderr)
        self.assertIn("[modhost] with module roots, ignoring PYTHONPATH", result.stderr)

    def test_a_user_site_pth_file_does_not_run(self):
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        site_dir = self.make_dir("userbase", "lib", version, "site-packages")
        self.write(site_dir, "evil.pth", "import sys; sys.stdout.write('pth ran\\n')\n")
        without = run("-c", "pass", PYTHONUSERBASE=os.path.join(self.base, "userbase"))
        self.assertEqual(without.stdout, "pth ran\n", without.stderr)
        result = run("--root", self.root, "-c", "pass", PYTHONUSERBASE=os.path.join(self.base, "userbase"))
        self.assertEqual((result.returncode, result.stdout), (0, ""), result.stderr)

    def test_no_site_packages_but_the_builtins_site_adds(self):
        code = """
            import sys
            print([p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))], sys.pycache_prefix)
            help, copyright, credits
            exit(3)
        """
        result = run("--root", self.root, "-c", textwrap.dedent(code), PYTHONPYCACHEPREFIX=self.outside)
        self.assertEqual((result.returncode, result.stdout.strip()), (3, "[] None"), result.stderr)
        self.assertIn("ignoring PYTHONPYCACHEPREFIX", result.stderr)


class StrictPermissions(ChildCase):
    def setUp(self):
        super().setUp()
        self.dir = self.make_dir("plugins")

    def strict(self, name):
        return self.outcome(name, "--strict", "-p", self.dir)

    def test_a_good_file_loads(self):
        self.write(self.dir, "good.py", "VALUE = 1\n", mode=0o644)
        self.assertEqual(self.strict("good"), "ok")

    def test_file_writable_by_others_is_refused(self):
        path = self.write(self.dir, "open.py", "VALUE = 1\n", mode=0o646)
        message = self.strict("open")
        self.assertTrue(message.startswith("ImportError: "), message)
        self.assertIn(f"{path} is writable by group or others (mode 646", message)
        self.assertEqual(self.outcome("open", "-p", self.dir), "ok")  # not strict: loads

    def test_file_writable_by_group_is_refused(self):
        self.write(self.dir, "group.py", "VALUE = 1\n", mode=0o664)
        self.assertIn("writable by group or others (mode 664", self.strict("group"))

    def test_directory_writable_by_others_is_refused(self):
        shared = self.make_dir("shared", mode=0o777)
        os.chmod(shared, 0o777)
        self.write(shared, "inshared.py", "VALUE = 1\n", mode=0o644)
        message = self.outcome("inshared", "--strict", "-p", shared)
        self.assertIn(f"{shared} is writable by group or others (mode 777", message)

    def test_package_in_a_group_writable_directory_is_refused(self):
        package = self.make_dir("plugins", "pkg", mode=0o775)
        os.chmod(package, 0o775)
        self.write(package, "__init__.py", "VALUE = 1\n")
        self.assertIn("writable by group or others", self.strict("pkg"))

    def test_a_world_writable_directory_above_the_modules_is_refused(self):
        # Whoever may write a directory of the chain can rename the module's
        # directory away and put another in its place (another user on a
        # shared machine): every directory up to / is checked.
        parent = self.make_dir("open-parent", mode=0o777)
        plugins = self.make_dir("open-parent", "plugins")
        self.write(plugins, "below_open.py", "VALUE = 1\n")
        message = self.outcome("below_open", "--strict", "-p", plugins)
        self.assertTrue(message.startswith("ImportError: "), message)
        self.assertIn(f"{parent} is writable by group or others (mode 777", message)
        self.assertEqual(self.outcome("below_open", "-p", plugins), "ok")  # not strict: loads

    def test_a_sticky_directory_above_the_modules_is_allowed(self):
        # Like /tmp: writable by all, but only an entry's owner may rename it.
        self.make_dir("sticky-parent", mode=0o1777)
        plugins = self.make_dir("sticky-parent", "plugins")
        self.write(plugins, "below_sticky.py", "VALUE = 1\n")
        self.assertEqual(self.outcome("below_sticky", "--strict", "-p", plugins), "ok")

    def test_a_directory_above_owned_by_another_user_is_refused(self):
        if os.geteuid() != 0:
            self.skipTest("chown to another user needs root")
        parent = self.make_dir("foreign-parent")
        plugins = self.make_dir("foreign-parent", "plugins")
        self.write(plugins, "below_foreign.py", "VALUE = 1\n")
        os.chown(parent, 65534, 65534)
        message = self.outcome("below_foreign", "--strict", "-p", plugins)
        self.assertIn(f"{parent} is owned by uid 65534", message)

    def test_a_zip_writable_by_others_is_refused(self):
        import zipfile
        archive_path = os.path.join(self.dir, "open.zip")
        with zipfile.ZipFile(archive_path, "w") as archive:
            archive.writestr("zopen.py", "VALUE = 1\n")
        os.chmod(archive_path, 0o666)
        result = self.child(f"""
            import sys
            sys.path.insert(0, {archive_path!r})
            try:
                import zopen
                print('ran')
            except ImportError as e:
                print(e)
        """, "--strict")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "No module named 'zopen'")
        self.assertIn(f"{archive_path} is writable by group or others (mode 666", result.stderr)

    def test_bytecode_planted_beside_a_checked_source_does_not_run(self):
        # Another user may write __pycache__ (mode 777): a .pyc that matches
        # the source's stat but holds other code. Refused, the source runs.
        if os.geteuid() != 0:
            self.skipTest("a .pyc of another user needs root to chown")
        import importlib.util
        from importlib._bootstrap_external import _code_to_timestamp_pyc
        source = self.write(self.dir, "planted.py", "VALUE = 'source'\n")
        cache = self.make_dir("plugins", "__pycache__", mode=0o777)
        st = os.stat(source)
        evil = compile("VALUE = 'planted'\n", source, "exec")
        pyc = importlib.util.cache_from_source(source)
        with open(pyc, "wb") as f:
            f.write(_code_to_timestamp_pyc(evil, st.st_mtime, st.st_size))
        os.chown(pyc, 65534, 65534)
        code = "import planted; print(planted.VALUE)"
        self.assertEqual(run("-p", self.dir, "-c", code).stdout.strip(), "planted")  # without --strict: it runs
        result = run("--strict", "-p", self.dir, "-c", code)
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "source"), result.stderr)
        self.assertTrue(os.path.isdir(cache))

    def test_file_owned_by_another_user_is_refused(self):
        if os.geteuid() != 0:
            self.skipTest("chown to another user needs root")
        path = self.write(self.dir, "foreign.py", "VALUE = 1\n")
        os.chown(path, 65534, 65534)
        message = self.strict("foreign")
        self.assertIn(f"{path} is owned by uid 65534", message)
        self.assertIn("strict permissions", message)

    def test_directory_owned_by_another_user_is_refused(self):
        if os.geteuid() != 0:
            self.skipTest("chown to another user needs root")
        foreign = self.make_dir("foreign-dir")
        self.write(foreign, "mod_in_foreign.py", "VALUE = 1\n")
        os.chown(foreign, 65534, 65534)
        message = self.outcome("mod_in_foreign", "--strict", "-p", foreign)
        self.assertIn(f"{foreign} is owned by uid 65534", message)

    def test_file_made_writable_after_loading_is_refused_at_reload(self):
        path = self.write(self.dir, "later.py", "VALUE = 1\n")
        result = self.child(f"""
            import json, os, modhost
            import later
            with open({path!r}, 'w') as f:
                f.write('VALUE = 2\\n')
            os.chmod({path!r}, 0o666)
            try:
                modhost.reload('later')
                print(json.dumps(['reloaded', later.VALUE]))
            except ImportError as e:
                print(json.dumps([str(e), later.VALUE, modhost.info('later').generation]))
        """, "--strict", "-p", self.dir)
        self.assertEqual(result.returncode, 0, result.stderr)
        message, value, generation = json.loads(result.stdout)
        self.assertIn("writable by group or others", message)
        self.assertEqual((value, generation), (1, 1))

    def test_stdlib_still_imports_in_strict_mode(self):
        self.assertEqual(self.strict("json"), "ok")


class AuditEvents(CacheTestCase):
    """In-process: the events a host's sys.addaudithook sees, and vetoes."""

    events = []
    veto = {}  # event name -> (module name, exception to raise)

    @classmethod
    def setUpClass(cls):
        def hook(event, args):
            if not event.startswith("modhost."):
                return
            cls.events.append((event, args))
            rule = cls.veto.get(event)
            if rule and args[0] == rule[0]:
                raise rule[1]
        sys.addaudithook(hook)

    def setUp(self):
        super().setUp()
        self.events.clear()
        self.veto.clear()
        self.addCleanup(self.veto.clear)
        self.name = self.mod("plug")
        self.path = self.write(self.name, "VALUE = 1\ndef hook():\n    return 'old'\n")

    def seen(self, event):
        return [args for e, args in self.events if e == event and args[0] == self.name]

    def test_import_statement_raises_modhost_load(self):
        __import__(self.name)
        self.assertEqual(self.seen("modhost.load"), [(self.name, self.path)])

    def test_modhost_load_raises_modhost_load_once(self):
        modhost.load(self.name)
        modhost.load(self.name)  # a cache hit: nothing loads
        self.assertEqual(self.seen("modhost.load"), [(self.name, self.path)])

    def test_reload_raises_modhost_reload_and_no_load(self):
        self.load(self.name)
        self.events.clear()
        modhost.reload(self.name)
        self.assertEqual(self.seen("modhost.reload"), [(self.name, self.path)])
        self.assertEqual(self.seen("modhost.load"), [])

    def test_unload_raises_modhost_unload(self):
        self.load(self.name)
        modhost.unload(self.name)
        self.assertEqual(self.seen("modhost.unload"), [(self.name, self.path)])

    def test_vetoed_load_leaves_nothing(self):
        self.veto["modhost.load"] = (self.name, PermissionError("policy: no new plugins"))
        before = sorted(sys.modules), modhost.modules()
        with self.assertRaises(PermissionError) as caught:
            modhost.load(self.name)
        self.assertIn("no new plugins", str(caught.exception))
        self.assertEqual((sorted(sys.modules), modhost.modules()), before)

    def test_vetoed_reload_rolls_back(self):
        module = self.load(self.name)
        self.write(self.name, "VALUE = 2\ndef hook():\n    return 'new'\n")
        snap = self.snapshot(module)
        before = sorted(sys.modules), modhost.modules()
        self.veto["modhost.reload"] = (self.name, PermissionError("policy: reloads are frozen"))
        with self.assertRaises(PermissionError) as caught:
            modhost.reload(self.name)
        self.assertEqual(str(caught.exception), "policy: reloads are frozen")
        self.assertNamespaceIs(module, snap)
        self.assertEqual(module.hook(), "old")
        self.assertEqual(modhost.info(self.name).generation, 1)
        self.assertEqual((sorted(sys.modules), modhost.modules()), before)
        # Lift the veto: the same reload goes through.
        self.veto.clear()
        modhost.reload(self.name)
        self.assertEqual((module.hook(), modhost.info(self.name).generation), ("new", 2))

    def test_vetoed_deep_reload_rolls_back(self):
        module = self.load(self.name)
        self.write(self.name, "VALUE = 2\ndef hook():\n    return 'new'\n")
        hook = module.hook
        self.veto["modhost.reload"] = (self.name, PermissionError("frozen"))
        with self.assertRaises(PermissionError):
            modhost.reload(self.name, deep=True)
        self.assertIs(module.hook, hook)
        self.assertEqual(hook(), "old")

    def test_vetoed_unload_keeps_the_module(self):
        module = self.load(self.name)
        del module
        self.veto["modhost.unload"] = (self.name, PermissionError("policy: plugins stay"))
        with self.assertRaises(PermissionError):
            modhost.unload(self.name)
        self.assertIn(self.name, sys.modules)
        self.assertIn(self.name, modhost.modules())
        self.assertEqual(sys.modules[self.name].hook(), "old")
        self.veto.clear()
        modhost.unload(self.name)
        self.assertNotIn(self.name, sys.modules)

    def test_vetoed_unload_of_a_submodule_keeps_the_whole_package(self):
        pkg = self.mod("pkg")
        self.write(pkg, "", package=True)
        self.write(pkg + ".sub", "def __unload__():\n    import builtins\n    builtins.UNLOADED_%s = True\n" % self.tag)
        self.load(pkg + ".sub")
        self.veto["modhost.unload"] = (pkg + ".sub", PermissionError("sub stays"))
        with self.assertRaises(PermissionError):
            modhost.unload(pkg)
        self.assertIn(pkg, sys.modules)
        self.assertIn(pkg + ".sub", sys.modules)
        import builtins
        self.assertFalse(hasattr(builtins, "UNLOADED_" + self.tag), "__unload__ ran although the unload was vetoed")


class AuditLog(ChildCase):
    def test_audit_log_has_one_line_per_modhost_event(self):
        plugins = self.make_dir("plugins")
        path = self.write(plugins, "logged.py", "VALUE = 1\n")
        log = os.path.join(self.base, "audit.log")
        result = self.child("""
            import modhost
            import logged
            modhost.reload('logged')
            del logged
            modhost.unload('logged')
        """, "--audit-log", log, "-p", plugins)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(log) as f:
            lines = f.read().splitlines()
        self.assertTrue(all(line.startswith("modhost.") for line in lines), lines)
        mine = [line for line in lines if "'logged'" in line]
        self.assertEqual(mine, [
            f"modhost.load ('logged', {path!r})",
            f"modhost.reload ('logged', {path!r})",
            f"modhost.unload ('logged', {path!r})",
        ])

    def test_audit_log_appends_and_records_refusals(self):
        root = self.make_dir("root")
        outside = self.make_dir("outside")
        path = self.write(outside, "intruder.py", "VALUE = 1\n")
        log = os.path.join(self.base, "audit.log")
        with open(log, "w") as f:
            f.write("earlier line\n")
        message = self.outcome("intruder", "--audit-log", log, "--root", root, "-p", outside)
        self.assertIn("outside the module roots", message)
        with open(log) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "earlier line")
        refusals = [line for line in lines if line.startswith(f"modhost.refuse ('intruder', {path!r}, ")]
        self.assertEqual(len(refusals), 1, lines)
        self.assertIn("outside the module roots", refusals[0])

    def test_unwritable_audit_log_is_a_clear_start_up_error(self):
        result = run("--audit-log", os.path.join(self.base, "missing-dir", "audit.log"), "-c", "pass")
        self.assertEqual(result.returncode, 2)
        self.assertIn("cannot open audit log", result.stderr)


if __name__ == "__main__":
    unittest.main()
