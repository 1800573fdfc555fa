"""The random controls of a ticket and their seed streams, in one place (find's controls and transfer's arms).

A control turns a ticket's (init, masks, start) into a baseline's: the question it answers is whether the ticket's
mask (random-prune: the same per-layer counts at random positions) or its weights (random-reinit: the same mask over
weights drawn from another seed) matter. A new control is one function here plus its `register_control` line;
find (`--control`) and transfer (`controls`) both read CONTROLS.

The seeds below fix every bit of every published control: do not change them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .prune import Masks, shuffled_like, shuffled_rows_like

REINIT_SEED_OFFSET = 1_000_003  # random-reinit draws its weights from seed + this
CONTROLS: dict[str, Callable] = {}


def register_control(name: str):
    def deco(fn):
        CONTROLS[name] = fn
        return fn
    return deco


def prune_generator(seed: int, level: int | None = None) -> torch.Generator:
    """random-prune's draws. find's control (level None) is one stream over its chain of levels, drawn at every
    level so it stays in step on a resume; a transfer arm gets its own stream per (seed, source level)."""
    if level is None:
        return torch.Generator().manual_seed(seed * 7919 + 17)
    return torch.Generator().manual_seed(seed * 1_000_003 + (level + 1) * 7919 + 17)


def reinit_weights(model_hp, vocab_size: int, seed: int) -> dict:
    """random-reinit's weights: the same architecture initialised from `seed` + REINIT_SEED_OFFSET."""
    from .models import create_model, model_kwargs

    m = create_model(model_hp.arch, vocab_size, seed=seed + REINIT_SEED_OFFSET, **model_kwargs(model_hp))
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@dataclass
class ControlInputs:
    """What a control may draw on. `reinit` is a callable so that the re-drawn weights are built only when used."""
    generator: torch.Generator
    reinit: Callable[[], dict]
    within: Masks | None = None  # random-prune draws survivors only among these (find's chain nests like IMP)


@register_control("random-prune")
def random_prune(init: dict, masks: Masks, start: dict, x: ControlInputs) -> tuple[dict, Masks, dict]:
    """The same per-layer survivor counts at random positions, over the same weights."""
    return init, shuffled_like(masks, x.generator, within=x.within), start


@register_control("random-prune-rows")
def random_prune_rows(init: dict, masks: Masks, start: dict, x: ControlInputs) -> tuple[dict, Masks, dict]:
    """Every embedding row (word) keeps the ticket's number of survivors, shuffled within the row; other layers are
    shuffled per layer. Separates "which words survive" (kept) from "which of their weights" (destroyed): the
    embedding is ~95 % of the prunable weights and an IMP embedding mask is strongly frequency-structured, which a
    per-layer shuffle (random-prune) destroys too. Its chain in find does not nest (a row shuffle has no `within`)."""
    return init, shuffled_rows_like(masks, x.generator), start


@register_control("random-reinit")
def random_reinit(init: dict, masks: Masks, start: dict, x: ControlInputs) -> tuple[dict, Masks, dict]:
    """The same mask over re-drawn weights (they are both the init and the start)."""
    w = x.reinit()
    return w, masks, w


def apply_control(name: str, init: dict, masks: Masks, start: dict, x: ControlInputs) -> tuple[dict, Masks, dict]:
    """(init, masks, start) of control `name` built from a ticket's."""
    return CONTROLS[name](init, masks, start, x)
