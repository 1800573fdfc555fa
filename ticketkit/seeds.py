"""Independent replicates: N lottery-ticket searches that differ only in their seed.

    find_seeds(FindConfig(...), 3) -> [Run, Run, Run]      # seeds cfg.seed, cfg.seed + 1, cfg.seed + 2

A seed replicates the whole experiment: it draws the initial weights, the subsample and the validation split, the
data order and the dropout masks of every training of the search (FindConfig.seed drives all four), so an interval
over these runs covers every source of randomness, not just training noise. Each seed is an ordinary run with its
own name (the seed is part of the hashed config), reused when it already finished. On a CPU the searches can run
in worker processes, one thread each (`workers`); on a GPU (or when `stacked=True`) they train as one stacked model in
lockstep (ticketkit.stacked_find).
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import sys
from dataclasses import replace
from pathlib import Path

from .config import FindConfig
from .errors import TicketkitError


def seed_list(first: int, n: int) -> list[int]:
    if n < 1:
        raise TicketkitError(f"--n-seeds must be at least 1, got {n}")
    return list(range(first, first + n))


def _worker_init() -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C; finished levels are kept either way
    torch.set_num_threads(1)
    from .workers import exit_with_parent

    exit_with_parent()


def _find_job(cfg_dict: dict, data_dir, store_root: str, command) -> str:
    from .find import find_ticket

    return str(find_ticket(FindConfig.from_dict(cfg_dict), data_dir=data_dir, store=store_root, progress=False,
                           command=command).path)


def find_seeds(config: FindConfig, seeds: int | list[int], *, workers: int = 1, data_dir=None, store=None,
               progress: bool = True, command: str | None = None, device=None, stop_flag=None,
               stacked: bool | None = None) -> list:
    """Run (or reuse) one search per seed; returns their Runs in seed order. `stacked`: None picks the stacked
    lockstep on a CUDA device only, True forces it (any device), False never (ticketkit.stacked_find.use_stacked)."""
    from .find import Run, find_ticket
    from .store import Store

    cfg = config.validate()
    seeds = seed_list(cfg.seed, seeds) if isinstance(seeds, int) else list(seeds)
    cfgs = [replace(cfg, seed=s).validate() for s in seeds]
    store = store if isinstance(store, Store) else Store(store)
    store.ensure()
    from .stacked_find import find_stacked, use_stacked

    if use_stacked(cfg.model.arch, len(cfgs), device, stacked, progress):
        if workers > 1 and progress:
            print(f"stacked seeds train in this process; --workers {workers} is not used", file=sys.stderr, flush=True)
        return find_stacked(cfgs, data_dir=data_dir, store=store, progress=progress, command=command, device=device,
                            stop_flag=stop_flag)
    if workers <= 1 or len(cfgs) == 1:
        return [find_ticket(c, data_dir=data_dir, store=store, progress=progress, command=command, device=device,
                            stop_flag=stop_flag) for c in cfgs]
    from .log import log
    from .progress import Overall
    from .threads import cap_workers

    workers = cap_workers(workers, lambda m: log(progress, m))
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(min(workers, len(cfgs)), mp_context=ctx, initializer=_worker_init) as pool:
        futs = [pool.submit(_find_job, c.to_dict(), str(data_dir) if data_dir else None, str(store.root), command)
                for c in cfgs]
        paths = []
        overall = Overall("search", len(cfgs), progress)
        for c, f in zip(cfgs, futs):
            paths.append(Path(f.result()))
            log(progress, f"seed {c.seed}: {paths[-1].name} done")
            overall.step(len(paths))
    return [Run(p) for p in paths]
