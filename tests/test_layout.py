"""The import graph of engine/ and repro/: no circles, `repro` over `engine` and never the reverse, and no import
inside a function unless it defers something heavy on purpose (a comment on that line says what and why)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "repro")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the two packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def targets(node: ast.Import | ast.ImportFrom, here: str, is_pkg: bool, known: dict[str, Path]) -> list[str]:
    """The project modules an import statement loads (a `from pkg import sub` names the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] in PACKAGES]
    base = node.module or ""
    if node.level:
        anchor = here.split(".") if is_pkg else here.split(".")[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join(anchor + ([node.module] if node.module else []))
    if base.split(".")[0] not in PACKAGES:
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def _function_import_groups(tree: ast.AST) -> list[list[ast.Import | ast.ImportFrom]]:
    """Imports inside functions, as runs of consecutive import statements (a deferral's comment covers its run)."""
    groups: list[list[ast.Import | ast.ImportFrom]] = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for block in ast.walk(fn):
            for field in ("body", "orelse", "finalbody"):
                run: list[ast.Import | ast.ImportFrom] = []
                stmts = getattr(block, field, None)
                for stmt in stmts if isinstance(stmts, list) else []:
                    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                        run.append(stmt)
                        continue
                    if run:
                        groups.append(run)
                    run = []
                if run:
                    groups.append(run)
    return groups


def graph() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """Module-level import edges, and every run of imports inside a function as (module, first line, its source
    lines joined)."""
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    inner: list[tuple[str, int, str]] = []
    for mod, path in known.items():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        nested: set[int] = set()
        for run in _function_import_groups(tree):
            nested |= {id(n) for n in run}
            first, last = run[0].lineno, max(n.end_lineno or n.lineno for n in run)
            if first > 1 and lines[first - 2].strip().startswith("#"):  # the reason on the line above
                first -= 1
            inner.append((mod, first, " ".join(x.strip() for x in lines[first - 1:last])))
        type_only = {id(n) for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
                     for n in ast.walk(n) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in type_only | nested:
                edges[mod] |= {t for t in targets(node, mod, path.name == "__init__.py", known) if t != mod}
    return edges, inner


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    edges, _ = graph()
    assert cycles(edges) == []


def test_engine_never_imports_repro() -> None:
    edges, inner = graph()
    bad = [(m, t) for m, ts in edges.items() if m.startswith("engine") for t in ts if t.startswith("repro")]
    bad += [(m, src) for m, _, src in inner if m.startswith("engine") and "repro" in src.split("#")[0]]
    assert bad == []


def test_imports_inside_functions_say_why() -> None:
    """An import inside a function is a deliberate deferral of something heavy; a comment on it (or on its run of
    imports) gives the reason."""
    _, inner = graph()
    silent = [f"{m}:{line}: {src}" for m, line, src in inner if "#" not in src]
    assert silent == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
