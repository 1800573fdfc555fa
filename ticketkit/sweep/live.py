"""What a person watches: the live progress bar over cells during a sweep, and `sweep status`'s table."""
from __future__ import annotations

import sys
from pathlib import Path

from ..report.sweep import status_text, summarize
from .state import cell_states


class LiveView:
    """One progress bar over cells: done/total, the running cells, and each failure with its one-line error.
    It reads the same files as `sweep status`, so it shows what workers anywhere have recorded."""

    def __init__(self, sweep_dir: Path, enabled: bool):
        self.sd, self.enabled, self.bar, self.reported = sweep_dir, enabled, None, set()

    def start(self) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        states = cell_states(self.sd)
        self.bar = tqdm(total=len(states), desc=self.sd.name, unit="cell", file=sys.stderr, dynamic_ncols=True)
        self.reported = {c["id"] for c in states if c["status"] == "failed"}
        self.refresh(states)

    def refresh(self, states: list[dict] | None = None, running: str | None = None) -> None:
        if self.bar is None:
            return
        states = states or cell_states(self.sd)
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

    def close(self) -> None:
        if self.bar is not None:
            self.refresh()
            self.bar.close()


def status_table(sweep_dir: Path) -> str:
    """One line per cell, then every failure (or interruption) with its full one-line error."""
    return status_text(Path(sweep_dir).name, cell_states(sweep_dir))
