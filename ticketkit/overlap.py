"""Mask overlap: how much of one ticket's mask is the same as another's, per layer, against chance.

For two masks over the same n weights with k1 and k2 kept, the overlap is the Jaccard index |A∩B| / |A∪B|.
Two independent masks drawn uniformly at those densities share, in expectation,

    E|A∩B| = k1 * k2 / n            (hypergeometric mean)
    chance Jaccard ≈ E|A∩B| / (k1 + k2 - E|A∩B|)

(the ratio of the expectations: within 1/n of the exact mean at these sizes). An overlap near chance means the
two searches kept unrelated weights; near 1, the same ones. Used by the transfer report (transferred vs fresh
ticket, per level) and `ticketkit overlap A B`.
"""
from __future__ import annotations

import torch


def chance_jaccard(k1: int, k2: int, n: int) -> float:
    """Expected Jaccard of two independent uniform masks with k1 and k2 ones out of n (formula above)."""
    if n <= 0:
        return float("nan")
    inter = k1 * k2 / n
    union = k1 + k2 - inter
    return inter / union if union > 0 else 1.0


def layer_overlap(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Counts, Jaccard and its chance value for two bool masks of one layer."""
    if a.shape != b.shape:
        raise ValueError(f"masks of shapes {list(a.shape)} and {list(b.shape)} cannot be compared")
    a, b = a.bool(), b.bool()
    n, k1, k2 = a.numel(), int(a.sum()), int(b.sum())
    inter = int((a & b).sum())
    union = k1 + k2 - inter
    return {"n": n, "kept_a": k1, "kept_b": k2, "intersection": inter,
            "jaccard": inter / union if union else 1.0, "chance": chance_jaccard(k1, k2, n)}


def mask_overlap(a: dict, b: dict, names=None) -> dict:
    """{"layers": {name: layer_overlap}, "all": the same over every named layer pooled}. `names`: the layers to
    compare (default: those both masks have, in `a`'s order)."""
    names = [n for n in a if n in b] if names is None else list(names)
    missing = [n for n in names if n not in a or n not in b]
    if missing:
        raise ValueError(f"layer {missing[0]!r} is not in both masks")
    layers = {n: layer_overlap(a[n], b[n]) for n in names}
    n = sum(x["n"] for x in layers.values())
    k1 = sum(x["kept_a"] for x in layers.values())
    k2 = sum(x["kept_b"] for x in layers.values())
    inter = sum(x["intersection"] for x in layers.values())
    union = k1 + k2 - inter
    # pooled chance: the sum of per-layer expectations (the masks are drawn layer by layer at their densities)
    e = sum(x["kept_a"] * x["kept_b"] / x["n"] for x in layers.values() if x["n"])
    pooled = {"n": n, "kept_a": k1, "kept_b": k2, "intersection": inter, "jaccard": inter / union if union else 1.0,
              "chance": e / (k1 + k2 - e) if (k1 + k2 - e) > 0 else 1.0}
    return {"layers": layers, "all": pooled}


def ticket_overlap(a, b) -> dict:
    """Overlap of two Tickets' prunable masks. They must be of the same architecture and shapes."""
    if a.prunable != b.prunable:
        raise ValueError("the tickets prune different parameters (other architectures or settings): no overlap")
    return mask_overlap(a.masks, b.masks, a.prunable)


def overlap_table(ov: dict) -> str:
    """Per-layer text table: % kept in each, Jaccard, chance, Jaccard / chance."""
    from .report.tables import format_table

    body = []
    for name, x in [*ov["layers"].items(), ("all prunable", ov["all"])]:
        ratio = x["jaccard"] / x["chance"] if x["chance"] else float("nan")
        body.append([name, f"{x['kept_a'] / x['n'] * 100:.3g}", f"{x['kept_b'] / x['n'] * 100:.3g}",
                     f"{x['jaccard']:.4f}", f"{x['chance']:.4f}", f"{ratio:.2f}"])
    return format_table(["layer", "% kept A", "% kept B", "Jaccard", "chance", "x chance"], body)


# ------------------------------------------------------------------------------------------- in a transfer
def transfer_overlap(src, plan: list[dict], fresh_dirs: list, seed: int) -> list[dict]:
    """For each level the user asked for: the transferred ticket's mask (the source level) against the fresh
    ticket's (the fresh search's level of closest density, as the fresh arm uses), per layer. One record per
    level, tagged with the fresh search's seed."""
    from .fsio import read_json
    from .ticket import Ticket

    dens = [read_json(d / "config.json")["density"]["prunable"] for d in fresh_dirs]
    out = []
    for p in plan:
        if not p["requested_by_user"] or not fresh_dirs:
            continue
        j = min(range(len(fresh_dirs)), key=lambda i: (abs(dens[i] - p["density_prunable"]), i))
        _, masks, _ = src.weights(src.level(p["source_level"]))
        fresh = Ticket.load(fresh_dirs[j]).masks
        ov = mask_overlap(masks, fresh, [n for n in masks if n in fresh])
        out.append({"level": p["requested"], "seed": seed, "source_level": p["source_level"], "fresh_level": j,
                    **ov})
    return out


def overlap_markdown(records: list[dict]) -> list[str]:
    """The transfer report's section: one row per level (and seed) pooled, then one per layer."""
    if not records:
        return []
    rows = sorted(records, key=lambda r: (-float(r["level"]), r["seed"]))
    out = ["", "## Mask overlap: transferred vs fresh ticket", "",
           "Jaccard |A∩B| / |A∪B| of the transferred ticket's mask (A, found on the source) and the fresh ticket's "
           "(B, found on the target from the same init), against two independent uniform masks of the same per-layer "
           "counts: E|A∩B| = k_A k_B / n, chance ≈ E|A∩B| / (k_A + k_B − E|A∩B|) (pooled: per-layer expectations "
           "summed). `x chance` > 1: the searches keep more of the same weights than chance.", "",
           "| % requested | seed | layer | % kept A | % kept B | Jaccard | chance | x chance |",
           "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        for name, x in [("all prunable", r["all"]), *sorted(r["layers"].items())]:  # results.json sorts keys
            ratio = f"{x['jaccard'] / x['chance']:.2f}" if x["chance"] else "n/a"
            out.append(f"| {float(r['level']):g} | {r['seed']} | {name} | {x['kept_a'] / x['n'] * 100:.3g} | "
                       f"{x['kept_b'] / x['n'] * 100:.3g} | {x['jaccard']:.4f} | {x['chance']:.4f} | {ratio} |")
    return out


def overlap_summary(records: list[dict]) -> list[str]:
    """The terminal summary's lines: pooled Jaccard vs chance per level and seed."""
    rows = sorted(records, key=lambda r: (-float(r["level"]), r["seed"]))
    return [f"mask overlap, transferred vs fresh ({len(rows)} level(s)): " + "; ".join(
        f"{float(r['level']):g} % seed {r['seed']}: Jaccard {r['all']['jaccard']:.3f} (chance {r['all']['chance']:.3f})"
        for r in rows)] if rows else []
