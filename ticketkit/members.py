"""Independent trainings (each its own data, vocabulary, seed and masks) run as ONE stacked model: `train_members`.

ticketkit.arms stacks the arms of one transfer level, which share their data, vocabulary, data order and dropout
masks. The seeds of `find --seeds N` share none of these: a seed replicates the whole experiment. Here member m's
slice of the stacked model computes exactly its own network on its own batch:
  embedding  the members' tables one under the other ([sum of V_m, E]); member m's token ids are offset to its
             rows. Its [PAD] row is masked, so it stays zero and gets no update, as padding_idx does.
  CNN        grouped convolutions (groups = members) over [B, M*E, L], L the longest of the members' batches; each
             member's positions past its own batch's longest review are set to -inf before max-pooling, so its
             pooled features are those of its own batch trimmed as `train.take` trims it.
  LSTM       block-diagonal per gate (as ticketkit.arms); pooling over each member's real tokens only.
  output     one linear layer per member.
Every member draws its batches from its own `epoch_generator(seed, epoch)` and its dropout masks from its own copy
of the generator that `torch.manual_seed(seed)` starts, exactly the [B, D] draws nn.Dropout makes in its sequential
training. A member whose batch is shorter (the last one of an epoch) gets padding rows that leave its loss. The loss is
the sum of the active members' mean losses, so each member's gradient is its own; Adam is element-wise and every
active member steps on every step (their epochs must have the same number of batches, else `NotStackable`).
Early stopping is per member: once its patience runs out its loss leaves the sum and its best state, epoch and
history freeze. Precision is what a sequential training of one member resolves (not arms' bf16 on a GPU), so a run
name means the same bits whichever way it trained; results differ from sequential ones by float rounding only.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from .arms import ArmLinear
from .arms import pack as _arm_pack
from .arms import unpack as _arm_unpack
from .diagnostics import dead_units, diagnose
from .prune import masked_state
from .train import (Feed, Masker, TrainResult, epoch_generator, fixed_threads, make_optimizer,
                    resolve_precision, tune_allocator)


class NotStackable(Exception):
    """These trainings cannot step in lockstep (or one diverged): the caller trains them one by one instead."""


class _Members(nn.Module):
    """Shared by the stacked forms: the embedding of all members and per-member dropout (`drop`, set by the trainer)."""

    def _embed(self, ids):  # ids [M, B, L] -> [M, B, L, E]
        return self.embedding(ids + self.offsets[:, None, None].to(ids.device))

    def _dropout(self, h):  # h [B, M, D]
        return self.drop(h) if self.training and self.drop is not None else h


class MemberCNN(_Members):
    def __init__(self, vocabs: list[int], embed_dim: int = 128, num_filters: int = 100, filter_widths=(3, 4, 5),
                 dropout: float = 0.5, num_classes: int = 2, **_):
        super().__init__()
        M = self.members = len(vocabs)
        self.register_buffer("offsets", torch.tensor([sum(vocabs[:m]) for m in range(M)]), persistent=False)
        self.widths, self.min_len, self.drop = tuple(filter_widths), max(filter_widths), None
        self.embedding = nn.Embedding(sum(vocabs), embed_dim)
        self.convs = nn.ModuleList(nn.Conv1d(M * embed_dim, M * num_filters, w, groups=M) for w in filter_widths)
        self.fc = ArmLinear(M, num_filters * len(filter_widths), num_classes)

    def forward(self, ids, lengths, trim):
        """ids [M, B, L], lengths [M, B], trim [M] (each member's own batch length) -> logits [B, M, C]."""
        M, B, L = ids.shape
        x = self._embed(ids)
        if torch.is_autocast_enabled(x.device.type):  # as KimCNN.features
            x = x.to(torch.get_autocast_dtype(x.device.type))
        x = x.permute(1, 0, 3, 2).reshape(B, -1, L)  # [B, M*E, L], member-major channels
        if L < self.min_len:
            x = F.pad(x, (0, self.min_len - L))
        own = trim.clamp(min=self.min_len)  # KimCNN pads a member's batch to min_len, never trims below it
        pooled = []
        for w, conv in zip(self.widths, self.convs):
            y = conv(x)
            y = y.view(B, M, -1, y.shape[2])
            past = torch.arange(y.shape[3], device=y.device)[None, :] > (own - w)[:, None]  # [M, L']
            pooled.append(y.masked_fill(past[None, :, None, :], float("-inf")).max(dim=3).values)
        return self.fc(self._dropout(F.relu(torch.cat(pooled, dim=2))))


class MemberLSTM(_Members):
    def __init__(self, vocabs: list[int], embed_dim: int = 128, hidden_size: int = 128, pooling: str = "mean",
                 dropout: float = 0.5, num_classes: int = 2, **_):
        super().__init__()
        M = self.members = len(vocabs)
        self.register_buffer("offsets", torch.tensor([sum(vocabs[:m]) for m in range(M)]), persistent=False)
        self.pooling, self.drop = pooling, None
        self.embedding = nn.Embedding(sum(vocabs), embed_dim)
        self.lstm = nn.LSTM(M * embed_dim, M * hidden_size, batch_first=True)
        self.fc = ArmLinear(M, hidden_size, num_classes)

    def forward(self, ids, lengths, trim):
        M, B, L = ids.shape
        x = self._embed(ids).permute(1, 2, 0, 3).reshape(B, L, -1)  # [B, L, M*E]
        out, _ = self.lstm(x)
        out = out.view(B, L, M, -1)
        real = (torch.arange(L, device=ids.device)[None, None, :] < lengths[:, :, None]).permute(1, 2, 0)[..., None]
        if self.pooling == "max":
            h = out.masked_fill(~real, float("-inf")).amax(dim=1)
        else:
            h = (out * real).sum(dim=1) / lengths.t().clamp(min=1)[..., None].to(out.dtype)
        return self.fc(self._dropout(h))


MEMBER_FORMS = {"cnn": MemberCNN, "lstm": MemberLSTM}


def has_member_form(arch: str) -> bool:
    from .models import supports

    return arch in MEMBER_FORMS and supports(arch, "stacked")


# ----------------------------------------------------------------------------------- single <-> stacked weights

def pack(name: str, ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(ts, 0) if name == "embedding.weight" else _arm_pack(name, ts)


def unpack(name: str, w: torch.Tensor, m: int, vocabs: list[int]) -> torch.Tensor:
    if name == "embedding.weight":
        o = sum(vocabs[:m])
        return w[o:o + vocabs[m]].clone()
    return _arm_unpack(name, w, m, len(vocabs))


def unpack_state(stacked: dict, m: int, vocabs: list[int]) -> dict:
    return {n: unpack(n, w, m, vocabs) for n, w in stacked.items()}


def stack(arch: str, model_kw: dict, starts: list[dict], masks: list[dict]):
    """(stacked model holding each member's start * mask, stacked masks, vocabularies)."""
    if arch not in MEMBER_FORMS:
        raise NotStackable(f"{arch} has no stacked form")
    vocabs = [s["embedding.weight"].shape[0] for s in starts]
    model = MEMBER_FORMS[arch](vocabs, **model_kw)
    model.load_state_dict({n: pack(n, [masked_state(s, m)[n] for s, m in zip(starts, masks)]) for n in starts[0]})
    shapes = {n: t.shape for n, t in starts[0].items()}
    names = {n for m in masks for n in m} | {"embedding.weight"} | {n for n in shapes if n.startswith("lstm.weight_")}
    smasks = {}
    for n in sorted(names):
        ms = [(mk[n].bool().clone() if n in mk else torch.ones(st[n].shape, dtype=torch.bool)) for mk, st in zip(masks, starts)]
        if n == "embedding.weight":
            for mk in ms:
                mk[0] = False  # [PAD]: held at zero without updates, as padding_idx=0 holds it in the single model
        smasks[n] = pack(n, ms)
    return model, smasks, vocabs


# ----------------------------------------------------------------------------------- batches of all members

def _rng_get(device):
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _rng_set(device, state) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def _assemble(parts: list, device):
    """Per-member (ids [B_m, L_m], lengths [B_m]) or None (idle) -> ids [M, B, L], lengths [M, B], trim [M]. Padding
    rows and idle members get one [PAD] token, so every row's features stay finite."""
    real = [p for p in parts if p is not None]
    B, L = max(p[0].shape[0] for p in real), max(p[0].shape[1] for p in real)
    ids = torch.zeros(len(parts), B, L, dtype=real[0][0].dtype, device=device)
    lengths = torch.ones(len(parts), B, dtype=real[0][1].dtype, device=device)
    trim = []
    for m, p in enumerate(parts):
        if p is not None:
            ids[m, :p[0].shape[0], :p[0].shape[1]] = p[0]
            lengths[m, :p[0].shape[0]] = p[1]
        trim.append(p[0].shape[1] if p is not None else 1)
    return ids, lengths, torch.tensor(trim, device=device)


@torch.inference_mode()
def evaluate_members(model, feeds: list[Feed], batch_size: int, amp_dtype=None) -> list[dict]:
    """`ticketkit.train.evaluate` for each member on its own split, in one stacked forward per step."""
    from sklearn.metrics import accuracy_score, f1_score
    import numpy as np

    model.eval()
    device = feeds[0].device
    its = [iter(f.epoch(batch_size, None, bucketing=True)[1]) for f in feeds]
    loss = [torch.zeros((), dtype=torch.float64, device=device) for _ in feeds]
    preds = [torch.empty(len(f), dtype=torch.long, device=device) for f in feeds]
    while True:
        got = [next(it, None) for it in its]
        if all(g is None for g in got):
            break
        ids, lengths, trim = _assemble([None if g is None else (g[1], g[2]) for g in got], device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(ids, lengths, trim).float()
        for m, g in enumerate(got):
            if g is not None:
                lg = logits[:len(g[0]), m]
                loss[m] += F.cross_entropy(lg, g[3], reduction="sum").double()
                preds[m][g[0]] = lg.argmax(1)
    out = []
    for f, ls, pr in zip(feeds, loss, preds):
        y, p = f.data.labels.numpy(), pr.cpu().numpy()
        out.append({"loss": float(ls.cpu()) / max(len(f), 1), "accuracy": float(accuracy_score(y, p)),
                    "macro_f1": float(f1_score(y, p, average="macro")),
                    "majority_share": float(np.bincount(p).max()) / max(len(p), 1)})
    return out


# ----------------------------------------------------------------------------------- training

def _member_state(model, m: int, vocabs) -> dict:
    return unpack_state({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}, m, vocabs)


@fixed_threads
def train_members(arch: str, model_kw: dict, starts: list[dict], masks: list[dict], data: list[tuple], hp,
                  seeds: list[int], device=None, snapshots_at: list = (), progress: bool = True,
                  descs: list[str] | None = None, stop_flag=None) -> list[TrainResult]:
    """Train member m (start weights starts[m], masks[m], splits data[m] = (train, val, test), seed seeds[m]) as
    `ticketkit.train.train` would, all in one stacked model (see the module doc). Raises NotStackable when the members'
    epochs differ in batch count, or when one diverges (its one-by-one training then raises the divergence)."""
    import sys

    from tqdm.auto import tqdm

    M = len(starts)
    descs = descs or [f"member {m}" for m in range(M)]
    snapshots_at = list(snapshots_at) or [()] * M
    device = torch.device(device) if device is not None else torch.device("cpu")
    tune_allocator()
    feeds = [(Feed(tr, device), Feed(va, device), Feed(te, device)) for tr, va, te in data]
    n_batches = {-(-len(f[0]) // hp.batch_size) for f in feeds}
    if len(n_batches) != 1:
        raise NotStackable(f"the members' training splits give different batch counts ({sorted(n_batches)})")
    model, smasks, vocabs = stack(arch, model_kw, starts, masks)
    model.to(device)
    amp = resolve_precision(hp.precision, device)  # a sequential training's precision: same name, same bits
    opt = make_optimizer(model, hp.lr)
    masker = Masker(model, smasks)
    masker.weights()
    rng = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for s in seeds:  # each member's dropout stream, as train() starts it with torch.manual_seed(seed)
            torch.manual_seed(s)
            rng.append(_rng_get(device))
        return _lockstep(model, opt, masker, smasks, vocabs, feeds, rng, amp, hp, seeds, device, snapshots_at,
                         progress, descs, stop_flag, arch, model_kw, tqdm, sys)


def _lockstep(model, opt, masker, smasks, vocabs, feeds, rng, amp, hp, seeds, device, snapshots_at, progress, descs,
              stop_flag, arch, model_kw, tqdm, sys):
    M = len(feeds)
    active, sizes = [True] * M, [0] * M
    best_loss, best, best_epoch, bad = [math.inf] * M, [None] * M, [-1] * M, [0] * M
    history, snaps, last = [[] for _ in range(M)], [{} for _ in range(M)], [None] * M
    step_tags = [{int(t[5:]): t for t in tags if t.startswith("step:")} for tags in snapshots_at]

    def drop(h):  # member m's nn.Dropout on its own [B_m, D] rows, from its own generator state
        keep = torch.ones_like(h)
        for m in range(M):
            if active[m]:
                _rng_set(device, rng[m])
                keep[:sizes[m], m] = F.dropout(torch.ones(sizes[m], h.shape[2], dtype=h.dtype, device=h.device),
                                               model_p, True)
                rng[m] = _rng_get(device)
        return h * keep

    model_p = model_kw.get("dropout", 0.5)
    model.drop = drop if model_p > 0 else None
    t0, steps = time.perf_counter(), 0
    for epoch in range(hp.epochs):
        if not any(active):
            break
        model.train()
        its = [f[0].epoch(hp.batch_size, epoch_generator(seeds[m], epoch), hp.bucketing)[1] for m, f in enumerate(feeds)]
        loss_sum, n_seen = torch.zeros(M, dtype=torch.float64, device=device), [0] * M
        for got in zip(*its):
            parts = [(g[1], g[2]) if active[m] else None for m, g in enumerate(got)]
            for m, g in enumerate(got):
                sizes[m] = len(g[0])
            ids, lengths, trim = _assemble(parts, device)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = model(ids, lengths, trim)
            per = torch.stack([F.cross_entropy(logits[:sizes[m], m].float(), got[m][3]) for m in range(M)])
            on = torch.tensor(active, device=device)
            if device.type == "cpu" and not bool(torch.isfinite(per[on]).all()):
                raise NotStackable("a member's training loss became non-finite")
            opt.zero_grad(set_to_none=True)
            per[on].sum().backward()
            masker.grads()
            opt.step()
            steps += 1
            for m in range(M):
                if active[m] and steps in step_tags[m]:
                    snaps[m][step_tags[m][steps]] = _member_state(model, m, vocabs)
                loss_sum[m] += per[m].detach().double() * sizes[m]
                n_seen[m] += sizes[m]
        masker.check()
        vals = evaluate_members(model, [f[1] for f in feeds], hp.eval_batch_size, amp)
        state = None
        for m in (m for m in range(M) if active[m]):
            train_loss = float(loss_sum[m]) / max(n_seen[m], 1)
            if not (math.isfinite(train_loss) and math.isfinite(vals[m]["loss"])):
                raise NotStackable("a member's loss became non-finite")
            history[m].append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": vals[m]["loss"],
                               "val_accuracy": vals[m]["accuracy"]})
            if f"epoch:{epoch + 1}" in snapshots_at[m]:
                snaps[m][f"epoch:{epoch + 1}"] = _member_state(model, m, vocabs)
            if vals[m]["loss"] < best_loss[m]:
                state = state if state is not None else {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                best_loss[m], best[m], best_epoch[m], bad[m] = vals[m]["loss"], unpack_state(state, m, vocabs), epoch + 1, 0
            else:
                bad[m] += 1
            active[m] = bad[m] < hp.patience
            if not active[m] or epoch + 1 == hp.epochs:
                last[m] = _member_state(model, m, vocabs) if snapshots_at[m] or best[m] is None else None
            if progress:
                tqdm.write(f"{descs[m]} epoch {epoch + 1}: train loss {train_loss:.4f}  val loss {vals[m]['loss']:.4f}  "
                           f"val acc {vals[m]['accuracy']:.4f}", file=sys.stderr)
        if stop_flag is not None and stop_flag():
            raise KeyboardInterrupt
    for m in range(M):
        best[m] = best[m] if best[m] is not None else last[m]
        for tag in snapshots_at[m]:  # late resetting past the stop: the last state, as train() does
            snaps[m].setdefault(tag, last[m])
    model.load_state_dict({n: pack(n, [b[n] for b in best]) for n in best[0]})
    model.drop = None
    vals = evaluate_members(model, [f[1] for f in feeds], hp.eval_batch_size, amp)
    tests = evaluate_members(model, [f[2] for f in feeds], hp.eval_batch_size, amp)
    seconds = time.perf_counter() - t0
    out = []
    for m in range(M):
        out.append(TrainResult(best[m], best_epoch[m], len(history[m]), vals[m], tests[m], history[m], snaps[m],
                               seconds=seconds, stopped_early=bad[m] >= hp.patience,
                               diagnostics=_diagnose(arch, model_kw, best[m], tests[m], best_epoch[m], hp, feeds[m][1],
                                                     amp)))
    return out


def _diagnose(arch, model_kw, state, test, best_epoch, hp, val_feed, amp) -> dict:
    """A member's diagnostics on its own single model at its best state (as train() does)."""
    from .models import create_model

    single = create_model(arch, state["embedding.weight"].shape[0], **model_kw)
    single.load_state_dict(state)
    single.to(val_feed.device)
    return diagnose(test["majority_share"], dead_units(single, val_feed, hp.eval_batch_size, amp), best_epoch, hp.epochs)
