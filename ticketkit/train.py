"""The training engine: one training of one (masked) network, with early stopping and per-epoch checkpoints.

Fast path by default (issue #7 measured each lever): length bucketing, bf16 autocast where the CPU supports it,
fused Adam, gradients masked with one foreach op before each step, evaluation without autograd at a larger batch.
Pruned weights stay exactly zero: they are zeroed once before training and their gradients before every step, so
Adam's moments never see them and their update is exactly zero (see Masker; checked at the end of every epoch).
"""
from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import _load_checkpoint, _save_checkpoint, _state, _tensors_digest  # noqa: F401 (tests import them here)
from .data import Encoded
from .diagnostics import dead_units, diagnose
from .errors import TicketkitError, TrainingDiverged


@functools.cache
def tune_allocator() -> str:
    """Keep freed memory in the process instead of handing it back to the OS (glibc's malloc only; once per process).

    By default glibc serves every allocation above a threshold with a fresh mmap and unmaps it on free, so each
    training step maps its activation, workspace and gradient buffers anew and pays a page fault (a zeroed 4 KiB
    page) for every page it touches: 0.55 M faults and 1.3 s of kernel time in a 2.7 s LSTM epoch. With mmap off and
    trimming off, the heap keeps its peak and steps reuse it: 1.26x / 1.17x an LSTM epoch at 100 % / 1 % density, the
    CNN within noise (bench/RESULTS.md, section "allocator"; the quick study's kernel time fell from 213 s to 38 s).
    PyTorch's CPU tuning guide gets the same from jemalloc or tcmalloc via LD_PRELOAD; this is the glibc equivalent,
    needs nothing installed, and costs only that the process keeps its peak memory.
    TICKETKIT_MALLOC=system leaves the allocator alone. Returns what was done."""
    import ctypes
    import ctypes.util
    import os

    state = "system"
    if os.environ.get("TICKETKIT_MALLOC", "").lower() != "system" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            # mallopt returns 1 on success; M_MMAP_MAX = -4 (0: never mmap), M_TRIM_THRESHOLD = -1 (never trim).
            if hasattr(libc, "gnu_get_libc_version") and libc.mallopt(-4, 0) == 1 and libc.mallopt(-1, 2 ** 31 - 1) == 1:
                state = "glibc: no mmap, no trim"
        except OSError:
            pass
    return state


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def resolve_precision(precision: str, device: torch.device, arms: int = 1) -> torch.dtype | None:
    """None means fp32. "auto" picks the faster path for the device: bf16 autocast on a CPU that has bf16 (1.6x/1.45x
    an epoch, bench/RESULTS.md "levers"), fp32 on a CPU without it. On a GPU one small model is bound by kernel
    launches and autocast's extra casts cost more than bf16 saves, so fp32 (1.26x/1.33x, section "gpu-levers"); a
    level's arms stacked into one model (`arms` > 1) have the arithmetic for bf16 to pay (section "gpu-arms")."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and bf16_supported(device) and (device.type == "cpu" or arms > 1):
        return torch.bfloat16
    return None


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Data order depends on (seed, epoch) only, so every arm and every level sees the same batches."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def batches(data: Encoded, batch_size: int, gen: torch.Generator | None, bucketing: bool):
    """Index batches. Bucketing sorts reviews by length within chunks of 50 batches, then shuffles the batches,
    so each batch carries little padding while the order stays random."""
    n = len(data)
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    if bucketing:
        chunk = batch_size * 50
        parts = []
        for s in range(0, n, chunk):
            idx = order[s:s + chunk]
            parts.append(idx[torch.argsort(data.lengths[idx], stable=True)])
        order = torch.cat(parts) if parts else order
    out = [order[s:s + batch_size] for s in range(0, n, batch_size)]
    if bucketing and gen is not None:
        out = [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]
    return out


def take(data: Encoded, idx: torch.Tensor, device):
    """One batch, trimmed to its longest review (the cached ids are padded to the longest in the split)."""
    lengths = data.lengths[idx]
    ids = data.ids[idx, :int(lengths.max())]
    return ids.to(device, non_blocking=True), lengths.to(device), data.labels[idx].to(device)


class Feed:
    """The batches of one split on the training device.

    On the CPU this is `batches` + `take`. On an accelerator the split is copied to the device once and each
    epoch's indices in one transfer; batches are gathered there, trimmed with lengths read on the host, so no
    step makes the host wait for the device (a per-batch host->device index copy or `.max()` read would).
    """

    def __init__(self, data: Encoded, device):
        self.data, self.device = data, torch.device(device)
        self.host = self.device.type == "cpu"
        if not self.host:
            self.ids, self.lengths, self.labels = (t.to(self.device) for t in (data.ids, data.lengths, data.labels))

    def __len__(self) -> int:
        return len(self.data)

    def epoch(self, batch_size: int, gen: torch.Generator | None, bucketing: bool):
        """(number of batches, iterator of (idx, ids, lengths, labels)); idx lives on the device."""
        bl = batches(self.data, batch_size, gen, bucketing)
        if self.host:
            return len(bl), ((idx, *take(self.data, idx, self.device)) for idx in bl)
        trim = [int(self.data.lengths[i].max()) for i in bl]
        on_dev = torch.cat(bl).to(self.device).split([len(i) for i in bl]) if bl else []

        def it():
            for idx, n in zip(on_dev, trim):
                yield idx, self.ids[idx, :n], self.lengths[idx], self.labels[idx]
        return len(bl), it()


class Masker:
    """Keeps pruned weights at exactly zero: `weights()` zeroes them once before training, then `grads()` zeroes
    their gradients before every optimizer step (one foreach multiply).

    That alone keeps them at zero. Adam's moments of a weight whose gradients are all zero stay zero, so its update
    is 0 / (sqrt(0) + eps) = 0 exactly (ticketkit's Adam has no weight decay). Multiplying the weights by the mask again
    after every step (the textbook way) would be a second pass over every weight for nothing: it halves the masking
    cost per step (section "maskstep"), though an epoch shows it only within noise ("engine-steps").
    `check()` runs once an epoch and fails loudly if that ever stopped holding.
    A layer whose mask prunes nothing (every layer of a dense level 0 or dense arm) is left out: multiplying by
    ones changes no bit. Its saving is within an epoch's noise too, and it keeps no float copy of an all-ones mask."""

    def __init__(self, model: torch.nn.Module, masks: dict[str, torch.Tensor] | None):
        params = dict(model.named_parameters())
        masks = {n: m for n, m in (masks or {}).items() if not bool(m.all())}
        self.names = list(masks)
        self.params = [params[n] for n in masks]
        self.masks = [masks[n].to(device=params[n].device, dtype=params[n].dtype) for n in masks]

    def grads(self) -> None:
        gs = [p.grad for p in self.params if p.grad is not None]
        if gs and len(gs) == len(self.masks):
            torch._foreach_mul_(gs, self.masks)

    @torch.no_grad()
    def weights(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)

    @torch.no_grad()
    def check(self) -> None:
        for n, p, m in zip(self.names, self.params, self.masks):
            if bool(p.masked_select(m == 0).any()):
                raise TicketkitError(f"internal error: pruned weights of {n} became non-zero during training; the "
                                     f"optimizer must leave weights with zero gradients and zero moments unchanged")


def make_optimizer(model, lr: float):
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


@torch.inference_mode()
def evaluate(model, data, batch_size: int, device, amp_dtype=None):
    """Loss, accuracy and macro-F1 on `data` (an Encoded split or a Feed). A model of several arms (logits
    [B, arms, C], see ticketkit.arms) gets one dict per arm. Sums stay on the device until the end."""
    from sklearn.metrics import accuracy_score, f1_score

    feed = data if isinstance(data, Feed) else Feed(data, device)
    model.eval()
    loss_sum, preds, stacked = None, None, False
    _, it = feed.epoch(batch_size, None, bucketing=True)
    for idx, ids, lengths, labels in it:
        with torch.autocast(feed.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(ids, lengths).float()
        stacked = logits.dim() == 3
        logits = logits if stacked else logits[:, None]
        if loss_sum is None:
            loss_sum = torch.zeros(logits.shape[1], dtype=torch.float64, device=logits.device)
            preds = torch.empty(len(feed), logits.shape[1], dtype=torch.long, device=logits.device)
        for a in range(logits.shape[1]):  # double accumulation, as float() sums in Python would
            loss_sum[a] += F.cross_entropy(logits[:, a], labels, reduction="sum").double()
        preds[idx] = logits.argmax(2)
        classes = logits.shape[2]
    if loss_sum is None:
        raise TicketkitError("cannot evaluate on an empty split")
    y, loss_sum, preds = feed.data.labels.numpy(), loss_sum.cpu(), preds.cpu().numpy()
    out = [{"loss": float(loss_sum[a]) / max(len(feed), 1), "accuracy": float(accuracy_score(y, preds[:, a])),
            # macro over every class the output layer has, so a class never predicted counts as F1 0 (k classes)
            "macro_f1": float(f1_score(y, preds[:, a], average="macro", labels=np.arange(classes), zero_division=0)),
            "majority_share": float(np.bincount(preds[:, a]).max()) / max(len(preds), 1)}
           for a in range(preds.shape[1])]
    return out if stacked else out[0]


@dataclass
class TrainResult:
    best_state: dict
    best_epoch: int
    epochs: int
    val: dict
    test: dict
    history: list
    snapshots: dict = field(default_factory=dict)  # "epoch:K" / "step:K" -> state, for late resetting
    seconds: float = 0.0
    stopped_early: bool = False
    diagnostics: dict = field(default_factory=dict)  # ticketkit.diagnostics: collapsed, dead units, undertrained




def _diverged(desc: str, what: str, value, epoch: int) -> TrainingDiverged:
    return TrainingDiverged(f"{desc}: {what} loss became {value} at epoch {epoch + 1}; lower --lr or check the data "
                            f"(this level was stopped, nothing was saved for it)")


def run_epoch(model, opt, masker, feed: Feed, hp, seed: int, epoch: int, amp, desc: str, progress: bool,
              active: list[bool] | None = None, on_step=None) -> list[float]:
    """One training epoch; the mean training loss (one per arm for a model of several arms, whose loss is the sum of
    the `active` arms' losses, so each arm gets exactly its own gradient). On the CPU a non-finite loss stops at once;
    on an accelerator losses are summed on the device and checked at the end of the epoch, so no step waits."""
    from tqdm.auto import tqdm

    model.train()
    n, it = feed.epoch(hp.batch_size, epoch_generator(seed, epoch), hp.bucketing)
    # disable=None: bars only on a terminal, so logs and CI output stay readable (the epoch lines still print).
    bar = tqdm(it, total=n, desc=f"{desc} epoch {epoch + 1}/{hp.epochs}", leave=True, disable=None if progress else True, unit="batch")
    loss_sum, n_seen = None, 0
    on = None if active is None or all(active) else torch.tensor([a for a, x in enumerate(active) if x], device=feed.device)
    for idx, ids, lengths, labels in bar:
        with torch.autocast(feed.device.type, dtype=amp, enabled=amp is not None):
            logits = model(ids, lengths)
        if logits.dim() == 3:  # [B, arms, C]: every arm's mean loss from one cross-entropy call
            B, n_arms = logits.shape[:2]
            per_arm = F.cross_entropy(logits.float().reshape(B * n_arms, -1), labels.repeat_interleave(n_arms),
                                      reduction="none").view(B, n_arms).mean(0)
        else:
            per_arm = F.cross_entropy(logits.float(), labels)[None]
        used = per_arm if on is None else per_arm[on]
        if feed.host:
            lv = used.detach().double()
            if not torch.isfinite(lv).all():
                raise _diverged(desc, "training", float(lv[~torch.isfinite(lv)][0]), epoch)
        # set_to_none (torch's default): backward writes each gradient instead of adding it to a zeroed one, saving a
        # fill and an add of the whole embedding gradient (1.00-1.05x an epoch, section "engine-steps"). Every parameter
        # is used in the forward, so every one gets a gradient and Adam steps exactly as with zeroed ones.
        opt.zero_grad(set_to_none=True)
        used.sum().backward()
        masker.grads()
        opt.step()  # pruned weights stay exactly zero without a second multiply (see Masker)
        if on_step is not None:
            on_step()
        step = per_arm.detach().double() * len(idx)
        loss_sum = step if loss_sum is None else loss_sum + step
        n_seen += len(idx)
    masker.check()
    out = (loss_sum / max(n_seen, 1)).tolist() if loss_sum is not None else [0.0]
    bad = [v for a, v in enumerate(out) if not math.isfinite(v) and (active is None or active[a])]
    if bad:
        raise _diverged(desc, "training", bad[0], epoch)
    return out


# Every training runs with this many torch threads, in this process, in a transfer's or a sweep's worker process and
# on every executor: oneDNN's reductions round differently with 1 thread and with 2, so a thread count that followed
# the caller (all cores in-process, 1 in a worker) would give one run name two sets of bits. 1 is the count every
# machine and every worker has; bench/RESULTS.md ("Thread count") measures what it costs in-process.
TRAIN_THREADS = 1


def fixed_threads(fn):
    """Run `fn` with TRAIN_THREADS torch threads, restoring the caller's count afterwards."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        saved = torch.get_num_threads()
        torch.set_num_threads(TRAIN_THREADS)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(saved)
    return wrapper


@fixed_threads
def train(model, masks, train_data: Encoded, val_data: Encoded, test_data: Encoded, hp, seed: int,
          device=None, snapshots_at=(), checkpoint: Path | None = None, progress: bool = True,
          desc: str = "train", stop_flag=None) -> TrainResult:
    """Train `model` (already holding its starting weights) under `masks`; test at the best-validation state.

    `snapshots_at`: keep the weights at these points, "epoch:K" (after K epochs) or "step:K" (after K optimizer
    steps), for late resetting. `checkpoint`: a file rewritten after
    every epoch; if it exists, training resumes from it and ends bit-identical to an uninterrupted run.
    `stop_flag`: a callable; if it returns True after an epoch (SIGINT), the checkpoint is saved and we raise.
    """
    from tqdm.auto import tqdm

    device = device or default_device()
    tune_allocator()
    model.to(device)
    amp = resolve_precision(hp.precision, device)
    opt = make_optimizer(model, hp.lr)
    masker = Masker(model, masks)
    masker.weights()
    torch.manual_seed(seed)  # dropout stream; restored from the checkpoint on resume

    start, best_loss, best_state, best_epoch, bad, history, snapshots = 0, math.inf, None, -1, 0, [], {}
    steps = 0  # optimizer steps taken, for "step:K" snapshots
    t0 = time.perf_counter()
    elapsed = 0.0
    if checkpoint is not None and Path(checkpoint).exists():
        got = _load_checkpoint(Path(checkpoint), model, opt)
        if got is not None:
            meta, best_state, snapshots = got
            start, best_loss, best_epoch, bad, history = meta["epoch"], meta["best_loss"], meta["best_epoch"], meta["bad"], meta["history"]
            elapsed, steps = meta.get("seconds", 0.0), meta.get("steps", 0)
            best_loss = math.inf if best_loss is None else best_loss
    step_tags = {int(t[5:]): t for t in snapshots_at if t.startswith("step:")}

    def on_step():
        nonlocal steps
        steps += 1
        if steps in step_tags:
            snapshots[step_tags[steps]] = _state(model)

    train_feed, val_feed = Feed(train_data, device), Feed(val_data, device)
    stopped_early = bad >= hp.patience
    for epoch in range(start, hp.epochs):
        if stopped_early:
            break
        train_loss = run_epoch(model, opt, masker, train_feed, hp, seed, epoch, amp, desc, progress,
                               on_step=on_step if step_tags else None)[0]
        val = evaluate(model, val_feed, hp.eval_batch_size, device, amp)
        if not math.isfinite(val["loss"]):  # the last step can blow the weights up without a bad training loss
            raise _diverged(desc, "validation", val["loss"], epoch)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val["loss"], "val_accuracy": val["accuracy"]})
        if f"epoch:{epoch + 1}" in snapshots_at:
            snapshots[f"epoch:{epoch + 1}"] = _state(model)
        if val["loss"] < best_loss:
            best_loss, best_state, best_epoch, bad = val["loss"], _state(model), epoch + 1, 0
        else:
            bad += 1
        stopped_early = bad >= hp.patience
        if progress:
            tqdm.write(f"{desc} epoch {epoch + 1}: train loss {history[-1]['train_loss']:.4f}  "
                       f"val loss {val['loss']:.4f}  val acc {val['accuracy']:.4f}", file=sys.stderr)
        if checkpoint is not None:
            _save_checkpoint(Path(checkpoint), model, opt, best_state, snapshots,
                             {"epoch": epoch + 1, "best_loss": best_loss if math.isfinite(best_loss) else None,
                              "best_epoch": best_epoch, "bad": bad, "history": history, "steps": steps,
                              "seconds": elapsed + time.perf_counter() - t0})
        if stop_flag is not None and stop_flag():
            raise KeyboardInterrupt
    if best_state is None:
        best_state = _state(model)
    # Late resetting wants the weights at epoch/step K even if training stopped before K: use the last state then.
    for tag in snapshots_at:
        snapshots.setdefault(tag, _state(model))
    model.load_state_dict(best_state)
    val = evaluate(model, val_feed, hp.eval_batch_size, device, amp)
    test = evaluate(model, test_data, hp.eval_batch_size, device, amp)
    diag = diagnose(test["majority_share"], dead_units(model, val_feed, hp.eval_batch_size, amp), best_epoch, hp.epochs)
    return TrainResult(best_state, best_epoch, len(history), val, test, history, snapshots,
                       seconds=elapsed + time.perf_counter() - t0, stopped_early=stopped_early, diagnostics=diag)
