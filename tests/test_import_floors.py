"""lamina's import floors (shared/STYLE.md, section 1): backend -> tensor -> ops -> layers -> models -> zoo/cli,
each module importing only from its own floor or below, and no import cycles between lamina's modules.

Read from the source with ``ast``, without importing anything: every ``import`` and ``from ... import`` counts,
including those written inside functions (a "lazy" import that dodges a cycle at load time is still a cycle in
the design). Package ``__init__`` modules count too: a submodule that imports its own package (or the root
``lamina`` for its version) closes a cycle through the aggregator that imports it.
A cycle is undone by moving code to the floor where it belongs, or by letting the higher module fill a slot
in the lower one when it loads (registry.EXPORTERS, registry.MODEL_FILES, tensor._m).
"""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lamina")

# floors that must not reach up into these (nor into any module under them)
LOWER_FLOORS = ("lamina.backend", "lamina.dtypes", "lamina.registry", "lamina.tensor", "lamina.ops", "lamina.io")
UPPER_FLOORS = ("lamina.layers", "lamina.models", "lamina.zoo", "lamina.cli")
# the top floor: only itself may import it (lamina/__main__.py is the cli's `python -m lamina`)
TOP_FLOOR = ("lamina.zoo", "lamina.cli", "lamina.__main__")


def _under(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def find_modules(root):
    """{dotted module name: (path, is_package)} for every .py file under root (a package directory)."""
    top = os.path.dirname(root)
    modules = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                name = os.path.relpath(path, top)[:-3].replace(os.sep, ".")
                is_package = name.endswith(".__init__")
                modules[name[:-len(".__init__")] if is_package else name] = (path, is_package)
    return modules


def _target(name, modules):
    """The module a dotted name belongs to: itself, or the nearest enclosing module (a function or class
    imported from a module counts as that module); None outside the scanned package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module, modules):
    """[(imported module, line)] for every import statement in module, at any depth."""
    path, is_package = modules[module]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one package up per extra dot
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub; `from mod import name` imports mod
            names = [base + "." + a.name if base + "." + a.name in modules else base for a in node.names]
        else:
            continue
        for name in names:
            target = _target(name, modules)
            if target is not None and target != module:
                found.append((target, node.lineno))
    return found


_GRAPHS = {}


def import_graph(root):
    """(modules, {module: {imported module: [lines]}}), read once per root: parsing lamina's ~150 files took
    ~1.4 s, and three tests read its graph (the callers only read it)."""
    if root not in _GRAPHS:
        _GRAPHS[root] = _read_import_graph(root)
    return _GRAPHS[root]


def _read_import_graph(root):
    modules = find_modules(root)
    graph = {}
    for m in modules:
        edges = graph.setdefault(m, {})
        for target, line in imports_of(m, modules):
            lines = edges.setdefault(target, [])
            if line not in lines:  # one statement importing several names from one module
                lines.append(line)
    return modules, graph


def strongly_connected(graph):
    """The strongly connected components of more than one node (Tarjan's algorithm, iterative)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def import_cycles(root):
    """Each cycle among the package's modules (package __init__ modules included) as report lines: the
    modules of one strongly connected component, then each import between them with its lines."""
    modules, plain = import_graph(root)
    reports = []
    for component in strongly_connected(plain):
        members = set(component)
        lines = [f"cycle among {', '.join(component)}:"]
        for m in component:
            for t in sorted(set(plain[m]) & members):
                path = os.path.relpath(modules[m][0], os.path.dirname(root))
                lines.append(f"  {m} imports {t}  ({path}, line {', '.join(map(str, plain[m][t]))})")
        reports.append("\n".join(lines))
    return reports


def floor_violations(root):
    """Imports that reach up past a floor: lower floors into layers/models/zoo/cli, anything into zoo/cli."""
    modules, graph = import_graph(root)
    bad = []
    for m, edges in sorted(graph.items()):
        for t, lines in sorted(edges.items()):
            where = f"{os.path.relpath(modules[m][0], os.path.dirname(root))}, line {', '.join(map(str, lines))}"
            if _under(m, LOWER_FLOORS) and _under(t, UPPER_FLOORS):
                bad.append(f"{m} (a lower floor) imports {t}  ({where})")
            elif _under(t, TOP_FLOOR) and not _under(m, TOP_FLOOR):
                bad.append(f"{m} imports {t}, the top floor, which nothing below imports  ({where})")
    return bad


def test_no_import_cycles_between_lamina_modules():
    cycles = import_cycles(ROOT)
    assert not cycles, ("import cycles inside lamina (untie them: move the code to the floor where it belongs, "
                        "or let the higher module fill a slot in the lower one):\n" + "\n".join(cycles))


def test_lower_floors_do_not_import_upper_ones():
    bad = floor_violations(ROOT)
    assert not bad, "imports that go up a floor:\n" + "\n".join(bad)


def test_the_checks_see_every_module_and_their_imports():
    modules, graph = import_graph(ROOT)
    assert {"lamina", "lamina.backend", "lamina.tensor", "lamina.ops.math", "lamina.layers.layer",
            "lamina.zoo.catalog", "lamina.cli"} <= set(modules)
    assert "lamina.backend" in graph["lamina.tensor"]   # from . import backend
    assert "lamina.tensor" in graph["lamina.ops.math"]  # from ..tensor import Op, ...
    assert "lamina.cli" in graph["lamina.__main__"]     # from .cli import main


def _write_package(tmp_path, name, files):
    root = tmp_path / name
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return str(root)


def test_a_cycle_through_a_function_level_import_is_reported(tmp_path):
    root = _write_package(tmp_path, "pkg", {
        "__init__.py": "from . import low, high\n",               # an aggregator: not in the cycle
        "low.py": "def f():\n    from .high import g  # lazy, still a cycle\n    return g()\n",
        "high.py": "from .low import f\n\ndef g():\n    return 1\n",
        "sub/__init__.py": "",
        "sub/leaf.py": "from .. import low\nfrom ..low import f\nimport pkg.high\n",
    })
    cycles = import_cycles(root)
    assert len(cycles) == 1
    assert "cycle among pkg.high, pkg.low:" in cycles[0]
    assert "pkg.low imports pkg.high  (pkg/low.py, line 2)" in cycles[0]
    assert "pkg.high imports pkg.low  (pkg/high.py, line 1)" in cycles[0]
    _, graph = import_graph(root)
    assert set(graph["pkg.sub.leaf"]) == {"pkg.low", "pkg.high"}


@pytest.mark.parametrize("path, source, report", [
    ("backend.py", "def is_layer(x):\n    from .layers.layer import Layer\n    return isinstance(x, Layer)\n",
     "lamina.backend (a lower floor) imports lamina.layers.layer  (lamina/backend.py, line 2)"),
    ("ops/math.py", "from .. import zoo\n", "lamina.ops.math (a lower floor) imports lamina.zoo  (lamina/ops/math.py"),
    ("layers/core.py", "import lamina.cli\n", "lamina.layers.core imports lamina.cli, the top floor"),
])
def test_an_upward_import_is_reported(tmp_path, path, source, report):
    root = _write_package(tmp_path, "lamina", {
        "__init__.py": "", "backend.py": "", "ops/__init__.py": "", "ops/math.py": "", "cli.py": "",
        "layers/__init__.py": "", "layers/layer.py": "class Layer:\n    pass\n", "layers/core.py": "",
        "zoo/__init__.py": "from . import catalog\n",
        "zoo/catalog.py": "from ..layers import core\nimport lamina.cli\n",   # the top floor may import anything
        path: source,
    })
    (found,) = floor_violations(root)
    assert found.startswith(report)
