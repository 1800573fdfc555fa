"""The statistics every report uses: means over seeds, and intervals only where they mean something.

An interval is printed only for n >= 3 independent values (a 95 % t-interval of the mean: with 2 seeds the
"interval" of a bootstrap is just [min, max], and a t-interval with 1 degree of freedom is +-12.7 sd). Below that a
report lists the per-seed values and says that no interval is given. Flagged cells (ticketkit.diagnostics:
collapsed, dead units, undertrained) are never evidence: they are left out of means, differences and intervals,
and listed instead.
"""
from __future__ import annotations

import math

MIN_N = 3
CONF = 0.95


def flagged(row: dict) -> list[str]:
    return list(row.get("flags") or [])


def usable(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not flagged(r)]


def mean_sd(xs) -> tuple[float, float]:
    xs = [float(x) for x in xs]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def t_interval(xs, conf: float = CONF) -> tuple[float, float] | None:
    """The t-interval of the mean of `xs`, or None for fewer than MIN_N values."""
    from scipy.stats import t

    xs = [float(x) for x in xs]
    if len(xs) < MIN_N:
        return None
    m, sd = mean_sd(xs)
    half = t.ppf(0.5 + conf / 2, len(xs) - 1) * sd / math.sqrt(len(xs))
    return m - half, m + half


def excludes_zero(ci) -> bool:
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def paired(a: dict, b: dict, key: str) -> dict:
    """a − b in points, paired by seed (`a`, `b`: seed -> row), over the seeds where neither cell is flagged:
    the differences, n, how many flagged pairs were left out, their mean (None when no pair is usable) and the
    t-interval (None for n < 3)."""
    both = sorted(set(a) & set(b))
    seeds = [s for s in both if not flagged(a[s]) and not flagged(b[s])]
    diffs = [(a[s][key] - b[s][key]) * 100 for s in seeds]
    return {"diffs": diffs, "n": len(seeds), "excluded": len(both) - len(seeds), "ci": t_interval(diffs),
            "mean": sum(diffs) / len(diffs) if diffs else None}
