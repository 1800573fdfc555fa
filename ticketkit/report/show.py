"""What `show`, `ls` and `pull` print: a ticket's or run's description, the store's runs, a Hub user's repos.

Each returns the data (what --json prints) and the text; the CLI only chooses which to print.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..fsio import read_json
from ..hub import resolve_ref
from ..store import Store, is_ticket_dir, level_dirs
from ..ticket import Ticket
from .levels import levels_table
from .tables import format_table


@dataclass
class Shown:
    data: dict | list       # what --json prints
    text: str               # what a person reads
    exit_code: int = 0      # non-zero: the thing shown is broken (a corrupt run.json)


def show(ref: str, level: str | None = None, store=None) -> Shown:
    """A run (its levels, status, config) or one ticket (its densities per layer, accuracy, config). A run is
    described from its files, so a corrupt or interrupted one is shown as such instead of failing."""
    st = store if isinstance(store, Store) else Store(store)
    p = Path(ref)
    if not ref.startswith("hf://") and not p.exists():
        p = st.root / ref if (st.root / ref).exists() else None
    if p is not None and (p / "run.json").exists() and level is None:
        return _show_run(p)
    t = Ticket.load(resolve_ref(ref, level, st))
    c = t.config
    layers = "\n".join(f"  {n}: {d * 100:.3f}%" for n, d in c["density"]["layers"].items())
    text = (f"ticket {t.path}\nrun {c.get('run')}  level {c.get('level')}  arch {t.arch}  dataset {c['find']['data']['dataset']}\n"
            f"% weights remaining: {c['density']['prunable'] * 100:.3f} (prunable), {c['density']['all'] * 100:.3f} (all)\n"
            f"test accuracy {c['metrics']['test_accuracy'] * 100:.2f}  macro-F1 {c['metrics']['test_macro_f1'] * 100:.2f}\n"
            f"per-layer % remaining:\n{layers}\nconfig {json.dumps(c['find'], sort_keys=True)}")
    return Shown(c, text)


def _show_run(p: Path) -> Shown:
    info = Store(p.parent).describe(p)
    if info.get("status") == "corrupt":
        return Shown(info, f"run {p}\nstatus corrupt: {info.get('error')}", 3)
    cfg = info.get("config", {})
    try:
        table = levels_table(info, p)
    except (KeyError, TypeError):
        table = f"run {p}\n(run.json levels are malformed: run `ticketkit verify {p}`)"
    states = f"\ntickets {info.get('tickets', 0)} complete" + (
        f", incomplete: {', '.join(info['incomplete_tickets'])}" if info.get("incomplete_tickets") else "")
    return Shown(info, f"{table}\nstatus {info.get('status')}{states}\nconfig {json.dumps(cfg, sort_keys=True)}")


def runs_table(runs: list[dict]) -> str:
    """`ls`: one line per run in the store, its status, levels and first/last accuracy."""
    rows = []
    for r in runs:
        lv = r.get("levels") if isinstance(r.get("levels"), list) else []
        status = r.get("status", "?") + (f" ({len(r['incomplete_tickets'])} incomplete ticket(s))" if r.get("incomplete_tickets") else "")
        try:
            nums = [f"{lv[-1]['density_prunable'] * 100:.2f}", f"{lv[0]['test_accuracy'] * 100:.2f}",
                    f"{lv[-1]['test_accuracy'] * 100:.2f}"] if lv else ["", "", ""]
        except (KeyError, TypeError, IndexError):  # a run.json edited by hand: list it, don't crash
            nums, status = ["", "", ""], "corrupt"
        rows.append([r["name"], r.get("kind", "?"), status, len(lv) or r.get("tickets", 0), *nums])
    return format_table(["run", "kind", "status", "levels", "% remaining", "dense acc", "sparsest acc"], rows) if rows else ""


def hub_table(items: list[dict]) -> str:
    """`ls --hub USER`: the repos a user has published."""
    return format_table(["repo", "last modified", "tags"],
                        [[i["id"], i.get("last_modified", ""), ",".join(i.get("tags", []))] for i in items])


def pulled(path: Path) -> tuple[list[dict], str]:
    """`pull`: every ticket now in `path` (one, or a run's levels), as rows and as a table."""
    dirs = [path] if is_ticket_dir(path) else level_dirs(path)
    rows = []
    for d in dirs:
        c = read_json(d / "config.json")
        rows.append({"ticket": str(d), "level": c.get("level"), "density_prunable": c["density"]["prunable"],
                     "test_accuracy": c.get("metrics", {}).get("test_accuracy")})
    table = format_table(["ticket", "level", "% remaining", "test acc"],
                         [[r["ticket"], r["level"], f"{r['density_prunable'] * 100:.3f}",
                           "" if r["test_accuracy"] is None else f"{r['test_accuracy'] * 100:.2f}"] for r in rows])
    return rows, table
