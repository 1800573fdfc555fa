"""Where text and labels come from: the dataset registry and the readers (a local directory, or the Hub).

    load_raw("imdb", data_dir) / load_raw(DataHparams(...), data_dir) -> RawData {"train": RawSplit, "test": RawSplit}

A name is a registered dataset (its Hub id, columns, splits and classes below), a folder under the data dir
(`DIR/<name>/{train,test}.{parquet,csv}`, registered or not), or a Hub id `org/name`. Labels become class indices
0..k-1: integer labels that already are 0..k-1 stay as they are; anything else (strings, 1..5 stars) is mapped in
sorted order, and that order is recorded (`DataHparams.labels`), so a transfer or a prediction maps back the same
way. Adding a dataset is one `register_dataset` line here.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .errors import TicketkitError

HUB_RETRY_SECONDS = 60
HUB_PROBE_SECONDS = 10  # one quick metadata request before `datasets`, whose retries take ~30 s to give up offline
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    hub_id: str
    label_map: dict | None = None  # hub label -> class index, where the Hub's labels need it
    text_column: str = "text"
    label_column: str = "label"
    splits: dict = field(default_factory=lambda: {"train": "train", "test": "test"})  # ours -> the Hub's split
    names: tuple = ()  # class names, in class-index order (labels stay 0..k-1 integers; this is what they mean)


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    DATASETS[spec.name] = spec
    return spec


register_dataset(DatasetSpec("imdb", "stanfordnlp/imdb", names=("neg", "pos")))
# fancyzhx/yelp_polarity already uses 0 = negative (1-2 stars), 1 = positive (4-5 stars).
register_dataset(DatasetSpec("yelp2", "fancyzhx/yelp_polarity", {0: 0, 1: 1}, names=("negative", "positive")))
# SST-2's test labels are hidden (-1): its labelled validation split is the test split here.
register_dataset(DatasetSpec("sst2", "stanfordnlp/sst2", text_column="sentence",
                             splits={"train": "train", "test": "validation"}, names=("negative", "positive")))
register_dataset(DatasetSpec("ag_news", "fancyzhx/ag_news", names=("World", "Sports", "Business", "Sci/Tech")))


def check_name(name) -> str | None:
    """What is wrong with a dataset name (None if nothing): it becomes part of a run's directory name."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        return (f"{name!r} is not a dataset name: give a registered one ({', '.join(sorted(DATASETS))}), a folder "
                f"under --data-dir, or a Hub id org/name")
    return None


def parse_split_map(text: str | None, default: dict | None = None) -> dict:
    """'train=train,test=validation' -> {"train": "train", "test": "validation"} (ours -> the source's split)."""
    out = dict(default or {"train": "train", "test": "test"})
    for part in (text or "").split(","):
        if not part.strip():
            continue
        ours, eq, theirs = (s.strip() for s in part.partition("="))
        if not eq or ours not in ("train", "test") or not theirs:
            raise TicketkitError(f"data.split: {part.strip()!r} is not train=SPLIT or test=SPLIT "
                                 f"(e.g. --split train=train,test=validation)")
        out[ours] = theirs
    return out


@dataclass
class RawSplit:
    texts: list[str]
    labels: np.ndarray  # int64 class indices 0..k-1

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode("utf-8"))
            h.update(b"\x00")
        h.update(self.labels.astype(np.int64).tobytes())
        return h.hexdigest()[:16]

    def subset(self, idx) -> "RawSplit":
        return RawSplit([self.texts[i] for i in idx], self.labels[np.asarray(idx, dtype=np.int64)])


class RawData(dict):
    """{"train": RawSplit, "test": RawSplit}, with the classes: `labels` (what DataHparams.labels records: [] when
    the data's labels already are 0..k-1), `num_classes`, `classes` (a name per class) and `source` (where the
    data came from: the Hub id and the revision resolved, or the files)."""
    labels: list
    num_classes: int
    classes: list
    source: dict


def _cache_root() -> Path:
    return Path(os.environ.get("TICKETKIT_CACHE", Path.home() / ".cache" / "ticketkit"))


def _spec(hp) -> DatasetSpec:
    """The registered spec, or one made from the name (a local folder or a Hub id) and the flags."""
    name = hp.dataset
    bad = check_name(name)
    if bad:
        raise TicketkitError(f"data.dataset: {bad}")
    base = DATASETS.get(name) or DatasetSpec(name, name if "/" in name else "")
    over = {k: v for k, v in (("text_column", hp.text_column), ("label_column", hp.label_column)) if v}
    if hp.split:
        over["splits"] = parse_split_map(hp.split, base.splits)
    return DatasetSpec(**{**base.__dict__, **over})


def _table(df, spec: DatasetSpec, where: str) -> tuple[list[str], np.ndarray]:
    tc, lc = spec.text_column, spec.label_column
    cols = set(df.columns)
    if not {tc, lc} <= cols:
        raise TicketkitError(f"{where}: expected columns {tc!r} and {lc!r}, found {sorted(map(str, cols))}; "
                             f"pass --text-column/--label-column, or rename them")
    texts = df[tc]
    if texts.isna().any() or not all(isinstance(t, str) for t in texts):
        raise TicketkitError(f"{where}: column {tc!r} has missing or non-string values; fix or drop those rows")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise TicketkitError(f"{where}: {len(empty)} empty text(s), first at row {empty[0]}; drop those rows")
    if len(df) == 0:
        raise TicketkitError(f"{where}: the split is empty")
    values = df[lc].to_numpy()
    if spec.label_map:
        values = np.asarray([spec.label_map.get(v, v) for v in values], dtype=object)
    missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and v != v)]
    if missing:
        raise TicketkitError(f"{where}: {len(missing)} missing label(s), first at row {missing[0]}; drop those rows")
    return list(texts), values


def _plain(v):
    """A numpy scalar as the Python value it holds, so a message shows 4, not np.int64(4)."""
    return v.item() if isinstance(v, np.generic) else v


def _as_int(v):
    """An integer label as an int (1, 1.0, np.int64(1)); None for anything else (strings, 1.5, booleans)."""
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    return None


def classes_of(values, hp, spec: DatasetSpec) -> tuple[list, int]:
    """(labels, k) from the training split's label values. Given labels (`hp.labels`, a run's recorded classes):
    those. A registered dataset: 0..k-1 for its k named classes. Else integers that are 0..k-1 as they are
    (labels []), anything else in sorted order (numbers numerically)."""
    ints = [_as_int(v) for v in values]
    if hp.labels:
        return list(hp.labels), len(hp.labels)
    if spec.names:
        return [], len(spec.names)
    if all(i is not None for i in ints):
        if set(ints) == set(range(max(ints) + 1)):
            return [], max(ints) + 1
        labels = [str(i) for i in sorted(set(ints))]
    else:
        labels = sorted({str(v) for v in values})
    return labels, len(labels)


def to_indices(texts, values, where: str, labels: list, k: int) -> RawSplit:
    if labels:
        index = {name: i for i, name in enumerate(labels)}
        keys = [str(_as_int(v)) if _as_int(v) is not None else str(v) for v in values]
        bad = [i for i, key in enumerate(keys) if key not in index]
        if bad:
            raise TicketkitError(f"{where}: label {_plain(values[bad[0]])!r} at row {bad[0]} is not one of the classes "
                                 f"{labels}; drop those rows (or map them to one of these)")
        return RawSplit(texts, np.asarray([index[key] for key in keys], dtype=np.int64))
    got = [_as_int(v) for v in values]
    bad = [i for i, g in enumerate(got) if g is None or not 0 <= g < k]
    if bad:
        allowed = "0 or 1" if k == 2 else f"integers 0..{k - 1}"
        raise TicketkitError(f"{where}: labels must be {allowed}, found {_plain(values[bad[0]])!r} at row {bad[0]}; "
                             f"map them to {allowed}")
    return RawSplit(texts, np.asarray(got, dtype=np.int64))


def to_classes(read, hp, spec: DatasetSpec) -> RawData:
    """`read(split)` -> (texts, label values, where) for train, then test (train's labels are checked first)."""
    out = RawData()
    texts, values, where = read("train")
    labels, k = classes_of(values, hp, spec)
    out["train"] = to_indices(texts, values, where, labels, k)
    out["test"] = to_indices(*read("test"), labels, k)
    out.labels, out.num_classes = labels, k
    out.classes = labels or (list(spec.names) if spec.names else [str(i) for i in range(k)])
    return out


def read_local(spec: DatasetSpec, root: Path, split: str):
    import pandas as pd

    base = root / spec.name
    for ext, reader in (("parquet", pd.read_parquet), ("csv", pd.read_csv)):
        p = base / f"{split}.{ext}"
        if p.exists():
            try:
                kw = {"encoding": "utf-8"} if ext == "csv" else {}
                df = reader(p, **kw)
            except UnicodeDecodeError:
                raise TicketkitError(f"{p} is not UTF-8 text: re-save it as UTF-8") from None
            except Exception as e:  # pyarrow / pandas parse errors
                raise TicketkitError(f"cannot read {p}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
            return (*_table(df, spec, str(p)), str(p))
    for raw in (base / "aclImdb", root / "aclImdb"):
        if spec.name == "imdb" and (raw / split).is_dir():
            return _read_aclimdb(raw / split)
    if spec.name not in DATASETS and "/" not in spec.name and not base.is_dir():
        raise TicketkitError(f"unknown dataset {spec.name!r}: not registered ({', '.join(sorted(DATASETS))}) and "
                             f"data dir {root} has no {spec.name}/: put {base}/train.parquet and test.parquet there")
    raise TicketkitError(
        f"data dir {root} has no {split} split for {spec.name}: expected {base}/{split}.parquet (or .csv, or aclImdb/{split}/)")


def _local_format(root: Path, name: str) -> str:
    """What read_local reads for `name` under `root`: parquet, csv or aclImdb (for the model card's data line)."""
    return next((ext for ext in ("parquet", "csv") if (root / name / f"train.{ext}").exists()), "aclImdb")


def _read_aclimdb(d: Path):
    texts, labels = [], []
    for label, sub in ((0, "neg"), (1, "pos")):
        for p in sorted((d / sub).glob("*.txt")):
            try:
                texts.append(p.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise TicketkitError(f"{p} is not UTF-8 text: re-save it as UTF-8") from None
            labels.append(label)
    if not texts:
        raise TicketkitError(f"{d}: no reviews in neg/ or pos/")
    return texts, np.asarray(labels, dtype=np.int64), str(d)


def from_dataset_dict(ds, spec: DatasetSpec) -> dict:
    """The train and test tables of a `datasets.DatasetDict`, through the split mapping (ours -> theirs)."""
    out = {}
    for ours, theirs in spec.splits.items():
        if theirs not in ds:
            raise TicketkitError(f"{spec.hub_id or spec.name} has no split {theirs!r} (it has {', '.join(ds)}): "
                                 f"pass --split {ours}=SPLIT with one of those")
        out[ours] = (*_table(ds[theirs].to_pandas(), spec, f"{spec.hub_id}:{theirs}"), f"{spec.hub_id}:{theirs}")
    return out


def read_hub(spec: DatasetSpec, revision: str | None = None) -> tuple[dict, str | None]:
    """The train and test tables from the Hub, and the commit they were read at (the revision resolved)."""
    marker = _cache_root() / "hub-unreachable"
    hint = (f"cannot load {spec.hub_id} from the Hugging Face Hub (offline?). "
            f"Point ticketkit at local data: --data-dir DIR (or TICKETKIT_DATA_DIR) with DIR/{spec.name}/train.parquet and test.parquet")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise TicketkitError(hint)
    if marker.exists() and time.time() - marker.stat().st_mtime < HUB_RETRY_SECONDS:
        raise TicketkitError(hint + f" (the Hub failed under a minute ago; not retrying until {HUB_RETRY_SECONDS}s pass)")
    sha = None
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HTTPError as TransportError  # connect, DNS, timeout: no network

        sha = HfApi().dataset_info(spec.hub_id, revision=revision or "main", timeout=HUB_PROBE_SECONDS).sha
    except TransportError:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise TicketkitError(hint) from None
    except Exception:  # noqa: BLE001 - an HTTP answer (rate limit, gated): the Hub is there, let `datasets` try
        pass
    try:
        import datasets

        ds = datasets.load_dataset(spec.hub_id, revision=sha or revision)  # read at the commit resolved
    except Exception:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise TicketkitError(hint) from None
    return from_dataset_dict(ds, spec), sha or revision


def load_raw(data, data_dir: str | os.PathLike | None = None) -> RawData:
    """The train and test splits of a dataset (a name, or a DataHparams with its columns, splits and classes),
    as text and class indices."""
    hp = data if not isinstance(data, str) else SimpleNamespace(dataset=data, text_column=None, label_column=None,
                                                                split=None, revision=None, labels=[])
    spec = _spec(hp)
    data_dir = data_dir or os.environ.get("TICKETKIT_DATA_DIR")
    if data_dir:
        root = Path(data_dir)
        if not root.is_dir():
            raise TicketkitError(f"data dir {root} does not exist: pass an existing directory to --data-dir")
        if spec.hub_id and "/" in spec.name and not (root / spec.name).is_dir():
            data_dir = None  # a Hub id with no local copy under the data dir: read it from the Hub
    if data_dir:
        read = lambda split: read_local(spec, root, split)  # noqa: E731
        source = {"kind": "local", "path": str(root / spec.name), "format": _local_format(root, spec.name)}
    elif not spec.hub_id:
        raise TicketkitError(f"unknown dataset {spec.name!r}: not registered ({', '.join(sorted(DATASETS))}); pass "
                             f"--data-dir DIR with DIR/{spec.name}/train.parquet and test.parquet, or a Hub id org/name")
    else:
        tables, rev = read_hub(spec, hp.revision)
        read = tables.__getitem__
        source = {"kind": "hub", "id": spec.hub_id, "revision": rev, "splits": dict(spec.splits)}
    raw = to_classes(read, hp, spec)
    raw.source = source
    return raw
