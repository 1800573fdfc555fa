"""How a transfer's cells train: one by one in this process, in worker processes, or a level's arms as one stacked
model (ticketkit.arms). Every executor gives the same results (stacked: up to floating-point rounding), and the
parent process alone records them (`_Transfer.record`, which `Executors` expects beside it).

In this process masks and weights go to the training as they are; only worker processes get them serialised (as
numpy arrays: plain buffers, where a tensor sent to a process would go through shared-memory file handles).
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from pathlib import Path

import numpy as np
import torch

from ..config import FindConfig, ModelHparams, TrainHparams
from ..data import Encoded
from ..find import Run, find_ticket
from ..fsio import write_with
from ..log import log as _log
from ..models import create_model, model_kwargs, supports
from ..prune import masked_state
from ..train import train
from .cells import _Cell, _digest

# Worker-process state: the encoded data is loaded once per worker, the stop event is shared with the parent.
_W: dict = {}


def _worker_init(stop_event) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into stop_event: finish the epoch, stop
    torch.set_num_threads(1)
    from ..workers import exit_with_parent

    exit_with_parent()  # a SIGKILLed parent leaves no worker training for nobody
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


def _np(state: dict) -> dict:
    return {k: v.detach().cpu().contiguous().numpy() for k, v in state.items()}


def _tensors(state: dict) -> dict:
    """A job's masks or weights as tensors: as they are in this process, from numpy in a worker."""
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}


def _train_job(job: dict, data: dict | None = None, stop_flag=None, progress: bool = False, device=None) -> dict:
    """One training: the model from `job`'s starting weights under its masks, on the target data, seed job['seed']."""
    data = data or _worker_data(job["data_file"])
    stop_flag = stop_flag or _W.get("stop")
    hp = ModelHparams(**job["model"])
    model = create_model(hp.arch, job["vocab_size"], seed=None, **model_kwargs(hp))
    masks, start = _tensors(job["masks"]), _tensors(job["start"])
    model.load_state_dict(masked_state(start, masks))
    res = train(model, masks, data["train"], data["val"], data["test"], TrainHparams(**job["train"]), job["seed"],
                device=device, checkpoint=Path(job["checkpoint"]), progress=progress, desc=job["desc"],
                stop_flag=stop_flag)
    Path(job["checkpoint"]).unlink(missing_ok=True)
    return _result_metrics(res)


def _result_metrics(res) -> dict:
    return {"test_accuracy": res.test["accuracy"], "test_macro_f1": res.test["macro_f1"],
            "val_accuracy": res.val["accuracy"], "val_loss": res.val["loss"], "test_loss": res.test["loss"],
            "epochs": res.epochs, "best_epoch": res.best_epoch, "seconds": round(res.seconds, 2), **res.diagnostics}


def _fresh_job(cfg_dict: dict, data_dir, store_root: str, tokenizer_from: str) -> str:
    run = find_ticket(FindConfig.from_dict(cfg_dict), data_dir=data_dir, store=store_root, progress=False,
                      command=None, stop_flag=_W.get("stop"), tokenizer_from=tokenizer_from)
    return str(run.path)


class Executors:
    """The three ways to train a queue of cells, as methods of `_Transfer` (ticketkit.transfer.experiment)."""

    def stacked(self) -> bool:
        """Whether the arms of a level train as one stacked model: "auto" means on an accelerator only, and only
        for an architecture that has a stacked form (models.supports); another trains its arms one by one."""
        from ..train import default_device

        dev = torch.device(self.device) if self.device is not None else default_device()
        on = self.cfg.batch_arms == "yes" or (self.cfg.batch_arms == "auto" and dev.type != "cpu")
        if on and not supports(self.src.arch, "stacked"):
            if self.cfg.batch_arms == "yes":
                _log(self.progress, f"[{self.name}] {self.src.arch} has no stacked form: its arms train one by one")
            return False
        if on and self.cfg.workers > 1:
            _log(self.progress, f"[{self.name}] arms of a level train as one stacked model in this process "
                                f"(batch_arms={self.cfg.batch_arms}); workers={self.cfg.workers} is not used")
        return on

    def serial(self, queue: list[_Cell]) -> None:
        for cell in queue:
            masks, start = self.build(cell)
            dg = _digest(masks, start)
            if self._reuse(cell, masks, start, dg):
                continue
            m = _train_job(self.job(cell, masks, start, dg), self.data, self.stop_flag, self.progress, self.device)
            self.record(cell, masks, start, dg, m)
            self.by_digest[(dg, cell.seed)] = {**m, "arm": cell.arm, "level": cell.level}

    def together(self, queue: list[_Cell]) -> None:
        """Each (level, seed)'s unfinished cells in one stacked training (ticketkit.arms.train_arms); cells that are
        bit-identical to a finished training, or to another cell of the group, are recorded from it."""
        import time

        from ..arms import train_arms

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
                    job = {**self.job(cell, masks, start, dg), "masks": _np(masks), "start": _np(start),
                           "data_file": str(data_file)}
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

    def _fresh_serial(self, fresh_cfg: FindConfig) -> Run:
        _log(self.progress, f"[{self.name}] fresh arm: iterative magnitude pruning on {self.cfg.target} from the same "
                            f"init, under the {self.src.dataset} vocabulary ({fresh_cfg.prune.n_rounds()} rounds)")
        return find_ticket(fresh_cfg, data_dir=self.data_dir, store=self.store, progress=self.progress, command=None,
                           device=self.device, stop_flag=self.stop_flag, tokenizer_from=self.src.tokenizer_path)

