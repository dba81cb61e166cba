"""The import structure of the project, read from the source with :mod:`ast` (nothing is imported).

Layers, lowest first: ``models`` < ``engine.core`` < ``engine.synth`` < ``engine.live`` < the
applications {``engine.offline``, ``engine.training``, ``engine.evaluation``, ``streaming``} <
``engine.cli`` (with ``engine.__main__`` and the top-level ``server.py``). A module may import its
own group and any lower layer; among the applications only training -> evaluation, training ->
offline and evaluation -> offline are allowed. Every import counts for the layers, at module level,
inside functions and under ``if TYPE_CHECKING``. ``models/`` and ``engine/`` (its cli aside) never
import the transports (``streaming``, ``aiortc``, ``aioice``, ``aiohttp``, ``websockets``). The
imports that run when a file is imported (module level, not type-only) form no cycle among the
project's files. No test module imports another (shared helpers live in tests/helpers.py). Each
failure lists ``file:line -> target``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("engine", "models", "streaming")
TOP_LEVEL = ("server.py",)
MAX_LINES = 600

# module prefix -> (group, rank); the longest matching prefix wins
LAYERS = {
    "models": ("models", 0),
    "engine.core": ("engine.core", 1),
    "engine.synth": ("engine.synth", 2),
    "engine.live": ("engine.live", 3),
    "engine.offline": ("engine.offline", 4),
    "engine.training": ("engine.training", 4),
    "engine.evaluation": ("engine.evaluation", 4),
    "streaming": ("streaming", 4),
    "engine.cli": ("engine.cli", 5),
    "engine.__main__": ("engine.cli", 5),
    "server": ("engine.cli", 5),
}
SIDEWAYS = {  # (importer, imported) between groups of the same rank
    ("engine.training", "engine.evaluation"),
    ("engine.training", "engine.offline"),
    ("engine.evaluation", "engine.offline"),
}
UNLAYERED = {"engine"}  # the bare (empty) package
TRANSPORTS = ("streaming", "aiortc", "aioice", "aiohttp", "websockets")
TRANSPORT_FREE = ("models", "engine")


@dataclass(frozen=True)
class Import:
    path: str  # the importing file, relative to the repository root
    line: int
    target: str  # the dotted module imported (a project module where it is one)
    runtime: bool  # runs when the file is imported: module level and not under TYPE_CHECKING


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def project_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the parsed packages and top-level scripts."""
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts]
    files += [ROOT / name for name in TOP_LEVEL if (ROOT / name).is_file()]
    return {module_name(p.relative_to(ROOT)): p for p in sorted(files)}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` / ``import <name>``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(module: str, path: Path) -> list[Import]:
    rel = str(path.relative_to(ROOT))
    is_package = path.name == "__init__.py"
    modules = project_files()
    out: list[Import] = []

    def visit(node: ast.AST, runtime: bool) -> None:
        if isinstance(node, ast.Import):
            out.extend(Import(rel, node.lineno, a.name, runtime) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, is_package, node.level, node.module)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append(Import(rel, node.lineno, sub if sub in modules else base, runtime))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            runtime = False
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, runtime)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, runtime)

    visit(ast.parse(path.read_text(), filename=rel), True)
    return list(dict.fromkeys(out))  # one entry per (line, target)


@cache
def all_imports() -> dict[str, list[Import]]:
    return {m: imports_of(m, p) for m, p in project_files().items()}


def owner(target: str) -> str | None:
    """The project module an import names (its longest project prefix), or None for a third party."""
    modules = project_files()
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def layer(module: str) -> tuple[str, int] | None:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    return None


def report(title: str, lines: list[str]) -> str:
    return f"{title} ({len(lines)}):\n  " + "\n  ".join(lines)


def test_every_module_has_a_layer():
    missing = [m for m in project_files() if m not in UNLAYERED and layer(m) is None]
    assert not missing, report("modules outside every layer (add them to LAYERS)", missing)


def test_imports_go_down_the_layers():
    bad = []
    for module, imports in all_imports().items():
        mine = layer(module)
        if mine is None:
            continue
        for imp in imports:
            target = owner(imp.target)
            theirs = layer(target) if target else None
            if theirs is None or theirs[0] == mine[0]:
                continue
            if theirs[1] > mine[1]:
                why = "upward"
            elif theirs[1] == mine[1] and (mine[0], theirs[0]) not in SIDEWAYS:
                why = "sideways"
            else:
                continue
            bad.append(f"{imp.path}:{imp.line} -> {imp.target} ({why}: {mine[0]} -> {theirs[0]})")
    assert not bad, report("imports against the layers", bad)


def test_models_and_engine_never_import_the_transports():
    bad = []
    for module, imports in all_imports().items():
        if module.split(".")[0] not in TRANSPORT_FREE or layer(module) == LAYERS["engine.cli"]:
            continue
        for imp in imports:
            if imp.target.split(".")[0] in TRANSPORTS:
                bad.append(f"{imp.path}:{imp.line} -> {imp.target}")
    assert not bad, report("transport imports in models/ or engine/ (outside engine/cli)", bad)


def runtime_graph() -> dict[str, dict[str, Import]]:
    """module -> {module it imports at import time: the first such import}. Importing ``a.b.c``
    also runs the packages ``a`` and ``a.b`` unless they contain the importer."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in project_files()}
    for module, imports in all_imports().items():
        own = module.split(".")
        for imp in imports:
            target = owner(imp.target) if imp.runtime else None
            if target is None:
                continue
            parts = target.split(".")
            for n in range(1, len(parts) + 1):
                dep = ".".join(parts[:n])
                if dep == module or (n < len(parts) and own[:n] == parts[:n]) or dep not in graph:
                    continue
                graph[module].setdefault(dep, imp)
    return graph


def strongly_connected(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's components with more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def a_cycle(graph: dict[str, dict[str, Import]], comp: list[str]) -> list[str]:
    """One shortest cycle through the component's first module (breadth first inside it)."""
    start, members = comp[0], set(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def test_no_import_cycles_between_files():
    graph = runtime_graph()
    bad = []
    for comp in strongly_connected(graph):
        cycle = a_cycle(graph, comp)
        steps = [f"{graph[a][b].path}:{graph[a][b].line} -> {b}" for a, b in pairwise(cycle)]
        bad.append(f"{' / '.join(comp)}: " + "; ".join(steps))
    assert not bad, report("import cycles among files (module-level imports)", bad)


def test_no_test_module_imports_another():
    bad = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        rel = path.relative_to(ROOT)
        for imp in imports_of(module_name(rel), path):
            if imp.target.startswith("tests.test_"):
                bad.append(f"{imp.path}:{imp.line} -> {imp.target}")
    assert not bad, report("test modules importing other test modules (use tests/helpers.py)", bad)


def test_no_module_over_the_line_limit():
    files = [*project_files().values(), *(p for p in (ROOT / "benchmarks").rglob("*.py"))]
    sizes = {p: len(p.read_text().splitlines()) for p in files if "__pycache__" not in p.parts}
    bad = [f"{p.relative_to(ROOT)}: {n} lines" for p, n in sorted(sizes.items()) if n > MAX_LINES]
    assert not bad, report(f"modules over {MAX_LINES} lines", bad)
