"""Unstructured magnitude pruning, its random controls, and mask bookkeeping.

A mask is a dict from parameter name to a bool tensor of the parameter's shape (True = kept). Pruning only ever
removes surviving weights, so successive masks nest. Counts are exact: a layer with n survivors pruned at rate r
loses round(r * n) of them, smallest magnitude first, ties broken by position (stable sort).
"""
from __future__ import annotations

from typing import Iterable

import torch

from .errors import TicketkitError

Masks = dict[str, torch.Tensor]
PRUNERS = {}


def register_pruner(name):
    def deco(fn):
        PRUNERS[name] = fn
        return fn
    return deco


def full_masks(params: dict[str, torch.Tensor], names: Iterable[str]) -> Masks:
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}


def _prune_k(scores: torch.Tensor, alive: torch.Tensor, k: int) -> torch.Tensor:
    """Drop the k lowest-scoring alive entries of a flat tensor; returns the new flat alive mask."""
    new = alive.clone()
    if k <= 0:
        return new
    s = torch.where(alive, scores, torch.full_like(scores, float("inf")))
    order = torch.argsort(s, stable=True)
    new[order[:k]] = False
    return new


@register_pruner("local")
def prune_local(weights: dict[str, torch.Tensor], masks: Masks, rate: float, layer_rates: dict | None = None) -> Masks:
    """Each layer loses the same fraction of its surviving weights (or its own rate from layer_rates)."""
    layer_rates = layer_rates or {}
    out = {}
    for n, m in masks.items():
        r = layer_rates.get(n, rate)
        alive = m.flatten()
        k = int(round(r * int(alive.sum())))
        out[n] = _prune_k(weights[n].detach().abs().flatten().float(), alive, k).view_as(m)
    return out


@register_pruner("global")
def prune_global(weights: dict[str, torch.Tensor], masks: Masks, rate: float, layer_rates: dict | None = None) -> Masks:
    """One magnitude threshold across all layers: the round(rate * survivors) smallest weights anywhere go."""
    if layer_rates:
        raise TicketkitError("prune.layer_rates applies to local pruning only: drop it or use --prune local")
    names = list(masks)
    scores = torch.cat([weights[n].detach().abs().flatten().float() for n in names])
    alive = torch.cat([masks[n].flatten() for n in names])
    k = int(round(rate * int(alive.sum())))
    new = _prune_k(scores, alive, k)
    out, i = {}, 0
    for n in names:
        sz = masks[n].numel()
        out[n] = new[i:i + sz].view_as(masks[n])
        i += sz
    return out


def prune(weights, masks: Masks, rate: float, scope: str = "local", layer_rates=None) -> Masks:
    if scope not in PRUNERS:
        raise TicketkitError(f"unknown pruning scope {scope!r}: choose one of {sorted(PRUNERS)}")
    return PRUNERS[scope](weights, masks, rate, layer_rates)


def shuffled_like(masks: Masks, generator: torch.Generator, within: Masks | None = None) -> Masks:
    """Random masks with exactly the per-layer counts of `masks` (the random-pruning control).

    With `within`, survivors are drawn only among `within`'s survivors, so a chain of controls nests like IMP.
    """
    out = {}
    for n, m in masks.items():
        k = int(m.sum())
        pool = within[n].flatten() if within is not None else torch.ones(m.numel(), dtype=torch.bool)
        cand = torch.nonzero(pool).flatten()
        if k > cand.numel():
            raise TicketkitError(f"cannot draw {k} survivors for {n} from {cand.numel()}: masks do not nest")
        pick = cand[torch.randperm(cand.numel(), generator=generator)[:k]]
        new = torch.zeros(m.numel(), dtype=torch.bool)
        new[pick] = True
        out[n] = new.view_as(m)
    return out


def is_nested(inner: Masks, outer: Masks) -> bool:
    return all(bool((inner[n] & ~outer[n]).sum() == 0) for n in inner)


def densities(masks: Masks, params: dict[str, torch.Tensor]) -> dict:
    """Measured densities: per layer, over prunable weights, and over all parameters (biases included)."""
    kept = sum(int(m.sum()) for m in masks.values())
    prunable = sum(m.numel() for m in masks.values())
    total = sum(p.numel() for p in params.values())
    return {
        "prunable": kept / prunable if prunable else 1.0,
        "all": (kept + total - prunable) / total if total else 1.0,
        "kept": kept, "prunable_count": prunable, "total_count": total,
        "layers": {n: int(m.sum()) / m.numel() for n, m in masks.items()},
    }


def nonzero_density(model: torch.nn.Module, names: Iterable[str]) -> float:
    """Density measured on the weights themselves: what survives in the model, not what the mask claims."""
    params = dict(model.named_parameters())
    nz = sum(int((params[n] != 0).sum()) for n in names)
    tot = sum(params[n].numel() for n in names)
    return nz / tot if tot else 1.0


def masked_state(state: dict[str, torch.Tensor], masks: Masks) -> dict[str, torch.Tensor]:
    """The network a (start, masks) pair means: start * mask where a parameter has a mask. Unmasked entries are
    the same tensors, not copies (a model's load_state_dict copies them anyway)."""
    return {n: state[n] * masks[n] if n in masks else state[n] for n in state}
