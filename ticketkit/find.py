"""Finding lottery tickets: iterative (or one-shot) magnitude pruning with rewinding, and its random controls.

    find_ticket(FindConfig(...)) -> Run

Level 0 trains the dense network from its seeded init. Each later level prunes the previous level's trained
(best-validation) weights, rewinds the survivors (to init, to epoch K, or keeps the trained weights for
fine-tuning) and retrains. Under `oneshot-levels` every level k > 0 is pruned in one shot from level 0's trained
weights, to the survivor counts the iterative schedule has at round k (the dense training is shared). Every level is saved as a ticket as soon as it is done, so a run resumes level by level;
inside a level, the training engine checkpoints every epoch.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .version import __version__
from .config import FindConfig, config_hash, slug
from .controls import ControlInputs, apply_control, prune_generator, reinit_weights
from .data import data_identity, load_tokenizer, prepare_data, split_identity, tokenizer_hash, with_classes
from .errors import TicketkitError, TrainingDiverged
from .fsio import read_json, write_json, write_text
from .models import create_model, model_kwargs, prunable_names
from .numerics import adopt, elsewhere, fingerprint
from .log import log as _log
from .progress import Overall
from .prune import PruneContext, densities, full_masks, masked_state, nonzero_density, prune_like, prune_step
from .prune_init import METHODS, prune_at_init
from .report.levels import levels_csv as _csv  # levels.csv is a report; its writer lives with the others
from .store import Store, finished_levels, level_dirs, link_duplicates, pick_level
from .ticket import Ticket, param_spec
from .train import train


@dataclass
class Run:
    """A finished (or partial) run in the store: its run.json and its tickets, one per level."""
    path: Path

    @property
    def info(self) -> dict:
        return read_json(self.path / "run.json")

    @property
    def levels(self) -> list[dict]:
        return finished_levels(self.path, self.info)

    @property
    def config(self) -> FindConfig:
        return FindConfig.from_dict(self.info["config"])

    def ticket_paths(self) -> list[Path]:
        return level_dirs(self.path)

    def ticket(self, level: str | int | None = None) -> Ticket:
        """The sparsest level by default; an int picks a level, a string like '16.9' the closest % remaining."""
        return Ticket.load(pick_level(self.ticket_paths(), None if level is None else str(level)))

    def __repr__(self) -> str:
        return f"Run({self.path.name!r}, levels={len(self.levels)}, status={self.info.get('status')!r})"


def _load_state(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


def _try_load_state(path: Path) -> dict | None:
    """A level's trained weights, or None when absent or unreadable (then the level is trained again, from its
    checkpoint if there is one: training is deterministic, so the result is the same)."""
    try:
        return _load_state(path) if path.is_file() else None
    except Exception:
        return None


def _finished(ld: Path):
    """A level's ticket when the level finished (its manifest is written last), else None; an unreadable one is
    None too (then the level is trained again: training is deterministic, so the result is the same)."""
    if not (ld / "manifest.json").exists():
        return None
    try:
        return Ticket.load(ld)
    except Exception:  # noqa: BLE001
        return None


def _versions() -> dict:
    return {"ticketkit": __version__, "torch": torch.__version__, "python": sys.version.split()[0]}


def find_ticket(config: FindConfig | None = None, *, data_dir=None, store=None, progress: bool = True,
                command: str | None = None, device=None, stop_flag=None, tokenizer_from=None, trainer=None) -> Run:
    """Run (or reuse) the lottery-ticket search that `config` describes. Returns the Run in the store.

    `tokenizer_from`: a tokenizer.json to use instead of building the vocabulary from the training split (the
    fresh arm of a transfer searches the target under the source's vocabulary, so its init equals the source's).
    Its content hash goes into the run name and run.json.
    `trainer`: called instead of `ticketkit.train.train`, with its arguments (ticketkit.stacked_find trains the
    searches of several seeds in lockstep through it).
    """
    cfg = (config or FindConfig()).validate()
    cfg = with_classes(cfg, data_dir).validate()  # the output layer's size and label mapping come from the data
    store = Store(store) if not isinstance(store, Store) else store
    store.ensure()
    name = cfg.run_name()
    tok_from = None
    if tokenizer_from is not None:
        tok_from = {"path": str(tokenizer_from),
                    "sha256": tokenizer_hash(load_tokenizer(tokenizer_from, cfg.data.max_len))}
        name = f"find-{slug(cfg.data.dataset)}-{cfg.model.arch}-{config_hash({**cfg.to_dict(), 'tokenizer_sha256': tok_from['sha256']})}"
    rd = store.run_dir(name)
    if _complete(rd):
        check_same_data(rd, split_identity(cfg.data, cfg.seed, data_dir), data_dir)
        _log(progress, f"reusing finished run {rd}{elsewhere(rd / 'run.json', device, cfg.train.precision)}")
        return Run(rd)
    source = None
    if cfg.prune.control != "none":  # a control re-uses (or first runs) the magnitude run with the same settings
        source = find_ticket(replace(cfg, prune=replace(cfg.prune, control="none")), data_dir=data_dir, store=store,
                             progress=progress, command=None, device=device, stop_flag=stop_flag,
                             tokenizer_from=tokenizer_from, trainer=trainer)
    from filelock import Timeout

    lock = store.lock(name)
    try:
        held = lock.acquire(timeout=0)
    except Timeout:  # another process is working on this run: wait for it, then reuse what it finished
        _log(progress, f"waiting for another process working on {rd} (lock {lock.lock_file})")
        held = lock.acquire()
    with held:
        if _complete(rd):  # another process finished it while we waited for the lock
            check_same_data(rd, split_identity(cfg.data, cfg.seed, data_dir), data_dir)
            _log(progress, f"reusing finished run {rd} (finished by another process)")
            return Run(rd)
        fresh = not rd.exists()
        try:
            rd.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            from .fsio import _fs_error
            raise _fs_error(rd, e) from None
        _sweep(rd)
        info = read_json(rd / "run.json") if (rd / "run.json").exists() else {
            "name": name, "kind": "find", "config": cfg.to_dict(), "status": "running", "levels": [],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command, "versions": _versions()}
        if tok_from is not None:
            info["tokenizer_from"] = tok_from
        adopt(info, fingerprint(device, cfg.train.precision), bool(level_dirs(rd) or any(rd.glob("checkpoints/*"))),
              f"run {name}", rd)  # never two kinds of arithmetic in one run
        if getattr(trainer, "label", None):  # provenance: trained stacked with other seeds (ticketkit.stacked_find)
            info["trained_by"] = trainer.label
        info["status"] = "running"
        write_json(rd / "run.json", info)
        try:
            _Search(cfg, rd, store, info, data_dir, progress, device, stop_flag, source, tokenizer_from, trainer).run()
        except (KeyboardInterrupt, TicketkitError) as e:
            # Record why the run stopped so `ls`/`show` say so; the checkpoints and finished levels stay for resuming.
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else \
                "diverged" if isinstance(e, TrainingDiverged) else "failed"
            if fresh and status == "failed" and not any(rd.glob("level-*")) and not any(rd.glob("checkpoints/*")):
                import shutil  # bad input before any training: leave no trace of a run that never started
                shutil.rmtree(rd, ignore_errors=True)
            else:
                with contextlib.suppress(TicketkitError):
                    write_json(rd / "run.json", dict(info, status=status, error=str(e) or type(e).__name__))
            raise
        return Run(rd)


def recorded_data(rd: Path) -> dict | None:
    """The data identity a run recorded: in run.json, else in its first finished level (a run killed before its
    run.json held the data); None for a run that has trained nothing yet."""
    try:
        info = read_json(rd / "run.json") if (rd / "run.json").is_file() else {}
    except TicketkitError:
        info = {}
    if isinstance(info.get("data"), dict):
        return data_identity(info["data"])
    for d in level_dirs(rd):
        with contextlib.suppress(TicketkitError, OSError):
            c = read_json(d / "config.json")
            if isinstance(c.get("data"), dict):
                return data_identity(c["data"])
    return None


def check_same_data(rd: Path, got: dict, data_dir=None) -> None:
    """A reuse or a resume continues a run only on the data it was made on: else one line naming both."""
    same_data(recorded_data(rd), got, f"run {rd.name}", rd, data_dir)


def same_data(want: dict | None, got: dict, what: str, rd: Path, data_dir=None) -> None:
    if want is None or want == got:
        return
    order = ["dataset", *(f"{s}_{w}" for w in ("fingerprint", "size") for s in ("train", "val", "test"))]
    k = next(k for k in order + sorted(set(want) | set(got)) if want.get(k) != got.get(k))
    where = f"--data-dir {data_dir}" if data_dir else "this data"
    raise TicketkitError(f"{what} was made on other data ({k} {want.get(k)}; {where} gives {got.get(k)}): "
                         f"pass another --store for this data, or delete {rd} to start it over")


def _sweep(rd: Path) -> None:
    """Remove what a killed process left half-written (we hold the run's lock, so nobody is writing them):
    temp files and dirs of atomic writes (.NAME.XXXX.tmp) and a ticket dir displaced mid-overwrite (.level-NN.old)."""
    import shutil

    for p in sorted(rd.rglob(".*"), key=lambda x: -len(x.parts)):
        if p.name.endswith(".tmp") or p.name.endswith(".old"):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _complete(rd: Path) -> bool:
    if not (rd / "run.json").exists():
        return False
    try:
        return read_json(rd / "run.json").get("status") == "complete"
    except TicketkitError:
        return False


class _Search:
    def __init__(self, cfg: FindConfig, rd: Path, store: Store, info: dict, data_dir, progress, device, stop_flag, source,
                 tokenizer_from=None, trainer=None):
        self.cfg, self.rd, self.store, self.info = cfg, rd, store, info
        self.trainer = trainer or train
        self.tokenizer_from = tokenizer_from
        self.data_dir, self.progress, self.device, self.stop_flag, self.source = data_dir, progress, device, stop_flag, source

    def run(self) -> None:
        cfg, rd = self.cfg, self.rd
        tok_path = rd / "tokenizer.json"
        tok = None
        if self.source is not None:
            tok = load_tokenizer(self.source.path / "tokenizer.json", cfg.data.max_len)
        elif tok_path.exists():
            tok = load_tokenizer(tok_path, cfg.data.max_len)
        elif self.tokenizer_from is not None:
            tok = load_tokenizer(self.tokenizer_from, cfg.data.max_len)
        _log(self.progress, f"[{rd.name}] loading {cfg.data.dataset}")
        self.data = prepare_data(cfg.data, cfg.seed, self.data_dir, self.store.cache, tok)
        check_same_data(rd, data_identity(self.data.info), self.data_dir)  # a resume continues on the same data only
        if not tok_path.exists():
            write_text(tok_path, self.data.tokenizer.to_str())
        self.info["data"] = self.data.info
        write_json(rd / "run.json", self.info)  # the data is recorded before any level trains on it
        self.vocab = self.data.tokenizer.get_vocab_size()
        model = self.new_model(cfg.seed)
        self.init = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.spec = param_spec(model)
        self.names = prunable_names(model, cfg.prune.exclude)
        self.output_layer = getattr(model, "output_layer", None)
        rows = self.controls() if self.source is not None else self.imp()
        self.info.update(status="complete", levels=rows, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.info.pop("error", None)
        write_text(rd / "levels.csv", _csv(rows))
        write_json(rd / "run.json", self.info)
        with contextlib.suppress(OSError):  # every level's ticket supersedes its in-level checkpoint
            for ck in (rd / "checkpoints").glob("*.safetensors"):
                ck.unlink()
            (rd / "checkpoints").rmdir()
        _log(self.progress, f"[{rd.name}] done: {len(rows)} levels in {rd}")

    def new_model(self, seed: int):
        return create_model(self.cfg.model.arch, self.vocab, seed=seed, **model_kwargs(self.cfg.model))

    # --------------------------------------------------------------------------- iterative magnitude pruning
    def imp(self) -> list[dict]:
        cfg, rd = self.cfg, self.rd
        pr = cfg.prune
        point = pr.rewind_point()  # None: fine-tuning; ("epoch", 0): init; else late resetting
        late = f"{point[0]}:{point[1]}" if point is not None and point[1] > 0 else None
        # oneshot-levels: `like` follows the iterative schedule over the dense trained weights, only for its counts
        # (they do not depend on the weights pruned); each level's mask is one shot from `dense` to them.
        levels_oneshot = pr.schedule == "oneshot-levels"
        # A method at init (snip, synflow): `like` follows the schedule for its counts only, as under oneshot-levels;
        # each level's mask is scored on the init, from the full mask, to those counts (prune_init.prune_at_init).
        at_init = METHODS[pr.method].at_init
        masks = like = full = full_masks(self.init, self.names)
        rewind_state = self.init
        rows, level = [], 0
        trained_prev = dense = None
        overall = Overall("level", pr.n_rounds() + 1, self.progress, f"[{rd.name}] ")
        while True:
            ld = rd / f"level-{level:02d}"
            tp = rd / "trained" / f"level-{level:02d}.safetensors"  # where runs before trained.safetensors kept them
            t = _finished(ld)
            # the level's trained weights: its ticket's trained.safetensors (trained x mask, which is the trained
            # state itself, since pruned weights stay exactly zero), or an older run's copy under trained/
            trained = None if t is None else (t.trained if t.trained is not None else _try_load_state(tp))
            if trained is not None:  # finished before an interruption: reuse it
                masks = t.masks
                (rd / "checkpoints" / f"level-{level:02d}.safetensors").unlink(missing_ok=True)  # stale if killed after the ticket
                if level == 0:
                    rewind_state = t.rewind
                row = t.config["summary"]
                _log(self.progress, f"[{rd.name}] level {level}: reusing finished ticket ({row['density_prunable']:.2%} remaining)")
                overall.line(level + 1, reused=True)
            else:
                if level == 0 or point is not None:
                    start = self.init if level == 0 else rewind_state
                else:  # fine-tuning: continue from the previous level's trained weights (oneshot-levels: the dense ones)
                    start = trained_prev
                res, row = self.train_level(level, masks, start, snapshots_at=(late,) if (level == 0 and late) else ())
                trained = res.best_state
                if level == 0 and late:
                    rewind_state = res.snapshots[late]
                ticket_rewind = rewind_state if (point is not None or level == 0) else start
                self.save_ticket(ld, level, self.init, masks, ticket_rewind, row, trained)
                overall.step(level + 1)
            rows.append(row)
            if level == 0:
                dense = trained
            trained_prev = dense if levels_oneshot else trained
            rate = self.next_rate(level, like if (levels_oneshot or at_init) else masks)
            if rate is None:
                return rows
            if at_init:
                like = prune_step("magnitude", self.init, like, rate, pr.scope, pr.layer_rates, self.output_layer,
                                  pr.output_rate, pr.layer_floor)  # counts depend on the schedule, not the weights
                masks = prune_at_init(pr.method, self.init, full, like, self.init_context(), pr.scope,
                                      self.output_layer, pr.output_rate, pr.layer_floor)
                level += 1
                continue
            weights, before = (dense, like) if levels_oneshot else (trained, masks)
            after = prune_step(pr.method, weights, before, rate, pr.scope, pr.layer_rates, self.output_layer,
                               pr.output_rate, pr.layer_floor)
            if levels_oneshot:
                like, masks = after, prune_like(dense, full, after, pr.scope, self.output_layer, pr.output_rate,
                                                pr.layer_floor)
            else:
                masks = after
            level += 1

    def init_context(self) -> PruneContext:
        """The model at init and, for SNIP, the first `score_batches` batches of a seeded shuffle of the training
        split (on the CPU: scoring is one forward and backward per batch)."""
        from .train import batches, take

        gen = torch.Generator().manual_seed(self.cfg.seed)
        bl = batches(self.data.train, self.cfg.train.batch_size, gen, bucketing=False)[:self.cfg.prune.score_batches]
        return PruneContext(model=self.new_model(self.cfg.seed), batches=[take(self.data.train, i, "cpu") for i in bl])

    def next_rate(self, level: int, masks) -> float | None:
        pr = self.cfg.prune
        if pr.schedule == "oneshot":
            return self.rate_to(pr.target, masks) if level == 0 else None
        if level >= pr.levels:
            return None
        if pr.target is not None:
            density = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
            if density <= pr.target * (1 + 1e-9):
                return None
            return min(pr.rate, self.rate_to(pr.target, masks))  # the last round lands on the target
        return pr.rate

    def rate_to(self, target: float, masks) -> float:
        """The rate that takes the prunable density to `target` in one round, with the output layer at its reduced
        rate: kept_rest * (1 - r) + kept_out * (1 - f r) = target * total."""
        pr = self.cfg.prune
        kept = {n: int(m.sum()) for n, m in masks.items()}
        out = kept.get(self.output_layer, 0) if pr.output_rate != 1.0 else 0
        total = sum(m.numel() for m in masks.values())
        slope = (sum(kept.values()) - out) + pr.output_rate * out
        return min(max((sum(kept.values()) - target * total) / slope, 0.0), 1.0) if slope else 0.0

    # --------------------------------------------------------------------------- controls
    def controls(self) -> list[dict]:
        """Retrain each level of the magnitude run under a control: the same per-layer densities with a shuffled
        mask over the same starting weights (random-prune), or the same mask over re-drawn weights (random-reinit)."""
        cfg, rd = self.cfg, self.rd
        gen = prune_generator(cfg.seed)
        reinit = functools.cache(lambda: reinit_weights(cfg.model, self.vocab, cfg.seed))
        rows, prev = [], None
        paths = self.source.ticket_paths()
        overall = Overall("level", len(paths), self.progress, f"[{rd.name}] ")
        for i, src_dir in enumerate(paths):
            src = Ticket.load(src_dir)
            # every level is drawn, finished or not, so the generator stays in step on a resume
            init, masks, start = apply_control(cfg.prune.control, src.init, src.masks, src.rewind,
                                               ControlInputs(gen, reinit, within=prev))
            prev = masks
            ld = rd / f"level-{i:02d}"
            if (ld / "manifest.json").exists():
                rows.append(Ticket.load(ld).config["summary"])
                overall.line(i + 1, reused=True)
                continue
            res, row = self.train_level(i, masks, start)
            self.save_ticket(ld, i, init, masks, start, row, res.best_state)
            overall.step(i + 1)
            rows.append(row)
        return rows

    # --------------------------------------------------------------------------- one level
    def train_level(self, level: int, masks, start: dict, snapshots_at=()):
        cfg = self.cfg
        model = self.new_model(cfg.seed)
        model.load_state_dict(masked_state(start, masks))
        dens = densities(masks, self.init)
        _log(self.progress, f"[{self.rd.name}] level {level}: training at {dens['prunable']:.2%} of prunable weights "
                            f"({dens['all']:.2%} of all)")
        ck = self.rd / "checkpoints" / f"level-{level:02d}.safetensors"
        res = self.trainer(model, masks, self.data.train, self.data.val, self.data.test, cfg.train, cfg.seed, device=self.device,
                    snapshots_at=snapshots_at, checkpoint=ck, progress=self.progress,
                    desc=f"level {level}", stop_flag=self.stop_flag)
        row = {"level": level, "density_prunable": dens["prunable"], "density_all": dens["all"],
               "density_nonzero": nonzero_density(model, self.names),
               "val_accuracy": res.val["accuracy"], "val_loss": res.val["loss"],
               "test_accuracy": res.test["accuracy"], "test_macro_f1": res.test["macro_f1"], "test_loss": res.test["loss"],
               "best_epoch": res.best_epoch, "epochs": res.epochs, "seconds": round(res.seconds, 2),
               "layers": dens["layers"], **dens["groups"], **res.diagnostics}
        _log(self.progress, f"[{self.rd.name}] level {level}: test accuracy {res.test['accuracy']:.4f} "
                            f"(best epoch {res.best_epoch}/{res.epochs}, {res.seconds:.0f}s)")
        return res, row

    def save_ticket(self, ld: Path, level: int, init: dict, masks, rewind: dict, row: dict, trained=None) -> None:
        cfg = self.cfg
        full_mask = {n: masks[n] if n in masks else torch.ones_like(t, dtype=torch.bool) for n, t in init.items()}
        config = {
            "ticketkit": "ticket", "format": 1, "run": self.rd.name, "level": level, "find": cfg.to_dict(),
            "seed": cfg.seed, "vocab_size": self.vocab, "prunable": self.names, "params": self.spec,
            "density": {"prunable": row["density_prunable"], "all": row["density_all"], "layers": row["layers"]},
            "metrics": {k: row[k] for k in ("val_accuracy", "val_loss", "test_accuracy", "test_macro_f1", "best_epoch", "epochs")},
            "summary": row, "data": self.data.info, "command": self.info.get("command"), "versions": _versions(),
            "numerics": self.info.get("numerics"),
        }
        # trained: the best-validation weights x mask, kept in the level (trained.safetensors) for a usable classifier
        ticket = Ticket(config, init, full_mask, rewind, self.data.tokenizer, trained=trained)
        ticket.save(ld, overwrite=True)
        link_duplicates(ld)  # init (and usually rewind) are the same as the last level's: stored once
        ck = self.rd / "checkpoints" / f"level-{level:02d}.safetensors"
        ck.unlink(missing_ok=True)  # the ticket supersedes the in-level checkpoint
