"""Hyperparameter dataclasses, OpenLTH-style.

Each field is one setting. Its metadata names the CLI flag that overrides it, so the dataclasses *are* the CLI
(see cli.py) and, hashed, the name of a run (see `FindConfig.run_name`). Recipes are TOML files (stdlib `tomllib`)
with one table per dataclass. Every value is validated before any training starts, and a bad one names its key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from .datasets import check_name, parse_split_map
from .errors import TicketkitError
from .registries import arch_names, control_names, dataset_names, embed_init_names, method_names


def flag(help: str, name: str | None = None, **kw):
    """Field metadata: `name` is the CLI flag (default: the field name with dashes). `choices`: the allowed values,
    or a function that returns them from a registry (read only when the CLI needs them); `check`: a function that
    raises TicketkitError on a value no list of choices can describe (rewind's epoch:K)."""
    return {"help": help, "flag": name, **kw}


@dataclass
class DataHparams:
    dataset: str = field(default="imdb", metadata=flag("registered dataset, a folder under --data-dir, or a Hub id org/name", cli=False))
    text_column: Optional[str] = field(default=None, metadata=flag("column holding the text (default: the dataset's own, else 'text')"))
    label_column: Optional[str] = field(default=None, metadata=flag("column holding the label (default: the dataset's own, else 'label')"))
    split: Optional[str] = field(default=None, metadata=flag("the splits used as train and test, e.g. train=train,test=validation", check=parse_split_map, metavar="train=S,test=S"))
    revision: Optional[str] = field(default=None, metadata=flag("a Hub dataset's revision (default: the newest, recorded as data.revision)", name="data-revision"))
    labels: list[str] = field(default_factory=list, metadata=flag("class i is labels[i] ([]: labels are 0..k-1); set from the data before a run is named", cli=False))
    max_train: Optional[int] = field(default=None, metadata=flag("subsample the training split to N reviews (stratified)"))
    max_test: Optional[int] = field(default=None, metadata=flag("subsample the test split to N reviews (stratified)"))
    val_fraction: float = field(default=0.1, metadata=flag("fraction of train held out for validation (stratified)"))
    vocab_size: int = field(default=25000, metadata=flag("word vocabulary size, [PAD] and [UNK] included"))
    max_len: int = field(default=512, metadata=flag("truncate reviews to this many tokens (512 keeps ~90 % of IMDB reviews whole)"))

    def validate(self) -> None:
        _check(check_name(self.dataset) is None, "data.dataset", str(check_name(self.dataset)))
        for k in ("max_train", "max_test"):
            v = getattr(self, k)
            _check(v is None or v >= 10, f"data.{k}", f"must be at least 10, got {v}")
        _check(0 < self.val_fraction < 0.5, "data.val_fraction", f"must be in (0, 0.5), got {self.val_fraction}")
        _check(self.vocab_size >= 10, "data.vocab_size", f"must be at least 10, got {self.vocab_size}")
        _check(self.max_len >= 8, "data.max_len", f"must be at least 8 (the widest filter needs room), got {self.max_len}")


@dataclass
class ModelHparams:
    arch: str = field(default="cnn", metadata=flag("registered architecture (cnn, lstm)", cli=False))
    embed_dim: int = field(default=128, metadata=flag("word embedding size"))
    num_filters: int = field(default=100, metadata=flag("cnn: feature maps per filter width"))
    filter_widths: list[int] = field(default_factory=lambda: [3, 4, 5], metadata=flag("cnn: filter widths", cli=False))
    hidden_size: int = field(default=128, metadata=flag("lstm: hidden units"))
    pooling: str = field(default="mean", metadata=flag("lstm: pool over real tokens", choices=("mean", "max")))
    num_heads: int = field(default=4, metadata=flag("transformer: attention heads (embed_dim must be a multiple)"))
    num_layers: int = field(default=2, metadata=flag("transformer: encoder blocks"))
    ff_dim: int = field(default=512, metadata=flag("transformer: feed-forward width"))
    max_positions: int = field(default=512, metadata=flag("transformer: learned positions (at least data.max_len)"))
    dropout: float = field(default=0.5, metadata=flag("dropout before the output layer"))
    num_classes: int = field(default=2, metadata=flag("output classes, set from the data's labels", cli=False))
    # Default by measurement (bench/RESULTS.md, section "embed-init"; CNN, IMDB 5k subsample, seed 0, 59 % a round):
    # dense validation accuracy xavier 85.6 %, uniform 84.8 %, normal 77.4 %; the random-prune control still learns
    # under xavier (test 83.3 % at 6.9 % and 81.4 % at 2.8 %, 4 % and 13 % dead filters, not collapsed).
    embed_init: str = field(default="xavier", metadata=flag("embedding init: xavier, normal (N(0,1)) or uniform (+-0.25, Kim 2014)",
                                                                                 choices=embed_init_names))

    def validate(self) -> None:
        from .models import MODELS
        _check(self.arch in MODELS, "model.arch", f"unknown architecture {self.arch!r}; choose one of {sorted(MODELS)}")
        _check(self.pooling in ("mean", "max"), "model.pooling", f"must be mean or max, got {self.pooling!r}")
        _check(0 <= self.dropout < 1, "model.dropout", f"must be in [0, 1), got {self.dropout}")
        from .models import EMBED_INITS
        _check(self.embed_init in EMBED_INITS, "model.embed_init", f"must be one of {', '.join(EMBED_INITS)}, got {self.embed_init!r}")
        _check(self.num_classes >= 2, "model.num_classes", f"must be at least 2, got {self.num_classes}")
        for k in ("embed_dim", "num_filters", "hidden_size", "num_heads", "num_layers", "ff_dim", "max_positions"):
            _check(getattr(self, k) >= 1, f"model.{k}", f"must be positive, got {getattr(self, k)}")
        _check(len(self.filter_widths) > 0 and all(w >= 1 for w in self.filter_widths), "model.filter_widths",
               f"must be a non-empty list of positive widths, got {self.filter_widths}")
        _check(self.arch != "transformer" or self.embed_dim % self.num_heads == 0, "model.num_heads",
               f"embed_dim {self.embed_dim} must be a multiple of it, got {self.num_heads}")


@dataclass
class TrainHparams:
    epochs: int = field(default=20, metadata=flag("maximum epochs per training (early stopping may end sooner)"))
    lr: float = field(default=5e-3, metadata=flag("Adam learning rate"))
    batch_size: int = field(default=64, metadata=flag("training batch size"))
    patience: int = field(default=2, metadata=flag("stop after this many epochs without a better validation loss"))
    eval_batch_size: int = field(default=512, metadata=flag("evaluation batch size (no gradients, so larger)"))
    precision: str = field(default="auto", metadata=flag("auto: bf16 autocast on a CPU that supports it; fp32 on a GPU, where it is faster", choices=("auto", "fp32", "bf16")))
    bucketing: bool = field(default=True, metadata=flag("batch reviews of similar length together", cli=False))

    def validate(self) -> None:
        _check(self.epochs >= 1, "train.epochs", f"must be at least 1, got {self.epochs}")
        _check(0 < self.lr < 1, "train.lr", f"must be in (0, 1), got {self.lr}")
        _check(self.batch_size >= 1, "train.batch_size", f"must be positive, got {self.batch_size}")
        _check(self.eval_batch_size >= 1, "train.eval_batch_size", f"must be positive, got {self.eval_batch_size}")
        _check(self.patience >= 1, "train.patience", f"must be at least 1, got {self.patience}")
        _check(self.precision in ("auto", "fp32", "bf16"), "train.precision", f"must be auto, fp32 or bf16, got {self.precision!r}")


SCHEDULES = ("iterative", "oneshot", "oneshot-levels")


@dataclass
class PruneHparams:
    method: str = field(default="magnitude", metadata=flag("how weights are scored for pruning (the registered methods)", choices=method_names))
    scope: str = field(default="local", metadata=flag("local (same rate per layer) or global (one threshold)", name="scope", aliases=("prune",),
                                                                                  choices=("local", "global")))
    schedule: str = field(default="iterative", metadata=flag(
        "iterative (a rate per round) | oneshot (straight to --target) | oneshot-levels (each level in one shot from "
        "the one dense training, to the iterative schedule's per-layer counts at that round)",
        choices=("iterative", "oneshot", "oneshot-levels")))
    rate: float = field(default=0.2, metadata=flag("fraction of remaining weights pruned per round"))
    levels: int = field(default=28, metadata=flag("pruning rounds after the dense level 0 (iterative, oneshot-levels)",
                                                                 name="rounds", aliases=("levels",)))
    target: Optional[float] = field(default=None, metadata=flag("fraction of prunable weights to keep; iterative stops there, oneshot goes there"))
    rewind: str = field(default="init", metadata=flag(
        "init, epoch:K or step:K (late resetting: the weights after K epochs or optimizer steps), or final (fine-tuning)",
        check=lambda v: PruneHparams(rewind=v).rewind_point(), metavar="init|epoch:K|step:K|final"))
    control: str = field(default="none", metadata=flag("random-prune: mask shuffled per layer; random-reinit: weights re-drawn",
                                                                              choices=control_names))
    exclude: list[str] = field(default_factory=list, metadata=flag("parameter names never pruned", cli=False))
    layer_rates: dict[str, float] = field(default_factory=dict, metadata=flag("per-parameter rate overrides (local)", cli=False))
    layer_floor: float = field(default=0.001, metadata=flag("no layer keeps fewer than this fraction of its weights (nor fewer than 1): none is ever emptied"))
    score_batches: int = field(default=4, metadata=flag("snip: training batches (of --batch-size) the init is scored on"))
    output_rate: float = field(default=0.5, metadata=flag("the output layer is pruned at this fraction of the rate (Frankle & Carbin: 0.5; 1 prunes it like any layer)"))

    def validate(self) -> None:
        _check(self.scope in ("local", "global"), "prune.scope", f"must be local or global, got {self.scope!r}")
        _check(self.schedule in SCHEDULES, "prune.schedule", f"must be {', '.join(SCHEDULES)}, got {self.schedule!r}")
        _check(0 < self.rate < 1, "prune.rate", f"must be in (0, 1), got {self.rate}")
        _check(0 <= self.levels <= 200, "prune.levels", f"must be in [0, 200], got {self.levels}")
        _check(self.target is None or 0 < self.target < 1, "prune.target", f"must be in (0, 1), got {self.target}")
        _check(self.schedule != "oneshot" or self.target is not None, "prune.target", "oneshot needs a target: pass --target 0.5")
        from .controls import CONTROLS
        from .prune_init import METHODS  # the magnitude method and the methods at init

        _check(self.method in METHODS, "prune.method", f"must be one of {', '.join(sorted(METHODS))}, got {self.method!r}")
        # one shot to given counts keeps the largest |w| (prune.prune_to_counts): magnitude is the only method it means
        _check(self.schedule != "oneshot-levels" or self.method == "magnitude", "prune.method",
               f"oneshot-levels prunes by magnitude; got {self.method!r} (use --schedule iterative)")
        # a method at init prunes the init and trains from it: its ticket's rewind point is the init, by definition
        _check(not METHODS[self.method].at_init or self.rewind == "init", "prune.rewind",
               f"{self.method} prunes at initialisation, so its tickets rewind to init; got {self.rewind!r}")
        _check(not METHODS[self.method].at_init or self.control == "none", "prune.control",
               "the random controls are of IMP tickets; drop --control or use --method magnitude")
        _check(self.score_batches >= 1, "prune.score_batches", f"must be at least 1, got {self.score_batches}")
        names = ["none", *CONTROLS]
        _check(self.control in names, "prune.control", f"must be {', '.join(names[:-1])} or {names[-1]}, got {self.control!r}")
        _check(0 <= self.layer_floor < 1, "prune.layer_floor", f"must be in [0, 1), got {self.layer_floor}")
        _check(0 <= self.output_rate <= 1, "prune.output_rate", f"must be in [0, 1], got {self.output_rate}")
        self.rewind_point()  # validates the spelling
        for k, v in self.layer_rates.items():
            _check(0 < v < 1, f"prune.layer_rates.{k}", f"must be in (0, 1), got {v}")

    def rewind_point(self) -> tuple[str, int] | None:
        """None for 'final'; ('epoch', 0) for 'init'; ('epoch', K) or ('step', K) for late resetting."""
        r = self.rewind
        if r == "init":
            return ("epoch", 0)
        if r == "final":
            return None
        unit, _, k = r.partition(":")
        if unit in ("epoch", "step") and k.isdigit() and int(k) >= 1:
            return (unit, int(k))
        raise TicketkitError(f"prune.rewind: {r!r} is not init, final, epoch:K or step:K with K >= 1 "
                             f"(e.g. --rewind epoch:1 or --rewind step:200)")

    def n_rounds(self) -> int:
        return 1 if self.schedule == "oneshot" else self.levels


@dataclass
class FindConfig:
    seed: int = field(default=0, metadata=flag("seed for init, data split and data order"))
    data: DataHparams = field(default_factory=DataHparams)
    model: ModelHparams = field(default_factory=ModelHparams)
    train: TrainHparams = field(default_factory=TrainHparams)
    prune: PruneHparams = field(default_factory=PruneHparams)

    def validate(self) -> "FindConfig":
        _check(self.seed >= 0, "seed", f"must be non-negative, got {self.seed}")
        for s in (self.data, self.model, self.train, self.prune):
            s.validate()
        _check(self.model.arch != "transformer" or self.data.max_len <= self.model.max_positions, "data.max_len",
               f"{self.data.max_len} is over model.max_positions {self.model.max_positions}: lower one or raise the other")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        return config_hash(self.to_dict())

    def run_name(self) -> str:
        return f"find-{slug(self.data.dataset)}-{self.model.arch}-{self.hash()}"

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "FindConfig":
        return from_dict(cls, d, where)

    @classmethod
    def from_recipe(cls, recipe: str | Path | None = None, dataset: str | None = None, arch: str | None = None,
                    overrides: dict | None = None) -> "FindConfig":
        """The defaults, then the recipe's tables, then dataset/arch, then `overrides` ({("train", "lr"): 0.01}),
        validated. What `ticketkit find` runs; a transfer recipe's [transfer] and a sweep's [sweep] are ignored."""
        d: dict = {}
        if recipe:
            d = load_recipe(recipe)
            d.pop("transfer", None)  # a transfer recipe's own table; find ignores it
            d.pop("sweep", None)
            d = from_dict(cls, d, "recipe").to_dict()  # unknown keys / wrong types fail here, before any training
        if dataset:
            set_path(d, ("data", "dataset"), dataset)
        if arch:
            set_path(d, ("model", "arch"), arch)
        for path, v in (overrides or {}).items():
            if v is not None:
                set_path(d, tuple(path), v)
        return cls.from_dict(merge(cls().to_dict(), d)).validate()


DEFAULT_LEVELS = [100.0, 41.1, 16.9, 7.0, 2.9, 1.2, 0.5, 0.2]
BATCH_ARMS = ("auto", "yes", "no")


@dataclass
class TransferConfig:
    """What to transfer to, at which levels, with which arms and seeds, under which training settings.

    Its fields are `ticketkit transfer`'s flags, as FindConfig's are find's. On the command line a list is
    comma-separated, seeds is a count N (seeds 0..N-1), and `find` names the find setting a flag shares with
    `ticketkit find` (the recipe's source is found with it)."""
    target: str = field(default="yelp2", metadata=flag("target dataset; a recipe's target replaces this default", name="to",
                                                                      suggest=dataset_names))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata=flag(  # an int N means seeds 0..N-1
        "N independent replicates, seeds 0..N-1: seed s re-runs the source search, the fresh search and every control "
        "at seed s (init, split, data order, dropout)", cli_type=int, name="n-seeds", aliases=("seeds",)))
    independent: bool = field(default=True, metadata=flag(
        "one source search for every seed (seeds then vary only the target training: intervals cover training noise "
        "only)", name="one-source", negate=True))
    levels: list[float] = field(default_factory=lambda: list(DEFAULT_LEVELS), metadata=flag(  # % of prunable weights
        "comma-separated % weights remaining, e.g. 100,41.1,16.9,7.0,2.9,1.2,0.5,0.2", name="densities",
        aliases=("levels",)))
    controls: list[str] = field(default_factory=lambda: ["random-prune", "random-prune-rows", "random-reinit"], metadata=flag(
        "comma-separated random controls: random-prune,random-prune-rows,random-reinit, and arms pruned at init on the "
        "target: snip,synflow (or none)"))
    fresh: bool = field(default=True, metadata=flag(
        "skip the fresh arm (IMP on the target itself; the costliest arm)", name="no-fresh", negate=True))
    workers: int = field(default=1, metadata=flag(  # never changes a result, so not hashed
        "train independent cells in N worker processes (1 thread each)"))
    # Train a level's arms (same seed) as one stacked model (ticketkit.arms): "auto" does so on an accelerator, where
    # it pays, and not on a CPU, where it does not. Changes results by floating-point rounding only: not hashed.
    batch_arms: str = field(default="auto", metadata=flag(
        "train a level's arms as one stacked model (auto: on a GPU, not on a CPU, where it does not pay)",
        choices=BATCH_ARMS))
    arch: Optional[str] = field(default=None, metadata=flag(  # checked, not hashed
        "the source's architecture: picks the newest run of it, and is checked", choices=arch_names))
    max_train: Optional[int] = field(default=None, metadata=flag(  # the target's subsample, as in find
        DataHparams.__dataclass_fields__["max_train"].metadata["help"], find=("data", "max_train")))
    max_test: Optional[int] = field(default=None, metadata=flag(
        DataHparams.__dataclass_fields__["max_test"].metadata["help"], find=("data", "max_test")))
    val_fraction: float = field(default=0.1, metadata=flag(
        DataHparams.__dataclass_fields__["val_fraction"].metadata["help"], find=("data", "val_fraction")))
    train: TrainHparams = field(default_factory=TrainHparams)

    def __post_init__(self):
        if isinstance(self.seeds, int) and not isinstance(self.seeds, bool):
            self.seeds = list(range(self.seeds))
        # 100 and 100.0 are one level: normalise so the run name does not depend on how a level was typed
        self.levels = [float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in self.levels]

    def validate(self) -> "TransferConfig":
        from .controls import CONTROLS
        from .models import MODELS

        _check(check_name(self.target) is None, "transfer.target", str(check_name(self.target)))
        _check(len(self.seeds) > 0, "transfer.seeds", "need at least one seed, e.g. --n-seeds 3")
        _check(all(isinstance(s, int) and s >= 0 for s in self.seeds), "transfer.seeds", f"must be non-negative integers, got {self.seeds}")
        _check(len(set(self.seeds)) == len(self.seeds), "transfer.seeds", f"repeats a seed: {self.seeds}")
        _check(len(self.levels) > 0, "transfer.levels", "need at least one level, e.g. --densities 100,16.9,2.9")
        _check(all(0 < x <= 100 for x in self.levels), "transfer.levels", f"are % weights remaining, each in (0, 100]; got {self.levels}")
        _check(len(set(self.levels)) == len(self.levels), "transfer.levels", f"repeats a level: {self.levels}")
        arms = (*CONTROLS, "snip", "synflow")  # the random controls and the methods at init (transfer/cells.py)
        bad = [c for c in self.controls if c not in arms]
        _check(not bad, "transfer.controls", f"unknown control {bad[0] if bad else ''!r}; choose from {', '.join(arms)} (or none)")
        _check(len(set(self.controls)) == len(self.controls), "transfer.controls", f"repeats a control: {self.controls}")
        _check(self.arch is None or self.arch in MODELS, "transfer.arch", f"unknown architecture {self.arch!r}; choose one of {sorted(MODELS)}")
        for k in ("max_train", "max_test"):
            v = getattr(self, k)
            _check(v is None or v >= 10, f"transfer.{k}", f"must be at least 10, got {v}")
        _check(0 < self.val_fraction < 0.5, "transfer.val_fraction", f"must be in (0, 0.5), got {self.val_fraction}")
        _check(1 <= self.workers <= 256, "transfer.workers", f"must be between 1 and 256, got {self.workers}")
        _check(self.batch_arms in BATCH_ARMS, "transfer.batch_arms", f"must be one of {', '.join(BATCH_ARMS)}, got {self.batch_arms!r}")
        self.train.validate()
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hashed(self) -> dict:
        """The settings that can change a result (workers, the arch check and batch_arms cannot)."""
        d = self.to_dict()
        for k in ("workers", "arch", "batch_arms"):
            d.pop(k)
        return d

    def run_name(self, source) -> str:
        """`source`: a ticketkit.transfer Source (its identity hashes the source tickets' bytes)."""
        h = config_hash({"source": source.identity, "settings": self.hashed()})
        return f"transfer-{slug(source.dataset)}-{slug(self.target)}-{source.arch}-{h}"

    @classmethod
    def from_dict(cls, d: dict, where: str = "transfer") -> "TransferConfig":
        d = dict(d)
        if isinstance(d.get("seeds"), int) and not isinstance(d.get("seeds"), bool):
            d["seeds"] = list(range(d["seeds"]))
        return from_dict(cls, d, where)

    @classmethod
    def from_recipe(cls, recipe: dict) -> "TransferConfig":
        """A transfer recipe: a [transfer] table, plus the [train] and [data] tables it shares with find (the
        target's subsample comes from [transfer] if set there, else from [data]). Every key is checked before any
        training."""
        recipe = dict(recipe)
        t = dict(recipe.pop("transfer", {}) or {})
        if not isinstance(t, dict):
            raise TicketkitError("recipe: [transfer] must be a table")
        recipe.pop("sweep", None)
        from_dict(FindConfig, recipe, "recipe")  # the find tables: unknown keys and wrong types fail here
        if "train" in recipe and "train" not in t:
            t["train"] = recipe["train"]
        for k in ("max_train", "max_test", "val_fraction"):
            if k in recipe.get("data", {}) and k not in t:
                t[k] = recipe["data"][k]
        return cls.from_dict(t).validate()


def slug(dataset: str) -> str:  # a dataset name in a run's directory name: a Hub id's / becomes --
    return dataset.replace("/", "--")


def config_hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise TicketkitError(f"{key}: {msg}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check a TOML/JSON value against a dataclass field type. Ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise TicketkitError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise TicketkitError(f"{key}: expected a table, got {type(value).__name__} {value!r}")
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and type(value) is tp:
        if tp is float and value != value:
            raise TicketkitError(f"{key}: NaN is not a valid value")
        return value
    raise TicketkitError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {type(value).__name__} {value!r}")


def from_dict(cls, d: dict, where: str = "config"):
    if not isinstance(d, dict):
        raise TicketkitError(f"{where}: expected a table, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        prefix = "" if where in ("config", "recipe") else f"{where}."
        raise TicketkitError(f"unknown key {prefix + unknown[0]!r} in {where}; known keys: {', '.join(sorted(known))}")
    kw = {}
    for k, v in d.items():
        tp = hints[k]
        key = k if where in ("config", "recipe") else f"{where}.{k}"
        kw[k] = from_dict(tp, v, key) if dataclasses.is_dataclass(tp) else _coerce(v, tp, key)
    return cls(**kw)


def load_recipe(path: str | Path) -> dict:
    """Read a recipe TOML (a file, or a built-in recipe's name) into a plain dict. Syntax errors name the file and
    line."""
    from .recipebook import resolve_recipe

    path = resolve_recipe(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise TicketkitError(f"recipe {path} not found: pass an existing file or a built-in recipe's name, e.g. "
                             f"--recipe quick (see `ticketkit recipes`)") from None
    except tomllib.TOMLDecodeError as e:
        raise TicketkitError(f"recipe {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise TicketkitError(f"recipe {path} is not UTF-8 text") from None


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def cli_fields(cls=FindConfig, prefix: tuple = ()):
    """Yield (path, field, type) for every field that has a CLI flag: what cli.py turns into options."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from cli_fields(tp, prefix + (f.name,))
        elif f.metadata.get("cli", True):
            yield prefix + (f.name,), f, tp


def set_path(d: dict, path: tuple, value) -> None:
    for p in path[:-1]:
        d = d.setdefault(p, {})
    d[path[-1]] = value
