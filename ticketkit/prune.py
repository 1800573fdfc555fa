"""Unstructured pruning as method x scope, the random controls' mask draws, and mask bookkeeping.

A pruning *method* scores every prunable weight (magnitude: |w| of the trained weights; a method at
initialisation, SNIP or SynFlow in prune_init.py, scores the init with the model and data in `PruneContext`); a *scope*
turns scores into a mask (local: the same rate per layer; global: one threshold). find calls `prune_step`, so a new
method is one scoring function and its `register_method` line.

A mask is a dict from parameter name to a bool tensor of the parameter's shape (True = kept). Pruning only ever
removes surviving weights, so successive masks nest. Counts are exact: a layer with n survivors pruned at rate r
loses round(r * n) of them, smallest magnitude first, ties broken by position (stable sort).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch

from .errors import TicketkitError

Masks = dict[str, torch.Tensor]
FLOOR = 0.001  # PruneHparams.layer_floor's default
EMBEDDING = "embedding.weight"  # the registered models' embedding and output layer
OUTPUT = "fc.weight"             # (models.py: output_layer)
PRUNERS = {}


def register_pruner(name):
    def deco(fn):
        PRUNERS[name] = fn
        return fn
    return deco


METHODS: dict = {}


def register_method(name: str, at_init: bool = False):
    """Register a scoring function `fn(weights, masks, context) -> {name: scores}` (higher = keep). `at_init`:
    the method scores the initial weights (it needs context.model and context.batches), not the trained ones."""
    def deco(fn):
        fn.at_init = at_init
        METHODS[name] = fn
        return fn
    return deco


@dataclass
class PruneContext:
    """What a method may need beyond the weights: the model (at the weights scored) and a batch iterator."""
    model: object = None
    batches: object = None


@register_method("magnitude")
def magnitude_scores(weights: dict[str, torch.Tensor], masks: Masks, context: PruneContext | None = None) -> dict:
    return {n: weights[n].detach().abs() for n in masks}


def prune_step(method: str, weights, masks: Masks, rate: float, scope: str = "local", layer_rates=None,
               output_layer: str | None = None, output_factor: float = 1.0, floor: float = FLOOR,
               context: PruneContext | None = None) -> Masks:
    """One pruning round: `method` scores, `scope` (with the output layer's rate and the floor) decides."""
    if method not in METHODS:
        raise TicketkitError(f"unknown pruning method {method!r}: choose one of {', '.join(sorted(METHODS))}")
    return prune_scores(METHODS[method](weights, masks, context), masks, rate, scope, layer_rates, output_layer,
                        output_factor, floor)


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


def layer_rate(name: str, rate: float, layer_rates: dict | None, output_layer: str | None, output_factor: float) -> float:
    """A layer's rate this round: its own from layer_rates, else the output layer's reduced rate (Frankle & Carbin
    prune the output layer at half the rate: it is small, and every survivor there carries a whole feature), else
    `rate`."""
    if layer_rates and name in layer_rates:
        return layer_rates[name]
    return rate * output_factor if name == output_layer else rate


def floor_count(numel: int, alive: int, floor: float) -> int:
    """How many weights a layer keeps at least: `floor` of its size, never fewer than 1, never more than it has.

    A floor rather than a refusal: an emptied layer makes every later level a constant classifier (the audit's LSTM
    at 0.2 % predicted the majority class in every arm), and one global threshold over layers of different scales
    (a Xavier embedding has std ~0.009, the convolutions ~0.05) empties the small-scale layer long before 0.2 %.
    The floor keeps every layer a layer; the pruning it spares is taken from the other layers (global) or not at
    all (local), and per-layer densities are always reported, so a layer held at its floor is visible."""
    return min(alive, max(1, math.ceil(floor * numel)))


def _spare_floor(scores: torch.Tensor, alive: torch.Tensor, floor: float) -> torch.Tensor:
    """A layer's flat scores with its `floor_count` best survivors at +inf, so one threshold never reaches them."""
    keep = floor_count(alive.numel(), int(alive.sum()), floor)
    if not keep:
        return scores
    top = torch.where(alive, scores, torch.full_like(scores, -float("inf"))).argsort(descending=True, stable=True)[:keep]
    scores = scores.clone()
    scores[top] = float("inf")
    return scores


@register_pruner("local")
def prune_local(scores: dict[str, torch.Tensor], masks: Masks, rate: float, layer_rates: dict | None = None,
                output_layer: str | None = None, output_factor: float = 1.0, floor: float = FLOOR) -> Masks:
    """Each layer loses the same fraction of its surviving weights, lowest scores first (the output layer `output_factor` of it, a layer
    in layer_rates its own rate), down to its floor."""
    out = {}
    for n, m in masks.items():
        r = layer_rate(n, rate, layer_rates, output_layer, output_factor)
        alive = m.flatten()
        before = int(alive.sum())
        k = min(int(round(r * before)), before - floor_count(m.numel(), before, floor))
        out[n] = _prune_k(scores[n].detach().flatten().float(), alive, k).view_as(m)
    return out


@register_pruner("global")
def prune_global(scores: dict[str, torch.Tensor], masks: Masks, rate: float, layer_rates: dict | None = None,
                 output_layer: str | None = None, output_factor: float = 1.0, floor: float = FLOOR) -> Masks:
    """One score threshold across all layers: the round(rate * survivors) lowest-scoring weights anywhere go, except
    each layer's largest `floor_count` survivors, which are spared.

    The output layer stands outside the threshold and is pruned on its own at `output_factor` x rate (as local
    pruning does), so that the one small layer every prediction goes through is not thinned at the embedding's pace."""
    if layer_rates:
        raise TicketkitError("prune.layer_rates applies to local pruning only: drop it or use --scope local")
    out = {}
    if output_layer in masks and output_factor != 1.0:
        out = prune_local(scores, {output_layer: masks[output_layer]}, rate * output_factor, floor=floor)
    names = [n for n in masks if n not in out]
    flat = torch.cat([_spare_floor(scores[n].detach().flatten().float(), masks[n].flatten(), floor) for n in names])
    alive = torch.cat([masks[n].flatten() for n in names])
    k = int(round(rate * int(alive.sum())))
    k = min(k, int((alive & torch.isfinite(flat)).sum()))
    new = _prune_k(flat, alive, k)
    i = 0
    for n in names:
        sz = masks[n].numel()
        out[n] = new[i:i + sz].view_as(masks[n])
        i += sz
    return {n: out[n] for n in masks}


def prune_scores(scores, masks: Masks, rate: float, scope: str = "local", layer_rates=None,
                 output_layer: str | None = None, output_factor: float = 1.0, floor: float = FLOOR) -> Masks:
    """One round of `scope` over a method's scores (higher = keep)."""
    if scope not in PRUNERS:
        raise TicketkitError(f"unknown pruning scope {scope!r}: choose one of {sorted(PRUNERS)}")
    return PRUNERS[scope](scores, masks, rate, layer_rates, output_layer, output_factor, floor)


def prune(weights, masks: Masks, rate: float, scope: str = "local", layer_rates=None, output_layer: str | None = None,
          output_factor: float = 1.0, floor: float = FLOOR) -> Masks:
    """One round of magnitude pruning of `weights` (smallest |w| first)."""
    return prune_scores(magnitude_scores(weights, masks), masks, rate, scope, layer_rates, output_layer,
                        output_factor, floor)


def local_counts(masks: Masks, rate: float, rounds: int, layer_rates: dict | None = None,
                 output_layer: str | None = None, output_factor: float = 1.0, floor: float = FLOOR) -> list[dict]:
    """Per-layer survivor counts after each of `rounds` local rounds, without the weights: local pruning's counts
    depend only on the counts before it (exact rounding, floor), so one-shot pruning can land on the iterative
    ticket's per-layer counts of any level."""
    counts = {n: int(m.sum()) for n, m in masks.items()}
    out = []
    for _ in range(rounds):
        counts = {n: c - min(int(round(layer_rate(n, rate, layer_rates, output_layer, output_factor) * c)),
                             c - floor_count(masks[n].numel(), c, floor)) for n, c in counts.items()}
        out.append(dict(counts))
    return out


def prune_to_counts(weights: dict[str, torch.Tensor], masks: Masks, counts: dict[str, int] | int,
                    floor: float | None = None) -> Masks:
    """One shot to given survivor counts: per layer (a dict: keep each layer's `counts[n]` largest survivors) or
    in total under one global threshold (an int). With `floor` (int counts), each layer's `floor_count` largest
    survivors are spared, as global pruning spares them, so the threshold empties no layer."""
    if isinstance(counts, int):
        names = list(masks)
        # float64: exact for float32 magnitudes (the same order), and wide enough for SynFlow's path products
        scores = torch.cat([_spare_floor(weights[n].detach().abs().flatten().double(), masks[n].flatten(), floor)
                            if floor is not None else weights[n].detach().abs().flatten().double() for n in names])
        alive = torch.cat([masks[n].flatten() for n in names])
        k = int(alive.sum()) - counts
        if k > int((alive & torch.isfinite(scores)).sum()):
            raise TicketkitError(f"cannot prune to {counts} survivors: the layer floor keeps more")
        new = _prune_k(scores, alive, k)
        out, i = {}, 0
        for n in names:
            out[n] = new[i:i + masks[n].numel()].view_as(masks[n])
            i += masks[n].numel()
        return out
    return {n: _prune_k(weights[n].detach().abs().flatten().double(), m.flatten(), int(m.sum()) - counts[n]).view_as(m)
            for n, m in masks.items()}


def prune_like(weights: dict[str, torch.Tensor], masks: Masks, like: Masks, scope: str = "local",
               output_layer: str | None = None, output_factor: float = 1.0, floor: float = FLOOR) -> Masks:
    """One shot from `masks` to the survivor counts of `like` (a mask that iterative `scope` pruning reached).

    local: `like`'s per-layer counts exactly. global: its total under one threshold with the layer floors, and the
    output layer on its own at its count (global pruning prunes it apart at its reduced rate). Both counts are
    functions of the schedule alone, not of the weights pruned (local_counts; global spares the same floors every
    round), so `like` may come from any weights. `like` may also be the counts themselves ({name: int}); `weights`
    may be any non-negative scores (prune_init: SNIP, SynFlow), kept highest first."""
    like = {n: c if isinstance(c, int) else int(c.sum()) for n, c in like.items()}
    if scope == "local":
        return prune_to_counts(weights, masks, {n: like[n] for n in masks})
    out = {}
    if output_layer in masks and output_factor != 1.0:
        out = prune_to_counts(weights, {output_layer: masks[output_layer]}, {output_layer: like[output_layer]})
    rest = {n: m for n, m in masks.items() if n not in out}
    if rest:
        out.update(prune_to_counts(weights, rest, sum(like[n] for n in rest), floor=floor))
    return {n: out[n] for n in masks}


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


def shuffled_rows_like(masks: Masks, generator: torch.Generator, rows_of: str = EMBEDDING) -> Masks:
    """The row control (random-prune-rows): layer `rows_of` (the embedding: one row per word) keeps each row's exact
    number of survivors, shuffled within the row; every other layer is shuffled as a whole (shuffled_like).

    It keeps *which words survive, and how much of each*, and destroys *which of their weights*: a ticket that still
    wins under it wins through its vocabulary, not through its weights."""
    out = shuffled_like({n: m for n, m in masks.items() if n != rows_of}, generator)
    if rows_of in masks:
        m = masks[rows_of]
        counts = m.sum(dim=1, keepdim=True)
        # A random permutation per row: rank every entry of the row by a uniform draw; keep the `count` best ranks.
        ranks = torch.rand(m.shape, generator=generator).argsort(dim=1).argsort(dim=1)
        out[rows_of] = ranks < counts
    return {n: out[n] for n in masks}


def is_nested(inner: Masks, outer: Masks) -> bool:
    return all(bool((inner[n] & ~outer[n]).sum() == 0) for n in inner)


def densities(masks: Masks, params: dict[str, torch.Tensor], embedding: str = EMBEDDING, output: str = OUTPUT) -> dict:
    """Measured densities: per layer, over prunable weights, over all parameters (biases included), and by group:
    the embedding (~95 % of the prunable weights, so it dominates "% remaining"), everything but the embedding, and
    the output layer."""
    kept = sum(int(m.sum()) for m in masks.values())
    prunable = sum(m.numel() for m in masks.values())
    total = sum(p.numel() for p in params.values())
    rest = [m for n, m in masks.items() if n != embedding]
    rest_n = sum(m.numel() for m in rest)
    groups = {"density_embedding": int(masks[embedding].sum()) / masks[embedding].numel() if embedding in masks else 1.0,
              "density_non_embedding": sum(int(m.sum()) for m in rest) / rest_n if rest_n else 1.0,
              "density_output": int(masks[output].sum()) / masks[output].numel() if output in masks else 1.0}
    return {
        "prunable": kept / prunable if prunable else 1.0,
        "all": (kept + total - prunable) / total if total else 1.0,
        "kept": kept, "prunable_count": prunable, "total_count": total,
        "layers": {n: int(m.sum()) / m.numel() for n, m in masks.items()},
        "groups": groups,
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
