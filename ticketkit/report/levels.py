"""A find run's levels: the table `find` and `show` print, and the run's levels.csv."""
from __future__ import annotations

import csv
import io

from .tables import format_table

LEVEL_COLUMNS = ["level", "density_prunable", "density_all", "density_embedding", "density_non_embedding",
                 "density_output", "density_nonzero", "val_accuracy", "test_accuracy", "test_macro_f1", "best_epoch",
                 "epochs", "majority_share", "dead_share", "dead_units", "pruned_units", "units", "flags", "seconds"]


def _pct(r: dict, k: str) -> str:
    return f"{r[k] * 100:.3g}" if isinstance(r.get(k), (int, float)) else "?"


def levels_table(info: dict, path) -> str:
    """run.json's levels, one line each, under the run's path: densities (prunable, all, and by layer group),
    accuracies, and the flags that make a level no evidence (ticketkit.diagnostics)."""
    rows = [[r["level"], f"{r['density_prunable'] * 100:.3f}", f"{r['density_all'] * 100:.3f}",
             _pct(r, "density_embedding"), _pct(r, "density_non_embedding"), _pct(r, "density_output"),
             f"{r['test_accuracy'] * 100:.2f}", f"{r['test_macro_f1'] * 100:.2f}", r["best_epoch"], r["epochs"],
             _pct(r, "dead_share"), ", ".join(r.get("flags") or []) or "-", f"{r['seconds']:.0f}"]
            for r in info.get("levels", [])]
    head = ["level", "% remaining", "% all weights", "% emb", "% rest", "% out", "test acc", "macro-F1", "best ep",
            "epochs", "% dead", "flags", "seconds"]
    return f"run {path}{_classes(info.get('data') or {})}\n" + format_table(head, rows)


def _classes(data: dict) -> str:
    """' (4 classes: a, b, c, d; chance 25.00 %)': what test accuracy is measured against, for k classes."""
    if not data.get("classes") or "chance_accuracy" not in data:
        return ""
    return (f" ({len(data['classes'])} classes: {', '.join(map(str, data['classes']))}; chance "
            f"{data['chance_accuracy'] * 100:.2f} % = the most frequent test class)")


def level_warnings(info: dict) -> list[str]:
    """One warning line per flagged level (what `show` prints on stderr)."""
    return [f"warning: level {r['level']} ({r['density_prunable'] * 100:.3g} % remaining): "
            f"{', '.join(r['flags'])}: not evidence" for r in info.get("levels", []) if r.get("flags")]


def levels_csv(rows: list[dict]) -> str:
    """levels.csv of a run: one row per level (the per-layer densities stay in run.json)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LEVEL_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows({**r, "flags": ";".join(r.get("flags") or [])} for r in rows)
    return buf.getvalue()
