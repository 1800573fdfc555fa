"""Conditions compared: for each axis that varies (rewind, scope, schedule, control, arch, ...), test accuracy
against % weights remaining with one curve per value of the axis, the paired differences from the reference value
per level, and the sentences those differences support. `ticketkit report SWEEP` and `ticketkit compare` both
render through here, from points alone:

    {"cond": {axis: value}, "seed": 0, "key": <level key>, "density": 0.169, "acc": 0.84, "flags": []}

One point is one trained cell. `key` says which cells are the same level across conditions (a find level's index:
the same round of the schedule has the same survivor counts; a transfer's requested %). A curve holds the other
axes at their reference values (`Design.reference`); an axis without one is a facet (one panel per value), so an
architecture crossed with a one-at-a-time design gets its own panel. Statistics as everywhere (report/stats.py):
flagged cells are never counted, only plotted hollow and listed; intervals only for n >= 3 independent seeds.
"""
from __future__ import annotations

import itertools
import json
import textwrap
from dataclasses import dataclass

from .stats import MIN_N, excludes_zero, flagged, mean_sd, paired, t_interval
from .tables import format_table


@dataclass
class Design:
    axes: dict        # each varying axis (never the seed) -> its values, in order
    reference: dict   # held axes -> their reference value; a varying axis not here is a facet

    def ref(self, axis: str):
        return self.reference.get(axis, self.axes[axis][0])

    def facets(self, axis: str) -> list[dict]:
        free = [a for a in self.axes if a != axis and a not in self.reference]
        return [dict(zip(free, combo)) for combo in itertools.product(*(self.axes[a] for a in free))]

    def held(self, axis: str) -> dict:
        return {a: v for a, v in self.reference.items() if a != axis and a in self.axes}


def varying(conds: list[dict], order: dict | None = None) -> dict:
    """The axes whose value differs between conditions, with their values (in `order`'s order where it has them)."""
    out = {}
    for a in dict.fromkeys(k for c in conds for k in c):
        vals = list(dict.fromkeys(_h(c.get(a)) for c in conds))
        if len(vals) > 1:
            pref = (order or {}).get(a)
            known = [_h(v) for v in pref if _h(v) in vals] if isinstance(pref, list) else []
            out[a] = known + [v for v in vals if v not in known]
    return out


def _h(v):
    """A condition value as something hashable (a list setting such as filter_widths becomes its JSON)."""
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def _select(points: list[dict], fixed: dict) -> list[dict]:
    return [p for p in points if all(_h(p["cond"].get(a)) == v for a, v in fixed.items())]


def _by_key(points: list[dict]) -> dict:
    out: dict = {}
    for p in points:
        out.setdefault(p["key"], []).append(p)
    return out


def _fmt(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _where(d: dict) -> str:
    return ", ".join(f"{a}={_fmt(v)}" for a, v in d.items())


def curves(points: list[dict], design: Design, axis: str, facet: dict) -> dict:
    """value -> [{key, x (% remaining), mean, ci, n, hollow}] densest first: mean and t-interval over the usable
    seeds, the flagged cells' (x, accuracy) as hollow points."""
    out = {}
    for value in design.axes[axis]:
        rows = []
        for key, ps in _by_key(_select(points, {**design.held(axis), **facet, axis: value})).items():
            ok = [p["acc"] * 100 for p in ps if not flagged(p)]
            x = sum(p["density"] for p in ps) / len(ps) * 100
            rows.append({"key": key, "x": x, "mean": mean_sd(ok)[0] if ok else None, "ci": t_interval(ok), "n": len(ok),
                         "hollow": [(x, p["acc"] * 100) for p in ps if flagged(p)]})
        if rows:
            out[value] = sorted(rows, key=lambda r: -r["x"])
    return out


def differences(points: list[dict], design: Design, axis: str, facet: dict) -> list[dict]:
    """(value - reference value) test accuracy in points, per level, paired by seed over the seeds where neither
    cell is flagged; an interval only for n >= MIN_N."""
    ref = design.ref(axis)
    fixed = {**design.held(axis), **facet}
    base = _by_key(_select(points, {**fixed, axis: ref}))
    out = []
    for value in design.axes[axis]:
        if value == ref:
            continue
        other = _by_key(_select(points, {**fixed, axis: value}))
        for key in sorted(set(base) & set(other), key=lambda k: -_mean_density(base[k])):
            b, o = ({p["seed"]: p for p in ps} for ps in (base[key], other[key]))
            if not set(b) & set(o):
                continue
            d = paired(o, b, "acc")
            out.append({"axis": axis, "facet": facet, "key": key, "pct": _mean_density(base[key]) * 100,
                        "value": value, "reference": ref, "n": d["n"], "excluded": d["excluded"],
                        "mean_diff": d["mean"], "ci": d["ci"], "diffs": d["diffs"]})
    return out


def _mean_density(ps: list[dict]) -> float:
    return sum(p["density"] for p in ps) / len(ps)


def _ci(d: dict) -> str:
    return f"[{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]" if d["ci"] else f"no interval (n < {MIN_N})"


def statement(d: dict) -> str:
    """What one paired difference supports, and no more."""
    at = f"at {d['pct']:.3g} %" + (f" ({_where(d['facet'])})" if d["facet"] else "")
    what = f"{_fmt(d['value'])} − {_fmt(d['reference'])}"
    if d["n"] == 0:
        return f"{at}, {what}: no seed where both cells are usable (flagged); no comparison."
    per = ", ".join(f"{x:+.2f}" for x in d["diffs"])
    if d["ci"] is None:
        return f"{at}, {what}: {per} points over {d['n']} seed(s): no interval (n < {MIN_N}), no claim."
    if excludes_zero(d["ci"]):
        word = "above" if d["mean_diff"] > 0 else "below"
        return (f"{at}, {_fmt(d['value'])} is {word} {_fmt(d['reference'])} by {d['mean_diff']:+.2f} points "
                f"(95 % CI {_ci(d)}, n = {d['n']}).")
    return f"{at}, {what}: {d['mean_diff']:+.2f} points, 95 % CI {_ci(d)} includes 0 (n = {d['n']}): not distinguishable."


def table_rows(diffs: list[dict]) -> tuple[list, list]:
    head = ["axis", "facet", "% remaining", "difference", "n", "flagged pairs left out", "mean diff", "95% CI", "per-seed diffs"]
    body = [[d["axis"], _where(d["facet"]) or "-", f"{d['pct']:.3g}", f"{_fmt(d['value'])} − {_fmt(d['reference'])}",
             d["n"], d["excluded"], "" if d["mean_diff"] is None else f"{d['mean_diff']:+.2f}", _ci(d),
             ", ".join(f"{x:+.2f}" for x in d["diffs"])] for d in diffs]
    return head, body


def plot_axis(points: list[dict], design: Design, axis: str, path, title: str):
    """One panel per facet: a curve per value of `axis` (mean over usable seeds, 95 % t-interval band where
    n >= 3), flagged cells hollow, log x decreasing to the right. matplotlib's object API: no pyplot state."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from ..fsio import write_with
    from .figures import density_axis, dodge

    facets = design.facets(axis)
    fig = Figure(figsize=(6.5 * len(facets), 4.6))
    axs = fig.subplots(1, len(facets), squeeze=False)[0]
    ref = design.ref(axis)
    any_hollow = False
    for ax, facet in zip(axs, facets):
        xs_all = []
        cs = curves(points, design, axis, facet)
        for i, (value, rows) in enumerate(cs.items()):
            color = f"C{i}"
            pts = [r for r in rows if r["mean"] is not None]
            label = f"{axis}={_fmt(value)}" + (" (reference)" if value == ref else "")
            if pts:
                xs = [dodge(r["x"], i, len(cs)) for r in pts]  # values at one density side by side
                ax.plot(xs, [r["mean"] for r in pts], marker="o", color=color, label=label,
                        linewidth=2.2 if value == ref else 1.5)
                has = [r["ci"] is not None for r in pts]
                if any(has):
                    ax.fill_between(xs, [r["ci"][0] if r["ci"] else r["mean"] for r in pts],
                                    [r["ci"][1] if r["ci"] else r["mean"] for r in pts], where=has, color=color,
                                    alpha=0.15, linewidth=0)
                xs_all += [r["x"] for r in pts]
            hollow = [(dodge(h[0], i, len(cs)), h[1]) for r in rows for h in r["hollow"]]
            if hollow:
                any_hollow = True
                ax.scatter(*zip(*hollow), facecolors="none", edgecolors=color, s=45, zorder=3,
                           label=None if pts else f"{label} (all flagged)")
                xs_all += [h[0] for r in rows for h in r["hollow"]]
        density_axis(ax, xs_all, "measured")  # the rows' `% remaining` are measured too
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(_where(facet) or title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if any_hollow:
            handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="grey"))
            labels.append("flagged cell (not evidence)")
        if handles:
            ax.legend(handles, labels, fontsize=7)
    held = design.held(axis)
    # wrapped: one long line was clipped at the figure's edges
    fig.suptitle(textwrap.fill(f"{title}: {axis}" + (f", other axes at the reference ({_where(held)})" if held else "")
                               + f"; mean and 95 % t-interval over independent seeds (band for n >= {MIN_N})", 90),
                 fontsize=9)
    fig.tight_layout()
    write_with(path, lambda p: fig.savefig(p, format="png", dpi=110))
    return fig


def _md_table(head: list, body: list[list]) -> str:
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "|".join(" ---: " for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in body])


def render(points: list[dict], design: Design, out_dir, prefix: str, title: str) -> dict:
    """One PNG per varying axis (`<prefix><axis>.png` in out_dir), and the markdown section, the paired
    differences and a plain-text table that go with them."""
    from pathlib import Path

    out_dir = Path(out_dir)
    md, plots, diffs = [], [], []
    for axis in design.axes:
        png = out_dir / f"{prefix}{axis.replace('.', '_')}.png"
        plot_axis(points, design, axis, png, title)
        plots.append(png)
        d = [x for facet in design.facets(axis) for x in differences(points, design, axis, facet)]
        diffs += d
        held = design.held(axis)
        md += [f"### {title}: {axis} (reference {_fmt(design.ref(axis))})", "",
               (f"Other axes at the reference: {_where(held)}. " if held else "")
               + (f"One panel per {', '.join(design.facets(axis)[0])}. " if design.facets(axis)[0] else ""), "",
               f"![{axis}]({png.name})", ""]
        if d:
            md += [_md_table(*table_rows(d)), "", *[f"- {statement(x)}" for x in d], ""]
        else:
            md += [f"No pair of cells at the same level and seed to compare for {axis}.", ""]
    bad = [p for p in points if flagged(p)]
    md += [f"#### Flagged cells ({title}; not evidence: plotted hollow, never counted)", ""]
    md += [_md_table(["condition", "seed", "% remaining", "test acc", "flags"],
                     [[_where(p["cond"]), p["seed"], f"{p['density'] * 100:.3g}", f"{p['acc'] * 100:.2f}",
                       ", ".join(flagged(p))] for p in bad]) if bad else "None.", ""]
    text = format_table(*table_rows(diffs)) if diffs else "(no paired differences)"
    return {"markdown": "\n".join(md), "plots": plots, "differences": diffs, "text": text,
            "statements": [statement(x) for x in diffs]}
