"""Pruning at initialisation: SNIP (Lee et al. 2019) and SynFlow (Tanaka et al. 2020), the baselines Frankle et al.
(2021) set beside IMP. Both score the *initial* weights; `prune_at_init` turns scores into a mask with exactly the
survivor counts the IMP schedule reaches at a level (the same local/global scope, output layer at its reduced rate
and layer floor as magnitude pruning: `like` carries those counts), so a level's SNIP, SynFlow and IMP tickets have
the same density and differ only in which weights they keep.

  snip     |dL/dw * w| summed over `score_batches` training batches, in eval mode (no dropout, so the score is a
           function of the init and the batches alone), one shot.
  synflow  data-free: every weight replaced by |w * mask|, the network run in float64 on an all-ones input, R = sum of
           the logits, score |dR/dw * w|; iterated `rounds` times (100 by default, as Tanaka et al.) with the density
           shrinking exponentially to the target, rescoring the survivors each round.

Text models take token ids, so "all-ones input" needs a reading: the embedding is treated as a linear layer over an
all-ones (every word at once) input, so every position's embedded vector is the column sums of |E| and the
embedding's own |W| is a factor of R like any layer's (each row of a column shares that column's gradient; the
[PAD] row is zero at init, so it scores 0). The sequence is one review of `SYNFLOW_LEN` real tokens.
Non-linear parts, so that every weight lies on a product path (SynFlow's premise) instead of behind a saturated
or flat non-linearity that gives it a zero gradient:
  - ReLU and GELU pass positive inputs (nearly) unchanged: kept;
  - LayerNorm would subtract the mean of a positive vector: bypassed (identity);
  - attention: the softmax of an all-ones input's huge positive logits is saturated (or flat over equal keys), so q
    and k would get no gradient; it is scored linearised, (q k^T) v averaged over the real keys
    (EncoderLayer.linear_attention);
  - the LSTM's sigmoid/tanh gates saturate on the large positive pre-activations (their gradient underflows to 0
    even in float64): it is scored as the linear recurrence h_t = sum over the 4 gates of (|W_ih| x_t + |W_hh| h_{t-1}).
Scores stay float64 (the path products of a 2-block Transformer reach ~1e50, past float32). The float64 network is
built once per PruneContext; each round reloads |init * mask| into it.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .prune import METHODS, Masks, PruneContext, prune_like, register_method  # noqa: F401 (METHODS: with these)

SYNFLOW_LEN = 32  # real tokens in SynFlow's one all-ones review (at least the CNN's widest filter)


def _masked_copy(model: nn.Module, masks: Masks) -> nn.Module:
    """A float32 eval-mode copy of `model` with its masks applied, so pruned weights score 0."""
    m = copy.deepcopy(model).float().eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n in masks:
                p.mul_(masks[n].to(p.dtype))
    m.zero_grad(set_to_none=True)
    return m


@register_method("snip", at_init=True)
def snip_scores(weights, masks: Masks, context: PruneContext) -> dict:
    """Connection sensitivity |dL/dc| at c = 1, which is |dL/dw * w|, over the context's batches."""
    m = _masked_copy(context.model, masks)
    for ids, lengths, labels in context.batches:
        F.cross_entropy(m(ids, lengths), labels).backward()  # gradients add up over the batches
    params = dict(m.named_parameters())
    return {n: (params[n].grad * params[n]).detach().abs() for n in masks}


class _AllOnesEmbedding(nn.Module):
    """nn.Embedding read as a linear layer over an all-ones input: every position gets the column sums of W."""

    def __init__(self, emb: nn.Embedding):
        super().__init__()
        self.weight = emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight.sum(0).expand(ids.shape[0], ids.shape[1], -1)


class _LinearLSTM(nn.Module):
    """A one-layer batch-first nn.LSTM's weights as a linear recurrence (the 4 gate blocks summed), for SynFlow."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.weight_ih_l0, self.weight_hh_l0 = lstm.weight_ih_l0, lstm.weight_hh_l0
        self.bias_ih_l0, self.bias_hh_l0 = lstm.bias_ih_l0, lstm.bias_hh_l0

    def forward(self, x: torch.Tensor):
        gates = 4
        h = x.new_zeros(x.shape[0], self.weight_hh_l0.shape[1])
        out = []
        for t in range(x.shape[1]):
            pre = x[:, t] @ self.weight_ih_l0.T + h @ self.weight_hh_l0.T + self.bias_ih_l0 + self.bias_hh_l0
            h = pre.view(x.shape[0], gates, -1).sum(1)
            out.append(h)
        return torch.stack(out, 1), None


@register_method("synflow", at_init=True)
def synflow_scores(weights, masks: Masks, context: PruneContext) -> dict:
    """|dR/dw * w| with R the summed logits of the |w|-network on an all-ones input (module docstring)."""
    m = getattr(context, "_synflow", None)  # built once per context: its 100 rounds differ only in the mask
    if m is None:
        m = context._synflow = _synflow_net(context.model)
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.copy_(context.model.get_parameter(n).detach().abs())
            if n in masks:
                p.mul_(masks[n])
    m.zero_grad(set_to_none=True)
    ids = torch.ones(1, SYNFLOW_LEN, dtype=torch.long)
    m(ids, torch.tensor([SYNFLOW_LEN])).sum().backward()
    params = dict(m.named_parameters())
    return {n: (params[n].grad * params[n]).detach().abs() for n in masks}


def _synflow_net(model: nn.Module) -> nn.Module:
    """A float64 eval-mode copy of `model` with its non-linear parts made SynFlow-ready (module docstring)."""
    m = copy.deepcopy(model).to(torch.float64).eval()
    for name, mod in list(m.named_modules()):
        parent, _, child = name.rpartition(".")
        owner = m.get_submodule(parent) if parent else m
        if isinstance(mod, nn.LayerNorm):
            setattr(owner, child, nn.Identity())
        elif isinstance(mod, nn.LSTM):
            setattr(owner, child, _LinearLSTM(mod))
        elif hasattr(mod, "linear_attention"):
            mod.linear_attention = True
        elif isinstance(mod, nn.Embedding) and name == "embedding":
            setattr(owner, child, _AllOnesEmbedding(mod))
    return m


synflow_scores.rounds = 100  # Tanaka et al.: iterative, exponential schedule
snip_scores.rounds = 1       # Lee et al.: one shot


def counts_at(full: Masks, like: dict[str, int], frac: float) -> dict[str, int]:
    """Per-layer counts a fraction `frac` of the way from `full` to `like` on an exponential (geometric) schedule:
    n * (c / n) ** frac, so round r of R has density d ** (r / R) per layer; frac = 1 gives `like` exactly."""
    out = {}
    for name, m in full.items():
        n, c = int(m.sum()), like[name]
        out[name] = c if frac >= 1 else max(c, min(n, int(round(n * (c / n) ** frac)))) if n else 0
    return out


def prune_at_init(method: str, weights: dict, full: Masks, like: Masks, context: PruneContext, scope: str = "local",
                  output_layer: str | None = None, output_factor: float = 1.0, floor: float = 0.001,
                  rounds: int | None = None) -> Masks:
    """The mask `method` keeps from `full` at `like`'s survivor counts (per layer under local scope; in total, with
    the output layer apart and the layer floors, under global: prune.prune_like). Over `rounds` rounds (the method's
    own by default) each rescoring the survivors, with counts on an exponential schedule (counts_at)."""
    fn = METHODS[method]
    rounds = rounds or getattr(fn, "rounds", 1)
    target = {n: c if isinstance(c, int) else int(c.sum()) for n, c in like.items()}
    masks = full
    if all(target[n] == int(m.sum()) for n, m in full.items()):
        return full  # the dense level: nothing to prune
    for r in range(1, rounds + 1):
        scores = fn(weights, masks, context)
        counts = counts_at(full, target, r / rounds)
        if scope == "global":  # intermediate totals: the geometric mean of the schedule over the non-output layers
            rest = [n for n in full if n != output_layer]
            total = sum(int(full[n].sum()) for n in rest)
            want = sum(target[n] for n in rest)
            tot_r = want if r == rounds else max(want, int(round(total * (want / total) ** (r / rounds))))
            counts = _spread(counts, rest, tot_r)
        if scope == "local":
            masks = {n: _keep_top(scores[n], masks[n], counts[n]) for n in masks}
        else:
            masks = prune_like(scores, masks, counts, scope, output_layer, output_factor, floor)
    return masks


def _keep_top(scores: torch.Tensor, alive: torch.Tensor, count: int) -> torch.Tensor:
    """prune.prune_to_counts for one layer in linear time (kthvalue instead of a sort, 100 rounds over a 1M-weight
    embedding): keep the `count` highest-scoring survivors; among ties at the threshold the later positions stay,
    as the stable sort there drops the earlier ones first. Same mask, bit for bit."""
    flat, live = scores.detach().flatten().double(), alive.flatten()
    n = int(live.sum())
    if count >= n:
        return alive.clone()
    if count <= 0:
        return torch.zeros_like(alive)
    thr = flat[live].kthvalue(n - count).values  # the (n - count)-th smallest survivor score goes, and all below
    keep = live & (flat > thr)
    tied = torch.nonzero(live & (flat == thr)).flatten()
    need = count - int(keep.sum())
    if need > 0:
        keep[tied[tied.numel() - need:]] = True
    return keep.view_as(alive)


def _spread(counts: dict, names: list, total: int) -> dict:
    """`counts` with the layers in `names` summing to `total` (global scope prunes only the total: how it splits over
    layers is the threshold's choice, prune.prune_like)."""
    out = dict(counts)
    have = sum(counts[n] for n in names)
    if names and have != total:
        out[names[0]] += total - have
    return out
