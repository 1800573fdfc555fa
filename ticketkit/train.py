"""The training engine: one training of one (masked) network, with early stopping and per-epoch checkpoints.

Fast path by default (issue #7 measured each lever): length bucketing, bf16 autocast where the CPU supports it,
fused Adam, masks applied with one foreach op after each step, evaluation without autograd at a larger batch.
Pruned weights stay exactly zero: their gradients are zeroed before the step (so Adam's moments never see them)
and the weights are multiplied by the mask after it.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import Encoded
from .errors import TicketkitError, TrainingDiverged
from .fsio import write_with


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """None means fp32; bf16 autocast only where the hardware has it (fp32 fallback otherwise)."""
    if precision == "fp32":
        return None
    if precision == "bf16" or (precision == "auto" and bf16_supported(device)):
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


class Masker:
    """Keeps pruned weights at exactly zero with two foreach ops per step."""

    def __init__(self, model: torch.nn.Module, masks: dict[str, torch.Tensor] | None):
        params = dict(model.named_parameters())
        masks = masks or {}
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


def make_optimizer(model, lr: float):
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


@torch.inference_mode()
def evaluate(model, data: Encoded, batch_size: int, device, amp_dtype=None) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    model.eval()
    total_loss, preds = 0.0, torch.empty(len(data), dtype=torch.long)
    for idx in batches(data, batch_size, None, bucketing=True):
        ids, lengths, labels = take(data, idx, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(ids, lengths)
        total_loss += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        preds[idx] = logits.argmax(1).cpu()
    y = data.labels.numpy()
    p = preds.numpy()
    return {"loss": total_loss / max(len(data), 1), "accuracy": float(accuracy_score(y, p)),
            "macro_f1": float(f1_score(y, p, average="macro"))}


@dataclass
class TrainResult:
    best_state: dict
    best_epoch: int
    epochs: int
    val: dict
    test: dict
    history: list
    snapshots: dict = field(default_factory=dict)  # epoch -> state, for late resetting
    seconds: float = 0.0
    stopped_early: bool = False


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------ checkpoints
# Checkpoints are safetensors (tensors) + JSON metadata, never pickle: they are written atomically once per epoch.

def _save_checkpoint(path: Path, model, opt, best_state, snapshots, meta: dict) -> None:
    from safetensors.torch import save_file

    t = {f"model.{k}": v for k, v in _state(model).items()}
    if best_state is not None:
        t.update({f"best.{k}": v for k, v in best_state.items()})
    for e, s in snapshots.items():
        t.update({f"snap{e}.{k}": v for k, v in s.items()})
    sd = opt.state_dict()
    for i, st in sd["state"].items():
        for k, v in st.items():
            t[f"opt.{i}.{k}"] = v.detach().cpu().clone().contiguous() if torch.is_tensor(v) else torch.tensor(v)
    t["rng.torch"] = torch.get_rng_state()
    meta = dict(meta, param_groups=sd["param_groups"], snapshots=sorted(snapshots))
    t = {k: v.contiguous() for k, v in t.items()}
    write_with(path, lambda p: save_file(t, str(p), metadata={"meta": json.dumps(meta)}))


def _load_checkpoint(path: Path, model, opt):
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["meta"])
            t = {k: f.get_tensor(k) for k in f.keys()}
    except Exception:
        return None  # unreadable checkpoint: start this training over (it was written atomically, so rare)
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in t.items() if k.startswith("best.")} or None
    snaps = {e: {k[len(f"snap{e}."):]: v for k, v in t.items() if k.startswith(f"snap{e}.")} for e in meta["snapshots"]}
    state = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(t["rng.torch"])
    return meta, best, {int(e): s for e, s in snaps.items()}


def train(model, masks, train_data: Encoded, val_data: Encoded, test_data: Encoded, hp, seed: int,
          device=None, snapshot_epochs=(), checkpoint: Path | None = None, progress: bool = True,
          desc: str = "train", stop_flag=None) -> TrainResult:
    """Train `model` (already holding its starting weights) under `masks`; test at the best-validation state.

    `snapshot_epochs`: keep the weights after these epochs (late resetting). `checkpoint`: a file rewritten after
    every epoch; if it exists, training resumes from it and ends bit-identical to an uninterrupted run.
    `stop_flag`: a callable; if it returns True after an epoch (SIGINT), the checkpoint is saved and we raise.
    """
    from tqdm.auto import tqdm

    device = device or default_device()
    model.to(device)
    amp = resolve_precision(hp.precision, device)
    opt = make_optimizer(model, hp.lr)
    masker = Masker(model, masks)
    masker.weights()
    torch.manual_seed(seed)  # dropout stream; restored from the checkpoint on resume

    start, best_loss, best_state, best_epoch, bad, history, snapshots = 0, math.inf, None, -1, 0, [], {}
    t0 = time.perf_counter()
    elapsed = 0.0
    if checkpoint is not None and Path(checkpoint).exists():
        got = _load_checkpoint(Path(checkpoint), model, opt)
        if got is not None:
            meta, best_state, snapshots = got
            start, best_loss, best_epoch, bad, history = meta["epoch"], meta["best_loss"], meta["best_epoch"], meta["bad"], meta["history"]
            elapsed = meta.get("seconds", 0.0)
            best_loss = math.inf if best_loss is None else best_loss

    stopped_early = bad >= hp.patience
    for epoch in range(start, hp.epochs):
        if stopped_early:
            break
        model.train()
        loss_sum, n_seen = 0.0, 0
        bl = batches(train_data, hp.batch_size, epoch_generator(seed, epoch), hp.bucketing)
        # disable=None: bars only on a terminal, so logs and CI output stay readable (the epoch lines still print).
        bar = tqdm(bl, desc=f"{desc} epoch {epoch + 1}/{hp.epochs}", leave=False, disable=None if progress else True, unit="batch")
        for idx in bar:
            ids, lengths, labels = take(train_data, idx, device)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = model(ids, lengths)
            loss = F.cross_entropy(logits.float(), labels)
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise TrainingDiverged(f"{desc}: training loss became {lv} at epoch {epoch + 1}; "
                                       f"lower --lr or check the data (this level was stopped, nothing was saved for it)")
            opt.zero_grad(set_to_none=False)
            loss.backward()
            masker.grads()
            opt.step()
            masker.weights()
            loss_sum += lv * len(idx)
            n_seen += len(idx)
        val = evaluate(model, val_data, hp.eval_batch_size, device, amp)
        if not math.isfinite(val["loss"]):  # the last step can blow the weights up without a bad training loss
            raise TrainingDiverged(f"{desc}: validation loss became {val['loss']} at epoch {epoch + 1}; "
                                   f"lower --lr or check the data (this level was stopped, nothing was saved for it)")
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / max(n_seen, 1), "val_loss": val["loss"], "val_accuracy": val["accuracy"]})
        if epoch + 1 in snapshot_epochs:
            snapshots[epoch + 1] = _state(model)
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
                              "best_epoch": best_epoch, "bad": bad, "history": history,
                              "seconds": elapsed + time.perf_counter() - t0})
        if stop_flag is not None and stop_flag():
            raise KeyboardInterrupt
    if best_state is None:
        best_state = _state(model)
    # Late resetting wants the weights after epoch K even if training stopped before K: use the last state then.
    for k in snapshot_epochs:
        snapshots.setdefault(k, _state(model))
    model.load_state_dict(best_state)
    val = evaluate(model, val_data, hp.eval_batch_size, device, amp)
    test = evaluate(model, test_data, hp.eval_batch_size, device, amp)
    return TrainResult(best_state, best_epoch, len(history), val, test, history, snapshots,
                       seconds=elapsed + time.perf_counter() - t0, stopped_early=stopped_early)
