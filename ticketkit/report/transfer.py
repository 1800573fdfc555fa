"""A transfer experiment's report: results.csv, report.md (accuracy table with per-layer densities, paired
differences with intervals, findings, flagged cells) and accuracy_vs_density.png. Everything renders from a
transfer's results.json alone, so `ticketkit report` can rebuild every file.

What it will and will not say (report/stats.py): flagged cells are listed, plotted hollow and never counted;
intervals are 95 % t-intervals over seeds, printed only for n >= 3; a comparison is called a finding only when its
interval excludes 0. Whether the seeds are independent replicates or one source search is stated up front.
"""
from __future__ import annotations

import json

from ..controls import CONTROLS
from ..diagnostics import dead_text
from ..numerics import describe
from ..overlap import overlap_markdown, overlap_summary
from .figures import dense_name
from .stats import MIN_N, excludes_zero, flagged, mean_sd, paired, usable
from .tables import format_table

ARM_ORDER = ("transferred", *CONTROLS, "snip", "synflow", "fresh")  # snip, synflow: pruned at init on the target
CSV_COLUMNS = ["arm", "level_requested_pct", "seed", "source_level", "fresh_level", "density_prunable", "density_all",
               "density_embedding", "density_non_embedding", "density_output", "test_accuracy", "test_macro_f1",
               "val_accuracy", "epochs", "best_epoch", "majority_share", "dead_share", "flags", "seconds", "shared_with"]


def _arms(rows: list[dict]) -> list[str]:
    present = {r["arm"] for r in rows}
    return [a for a in ARM_ORDER if a in present] + sorted(present - set(ARM_ORDER))


def _levels(results: dict) -> list[float]:
    """The levels the user asked for (the dense level is always trained, but shown as the reference)."""
    plan = results.get("plan")
    have = {float(r["level"]) for r in results.get("rows", [])}
    if plan:
        want = [float(p["requested"]) for p in plan if p.get("requested_by_user", True)]
        return sorted((x for x in want if x in have), reverse=True)
    return sorted(have, reverse=True)


def _cell(rows, arm, level) -> list[dict]:
    return sorted((r for r in rows if r["arm"] == arm and float(r["level"]) == level), key=lambda r: r["seed"])


def _seeds(results: dict) -> list[int]:
    return sorted({int(r["seed"]) for r in results.get("rows", [])})


def dense_rows(results: dict) -> list[dict]:
    """The unpruned reference: the transferred arm at the source's dense level, one row per seed."""
    return sorted((r for r in results.get("rows", []) if r["arm"] == "transferred" and r["density_prunable"] >= 1.0),
                  key=lambda r: r["seed"])


def design(results: dict) -> str:
    """One line on what the seeds replicate, which decides what an interval covers."""
    n = len(_seeds(results))
    if results.get("independent"):
        return (f"{n} independent seeds: each seed searched the source again (init, subsample, split, data order, "
                f"dropout) and has its own fresh search and controls; intervals cover every source of randomness")
    kind = results.get("source", {}).get("kind")
    what = "a single ticket" if kind == "ticket" else "one source search"
    return (f"{what}: intervals cover training noise only ({n} seed(s) of target training: data order and dropout)"
            if n > 1 else f"{what}, one seed: no interval")


def paired_comparisons(results: dict) -> list[dict]:
    """Transferred minus each other arm, per level, paired by seed (accuracy in points), over the seeds where
    neither cell is flagged; an interval only for n >= 3."""
    rows = results.get("rows", [])
    out = []
    for level in _levels(results):
        base = {r["seed"]: r for r in _cell(rows, "transferred", level)}
        for arm in _arms(rows):
            if arm == "transferred":
                continue
            other = {r["seed"]: r for r in _cell(rows, arm, level)}
            if not set(base) & set(other):
                continue
            d = paired(base, other, "test_accuracy")
            ci = d["ci"]
            out.append({"level": level, "vs": arm, "seeds": d["n"], "excluded": d["excluded"], "mean_diff": d["mean"],
                        "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None, "diffs": d["diffs"]})
    return out


def findings(results: dict) -> list[str]:
    """One sentence per comparison, each saying whether its interval supports it."""
    out = []
    for c in paired_comparisons(results):
        at = f"at {c['level']:g} %"
        if c["seeds"] == 0:
            out.append(f"{at}, transferred vs {c['vs']}: no seed where both cells are usable (all flagged); no comparison.")
        elif c["ci_low"] is None:
            out.append(f"{at}, transferred vs {c['vs']}: {c['seeds']} usable seed(s), differences "
                       f"{', '.join(f'{d:+.2f}' for d in c['diffs'])} points; fewer than {MIN_N}, so no interval and no claim.")
        elif excludes_zero((c["ci_low"], c["ci_high"])):
            word = "above" if c["mean_diff"] > 0 else "below"
            out.append(f"{at}, transferred is {word} {c['vs']} by {c['mean_diff']:+.2f} points "
                       f"(95 % CI {_ci(c)}, n = {c['seeds']}).")
        else:
            out.append(f"{at}, transferred vs {c['vs']}: {c['mean_diff']:+.2f} points, 95 % CI {_ci(c)} includes 0 "
                       f"(n = {c['seeds']}): not distinguishable.")
    return out


def results_csv(rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    order = {a: i for i, a in enumerate(ARM_ORDER)}
    for r in sorted(rows, key=lambda r: (-float(r["level"]), order.get(r["arm"], 99), r["arm"], r["seed"])):
        w.writerow({**r, "level_requested_pct": r["level"], "flags": ";".join(flagged(r))})
    return buf.getvalue()


def _fmt(rs: list[dict]) -> str:
    """Mean (± sd over seeds, n > 1) of the usable cells; flagged ones are counted, not averaged."""
    if not rs:
        return ""
    ok = usable(rs)
    bad = len(rs) - len(ok)
    if not ok:
        return f"flagged ({bad})"
    m, s = mean_sd([r["test_accuracy"] * 100 for r in ok])
    text = f"{m:.2f} ± {s:.2f}" if len(ok) > 1 else f"{m:.2f}"
    return text + (f" [{bad} flagged]" if bad else "")


def _pct(rs: list[dict], key: str) -> str:
    return f"{rs[0][key] * 100:.3g}" if rs and key in rs[0] else ""


def _accuracy_table(results: dict) -> tuple[list, list]:
    rows = results.get("rows", [])
    arms = _arms(rows)
    dense = _fmt(dense_rows(results))
    dense_head = dense_name(_rewind(results), True)
    head = ["% requested", "% remaining", "% all", "% embedding", "% rest", "% output",
            "dense" if dense_head == dense_name(None, True) else dense_head, *arms]
    if "fresh" in arms:
        head.append("fresh % remaining")
    body = []
    for level in _levels(results):
        tr = _cell(rows, "transferred", level) or next((_cell(rows, a, level) for a in arms if _cell(rows, a, level)), [])
        line = [f"{level:g}", _pct(tr, "density_prunable"), _pct(tr, "density_all"), _pct(tr, "density_embedding"),
                _pct(tr, "density_non_embedding"), _pct(tr, "density_output"), dense]
        line += [_fmt(_cell(rows, a, level)) for a in arms]
        if "fresh" in arms:
            line.append(_pct(_cell(rows, "fresh", level), "density_prunable"))
        body.append(line)
    return head, body


def flagged_rows(results: dict) -> list[dict]:
    return [r for r in results.get("rows", []) if flagged(r)]


def flag_line(r: dict) -> str:
    """The one warning line `report` prints per flagged cell."""
    bits = []
    if r.get("collapsed"):
        bits.append(f"collapsed ({r['majority_share'] * 100:.1f} % of test reviews get one class)")
    if "dead units" in flagged(r):
        bits.append(f"dead units ({dead_text(r)})")
    if r.get("undertrained"):
        bits.append(f"undertrained (best epoch {r.get('best_epoch')} = the epoch cap)")
    return f"warning: {r['arm']} {float(r['level']):g} % seed {r['seed']}: {', '.join(bits)}: not evidence"


def _mean(c: dict) -> str:
    """The mean paired difference, or '-' where no seed has both cells usable (never '+nan')."""
    return "-" if c["mean_diff"] is None else f"{c['mean_diff']:+.2f}"


def _ci(c: dict) -> str:
    if c["ci_low"] is None:
        return f"n/a (n = {c['seeds']} < {MIN_N})"
    return f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"


def summary_table(results: dict) -> str:
    """The terminal summary: test accuracy (%) per level and arm, paired differences, and the design."""
    head, body = _accuracy_table(results)
    src = results.get("source", {})
    oov = results.get("oov_rate")
    lines = [f"transfer {src.get('dataset', '?')} -> {results.get('target', '?')} ({src.get('arch', '?')}): "
             "test accuracy %, " + ("mean ± sd over usable seeds" if len(_seeds(results)) > 1 else "one seed")
             + (f"; OOV rate {oov * 100:.2f}%" if oov is not None else ""),
             design(results), format_table(head, body)]
    comps = paired_comparisons(results)
    if comps:
        lines.append(f"transferred minus control, paired by seed (points, 95% t-interval for n >= {MIN_N}):")
        lines.append(format_table(["% requested", "vs", "seeds", "mean diff", "95% CI"],
                                  [[f"{c['level']:g}", c["vs"], c["seeds"], _mean(c), _ci(c)] for c in comps]))
    lines += overlap_summary(results.get("overlap") or [])
    return "\n".join(lines)


def _md_table(head: list, body: list[list]) -> str:
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "|".join(" ---: " for _ in head) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in body]
    return "\n".join(lines)


def render_markdown(results: dict) -> str:
    rows = results.get("rows", [])
    src, cfg = results.get("source", {}), results.get("config", {})
    seeds = _seeds(results)
    data = results.get("data") or {}
    fresh = results.get("fresh")
    out = [f"# Ticket transfer: {src.get('dataset', '?')} → {results.get('target', '?')} ({src.get('arch', '?')})", ""]
    if results.get("status") != "complete":
        out += [f"**Partial results** (status: {results.get('status', '?')}): {len(rows)} cells so far.", ""]
    prune = src.get("find", {}).get("prune", {})
    out += [
        f"- Design: **{design(results)}**.",
        f"- Source: {src.get('kind', '?')} `{src.get('path', '?')}` (rewind {prune.get('rewind', '?')}, "
        f"{prune.get('scope', '?')} pruning, {prune.get('rate', '?')} a round, output layer at "
        f"{prune.get('output_rate', 1)} x the rate)",
        f"- Target: {results.get('target', '?')}, {data.get('train_size', '?')} train / {data.get('val_size', '?')} "
        f"validation / {data.get('test_size', '?')} test reviews; tested at the best-validation state"
        + (f"; {len(data['classes'])} classes ({', '.join(map(str, data['classes']))}), chance (the most frequent "
           f"test class) {data['chance_accuracy'] * 100:.2f}%" if data.get("classes") and "chance_accuracy" in data else ""),
        "- Vocabulary: the source's; OOV rate of the target text under it: "
        + (f"**{results['oov_rate'] * 100:.2f}%** of word tokens" if results.get("oov_rate") is not None else "not measured"),
        f"- Seeds: {', '.join(map(str, seeds))}",
        f"- Training: {json.dumps(cfg.get('train', {}), sort_keys=True)}",
    ]
    if prune.get("rewind", "init") not in ("init", "final"):
        out.append(f"- Late resetting ({prune.get('rewind')}): the transferred arm starts from weights trained on "
                   f"the source for that long, so it carries source training, not just a mask.")
    if fresh:
        out.append(f"- Fresh arm: IMP on the target from the same init (bit-identical: "
                   f"{'yes' if fresh.get('same_init') else 'NO'}), run `{fresh.get('run')}`"
                   + (" (seed 0's; each seed has its own)" if results.get("independent") else ""))
    merged = results.get("merged_from")
    if merged:  # replicates run apart: each one's own command and when it finished
        out.append(f"- Merged from {len(merged)} replicates run apart (`ticketkit report RUN...`), the group that one "
                   f"`--n-seeds` run writes: " + "; ".join(
                       f"seed {s}: `{m.get('name')}`, finished {m.get('finished') or '?'}, "
                       f"ticketkit {(m.get('versions') or {}).get('ticketkit', '?')}, `{m.get('command')}`"
                       for s, m in sorted(merged.items(), key=lambda kv: int(kv[0]))))
    elif results.get("command"):
        out.append(f"- Command: `{results['command']}`")
    out += _machines(results)
    head, body = _accuracy_table(results)
    out += ["", "## Test accuracy (%)", "",
            ("Mean ± sd over the seeds" if len(seeds) > 1 else "One seed (no sd)")
            + " whose cell is not flagged (collapsed, dead units or undertrained; those are counted in brackets and "
            "listed below). `% remaining` is the measured density of the prunable weights, `% all` counts biases "
            "too; `% embedding`, `% rest` (everything but the embedding) and `% output` are "
            "measured per layer group; `dense` is the unpruned network under the same protocol (under late "
            "resetting: the source's weights at the rewind point, unpruned; the fresh arm's 100 % is the dense training from init).",
            "",
            _md_table(head, body)]
    comps = paired_comparisons(results)
    if comps:
        out += ["", "## Transferred vs the other arms, paired by seed", "",
                f"Mean of (transferred − arm) test accuracy in points over the seeds where neither cell is flagged; "
                f"95 % t-interval over those seeds, given only for n >= {MIN_N}.", "",
                _md_table(["% requested", "vs", "n", "flagged pairs left out", "mean diff", "95% CI", "per-seed diffs"],
                          [[f"{c['level']:g}", c["vs"], c["seeds"], c["excluded"], _mean(c), _ci(c),
                            ", ".join(f"{d:+.2f}" for d in c["diffs"])] for c in comps]),
                "", "## What the intervals support", "", *[f"- {f}" for f in findings(results)]]
    out += overlap_markdown(results.get("overlap") or [])
    bad = flagged_rows(results)
    out += ["", "## Flagged cells (not evidence)", ""]
    if bad:
        out.append(_md_table(["arm", "% requested", "seed", "flags", "majority share", "dead units / units with weights",
                              "best epoch / epochs"],
                             [[r["arm"], f"{float(r['level']):g}", r["seed"], ", ".join(flagged(r)),
                               f"{r.get('majority_share', float('nan')) * 100:.1f} %",
                               dead_text(r), f"{r['best_epoch']} / {r['epochs']}"]
                              for r in bad]))
    else:
        out.append("None: no cell collapsed to one class, has most of its units dead, or stopped at its epoch cap.")
    out += ["", "![accuracy vs density](accuracy_vs_density.png)", "",
            "Files: `results.json` (everything; `ticketkit report` rebuilds the rest from it), `results.csv` "
            "(one row per arm, level and seed, with its densities and diagnostics), `accuracy_vs_density.png` "
            "(hollow markers: flagged cells).", ""]
    return "\n".join(out)


def _rewind(results: dict) -> str | None:
    return results.get("source", {}).get("find", {}).get("prune", {}).get("rewind")


def plot_accuracy(results: dict, path):
    """Accuracy against % weights remaining: log x decreasing to the right, ticks at the requested levels (the
    rows'), one line per arm (mean of the usable seeds, ±sd band for n > 1) dodged so arms at one density stay
    visible, flagged cells hollow, the unpruned reference and the majority-class chance line horizontal. Returns the
    matplotlib Figure it wrote."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from ..fsio import write_with
    from .figures import chance_line, density_axis, dodge

    rows = results.get("rows", [])
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    any_flagged = False
    arms = _arms(rows)
    for i, arm in enumerate(arms):
        pts, hollow = [], []
        for level in _levels(results):
            rs = _cell(rows, arm, level)
            if not rs:
                continue
            x = dodge(sum(r["density_prunable"] for r in rs) / len(rs) * 100, i, len(arms))
            ok = usable(rs)
            if ok:
                m, s = mean_sd([r["test_accuracy"] * 100 for r in ok])
                pts.append((x, m, s))
            hollow += [(x, r["test_accuracy"] * 100) for r in rs if flagged(r)]
        if not pts and not hollow:
            continue
        pts.sort(reverse=True)
        color = None
        label = f"{arm} (its 100 %: {dense_name(None, False)})" if arm == "fresh" and \
            dense_name(_rewind(results), True) != dense_name(None, True) else arm
        if pts:
            xs, ms, ss = zip(*pts)
            line, = ax.plot(xs, ms, marker="o", label=label)
            color = line.get_color()
            if any(s > 0 for s in ss):
                ax.fill_between(xs, [m - s for m, s in zip(ms, ss)], [m + s for m, s in zip(ms, ss)], color=color, alpha=0.15)
        if hollow:
            any_flagged = True
            hx, hy = zip(*hollow)
            ax.scatter(hx, hy, facecolors="none", edgecolors=color or "grey", s=45, zorder=3,
                       label=None if pts else f"{arm} (all flagged)")
    dense = usable(dense_rows(results))
    if dense:
        m, s = mean_sd([r["test_accuracy"] * 100 for r in dense])
        ax.axhline(m, color="black", linestyle="--", linewidth=1, label=f"{dense_name(_rewind(results), True)} ({m:.2f})")
        if s > 0:
            ax.axhspan(m - s, m + s, color="black", alpha=0.07)
    chance_line(ax, results.get("data"))
    density_axis(ax, _levels(results), "requested")
    src = results.get("source", {})
    ax.set_ylabel(f"{results.get('target', 'target')} test accuracy (%)")
    n = len(_seeds(results))
    ax.set_title(f"{src.get('dataset', '?')} ticket → {results.get('target', '?')} ({src.get('arch', '?')}), "
                 + (f"mean ± sd over {n} {'independent ' if results.get('independent') else ''}seeds" if n > 1 else "one seed"),
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if any_flagged:
        handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="grey"))
        labels.append("flagged cell (not evidence)")
    ax.legend(handles, labels, fontsize=8)
    fig.tight_layout()
    write_with(path, lambda p: fig.savefig(p, format="png", dpi=120))
    return fig


def render_report(results: dict, out_dir) -> dict:
    """Write results.csv, report.md and accuracy_vs_density.png into out_dir from `results` alone."""
    from pathlib import Path

    from ..fsio import write_text

    out_dir = Path(out_dir)
    paths = {"csv": out_dir / "results.csv", "markdown": out_dir / "report.md", "plot": out_dir / "accuracy_vs_density.png"}
    write_text(paths["csv"], results_csv(results.get("rows", [])))
    write_text(paths["markdown"], render_markdown(results))
    plot_accuracy(results, paths["plot"])
    return paths


def _machines(results: dict) -> list[str]:
    """Where each seed trained (ticketkit.numerics): bits repeat only on the same kind of machine."""
    reps = {s: r.get("numerics") for s, r in (results.get("replicates") or {}).items()}
    if not reps:
        return [f"- Trained on: {describe(results['numerics'])}"] if results.get("numerics") else []
    if not any(reps.values()):
        return ["- Trained on: not recorded (these runs predate ticketkit.numerics)"]
    kinds = {describe(v) for v in reps.values()}
    if len(kinds) == 1:
        return [f"- Trained on: {kinds.pop()} (every seed)"]
    return ["- Trained on: " + "; ".join(f"seed {s}: {describe(v)}" for s, v in sorted(reps.items(), key=lambda kv: int(kv[0])))]
