"""`ticketkit report <find run>`: the classic lottery-ticket figure of one IMP run (Frankle & Carbin, fig. 1-4).

Test accuracy against % of prunable weights remaining, log x decreasing to the right, one line for the magnitude
run and one for each of its controls that is in the store (`find --control random-prune|random-reinit|...`: the
same settings but the control, so the same levels' densities), the dense training (level 0, from init) and the
majority-class chance line as references. Flagged levels (collapsed, dead units, undertrained) are hollow.
Given a control run, the figure is its magnitude run's, the same picture.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..fsio import read_json
from .figures import chance_line, dense_name, density_axis, dodge
from .tables import format_table

FIGURE = "accuracy_vs_density.png"


@dataclass
class LotteryReport:
    plot: Path
    figure: object  # the matplotlib Figure written to `plot`
    data: dict   # what --json prints: the figure's path and every plotted point per run
    text: str    # the same as a table


def _sans_control(cfg: dict) -> dict:
    return {**cfg, "prune": {k: v for k, v in cfg.get("prune", {}).items() if k != "control"}}


def related_runs(run_dir: Path) -> dict[str, Path]:
    """{control name ("none" for the magnitude run): run dir} over the finished find runs beside `run_dir` whose
    settings equal its own but for prune.control."""
    me = read_json(run_dir / "run.json")
    key = _sans_control(me.get("config", {}))
    out = {me["config"]["prune"].get("control", "none"): run_dir}
    for d in sorted(run_dir.parent.iterdir()):
        if d == run_dir or not d.name.startswith("find-") or not (d / "run.json").is_file():
            continue
        try:
            info = read_json(d / "run.json")
        except Exception:  # an unreadable neighbour is `verify`'s business, not the figure's
            continue
        if info.get("status") == "complete" and _sans_control(info.get("config", {})) == key:
            out.setdefault(info["config"]["prune"].get("control", "none"), d)
    return out


def _flagged(level: dict) -> bool:
    return bool(level.get("flags"))


def report_find_run(run_dir: Path) -> LotteryReport:
    """Draw FIGURE into `run_dir` (atomically) and return what was plotted."""
    from matplotlib.figure import Figure

    from ..fsio import write_with

    runs = related_runs(run_dir)
    order = ["none"] + sorted(k for k in runs if k != "none")
    infos = {k: read_json(runs[k] / "run.json") for k in order if k in runs}
    main = infos.get("none") or infos[order[-1]]
    cfg = main["config"]
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    data = {"plot": str(run_dir / FIGURE), "runs": {}}
    names = list(infos)
    for i, (ctl, info) in enumerate(infos.items()):
        levels = sorted(info.get("levels", []), key=lambda r: -r["density_prunable"])
        pts = [(dodge(r["density_prunable"] * 100, i, len(names)), r["test_accuracy"] * 100, _flagged(r)) for r in levels]
        label = "magnitude pruning (IMP)" if ctl == "none" else f"control: {ctl}"
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        hollow = [p for p in pts if p[2]]
        if hollow:
            ax.scatter([p[0] for p in hollow], [p[1] for p in hollow], s=60, zorder=3, facecolors="white",
                       edgecolors=line.get_color())
        data["runs"][ctl] = {"run": runs[ctl].name, "levels": [
            {"level": r["level"], "density_prunable": r["density_prunable"], "test_accuracy": r["test_accuracy"],
             "flags": r.get("flags") or []} for r in levels]}
    dense = next((r for r in main.get("levels", []) if r["level"] == 0), None)
    if dense is not None:
        ax.axhline(dense["test_accuracy"] * 100, color="black", linestyle="--", linewidth=1,
                   label=f"{dense_name(None, False)} ({dense['test_accuracy'] * 100:.2f})")
    chance_line(ax, main.get("data"))
    density_axis(ax, [r["density_prunable"] * 100 for r in main.get("levels", [])], "measured")
    rewind = cfg.get("prune", {}).get("rewind", "init")
    ax.set_ylabel(f"{cfg.get('data', {}).get('dataset', '?')} test accuracy (%)")
    ax.set_title(f"{main.get('name', run_dir.name)}: {cfg.get('model', {}).get('arch', '?')}, rewind {rewind}, "
                 f"seed {cfg.get('seed', '?')} (hollow: flagged level, not evidence)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_with(run_dir / FIGURE, lambda p: fig.savefig(p, format="png", dpi=120))
    return LotteryReport(run_dir / FIGURE, fig, data, _table(data) + f"\nwrote {run_dir / FIGURE}")


def _table(data: dict) -> str:
    ctls = list(data["runs"])
    by_level: dict = {}
    for c in ctls:
        for r in data["runs"][c]["levels"]:
            by_level.setdefault(r["level"], {})[c] = r
    head = ["level", "% remaining"] + [("IMP" if c == "none" else c) + " test acc" for c in ctls]
    rows = [[lv, f"{next(iter(v.values()))['density_prunable'] * 100:.3g}"]
            + [f"{v[c]['test_accuracy'] * 100:.2f}" + (" (flagged)" if v[c]["flags"] else "") if c in v else ""
               for c in ctls] for lv, v in sorted(by_level.items())]
    return format_table(head, rows)
