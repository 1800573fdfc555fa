"""What a person watches: the live progress over cells during a sweep, and `sweep status`'s table."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..report.sweep import status_text, summarize
from .state import cell_states

FINISHED = ("done", "failed")


def eta(seconds: float) -> str:
    """A duration as a person reads it: 45s, 12m, 3h05m."""
    s = int(round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


class LiveView:
    """On a terminal, one progress bar over cells: done/total, the running cells, and each failure with its
    one-line error. Off a terminal (a log file, CI) a bar redrawn every second fills the log with thousands of
    lines, so it writes one line per finished cell instead: "cell 3/8 done: <id> (41s), ETA 3m".
    It reads the same files as `sweep status`, so it shows what workers anywhere have recorded."""

    def __init__(self, sweep_dir: Path, enabled: bool, tty: bool | None = None):
        self.sd, self.enabled, self.bar, self.reported = sweep_dir, enabled, None, set()
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.started = False

    def start(self) -> None:
        if not self.enabled:
            return
        states = cell_states(self.sd)
        self.t0, self.started = time.time(), True
        self.reported = {c["id"] for c in states if c["status"] in FINISHED}
        self.before = len(self.reported)  # finished before this run: they do not inform the ETA
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=len(states), desc=self.sd.name, unit="cell", file=sys.stderr, dynamic_ncols=True)
            self.reported = {c["id"] for c in states if c["status"] == "failed"}
        else:
            print(f"{self.sd.name}: {len(states)} cells, {self.before} finished before", file=sys.stderr, flush=True)
        self.refresh(states)

    def refresh(self, states: list[dict] | None = None, running: str | None = None) -> None:
        if not self.started:
            return
        states = states or cell_states(self.sd)
        if self.bar is None:
            self._lines(states)
            return
        s = summarize(states)
        self.bar.n = s["done"]
        running = [c["id"] for c in states if c["status"] == "running" or c["id"] == running]
        names = ", ".join(running[:2]) + (f" +{len(running) - 2}" if len(running) > 2 else "")
        self.bar.set_postfix_str(f"running {len(running)}{': ' + names if running else ''} | failed {s['failed']}",
                                 refresh=False)
        for c in states:
            if c["status"] == "failed" and c["id"] not in self.reported:
                self.reported.add(c["id"])
                self.bar.write(f"FAILED {c['id']}: {c.get('error')}")
        self.bar.refresh()

    def _lines(self, states: list[dict]) -> None:
        """One line per cell that finished since the last refresh, with the ETA from this run's pace."""
        total = len(states)
        for c in states:
            if c["status"] not in FINISHED or c["id"] in self.reported:
                continue
            self.reported.add(c["id"])
            n_new = len(self.reported) - self.before
            left = total - len(self.reported)
            took = f" ({c['seconds']:.0f}s)" if c.get("seconds") is not None else ""
            what = "done" if c["status"] == "done" else f"FAILED: {c.get('error')}"
            pace = (time.time() - self.t0) / n_new
            print(f"cell {len(self.reported)}/{total} {what} {c['id']}{took}, "
                  f"ETA {eta(pace * left) if left else '0s'}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.started:
            self.refresh()
        if self.bar is not None:
            self.bar.close()


def status_table(sweep_dir: Path) -> str:
    """One line per cell, then every failure (or interruption) with its full one-line error."""
    return status_text(Path(sweep_dir).name, cell_states(sweep_dir))
