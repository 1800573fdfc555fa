"""Is a trained cell evidence? Three checks on every training, stored beside its accuracy.

  collapsed     >= 99 % of the test reviews get the same predicted class (a majority-class predictor)
  dead units    (flagged when >= 50 % of them) features the output layer reads that carry nothing over the whole validation split: for the CNN a
                filter whose pooled ReLU output is 0 on every review (it never fires, so it never gets a gradient
                again); for the LSTM a hidden unit whose pooled output is the same on every review. Counted among
                the units that still have weights: a unit the mask emptied (IMP removes whole filters at high
                sparsity) is pruned structure, not a training that died, and is counted apart as pruned_units.
  undertrained  the best validation epoch is the epoch cap: more epochs might still have helped

A flagged cell is reported, plotted hollow and never counted as evidence (ticketkit.report).
"""
from __future__ import annotations

import torch

DIAGNOSTIC_KEYS = ("majority_share", "collapsed", "dead_units", "units", "pruned_units", "dead_share", "undertrained",
                   "flags")
COLLAPSE_SHARE = 0.99
DEAD_SHARE = 0.5  # flag when at least half the features are dead; a few dead filters at high sparsity are normal
CONSTANT_TOL = 1e-6


@torch.inference_mode()
def dead_units(model, feed, batch_size: int, amp_dtype=None) -> tuple[int, int, int] | None:
    """(dead, total, pruned) over the features the output layer reads, on `feed` (a train.Feed): `pruned` have no
    weight left, `dead` are the others that carry nothing. None for a model that does not expose its features."""
    if not hasattr(model, "features"):
        return None
    model.eval()
    hi = lo = None
    _, it = feed.epoch(batch_size, None, bucketing=True)
    for _, ids, lengths, _ in it:
        with torch.autocast(feed.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            h = model.features(ids, lengths).float()
        bhi, blo = h.amax(0), h.amin(0)
        hi = bhi if hi is None else torch.maximum(hi, bhi)
        lo = blo if lo is None else torch.minimum(lo, blo)
    if hi is None:
        return None
    if getattr(model, "dead_rule", "constant") == "zero":
        dead = hi <= 0
    else:
        dead = (hi - lo) <= CONSTANT_TOL
    emptied = model.emptied_features().to(dead.device) if hasattr(model, "emptied_features") else torch.zeros_like(dead)
    return int((dead & ~emptied).sum()), int(dead.numel()), int(emptied.sum())


def dead_text(r: dict) -> str:
    """'3/136 (164 of 300 pruned)': dead units over the units that still have weights; older rows, dead/total."""
    if r.get("pruned_units") is None:
        return f"{r.get('dead_units', '?')}/{r.get('units', '?')}"
    live = r["units"] - r["pruned_units"]
    return f"{r['dead_units']}/{live}" + (f" ({r['pruned_units']} of {r['units']} pruned)" if r["pruned_units"] else "")


def flags(d: dict) -> list[str]:
    """The names of the checks a cell fails, from its diagnostics (or a results row that carries them)."""
    out = []
    if d.get("collapsed"):
        out.append("collapsed")
    if d.get("dead_share", 0.0) >= DEAD_SHARE:
        out.append("dead units")
    if d.get("undertrained"):
        out.append("undertrained")
    return out


def diagnose(majority_share: float, dead: tuple[int, int, int] | None, best_epoch: int, epoch_cap: int) -> dict:
    """`dead`: dead_units' (dead, total, pruned); the dead share is over the units that still have weights, and is
    1 when none has (nothing is left to carry a feature)."""
    d = {"majority_share": majority_share, "collapsed": majority_share >= COLLAPSE_SHARE,
         "undertrained": best_epoch >= epoch_cap}
    if dead is not None:
        n_dead, total, pruned = dead
        live = total - pruned
        d.update(dead_units=n_dead, units=total, pruned_units=pruned,
                 dead_share=n_dead / live if live else (1.0 if total else 0.0))
    d["flags"] = flags(d)
    return d
