"""Every report ticketkit writes or prints, one module each:

    tables.py     format_table: the plain-text layout all of them share
    levels.py     a find run's levels (the table `find`/`show` print, levels.csv)
    lottery.py    `report <find run>`: accuracy vs % remaining of one IMP run and its controls from the store
    figures.py    what the accuracy-vs-density figures share (log x, ticks, dodged arms, chance line, dense names)
    transfer.py   a transfer experiment (results.csv, report.md, accuracy_vs_density.png, paired differences)
    stats.py      means over usable seeds, t-intervals only for n >= 3, what a flagged cell is
    sweep.py      a sweep (status table, report.md and cells.csv over its cells, and its conditions compared)
    conditions.py conditions compared: accuracy vs % remaining per axis value, paired differences per level
    compare.py    `compare`: the same for runs named by hand (grouped by the settings that differ)
    store.py      what `ls` and `pull` print (the store's runs, a Hub user's repos, pulled tickets)
    show.py       what `show` prints about a ticket or a run

A new report is one module here plus, if a command prints it, one line in cli.py. show.py and store.py are
imported by name (`from ticketkit.report.show import show`): show.py loads tickets and reaches the Hub, which
the reports that find and transfer write never need.
"""
from .levels import levels_csv, levels_table  # noqa: F401
from .sweep import report_sweep, status_text, summarize  # noqa: F401
from .tables import format_table  # noqa: F401
from .transfer import (ARM_ORDER, CSV_COLUMNS, dense_rows, paired_comparisons, plot_accuracy,  # noqa: F401
                       render_markdown, render_report, results_csv, summary_table)
