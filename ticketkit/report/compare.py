"""`ticketkit compare RUN_OR_TRANSFER...`: the sweep report's condition comparison for runs named by hand.

    compare(["find-imdb-cnn-aaa", "find-imdb-cnn-bbb", ...], out="cmp")   # -> Compared (paths, differences, text)

Each find run contributes its levels (keyed by level index), each transfer run one arm's rows (keyed by requested
%, default the transferred arm). The conditions are the config fields that differ between the runs (the seed
never counts: cells are paired by it), their reference values the first named run's, and everything renders
through report/conditions.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import config_hash
from ..errors import TicketkitError
from ..fsio import read_json, write_text
from ..store import Store, finished_levels
from .conditions import Design, render, varying
from .stats import mean_sd, t_interval
from .tables import format_table

# Not conditions: the seed (cells are paired by it), a transfer's seed list, and settings that never change a result.
_NOT_CONDITIONS = {"seed", "transfer.seeds", "transfer.workers", "transfer.arch", "transfer.batch_arms"}


@dataclass
class Compared:
    out: Path
    markdown: Path
    plots: list
    axes: dict
    differences: list = field(default_factory=list)
    text: str = ""


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if key in _NOT_CONDITIONS:
            continue
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def resolve_run(ref: str, store=None) -> Path:
    """A find or transfer run from its directory, its name in the store, or a unique prefix of the name."""
    return Store(store).find_run(ref, what="find or transfer run",
                                 accept=lambda d: (d / "run.json").exists() or (d / "results.json").exists())


def run_points(path: Path, arm: str = "transferred") -> tuple[dict, list[dict], str]:
    """(condition, points, status) of one run: a find run's levels, or one arm of a transfer run; the status says
    whether the points are all the run will have."""
    if (path / "run.json").exists():
        info = read_json(path / "run.json")
        if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
            raise TicketkitError(f"{path}/run.json is not a ticketkit find run (no config)")
        cond = {"kind": "find", **_flat(info["config"])}
        return cond, [{"cond": cond, "seed": info["config"].get("seed", 0), "key": r["level"],
                       "density": r["density_prunable"], "acc": r["test_accuracy"], "flags": r.get("flags") or []}
                      for r in finished_levels(path, info)], str(info.get("status", "complete"))
    res = read_json(path / "results.json")
    if not isinstance(res, dict) or not isinstance(res.get("rows"), list):
        raise TicketkitError(f"{path}/results.json is not a ticketkit transfer result (no 'rows' list)")
    arms = sorted({r.get("arm") for r in res["rows"]})
    if arm not in arms:
        raise TicketkitError(f"{path.name} has no {arm!r} arm: choose --arm from {', '.join(map(str, arms))}")
    cond = {"kind": "transfer", "arm": arm, **_flat(res.get("source", {}).get("find") or {}),
            **_flat(res.get("config") or {}, "transfer.")}
    return cond, [{"cond": cond, "seed": r["seed"], "key": float(r["level"]), "density": r["density_prunable"],
                   "acc": r["test_accuracy"], "flags": r.get("flags") or []} for r in res["rows"] if r["arm"] == arm], \
        str(res.get("status", "complete"))


def compare(refs: list[str], out=None, arm: str = "transferred", store=None) -> Compared:
    """Curves per differing setting and paired differences (by seed) between the runs `refs` name; writes
    compare.md, points.csv and one PNG per differing setting into `out` (default ./compare-<hash>)."""
    if not refs:
        raise TicketkitError("compare needs at least one run: ticketkit compare RUN [RUN ...]")
    paths = list(dict.fromkeys(resolve_run(r, store).resolve() for r in refs))
    loaded = {p: run_points(p, arm) for p in paths}
    status = {p: st for p, (_, _, st) in loaded.items()}
    runs = [(p, c, pts) for p, (c, pts, _) in loaded.items()]
    points = [pt for _, _, pts in runs for pt in pts]
    if not points:
        raise TicketkitError("the runs named have no finished levels or rows to compare yet")
    axes = varying([c for _, c, _ in runs])
    for a in axes:  # a setting one run lacks (find vs transfer) is still a condition, spelled "-"
        for pt in points:
            pt["cond"].setdefault(a, None)
    first = runs[0][1]
    design = Design(axes, {a: first.get(a) for a in axes})
    out = Path(out) if out else Path(f"compare-{config_hash({'runs': sorted(str(p) for p in paths)})}")
    out.mkdir(parents=True, exist_ok=True)
    # status and cell count: a run still going (or killed) is compared on what it finished, and says so
    listing = format_table(["run", "kind", "status", "cells", "seed(s)", "condition"],
                           [[p.name, c["kind"], status[p], len(pts), ", ".join(map(str, sorted({x["seed"] for x in pts}))) or "-",
                             ", ".join(f"{a}={c.get(a)}" for a in axes) or "(the same settings)"] for p, c, pts in runs])
    md = [f"# Compared: {len(runs)} runs", "", "```", listing, "```", ""]
    if axes:
        r = render(points, design, out, "axis-", "compared runs")
        md += ["## Conditions compared", "",
               "The settings that differ between the runs, each against its value in the first run named (the "
               "reference; the other settings held there). Cells are paired by seed at the same level (a find level's "
               "index, a transfer's requested %); flagged cells are never counted; 95 % t-intervals only for n >= 3.",
               "", r["markdown"]]
        plots, diffs, text = r["plots"], r["differences"], r["text"]
    else:  # the runs differ only in their seed: one curve over them
        r = render([{**p, "cond": {"runs": "all"}} for p in points], Design({"runs": ["all"]}, {}),
                   out, "axis-", "compared runs")
        md += ["The runs differ only in their seed: one curve over them, no difference to take.", "",
               seed_table(points), "", r["markdown"]]
        plots, diffs, text = r["plots"], [], "the runs differ only in their seed: no paired differences"
    write_text(out / "compare.md", "\n".join(md))
    cols = ["run", "seed", "level", "density_prunable", "test_accuracy", "flags"]
    lines = [",".join(cols)] + [",".join(map(str, [p.name, pt["seed"], pt["key"], pt["density"], pt["acc"],
                                                  ";".join(pt["flags"])])) for p, _, pts in runs for pt in pts]
    write_text(out / "points.csv", "\n".join(lines) + "\n")
    return Compared(out, out / "compare.md", plots, axes, diffs, f"{listing}\n{text}")


def seed_table(points: list[dict]) -> str:
    """Per level: the mean test accuracy over the seeds whose cell is not flagged, its sd and 95 % t-interval
    (n >= 3 only), the measured % remaining, and how many flagged cells were left out."""
    rows = []
    for key in sorted({p["key"] for p in points}):
        at = [p for p in points if p["key"] == key]
        ok = [p["acc"] * 100 for p in at if not p["flags"]]
        m, sd = mean_sd(ok) if ok else (None, None)
        ci = t_interval(ok) if len(ok) >= 3 else None
        dens = sum(p["density"] for p in at) / len(at) * 100
        rows.append(f"| {key} | {dens:.3g} | {len(ok)} | {len(at) - len(ok)} | "
                    + (f"{m:.2f}" if m is not None else "-") + " | " + (f"{sd:.2f}" if ok and len(ok) > 1 else "-")
                    + " | " + (f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "no interval (n < 3)") + " |")
    return "\n".join(["| level | % remaining (mean measured) | n usable | flagged, left out | mean test acc | sd | 95% CI |",
                      "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |", *rows])
