"""`transfer_ticket`, the transfer entry point: one transfer (experiment.py), or independent replicates of it, where
seed s re-runs the whole experiment.

For a source run (a find on IMDB, say) and seeds [0, 1, 2], seed s gets:
  - its own source search: the source's find settings at seed s (init, subsample, split, data order, dropout),
    found here unless the store already has it;
  - a transfer of that search at seed s alone: the target split drawn with seed s, its fresh search at seed s from
    the same init as its source, every control drawn from seed s.
Each replicate is an ordinary one-seed transfer run (resumable, reused when finished); the group's results.json
holds their rows side by side, and its report takes intervals over the seeds, which are now independent end to end.
A single ticket (or `independent=False`) cannot be replicated: its seeds vary only the target training, and the
report says so.
"""
from __future__ import annotations

import time
from dataclasses import replace

from ..config import TransferConfig, config_hash, slug
from ..find import _versions
from ..fsio import read_json, write_json
from ..log import log
from ..store import Store
from .experiment import TransferRun, _Transfer
from .source import Source, check_source, resolve_source

DESIGN = ("source", "plan", "data", "oov_rate", "fresh")  # what the first replicate records for the whole group


def transfer_ticket(source=None, config: TransferConfig | None = None, *, data_dir=None, store=None,
                    progress: bool = True, command: str | None = None, stop_flag=None, level=None,
                    device=None, replicate: int | None = None) -> TransferRun:
    """Run (or resume, or reuse) the transfer experiment of `source` to `config.target`: independent replicates
    when the seeds can be (a source run, cfg.independent), one transfer otherwise. See ticketkit.transfer.

    `replicate=S` runs seed S's replicate alone, exactly as the group runs it (the source searched again at seed S,
    then its one-seed transfer at seed S), so that replicates run on different days or machines can be merged
    (ticketkit.transfer.merge) into the group one command would have written."""
    cfg = (config or TransferConfig()).validate()
    store = store if isinstance(store, Store) else Store(store)
    store.ensure()
    src = resolve_source(source, store, cfg.target, cfg.arch, level)
    if replicate is not None:
        return run_replicate(cfg, src, replicate, store, data_dir=data_dir, progress=progress, command=command,
                             stop_flag=stop_flag, device=device)
    if replicated(cfg, src):
        return run_replicates(cfg, src, store, data_dir=data_dir, progress=progress, command=command,
                              stop_flag=stop_flag, device=device)
    return _Transfer(cfg, src, store, data_dir, progress, command, stop_flag, device).run()


def transfer_name(cfg: TransferConfig, src: Source) -> str:
    """The run name `transfer_ticket(src, cfg)` writes to."""
    return group_name(cfg, src) if replicated(cfg, src) else cfg.run_name(src)


def replicated(cfg: TransferConfig, src: Source) -> bool:
    """Whether this transfer runs as independent replicates (a run's settings can be searched again per seed)."""
    return cfg.independent and src.kind == "run" and len(cfg.seeds) > 1


def group_name(cfg: TransferConfig, src: Source) -> str:
    """A replicated transfer's name: the source's find settings without their seed (each replicate searches its
    own), and the transfer's settings."""
    return name_of_group(cfg, src.find.to_dict(), src.dataset, src.arch)


def name_of_group(cfg: TransferConfig, find: dict, dataset: str, arch: str) -> str:
    """group_name from the source's find settings as a dict (a merge reads them from each replicate's results)."""
    find = {k: v for k, v in find.items() if k != "seed"}
    h = config_hash({"replicates_of": find, "settings": cfg.hashed()})
    return f"transfer-{slug(dataset)}-{slug(cfg.target)}-{arch}-{h}"


def run_replicate(cfg: TransferConfig, src: Source, seed: int, store: Store, *, data_dir=None, progress=True,
                  command=None, stop_flag=None, device=None) -> TransferRun:
    """Seed `seed`'s replicate of the group alone: its own source search, then its one-seed transfer."""
    from ..errors import TicketkitError
    from ..seeds import find_seeds

    if src.kind != "run" or not cfg.independent:
        raise TicketkitError("--replicate needs a find run (or a recipe) as the source, and independent seeds: a single "
                             "ticket cannot be searched again at another seed")
    check_source(src, src.levels, cfg.arch)
    run, = find_seeds(replace(src.find, seed=0), [seed], data_dir=data_dir, store=store, progress=progress,
                      device=device, stop_flag=stop_flag, command=command)
    one = resolve_source(str(run.path), store, cfg.target, cfg.arch)
    return _Transfer(replace(cfg, seeds=[seed]), one, store, data_dir, progress, command, stop_flag, device).run()


def run_replicates(cfg: TransferConfig, src: Source, store: Store, *, data_dir=None, progress=True, command=None,
                   stop_flag=None, device=None):
    from ..seeds import find_seeds

    check_source(src, src.levels, cfg.arch)  # before any training: the given run loads, verifies and fits
    name = group_name(cfg, src)
    rd = store.run_dir(name)
    log(progress, f"[{name}] {len(cfg.seeds)} independent replicates: seed s searches {src.dataset} at seed s, "
                  f"then transfers to {cfg.target} at seed s")
    # Every seed's source search first (in worker processes when asked): the transfers then only train.
    runs = find_seeds(replace(src.find, seed=0), cfg.seeds, workers=cfg.workers, data_dir=data_dir, store=store,
                      progress=progress, device=device, stop_flag=stop_flag, stacked=_stacked(cfg))
    with store.lock(name):
        rd.mkdir(parents=True, exist_ok=True)
        rp = rd / "results.json"
        res = read_json(rp) if rp.exists() else {
            "kind": "transfer", "name": name, "config": cfg.to_dict(), "target": cfg.target, "rows": [],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command, "versions": _versions()}
        res["config"]["workers"] = cfg.workers
        res.update(status="running", independent=True, replicates=res.get("replicates", {}))
        write_json(rp, res)
        try:
            _replicate(cfg, runs, res, rp, store, data_dir, progress, command, stop_flag, device)
        except BaseException as e:
            if not res["rows"]:  # nothing trained under this name: leave no trace of it
                import shutil

                shutil.rmtree(rd, ignore_errors=True)
            else:
                write_json(rp, dict(res, status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed"))
            raise
        res["status"] = "complete"
        res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(rp, res)
        from ..report import render_report

        render_report(res, rd)
        log(progress, f"[{name}] done: {len(res['rows'])} cells over {len(cfg.seeds)} independent seeds in {rd}")
        return TransferRun(rd)


def _stacked(cfg) -> bool | None:
    """batch_arms also decides whether the seeds' searches stack (ticketkit.stacked_find): yes, no, auto (GPU only)."""
    return {"yes": True, "no": False}.get(cfg.batch_arms)


def _fresh_together(ts: list, cfg, store, data_dir, progress, stop_flag, device) -> None:
    """Every seed's fresh search at once, as one stacked model in lockstep where seeds stack (a GPU, or batch_arms
    yes); each seed's transfer then reuses its finished fresh run (same config, same tokenizer: same run name)."""
    from ..stacked_find import find_stacked, use_stacked

    if not cfg.fresh or not use_stacked(ts[0].src.arch, len(ts), device, _stacked(cfg), progress):
        return
    find_stacked([t.fresh_config(t.plan()) for t in ts], data_dir=data_dir, store=store, progress=progress,
                 device=device, stop_flag=stop_flag, tokenizer_from=[t.src.tokenizer_path for t in ts])


def _replicate(cfg, runs, res, rp, store, data_dir, progress, command, stop_flag, device) -> None:
    """Each seed's one-seed transfer of its own source search, its rows copied into the group as it finishes."""
    ts = [_Transfer(replace(cfg, seeds=[seed]), resolve_source(str(run.path), store, cfg.target, cfg.arch), store,
                    data_dir, progress, command, stop_flag, device) for seed, run in zip(cfg.seeds, runs)]
    _fresh_together(ts, cfg, store, data_dir, progress, stop_flag, device)
    for seed, t in zip(cfg.seeds, ts):
        add_replicate(res, seed, t.run().results, first=seed == cfg.seeds[0])
        write_json(rp, res)


def add_replicate(res: dict, seed: int, r: dict, first: bool) -> None:
    """Copy one seed's finished one-seed transfer results `r` into the group `res`: its rows and overlaps, and a
    replicate entry naming its source and transfer runs (names and store paths as recorded in `r`, so a group run
    in one go and one merged from replicates run apart record them alike)."""
    res.setdefault("replicates", {})[str(seed)] = {
        "source": (r.get("source") or {}).get("path"), "transfer": r.get("name"), "oov_rate": r.get("oov_rate"),
        "data": r.get("data"), "fresh": r.get("fresh"), "timing": r.get("timing"),
        "numerics": r.get("numerics")}
    res["rows"] = [x for x in res.get("rows", []) if int(x["seed"]) != seed] + r["rows"]
    res["overlap"] = [x for x in res.get("overlap", []) if int(x["seed"]) != seed] + (r.get("overlap") or [])
    if first:  # the first replicate describes the design (plan, source settings)
        res.update({k: r.get(k) for k in DESIGN})
