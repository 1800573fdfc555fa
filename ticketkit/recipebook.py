"""The recipes that ship in the package (ticketkit/recipes/*.toml; the repo's recipes/ links there), so that a
pip-installed ticketkit has them too: `--recipe quick` names one, `ticketkit recipes` lists them."""
from __future__ import annotations

from pathlib import Path

from .errors import TicketkitError

BUILTIN = Path(__file__).resolve().parent / "recipes"


def builtin_recipes() -> list[dict]:
    """Each built-in recipe: its name, its one-line purpose (the file's first comment line) and its path."""
    out = []
    for p in sorted(BUILTIN.glob("*.toml")):
        first = next((ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()), "")
        out.append({"name": p.stem, "purpose": first.lstrip("#").strip() if first.startswith("#") else "",
                    "path": str(p)})
    return out


def resolve_recipe(ref: str | Path) -> Path:
    """A recipe file: `ref` itself where it exists (a path always wins), else the built-in recipe of that name."""
    p = Path(ref)
    if p.exists() or p.suffix or len(p.parts) > 1:
        return p
    builtin = BUILTIN / f"{ref}.toml"
    if builtin.exists():
        return builtin
    names = ", ".join(r["name"] for r in builtin_recipes())
    raise TicketkitError(f"recipe {ref!r} is neither a file nor a built-in recipe ({names}): see `ticketkit recipes`")
