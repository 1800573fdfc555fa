"""`ticketkit transfer` as one API call: its settings from a recipe and flags, and, without a SOURCE, the recipe's
find settings as the source (found first unless the store has it). cli.py only parses and prints.

Flags arrive as cli.py's options generated from TransferConfig name them: {"cfg__<field path>": value or None}.
"""
from __future__ import annotations

import typing

from ..config import FindConfig, TransferConfig, cli_fields, from_dict, load_recipe, merge, set_path
from ..errors import TicketkitError
from .experiment import TransferRun
from .replicates import transfer_ticket


def _csv_list(value: str | None, what: str, conv=str) -> list | None:
    if value is None:
        return None
    if value.strip().lower() in ("", "none"):
        return []
    try:
        return [conv(x.strip()) for x in value.split(",") if x.strip()]
    except ValueError:
        raise TicketkitError(f"--{what} {value!r}: expected a comma-separated list, e.g. --densities 100,16.9,2.9") from None


def _dest(path: tuple) -> str:
    return "cfg__" + "__".join(path)


def build_transfer_config(recipe: str | None, flags: dict) -> TransferConfig:
    """The recipe's settings (TransferConfig.from_recipe; defaults without one), then every flag that was given."""
    cfg = TransferConfig.from_recipe(load_recipe(recipe)) if recipe else TransferConfig()
    for path, f, tp in cli_fields(TransferConfig):
        v = flags.get(_dest(path))
        if v is None or (f.metadata.get("negate") and not v):
            continue
        if f.metadata.get("negate"):  # --no-fresh
            v = False
        elif typing.get_origin(tp) is list:
            # a count N means 0..N-1 (seeds); any other list is comma-separated
            v = list(range(v)) if f.metadata.get("cli_type") is int else \
                _csv_list(v, f.metadata.get("flag") or path[-1].replace("_", "-"), typing.get_args(tp)[0])
        obj = cfg
        for p in path[:-1]:
            obj = getattr(obj, p)
        setattr(obj, path[-1], v)
    return cfg.validate()


def source_find_config(recipe: str, flags: dict) -> FindConfig:
    """The source a transfer recipe describes: its find tables, under the flags that find shares (the training
    settings, the subsample, --arch), built as `ticketkit find --recipe` builds its config."""
    d = load_recipe(recipe)
    d.pop("transfer", None)
    d.pop("sweep", None)
    d = from_dict(FindConfig, d, "recipe").to_dict()  # unknown keys / wrong types fail here, before any training
    if flags.get("cfg__arch"):
        set_path(d, ("model", "arch"), flags["cfg__arch"])
    for path, f, _ in cli_fields(TransferConfig):
        v = flags.get(_dest(path))
        find_path = f.metadata.get("find") or (path if path[0] == "train" else None)
        if v is not None and find_path:
            set_path(d, tuple(find_path), v)
    return FindConfig.from_dict(merge(FindConfig().to_dict(), d)).validate()


def _settings(run: dict) -> str:
    c = run.get("config", {})
    d, t = c.get("data", {}), c.get("train", {})
    sub = "full data" if d.get("max_train") is None and d.get("max_test") is None else \
        f"subsample {d.get('max_train') or 'all'} train / {d.get('max_test') or 'all'} test"
    return (f"{d.get('dataset')}, {c.get('model', {}).get('arch')}, {sub}, {t.get('epochs')} epochs, "
            f"seed {c.get('seed')}, {len(run.get('levels') or [])} levels")


def _subsampled(run: dict) -> bool:
    d = run.get("config", {}).get("data", {})
    return d.get("max_train") is not None or d.get("max_test") is not None


def default_source(store, cfg: TransferConfig) -> tuple[dict, list[str]]:
    """The run a transfer without SOURCE takes (the newest finished one on another dataset) and what to tell
    the user about it: its settings, and the newest full-data run where the chosen one is a subsample."""
    from ..store import Store
    from .source import default_sources

    runs = default_sources(store if isinstance(store, Store) else Store(store), cfg.target, cfg.arch)
    lines = [f"source: {runs[0]['name']} ({_settings(runs[0])}), the newest finished find run on another dataset; "
             f"pass a SOURCE to choose another"]
    full = next((r for r in runs if not _subsampled(r)), None)
    if _subsampled(runs[0]) and full is not None:
        lines.append(f"note: that is a subsampled run; the newest full-data run is {full['name']} "
                     f"({_settings(full)}): `ticketkit transfer {full['name']} --to {cfg.target}`")
    return runs[0], lines


def _announce_default_source(store, cfg: TransferConfig, progress: bool) -> str:
    from ..log import log

    run, lines = default_source(store, cfg)
    for line in lines:
        log(progress, line)
    return run["path"]


def transfer_command(source: str | None, recipe: str | None, flags: dict, *, level=None, data_dir=None, store=None,
                     progress: bool = True, command: str | None = None, stop_flag=None,
                     replicate: int | None = None) -> TransferRun:
    """What `ticketkit transfer [SOURCE] [--recipe R] [flags]` does. Without SOURCE and --level, a recipe's own
    find settings give the source: found first (or reused from the store), then transferred. `replicate`: seed S's
    replicate alone (transfer_ticket); a recipe's source is then searched at seed S only."""
    cfg = build_transfer_config(recipe, flags)
    if replicate is not None and level is not None:
        raise TicketkitError("--replicate searches the source again at its seed: it transfers every level, so drop --level")
    if source is None and recipe and level is None:
        from dataclasses import replace

        from ..find import find_ticket

        find_cfg = source_find_config(recipe, flags)
        if replicate is not None:
            find_cfg = replace(find_cfg, seed=replicate)
        if find_cfg.data.dataset == cfg.target:
            raise TicketkitError(f"the recipe's source dataset is the target {cfg.target}: set [data] dataset to "
                                 f"another one, or pass a SOURCE ticket")
        source = str(find_ticket(find_cfg, data_dir=data_dir, store=store, progress=progress, stop_flag=stop_flag,
                                 command=command).path)
    if source is None and level is None:  # the store's newest run: say which, before any training
        source = _announce_default_source(store, cfg, progress)
    return transfer_ticket(source, cfg, data_dir=data_dir, store=store, progress=progress, level=level,
                           command=command, stop_flag=stop_flag, replicate=replicate)
