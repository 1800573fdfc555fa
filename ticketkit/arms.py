"""Several arms of one transfer level trained as ONE model: grouped ops, one optimizer step for all arms.

On a GPU the arms of a level are small models whose steps are bound by kernel launches and latency, not by
arithmetic, so stacking A arms runs about the kernels of one for A times the work (bench/RESULTS.md, section
"gpu-arms"). On a CPU arithmetic is the bottleneck and stacking does not pay (issue 7 measured 1.5-3.6x slower per
model), so the transfer uses it on accelerators only unless told otherwise (`TransferConfig.batch_arms`).

Arm a's slice of the stacked model computes exactly its own network:
  CNN   embedding [V, A*E] (arm a owns columns a*E..a*E+E-1), each convolution with groups=A, an output layer per arm;
  LSTM  one LSTM with input A*E and hidden A*H whose weights are block-diagonal per gate. The off-diagonal blocks
        start at zero and are held there by the mechanism that holds pruned weights at zero (masked gradients, so
        Adam never moves them), so no arm ever sees another arm's activations.
The loss is the sum of the arms' losses, so each arm's gradient is its own; Adam is element-wise, so each arm's update
is what it would be alone. All arms draw the same dropout mask, as arms trained one after another with the same seed
do. Early stopping is per arm: once an arm's patience runs out its loss leaves the sum and its best state, epoch and
history freeze, exactly where a training of its own would have stopped. The results differ from one-by-one training
only by floating-point rounding (tests/test_arms.py checks this in fp32).
"""
from __future__ import annotations

import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import Encoded
from .diagnostics import dead_units, diagnose
from .errors import TicketkitError
from .prune import masked_state
from .train import (Feed, fixed_threads, Masker, TrainResult, _diverged, default_device, evaluate, make_optimizer, tune_allocator,
                    resolve_precision, run_epoch)


class ArmLinear(nn.Module):
    """One linear layer per arm: [B, A, D] -> [B, A, C]."""

    def __init__(self, arms: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(arms, d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(arms, d_out))

    def forward(self, h):
        return torch.einsum("bad,acd->bac", h, self.weight) + self.bias


def shared_dropout(h: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout on [B, A, D] with one mask for all arms, drawn exactly as nn.Dropout draws it on [B, D]."""
    if not training or p == 0:
        return h
    keep = F.dropout(torch.ones(h.shape[0], h.shape[2], dtype=h.dtype, device=h.device), p, True)
    return h * keep[:, None, :]


class StackedKimCNN(nn.Module):
    def __init__(self, arms: int, vocab_size: int, embed_dim: int = 128, num_filters: int = 100,
                 filter_widths=(3, 4, 5), dropout: float = 0.5, num_classes: int = 2, **_):
        super().__init__()
        self.arms, self.p, self.min_len = arms, dropout, max(filter_widths)
        self.embedding = nn.Embedding(vocab_size, arms * embed_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(arms * embed_dim, arms * num_filters, w, groups=arms) for w in filter_widths)
        self.fc = ArmLinear(arms, num_filters * len(filter_widths), num_classes)

    def forward(self, ids, lengths):
        x = self.embedding(ids)
        if torch.is_autocast_enabled(x.device.type):  # as KimCNN.forward: cast once, not per convolution
            x = x.to(torch.get_autocast_dtype(x.device.type))
        x = x.transpose(1, 2).contiguous()  # [B, A*E, L]
        if x.shape[2] < self.min_len:
            x = F.pad(x, (0, self.min_len - x.shape[2]))
        B = x.shape[0]
        # each conv gives [B, A*F] (arm-major); per arm the widths are concatenated in KimCNN's order
        h = F.relu(torch.cat([conv(x).max(dim=2).values.view(B, self.arms, -1) for conv in self.convs], dim=2))
        return self.fc(shared_dropout(h, self.p, self.training))


class StackedLSTM(nn.Module):
    def __init__(self, arms: int, vocab_size: int, embed_dim: int = 128, hidden_size: int = 128, pooling: str = "mean",
                 dropout: float = 0.5, num_classes: int = 2, **_):
        super().__init__()
        self.arms, self.p, self.pooling = arms, dropout, pooling
        self.embedding = nn.Embedding(vocab_size, arms * embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(arms * embed_dim, arms * hidden_size, batch_first=True)
        self.fc = ArmLinear(arms, hidden_size, num_classes)

    def forward(self, ids, lengths):
        out, _ = self.lstm(self.embedding(ids))  # [B, L, A*H]
        real = (torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]).unsqueeze(2)
        if self.pooling == "max":
            h = out.masked_fill(~real, float("-inf")).amax(dim=1)
        else:
            h = (out * real).sum(dim=1) / lengths.clamp(min=1)[:, None].to(out.dtype)
        return self.fc(shared_dropout(h.view(h.shape[0], self.arms, -1), self.p, self.training))


STACKED = {"cnn": StackedKimCNN, "lstm": StackedLSTM}


# ----------------------------------------------------------------------------------- single <-> stacked weights
# How each parameter of the single model sits in the stacked one, by name.

def _kind(name: str) -> str:
    if name == "embedding.weight":
        return "cols"
    if name.startswith("convs."):
        return "rows"
    if name.startswith("fc."):
        return "arms"
    if name.startswith("lstm.weight_"):
        return "gate_blocks"
    if name.startswith("lstm.bias_"):
        return "gate_rows"
    raise TicketkitError(f"no stacked layout for parameter {name!r}")


def pack(name: str, ts: list[torch.Tensor]) -> torch.Tensor:
    """The arms' tensors for `name` as the stacked model's one tensor (zeros off the diagonal blocks)."""
    k, A = _kind(name), len(ts)
    if k == "cols":
        return torch.stack(ts, 1).reshape(ts[0].shape[0], -1)
    if k == "rows":
        return torch.cat(ts, 0)
    if k == "arms":
        return torch.stack(ts, 0)
    if k == "gate_rows":
        return torch.stack([t.view(4, -1) for t in ts], 1).reshape(-1)
    H, X = ts[0].shape[0] // 4, ts[0].shape[1]
    out = torch.zeros(4, A, H, A, X, dtype=ts[0].dtype)
    for a, t in enumerate(ts):
        out[:, a, :, a, :] = t.view(4, H, X)
    return out.reshape(4 * A * H, A * X)


def unpack(name: str, w: torch.Tensor, a: int, arms: int) -> torch.Tensor:
    """Arm a's tensor for `name` out of the stacked tensor `w` (a copy)."""
    k = _kind(name)
    if k == "cols":
        return w.view(w.shape[0], arms, -1)[:, a].clone()
    if k == "rows":
        return w.chunk(arms, 0)[a].clone()
    if k == "arms":
        return w[a].clone()
    if k == "gate_rows":
        return w.view(4, arms, -1)[:, a].reshape(-1).clone()
    H, X = w.shape[0] // (4 * arms), w.shape[1] // arms
    return w.view(4, arms, H, arms, X)[:, a, :, a, :].reshape(4 * H, X).clone()


def pack_states(states: list[dict]) -> dict:
    return {n: pack(n, [s[n] for s in states]) for n in states[0]}


def unpack_state(stacked: dict, a: int, arms: int) -> dict:
    return {n: unpack(n, w, a, arms) for n, w in stacked.items()}


def pack_masks(masks: list[dict], shapes: dict[str, torch.Size]) -> dict:
    """Stacked masks: every masked parameter, plus the block-diagonal LSTM weights whose off-diagonal blocks must stay
    zero even where no arm prunes (an arm's missing mask counts as all-True)."""
    names = {n for m in masks for n in m} | {n for n in shapes if _kind(n) == "gate_blocks"}
    return {n: pack(n, [m[n].bool() if n in m else torch.ones(shapes[n], dtype=torch.bool) for m in masks])
            for n in sorted(names)}


def stack(arch: str, model_kw: dict, vocab_size: int, starts: list[dict], masks: list[dict]):
    """(stacked model holding each arm's start * mask, stacked masks)."""
    if arch not in STACKED:
        raise TicketkitError(f"architecture {arch!r} has no stacked form; train its arms one by one (batch_arms='no')")
    model = STACKED[arch](len(starts), vocab_size, **model_kw)
    shapes = {n: t.shape for n, t in starts[0].items()}
    model.load_state_dict(pack_states([masked_state(s, m) for s, m in zip(starts, masks)]))
    return model, pack_masks(masks, shapes)


def _arm_state(model, a: int) -> dict:
    return unpack_state({k: v.detach().cpu() for k, v in model.state_dict().items()}, a, model.arms)


@fixed_threads
def train_arms(arch: str, model_kw: dict, vocab_size: int, starts: list[dict], masks: list[dict],
               train_data: Encoded, val_data: Encoded, test_data: Encoded, hp, seed: int, device=None,
               progress: bool = True, descs: list[str] | None = None, stop_flag=None) -> list[TrainResult]:
    """Train the arms (start weights and masks each, same data, settings and seed) as one stacked model; one
    TrainResult per arm, as `ticketkit.train.train` would give for each (see the module doc)."""
    from tqdm.auto import tqdm

    A = len(starts)
    descs = descs or [f"arm {a}" for a in range(A)]
    device = device or default_device()
    tune_allocator()
    model, smasks = stack(arch, model_kw, vocab_size, starts, masks)
    model.to(device)
    amp = resolve_precision(hp.precision, device, arms=A)
    opt = make_optimizer(model, hp.lr)
    masker = Masker(model, smasks)
    masker.weights()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    best_loss, best, best_epoch, bad = [math.inf] * A, [None] * A, [-1] * A, [0] * A
    history: list[list] = [[] for _ in range(A)]
    active = [True] * A
    train_feed, val_feed = Feed(train_data, device), Feed(val_data, device)
    for epoch in range(hp.epochs):
        if not any(active):
            break
        losses = run_epoch(model, opt, masker, train_feed, hp, seed, epoch, amp, " + ".join(descs), progress, active=active)
        vals = evaluate(model, val_feed, hp.eval_batch_size, device, amp)
        state = None
        for a in (a for a in range(A) if active[a]):
            if not math.isfinite(vals[a]["loss"]):
                raise _diverged(descs[a], "validation", vals[a]["loss"], epoch)
            history[a].append({"epoch": epoch + 1, "train_loss": losses[a], "val_loss": vals[a]["loss"],
                               "val_accuracy": vals[a]["accuracy"]})
            if vals[a]["loss"] < best_loss[a]:
                state = state if state is not None else {k: v.detach().cpu() for k, v in model.state_dict().items()}
                best_loss[a], best[a], best_epoch[a], bad[a] = vals[a]["loss"], unpack_state(state, a, A), epoch + 1, 0
            else:
                bad[a] += 1
            active[a] = bad[a] < hp.patience
            if progress:
                tqdm.write(f"{descs[a]} epoch {epoch + 1}: train loss {losses[a]:.4f}  val loss {vals[a]['loss']:.4f}  "
                           f"val acc {vals[a]['accuracy']:.4f}", file=sys.stderr)
        if stop_flag is not None and stop_flag():
            raise KeyboardInterrupt
    best = [b if b is not None else _arm_state(model, a) for a, b in enumerate(best)]
    model.load_state_dict(pack_states(best))
    vals = evaluate(model, val_feed, hp.eval_batch_size, device, amp)
    tests = evaluate(model, test_data, hp.eval_batch_size, device, amp)
    seconds = time.perf_counter() - t0
    return [TrainResult(best[a], best_epoch[a], len(history[a]), vals[a], tests[a], history[a], {}, seconds=seconds,
                        stopped_early=not active[a],
                        diagnostics=_diagnose_arm(arch, model_kw, vocab_size, best[a], tests[a], best_epoch[a], hp,
                                                  val_feed, device, amp)) for a in range(A)]


def _diagnose_arm(arch, model_kw, vocab_size, state, test, best_epoch, hp, val_feed, device, amp) -> dict:
    """An arm's diagnostics, measured on its own single model at its best state (as train() does for one)."""
    from .models import create_model

    single = create_model(arch, vocab_size, **model_kw)
    single.load_state_dict(state)
    single.to(device)
    dead = dead_units(single, val_feed, hp.eval_batch_size, amp)
    return diagnose(test["majority_share"], dead, best_epoch, hp.epochs)
