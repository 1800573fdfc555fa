"""The package's import graph has no circle, lazy or not.

Every `import ticketkit.x` / `from .x import y` in every .py file under ticketkit/ counts, at module level or inside
a function: a function-level import only hides a circle from Python's loader, not from a reader, who still cannot
understand one module without the other. So the rule is a DAG of modules (see docs/architecture.md for its
layers); a circle that comes back fails here. The package's own __init__ modules are nodes like any other, except
that `ticketkit` itself (the public facade that imports everything) is not a dependency anyone may take.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ticketkit"


def modules() -> dict[str, Path]:
    """ticketkit.x for every .py file (a package is named by its __init__.py), so packages such as
    ticketkit/transfer/ and ticketkit/sweep/ are walked like single modules."""
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(name: str, source: str, is_package: bool, mods) -> set[str]:
    """The package modules `name` imports anywhere in its source (module level and inside functions)."""
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.ImportFrom):
            base = (here[: len(here) - node.level + 1] if node.level else [])
            mod = ".".join(base + ([node.module] if node.module else []))
            if mod in mods:
                found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in mods)
    found.discard(name)
    found.discard("ticketkit")  # `from . import x` names the submodule x (added above), not the facade
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle as a path [a, b, ..., a], or None: depth-first search with white/grey/black colours."""
    colour = dict.fromkeys(graph, 0)
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        colour[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if colour[v] == 1:
                return stack[stack.index(v):] + [v]
            if colour[v] == 0 and (c := visit(v)):
                return c
        stack.pop()
        colour[u] = 2
        return None

    for m in sorted(graph):
        if colour[m] == 0 and (c := visit(m)):
            return c
    return None


def test_no_import_circle():
    mods = modules()
    graph = {m: imports(m, p.read_text(), p.name == "__init__.py", mods) for m, p in mods.items()}
    cycle = find_cycle(graph)
    assert cycle is None, f"import circle inside ticketkit: {' -> '.join(cycle)} (function-level imports count too)"


def test_the_checker_sees_circles_and_lazy_imports():
    """The checker itself: a circle through a function-level import and a subpackage is found; a DAG passes."""
    src = {"ticketkit.a": ("from .b import x\n", False), "ticketkit.b": ("def f():\n    from .p.c import y\n", False),
           "ticketkit.p": ("from . import c\n", True), "ticketkit.p.c": ("from ..a import z\n", False)}
    graph = {m: imports(m, text, pkg, src) for m, (text, pkg) in src.items()}
    assert graph["ticketkit.p"] == {"ticketkit.p.c"}
    assert find_cycle(graph) == ["ticketkit.a", "ticketkit.b", "ticketkit.p.c", "ticketkit.a"]
    del src["ticketkit.p.c"]
    assert find_cycle({m: imports(m, text, pkg, src) for m, (text, pkg) in src.items()}) is None
