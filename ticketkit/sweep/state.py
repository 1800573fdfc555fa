"""A sweep's state on disk: sweep.json (the driver's) and cells/<cell>.json (whoever runs the cell). The store is
the truth: a cell whose run is complete there is done, whoever ran it; a 'running' cell whose process is gone
was interrupted. Everything here reads files, so `sweep status` works from any shell."""
from __future__ import annotations

import os
import socket
from pathlib import Path

from ..errors import TicketkitError
from ..fsio import read_json, write_json
from ..store import Store
from .grid import Cell, Sweep


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
        from ..transfer import TransferConfig, resolve_source, transfer_name

        tc = TransferConfig.from_dict(cell["config"])
        return Path(store_root) / transfer_name(tc, resolve_source(str(src), Store(store_root), tc.target))
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
        # A complete run makes its cell done, unless what failed was its Hub push (--store hf://...): the run is
        # there, the cell's work is not finished.
        if st.get("status") != "done" and not st.get("push_failed") and _run_done(store_root, c):
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


def pushed(sd: Path, c: Cell) -> bool:
    """Whether a cell is on the Hub as far as it can be: transfer cells hold results, not tickets."""
    return c.kind != "find" or bool(pushed_to(sd, c))


def pushed_to(sd: Path, c: Cell) -> str | None:
    f = cell_file(sd, c.id)
    return read_json(f).get("pushed") if f.exists() else None


def mirror(sweep_dir: str, res: dict) -> None:
    """With no shared filesystem (--store hf://...), a worker on another node wrote the cell's file on its own
    disk: the driver, the only one who sees this copy, records the result it received."""
    f = cell_file(Path(sweep_dir), res["id"])
    try:
        same = f.exists() and read_json(f).get("status") == res["status"]
    except TicketkitError:
        same = False
    if not same:
        write_json(f, res)
