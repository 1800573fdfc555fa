"""Sweeps: a grid of conditions x seeds x datasets, each cell one `find` or `transfer` run, on this machine or Ray.

    run_sweep("recipes/seed_study.toml", quick=True)                     # local, one cell after another
    run_sweep("recipes/seed_study.toml", workers=2)                      # local, 2 worker processes
    run_sweep("recipes/seed_study.toml", ray="auto")                     # every cell a Ray task

A sweep recipe is a find recipe ([data], [model], [train], [prune]) plus a [sweep] table of axes, an optional
[transfer] table (the transfer settings) and a [quick] table merged over everything by `--quick`. Each cell is
exactly the run `find`/`transfer` would make with those settings, hash-named as usual, so a finished cell is
reused, never run twice. Dependencies (a random control on its magnitude run, a transfer on its source ticket)
are futures locally and ObjectRefs on Ray: the scheduler is Ray's (or concurrent.futures'), not ours.

State lives in the store, so it survives the driver and can be read from any shell:

    sweep-<hash>/sweep.json          the recipe and the cells (written by the driver only)
    sweep-<hash>/cells/<cell>.json   pending/running/done/failed, error, run path (written by whoever runs the cell)
"""
from __future__ import annotations

import copy
import itertools
import os
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import FindConfig, config_hash, from_dict, load_recipe, merge, set_path
from .errors import TicketkitError
from .fsio import read_json, write_json, write_text
from .store import Store

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
SWEEP_KEYS = {"transfer", "exclude", "num_cpus", "num_gpus", "max_retries"}
STATES = ("done", "running", "failed", "pending")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")


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


# ============================================================================ the grid
def load_sweep_recipe(path: str | os.PathLike, quick: bool = False) -> dict:
    d = load_recipe(path)
    q = d.pop("quick", None)
    if quick:
        if q is None:
            raise TicketkitError(f"{path} has no [quick] table: add one (e.g. [quick.data] max_train = 2000) or drop --quick")
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
    for combo in itertools.product(*axes.values()):
        point = dict(zip(axes, combo))
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
        from .transfer import TransferConfig
    except ImportError as e:
        raise TicketkitError(f"sweep.transfer needs the transfer module (ticketkit.transfer): {e}") from None
    from .data import DATASETS

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


# ============================================================================ state on disk
def cell_file(sweep_dir: Path, cid: str) -> Path:
    return Path(sweep_dir) / "cells" / f"{cid}.json"


def write_sweep(sweep: Sweep, store: Store) -> Path:
    """The driver's one file. Its content is a function of the recipe, so two drivers write the same bytes."""
    sd = store.run_dir(sweep.name)
    (sd / "cells").mkdir(parents=True, exist_ok=True)
    info = {"ticketkit": "sweep", "name": sweep.name, "recipe_path": sweep.recipe_path, "quick": sweep.quick,
            "recipe": sweep.recipe, "resources": sweep.resources, "cells": [c.to_dict() for c in sweep.cells]}
    if not (sd / "sweep.json").exists() or read_json(sd / "sweep.json") != info:
        write_json(sd / "sweep.json", info)
    return sd


def _run_done(store_root: Path, cell: dict) -> bool:
    """The store is the truth: a cell is done when its run is complete there, whoever ran it."""
    path = run_path(store_root, cell)
    if path is None:
        return False
    try:
        info = read_json(path / ("run.json" if cell["kind"] == "find" else "results.json"))
    except TicketkitError:
        return False
    return info.get("status") == "complete"


def run_path(store_root: Path, cell: dict) -> Path | None:
    """Where the cell's run is (or will be). A transfer's name depends on its source tickets' contents, so it is
    known once the source find is complete (None before)."""
    if cell["kind"] == "find":
        return Path(store_root) / cell["id"]
    src = Path(store_root) / cell["source"]
    try:
        if read_json(src / "run.json").get("status") != "complete":
            return None
        from .transfer import TransferConfig, resolve_source

        tc = TransferConfig.from_dict(cell["config"])
        return Path(store_root) / tc.run_name(resolve_source(str(src), Store(store_root), tc.target))
    except (TicketkitError, ImportError):
        return None


def cell_states(sweep_dir: Path) -> list[dict]:
    """Every cell's state, read from the files: works from any shell, during or after a sweep."""
    sweep_dir = Path(sweep_dir)
    info = read_json(sweep_dir / "sweep.json")
    store_root = sweep_dir.parent
    out = []
    for c in info["cells"]:
        f = cell_file(sweep_dir, c["id"])
        st = {"status": "pending"}
        if f.exists():
            try:
                st = read_json(f)
            except TicketkitError as e:
                st = {"status": "pending", "error": str(e)}
        if st.get("status") != "done" and _run_done(store_root, c):
            st = {**st, "status": "done", "run": str(run_path(store_root, c)), "error": None}
        if st.get("status") == "running" and _stale(st):
            st = {**st, "status": "pending", "error": "interrupted (its process is gone): a rerun retries it"}
        out.append({"id": c["id"], "kind": c["kind"], "axes": c["axes"], "deps": c["deps"], **st})
    return out


def _stale(st: dict) -> bool:
    """A 'running' cell whose process (on this host) no longer exists was interrupted."""
    if st.get("host") != socket.gethostname() or not st.get("pid"):
        return False
    try:
        os.kill(int(st["pid"]), 0)
        return False
    except ProcessLookupError:
        return True
    except PermissionError:
        return False


def resolve_sweep(ref: str, store=None) -> Path:
    """A sweep directory from its path, its name in the store, or a unique prefix of the name."""
    p = Path(ref)
    if (p / "sweep.json").exists():
        return p
    st = Store(store)
    cands = [d for d in (st.root.iterdir() if st.root.is_dir() else []) if (d / "sweep.json").exists()
             and (d.name == ref or d.name.startswith(ref) or d.name == f"sweep-{ref}")]
    if len(cands) == 1:
        return cands[0]
    if len(cands) > 1:
        raise TicketkitError(f"{ref!r} matches {len(cands)} sweeps in {st.root}: give more of the name ({cands[0].name}, ...)")
    raise TicketkitError(f"no sweep called {ref!r}: pass a sweep-<hash> directory, or its name with --store DIR")


def summarize(states: list[dict]) -> dict:
    counts = {s: sum(1 for c in states if c["status"] == s) for s in STATES}
    return {"total": len(states), **counts}


# ============================================================================ one cell (runs in a worker)
def execute_cell(cell: dict, sweep_dir: str, store_root: str, data_dir: str | None, threads: int | None,
                 push: str | None, *deps: dict) -> dict:
    """Run one cell and record its state. Never raises for the cell's own errors: a failure is a result, so the
    rest of the sweep goes on (and a Ray dependent receives it as a value). `deps` are the results of the cells
    this one waits for: on Ray they arrive through ObjectRefs, so the task starts only once they are done."""
    sf = cell_file(Path(sweep_dir), cell["id"])
    base = {"id": cell["id"], "kind": cell["kind"], "host": socket.gethostname(), "pid": os.getpid()}
    if threads:
        import torch

        torch.set_num_threads(int(threads))  # one worker = its own cores; no oversubscription
    rd = run_path(Path(store_root), cell) or Path(store_root) / cell["id"]
    if _run_done(Path(store_root), cell):
        old = read_json(sf) if sf.exists() else {}
        res = {**base, "status": "done", "run": str(rd), "error": None, "reused": True,
               **({"pushed": old["pushed"]} if old.get("pushed") else {})}
        if push and not old.get("pushed"):  # finished earlier, not yet on the Hub
            try:
                res["pushed"] = _push(rd, push, cell["kind"])
            except Exception as e:  # noqa: BLE001
                res = {**res, "status": "failed", "error": f"push failed: {_one_line(e)}"}
        if old.get("status") != res["status"] or res.get("pushed") != old.get("pushed"):
            write_json(sf, res)
        return res
    bad = [d for d in deps if d.get("status") != "done"]
    if bad:
        res = {**base, "status": "failed", "run": None, "error": f"needs {bad[0]['id']}, which failed: {bad[0].get('error')}"}
        write_json(sf, res)
        return res
    t0 = time.time()
    write_json(sf, {**base, "status": "running", "run": str(rd), "error": None,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    try:
        if cell["kind"] == "find":
            from .find import find_ticket

            rd = find_ticket(FindConfig.from_dict(cell["config"]), data_dir=data_dir, store=store_root,
                             progress=False, command=f"ticketkit sweep ({Path(sweep_dir).name})").path
        else:
            from .transfer import TransferConfig, transfer_ticket

            src = next(d for d in deps if d["id"] == cell["source"])  # the source's result, through the dependency
            ref = src["run"]
            if not Path(ref).exists() and src.get("pushed"):  # no shared filesystem: take the source from the Hub
                ref = f"hf://{src['pushed']}"
            rd = transfer_ticket(ref, TransferConfig.from_dict(cell["config"]), data_dir=data_dir, store=store_root,
                                 progress=False, command=f"ticketkit sweep ({Path(sweep_dir).name})").path
        pushed = _push(rd, push, cell["kind"]) if push else None
        res = {**base, "status": "done", "run": str(rd), "error": None, "seconds": round(time.time() - t0, 2),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **({"pushed": pushed} if pushed else {})}
    except KeyboardInterrupt:
        write_json(sf, {**base, "status": "pending", "run": None, "error": "interrupted: a rerun retries it"})
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one cell is recorded, and the sweep goes on
        res = {**base, "status": "failed", "run": None, "error": _one_line(e), "seconds": round(time.time() - t0, 2),
               "traceback": traceback.format_exc()}
    write_json(sf, res)
    return res


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return msg if isinstance(e, TicketkitError) else f"{type(e).__name__}: {msg}".rstrip(": ")


def hub_repo(spec: str, cell_id: str) -> str:
    """hf://org/tickets -> one repo per cell, org/tickets-<cell>: a Hub push owns its repo's files, so cells
    sharing one repo would replace each other."""
    org, _, prefix = spec.strip("/").partition("/")
    return f"{org}/{prefix + '-' if prefix else ''}{cell_id}"


def _push(run_dir: Path, spec: str, kind: str):
    """Push a finished find cell (its whole run) to the Hub; transfer cells hold results, not tickets."""
    if kind != "find":
        return None
    from .hub import push

    repo = hub_repo(spec, Path(run_dir).name)
    push(str(run_dir), repo, store=str(Path(run_dir).parent))
    return repo


# ============================================================================ the drivers
@dataclass
class SweepResult:
    path: Path
    states: list[dict]
    seconds: float

    @property
    def counts(self) -> dict:
        return summarize(self.states)


def run_sweep(recipe, *, quick: bool = False, store=None, data_dir=None, workers: int = 1, ray: str | None = None,
              progress: bool = True, threads: int | None = None, num_cpus: float | None = None) -> SweepResult:
    """Expand the recipe (a path, or an already-loaded dict), then run every cell that is not done yet.

    ray=None: local backend (in this process when workers == 1, else `workers` spawned processes).
    ray='local' starts a Ray instance here (`workers` CPUs); 'auto' or an address joins a running cluster.
    store='hf://org/repo' keeps the work in the local store and pushes each finished cell to that Hub repo.
    threads: torch threads per cell (default: untouched in-process, 1 per local worker, num_cpus on Ray)."""
    if isinstance(recipe, (str, os.PathLike)):
        sweep = expand(load_sweep_recipe(recipe, quick), str(recipe), quick)
    else:
        sweep = expand(load_sweep_recipe_dict(recipe, quick), None, quick)
    push = None
    if isinstance(store, str) and store.startswith("hf://"):
        push, store = store[5:], None
        _push_available(push)
    st = Store(store).ensure()
    root = st.root.resolve()  # workers may run elsewhere (Ray): every path they get is absolute
    data_dir = str(Path(data_dir).resolve()) if data_dir else None
    if workers < 1:
        raise TicketkitError(f"--workers must be at least 1, got {workers}")
    sd = write_sweep(sweep, st).resolve()
    t0 = time.time()
    view = LiveView(sd, progress)
    try:
        todo = [c for c in sweep.cells if not _run_done(root, c.to_dict()) or (push and not _pushed(sd, c))]
        done = {c.id: {"id": c.id, "status": "done", "run": str(run_path(root, c.to_dict())), "pushed": _pushed_to(sd, c)}
                for c in sweep.cells if c not in todo}
        for c in sweep.cells:  # cells done before (by this sweep or anyone with the same settings) are marked so
            if c.id in done and (not cell_file(sd, c.id).exists() or read_json(cell_file(sd, c.id)).get("status") != "done"):
                write_json(cell_file(sd, c.id), {**{k: v for k, v in done[c.id].items() if v is not None},
                                                 "kind": c.kind, "error": None, "reused": True})
        view.start()
        args = (str(sd), str(root), data_dir)
        if not todo:
            pass
        elif ray:
            _run_ray(sweep, todo, done, args, push, ray, workers, view, threads, num_cpus)
        elif workers > 1:
            _run_pool(todo, done, args, push, workers, view, threads or 1)
        else:
            for c in todo:
                view.refresh(running=c.id)
                done[c.id] = execute_cell(c.to_dict(), *args, threads, push, *[done[d] for d in c.deps])
                view.refresh()
    finally:
        view.close()
    return SweepResult(sd, cell_states(sd), time.time() - t0)


def _pushed(sd: Path, c: Cell) -> bool:
    return c.kind != "find" or bool(_pushed_to(sd, c))


def _pushed_to(sd: Path, c: Cell) -> str | None:
    f = cell_file(sd, c.id)
    return read_json(f).get("pushed") if f.exists() else None


def load_sweep_recipe_dict(d: dict, quick: bool) -> dict:
    d = dict(d)
    q = d.pop("quick", None)
    if quick and q:
        d = merge(d, q)
    return d


def _push_available(spec: str) -> None:
    """Fail before any training: no Hub module, a bad org name or no token would only show after the first cell."""
    try:
        from . import hub
    except ImportError as e:
        raise TicketkitError(f"--store hf://... pushes finished cells with ticketkit.hub, which is not available: {e}") from None
    org, _, prefix = spec.strip("/").partition("/")
    if not org or "/" in prefix:
        raise TicketkitError(f"--store hf://{spec}: expected hf://ORG or hf://ORG/PREFIX (each cell goes to ORG/PREFIX-<cell>)")
    hub.parse_spec(hub_repo(spec, "find-imdb-cnn-000000000000"))
    hub.require_token()


def _run_pool(todo, done, args, push, workers, view, threads):
    """N spawned worker processes; a cell is submitted once its dependencies' futures have finished."""
    waiting = list(todo)
    running: dict = {}
    # Every native thread pool of a worker (OpenMP, MKL, OpenBLAS, the tokenizer's rayon), not only torch's, gets
    # `threads`, as Ray does for its workers: N workers x all cores each would oversubscribe the machine. The
    # spawned children read these when they start, so they are set around the pool's lifetime only.
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update({k: str(threads) for k in THREAD_ENV if saved[k] is None})
    try:
        _pool_loop(waiting, running, done, args, push, workers, view, threads)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


def _pool_loop(waiting, running, done, args, push, workers, view, threads):
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        while waiting or running:
            for c in [c for c in waiting if all(d in done for d in c.deps)]:
                running[ex.submit(execute_cell, c.to_dict(), *args, threads, push, *[done[d] for d in c.deps])] = c
                waiting.remove(c)
            finished, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
            for f in finished:
                c = running.pop(f)
                try:
                    done[c.id] = f.result()
                except Exception as e:  # noqa: BLE001 - the worker process died (killed, out of memory)
                    done[c.id] = _driver_failed(args[0], c, e)
            view.refresh()


def _driver_failed(sweep_dir: str, c: Cell, e: BaseException) -> dict:
    """The worker died without recording its end: only then does the driver write the cell's file."""
    res = {"id": c.id, "kind": c.kind, "status": "failed", "run": None, "error": f"worker lost: {_one_line(e)}"}
    write_json(cell_file(Path(sweep_dir), c.id), res)
    return res


def _run_ray(sweep, todo, done, args, push, address, workers, view, threads, num_cpus):
    try:
        import ray
    except ImportError:
        raise TicketkitError("--ray needs Ray: pip install 'ticketkit[ray]'") from None
    started = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=workers if workers > 1 else None, include_dashboard=False, log_to_driver=False)
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise TicketkitError(f"cannot reach a Ray cluster at {address!r} ({_one_line(e)}): start one with "
                                     f"`ray start --head`, or pass --ray local") from None
        started = True
    try:
        cpus = num_cpus or sweep.resources["num_cpus"] or 1
        gpus = sweep.resources["num_gpus"]
        if gpus is None:
            gpus = 1 if _cuda_present(ray) else 0
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=int(sweep.resources["max_retries"]))(execute_cell)
        refs: dict = {}
        for c in todo:  # dependency order: a dependency's ObjectRef exists before its dependents are submitted
            dep_args = [refs.get(d, done.get(d)) for d in c.deps]
            refs[c.id] = task.options(name=c.id).remote(c.to_dict(), *args, threads or max(1, int(cpus)), push, *dep_args)
        cell_of = {r: c for c, r in ((sweep.cell(cid), r) for cid, r in refs.items())}
        pending = list(refs.values())
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            for r in ready:
                c = cell_of[r]
                try:
                    done[c.id] = ray.get(r)
                    _mirror(args[0], done[c.id])
                except ray.exceptions.RayError as e:  # the task's worker died max_retries + 1 times
                    done[c.id] = _driver_failed(args[0], c, e)
            view.refresh()
    finally:
        if started:
            ray.shutdown()


def _mirror(sweep_dir: str, res: dict) -> None:
    """With no shared filesystem (--store hf://...), a worker on another node wrote the cell's file on its own
    disk: the driver, the only one who sees this copy, records the result it received."""
    f = cell_file(Path(sweep_dir), res["id"])
    try:
        same = f.exists() and read_json(f).get("status") == res["status"]
    except TicketkitError:
        same = False
    if not same:
        write_json(f, res)


def _cuda_present(ray) -> bool:
    """A GPU per cell where the cluster has GPUs (or, before it reports, where this machine has CUDA)."""
    if ray.cluster_resources().get("GPU", 0) > 0:
        return True
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


# ============================================================================ the live view
class LiveView:
    """One progress bar over cells: done/total, the running cells, and each failure with its one-line error.
    It reads the same files as `sweep status`, so it shows what workers anywhere have recorded."""

    def __init__(self, sweep_dir: Path, enabled: bool):
        self.sd, self.enabled, self.bar, self.reported = sweep_dir, enabled, None, set()

    def start(self) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        states = cell_states(self.sd)
        self.bar = tqdm(total=len(states), desc=self.sd.name, unit="cell", file=sys.stderr, dynamic_ncols=True)
        self.reported = {c["id"] for c in states if c["status"] == "failed"}
        self.refresh(states)

    def refresh(self, states: list[dict] | None = None, running: str | None = None) -> None:
        if self.bar is None:
            return
        states = states or cell_states(self.sd)
        s = summarize(states)
        self.bar.n = s["done"]
        running = [c["id"] for c in states if c["status"] == "running" or c["id"] == running]
        names = ", ".join(running[:2]) + (f" +{len(running) - 2}" if len(running) > 2 else "")
        self.bar.set_postfix_str(f"running {len(running)}{': ' + names if running else ''} | failed {s['failed']}",
                                 refresh=False)
        for c in states:
            if c["status"] == "failed" and c["id"] not in self.reported:
                self.reported.add(c["id"])
                self.bar.write(f"FAILED {c['id']}: {c.get('error')}")
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.refresh()
            self.bar.close()


# ============================================================================ status and report
def status_table(sweep_dir: Path) -> str:
    """One line per cell, then every failure (or interruption) with its full one-line error."""
    from .report import format_table

    states = cell_states(sweep_dir)
    s = summarize(states)
    rows = [[c["id"], c["kind"], c["status"], _axes_str(c["axes"]),
             f"{c['seconds']:.0f}" if c.get("seconds") is not None else ""] for c in states]
    head = f"{Path(sweep_dir).name}: {s['done']}/{s['total']} done, {s['running']} running, {s['failed']} failed, {s['pending']} pending"
    errors = [f"  {c['id']} ({c['status']}): {c['error']}" for c in states if c.get("error") and c["status"] != "done"]
    return "\n".join([head, format_table(["cell", "kind", "status", "axes", "seconds"], rows)]
                     + (["errors:", *errors] if errors else []))


def _axes_str(axes: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in axes.items())


def report_sweep(sweep_dir, out: Path | None = None) -> Path:
    """One report over all cells: report.md (per-condition means over seeds, then every cell) and cells.csv
    (one row per find level / transfer row). Returns the report's path."""
    import csv
    import io
    import statistics

    sd = Path(sweep_dir)
    states = cell_states(sd)
    out = Path(out) if out else sd
    rows, table = [], []
    for c in states:
        if c["status"] != "done":
            table.append([c["id"], c["status"], _axes_str(c["axes"]), "", "", "", (c.get("error") or "")[:80]])
            continue
        run = Path(c.get("run") or sd.parent / c["id"])
        for r in _cell_rows(c, run):
            rows.append({"cell": c["id"], "kind": c["kind"], **{f"axis_{k}": v for k, v in c["axes"].items()}, **r})
        last = _main_rows([r for r in rows if r["cell"] == c["id"]])
        if last:
            table.append([c["id"], "done", _axes_str(c["axes"]), f"{last[0]['test_accuracy'] * 100:.2f}",
                          f"{last[-1]['density_prunable'] * 100:.2f}", f"{last[-1]['test_accuracy'] * 100:.2f}", ""])
    from .report import format_table

    # Per condition (all axes but the seed): the sparsest level's test accuracy, mean and spread over seeds.
    groups: dict = {}
    for c in states:
        if c["status"] != "done":
            continue
        cr = _main_rows([r for r in rows if r["cell"] == c["id"]])
        if not cr:
            continue
        key = _axes_str({k: v for k, v in c["axes"].items() if k != "seed"}) or "(one condition)"
        groups.setdefault(key, []).append((cr[0]["test_accuracy"], cr[-1]["test_accuracy"], cr[-1]["density_prunable"]))
    cond = []
    for key, v in sorted(groups.items()):
        dense, sparse = [x[0] for x in v], [x[1] for x in v]
        sd_ = statistics.stdev(sparse) * 100 if len(sparse) > 1 else float("nan")
        cond.append([key, len(v), f"{statistics.mean(dense) * 100:.2f}", f"{statistics.mean([x[2] for x in v]) * 100:.2f}",
                     f"{statistics.mean(sparse) * 100:.2f}", f"{sd_:.2f}"])
    s = summarize(states)
    md = [f"# Sweep {sd.name}", "",
          f"{s['done']}/{s['total']} cells done, {s['failed']} failed, {s['running']} running, {s['pending']} pending.", "",
          "## Conditions (over seeds)", "",
          "Test accuracy of the first row (dense level, or the transfer's first row) and of the sparsest row, "
          "mean over the seeds that finished; sd is the sample standard deviation.", "", "```",
          format_table(["condition", "seeds", "dense acc", "% remaining", "sparsest acc", "sd"], cond) if cond else "(no finished cells)",
          "```", "", "## Cells", "", "```",
          format_table(["cell", "status", "axes", "first acc", "% remaining", "last acc", "error"], table), "```", ""]
    write_text(out / "report.md", "\n".join(md))
    cols = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("cell", "kind"), not k.startswith("axis_"), k))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(out / "cells.csv", buf.getvalue())
    return out / "report.md"


def _main_rows(rows: list[dict]) -> list[dict]:
    """A find's levels, or a transfer's transferred-ticket arm (its controls are in cells.csv), densest first."""
    return sorted([r for r in rows if r.get("arm") in (None, "transferred")], key=lambda r: -r["density_prunable"])


def _cell_rows(c: dict, run: Path) -> list[dict]:
    """Rows with at least density_prunable and test_accuracy: a find run's levels, or a transfer's results."""
    keep = ("level", "density_prunable", "density_all", "val_accuracy", "test_accuracy", "test_macro_f1", "best_epoch",
            "epochs", "seconds")
    if c["kind"] == "find":
        return [{k: r.get(k) for k in keep} for r in read_json(run / "run.json").get("levels", [])]
    return _transfer_rows(run)


def _transfer_rows(run: Path) -> list[dict]:
    """A transfer's rows (every arm, level and seed), densest first within each arm."""
    keep = ("arm", "level", "seed", "density_prunable", "density_all", "val_accuracy", "test_accuracy", "test_macro_f1",
            "best_epoch", "epochs", "seconds")
    rows = [{k: r.get(k) for k in keep} for r in read_json(run / "results.json").get("rows", [])]
    return sorted(rows, key=lambda r: (r["arm"] != "transferred", r["arm"], -r["density_prunable"], r["seed"]))
