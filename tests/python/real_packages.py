"""The real-package reload corpus shared by test_real_packages.py and its python3 reference run.

Debian's python3-jinja2, -click, -flask, -attr, -jsonschema, -idna and
-networkx (scripts/setup.sh installs them) are copied into a temporary
directory, never edited where they are installed. Each package gets a small
workload whose answer is a string; a reload that keeps the package working
leaves the answer as it was.

Run as a script by python3 itself (`python3 real_packages.py DIR`), it is the
reference: it copies the packages into DIR, edits and importlib.reload()s
every module the workloads loaded, one after the other as the modhost test
does, and prints one JSON object {module: true when the workload still gives
its first answer after that module's reload}. Only where importlib.reload
keeps a workload working must modhost's deep reload keep it working too.
"""
import importlib
import json
import os
import shutil
import sys

# Package -> the top-level packages its copy consists of (python3-attr ships two).
PACKAGES = {
    "jinja2": ["jinja2"],
    "click": ["click"],
    "flask": ["flask"],
    "attr": ["attr", "attrs"],
    "jsonschema": ["jsonschema"],
    "idna": ["idna"],
    "networkx": ["networkx"],
}
PROBE = "\n_modhost_probe = 1\n"  # the harmless edit
# Where Debian installs them (and their dependencies: markupsafe, werkzeug,
# itsdangerous, pyrsistent), on sys.path of Debian's python3 but not of
# another installation (a pyenv Python modhost may link instead).
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def use_debian_dependencies():
    if DEBIAN_DIST_PACKAGES not in sys.path and os.path.isdir(DEBIAN_DIST_PACKAGES):
        sys.path.append(DEBIAN_DIST_PACKAGES)


def installed_dir(top):
    """Where the distribution installed package `top` (searched on sys.path, not imported)."""
    for entry in sys.path + [DEBIAN_DIST_PACKAGES]:
        candidate = os.path.join(entry or ".", top)
        if os.path.isfile(os.path.join(candidate, "__init__.py")):
            return candidate
    return None


def copy_packages(target):
    """Copies every corpus package into `target`; returns the list of those missing."""
    missing = []
    for tops in PACKAGES.values():
        for top in tops:
            source = installed_dir(top)
            if source is None:
                missing.append(top)
                continue
            # Their own test suites are not part of the workloads.
            shutil.copytree(source, os.path.join(target, top),
                            ignore=shutil.ignore_patterns("__pycache__", "tests"))
    return missing


def package_modules(package):
    """The loaded modules of `package`'s copy, sorted, that have a source file to edit."""
    tops = PACKAGES[package]
    names = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in tops or module is None:
            continue
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py"):
            names.append(name)
    return sorted(names)


def append_probe(module):
    with open(module.__file__, "a") as f:
        f.write(PROBE)


# -- workloads: each imports what it uses when it runs, so it sees whatever
# -- object the reloads left in sys.modules and in the package's attributes.

def work_jinja2():
    import jinja2
    env = jinja2.Environment(loader=jinja2.DictLoader({
        "base.html": "<h1>{% block title %}{% endblock %}</h1>{% block body %}{% endblock %}",
        "page.html": ("{% extends 'base.html' %}{% block title %}{{ title|upper }}{% endblock %}"
                      "{% block body %}{% for x in items if x is odd %}[{{ loop.index }}:{{ x * 2 }}]"
                      "{% else %}none{% endfor %}{{ macros.tag('p', user) }}{% endblock %}"
                      "{% import 'macros.html' as macros %}"),
        "macros.html": "{% macro tag(name, text) %}<{{ name }}>{{ text|e }}</{{ name }}>{% endmacro %}",
    }), autoescape=jinja2.select_autoescape())
    page = env.get_template("page.html").render(title="corpus", items=range(7), user="<b>&</b>")
    sandboxed = __import__("jinja2.sandbox", fromlist=["x"]).SandboxedEnvironment()
    try:
        sandboxed.from_string("{{ ''.__class__.__mro__ }}").render()
        escape = "escaped the sandbox"
    except jinja2.exceptions.SecurityError as e:
        escape = type(e).__name__
    undefined = jinja2.Environment(undefined=jinja2.StrictUndefined)
    try:
        undefined.from_string("{{ missing.attr }}").render()
        strict = "no error"
    except jinja2.UndefinedError as e:
        strict = str(e)
    return repr((page, escape, strict))


def work_click():
    import click
    from click.testing import CliRunner

    @click.group()
    @click.option("--verbose", "-v", count=True)
    @click.pass_context
    def cli(ctx, verbose):
        ctx.obj = {"verbose": verbose}

    @cli.command()
    @click.argument("names", nargs=-1)
    @click.option("--shout/--no-shout", default=False)
    @click.option("--times", type=click.IntRange(1, 3), default=1)
    @click.pass_obj
    def greet(obj, names, shout, times):
        for name in names:
            text = f"hello {name} v{obj['verbose']}"
            click.echo((text.upper() if shout else text) * times)

    runner = CliRunner()
    results = [runner.invoke(cli, args) for args in (
        ["-vv", "greet", "ann", "bob", "--shout"], ["greet", "--times", "9", "x"], ["--help"], ["nope"])]
    return repr([(r.exit_code, r.output) for r in results])


def work_flask():
    import flask
    app = flask.Flask("corpus_app", root_path=os.path.dirname(os.path.abspath(__file__)))
    bp = flask.Blueprint("bp", "corpus_app")

    @app.route("/hello/<name>")
    def hello(name):
        return flask.jsonify(greeting=f"hello {name}", args=dict(flask.request.args))

    @bp.route("/tpl")
    def tpl():
        return flask.render_template_string("{{ a }}-{{ url_for('hello', name='x') }}", a=flask.g.get("a", 1))

    @app.errorhandler(404)
    def missing(error):
        return "missing: " + flask.request.path, 404

    app.register_blueprint(bp, url_prefix="/bp")
    client = app.test_client()
    responses = [client.get(path) for path in ("/hello/ann?x=1", "/bp/tpl", "/nowhere")]
    with app.test_request_context("/hello/z"):
        url = flask.url_for("hello", name="q", page=2)
    return repr([(r.status_code, r.get_data(as_text=True)) for r in responses] + [url])


def work_attr():
    import attr
    import attrs

    @attr.s(slots=True, frozen=True)
    class Point:
        x = attr.ib(validator=attr.validators.instance_of(int))
        y = attr.ib(default=0, converter=int)

    @attrs.define
    class Box:
        items: list = attrs.field(factory=list)
        label: str = "box"

        def add(self, item):
            self.items.append(item)
            return self

    p = Point(1, "2")
    q = attr.evolve(p, x=5)
    try:
        Point("no")
        invalid = "accepted"
    except TypeError as e:
        invalid = str(e).split(" (")[0]
    box = Box().add(p).add(q)
    return repr((p, q, p < q, hash(p) == hash(Point(1, 2)), attr.asdict(q), invalid, box,
                 attrs.asdict(box, recurse=False)["label"], attr.fields(Point).y.default,
                 [a.name for a in attrs.fields(Box)]))


def work_jsonschema():
    import jsonschema
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2},
            "age": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": True},
        },
        "required": ["name"],
        "additionalProperties": False,
    }
    validator = jsonschema.Draft7Validator(schema)
    bad = {"name": "x", "age": -1, "tags": ["a", "a", "c"], "extra": 1}
    errors = sorted((list(e.path), e.validator, e.message) for e in validator.iter_errors(bad))
    try:
        jsonschema.validate({"age": 1}, schema)
        raised = None
    except jsonschema.ValidationError as e:
        raised = e.message
    best = jsonschema.exceptions.best_match(validator.iter_errors(bad)).message
    return repr((errors, raised, best, validator.is_valid({"name": "ok", "tags": ["b"]}),
                 jsonschema.validators.validator_for({"$schema": "http://json-schema.org/draft-04/schema#"}).__name__))


def work_idna():
    import idna
    encoded = idna.encode("ドメイン.テスト")
    mixed = idna.encode("Königsgäßchen.example", uts46=True)
    try:
        idna.encode("xn--a.com")
        invalid = "accepted"
    except idna.IDNAError as e:
        invalid = type(e).__name__
    return repr((encoded, idna.decode(encoded), mixed, idna.decode(b"xn--fa-hia.de"),
                 idna.uts46_remap("Königsgäßchen", std3_rules=True), invalid))


def work_networkx():
    import networkx as nx
    g = nx.Graph()
    g.add_weighted_edges_from([(1, 2, 1.0), (2, 3, 2.0), (1, 3, 5.0), (3, 4, 1.0), (5, 6, 1.0)])
    d = nx.DiGraph([("a", "b"), ("b", "c"), ("a", "c"), ("c", "d")])
    karate = nx.karate_club_graph()
    centrality = nx.betweenness_centrality(karate)
    return repr((
        nx.shortest_path(g, 1, 4, weight="weight"),
        nx.shortest_path_length(g, 1, 4, weight="weight"),
        sorted(sorted(c) for c in nx.connected_components(g)),
        list(nx.topological_sort(d)),
        sorted(nx.minimum_spanning_tree(g).edges(data="weight")),
        nx.is_directed_acyclic_graph(d),
        round(max(centrality.values()), 6),
        sorted(dict(nx.degree(karate)).items())[:5],
        nx.number_of_nodes(nx.complete_graph(5)),
        sorted(nx.bfs_tree(d, "a").edges()),
        nx.density(karate),
    ))


WORKLOADS = {name: globals()["work_" + name] for name in PACKAGES}


def answer(package):
    """The workload's answer, or the exception it raised (an answer that differs)."""
    try:
        return WORKLOADS[package]()
    except Exception as e:  # a broken package: what broke is the answer
        return "raised %s: %s" % (type(e).__name__, e)


def corpus_modules():
    """Names of every loaded module of the corpus copies."""
    tops = {top for group in PACKAGES.values() for top in group}
    return [name for name in sys.modules if name.split(".")[0] in tops]


def purge():
    """Forgets every corpus module, as if never imported (importlib's way)."""
    for name in corpus_modules():
        del sys.modules[name]
    importlib.invalidate_caches()


def reference(target):
    """{module: what importlib.reload of that module does to its package}:
    "kept" (the workload gives its first answer), "changed" (it does not) or
    "raised" (the reload raised; the workload may still work).

    Each verdict starts from a working package: after a reload that changes
    the answer, every corpus module is imported afresh, so one module's
    breakage does not decide the next module's verdict. A reload that raised
    but left the answer as it was is not followed by a purge (networkx 3.4
    refuses every algorithm module run twice, and re-importing it 200 times
    would take minutes).
    """
    missing = copy_packages(target)
    if missing:
        raise SystemExit("missing packages: %s" % missing)
    sys.path.insert(0, target)
    use_debian_dependencies()
    verdicts = {}
    for package in PACKAGES:
        purge()
        first = answer(package)
        for name in package_modules(package):
            module = sys.modules.get(name)
            if module is None:  # gone with a purge and not needed again
                continue
            append_probe(module)
            try:
                importlib.reload(module)
                raised = False
            except Exception:
                raised = True
            kept = answer(package) == first
            verdicts[name] = "raised" if raised else "kept" if kept else "changed"
            if not kept:
                purge()
                answer(package)
    return verdicts


if __name__ == "__main__":
    json.dump(reference(sys.argv[1]), sys.stdout)
