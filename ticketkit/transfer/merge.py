"""Independent replicates run apart (`ticketkit transfer --replicate S`, on different days or machines), merged into
the group results that `ticketkit transfer --n-seeds N` would have written in one go: the same group name, rows and
report, with intervals over the seeds.

A merge is refused unless the replicates are one experiment: each is a finished one-seed transfer whose source was
searched at that same seed (independent end to end), every setting but the seed is equal (transfer settings, the
source's find settings, source and target datasets, architecture), and no seed appears twice. It reads results.json
files only, so published replicates (docs/results/...) merge without the store that made them.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..config import TransferConfig
from ..errors import TicketkitError
from ..fsio import read_json


def load_replicate(ref) -> tuple[Path, dict]:
    """A replicate's results.json (the file, or the run directory holding it)."""
    p = Path(ref)
    f = p / "results.json" if p.is_dir() else p
    if not f.is_file():
        raise TicketkitError(f"{ref}: no results.json there: pass transfer run directories (or their results.json)")
    res = read_json(f)
    if not isinstance(res, dict) or res.get("kind") != "transfer" or not isinstance(res.get("rows"), list):
        raise TicketkitError(f"{f} is not a ticketkit transfer result (kind 'transfer' with a 'rows' list)")
    return f, res


def _seed_of(f: Path, res: dict) -> int:
    seeds = (res.get("config") or {}).get("seeds") or []
    if len(seeds) != 1 or res.get("independent"):
        raise TicketkitError(f"{f}: a merge takes one-seed replicates, and this holds seeds {seeds}: pass the runs "
                             f"that `ticketkit transfer --replicate S` wrote (a group's results.json is already merged)")
    seed = int(seeds[0])
    if res.get("status") != "complete":
        raise TicketkitError(f"{f}: seed {seed}'s replicate is {res.get('status', 'not finished')}: finish it with its "
                             f"command ({res.get('command') or 'ticketkit transfer --replicate ' + str(seed)}) first")
    src_seed = ((res.get("source") or {}).get("find") or {}).get("seed")
    if src_seed != seed:
        raise TicketkitError(f"{f}: its source was searched at seed {src_seed} and transferred at seed {seed}, so it is "
                             f"not an independent replicate: run `ticketkit transfer --replicate {seed}` instead")
    return seed


def _design(res: dict) -> dict:
    """Everything a merged replicate must share with the others: every setting but the seed."""
    cfg = TransferConfig.from_dict(res["config"]).hashed()
    cfg.pop("seeds")
    src = res.get("source") or {}
    find = {k: v for k, v in (src.get("find") or {}).items() if k != "seed"}
    return {"transfer": cfg, "source find": find, "source dataset": src.get("dataset"), "arch": src.get("arch"),
            "target": res.get("target")}


def _first_difference(a: dict, b: dict, where: str = "") -> str:
    for k in sorted(set(a) | set(b), key=str):
        if a.get(k) != b.get(k):
            if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
                return _first_difference(a[k], b[k], f"{where}{k}.")
            return f"{where}{k}: {a.get(k)!r} vs {b.get(k)!r}"
    return ""


def merge_replicates(refs: list) -> dict:
    """The group results of the replicates `refs` (run directories or results.json files), seeds in order."""
    if len(refs) < 2:
        raise TicketkitError("a merge needs at least two replicates (`ticketkit report RUN RUN...`)")
    loaded = sorted(((_seed_of(f, r), f, r) for f, r in map(load_replicate, refs)), key=lambda t: t[0])
    seed0, f0, first = loaded[0]
    ref_design = _design(first)
    seen: dict[int, Path] = {}
    for seed, f, res in loaded:
        if seed in seen:
            raise TicketkitError(f"seed {seed} twice: {seen[seed]} and {f}: pass each seed's replicate once")
        seen[seed] = f
        diff = _first_difference(ref_design, _design(res))
        if diff:
            raise TicketkitError(f"{f} is not a replicate of {f0}: they differ in {diff}; only the seed may differ")
    from .replicates import add_replicate, name_of_group

    cfg = TransferConfig.from_dict(dict(first["config"], seeds=sorted(seen)))
    src = first["source"]
    name = name_of_group(cfg, src["find"], src["dataset"], src["arch"])
    res = {"kind": "transfer", "name": name, "config": cfg.to_dict(), "target": first.get("target"),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "status": "complete", "independent": True,
           "command": first.get("command"), "versions": first.get("versions"),
           "merged_from": {str(s): {"results": str(f), "name": r.get("name"), "command": r.get("command"),
                                    "versions": r.get("versions"), "finished": r.get("finished")}
                           for s, f, r in loaded},
           "rows": []}
    for i, (seed, _, r) in enumerate(loaded):
        add_replicate(res, seed, r, first=i == 0)
    return res
