"""A training's checkpoint: safetensors (model, best state, late-resetting snapshots, Adam's state, the RNG) plus
JSON metadata, never pickle; written atomically once per epoch, and checked against its own sha256 on load, so a
damaged checkpoint is discarded (the training starts over, which ends in the same bits) instead of resumed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from .errors import shorten
from .fsio import tensors_digest as _tensors_digest  # the encoded-data cache uses the same digest
from .fsio import write_with


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _save_checkpoint(path: Path, model, opt, best_state, snapshots, meta: dict) -> None:
    from safetensors.torch import save_file

    t = {f"model.{k}": v for k, v in _state(model).items()}
    if best_state is not None:
        t.update({f"best.{k}": v for k, v in best_state.items()})
    tags = sorted(snapshots)
    for i, tag in enumerate(tags):  # tensors are keyed by the tag's index: a tag ("step:50") is no safe key prefix
        t.update({f"snap{i}.{k}": v for k, v in snapshots[tag].items()})
    sd = opt.state_dict()
    for i, st in sd["state"].items():
        for k, v in st.items():
            t[f"opt.{i}.{k}"] = v.detach().cpu().clone().contiguous() if torch.is_tensor(v) else torch.tensor(v)
    t["rng.torch"] = torch.get_rng_state()
    meta = dict(meta, param_groups=sd["param_groups"], snapshots=tags)
    t = {k: v.contiguous() for k, v in t.items()}
    write_with(path, lambda p: save_file(t, str(p), metadata={"meta": json.dumps(meta), "sha256": _tensors_digest(t)}))



def _load_checkpoint(path: Path, model, opt):
    """(meta, best state, snapshots) from a checkpoint, restoring model, optimizer and RNG; None (after one warning
    line) when it is unreadable, fails its digest, or does not fit the model: the training then starts over from
    its starting weights, which is what an uninterrupted run did, so the result is the same."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            md = f.metadata()
            meta = json.loads(md["meta"])
            t = {k: f.get_tensor(k) for k in f.keys()}
        if md.get("sha256") != _tensors_digest(t):
            raise ValueError("its digest does not match its tensors")
        own = model.state_dict()
        mt = {k[6:]: v for k, v in t.items() if k.startswith("model.")}
        bad = [k for k in own if k not in mt or mt[k].shape != own[k].shape or mt[k].dtype != own[k].dtype]
        if bad or len(mt) != len(own):
            raise ValueError(f"it does not fit the model ({(bad or ['extra tensors'])[0]})")
        keep = {k: v.detach().clone() for k, v in own.items()}
        try:
            model.load_state_dict(mt)
            state = {}
            for k, v in t.items():
                if k.startswith("opt."):
                    _, i, name = k.split(".", 2)
                    state.setdefault(int(i), {})[name] = v
            opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
            torch.set_rng_state(t["rng.torch"])
        except Exception:
            model.load_state_dict(keep)  # leave the starting weights as they were
            raise
    except Exception as e:
        print(f"warning: checkpoint {path} is unusable ({shorten(str(e).splitlines()[0], 200) if str(e) else type(e).__name__}); "
              f"this training starts over", file=sys.stderr, flush=True)
        path.unlink(missing_ok=True)
        return None
    best = {k[5:]: v for k, v in t.items() if k.startswith("best.")} or None
    snaps = {tag: {k[len(f"snap{i}."):]: v for k, v in t.items() if k.startswith(f"snap{i}.")}
             for i, tag in enumerate(meta["snapshots"])}
    return meta, best, snaps
