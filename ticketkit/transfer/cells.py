"""A transfer's cells: one (arm, level, seed) each, and the (masks, starting weights) its arm trains from.

The network a cell trains is start * mask. The arms:
  transferred    the source mask over the source rewind weights
  random-prune   a random mask with the source's exact per-layer counts, over the same rewind weights
  random-reinit  the source mask over weights re-drawn from another seed (ticketkit.controls, as find's controls)
  fresh          a ticket found by IMP on the target itself, from the same init and vocabulary
  snip, synflow  pruned at init on the target: the source init scored by a method at init (SNIP on the target's
                 training batches, SynFlow data-free), pruned to the source mask's counts, trained from the init
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from ..controls import CONTROLS, ControlInputs, apply_control, prune_generator, reinit_weights
from ..errors import TicketkitError
from ..prune import masked_state
from ..ticket import Ticket
from .source import Source

AT_INIT = ("snip", "synflow")  # prune_init's methods, as arms
ARMS = ("transferred", *CONTROLS, *AT_INIT, "fresh")
DENSE = 100.0


@dataclass
class _Cell:
    arm: str
    level: float  # requested % remaining
    seed: int
    source_level: int
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return (self.arm, self.level, self.seed)


def _key(row: dict) -> tuple:
    return (row["arm"], float(row["level"]), int(row["seed"]))


def _digest(masks: dict, start: dict) -> str:
    """Identity of a training's starting point: equal digests (and seeds) give bit-identical trainings."""
    h = hashlib.sha256()
    net = masked_state(start, masks)
    for n in sorted(start):
        h.update(n.encode())
        h.update(net[n].detach().cpu().contiguous().numpy().tobytes())
    for n in sorted(masks):
        h.update(n.encode())
        h.update(masks[n].cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def arm_start(src: Source, arm: str, source_level: int, seed: int, fresh=None, train=None) -> tuple[dict, dict]:
    """(masks over the prunable parameters, starting weights) of one arm at one source level and seed.
    The random-prune mask is drawn per (seed, level), reproducibly. `fresh`: the fresh arm's ticket (a Ticket, or
    its directory). `train`: the target's encoded training split (SNIP scores the init on it)."""
    init, masks, rewind = src.weights(src.level(source_level))
    if arm == "transferred":
        return masks, rewind
    if arm in AT_INIT:
        key = (arm, source_level)  # one mask per level: it depends on the init and the target, not the cell's seed
        if key not in src._cache:
            src._cache[key] = at_init_masks(src, arm, init, masks, train)
        return src._cache[key], init
    if arm in CONTROLS:
        def reinit() -> dict:  # as find's control: weights from the source's seed + REINIT_SEED_OFFSET, drawn once
            if "reinit" not in src._cache:
                src._cache["reinit"] = reinit_weights(src.find.model, src.vocab_size, src.find.seed)
            return src._cache["reinit"]

        _, masks, start = apply_control(arm, init, masks, rewind, ControlInputs(prune_generator(seed, source_level), reinit))
        return masks, start
    if arm == "fresh":
        t = fresh if isinstance(fresh, Ticket) else Ticket.load(fresh)
        return t.masks, t.rewind
    raise TicketkitError(f"unknown arm {arm!r}; arms are {', '.join(ARMS)}")


def at_init_masks(src: Source, method: str, init: dict, like: dict, train) -> dict:
    """The mask `method` prunes the source init to at `like`'s counts, under the source search's scope, output
    rate and floor. SNIP's batches: the first prune.score_batches of the target's training split shuffled with
    the source seed (the seed the target split is drawn with)."""
    from ..models import MODELS, create_model, model_kwargs
    from ..prune import PruneContext, full_masks
    from ..prune_init import prune_at_init
    from ..train import batches, take

    f = src.find
    model = create_model(f.model.arch, src.vocab_size, seed=None, **model_kwargs(f.model))
    model.load_state_dict(init)
    bl = []
    if train is not None:
        gen = torch.Generator().manual_seed(f.seed)
        bl = [take(train, i, "cpu") for i in batches(train, f.train.batch_size, gen, bucketing=False)[:f.prune.score_batches]]
    return prune_at_init(method, init, full_masks(init, list(like)), like, PruneContext(model=model, batches=bl),
                         f.prune.scope, getattr(MODELS[f.model.arch], "output_layer", None), f.prune.output_rate,
                         f.prune.layer_floor)
