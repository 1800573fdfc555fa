"""Sweeps: a grid of conditions x seeds x datasets, each cell one `find` or `transfer` run, on this machine or Ray.

    run_sweep("recipes/seed_study.toml", quick=True)                     # local, one cell after another
    run_sweep("recipes/seed_study.toml", workers=2)                      # local, 2 worker processes
    run_sweep("recipes/seed_study.toml", ray="auto")                     # every cell a Ray task

A sweep recipe is a find recipe ([data], [model], [train], [prune]) plus a [sweep] table of axes, an optional
[transfer] table (the transfer settings) and a [quick] table merged over everything by `--quick`. Each cell is
exactly the run `find`/`transfer` would make with those settings, hash-named as usual, so a finished cell is
reused, never run twice. Dependencies (a random control on its magnitude run, a transfer on its source ticket)
are futures locally and ObjectRefs on Ray: the scheduler is Ray's (or concurrent.futures'), not ours.

State lives in the store, so it survives the driver and can be read from any shell:

    sweep-<hash>/sweep.json          the recipe and the cells (written by the driver only)
    sweep-<hash>/cells/<cell>.json   pending/running/done/failed, error, run path (written by whoever runs the ce

One module per idea: grid.py (recipe -> cells), state.py (the files), cell.py (one cell in a worker),
drivers.py (local pool, Ray), live.py (progress bar, status table). The report is ticketkit.report.sweep.
"""
from ..report.sweep import STATES, report_sweep, summarize  # noqa: F401
from .cell import execute_cell, hub_repo  # noqa: F401
from .drivers import THREAD_ENV, SweepResult, run_sweep  # noqa: F401
from .grid import AXES, SWEEP_KEYS, Cell, Sweep, expand, load_sweep_recipe  # noqa: F401
from .live import LiveView, status_table  # noqa: F401
from .state import cell_file, cell_states, resolve_sweep, run_path, write_sweep  # noqa: F401
