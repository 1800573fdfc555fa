"""The reference loop: what a researcher would write from the PyTorch pruning tutorial.

fp32, every batch padded to max_len, `torch.optim.Adam` with its defaults (no fused kernel asked for), masks
held by `torch.nn.utils.prune` forward pre-hooks (`custom_from_mask`, `l1_unstructured`), evaluation under
`torch.no_grad()` at the training batch size. The models (`create`) are ticketkit's registered ones, so the
parameters, their names and the initial weights are the same and masks carry over; the CNN gets the forward a
researcher writes from the tutorials instead of ticketkit's (see `forward_textbook`). The LSTM classifier already is
the textbook one. The benchmarks time ticketkit's engine against this loop; nothing in the package uses it.
"""
from __future__ import annotations

import copy
import math
import time
import types

import torch
import torch.nn.functional as F
from torch.nn.utils import prune


def forward_textbook(self, ids, lengths):
    """Kim's CNN as the PyTorch sentiment tutorials write it: embed, transpose to [B, E, L], nn.Conv1d, ReLU over the
    whole map, F.max_pool1d over its length. The same mathematics as ticketkit's KimCNN.forward, which feeds [B, L, E]
    to channels-last convolutions and pools before the ReLU (bench/RESULTS.md, *cnnforward* and *engine-steps*)."""
    x = self.embedding(ids).transpose(1, 2)
    h = [F.relu(conv(x)) for conv in self.convs]
    return self.fc(self.dropout(torch.cat([F.max_pool1d(c, c.shape[2]).squeeze(2) for c in h], dim=1)))


def create(arch: str, vocab: int, seed: int, textbook: bool = True, **kw):
    """ticketkit's model `arch` with its initial weights for `seed`. textbook=True gives the CNN `forward_textbook`
    and plain nn.Conv1d convolutions (per instance; module calls, so prune hooks fire); False keeps ticketkit's
    forward, which makes the reference share every model-level speed-up of the engine."""
    from ticketkit.models import create_model

    model = create_model(arch, vocab, seed=seed, **kw)
    if textbook and arch == "cnn":
        model.forward = types.MethodType(forward_textbook, model)
        for conv in model.convs:
            conv.forward = types.MethodType(torch.nn.Conv1d.forward, conv)
    return model


def _split(model, name: str):
    mod_name, attr = name.rsplit(".", 1)
    return model.get_submodule(mod_name), attr


def attach_masks(model, masks: dict[str, torch.Tensor]) -> None:
    """prune.custom_from_mask on every masked parameter (the tutorial's way of holding a mask)."""
    for name, m in masks.items():
        mod, attr = _split(model, name)
        prune.custom_from_mask(mod, attr, m.to(torch.float32))


def l1_prune(model, names, rate: float) -> None:
    """One IMP round, layer by layer: prune `rate` of the remaining weights of each layer by magnitude."""
    for name in names:
        mod, attr = _split(model, name)
        prune.l1_unstructured(mod, attr, amount=rate)


def current_masks(model, names) -> dict[str, torch.Tensor]:
    out = {}
    for name in names:
        mod, attr = _split(model, name)
        out[name] = getattr(mod, attr + "_mask").detach().bool().clone()
    return out


def rewind(model, init: dict[str, torch.Tensor], names) -> None:
    """Reset the surviving weights to their initial values (the masks stay)."""
    with torch.no_grad():
        pruned = set(names)
        for k, v in init.items():
            if k in pruned:
                mod, attr = _split(model, k)
                getattr(mod, attr + "_orig").copy_(v)
            else:
                model.get_parameter(k).copy_(v)


def padded(data, max_len: int):
    """Every review padded (or cut) to max_len once, as a plain TensorDataset-style triple."""
    ids = data.ids[:, :max_len].long()
    if ids.shape[1] < max_len:
        ids = F.pad(ids, (0, max_len - ids.shape[1]))
    return ids, data.lengths.clamp(max=max_len), data.labels


def train_epoch(model, opt, tensors, batch_size: int, gen: torch.Generator) -> float:
    ids, lengths, labels = tensors
    model.train()
    total = 0.0
    for idx in torch.randperm(len(labels), generator=gen).split(batch_size):
        opt.zero_grad()
        loss = F.cross_entropy(model(ids[idx], lengths[idx]), labels[idx])
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / len(labels)


@torch.no_grad()
def evaluate(model, tensors, batch_size: int) -> dict:
    ids, lengths, labels = tensors
    model.eval()
    loss, correct = 0.0, 0
    for s in range(0, len(labels), batch_size):
        logits = model(ids[s:s + batch_size], lengths[s:s + batch_size])
        loss += F.cross_entropy(logits, labels[s:s + batch_size], reduction="sum").item()
        correct += (logits.argmax(1) == labels[s:s + batch_size]).sum().item()
    return {"loss": loss / len(labels), "accuracy": correct / len(labels)}


def train(model, train_t, val_t, test_t, epochs: int, patience: int, lr: float, batch_size: int, seed: int) -> dict:
    """Early stopping on validation loss, test at the best-validation state (same protocol as ticketkit)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    best, best_state, bad, n = math.inf, None, 0, 0
    for epoch in range(epochs):
        train_epoch(model, opt, train_t, batch_size, gen)
        n += 1
        val = evaluate(model, val_t, batch_size)
        if val["loss"] < best:
            best, best_state, bad = val["loss"], copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    test = evaluate(model, test_t, batch_size)
    return {"test_accuracy": test["accuracy"], "epochs": n, "seconds": time.perf_counter() - t0}


def find(arch: str, vocab: int, model_kw: dict, names_fn, data, levels: int, rate: float, epochs: int,
         patience: int, lr: float, batch_size: int, seed: int, max_len: int, device="cpu") -> list[dict]:
    """The reference IMP search: train, prune `rate` per layer by magnitude, rewind to init, repeat."""
    model = create(arch, vocab, seed, **model_kw).to(device)
    names = names_fn(model)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    attach_masks(model, {n: torch.ones_like(model.get_parameter(n), dtype=torch.bool) for n in names})
    tensors = [tuple(t.to(device) for t in padded(d, max_len)) for d in (data.train, data.val, data.test)]
    rows = []
    for level in range(levels + 1):
        if level:
            l1_prune(model, names, rate)
            rewind(model, init, names)
        res = train(model, *tensors, epochs=epochs, patience=patience, lr=lr, batch_size=batch_size, seed=seed)
        m = current_masks(model, names)
        res["density"] = sum(int(v.sum()) for v in m.values()) / sum(v.numel() for v in m.values())
        rows.append(res)
    return rows
