"""A sweep's grid: the recipe (one loader, --quick merged in) expanded into cells, validated before anything runs."""
from __future__ import annotations

import copy
import itertools
import os
from dataclasses import asdict, dataclass, field

from ..config import FindConfig, config_hash, from_dict, load_recipe, merge, set_path
from ..errors import TicketkitError

# Axis name in [sweep] -> the config field it sets. Any dotted field path ("train.lr") is an axis too.
AXES = {
    "arch": ("model", "arch"),
    "dataset": ("data", "dataset"),
    "prune": ("prune", "scope"),
    "schedule": ("prune", "schedule"),
    "rewind": ("prune", "rewind"),
    "control": ("prune", "control"),
    "seed": ("seed",),
}
# Keys of [sweep] that are not axes. Resources do not change results, so they are not part of the sweep's hash.
SWEEP_KEYS = {"transfer", "exclude", "num_cpus", "num_gpus", "max_retries", "design", "reference"}
DESIGNS = ("grid", "one-at-a-time")


@dataclass
class Cell:
    id: str                 # the run name in the store (find-imdb-cnn-<hash>, transfer-...)
    kind: str               # find | transfer
    config: dict            # FindConfig.to_dict() or the transfer settings
    axes: dict              # the axis values that made this cell (reports group by them)
    deps: list = field(default_factory=list)  # cell ids this one waits for
    source: str | None = None  # transfer: the source find cell

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sweep:
    """An expanded recipe: its cells in dependency order, and where its state lives."""
    recipe: dict
    cells: list[Cell]
    resources: dict
    recipe_path: str | None = None
    quick: bool = False

    @property
    def name(self) -> str:
        return f"sweep-{config_hash({'cells': sorted(c.id for c in self.cells)})}"

    def cell(self, cid: str) -> Cell:
        return next(c for c in self.cells if c.id == cid)


def load_sweep_recipe(recipe: str | os.PathLike | dict, quick: bool = False) -> dict:
    """A recipe file (or an already-loaded dict) as a dict, with its [quick] table merged over it when `quick`.
    --quick on a recipe without a [quick] table is an error, not a silent full-size run."""
    d = load_recipe(recipe) if isinstance(recipe, (str, os.PathLike)) else dict(recipe)
    where = recipe if isinstance(recipe, (str, os.PathLike)) else "the recipe"
    q = d.pop("quick", None)
    if quick:
        if q is None:
            raise TicketkitError(f"{where} has no [quick] table: add one (e.g. [quick.data] max_train = 2000) or drop --quick")
        if not isinstance(q, dict):
            raise TicketkitError(f"quick: expected a table, got {type(q).__name__}")
        d = merge(d, q)
    return d


def expand(recipe: dict, recipe_path: str | None = None, quick: bool = False) -> Sweep:
    """Recipe dict -> Sweep. Every cell is validated here, before anything runs; a bad one names its axes."""
    recipe = dict(recipe)
    sw = recipe.pop("sweep", None)
    if not isinstance(sw, dict) or not sw:
        raise TicketkitError("a sweep recipe needs a [sweep] table of axes, e.g. [sweep] seed = [0, 1, 2]")
    transfer_hp = recipe.pop("transfer", {})
    recipe.pop("quick", None)
    base = merge(FindConfig().to_dict(), from_dict(FindConfig, recipe, "recipe").to_dict())

    axes, paths = {}, {}
    for k, v in sw.items():
        if k in SWEEP_KEYS:
            continue
        path = AXES.get(k) or (tuple(k.split(".")) if "." in k else None)
        if path is None:
            raise TicketkitError(f"sweep.{k}: unknown axis; axes are {', '.join(AXES)}, transfer, or a dotted field "
                                 f"like \"train.lr\"")
        vals = v if isinstance(v, list) else [v]
        if not vals:
            raise TicketkitError(f"sweep.{k}: empty list; give at least one value")
        axes[k], paths[k] = vals, path
    excludes = sw.get("exclude", [])
    if not isinstance(excludes, list) or not all(isinstance(e, dict) for e in excludes):
        raise TicketkitError("sweep.exclude: expected a list of tables, e.g. exclude = [{schedule = \"oneshot\", rewind = \"final\"}]")
    for e in excludes:
        for k in e:
            if k not in axes:
                raise TicketkitError(f"sweep.exclude: {k!r} is not an axis of this sweep ({', '.join(axes)})")
    targets = sw.get("transfer", [])
    targets = targets if isinstance(targets, list) else [targets]
    resources = {"num_cpus": sw.get("num_cpus", 1), "num_gpus": sw.get("num_gpus"), "max_retries": sw.get("max_retries", 2)}
    _check_resources(resources)

    cells: dict[str, Cell] = {}
    for point in design_points(axes, sw.get("design", "grid"), sw.get("reference")):
        if any(all(point[k] == v for k, v in e.items()) for e in excludes):
            continue  # explicitly dropped by the recipe
        d = copy.deepcopy(base)
        for k, v in point.items():
            set_path(d, paths[k], v)
        where = ", ".join(f"{k}={v}" for k, v in point.items())
        try:
            cfg = FindConfig.from_dict(d).validate()
        except TicketkitError as e:
            raise TicketkitError(f"sweep cell ({where}) is invalid: {e}; fix the base settings or drop the combination "
                                 f"with [sweep] exclude = [{{...}}]") from None
        cell = Cell(cfg.run_name(), "find", cfg.to_dict(), point)
        if cfg.prune.control != "none":  # a control retrains its magnitude run's levels: that run is a dependency
            mag = FindConfig.from_dict(merge(cfg.to_dict(), {"prune": {"control": "none"}}))
            cell.deps = [mag.run_name()]
            if mag.run_name() not in cells:
                cells[mag.run_name()] = Cell(mag.run_name(), "find", mag.to_dict(), {**point, **({"control": "none"} if "control" in point else {})})
        cells.setdefault(cell.id, cell)  # the same settings reached twice are one cell
    if not cells:
        raise TicketkitError("sweep: every combination is excluded; loosen [sweep] exclude")
    finds = sorted(cells.values(), key=lambda c: bool(c.deps))  # magnitude runs first, then controls
    transfers = _transfer_cells(finds, targets, transfer_hp) if targets else []
    return Sweep(recipe={"sweep": sw, "transfer": transfer_hp, **recipe}, cells=finds + transfers,
                 resources=resources, recipe_path=recipe_path, quick=quick)


def reference_point(axes: dict, reference) -> dict:
    """The reference value of every axis: the [sweep] reference table's, else the axis's first value."""
    if reference is None:
        reference = {}
    if not isinstance(reference, dict):
        raise TicketkitError('sweep.reference: expected a table, e.g. reference = {rewind = "init", prune = "local"}')
    for k, v in reference.items():
        if k not in axes:
            raise TicketkitError(f"sweep.reference: {k!r} is not an axis of this sweep ({', '.join(axes)})")
        if v not in axes[k]:
            raise TicketkitError(f"sweep.reference: {k} = {v!r} is not one of the axis's values {axes[k]}")
    return {k: reference.get(k, vals[0]) for k, vals in axes.items()}


def design_points(axes: dict, design: str, reference=None) -> list[dict]:
    """The axis values of every cell. grid: the full factorial product. one-at-a-time: the reference, then each
    varied axis at each of its other values with the rest at the reference, for every combination of the crossed
    axes. The varied axes are those the reference table names (all but the seed without one); the others (arch,
    dataset, seed) are crossed, so every architecture gets the whole one-at-a-time design."""
    if design not in DESIGNS:
        raise TicketkitError(f"sweep.design: must be {' or '.join(repr(d) for d in DESIGNS)}, got {design!r}")
    ref = reference_point(axes, reference)
    if design == "grid":
        return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    varied = [k for k in axes if k != "seed" and (reference is None or k in reference)]
    crossed = [k for k in axes if k not in varied]
    out = []
    for combo in itertools.product(*(axes[k] for k in crossed)):
        base = {**ref, **dict(zip(crossed, combo))}
        out.append({k: base[k] for k in axes})
        for k in varied:
            out += [{**{a: base[a] for a in axes}, k: v} for v in axes[k] if v != ref[k]]
    return out


def _check_resources(r: dict) -> None:
    for k in ("num_cpus", "max_retries"):
        if not isinstance(r[k], (int, float)) or isinstance(r[k], bool) or r[k] < 0:
            raise TicketkitError(f"sweep.{k}: must be a non-negative number, got {r[k]!r}")
    if r["num_gpus"] is not None and (not isinstance(r["num_gpus"], (int, float)) or r["num_gpus"] < 0):
        raise TicketkitError(f"sweep.num_gpus: must be a non-negative number, got {r['num_gpus']!r}")


def _transfer_cells(finds: list[Cell], targets: list, transfer_hp: dict) -> list[Cell]:
    """One transfer per magnitude-pruned source ticket and target dataset. Random controls on the target are the
    transfer's own `controls` arms, so control find cells are not transferred again. A target equal to the
    source's dataset is not a transfer and is skipped. Like `ticketkit transfer --recipe`, the transfer trains
    with the source cell's [train] settings and subsample unless [transfer] sets its own, and its seed is the
    source cell's seed unless [transfer] seeds says otherwise."""
    try:
        from ..transfer import TransferConfig
    except ImportError as e:
        raise TicketkitError(f"sweep.transfer needs the transfer module (ticketkit.transfer): {e}") from None
    from ..data import DATASETS

    if not isinstance(transfer_hp, dict):
        raise TicketkitError(f"transfer: expected a table, got {type(transfer_hp).__name__}")
    for t in targets:
        if t not in DATASETS:
            raise TicketkitError(f"sweep.transfer: unknown target dataset {t!r}; choose from {sorted(DATASETS)}")
    out = []
    for src in finds:
        if src.config["prune"]["control"] != "none":
            continue
        for t in targets:
            if t == src.config["data"]["dataset"]:
                continue
            data = src.config["data"]
            hp = {"seeds": [src.config["seed"]], "train": src.config["train"], "arch": src.config["model"]["arch"],
                  **{k: data[k] for k in ("max_train", "max_test", "val_fraction")}, **transfer_hp, "target": t}
            try:
                tc = TransferConfig.from_dict(hp).validate()
            except TicketkitError as e:
                raise TicketkitError(f"sweep transfer cell ({src.id} -> {t}) is invalid: {e}") from None
            # The transfer run's own name hashes its source tickets' bytes, known only once the source has run, so
            # the cell is named for the source cell and the settings; its status file records the run's path.
            h = config_hash({"source": src.id, "settings": tc.hashed()})
            cid = f"transfer-{src.config['data']['dataset']}-{t}-{src.config['model']['arch']}-{h}"
            out.append(Cell(cid, "transfer", tc.to_dict(), {**src.axes, "transfer": t}, deps=[src.id], source=src.id))
    return out
