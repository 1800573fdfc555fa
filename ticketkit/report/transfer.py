"""A transfer experiment's report: results.csv, report.md (accuracy table, paired comparisons with bootstrap CIs)
and accuracy_vs_density.png. Everything renders from a transfer's results.json alone, so `ticketkit report` can
rebuild every file."""
from __future__ import annotations

import json

from .tables import format_table

ARM_ORDER = ("transferred", "random-prune", "random-reinit", "fresh")
CSV_COLUMNS = ["arm", "level_requested_pct", "seed", "source_level", "fresh_level", "density_prunable", "density_all",
               "test_accuracy", "test_macro_f1", "val_accuracy", "epochs", "best_epoch", "seconds", "shared_with"]
N_BOOT = 10_000
BOOT_SEED = 0


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


def _mean_std(xs) -> tuple[float, float]:
    import numpy as np

    a = np.asarray(xs, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def dense_rows(results: dict) -> list[dict]:
    """The unpruned reference: the transferred arm at the source's dense level, one row per seed."""
    return sorted((r for r in results.get("rows", []) if r["arm"] == "transferred" and r["density_prunable"] >= 1.0),
                  key=lambda r: r["seed"])


def bootstrap_ci(diffs, conf: float = 0.95, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of paired differences, resampling seeds with a fixed generator."""
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - conf) / 2, 1 - (1 - conf) / 2])
    return float(lo), float(hi)


def paired_comparisons(results: dict) -> list[dict]:
    """Transferred minus each other arm, per level, paired by seed (accuracy in points)."""
    rows = results.get("rows", [])
    out = []
    for level in _levels(results):
        base = {r["seed"]: r["test_accuracy"] for r in _cell(rows, "transferred", level)}
        for arm in _arms(rows):
            if arm == "transferred":
                continue
            other = {r["seed"]: r["test_accuracy"] for r in _cell(rows, arm, level)}
            seeds = sorted(set(base) & set(other))
            if not seeds:
                continue
            diffs = [(base[s] - other[s]) * 100 for s in seeds]
            lo, hi = bootstrap_ci(diffs)
            out.append({"level": level, "vs": arm, "seeds": len(seeds), "mean_diff": sum(diffs) / len(diffs),
                        "ci_low": lo, "ci_high": hi, "diffs": diffs})
    return out


def results_csv(rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    order = {a: i for i, a in enumerate(ARM_ORDER)}
    for r in sorted(rows, key=lambda r: (-float(r["level"]), order.get(r["arm"], 99), r["arm"], r["seed"])):
        w.writerow({**r, "level_requested_pct": r["level"]})
    return buf.getvalue()


def _fmt(rs: list[dict]) -> str:
    if not rs:
        return ""
    m, s = _mean_std([r["test_accuracy"] * 100 for r in rs])
    return f"{m:.2f} ± {s:.2f}" if len(rs) > 1 else f"{m:.2f}"


def _accuracy_table(results: dict) -> tuple[list, list]:
    rows = results.get("rows", [])
    arms = _arms(rows)
    dense = _fmt(dense_rows(results))
    head = ["% requested", "% remaining", "% all weights", "dense", *arms]
    if "fresh" in arms:
        head.append("fresh % remaining")
    body = []
    for level in _levels(results):
        tr = _cell(rows, "transferred", level) or next((_cell(rows, a, level) for a in arms if _cell(rows, a, level)), [])
        line = [f"{level:g}", f"{tr[0]['density_prunable'] * 100:.3f}" if tr else "",
                f"{tr[0]['density_all'] * 100:.3f}" if tr else "", dense]
        line += [_fmt(_cell(rows, a, level)) for a in arms]
        if "fresh" in arms:
            fr = _cell(rows, "fresh", level)
            line.append(f"{fr[0]['density_prunable'] * 100:.3f}" if fr else "")
        body.append(line)
    return head, body


def summary_table(results: dict) -> str:
    """The terminal summary: test accuracy (%) mean ± std over seeds, per level and arm."""
    head, body = _accuracy_table(results)
    seeds = sorted({r["seed"] for r in results.get("rows", [])})
    src = results.get("source", {})
    oov = results.get("oov_rate")
    lines = [f"transfer {src.get('dataset', '?')} -> {results.get('target', '?')} ({src.get('arch', '?')}): "
             f"test accuracy %, mean ± std over {len(seeds)} seed(s)"
             + (f"; OOV rate {oov * 100:.2f}%" if oov is not None else ""),
             format_table(head, body)]
    comps = paired_comparisons(results)
    if comps:
        lines.append("transferred minus control, paired by seed (points, bootstrap 95% CI):")
        lines.append(format_table(["% requested", "vs", "seeds", "mean diff", "95% CI"],
                                  [[f"{c['level']:g}", c["vs"], c["seeds"], f"{c['mean_diff']:+.2f}", _ci(c)] for c in comps]))
    return "\n".join(lines)


def _ci(c: dict) -> str:
    if c["ci_low"] != c["ci_low"]:  # NaN: one seed
        return "n/a (1 seed)"
    return f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"


def _md_table(head: list, body: list[list]) -> str:
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "|".join(" ---: " for _ in head) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in body]
    return "\n".join(lines)


def render_markdown(results: dict) -> str:
    rows = results.get("rows", [])
    src, cfg = results.get("source", {}), results.get("config", {})
    seeds = sorted({r["seed"] for r in rows})
    data = results.get("data", {})
    fresh = results.get("fresh")
    out = [f"# Ticket transfer: {src.get('dataset', '?')} → {results.get('target', '?')} ({src.get('arch', '?')})", ""]
    if results.get("status") != "complete":
        out += [f"**Partial results** (status: {results.get('status', '?')}): {len(rows)} cells so far.", ""]
    out += [
        f"- Source: {src.get('kind', '?')} `{src.get('path', '?')}` (seed {src.get('seed', '?')}, "
        f"rewind {src.get('find', {}).get('prune', {}).get('rewind', '?')}, "
        f"{src.get('find', {}).get('prune', {}).get('scope', '?')} pruning)",
        f"- Target: {results.get('target', '?')}, {data.get('train_size', '?')} train / {data.get('val_size', '?')} "
        f"validation / {data.get('test_size', '?')} test reviews; tested at the best-validation state",
        "- Vocabulary: the source's; OOV rate of the target text under it: "
        + (f"**{results['oov_rate'] * 100:.2f}%** of word tokens" if results.get("oov_rate") is not None else "not measured"),
        f"- Seeds: {', '.join(map(str, seeds))} (data order and dropout per seed; the same for every arm)",
        f"- Training: {json.dumps(cfg.get('train', {}), sort_keys=True)}",
    ]
    if fresh:
        out.append(f"- Fresh arm: IMP on the target from the same init (bit-identical: "
                   f"{'yes' if fresh.get('same_init') else 'NO'}), run `{fresh.get('run')}`")
    if results.get("command"):
        out.append(f"- Command: `{results['command']}`")
    head, body = _accuracy_table(results)
    out += ["", f"## Test accuracy (%), mean ± std over {len(seeds)} seed(s)", "",
            "`% remaining` is the measured density of the source level used (prunable weights; `% all weights` counts "
            "biases too); `dense` is the unpruned network under the same protocol.", "", _md_table(head, body)]
    comps = paired_comparisons(results)
    if comps:
        out += ["", "## Transferred vs the other arms, paired by seed", "",
                f"Mean of (transferred − arm) test accuracy in points; 95% percentile bootstrap CI over seeds "
                f"({N_BOOT} resamples, numpy seed {BOOT_SEED}). With few seeds the interval is coarse.", "",
                _md_table(["% requested", "vs", "seeds", "mean diff", "95% CI", "per-seed diffs"],
                          [[f"{c['level']:g}", c["vs"], c["seeds"], f"{c['mean_diff']:+.2f}", _ci(c),
                            ", ".join(f"{d:+.2f}" for d in c["diffs"])] for c in comps])]
    out += ["", "![accuracy vs density](accuracy_vs_density.png)", "",
            "Files: `results.json` (everything; `ticketkit report` rebuilds the rest from it), `results.csv` "
            "(one row per arm, level and seed), `accuracy_vs_density.png`.", ""]
    return "\n".join(out)


def plot_accuracy(results: dict, path) -> None:
    """Accuracy against % weights remaining: log x decreasing to the right, one line per arm with ±std bands,
    the dense accuracy as a horizontal reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fsio import write_with

    rows = results.get("rows", [])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs_all: list = []
    for arm in _arms(rows):
        pts = []
        for level in _levels(results):
            rs = _cell(rows, arm, level)
            if rs:
                m, s = _mean_std([r["test_accuracy"] * 100 for r in rs])
                x = sum(r["density_prunable"] for r in rs) / len(rs) * 100
                pts.append((x, m, s))
        if not pts:
            continue
        pts.sort(reverse=True)
        xs, ms, ss = zip(*pts)
        xs_all += xs
        line, = ax.plot(xs, ms, marker="o", label=arm)
        ax.fill_between(xs, [m - s for m, s in zip(ms, ss)], [m + s for m, s in zip(ms, ss)], color=line.get_color(), alpha=0.2)
    dense = dense_rows(results)
    if dense:
        m, s = _mean_std([r["test_accuracy"] * 100 for r in dense])
        ax.axhline(m, color="black", linestyle="--", linewidth=1, label=f"dense ({m:.2f})")
        if s > 0:
            ax.axhspan(m - s, m + s, color="black", alpha=0.07)
    ax.set_xscale("log")
    ax.invert_xaxis()  # sparser to the right, as in the lottery-ticket papers
    from matplotlib.ticker import FixedLocator, NullFormatter

    if xs_all:  # ticks at the measured densities, labelled in plain %
        ticks = sorted(set(round(x, 3) for x in xs_all))
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.set_xticklabels([f"{t:.3g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    src = results.get("source", {})
    ax.set_xlabel("% of prunable weights remaining (log scale)")
    ax.set_ylabel(f"{results.get('target', 'target')} test accuracy (%)")
    seeds = len({r["seed"] for r in rows})
    ax.set_title(f"{src.get('dataset', '?')} ticket → {results.get('target', '?')} ({src.get('arch', '?')}), "
                 f"mean ± std over {seeds} seed(s)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        write_with(path, lambda p: fig.savefig(p, format="png", dpi=120))
    finally:
        plt.close(fig)


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
