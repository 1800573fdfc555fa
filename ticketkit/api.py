"""What the CLI does, as Python functions: the CLI commands are thin calls into these (and into find_ticket,
transfer_ticket, compare). `ticketkit/__init__.py` exports them:

    push(run_or_ticket, "user/repo", level=None)     one Hub commit (hub.push)
    pull("user/repo@rev")                            -> the verified directory in the store (hub.pull)
    show("find-imdb-cnn-1a2b", level="16.9")         -> Shown(data, text, warnings)
    verify("find-imdb-cnn-1a2b")                     -> {"checked": n, "problems": [...]}
    report("transfer-3c4d")                          -> Reported(data, text, warnings): the report files, rebuilt
    sweep("seed_study", quick=True)                  -> SweepResult (sweep.run_sweep)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import TicketkitError
from .fsio import read_json
from .hub import pull, push  # noqa: F401  (the public push and pull)
from .report.show import Shown, show  # noqa: F401  (the public show)
from .store import Store
from .sweep import run_sweep as sweep  # noqa: F401  (the public sweep)
from .verify import verify_path


def verify(ref: str | None = None, store=None) -> dict:
    """Check a ticket, a run, or (ref None) the whole store: {"checked": tickets checked, "problems": [one line
    each]}; an empty problems list means everything verified."""
    problems, checked = verify_path(None if ref is None else str(ref), store)
    return {"checked": checked, "problems": problems}


def _merged_report(paths: list, out) -> Reported:
    """Replicates run apart, merged (ticketkit.transfer.merge) into `out` (default ./<group name>), atomically."""
    from .fsio import atomic_dir, write_json
    from .report import render_report, summary_table
    from .report.transfer import flag_line, flagged_rows
    from .transfer.merge import merge_replicates

    res = merge_replicates(paths)
    out = Path(out) if out is not None else Path(res["name"])
    if out.exists():  # replace only an earlier merge of the same group, never another directory's files
        old = out / "results.json"
        prev = read_json(old) if old.is_file() else None
        if not (isinstance(prev, dict) and prev.get("name") == res["name"] and prev.get("merged_from")):
            raise TicketkitError(f"{out} exists and is not an earlier merge of {res['name']}: pass a new --out directory")
    with atomic_dir(out, overwrite=True) as tmp:
        write_json(tmp / "results.json", res)
        render_report(res, tmp)
    files = {"results": out / "results.json", "csv": out / "results.csv", "markdown": out / "report.md",
             "plot": out / "accuracy_vs_density.png"}
    return Reported({"name": res["name"], "seeds": sorted(int(s) for s in res["replicates"]),
                     **{k: str(v) for k, v in files.items()}},
                    f"{res['name']}: {len(res['replicates'])} independent replicates merged\n{summary_table(res)}\n"
                    f"wrote {', '.join(str(v) for v in files.values())}",
                    tuple(flag_line(r) for r in flagged_rows(res)))


@dataclass
class Reported:
    data: dict              # what --json prints: the files written
    text: str               # what a person reads
    warnings: tuple = ()    # one line per flagged cell (in the tables, but never evidence)


def report(ref, store=None, out=None) -> Reported:
    """Rebuild a transfer run's results.csv, report.md and accuracy_vs_density.png from its results.json alone, or
    a sweep's report.md and cells.csv over all its cells, or a find run's lottery-ticket figure (with its
    controls from the store). `ref` is a directory or a run name in the store; a list of several transfer
    replicates (`transfer --replicate S`) is merged into their group's report, written to `out`."""
    from .report import render_report, summary_table
    from .report.transfer import flag_line, flagged_rows

    st = store if isinstance(store, Store) else Store(store)
    if isinstance(ref, (list, tuple)):
        if len(ref) > 1:
            return _merged_report([st.find_run(r) for r in ref], out)
        ref = ref[0]
    if out is not None:
        raise TicketkitError("--out is for a merge of several replicates; one run's report is rebuilt in its directory")
    p = st.find_run(ref)
    if (p / "sweep.json").exists():  # a sweep: one report over all its cells
        from .sweep import cell_states, report_sweep

        md = report_sweep(p, cell_states(p))
        return Reported({"report": str(md), "csv": str(p / "cells.csv")},
                        f"{md.read_text().split('## Cells')[0].rstrip()}\nwrote {md}, {p / 'cells.csv'}")
    if (p / "run.json").exists() and not (p / "results.json").exists():  # a find run: the lottery-ticket figure
        from .report.lottery import report_find_run

        res = report_find_run(p)
        return Reported(res.data, res.text)
    if not (p / "results.json").exists():
        raise TicketkitError(f"{p} has no results.json: pass a find, transfer or sweep run directory (see `ticketkit ls`)")
    results = read_json(p / "results.json")
    if not isinstance(results, dict) or not isinstance(results.get("rows"), list):
        raise TicketkitError(f"{p}/results.json is not a ticketkit transfer result (no 'rows' list)")
    paths = render_report(results, p)
    return Reported({k: str(v) for k, v in paths.items()},
                    f"{summary_table(results)}\nwrote {', '.join(str(v) for v in paths.values())}",
                    tuple(flag_line(r) for r in flagged_rows(results)))
