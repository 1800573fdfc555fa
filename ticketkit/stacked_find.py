"""`find --seeds N` as one stacked model: the N searches advance level by level together (ticketkit.members).

Each seed's search is the ordinary `find_ticket` (same run directory, locks, resume, tickets, run.json), run in a
thread of its own whose trainings go through `Lockstep` instead of `ticketkit.train.train`: a training waits until
every search still running asks for one (or has finished), then all of them train as one stacked model, each with
its own data, data order, dropout stream and early stopping. Levels therefore advance in lockstep; a resumed search
that is further along simply trains its own level in the same stacked step. Only training is shared: pruning, tickets
and files are each search's own code path, so a stacked run's files are those of its sequential run, up to the float
rounding of stacked kernels (tests/test_stacked_seeds.py states what is exact and what is toleranced).

On a CPU stacking does not pay (ticketkit.arms), so `use_stacked` picks it only where CUDA is present, unless forced.
A training that has an in-level checkpoint (a killed sequential run) resumes from it on its own; a stacked training
writes no in-level checkpoints, so an interrupted stacked level is trained again (the result is the same).
"""
from __future__ import annotations

import threading

import torch

from .log import log as _log
from .members import NotStackable, has_member_form, train_members
from .models import model_kwargs
from .train import default_device, resolve_precision, train


def use_stacked(arch: str, n: int, device=None, stacked: bool | None = None, progress: bool = True) -> bool:
    """Whether N seeds train as one stacked model: `stacked` True/False forces it; None (auto) means only where the
    training device is a CUDA GPU. An architecture without a stacked form falls back to one-by-one (a log line)."""
    if n < 2 or stacked is False:
        return False
    dev = torch.device(device) if device is not None else default_device()
    want = stacked is True or dev.type == "cuda"
    if want and not has_member_form(arch):
        _log(progress, f"{arch} has no stacked form: its {n} seeds train one after another (or in worker processes)")
        return False
    return want


class Lockstep:
    """Gathers the trainings that N threads ask for and trains them together once every live thread has asked."""

    def __init__(self, n: int, arch: str, model_kw: dict, device=None, progress: bool = True):
        self.cond = threading.Condition(threading.RLock())  # also the turn: see find_stacked
        self.live, self.pending, self.results = n, {}, {}
        self.arch, self.model_kw, self.device, self.progress = arch, model_kw, device, progress
        self.rounds = 0  # stacked trainings run
        self.label = "stacked"  # recorded in each run.json as trained_by (find_stacked names the seeds)

    def trainer(self, i: int):
        def fn(model, masks, train_data, val_data, test_data, hp, seed, device=None, snapshots_at=(), checkpoint=None,
               progress=True, desc="train", stop_flag=None):
            req = dict(model=model, masks=masks, data=(train_data, val_data, test_data), hp=hp, seed=seed,
                       device=device, snapshots_at=tuple(snapshots_at), checkpoint=checkpoint, progress=progress,
                       desc=desc, stop_flag=stop_flag)
            with self.cond:
                self.pending[i] = req
                self._maybe_run()
                while i not in self.results:
                    self.cond.wait()
                ok, value = self.results.pop(i)
            if not ok:
                raise value
            return value
        fn.label = self.label
        return fn

    def done(self) -> None:
        with self.cond:
            self.live -= 1
            self._maybe_run()

    def _maybe_run(self) -> None:
        if not self.pending or len(self.pending) < self.live:
            return
        reqs, self.pending = self.pending, {}
        try:
            self._round(reqs)
        except BaseException as e:  # an interrupt (or a bug) reaches every waiting search
            for i in reqs:
                self.results.setdefault(i, (False, e))
        self.cond.notify_all()

    def _round(self, reqs: dict) -> None:
        together = {i: r for i, r in reqs.items() if not (r["checkpoint"] is not None and r["checkpoint"].exists())}
        alone = [i for i in reqs if i not in together]
        if len(together) == 1:  # the other searches finished (or reused a finished run): this one trains alone
            alone += list(together)
        elif together:
            order = sorted(together)
            rs = [together[i] for i in order]
            try:
                res = train_members(self.arch, self.model_kw,
                                    [{k: v.detach().cpu() for k, v in r["model"].state_dict().items()} for r in rs],
                                    [r["masks"] for r in rs], [r["data"] for r in rs], rs[0]["hp"],
                                    [r["seed"] for r in rs], device=rs[0]["device"] or self.device or default_device(),
                                    snapshots_at=[r["snapshots_at"] for r in rs], progress=self.progress,
                                    descs=[r["desc"] for r in rs], stop_flag=rs[0]["stop_flag"])
                self.rounds += 1
                for i, r, out in zip(order, rs, res):
                    r["model"].load_state_dict(out.best_state)  # as train() leaves its model at the best state
                    self.results[i] = (True, out)
            except NotStackable as e:
                _log(self.progress, f"stacked training not possible here ({e}): these trainings run one by one")
                alone += order
        for i in sorted(alone):
            r = reqs[i]
            try:
                out = train(r["model"], r["masks"], *r["data"], r["hp"], r["seed"], device=r["device"],
                            snapshots_at=r["snapshots_at"], checkpoint=r["checkpoint"], progress=r["progress"],
                            desc=r["desc"], stop_flag=r["stop_flag"])
                self.results[i] = (True, out)
            except Exception as e:  # a divergence is that search's alone
                self.results[i] = (False, e)


def find_stacked(cfgs: list, *, data_dir=None, store=None, progress: bool = True, command: str | None = None,
                 device=None, stop_flag=None, lockstep: Lockstep | None = None, tokenizer_from: list | None = None) -> list:
    """Run (or reuse) one search per config (same architecture and hyperparameters, different seeds) in lockstep.
    `tokenizer_from`: one tokenizer path (or None) per config, as `find_ticket` takes it (a transfer's fresh searches)."""
    from .find import find_ticket

    lock = lockstep or Lockstep(len(cfgs), cfgs[0].model.arch, model_kwargs(cfgs[0].model), device, progress)
    # each training stacks with whichever of these searches train at the same time (alone when the others are done)
    lock.label = f"stacked lockstep of seeds {', '.join(str(c.seed) for c in cfgs)}"
    dev = torch.device(device) if device is not None else default_device()
    if resolve_precision(cfgs[0].train.precision, dev) is not None:
        _log(progress, "note: under bf16 autocast the stacked kernels round differently from a single model's, so each "
                       "run equals its sequential run only statistically (in fp32, masks bit for bit)")
    runs: list = [None] * len(cfgs)
    errors: list = [None] * len(cfgs)

    def one(i: int) -> None:
        # One search runs at a time: each holds the lockstep's lock except while it waits for a training. Searches
        # touch process-global torch state (create_model seeds the global RNG and sets the thread count), so running
        # them truly concurrently would race on it; they gain nothing from it either (the trainings are the work).
        with lock.cond:
            try:
                runs[i] = find_ticket(cfgs[i], data_dir=data_dir, store=store, progress=progress, command=command,
                                      device=device, stop_flag=stop_flag, trainer=lock.trainer(i),
                                      tokenizer_from=tokenizer_from[i] if tokenizer_from else None)
            except BaseException as e:
                errors[i] = e
            finally:
                lock.done()

    _log(progress, f"{len(cfgs)} seeds of {cfgs[0].model.arch} train as one stacked model, level by level")
    # daemon: a second Ctrl-C ends the process without waiting for the searches (every file is written atomically)
    threads = [threading.Thread(target=one, args=(i,), name=f"ticketkit-seed-{c.seed}", daemon=True)
               for i, c in enumerate(cfgs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = next((e for e in errors if isinstance(e, KeyboardInterrupt)), None) or next((e for e in errors if e), None)
    if first is not None:
        raise first
    return runs
