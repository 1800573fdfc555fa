"""A find run's levels: the table `find` and `show` print, and the run's levels.csv."""
from __future__ import annotations

import csv
import io

from .tables import format_table

LEVEL_COLUMNS = ["level", "density_prunable", "density_all", "density_nonzero", "val_accuracy", "test_accuracy",
                 "test_macro_f1", "best_epoch", "epochs", "seconds"]


def levels_table(info: dict, path) -> str:
    """run.json's levels, one line each, under the run's path."""
    rows = [[r["level"], f"{r['density_prunable'] * 100:.3f}", f"{r['density_all'] * 100:.3f}",
             f"{r['test_accuracy'] * 100:.2f}", f"{r['test_macro_f1'] * 100:.2f}", r["best_epoch"], r["epochs"],
             f"{r['seconds']:.0f}"] for r in info.get("levels", [])]
    head = ["level", "% remaining", "% all weights", "test acc", "macro-F1", "best ep", "epochs", "seconds"]
    return f"run {path}\n" + format_table(head, rows)


def levels_csv(rows: list[dict]) -> str:
    """levels.csv of a run: one row per level (the per-layer densities stay in run.json)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LEVEL_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
