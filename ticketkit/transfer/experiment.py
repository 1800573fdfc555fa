"""One transfer experiment: its plan (requested levels -> source levels), its cells, the target data, and the
record of every finished cell in results.json, from which the report is built. `transfer_ticket`
(replicates.py) runs it, once or once per independent seed.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..config import FindConfig, TransferConfig
from ..data import data_identity, load_tokenizer, prepare_data, split_identity
from ..find import Run, _sweep, _versions, same_data
from ..numerics import adopt, elsewhere, fingerprint
from ..fsio import read_json, write_json
from ..log import log as _log
from ..progress import Overall
from ..diagnostics import DIAGNOSTIC_KEYS
from ..errors import TicketkitError
from ..prune import densities
from ..store import Store
from ..ticket import Ticket
from .cells import DENSE, _Cell, _digest, _key, arm_start
from .executors import Executors
from .source import Source, check_source


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
        from ..report import summary_table

        return summary_table(self.results)

    def __repr__(self) -> str:
        r = self.results
        return f"TransferRun({self.path.name!r}, rows={len(r.get('rows', []))}, status={r.get('status')!r})"


class _Transfer(Executors):
    def __init__(self, cfg: TransferConfig, src: Source, store: Store, data_dir, progress, command, stop_flag, device):
        from ..threads import cap_workers

        cfg = replace(cfg, workers=cap_workers(cfg.workers, lambda m: _log(progress, m)))  # never more than the cores
        self.cfg, self.src, self.store, self.data_dir = cfg, src, store, data_dir
        self.progress, self.command, self.stop_flag, self.device = progress, command, stop_flag, device
        self.name = cfg.run_name(src)
        self.rd = store.run_dir(self.name)
        self.fresh_tickets: dict = {}  # fresh-search level dir -> its Ticket, for the levels fresh cells train from

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
        if pr.schedule in ("iterative", "oneshot-levels"):
            deepest = max((p["source_level"] for p in plan if p["requested_by_user"]), default=0)
            pr = replace(pr, levels=min(pr.levels, max(deepest, 0)))
        return replace(f, data=self.target_data(), train=replace(cfg.train), prune=pr).validate()

    def target_data(self):
        """The source's data settings on the target, with the transfer's subsample. The source's classes
        (data.labels) map the target's labels, so class i means the same on both; its Hub split and revision do not
        carry over (the target's own are used)."""
        cfg = self.cfg
        return replace(self.src.find.data, dataset=cfg.target, max_train=cfg.max_train, max_test=cfg.max_test,
                       val_fraction=cfg.val_fraction, split=None, revision=None)

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
        d = cell.extra.get("fresh_dir")
        fresh = self._fresh_ticket(d, {d}) if cell.arm == "fresh" else None
        return arm_start(self.src, cell.arm, cell.source_level, cell.seed, fresh, train=self.data["train"])

    # ----------------------------------------------------------------------------------------- data
    def prepare(self) -> dict:
        """The target split (seeded like the fresh search, so both see the same reviews), encoded with the
        source tokenizer; the OOV rate of the target text under the source vocabulary."""
        f = self.src.find
        tok = load_tokenizer(self.src.tokenizer_path, f.data.max_len)
        d = prepare_data(self.target_data(), f.seed, self.data_dir, self.store.cache, tok, oov=True)
        if d.info["num_classes"] != f.model.num_classes:  # the ticket's output layer has one row per source class
            raise TicketkitError(f"{self.cfg.target} has {d.info['num_classes']} classes ({', '.join(d.info['classes'])}), "
                                 f"the {self.src.dataset} ticket {f.model.num_classes}: transfer to a dataset with the "
                                 f"source's classes")
        self.data = {"train": d.train, "val": d.val, "test": d.test}
        return {"oov_rate": d.oov_rate, "oov_over": "the target's train, validation and test splits as used",
                "data": {**d.info, "split_seed": f.seed}}

    # ----------------------------------------------------------------------------------------- running
    def run(self) -> TransferRun:
        cfg, rd = self.cfg, self.rd
        plan = self.plan()
        check_source(self.src, [self.src.level(p["source_level"]) for p in plan], cfg.arch)
        with self.store.lock(self.name):
            rd.mkdir(parents=True, exist_ok=True)
            _sweep(rd)  # what a killed process left half-written (temp files of atomic writes); we hold the lock
            rp = rd / "results.json"
            res = read_json(rp) if rp.exists() else {
                "kind": "transfer", "name": self.name, "config": cfg.to_dict(), "source": self.src.describe(),
                "target": cfg.target, "plan": plan, "rows": [], "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": self.command, "versions": _versions()}
            res["config"]["workers"] = cfg.workers  # the only settings that may differ on a resumed run
            res["config"]["batch_arms"] = cfg.batch_arms
            if res.get("status") == "complete" and not self._missing(res, plan):
                self._same_target(res, split_identity(self.target_data(), self.src.find.seed, self.data_dir))
                self._tidy()
                arms = 2 if res.get("stacked_arms") else 1  # stacked arms may resolve "auto" to other arithmetic
                _log(self.progress, f"reusing finished transfer {rd}"
                                    f"{elsewhere(rp, self.device, cfg.train.precision, arms)}")
                return TransferRun(rd)
            res["status"] = "running"
            self.res = res
            self.stacked_on = self.stacked()
            # never two kinds of arithmetic in one transfer (stacked arms may resolve "auto" to bf16 on a GPU)
            adopt(res, fingerprint(self.device, cfg.train.precision, arms=2 if self.stacked_on else 1),
                  bool(res["rows"]), f"transfer {self.name}", rd)
            self.pool = self._start_pool() if cfg.workers > 1 and not self.stacked_on else None
            try:
                _log(self.progress, f"[{self.name}] {self.src.dataset} -> {cfg.target}: loading {cfg.target}")
                t0 = time.perf_counter()
                info = self.prepare()
                self._same_target(res, data_identity(info["data"]))  # a resume continues on the same reviews only
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
            from ..report import render_report

            render_report(res, rd)
            (self.store.cache / "transfer" / f"{self.name}.safetensors").unlink(missing_ok=True)
            self._tidy()
            _log(self.progress, f"[{self.name}] done: {len(res['rows'])} cells in {rd}")
            return TransferRun(rd)

    def _same_target(self, res: dict, got: dict) -> None:
        """A transfer's rows hold for the target reviews they were trained on: other ones are one line, not a
        reuse or a resume that mixes the two."""
        want = data_identity(res["data"]) if isinstance(res.get("data"), dict) else None
        same_data(want, got, f"transfer {self.name}", self.rd, self.data_dir)

    def _tidy(self) -> None:
        """A finished transfer keeps no checkpoint, temp file or empty checkpoints/ dir."""
        import contextlib

        _sweep(self.rd)
        ck = self.rd / "checkpoints"
        with contextlib.suppress(OSError):
            for p in ck.iterdir():
                if p.is_file() and not p.is_symlink():
                    p.unlink()
            ck.rmdir()

    def _missing(self, res: dict, plan: list[dict]) -> bool:
        have = {_key(r) for r in res.get("rows", [])}
        want = {c.key for c in self.cells(plan)}
        n_fresh = sum(p["requested_by_user"] for p in plan) * len(self.cfg.seeds) if self.cfg.fresh else 0
        return bool(want - have) or sum(1 for k in have if k[0] == "fresh") < n_fresh

    def execute(self, plan: list[dict]) -> None:
        """Train every unfinished cell, serially, in worker processes or stacked; record each as it finishes."""
        cfg = self.cfg
        done = {_key(r): r for r in self.res["rows"]}
        self.by_digest = {(r["digest"], r["seed"]): r for r in self.res["rows"] if "shared_with" not in r}
        queue = [c for c in self.cells(plan) if c.key not in done]
        n_fresh = sum(p["requested_by_user"] for p in plan) * len(cfg.seeds) if cfg.fresh else 0
        self.overall = Overall("cell", len(self.cells(plan)) + n_fresh, self.progress, f"[{self.name}] ")
        self.overall.line(len(done), reused=True)
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

    # ----------------------------------------------------------------------------------------- recording
    def job(self, cell: _Cell, masks: dict, start: dict, digest: str) -> dict:
        """One training, as `executors._train_job` takes it (masks and weights as they are: a worker's copy is
        serialised by the executor)."""
        return {"model": dataclasses.asdict(self.src.find.model), "vocab_size": self.src.vocab_size, "masks": masks,
                "start": start, "seed": cell.seed, "train": dataclasses.asdict(self.cfg.train),
                "checkpoint": str(self.rd / "checkpoints" / f"{digest}-s{cell.seed}.safetensors"),
                "desc": f"{cell.arm} {cell.level:g}% seed {cell.seed}"}

    def record(self, cell: _Cell, masks: dict, start: dict, digest: str, metrics: dict, shared_with=None) -> None:
        dens = densities(masks, start)
        row = {"arm": cell.arm, "level": cell.level, "seed": cell.seed, "source_level": cell.source_level,
               "density_prunable": dens["prunable"], "density_all": dens["all"], **dens["groups"],
               "layers": dens["layers"], **metrics, "digest": digest}
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
        if getattr(self, "overall", None) is not None:
            self.overall.step(len(rows))

    def _reuse(self, cell: _Cell, masks: dict, start: dict, dg: str) -> bool:
        """A bit-identical training already finished (another arm at the same point): record it for this arm."""
        row = self.by_digest.get((dg, cell.seed))
        if row is None:
            return False
        self.record(cell, masks, start, dg, _metrics(row),
                    shared_with=row.get("label") or f"{row['arm']}@{float(row['level']):g}")
        return True

    def _finish(self, key: tuple, group: list, metrics: dict) -> None:
        first = group[0][0]
        for i, (cell, masks, start) in enumerate(group):
            self.record(cell, masks, start, key[0], metrics, shared_with=None if i == 0 else f"{first.arm}@{first.level:g}")
        self.by_digest[key] = {**metrics, "arm": first.arm, "level": first.level}

    def _after_fresh(self, plan: list[dict], fresh: Run, done: dict) -> list[_Cell]:
        """Record the fresh search and check its init against the source's, bit for bit; its cells to train."""
        cells = self.fresh_cells(plan, fresh)
        used = {c.extra["fresh_dir"] for c in cells}  # the levels the fresh cells train from: kept, loaded once
        t0 = self._fresh_ticket(fresh.ticket_paths()[0], used)
        init, _, _ = self.src.weights(self.src.levels[0])
        same = set(init) == set(t0.init) and all(torch.equal(init[k], t0.init[k]) for k in init)
        if not same:
            print(f"warning: the fresh search {fresh.path.name} did not start from the source's initial weights "
                  f"(different torch version?); the fresh arm is not a same-init comparison", file=sys.stderr)
        self.res["fresh"] = {"run": fresh.path.name, "path": str(fresh.path), "same_init": same,
                             "config": fresh.info.get("config")}
        self._register_search(fresh, t0, used)
        from ..overlap import transfer_overlap  # transferred vs fresh mask, per level and layer (issue 18)

        self.res["overlap"] = transfer_overlap(self.src, plan, fresh.ticket_paths(), int(fresh.info["config"]["seed"]))
        return [c for c in cells if c.key not in done]

    def _fresh_ticket(self, d: Path, used: set) -> Ticket:
        """A fresh-search level's ticket, loaded (and verified) once; kept only if a fresh cell trains from it."""
        t = self.fresh_tickets[d] if d in self.fresh_tickets else Ticket.load(d)
        if d in used:
            self.fresh_tickets[d] = t
        return t

    def _register_search(self, fresh: Run, level0: Ticket, used: set) -> None:
        """Each level the fresh search trained is a finished training: same target data, training settings and
        seed as a transfer cell, so a cell with the same start (the fresh arm at the search's seed, and the dense
        cells) is recorded from it rather than trained again (measured bit-identical when it was retrained)."""
        cfg = fresh.info.get("config", {})
        data = fresh.info.get("data", {})
        keys = ("tokenizer_sha256", "train_fingerprint", "val_fingerprint", "test_fingerprint")
        if cfg.get("train") != dataclasses.asdict(self.cfg.train) or any(data.get(k) != self.res["data"].get(k) for k in keys):
            return  # not the same training (an older or hand-made run): its levels are retrained
        for j, d in enumerate(fresh.ticket_paths()):
            t = level0 if j == 0 else self._fresh_ticket(d, used)
            start = t.init if j == 0 else t.rewind  # level 0 trains from init; its ticket's rewind may be epoch k
            row = t.config["summary"]
            if "test_loss" not in row or "flags" not in row:
                continue  # found before ticketkit recorded it: retrain rather than leave a metric out
            self.by_digest.setdefault((_digest(t.masks, start), int(cfg["seed"])),
                                      {**_metrics(row), "arm": "fresh", "level": j, "label": f"{fresh.path.name} level {j}"})


def _metrics(row: dict) -> dict:
    keys = ("test_accuracy", "test_macro_f1", "val_accuracy", "val_loss", "test_loss", "epochs", "best_epoch", "seconds",
            "trained_with", *DIAGNOSTIC_KEYS)
    return {k: row[k] for k in keys if k in row}
