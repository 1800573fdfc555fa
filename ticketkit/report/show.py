"""What `show` prints: a run's levels and status, or one ticket's densities, accuracy and settings.

It returns the data (what --json prints) and the text; the CLI only chooses which to print. It loads tickets and
may pull from the Hub, so it is kept apart from the light listings of report/store.py (`ls` needs no torch).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..diagnostics import dead_text
from ..errors import IntegrityError
from ..hub import resolve_ref
from ..numerics import describe
from ..store import Store
from ..ticket import Ticket
from .levels import _classes, level_warnings, levels_table


@dataclass
class Shown:
    data: dict | list       # what --json prints
    text: str               # what a person reads
    exit_code: int = 0      # non-zero: the thing shown is broken (a corrupt run.json)
    warnings: tuple = ()    # one line per flagged level/ticket (collapsed, dead units, undertrained): on stderr


def show(ref: str, level: str | None = None, store=None) -> Shown:
    """A run (its levels, status, config) or one ticket (its densities per layer, accuracy, config). A run is
    described from its files, so a corrupt or interrupted one is shown as such instead of failing."""
    st = store if isinstance(store, Store) else Store(store)
    ref = str(ref)  # a Path works as well as what a user typed
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
            f"test accuracy {c['metrics']['test_accuracy'] * 100:.2f}  macro-F1 {c['metrics']['test_macro_f1'] * 100:.2f}"
            f"{_classes(c.get('data') or {})}\n"
            f"per-layer % remaining:\n{layers}\n"
            f"diagnostics: {_diagnostics(c.get('summary', {}))}\ntrained on {describe(c.get('numerics'))}\nconfig {json.dumps(c['find'], sort_keys=True)}")
    flags = c.get("summary", {}).get("flags") or []
    return Shown(c, text, warnings=(f"warning: {t.path}: {', '.join(flags)}: not evidence",) if flags else ())


def _diagnostics(row: dict) -> str:
    if "flags" not in row:
        return "not recorded (found by an older ticketkit)"
    return (f"majority class {row['majority_share'] * 100:.1f} % of test reviews, dead units "
            f"{dead_text(row)}, best epoch {row.get('best_epoch')}/{row.get('epochs')}; "
            f"flags: {', '.join(row['flags']) or 'none'}")


def _show_run(p: Path) -> Shown:
    info = Store(p.parent).describe(p)
    if info.get("status") == "corrupt":
        return Shown(info, f"run {p}\nstatus corrupt: {info.get('error')}", IntegrityError.exit_code)
    cfg = info.get("config", {})
    try:
        table = levels_table(info, p)
    except (KeyError, TypeError):
        table = f"run {p}\n(run.json levels are malformed: run `ticketkit verify {p}`)"
    states = f"\ntickets {info.get('tickets', 0)} complete" + (
        f", incomplete: {', '.join(info['incomplete_tickets'])}" if info.get("incomplete_tickets") else "")
    return Shown(info, f"{table}\nstatus {info.get('status')}{states}\ntrained on {describe(info.get('numerics'))}\nconfig {json.dumps(cfg, sort_keys=True)}",
                 warnings=tuple(level_warnings(info)))
