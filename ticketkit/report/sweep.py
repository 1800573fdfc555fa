"""A sweep's status table and its report: report.md (per-condition means over seeds, then every cell) and
cells.csv (one row per find level / transfer row). Everything renders from the cells' states it is given (read by
`ticketkit.sweep.cell_states`) and the runs' own run.json / results.json, so any shell can rebuild it."""
from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from ..errors import TicketkitError
from ..fsio import read_json, write_text
from .conditions import Design, render, varying
from .tables import format_table

STATES = ("done", "running", "failed", "pending")  # what a cell can be; `sweep status` counts each


def summarize(states: list[dict]) -> dict:
    counts = {s: sum(1 for c in states if c["status"] == s) for s in STATES}
    return {"total": len(states), **counts}


def status_text(name: str, states: list[dict]) -> str:
    """One line per cell, then every failure (or interruption) with its full one-line error."""
    s = summarize(states)
    rows = [[c["id"], c["kind"], c["status"], _axes_str(c["axes"]),
             f"{c['seconds']:.0f}" if c.get("seconds") is not None else ""] for c in states]
    head = f"{name}: {s['done']}/{s['total']} done, {s['running']} running, {s['failed']} failed, {s['pending']} pending"
    errors = [f"  {c['id']} ({c['status']}): {c['error']}" for c in states if c.get("error") and c["status"] != "done"]
    return "\n".join([head, format_table(["cell", "kind", "status", "axes", "seconds"], rows)]
                     + (["errors:", *errors] if errors else []))


def _axes_str(axes: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in axes.items())


def report_sweep(sweep_dir, states: list[dict], out: Path | None = None) -> Path:
    """One report over all cells, from their `states`: report.md and cells.csv. Returns the report's path."""
    sd = Path(sweep_dir)
    out = Path(out) if out else sd
    rows, table = [], []
    for c in states:
        if c["status"] != "done":
            table.append([c["id"], c["status"], _axes_str(c["axes"]), "", "", "", (c.get("error") or "")[:80]])
            continue
        run = Path(c.get("run") or sd.parent / c["id"])
        for r in _cell_rows(c, run):
            rows.append({"cell": c["id"], "kind": c["kind"], **{f"axis_{k}": v for k, v in c["axes"].items()}, **r})
        last = _main_rows([r for r in rows if r["cell"] == c["id"]])
        if last:
            table.append([c["id"], "done", _axes_str(c["axes"]), f"{last[0]['test_accuracy'] * 100:.2f}",
                          f"{last[-1]['density_prunable'] * 100:.2f}", f"{last[-1]['test_accuracy'] * 100:.2f}", ""])

    # Per condition (all axes but the seed): the sparsest level's test accuracy, mean and spread over seeds.
    groups: dict = {}
    for c in states:
        if c["status"] != "done":
            continue
        cr = _main_rows([r for r in rows if r["cell"] == c["id"]])
        if not cr:
            continue
        key = _axes_str({k: v for k, v in c["axes"].items() if k != "seed"}) or "(one condition)"
        groups.setdefault(key, []).append((cr[0]["test_accuracy"], cr[-1]["test_accuracy"], cr[-1]["density_prunable"]))
    cond = []
    for key, v in sorted(groups.items()):
        dense, sparse = [x[0] for x in v], [x[1] for x in v]
        sd_ = statistics.stdev(sparse) * 100 if len(sparse) > 1 else float("nan")
        cond.append([key, len(v), f"{statistics.mean(dense) * 100:.2f}", f"{statistics.mean([x[2] for x in v]) * 100:.2f}",
                     f"{statistics.mean(sparse) * 100:.2f}", f"{sd_:.2f}"])
    s = summarize(states)
    md = [f"# Sweep {sd.name}", "",
          f"{s['done']}/{s['total']} cells done, {s['failed']} failed, {s['running']} running, {s['pending']} pending.", "",
          "## Conditions (over seeds)", "",
          "Test accuracy of the first row (dense level, or the transfer's first row) and of the sparsest row, "
          "mean over the seeds that finished; sd is the sample standard deviation.", "", "```",
          format_table(["condition", "seeds", "dense acc", "% remaining", "sparsest acc", "sd"], cond) if cond else "(no finished cells)",
          "```", "", *compare_conditions(sd, states, out)["markdown"], "## Cells", "", "```",
          format_table(["cell", "status", "axes", "first acc", "% remaining", "last acc", "error"], table), "```", ""]
    write_text(out / "report.md", "\n".join(md))
    cols = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("cell", "kind"), not k.startswith("axis_"), k))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(out / "cells.csv", buf.getvalue())
    return out / "report.md"


def _main_rows(rows: list[dict]) -> list[dict]:
    """A find's levels, or a transfer's transferred-ticket arm (its controls are in cells.csv), densest first."""
    return sorted([r for r in rows if r.get("arm") in (None, "transferred")], key=lambda r: -r["density_prunable"])


def _cell_rows(c: dict, run: Path) -> list[dict]:
    """Rows with at least density_prunable and test_accuracy: a find run's levels, or a transfer's results."""
    keep = ("level", "density_prunable", "density_all", "val_accuracy", "test_accuracy", "test_macro_f1", "best_epoch",
            "epochs", "seconds")
    if c["kind"] == "find":
        return [{k: r.get(k) for k in keep} for r in read_json(run / "run.json").get("levels", [])]
    return _transfer_rows(run)


def _transfer_rows(run: Path) -> list[dict]:
    """A transfer's rows (every arm, level and seed), densest first within each arm."""
    keep = ("arm", "level", "seed", "density_prunable", "density_all", "val_accuracy", "test_accuracy", "test_macro_f1",
            "best_epoch", "epochs", "seconds")
    rows = [{k: r.get(k) for k in keep} for r in read_json(run / "results.json").get("rows", [])]
    return sorted(rows, key=lambda r: (r["arm"] != "transferred", r["arm"], -r["density_prunable"], r["seed"]))


def sweep_points(sd: Path, states: list[dict]) -> dict:
    """kind -> points (report/conditions.py) of every finished cell: a find's levels (keyed by level index) and a
    transfer's transferred arm (keyed by requested %), each with its flags."""
    out: dict = {"find": [], "transfer": []}
    for c in states:
        if c["status"] != "done":
            continue
        run = Path(c.get("run") or sd.parent / c["id"])
        cond = {k: v for k, v in c["axes"].items() if k != "seed"}
        try:
            if c["kind"] == "find":
                out["find"] += [{"cond": cond, "seed": c["axes"].get("seed", 0), "key": r["level"],
                                 "density": r["density_prunable"], "acc": r["test_accuracy"], "flags": r.get("flags") or []}
                                for r in read_json(run / "run.json").get("levels", [])]
            else:
                out["transfer"] += [{"cond": cond, "seed": r["seed"], "key": float(r["level"]),
                                     "density": r["density_prunable"], "acc": r["test_accuracy"],
                                     "flags": r.get("flags") or []}
                                    for r in read_json(run / "results.json").get("rows", []) if r["arm"] == "transferred"]
        except (TicketkitError, KeyError, TypeError):
            continue  # a run whose files are unreadable is in the cells table (and `ticketkit verify`), not here
    return out


def compare_conditions(sd: Path, states: list[dict], out: Path) -> dict:
    """Per varying axis of the sweep: a PNG (accuracy vs % remaining, a curve per value, the other axes at the
    recipe's reference) and the paired differences from the reference value, for its find and transfer cells."""
    sw = {}
    if (Path(sd) / "sweep.json").exists():
        sw = read_json(Path(sd) / "sweep.json").get("recipe", {}).get("sweep", {}) or {}
    md = ["## Conditions compared", "",
          "For each axis that varies: test accuracy against % weights remaining, one curve per value, the other axes "
          "at the reference value (the recipe's [sweep] reference, else each axis's first value; an axis without a "
          "reference value gets a panel per value). Then (value − reference) test accuracy in points, per level, "
          "paired by seed over the seeds where neither cell is flagged, with a 95 % t-interval only for n >= 3.", ""]
    res = {"plots": [], "differences": []}
    for kind, points in sweep_points(Path(sd), states).items():
        axes = varying([p["cond"] for p in points], sw)
        if not points or not axes:
            continue
        table = sw.get("reference") if isinstance(sw.get("reference"), dict) else None
        ref = {a: v for a, v in (table or {a: vals[0] for a, vals in axes.items()}).items() if a in axes}
        title = "find (source test accuracy)" if kind == "find" else "transfer (transferred arm, target test accuracy)"
        r = render(points, Design(axes, ref), out, f"axis-{kind}-", title)
        md += [r["markdown"]]
        res["plots"] += r["plots"]
        res["differences"] += r["differences"]
    if len(md) == 4:
        md += ["No axis varies among the finished cells (besides the seed).", ""]
    return {**res, "markdown": md}
