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


@dataclass
class Reported:
    data: dict              # what --json prints: the files written
    text: str               # what a person reads
    warnings: tuple = ()    # one line per flagged cell (in the tables, but never evidence)


def report(ref: str, store=None) -> Reported:
    """Rebuild a transfer run's results.csv, report.md and accuracy_vs_density.png from its results.json alone, or
    a sweep's report.md and cells.csv over all its cells, or a find run's lottery-ticket figure (with its
    controls from the store). `ref` is a directory or a run name in the store."""
    from .report import render_report, summary_table
    from .report.transfer import flag_line, flagged_rows

    st = store if isinstance(store, Store) else Store(store)
    ref = str(ref)
    p = Path(ref)
    if not p.exists():
        matches = [d for d in (st.root.iterdir() if st.root.is_dir() else []) if d.name == ref or d.name.startswith(ref)]
        if len(matches) != 1:
            raise TicketkitError(f"no single run called {ref!r} in the store {st.root} "
                                 f"({len(matches)} match): pass its directory; see `ticketkit ls`")
        p = matches[0]
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
