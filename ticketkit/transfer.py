"""Transferring a ticket to another dataset, against the baselines that matter (Morcos et al. 2019, on text).

    transfer_ticket(source, TransferConfig(target="yelp2")) -> TransferRun

At every requested sparsity level (the source level whose *measured* density is closest) and every seed:
  transferred    the source mask over the source rewind weights, retrained on the target
  random-prune   a random mask with the source's exact per-layer counts, over the same rewind weights
  random-reinit  the source mask over weights re-drawn from another seed
  fresh          a ticket found by IMP on the target itself, from the same init and vocabulary
All arms train under the SOURCE tokenizer (the embedding mask is indexed by it) with the same split, settings and
data order per seed. The transferred ticket at 100 % is the dense reference. Each finished (arm, level, seed) cell is
written to results.json at once, so an interrupted transfer resumes where it stopped; cells can train in parallel
worker processes (one thread each) with results identical to a serial run. Cells whose mask, starting weights and
seed are bit-identical (e.g. every arm at 100 % when rewinding to init) are trained once and recorded for each arm.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import torch

from .config import FindConfig, ModelHparams, TrainHparams, config_hash, from_dict
from .data import Encoded, encode, load_raw, load_tokenizer, make_splits, oov_rate, tokenizer_hash
from .errors import TicketkitError
from .find import REINIT_SEED_OFFSET, Run, _versions, find_ticket
from .fsio import read_json, write_json, write_with
from .models import create_model, model_kwargs
from .prune import densities, full_masks, shuffled_like
from .store import LEVEL_RE, Store, level_dirs
from .ticket import Ticket, param_spec
from .train import train

DEFAULT_LEVELS = [100.0, 41.1, 16.9, 7.0, 2.9, 1.2, 0.5, 0.2]
CONTROLS = ("random-prune", "random-reinit")
ARMS = ("transferred", *CONTROLS, "fresh")
DENSE = 100.0
BATCH_ARMS = ("auto", "yes", "no")


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise TicketkitError(f"{key}: {msg}")


@dataclass
class TransferConfig:
    """What to transfer to, at which levels, with which arms and seeds, under which training settings."""
    target: str = "yelp2"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # an int N means seeds 0..N-1
    levels: list[float] = field(default_factory=lambda: list(DEFAULT_LEVELS))  # % of prunable weights remaining
    controls: list[str] = field(default_factory=lambda: ["random-prune"])
    fresh: bool = True
    arch: Optional[str] = None  # the architecture the source must have (None: whatever it has); checked, not hashed
    max_train: Optional[int] = None  # target subsample, as in find
    max_test: Optional[int] = None
    val_fraction: float = 0.1
    workers: int = 1  # parallel worker processes; never changes a result, so not hashed
    # Train a level's arms (same seed) as one stacked model (ticketkit.arms): "auto" does so on an accelerator, where
    # it pays, and not on a CPU, where it does not. Changes results by floating-point rounding only: not hashed.
    batch_arms: str = "auto"
    train: TrainHparams = field(default_factory=TrainHparams)

    def __post_init__(self):
        if isinstance(self.seeds, int) and not isinstance(self.seeds, bool):
            self.seeds = list(range(self.seeds))
        # 100 and 100.0 are one level: normalise so the run name does not depend on how a level was typed
        self.levels = [float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in self.levels]

    def validate(self) -> "TransferConfig":
        from .data import DATASETS
        from .models import MODELS

        _check(self.target in DATASETS, "transfer.target", f"unknown dataset {self.target!r}; choose one of {sorted(DATASETS)}")
        _check(len(self.seeds) > 0, "transfer.seeds", "need at least one seed, e.g. --seeds 3")
        _check(all(isinstance(s, int) and s >= 0 for s in self.seeds), "transfer.seeds", f"must be non-negative integers, got {self.seeds}")
        _check(len(set(self.seeds)) == len(self.seeds), "transfer.seeds", f"repeats a seed: {self.seeds}")
        _check(len(self.levels) > 0, "transfer.levels", "need at least one level, e.g. --levels 100,16.9,2.9")
        _check(all(0 < x <= 100 for x in self.levels), "transfer.levels", f"are % weights remaining, each in (0, 100]; got {self.levels}")
        _check(len(set(self.levels)) == len(self.levels), "transfer.levels", f"repeats a level: {self.levels}")
        bad = [c for c in self.controls if c not in CONTROLS]
        _check(not bad, "transfer.controls", f"unknown control {bad[0] if bad else ''!r}; choose from {', '.join(CONTROLS)} (or none)")
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

    def run_name(self, source: "Source") -> str:
        h = config_hash({"source": source.identity, "settings": self.hashed()})
        return f"transfer-{source.dataset}-{self.target}-{source.arch}-{h}"

    @classmethod
    def from_dict(cls, d: dict, where: str = "transfer") -> "TransferConfig":
        d = dict(d)
        if isinstance(d.get("seeds"), int) and not isinstance(d.get("seeds"), bool):
            d["seeds"] = list(range(d["seeds"]))
        return from_dict(cls, d, where)


def config_from_recipe(recipe: dict) -> TransferConfig:
    """A transfer recipe: a [transfer] table, plus the [train] and [data] tables it shares with find (the target's
    subsample comes from [transfer] if set there, else from [data]). Every key is checked before any training."""
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
    return TransferConfig.from_dict(t).validate()


# ------------------------------------------------------------------------------------------------ the source

@dataclass
class SourceLevel:
    index: int
    density_prunable: float
    density_all: float
    path: Optional[Path]  # None: the dense level of a single ticket (all-True mask over the same weights)
    test_accuracy: Optional[float] = None


@dataclass
class Source:
    """A source run (every level) or a single ticket (its level, plus dense)."""
    kind: str
    path: Path
    find: FindConfig
    levels: list[SourceLevel]
    identity: dict
    vocab_size: int
    tokenizer_path: Path
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def arch(self) -> str:
        return self.find.model.arch

    @property
    def dataset(self) -> str:
        return self.find.data.dataset

    def closest(self, density: float) -> SourceLevel:
        return min(self.levels, key=lambda lv: (abs(lv.density_prunable - density), lv.index))

    def weights(self, lv: SourceLevel) -> tuple[dict, dict, dict]:
        """(init, masks over the prunable parameters, rewind) of a level, verified on first load."""
        if lv.index not in self._cache:
            if lv.path is not None:
                t = Ticket.load(lv.path)
                self._cache[lv.index] = (t.init, t.masks, t.rewind)
            else:
                t = Ticket.load(self.levels[-1].path)
                # The dense level of a run rewinds to what its level 0 held: the init, or the epoch-K weights under
                # late resetting (the same for every level). Fine-tuned tickets hold trained weights, so use init.
                rewind = t.init if self.find.prune.rewind == "final" else t.rewind
                self._cache[lv.index] = (t.init, full_masks(t.init, t.prunable), rewind)
        return self._cache[lv.index]

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "identity": self.identity, "dataset": self.dataset,
                "arch": self.arch, "seed": self.find.seed, "find": self.find.to_dict(), "vocab_size": self.vocab_size,
                "levels": [{"index": lv.index, "density_prunable": lv.density_prunable, "density_all": lv.density_all,
                            "test_accuracy": lv.test_accuracy, "path": str(lv.path) if lv.path else None}
                           for lv in self.levels]}


def _manifest_sha(d: Path) -> str:
    m = read_json(d / "manifest.json") if (d / "manifest.json").exists() else None
    try:
        return m["files"]["ticket.safetensors"]["sha256"]
    except (TypeError, KeyError):
        from .errors import IntegrityError
        raise IntegrityError(f"{d} is incomplete or corrupt (no valid manifest.json): re-create or re-pull the ticket") from None


def _level_of(d: Path) -> SourceLevel:
    c = read_json(d / "config.json")
    try:
        return SourceLevel(int(c["level"]), float(c["density"]["prunable"]), float(c["density"]["all"]), d,
                           c.get("metrics", {}).get("test_accuracy"))
    except (KeyError, TypeError, ValueError):
        from .errors import IntegrityError
        raise IntegrityError(f"{d}/config.json is not a ticketkit ticket config (no level/density): re-create the ticket") from None


def _source_from_dirs(kind: str, path: Path, dirs: list[Path]) -> Source:
    c = read_json(dirs[-1] / "config.json")
    if not isinstance(c, dict) or "find" not in c or "vocab_size" not in c:
        from .errors import IntegrityError
        raise IntegrityError(f"{dirs[-1]}/config.json is not a ticketkit ticket config (no 'find'): re-create the ticket")
    find = FindConfig.from_dict(c["find"])
    tok = dirs[-1] / "tokenizer.json"
    if not tok.exists():
        raise TicketkitError(f"{dirs[-1]} has no tokenizer.json: a ticket's embedding mask is meaningless without its "
                             f"vocabulary; re-create or re-pull the ticket")
    levels = [_level_of(d) for d in dirs]
    if kind == "ticket" and levels[0].density_prunable < 1.0:
        levels.insert(0, SourceLevel(0, 1.0, 1.0, None))  # dense: the same weights under an all-True mask
    identity = {"kind": kind, "tickets": {d.name if kind == "run" else "ticket": _manifest_sha(d) for d in dirs}}
    return Source(kind, path, find, levels, identity, int(c["vocab_size"]), tok)


def resolve_source(ref=None, store=None, target: str = "yelp2", arch: str | None = None, level=None) -> Source:
    """A Source for: None (the newest finished find run in the store on a dataset other than `target`), a Run,
    a run directory or name, a ticket directory, or hf://user/repo[@rev]. `level` picks one level of a run."""
    store = store if isinstance(store, Store) else Store(store)
    if isinstance(ref, Run):
        ref = str(ref.path)
    if ref is None:
        if level is not None:
            raise TicketkitError("--level needs a SOURCE run to pick the level from")
        runs = [r for r in store.runs("find") if r.get("status") == "complete"
                and r.get("config", {}).get("data", {}).get("dataset") != target
                and r.get("config", {}).get("prune", {}).get("control", "none") == "none"
                and (arch is None or r.get("config", {}).get("model", {}).get("arch") == arch)]
        if not runs:
            what = f"{arch} " if arch else ""
            raise TicketkitError(f"no finished {what}find run on a dataset other than {target} in the store {store.root}: "
                                 f"run `ticketkit find imdb {arch or 'cnn'}` first, or pass a ticket or run")
        ref = max(runs, key=lambda r: r.get("finished", ""))["path"]
    ref = str(ref)
    if ref.startswith("hf://"):
        if level is not None:
            return _single(store.resolve(ref, level))
        from .hub import pull

        p = Path(pull(ref[5:], store=store))
    else:
        p = Path(ref)
        if not p.exists() and (store.root / ref).exists():
            p = store.root / ref
        elif not p.exists():  # a name or prefix in the store: a run (via one of its levels) or a ticket
            r = Path(store.resolve(ref))
            p = r.parent if LEVEL_RE.match(r.name) else r
    if (p / "ticket.safetensors").exists() or (p / "manifest.json").exists():
        if level is not None:
            raise TicketkitError(f"{p} is a single ticket: --level applies to runs only")
        return _single(p)
    if level is not None:
        return _single(store.resolve(str(p), str(level)))
    if (p / "run.json").exists():
        info = read_json(p / "run.json")
        if info.get("status") != "complete":
            raise TicketkitError(f"source run {p.name} is not finished (status {info.get('status')!r}): finish it by "
                                 f"running its find command again, or pick one finished level with --level")
    dirs = level_dirs(p)
    if not dirs:
        raise TicketkitError(f"{p} holds no tickets (no level-NN/ with a manifest): pass a finished run or a ticket")
    incomplete = [d.name for d in p.iterdir() if LEVEL_RE.match(d.name) and d not in dirs]
    if incomplete:
        from .errors import IntegrityError
        raise IntegrityError(f"{p}/{incomplete[0]} is incomplete (no manifest.json): it was interrupted while being "
                             f"written; re-run the source's find command")
    return _source_from_dirs("run", p, dirs)


def _single(p: Path) -> Source:
    return _source_from_dirs("ticket", Path(p), [Path(p)])


def check_source(src: Source, levels: list[SourceLevel], arch: str | None) -> None:
    """Before any training: every needed ticket loads and verifies, and fits the architecture it claims."""
    if arch is not None and src.arch != arch:
        raise TicketkitError(f"the source {src.path} was found with architecture {src.arch}, not {arch}: "
                             f"pass a {arch} ticket or drop --arch")
    hp = src.find.model
    model = create_model(hp.arch, src.vocab_size, seed=0, **model_kwargs(hp))
    spec = param_spec(model)
    for lv in levels:
        d = lv.path or src.levels[-1].path
        c = read_json(d / "config.json")
        if c.get("params") != spec:
            diff = sorted(set(spec) ^ set(c.get("params", {}))) or \
                [n for n in spec if spec[n] != c["params"].get(n)]
            raise TicketkitError(f"{d} does not fit a {hp.arch} model with its own settings (first difference: "
                                 f"{diff[0] if diff else '?'}): it was found under a different architecture")
        src.weights(lv)  # loads and verifies digests, shapes, NaNs, densities and the tokenizer


def arm_start(src: Source, arm: str, source_level: int, seed: int, fresh_dir=None) -> tuple[dict, dict]:
    """(masks over the prunable parameters, starting weights) of one arm at one source level and seed.
    The network trained is start * mask; the random-prune mask is drawn per (seed, level), reproducibly."""
    lv = next(x for x in src.levels if x.index == source_level)
    init, masks, rewind = src.weights(lv)
    if arm == "transferred":
        return masks, rewind
    if arm == "random-prune":
        gen = torch.Generator().manual_seed(seed * 1_000_003 + (source_level + 1) * 7919 + 17)
        return shuffled_like(masks, gen), rewind
    if arm == "random-reinit":  # as find's control: the same mask over weights drawn from seed + REINIT_SEED_OFFSET
        if "reinit" not in src._cache:
            hp = src.find.model
            m = create_model(hp.arch, src.vocab_size, seed=src.find.seed + REINIT_SEED_OFFSET, **model_kwargs(hp))
            src._cache["reinit"] = {k: v.detach().clone() for k, v in m.state_dict().items()}
        return masks, src._cache["reinit"]
    if arm == "fresh":
        t = Ticket.load(fresh_dir)
        return t.masks, t.rewind
    raise TicketkitError(f"unknown arm {arm!r}; arms are {', '.join(ARMS)}")


# ------------------------------------------------------------------------------------------------ the run

@dataclass
class TransferRun:
    """A transfer experiment in the store: results.json (every finished cell) and the report built from it."""
    path: Path

    @property
    def results(self) -> dict:
        return read_json(self.path / "results.json")

    @property
    def rows(self) -> list[dict]:
        return self.results.get("rows", [])

    @property
    def config(self) -> TransferConfig:
        return TransferConfig.from_dict(self.results["config"])

    def table(self) -> str:
        from .report import summary_table

        return summary_table(self.results)

    def __repr__(self) -> str:
        r = self.results
        return f"TransferRun({self.path.name!r}, rows={len(r.get('rows', []))}, status={r.get('status')!r})"


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _np(state: dict) -> dict:
    return {k: v.detach().cpu().contiguous().numpy() for k, v in state.items()}


def _digest(masks: dict, start: dict) -> str:
    """Identity of a training's starting point: equal digests (and seeds) give bit-identical trainings."""
    h = hashlib.sha256()
    for n in sorted(start):
        t = start[n] * masks[n] if n in masks else start[n]
        h.update(n.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    for n in sorted(masks):
        h.update(n.encode())
        h.update(masks[n].cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


@dataclass
class _Cell:
    arm: str
    level: float  # requested % remaining
    seed: int
    source_level: int
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return (self.arm, self.level, self.seed)


def _key(row: dict) -> tuple:
    return (row["arm"], float(row["level"]), int(row["seed"]))


# Worker-process state: the encoded data is loaded once per worker, the stop event is shared with the parent.
_W: dict = {}


def _worker_init(stop_event) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into stop_event: finish the epoch, stop
    torch.set_num_threads(1)
    _W["stop"] = stop_event.is_set


def _worker_data(data_file: str) -> dict:
    """The encoded target splits, read once per worker from the file the parent wrote (the pool is started before
    that file exists, so spawning the workers overlaps with preparing the data)."""
    if _W.get("data_file") != data_file:
        from safetensors.torch import load_file

        t = load_file(data_file)
        _W["data"] = {k: Encoded(t[f"{k}.ids"], t[f"{k}.lengths"], t[f"{k}.labels"]) for k in ("train", "val", "test")}
        _W["data_file"] = data_file
    return _W["data"]


def _train_job(job: dict, data: dict | None = None, stop_flag=None, progress: bool = False, device=None) -> dict:
    """One training: the model from `job`'s starting weights under its masks, on the target data, seed job['seed']."""
    data = data or _worker_data(job["data_file"])
    stop_flag = stop_flag or _W.get("stop")
    hp = ModelHparams(**job["model"])
    model = create_model(hp.arch, job["vocab_size"], seed=None, **model_kwargs(hp))
    masks = {n: torch.from_numpy(m) for n, m in job["masks"].items()}
    start = {n: torch.from_numpy(w) for n, w in job["start"].items()}
    model.load_state_dict({n: start[n] * masks[n] if n in masks else start[n] for n in start})
    res = train(model, masks, data["train"], data["val"], data["test"], TrainHparams(**job["train"]), job["seed"],
                device=device, checkpoint=Path(job["checkpoint"]), progress=progress, desc=job["desc"],
                stop_flag=stop_flag)
    Path(job["checkpoint"]).unlink(missing_ok=True)
    return _result_metrics(res)


def _result_metrics(res) -> dict:
    return {"test_accuracy": res.test["accuracy"], "test_macro_f1": res.test["macro_f1"],
            "val_accuracy": res.val["accuracy"], "val_loss": res.val["loss"], "test_loss": res.test["loss"],
            "epochs": res.epochs, "best_epoch": res.best_epoch, "seconds": round(res.seconds, 2)}


def _fresh_job(cfg_dict: dict, data_dir, store_root: str, tokenizer_from: str) -> str:
    run = find_ticket(FindConfig.from_dict(cfg_dict), data_dir=data_dir, store=store_root, progress=False,
                      command=None, stop_flag=_W.get("stop"), tokenizer_from=tokenizer_from)
    return str(run.path)


def transfer_ticket(source=None, config: TransferConfig | None = None, *, data_dir=None, store=None,
                    progress: bool = True, command: str | None = None, stop_flag=None, level=None,
                    device=None) -> TransferRun:
    """Run (or resume, or reuse) the transfer experiment of `source` to `config.target`. See the module doc."""
    cfg = (config or TransferConfig()).validate()
    store = store if isinstance(store, Store) else Store(store)
    store.ensure()
    src = resolve_source(source, store, cfg.target, cfg.arch, level)
    return _Transfer(cfg, src, store, data_dir, progress, command, stop_flag, device).run()


class _Transfer:
    def __init__(self, cfg: TransferConfig, src: Source, store: Store, data_dir, progress, command, stop_flag, device):
        self.cfg, self.src, self.store, self.data_dir = cfg, src, store, data_dir
        self.progress, self.command, self.stop_flag, self.device = progress, command, stop_flag, device
        self.name = cfg.run_name(src)
        self.rd = store.run_dir(self.name)

    # ----------------------------------------------------------------------------------------- planning
    def plan(self) -> list[dict]:
        """Each requested level -> the source level of closest measured density; the dense level is always in.
        Requests that land on the same source level (a single ticket has only its own level and dense) become one
        level, reported under the request closest to its measured density, with the others listed."""
        by_level: dict[int, dict] = {}
        for r in sorted(set(self.cfg.levels) | {DENSE}, reverse=True):
            lv = self.src.closest(r / 100)
            p = by_level.setdefault(lv.index, {"requested": r, "source_level": lv.index, "density_prunable": lv.density_prunable,
                                               "density_all": lv.density_all, "requested_by_user": False, "also_requested": []})
            if abs(r / 100 - lv.density_prunable) < abs(p["requested"] / 100 - lv.density_prunable):
                p["also_requested"].append(p["requested"])
                p["requested"] = r
            elif r != p["requested"]:
                p["also_requested"].append(r)
            p["requested_by_user"] |= r in self.cfg.levels
        for p in by_level.values():
            if p["also_requested"]:
                _log(self.progress, f"[{self.name}] levels {', '.join(f'{x:g}' for x in p['also_requested'])} % land on the same "
                                    f"source level as {p['requested']:g} % ({p['density_prunable']:.2%} measured): run once")
        return sorted(by_level.values(), key=lambda p: -p["density_prunable"])

    def fresh_config(self, plan: list[dict]) -> FindConfig:
        """The source's settings on the target, with the transfer's training and subsample. An iterative search
        stops at the deepest level the plan needs: pruning counts are exact, so its level i has the same measured
        density as the source's level i."""
        f, cfg = self.src.find, self.cfg
        pr = replace(f.prune, control="none")
        if pr.schedule == "iterative":
            deepest = max((p["source_level"] for p in plan if p["requested_by_user"]), default=0)
            pr = replace(pr, levels=min(pr.levels, max(deepest, 0)))
        data = replace(f.data, dataset=cfg.target, max_train=cfg.max_train, max_test=cfg.max_test,
                       val_fraction=cfg.val_fraction)
        return replace(f, data=data, train=replace(cfg.train), prune=pr).validate()

    def cells(self, plan: list[dict]) -> list[_Cell]:
        arms = ["transferred", *self.cfg.controls]
        out = []
        for p in plan:
            for seed in self.cfg.seeds:
                for arm in (arms if p["requested_by_user"] else ["transferred"]):
                    out.append(_Cell(arm, p["requested"], seed, p["source_level"]))
        return out

    def fresh_cells(self, plan: list[dict], fresh: Run) -> list[_Cell]:
        dirs = fresh.ticket_paths()
        dens = [read_json(d / "config.json")["density"]["prunable"] for d in dirs]
        out = []
        for p in plan:
            if not p["requested_by_user"]:
                continue
            j = min(range(len(dirs)), key=lambda i: (abs(dens[i] - p["density_prunable"]), i))
            for seed in self.cfg.seeds:
                out.append(_Cell("fresh", p["requested"], seed, p["source_level"], {"fresh_dir": dirs[j], "fresh_level": j}))
        return out

    def build(self, cell: _Cell) -> tuple[dict, dict]:
        return arm_start(self.src, cell.arm, cell.source_level, cell.seed, cell.extra.get("fresh_dir"))

    # ----------------------------------------------------------------------------------------- data
    def prepare(self) -> dict:
        """The target split (seeded like the fresh search, so both see the same reviews), encoded with the
        source tokenizer; the OOV rate of the target text under the source vocabulary."""
        f = self.src.find
        tok = load_tokenizer(self.src.tokenizer_path, f.data.max_len)
        raw = load_raw(self.cfg.target, self.data_dir)
        hp = replace(f.data, dataset=self.cfg.target, max_train=self.cfg.max_train, max_test=self.cfg.max_test,
                     val_fraction=self.cfg.val_fraction)
        splits = make_splits(raw, hp, f.seed)
        self.data = {k: encode(getattr(splits, k), tok, f.data.max_len, self.store.cache) for k in ("train", "val", "test")}
        texts = splits.train.texts + splits.val.texts + splits.test.texts
        return {"oov_rate": oov_rate(tok, texts), "oov_over": "the target's train, validation and test splits as used",
                "data": {"dataset": self.cfg.target, "tokenizer_sha256": tokenizer_hash(tok), "split_seed": f.seed,
                         **{f"{k}_size": len(getattr(splits, k)) for k in ("train", "val", "test")},
                         **{f"{k}_fingerprint": getattr(splits, k).fingerprint() for k in ("train", "val", "test")}}}

    # ----------------------------------------------------------------------------------------- running
    def run(self) -> TransferRun:
        cfg, rd = self.cfg, self.rd
        plan = self.plan()
        check_source(self.src, [next(x for x in self.src.levels if x.index == p["source_level"]) for p in plan], cfg.arch)
        with self.store.lock(self.name):
            rd.mkdir(parents=True, exist_ok=True)
            rp = rd / "results.json"
            res = read_json(rp) if rp.exists() else {
                "kind": "transfer", "name": self.name, "config": cfg.to_dict(), "source": self.src.describe(),
                "target": cfg.target, "plan": plan, "rows": [], "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": self.command, "versions": _versions()}
            res["config"]["workers"] = cfg.workers  # the only settings that may differ on a resumed run
            res["config"]["batch_arms"] = cfg.batch_arms
            if res.get("status") == "complete" and not self._missing(res, plan):
                _log(self.progress, f"reusing finished transfer {rd}")
                return TransferRun(rd)
            res["status"] = "running"
            self.res = res
            self.stacked_on = self.stacked()
            self.pool = self._start_pool() if cfg.workers > 1 and not self.stacked_on else None
            try:
                _log(self.progress, f"[{self.name}] {self.src.dataset} -> {cfg.target}: loading {cfg.target}")
                t0 = time.perf_counter()
                info = self.prepare()
                res.update(info)
                write_json(rp, res)
                _log(self.progress, f"[{self.name}] OOV rate of {cfg.target} under the {self.src.dataset} vocabulary: "
                                    f"{info['oov_rate']:.2%}")
                t1 = time.perf_counter()
                self.execute(plan)
                # Wall clock of this invocation's two phases: preparing the target data once, then training every
                # cell (what workers and stacked arms speed up; bench/bench_arms.py compares it).
                # (How they ran is beside them: config.workers and stacked_arms.)
                res["timing"] = {"prepare_seconds": round(t1 - t0, 2), "train_seconds": round(time.perf_counter() - t1, 2)}
            finally:
                if self.pool is not None:
                    self.stop_event.set()  # a no-op after a clean finish; else workers checkpoint their epoch and stop
                    self.pool.shutdown(wait=False, cancel_futures=True)
            res["status"] = "complete"
            res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            write_json(rp, res)
            from .report import render_report

            render_report(res, rd)
            (self.store.cache / "transfer" / f"{self.name}.safetensors").unlink(missing_ok=True)
            _log(self.progress, f"[{self.name}] done: {len(res['rows'])} cells in {rd}")
            return TransferRun(rd)

    def _missing(self, res: dict, plan: list[dict]) -> bool:
        have = {_key(r) for r in res.get("rows", [])}
        want = {c.key for c in self.cells(plan)}
        n_fresh = sum(p["requested_by_user"] for p in plan) * len(self.cfg.seeds) if self.cfg.fresh else 0
        return bool(want - have) or sum(1 for k in have if k[0] == "fresh") < n_fresh

    def job(self, cell: _Cell, masks: dict, start: dict, digest: str) -> dict:
        f = self.src.find
        return {"model": dataclasses.asdict(f.model), "vocab_size": self.src.vocab_size, "masks": _np(masks),
                "start": _np(start), "seed": cell.seed, "train": dataclasses.asdict(self.cfg.train),
                "checkpoint": str(self.rd / "checkpoints" / f"{digest}-s{cell.seed}.safetensors"),
                "desc": f"{cell.arm} {cell.level:g}% seed {cell.seed}"}

    def record(self, cell: _Cell, masks: dict, start: dict, digest: str, metrics: dict, shared_with=None) -> None:
        dens = densities(masks, start)
        row = {"arm": cell.arm, "level": cell.level, "seed": cell.seed, "source_level": cell.source_level,
               "density_prunable": dens["prunable"], "density_all": dens["all"], **metrics, "digest": digest}
        if "fresh_level" in cell.extra:
            row["fresh_level"] = cell.extra["fresh_level"]
        if shared_with is not None:  # bit-identical training: trained once, recorded for each arm at no cost
            row.update(shared_with=shared_with, seconds=0.0)
        rows = [r for r in self.res["rows"] if _key(r) != cell.key] + [row]
        self.res["rows"] = rows
        write_json(self.rd / "results.json", self.res)  # after every cell: an interruption loses at most the cell in flight
        _log(self.progress, f"[{self.name}] {cell.arm:>13} {cell.level:>5g}% (measured {dens['prunable']:.2%}) seed {cell.seed}: "
                            f"test accuracy {metrics['test_accuracy']:.4f}"
                            + (f" (same training as {shared_with})" if shared_with else f" ({metrics['seconds']:.0f}s)"))

    def execute(self, plan: list[dict]) -> None:
        """Train every unfinished cell, serially or in worker processes; record each as it finishes."""
        cfg = self.cfg
        done = {_key(r): r for r in self.res["rows"]}
        self.by_digest = {(r["digest"], r["seed"]): r for r in self.res["rows"] if "shared_with" not in r}
        queue = [c for c in self.cells(plan) if c.key not in done]
        fresh_cfg = self.fresh_config(plan) if cfg.fresh else None
        # Cells that are the fresh search's own dense training wait for it instead of training it a second time.
        queue, waiting = self._split_dense(queue, fresh_cfg)
        self.res["stacked_arms"] = self.stacked_on
        if self.stacked_on:
            # The fresh search first, so a level's fresh arm can train in one stacked model with the others.
            if fresh_cfg is not None:
                queue += waiting + self._after_fresh(plan, self._fresh_serial(fresh_cfg), done)
            self.together(queue)
            return
        if cfg.workers == 1:
            self.serial(queue)
            if fresh_cfg is not None:  # the costliest arm last, so the others are saved first
                self.serial(waiting + self._after_fresh(plan, self._fresh_serial(fresh_cfg), done))
            return
        self.parallel(queue, plan, fresh_cfg, done, waiting)

    def _split_dense(self, queue: list[_Cell], fresh_cfg) -> tuple[list[_Cell], list[_Cell]]:
        """(cells to train now, cells whose training is the fresh search's level 0: the source's dense start, the
        fresh search's seed). The fresh search trains that level anyway; they are recorded from it afterwards."""
        if fresh_cfg is None:
            return queue, []
        init, masks, _ = self.src.weights(self.src.levels[0])
        d0 = _digest(masks, init)
        waiting = [c for c in queue if c.seed == fresh_cfg.seed and c.source_level == self.src.levels[0].index
                   and _digest(*self.build(c)) == d0]
        return [c for c in queue if c not in waiting], waiting

    def stacked(self) -> bool:
        """Whether the arms of a level train as one stacked model: "auto" means on an accelerator only."""
        from .train import default_device

        dev = torch.device(self.device) if self.device is not None else default_device()
        on = self.cfg.batch_arms == "yes" or (self.cfg.batch_arms == "auto" and dev.type != "cpu")
        if on and self.cfg.workers > 1:
            _log(self.progress, f"[{self.name}] arms of a level train as one stacked model in this process "
                                f"(batch_arms={self.cfg.batch_arms}); workers={self.cfg.workers} is not used")
        return on

    def together(self, queue: list[_Cell]) -> None:
        """Each (level, seed)'s unfinished cells in one stacked training (ticketkit.arms.train_arms); cells that are
        bit-identical to a finished training, or to another cell of the group, are recorded from it."""
        from .arms import train_arms

        groups: dict = {}
        for c in queue:
            groups.setdefault((c.level, c.seed), []).append(c)
        f = self.src.find
        for (level, seed), cells in groups.items():
            members: dict = {}  # digest -> [(cell, masks, start)]
            for cell in cells:
                masks, start = self.build(cell)
                dg = _digest(masks, start)
                if not self._reuse(cell, masks, start, dg):
                    members.setdefault(dg, []).append((cell, masks, start))
            if not members:
                continue
            if len(members) == 1:
                dg, group = next(iter(members.items()))
                cell, masks, start = group[0]
                m = _train_job(self.job(cell, masks, start, dg), self.data, self.stop_flag, self.progress, self.device)
                self._finish((dg, seed), group, m)
                continue
            firsts = [g[0] for g in members.values()]
            t0 = time.perf_counter()
            res = train_arms(f.model.arch, model_kwargs(f.model), self.src.vocab_size, [s for _, _, s in firsts],
                             [m for _, m, _ in firsts], self.data["train"], self.data["val"], self.data["test"],
                             self.cfg.train, seed, device=self.device, progress=self.progress,
                             descs=[f"{c.arm} {c.level:g}% seed {seed}" for c, _, _ in firsts], stop_flag=self.stop_flag)
            took = round(time.perf_counter() - t0, 2)
            arms = [c.arm for c, _, _ in firsts]
            for (dg, group), r in zip(members.items(), res):
                m = {**_result_metrics(r), "seconds": took, "trained_with": arms}
                self._finish((dg, seed), group, m)

    def _reuse(self, cell: _Cell, masks: dict, start: dict, dg: str) -> bool:
        """A bit-identical training already finished (another arm at the same point): record it for this arm."""
        row = self.by_digest.get((dg, cell.seed))
        if row is None:
            return False
        self.record(cell, masks, start, dg, _metrics(row),
                    shared_with=row.get("label") or f"{row['arm']}@{float(row['level']):g}")
        return True

    def serial(self, queue: list[_Cell]) -> None:
        for cell in queue:
            masks, start = self.build(cell)
            dg = _digest(masks, start)
            if self._reuse(cell, masks, start, dg):
                continue
            m = _train_job(self.job(cell, masks, start, dg), self.data, self.stop_flag, self.progress, self.device)
            self.record(cell, masks, start, dg, m)
            self.by_digest[(dg, cell.seed)] = {**m, "arm": cell.arm, "level": cell.level}

    def parallel(self, queue: list[_Cell], plan: list[dict], fresh_cfg, done: dict, waiting=()) -> None:
        """Independent trainings in `workers` spawned processes, one thread each (the fresh search takes one of
        them while the others train cells). The parent alone writes results.json."""
        from safetensors.torch import save_file

        data_file = self.store.cache / "transfer" / f"{self.name}.safetensors"
        t = {f"{k}.{a}": getattr(e, a).contiguous() for k, e in self.data.items() for a in ("ids", "lengths", "labels")}
        write_with(data_file, lambda p: save_file(t, str(p)))
        pool, stop_event = self.pool, self.stop_event
        inflight: dict = {}  # future -> (digest, seed), or None for the fresh search
        members: dict = {}   # (digest, seed) -> [(cell, masks, start)] waiting on that training
        try:
            if fresh_cfg is not None:
                _log(self.progress, f"[{self.name}] fresh arm: searching {self.cfg.target} in a worker "
                                    f"({fresh_cfg.prune.n_rounds()} rounds)")
                inflight[pool.submit(_fresh_job, fresh_cfg.to_dict(), self.data_dir, str(self.store.root),
                                     str(self.src.tokenizer_path))] = None
            while queue or inflight:
                # Keep every worker busy plus one job queued, building cells only as they are submitted.
                while queue and len(inflight) <= self.cfg.workers:
                    cell = queue.pop(0)
                    masks, start = self.build(cell)
                    dg = _digest(masks, start)
                    if self._reuse(cell, masks, start, dg):
                        continue
                    if (dg, cell.seed) in members:
                        members[(dg, cell.seed)].append((cell, masks, start))
                        continue
                    job = {**self.job(cell, masks, start, dg), "data_file": str(data_file)}
                    inflight[pool.submit(_train_job, job)] = (dg, cell.seed)
                    members[(dg, cell.seed)] = [(cell, masks, start)]
                finished, _ = cf.wait(list(inflight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    key = inflight.pop(fut)
                    if key is None:
                        queue += [*waiting, *self._after_fresh(plan, Run(Path(fut.result())), done)]
                    else:
                        self._finish(key, members.pop(key), fut.result())
                if self.stop_flag is not None and self.stop_flag():
                    # First Ctrl-C: workers finish their epoch and checkpoint; save whatever completes meanwhile.
                    stop_event.set()
                    for fut in list(inflight):
                        if fut.cancel():
                            inflight.pop(fut)
                    for fut in cf.as_completed(list(inflight)):
                        key = inflight.pop(fut)
                        if key is not None and fut.exception() is None:
                            self._finish(key, members.pop(key), fut.result())
                    raise KeyboardInterrupt
        except BaseException:
            stop_event.set()  # workers finish their epoch, checkpoint and stop
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def _start_pool(self):
        """`workers` spawned processes, one thread each, started now so that their start-up (a Python and torch
        import each) overlaps with preparing the target data in this process."""
        ctx = multiprocessing.get_context("spawn")
        self.stop_event = ctx.Event()
        pool = cf.ProcessPoolExecutor(self.cfg.workers, mp_context=ctx, initializer=_worker_init,
                                      initargs=(self.stop_event,))
        for _ in range(self.cfg.workers):
            pool.submit(os.getpid)  # a process is spawned per submitted task while none is idle
        return pool

    def _finish(self, key: tuple, group: list, metrics: dict) -> None:
        first = group[0][0]
        for i, (cell, masks, start) in enumerate(group):
            self.record(cell, masks, start, key[0], metrics, shared_with=None if i == 0 else f"{first.arm}@{first.level:g}")
        self.by_digest[key] = {**metrics, "arm": first.arm, "level": first.level}

    def _fresh_serial(self, fresh_cfg: FindConfig) -> Run:
        _log(self.progress, f"[{self.name}] fresh arm: iterative magnitude pruning on {self.cfg.target} from the same "
                            f"init, under the {self.src.dataset} vocabulary ({fresh_cfg.prune.n_rounds()} rounds)")
        return find_ticket(fresh_cfg, data_dir=self.data_dir, store=self.store, progress=self.progress, command=None,
                           device=self.device, stop_flag=self.stop_flag, tokenizer_from=self.src.tokenizer_path)

    def _after_fresh(self, plan: list[dict], fresh: Run, done: dict) -> list[_Cell]:
        """Record the fresh search and check its init against the source's, bit for bit; its cells to train."""
        t0 = Ticket.load(fresh.ticket_paths()[0])
        init, _, _ = self.src.weights(self.src.levels[0])
        same = set(init) == set(t0.init) and all(torch.equal(init[k], t0.init[k]) for k in init)
        if not same:
            print(f"warning: the fresh search {fresh.path.name} did not start from the source's initial weights "
                  f"(different torch version?); the fresh arm is not a same-init comparison", file=sys.stderr)
        self.res["fresh"] = {"run": fresh.path.name, "path": str(fresh.path), "same_init": same,
                             "config": fresh.info.get("config")}
        self._register_search(fresh, t0)
        return [c for c in self.fresh_cells(plan, fresh) if c.key not in done]

    def _register_search(self, fresh: Run, level0: Ticket) -> None:
        """Each level the fresh search trained is a finished training: same target data, training settings and
        seed as a transfer cell, so a cell with the same start (the fresh arm at the search's seed, and the dense
        cells) is recorded from it rather than trained again (measured bit-identical when it was retrained)."""
        cfg = fresh.info.get("config", {})
        data = fresh.info.get("data", {})
        keys = ("tokenizer_sha256", "train_fingerprint", "val_fingerprint", "test_fingerprint")
        if cfg.get("train") != dataclasses.asdict(self.cfg.train) or any(data.get(k) != self.res["data"].get(k) for k in keys):
            return  # not the same training (an older or hand-made run): its levels are retrained
        for j, d in enumerate(fresh.ticket_paths()):
            t = level0 if j == 0 else Ticket.load(d)  # level 0 was loaded (and verified) for the same-init check
            start = t.init if j == 0 else t.rewind  # level 0 trains from init; its ticket's rewind may be epoch k
            row = t.config["summary"]
            if "test_loss" not in row:
                continue  # found before ticketkit recorded it: retrain rather than leave a metric out
            self.by_digest.setdefault((_digest(t.masks, start), int(cfg["seed"])),
                                      {**_metrics(row), "arm": "fresh", "level": j, "label": f"{fresh.path.name} level {j}"})


def _metrics(row: dict) -> dict:
    keys = ("test_accuracy", "test_macro_f1", "val_accuracy", "val_loss", "test_loss", "epochs", "best_epoch", "seconds",
            "trained_with")
    return {k: row[k] for k in keys if k in row}
