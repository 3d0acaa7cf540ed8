"""The house rules, read from the source with ``ast`` (nothing is imported):

* no import cycle between es_metric modules, nor between its subpackages; imports inside
  functions count as edges, so a function-level import cannot hide a cycle;
* data flows one way: a module imports only modules of its own layer or lower ones;
* a function-level import only defers a heavy dependency (anything but the standard library
  and click, or an es_metric module that loads one at import);
* no module imports another module's private (``_name``) names;
* every module under 400 lines; every subpackage says what it owns and what it may import;
* the light search path (``esm search``, ``esm serve``) loads no torch at import: a model with an
  ONNX export searches without it (tests/integration/test_light_search.py runs it).
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "es_metric"
MAX_LINES = 400

# Lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, ...]] = [
    ("es_metric.version", "es_metric.errors", "es_metric.redact", "es_metric.types",
     "es_metric.similarity", "es_metric.settingspec",
     "es_metric.device", "es_metric.config", "es_metric.progressbar", "es_metric.images",
     "es_metric.paths", "es_metric.pids",
     "es_metric.urlguard"),                                                  # core
    ("es_metric.index",),                                                 # Elasticsearch
    ("es_metric.ingest.jobs", "es_metric.ingest.broker", "es_metric.ingest.celery_app",
     "es_metric.ingest.stall", "es_metric.ingest.context", "es_metric.ingest.promfiles",
     "es_metric.ingest.sources", "es_metric.ingest.enqueue", "es_metric.ingest.outcomes",
     "es_metric.ingest.metrics", "es_metric.ingest.fetch", "es_metric.ingest.photos"),  # Redis, Celery
    ("es_metric.model",),                                                 # the encoder
    ("es_metric.training", "es_metric.search", "es_metric.ingest.pipeline",
     "es_metric.ingest.tasks"),                                           # what uses the encoder
    ("es_metric.ingest.reindex", "es_metric.ingest.migrate", "es_metric.ingest.follow",
     "es_metric.ingest.status", "es_metric.ingest.service"),              # orchestration
    ("es_metric.stack",),                                                 # the local stack
    ("es_metric.cli", "es_metric.web", "es_metric"),                      # shells, the public face
]
LIGHT_THIRD_PARTY = {"click"}
TORCH = {"torch", "torchvision", "functorch"}
# What `esm search` and `esm serve` import to search by image on a model with an ONNX export.
LIGHT_SEARCH = ("es_metric.cli.search", "es_metric.cli.web", "es_metric.web.app", "es_metric.search.service",
                "es_metric.ingest.fetch", "es_metric.model.runtime", "es_metric.model.pixels")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _nearest_module(name: str) -> str | None:
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def _walk(tree: ast.AST, in_function: bool = False):
    """(import node, inside a function?) for every import, ``if TYPE_CHECKING:`` blocks left out."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            yield from (pair for node in child.orelse for pair in _walk(node, in_function))
            continue
        inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, inner
        yield from _walk(child, inner)


@cache
def imports(module: str) -> tuple[tuple[str, list[str], int, bool], ...]:
    """(absolute target, imported names, line, in a function) of every import of ``module``."""
    path = modules()[module]
    is_package = path.name == "__init__.py"
    found = []
    tree = ast.parse(path.read_text())
    for node in tree.body:  # the package's PEP 562 table: modules imported on first use
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "_LAZY":
            table = ast.literal_eval(node.value)
            found += [(target, [name], node.lineno, True) for name, target in table.items()]
    for node, in_function in _walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno, in_function) for alias in node.names]
        else:
            found.append((_absolute(module, is_package, node), [a.name for a in node.names],
                          node.lineno, in_function))
    return tuple(found)


def _targets(target: str, names: list[str]) -> set[str]:
    """The es_metric modules an import names (``from pkg import submodule`` names the submodule)."""
    hits = {f"{target}.{n}" for n in names if f"{target}.{n}" in modules()}
    if not hits or len(hits) < len(names):
        hits.add(_nearest_module(target))
    return {t for t in hits if t}


@cache
def edges() -> tuple[Edge, ...]:
    """Imports between es_metric modules."""
    out = []
    for module in modules():
        for target, names, line, in_function in imports(module):
            if target != "es_metric" and not target.startswith("es_metric."):
                continue
            out += [Edge(module, t, line, in_function) for t in sorted(_targets(target, names)) if t != module]
    return tuple(out)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int:
    best = max(((len(prefix), i) for i, prefixes in enumerate(LAYERS) for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), default=None)
    assert best is not None, f"{module} has no layer: add it to LAYERS"
    return best[1]


def subpackage(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else "es_metric"


@cache
def loads_heavy(module: str) -> bool:
    """True when importing ``module`` loads a third-party package other than click."""
    for target, names, _line, in_function in imports(module):
        if in_function:
            continue
        root = target.split(".")[0]
        if root == "es_metric":
            if any(t not in (module, "es_metric") and loads_heavy(t) for t in _targets(target, names)):
                return True
            continue
        if root and root not in sys.stdlib_module_names and root not in LIGHT_THIRD_PARTY:
            return True
    return False


def _with_packages(module: str) -> list[str]:
    """``module`` and the packages above it, which importing it runs first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def torch_chain(start: str) -> tuple[str, ...]:
    """The module-level imports by which importing ``start`` loads torch (empty: it does not);
    importing a module runs the packages above it first."""
    came_from: dict[str, str | None] = {p: None for p in _with_packages(start)}
    queue = list(came_from)
    while queue:
        module = queue.pop(0)
        for target, names, _line, in_function in imports(module):
            root = target.split(".")[0]
            if in_function or not root:
                continue
            if root in TORCH:
                chain = [target, module]
                while (prev := came_from[chain[-1]]) is not None:
                    chain.append(prev)
                return tuple(reversed(chain))
            if root == "es_metric":
                for found in sorted({p for t in _targets(target, names) for p in _with_packages(t)}):
                    if found in modules() and found not in came_from:
                        came_from[found] = module
                        queue.append(found)
    return ()


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for e in edges():
        graph[e.source].add(e.target)
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(map(str, found))


def test_no_import_cycle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for e in edges():
        a, b = subpackage(e.source), subpackage(e.target)
        if a != b and "es_metric" not in (a, b):
            graph.setdefault(a, set()).add(b)
    found = cycles(graph)
    assert not found, "subpackage cycles:\n" + "\n".join(map(str, found))


def test_the_cycle_finder_finds_a_function_level_cycle():
    """The checks above would pass on anything if the graph missed function-level edges."""
    source = "def f():\n    from .b import g\n"
    tree = ast.parse(source)
    assert [in_function for _node, in_function in _walk(tree)] == [True]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_lower_layers_never_import_higher_ones():
    wrong = [f"{e.source}:{e.line} imports {e.target}" for e in edges()
             if layer(e.target) > layer(e.source)]
    assert not wrong, "\n".join(wrong)


def test_function_level_imports_only_defer_heavy_dependencies():
    wrong = []
    for module in modules():
        for target, names, line, in_function in imports(module):
            if not in_function:
                continue
            root = target.split(".")[0]
            if root == "es_metric":
                heavy = all(loads_heavy(t) for t in _targets(target, names))
            else:
                heavy = root not in sys.stdlib_module_names and root not in LIGHT_THIRD_PARTY
            if not heavy:
                wrong.append(f"{module}:{line} imports {target} inside a function")
    assert not wrong, "\n".join(wrong)


def test_no_private_names_imported_across_modules():
    wrong = [f"{module}:{line} imports {name} from {target}"
             for module in modules() for target, names, line, _f in imports(module)
             if target.startswith("es_metric") for name in names if name.startswith("_")
             and not name.startswith("__")]
    assert not wrong, "\n".join(wrong)


def test_modules_are_short():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) >= MAX_LINES}
    assert not long, f"modules of {MAX_LINES}+ lines: {long}"


def test_every_subpackage_says_what_it_owns_and_may_import():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init}: the docstring must say what it may import"


def test_the_packages_lazy_names_are_edges():
    """es_metric/__init__.py imports by module name on first use: the graph still sees those."""
    lazy = {e.target for e in edges() if e.source == "es_metric" and e.in_function}
    assert {"es_metric.model.modelfile", "es_metric.model.encoder"} <= lazy


def test_the_light_search_path_loads_no_torch_at_import():
    chains = {m: " -> ".join(chain) for m in LIGHT_SEARCH if (chain := torch_chain(m))}
    assert not chains, f"these modules load torch: {chains}"


def test_the_torch_finder_follows_module_level_imports():
    """The check above would pass on anything if the chain missed what loads torch."""
    assert torch_chain("es_metric.model.modelfile")[-1] == "torch"
    assert torch_chain("es_metric.model.export")[:2] == ("es_metric.model.export", "torch")
    assert torch_chain("es_metric.training.train")
