"""Splits, the tokenizer, and encoded-data caching (where the text comes from: ticketkit.datasets).

The vocabulary is built with `tokenizers` from the source training split and travels with every ticket,
because an embedding mask only means something under its own vocabulary.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .datasets import DATASETS, DatasetSpec, RawData, RawSplit, load_raw, register_dataset  # noqa: F401 - re-exported
from .errors import TicketkitError, shorten
from .fsio import tensors_digest, write_with

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1


def _stratified_take(split: RawSplit, n: int | None, seed: int) -> RawSplit:
    if n is None or n >= len(split):
        return split
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(split)), train_size=n, stratify=split.labels, random_state=seed)
    return split.subset(np.sort(idx))


@dataclass
class Splits:
    train: RawSplit
    val: RawSplit
    test: RawSplit


def make_splits(raw: dict[str, RawSplit], hp, seed: int) -> Splits:
    """Subsample (stratified, seeded), then carve validation out of train (stratified, seeded)."""
    from sklearn.model_selection import train_test_split

    train = _stratified_take(raw["train"], hp.max_train, seed)
    test = _stratified_take(raw["test"], hp.max_test, seed)
    if len(np.unique(train.labels)) < 2:
        raise TicketkitError("the training split has only one class: check the labels or raise --max-train")
    try:
        tr, va = train_test_split(np.arange(len(train)), test_size=hp.val_fraction, stratify=train.labels, random_state=seed)
    except ValueError as e:  # a class too small to stratify (one example), or a validation split smaller than the classes
        raise TicketkitError(f"cannot hold out a stratified validation split: {str(e).splitlines()[0]}; "
                             f"raise --max-train or --val-fraction, or drop the rarest classes") from None
    return Splits(train.subset(np.sort(tr)), train.subset(np.sort(va)), test)


# ---------------------------------------------------------------------------------------------- tokenizer

def build_tokenizer(texts: list[str], vocab_size: int, max_len: int):
    """Word-level vocabulary over lower-cased words and punctuation, IMDB's <br /> tags removed."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(r"<br\s*/?>"), " "), normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    configure_tokenizer(tok, max_len)
    return tok


def configure_tokenizer(tok, max_len: int):
    tok.enable_truncation(max_length=max_len)
    tok.no_padding()
    if tok.token_to_id(PAD) != PAD_ID or tok.token_to_id(UNK) != UNK_ID:
        raise TicketkitError("tokenizer.json must have [PAD] as id 0 and [UNK] as id 1: it is not a ticketkit tokenizer")
    return tok


def tokenizer_hash(tok) -> str:
    return hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]


def load_tokenizer(path, max_len: int):
    from tokenizers import Tokenizer

    from .fsio import regular_file_problem

    bad = regular_file_problem(path, follow=True)  # a FIFO would block the reader forever
    if bad:
        raise TicketkitError(bad)
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:
        raise TicketkitError(f"{path} is not a valid tokenizer.json ({shorten(str(e).splitlines()[0] if str(e) else type(e).__name__)})") from None
    return configure_tokenizer(tok, max_len)


@dataclass
class Encoded:
    """Token ids right-padded with PAD_ID to the longest review, with true lengths and labels."""
    ids: torch.Tensor      # int32 [N, L]
    lengths: torch.Tensor  # int64 [N]
    labels: torch.Tensor   # int64 [N]

    def __len__(self) -> int:
        return self.ids.shape[0]

    def tokens(self) -> int:
        return int(self.lengths.sum())


def encode(split: RawSplit, tok, max_len: int, cache_dir: str | os.PathLike | None = None) -> Encoded:
    """Encode a split, caching the int tensors on disk keyed by data fingerprint and tokenizer hash. A cache entry
    carries a sha256 of its tensors and is checked on load (digest, shapes, id range, labels): a bad one is
    discarded and rebuilt, with one warning line."""
    from safetensors.torch import save_file

    key = hashlib.sha256(f"{split.fingerprint()}|{tokenizer_hash(tok)}|{max_len}".encode()).hexdigest()[:20]
    path = Path(cache_dir) / "encoded" / f"{key}.safetensors" if cache_dir else None
    if path is not None and path.exists():
        got = _load_cached(path, split, tok.get_vocab_size())
        if got is not None:
            return got
    encs = tok.encode_batch(split.texts, add_special_tokens=False)
    lengths = np.fromiter((max(1, len(e.ids)) for e in encs), dtype=np.int64, count=len(encs))
    L = int(lengths.max()) if len(encs) else 1
    ids = np.zeros((len(encs), L), dtype=np.int32)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
    out = Encoded(torch.from_numpy(ids), torch.from_numpy(lengths), torch.from_numpy(split.labels.copy()))
    if path is not None:
        t = {"ids": out.ids, "lengths": out.lengths, "labels": out.labels}
        write_with(path, lambda p: save_file(t, str(p), metadata={"sha256": tensors_digest(t)}))
    return out


def _load_cached(path: Path, split: RawSplit, vocab_size: int) -> Encoded | None:
    """A cache entry, verified; None (after one warning line, the file removed) when it is unusable."""
    from safetensors import safe_open

    try:
        if not path.is_file():
            raise ValueError("not a regular file")
        with safe_open(str(path), "pt") as f:
            md = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}
        if set(t) != {"ids", "lengths", "labels"}:
            raise ValueError(f"tensors {sorted(t)}, expected ids, lengths, labels")
        if md.get("sha256") != tensors_digest(t):
            raise ValueError("its digest does not match its tensors")
        ids, lengths, labels = t["ids"], t["lengths"], t["labels"]
        n = len(split)
        if ids.dim() != 2 or ids.shape[0] != n or lengths.shape != (n,) or labels.shape != (n,):
            raise ValueError(f"shapes {list(ids.shape)}, {list(lengths.shape)}, {list(labels.shape)} do not fit {n} reviews")
        if ids.dtype != torch.int32 or lengths.dtype != torch.int64 or labels.dtype != torch.int64:
            raise ValueError("wrong dtypes")
        if n and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            raise ValueError(f"token ids outside [0, {vocab_size})")
        if n and (int(lengths.min()) < 1 or int(lengths.max()) > ids.shape[1]):
            raise ValueError("lengths outside the padded width")
        if not torch.equal(labels, torch.from_numpy(split.labels.astype(np.int64))):
            raise ValueError("its labels differ from the data's")
        return Encoded(ids, lengths, labels)
    except Exception as e:  # noqa: BLE001 - any unusable entry is just re-made
        import sys

        why = shorten(str(e).splitlines()[0], 200) if str(e) else type(e).__name__
        print(f"warning: encoded-data cache {path} is unusable ({why}); rebuilt", file=sys.stderr, flush=True)
        path.unlink(missing_ok=True)
        return None


def oov_rate(tok, texts: list[str]) -> float:
    """Fraction of word tokens that the vocabulary maps to [UNK] (no truncation: the whole text counts)."""
    trunc = tok.truncation
    tok.no_truncation()
    try:
        encs = tok.encode_batch(texts, add_special_tokens=False)
    finally:
        if trunc:
            tok.enable_truncation(max_length=trunc["max_length"])
    total = sum(len(e.ids) for e in encs)
    unk = sum(e.ids.count(UNK_ID) for e in encs)
    return unk / max(total, 1)


# ---------------------------------------------------------------------------------------------- one preparation

@dataclass
class Prepared:
    train: Encoded
    val: Encoded
    test: Encoded
    tokenizer: object
    info: dict  # what identifies the data a training saw: dataset, tokenizer hash, split sizes and fingerprints
    oov_rate: float | None = None


def data_identity(info: dict) -> dict:
    """What identifies the reviews a training saw (dataset, split sizes and fingerprints), from a `Prepared.info`
    or a run's recorded data: a resume or a reuse compares these."""
    return {k: v for k, v in info.items() if k == "dataset" or k.endswith(("_size", "_fingerprint"))}


def with_classes(cfg, data_dir=None):
    """A FindConfig with its classes set from the data (`data.labels`, `model.num_classes`), so that the run name
    means the output layer's size and the label mapping: find names a run only after this."""
    raw = load_raw(cfg.data, data_dir)
    return replace(cfg, data=replace(cfg.data, labels=list(raw.labels)),
                   model=replace(cfg.model, num_classes=raw.num_classes))


def split_identity(data_hp, seed: int, data_dir=None) -> dict:
    """`data_identity` of the data `prepare_data` would see, without building a vocabulary or encoding."""
    splits = make_splits(load_raw(data_hp, data_dir), data_hp, seed)
    return {"dataset": data_hp.dataset, **{f"{k}_size": len(getattr(splits, k)) for k in ("train", "val", "test")},
            **{f"{k}_fingerprint": getattr(splits, k).fingerprint() for k in ("train", "val", "test")}}


def prepare_data(data_hp, seed: int, data_dir=None, cache_dir=None, tokenizer=None, oov: bool = False) -> Prepared:
    """Load, split, (build the vocabulary from train if none is given,) encode with an on-disk cache. find and
    transfer both prepare data here, so a transfer cell and the fresh search see the same reviews. `oov`: also
    measure the OOV rate of all three splits' text under the tokenizer (a transfer's target under the source's)."""
    raw = load_raw(data_hp, data_dir)
    splits = make_splits(raw, data_hp, seed)
    tok = tokenizer or build_tokenizer(splits.train.texts, data_hp.vocab_size, data_hp.max_len)
    enc = {k: encode(getattr(splits, k), tok, data_hp.max_len, cache_dir) for k in ("train", "val", "test")}
    info = {"dataset": data_hp.dataset, "tokenizer_sha256": tokenizer_hash(tok),
            **{f"{k}_size": len(getattr(splits, k)) for k in ("train", "val", "test")},
            **{f"{k}_fingerprint": getattr(splits, k).fingerprint() for k in ("train", "val", "test")},
            # what the classes mean (class i is named classes[i]; a prediction maps back with it), what a constant
            # predictor scores on this test split (the figures' chance line), and where the data came from
            "num_classes": raw.num_classes, "classes": list(raw.classes),
            "chance_accuracy": float(np.bincount(splits.test.labels).max() / max(len(splits.test), 1)),
            # what was read, for config.json and the model card: the files or the Hub revision, and the full
            # splits' sizes (the *_size keys above are what this training saw after subsampling)
            **({"source": {**raw.source, "rows": {k: len(raw[k]) for k in ("train", "test")}}}
               if getattr(raw, "source", None) else {})}
    rate = oov_rate(tok, splits.train.texts + splits.val.texts + splits.test.texts) if oov else None
    return Prepared(enc["train"], enc["val"], enc["test"], tok, info, rate)
