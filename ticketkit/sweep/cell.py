"""One cell, run where a worker runs it (this process, a spawned worker, a Ray task): the find or transfer it
stands for, its state file, and, with --store hf://..., its push to the Hub."""
from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path

from ..config import FindConfig
from ..errors import TicketkitError, redact
from ..fsio import read_json, write_json
from ..log import one_line
from .state import _run_done, cell_file, run_path


def execute_cell(cell: dict, sweep_dir: str, store_root: str, data_dir: str | None, threads: int | None,
                 push: str | None, *deps: dict) -> dict:
    """Run one cell and record its state. Never raises for the cell's own errors: a failure is a result, so the
    rest of the sweep goes on (and a Ray dependent receives it as a value). `deps` are the results of the cells
    this one waits for: on Ray they arrive through ObjectRefs, so the task starts only once they are done."""
    sf = cell_file(Path(sweep_dir), cell["id"])
    base = {"id": cell["id"], "kind": cell["kind"], "host": socket.gethostname(), "pid": os.getpid()}
    if threads:
        import torch

        torch.set_num_threads(int(threads))  # one worker = its own cores; no oversubscription
    rd = run_path(Path(store_root), cell) or Path(store_root) / cell["id"]
    if _run_done(Path(store_root), cell):
        old = read_json(sf) if sf.exists() else {}
        res = {**base, "status": "done", "run": str(rd), "error": None, "reused": True,
               **({"pushed": old["pushed"]} if old.get("pushed") else {})}
        if push and not old.get("pushed"):  # finished earlier, not yet on the Hub
            try:
                res["pushed"] = _push(rd, push, cell["kind"])
            except Exception as e:  # noqa: BLE001
                res = {**res, "status": "failed", "error": f"push failed: {one_line(e)}", "push_failed": True}
        if old.get("status") != res["status"] or res.get("pushed") != old.get("pushed"):
            write_json(sf, res)
        return res
    bad = [d for d in deps if d.get("status") != "done"]
    if bad:
        res = {**base, "status": "failed", "run": None, "error": f"needs {bad[0]['id']}, which failed: {bad[0].get('error')}"}
        write_json(sf, res)
        return res
    t0 = time.time()
    write_json(sf, {**base, "status": "running", "run": str(rd), "error": None,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    try:
        if cell["kind"] == "find":
            from ..find import find_ticket

            rd = find_ticket(FindConfig.from_dict(cell["config"]), data_dir=data_dir, store=store_root,
                             progress=False, command=f"ticketkit sweep ({Path(sweep_dir).name})").path
        else:
            from ..transfer import TransferConfig, transfer_ticket

            src = next(d for d in deps if d["id"] == cell["source"])  # the source's result, through the dependency
            ref = src["run"]
            if not Path(ref).exists() and src.get("pushed"):  # no shared filesystem: take the source from the Hub
                ref = f"hf://{src['pushed']}"
            rd = transfer_ticket(ref, TransferConfig.from_dict(cell["config"]), data_dir=data_dir, store=store_root,
                                 progress=False, command=f"ticketkit sweep ({Path(sweep_dir).name})").path
        res = {**base, "status": "done", "run": str(rd), "error": None, "seconds": round(time.time() - t0, 2),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if push:
            try:
                pushed = _push(rd, push, cell["kind"])
                res.update({"pushed": pushed} if pushed else {})
            except Exception as e:  # noqa: BLE001 - the local run is complete; the cell is not, until it is pushed
                res.update(status="failed", error=f"push failed: {one_line(e)}", push_failed=True)
    except KeyboardInterrupt:
        write_json(sf, {**base, "status": "pending", "run": None, "error": "interrupted: a rerun retries it"})
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one cell is recorded, and the sweep goes on
        res = {**base, "status": "failed", "run": None, "error": one_line(e), "seconds": round(time.time() - t0, 2),
               "traceback": redact(traceback.format_exc())}
    write_json(sf, res)
    return res


def hub_repo(spec: str, cell_id: str) -> str:
    """hf://org/tickets -> one repo per cell, org/tickets-<cell>: a Hub push owns its repo's files, so cells
    sharing one repo would replace each other."""
    org, _, prefix = spec.strip("/").partition("/")
    return f"{org}/{prefix + '-' if prefix else ''}{cell_id}"


def _push(run_dir: Path, spec: str, kind: str):
    """Push a finished find cell (its whole run) to the Hub; transfer cells hold results, not tickets."""
    if kind != "find":
        return None
    from ..hub import push

    repo = hub_repo(spec, Path(run_dir).name)
    push(str(run_dir), repo, store=str(Path(run_dir).parent))
    return repo


def _push_available(spec: str) -> None:
    """Fail before any training: no Hub module, a bad org name or no token would only show after the first cell."""
    try:
        from .. import hub
    except ImportError as e:
        raise TicketkitError(f"--store hf://... pushes finished cells with ticketkit.hub, which is not available: {e}") from None
    org, _, prefix = spec.strip("/").partition("/")
    if not org or "/" in prefix:
        raise TicketkitError(f"--store hf://{spec}: expected hf://ORG or hf://ORG/PREFIX (each cell goes to ORG/PREFIX-<cell>)")
    hub.parse_spec(hub_repo(spec, "find-imdb-cnn-000000000000"))
    hub.require_token()
