"""A usable sparse classifier: a level's trained weights x mask, ready to predict on raw text, and its real size.

A find run keeps, in each level directory, `trained.safetensors`: the weights at that level's best-validation
state (the state its test accuracy was measured at) times its mask, so pruned weights are exact zeros. The
ticket's manifest lists it, so `verify` checks it. From it:

    clf = Ticket.from_pretrained("artifacts/find-.../level-03").classifier()
    clf.predict(["a wonderful film", "dull"])   # [{"label": "1", "probability": 0.93, ...}, ...]
    export_trained(ticket, "out/")              # model.safetensors + config.json + tokenizer.json + size.json

Predictions run in the evaluation's own length-bucketed batches (train.Feed at the recorded eval batch size), so
on a level's test split they give its recorded test accuracy bit for bit. (A Kim CNN max-pools over padded
positions, so a text's logits depend slightly on the padding its batch gives it; the LSTM's do not.)
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from .errors import IntegrityError, TicketkitError

TRAINED_FILE = "trained.safetensors"
EXPORT_FILES = ("model.safetensors", "config.json", "tokenizer.json", "size.json")


def masked_trained(state: dict, mask: dict) -> dict:
    """state x mask for every parameter, contiguous CPU copies (safetensors refuses shared storage)."""
    return {n: (t.detach().cpu() * mask[n] if n in mask else t.detach().cpu()).contiguous().clone() for n, t in state.items()}


def write_trained(path: Path, state: dict, mask: dict) -> None:
    """A level's trained weights x mask, packed: each parameter keeps only the values its mask keeps (row-major
    order), so a 29-level run stores the sum of its densities (~5 x the dense size at 20 % a round), not 29 x."""
    from safetensors.torch import save_file

    from .fsio import write_with

    packed = {n: (t.detach().cpu()[mask[n]] if n in mask else t.detach().cpu().flatten()).contiguous().clone()
              for n, t in state.items()}
    meta = {"ticketkit": json.dumps({"packing": "mask-values"})}
    write_with(Path(path), lambda p: save_file(packed, str(p), metadata=meta))


def read_trained(path: Path, mask: dict | None = None) -> dict:
    """The tensors of a trained-weights file; a packed one (write_trained) unpacked into full shapes by `mask`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta, state = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - a corrupt file is one line
        raise IntegrityError(f"{path} is unreadable ({type(e).__name__}): the file is corrupt or truncated") from None
    if json.loads(meta.get("ticketkit", "{}")).get("packing") != "mask-values":
        return state
    if mask is None:
        raise IntegrityError(f"{path} is packed by the ticket's mask: read it through its ticket")
    out = {}
    for n, v in state.items():
        m = mask.get(n)
        if m is None or v.dim() != 1 or v.numel() != int(m.sum()):
            raise IntegrityError(f"{path}: {n} holds {v.numel()} values where the mask keeps "
                                 f"{'no such parameter' if m is None else int(m.sum())}: the file is corrupt; re-create the run")
        full = torch.zeros(m.shape, dtype=v.dtype)
        full[m] = v
        out[n] = full
    return out


def trained_problems(trained: dict, spec: dict, mask: dict) -> list[str]:
    """What is wrong with a level's trained weights: other parameters, shapes or dtypes than the ticket's, NaNs,
    or a non-zero weight where the mask pruned it."""
    out = [f"{TRAINED_FILE} lacks {n}" for n in sorted(set(spec) - set(trained))]
    out += [f"{TRAINED_FILE} has {n}, not a parameter of this ticket" for n in sorted(set(trained) - set(spec))]
    for n, t in trained.items():
        if n not in spec:
            continue
        if list(t.shape) != list(spec[n]["shape"]) or str(t.dtype).replace("torch.", "") != spec[n]["dtype"]:
            out.append(f"{TRAINED_FILE}: {n} is {list(t.shape)} {t.dtype}, the ticket says {spec[n]['shape']} {spec[n]['dtype']}")
        elif not bool(torch.isfinite(t).all()):
            out.append(f"{TRAINED_FILE}: {n} holds NaN or inf")
        elif n in mask and bool(t.masked_select(~mask[n]).any()):
            out.append(f"{TRAINED_FILE}: {n} has non-zero weights where the mask pruned them")
    return out


def ticket_trained_problems(ticket) -> list[str]:
    """A ticket's trained.safetensors problems (none when it keeps none), an unreadable file among them. Read
    without keeping it on the ticket: a verified load should not hold a second copy of the weights in memory."""
    try:
        trained = ticket._trained
        if trained is None and ticket.path is not None and (ticket.path / TRAINED_FILE).is_file():
            trained = read_trained(ticket.path / TRAINED_FILE, ticket.mask)
    except TicketkitError as e:
        return [str(e)]
    return [] if trained is None else trained_problems(trained, ticket.config["params"], ticket.mask)


def label_names(config: dict, num_classes: int) -> list[str]:
    """Class index -> printed name: the run's measured `data.classes` (class i is named classes[i]; data.py records
    it for every run), else the index itself ("0", "1", ...) for runs written before classes were recorded."""
    names = (config.get("data") or {}).get("classes")
    if isinstance(names, list) and len(names) == num_classes:
        return [str(x) for x in names]
    return [str(i) for i in range(num_classes)]


class SparseClassifier:
    """A trained sparse model in eval mode with its tokenizer: `predict(texts)` -> label and probabilities."""

    def __init__(self, model: torch.nn.Module, tokenizer, config: dict, device=None):
        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer, self.config = tokenizer, config
        self.max_len = config["find"]["data"]["max_len"]
        self.batch_size = int(config["find"].get("train", {}).get("eval_batch_size", 512))
        num_classes = int(config["params"][model.output_layer]["shape"][0]) if hasattr(model, "output_layer") else None
        self.labels = label_names(config, num_classes or 2)

    @classmethod
    def from_ticket(cls, ticket, device=None) -> "SparseClassifier":
        if ticket.trained is None:
            raise TicketkitError(f"{ticket.path or 'this ticket'} has no {TRAINED_FILE} (found before ticketkit kept "
                                 "trained weights, or pulled without them): find it again to get a usable classifier")
        return cls(_build(ticket.config, ticket.trained), ticket.tokenizer, ticket.config, device)

    @classmethod
    def load(cls, path, device=None) -> "SparseClassifier":
        """An `export_trained` directory (a ticket's own: `Ticket.load(d).classifier()`)."""
        from .data import load_tokenizer
        from .fsio import read_json

        d = Path(path)
        if not (d / "model.safetensors").is_file():
            raise TicketkitError(f"{d} is neither a ticket nor an exported classifier (no model.safetensors): "
                                 f"pass a directory written by `ticketkit export --trained`")
        config = read_json(d / "config.json")
        tok = load_tokenizer(d / "tokenizer.json", config["find"]["data"]["max_len"])
        state = read_trained(d / "model.safetensors")
        bad = trained_problems(state, config["params"], {})
        if bad:
            raise IntegrityError(f"{d}: {bad[0]}")
        return cls(_build(config, state), tok, config, device)

    @torch.inference_mode()
    def probabilities(self, texts: list[str]) -> torch.Tensor:
        """Softmax over classes, [N, C], in the input order."""
        import numpy as np

        from .data import RawSplit, encode
        from .train import Feed

        if isinstance(texts, str):
            texts = [texts]
        enc = encode(RawSplit(list(texts), np.zeros(len(texts), dtype=np.int64)), self.tokenizer, self.max_len)
        out = torch.empty(len(texts), len(self.labels))
        _, it = Feed(enc, self.device).epoch(self.batch_size, None, bucketing=True)  # the evaluation's batches
        for idx, ids, lengths, _ in it:
            out[idx.cpu()] = torch.softmax(self.model(ids, lengths).float(), dim=-1).cpu()
        return out

    def predict(self, texts: list[str]) -> list[dict]:
        """One {"label", "label_id", "probability", "probabilities"} per text."""
        p = self.probabilities(texts)
        out = []
        for row in p:
            i = int(row.argmax())
            out.append({"label": self.labels[i], "label_id": i, "probability": float(row[i]),
                        "probabilities": {self.labels[j]: float(row[j]) for j in range(len(row))}})
        return out


def _build(config: dict, state: dict) -> torch.nn.Module:
    from .config import ModelHparams, from_dict
    from .models import create_model, model_kwargs

    hp = from_dict(ModelHparams, config["find"]["model"], "model")
    model = create_model(hp.arch, config["vocab_size"], seed=None, **model_kwargs(hp))
    model.load_state_dict(state)
    return model


# ------------------------------------------------------------------------------------------------- size
def sparse_size(state: dict) -> dict:
    """Bytes of `state` held dense, against torch.sparse encodings of it: CSR (each tensor as [rows, rest], int64
    crow/col indices, as torch makes them) and COO (int64 indices [ndim, nnz]). 1-D tensors count as 1-row CSR."""
    dense = csr = coo = nnz = numel = 0
    for t in state.values():
        dense += t.numel() * t.element_size()
        numel += t.numel()
        nnz += int(torch.count_nonzero(t))
        m = t.reshape(t.shape[0], -1) if t.dim() >= 2 else t.reshape(1, -1)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": only its byte counts are used here
            warnings.simplefilter("ignore", UserWarning)
            c = m.to_sparse_csr()
        csr += sum(x.numel() * x.element_size() for x in (c.crow_indices(), c.col_indices(), c.values()))
        o = t.to_sparse().coalesce()
        coo += sum(x.numel() * x.element_size() for x in (o.indices(), o.values()))
    return {"parameters": numel, "nonzero": nnz, "density": nnz / max(numel, 1), "dense_bytes": dense,
            "csr_bytes": csr, "coo_bytes": coo, "csr_over_dense": csr / max(dense, 1), "coo_over_dense": coo / max(dense, 1)}


def export_trained(ticket, out_dir) -> dict:
    """Write OUT_DIR/{model.safetensors (trained x mask), config.json, tokenizer.json, size.json}, atomically
    (a temp dir beside it, then one rename). Returns size.json's content. Refuses an existing OUT_DIR."""
    from safetensors.torch import save_file

    from .fsio import atomic_dir, write_json, write_text, write_with

    if ticket.trained is None:
        SparseClassifier.from_ticket(ticket)  # raises the one-line "no trained weights" error
    out = Path(out_dir)
    if out.exists():
        raise TicketkitError(f"{out} already exists: choose another output directory or delete it")
    state = masked_trained(ticket.trained, ticket.mask)
    with atomic_dir(out) as tmp:
        write_with(tmp / "model.safetensors", lambda p: save_file(state, str(p), metadata={"ticketkit": json.dumps({"content": "trained x mask", "packing": "dense"})}))
        write_json(tmp / "config.json", {**ticket.config, "exported": {"from": str(ticket.path), "weights": "trained x mask"}})
        write_text(tmp / "tokenizer.json", ticket.tokenizer.to_str())
        size = {**sparse_size(state), "file_bytes": (tmp / "model.safetensors").stat().st_size,
                "level": ticket.config.get("level"), "run": ticket.config.get("run"),
                "test_accuracy": ticket.config.get("metrics", {}).get("test_accuracy")}
        write_json(tmp / "size.json", size)
    return size
