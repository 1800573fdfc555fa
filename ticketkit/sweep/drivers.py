"""Running a sweep's cells: in this process, in N spawned worker processes, or as Ray tasks. A dependency (a control
on its magnitude run, a transfer on its source) is a future locally and an ObjectRef on Ray: the scheduler is
concurrent.futures' or Ray's, not ours."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import TicketkitError
from ..fsio import read_json, write_json
from ..log import one_line
from ..report.sweep import summarize
from ..store import Store
from .cell import _push_available, execute_cell
from .grid import Cell, expand, load_sweep_recipe
from .live import LiveView
from .state import _run_done, cell_file, cell_states, mirror, pushed, pushed_to, run_path, write_sweep

# Every native thread pool of a local worker gets the cell's threads (see _run_pool).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")


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
    path = str(recipe) if isinstance(recipe, (str, os.PathLike)) else None
    sweep = expand(load_sweep_recipe(recipe, quick), path, quick)
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
        todo = [c for c in sweep.cells if not _run_done(root, c.to_dict()) or (push and not pushed(sd, c))]
        done = {c.id: {"id": c.id, "status": "done", "run": str(run_path(root, c.to_dict())), "pushed": pushed_to(sd, c)}
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


def _run_pool(todo, done, args, push, workers, view, threads):
    """N spawned worker processes; a cell is submitted once its dependencies' futures have finished."""
    waiting = list(todo)
    running: dict = {}
    # Every native thread pool of a worker (OpenMP, MKL, OpenBLAS, the tokenizer's rayon), not only torch's, gets
    # `threads`, as Ray does for its workers: N workers x all cores each would oversubscribe the machine. The
    # spawned children read these when they start, so they are set around the pool's lifetime only.
    from ..threads import ENV, SET_HERE, cap_workers, share

    workers = cap_workers(workers, lambda m: print(m, file=sys.stderr, flush=True))
    saved = {k: os.environ.get(k) for k in (*THREAD_ENV, ENV)}
    os.environ.update({k: str(threads) for k in THREAD_ENV if saved[k] is None or k in SET_HERE})
    os.environ[ENV] = str(share(workers))  # a transfer cell's own workers are capped at the cell's share
    try:
        _pool_loop(waiting, running, done, args, push, workers, view, threads)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _pool_loop(waiting, running, done, args, push, workers, view, threads):
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from ..workers import exit_with_parent

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=exit_with_parent) as ex:
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
    res = {"id": c.id, "kind": c.kind, "status": "failed", "run": None, "error": f"worker lost: {one_line(e)}"}
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
                raise TicketkitError(f"cannot reach a Ray cluster at {address!r} ({one_line(e)}): start one with "
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
                    mirror(args[0], done[c.id])
                except ray.exceptions.RayError as e:  # the task's worker died max_retries + 1 times
                    done[c.id] = _driver_failed(args[0], c, e)
            view.refresh()
    finally:
        if started:
            ray.shutdown()


def _cuda_present(ray) -> bool:
    """A GPU per cell where the cluster has GPUs (or, before it reports, where this machine has CUDA)."""
    if ray.cluster_resources().get("GPU", 0) > 0:
        return True
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False
