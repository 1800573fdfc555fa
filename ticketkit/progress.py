"""Overall progress of long work, one line per finished unit: "level 3/8" in find, "cell 5/24" in transfer.

The per-epoch tqdm bars show only on a terminal; a log file (a cluster job, `nohup`, CI) gets these lines, each with
the elapsed time and an ETA from the units this process trained (units reused from an earlier, interrupted run
count as done but not toward the rate). Lines go to stderr through log.log, so `--json` keeps stdout clean.
"""
from __future__ import annotations

import time

from .log import log


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Overall:
    def __init__(self, what: str, total: int, progress: bool, prefix: str = ""):
        self.what, self.total, self.progress, self.prefix = what, total, progress, prefix
        self.t0, self.base = time.monotonic(), None

    def line(self, done: int, reused: bool = False) -> str:
        """The line for `done` of `total` finished; `reused`: that unit was finished before this process."""
        if self.base is None or reused:
            self.base, self.t0 = done if reused else done - 1, time.monotonic() if reused else self.t0
        elapsed, fresh = time.monotonic() - self.t0, done - self.base
        left = max(self.total - done, 0)
        eta = "done" if left == 0 else f"ETA {duration(elapsed / fresh * left)}" if fresh > 0 else "ETA ?"
        return f"{self.prefix}{self.what} {done}/{self.total} finished ({duration(elapsed)} so far, {eta})"

    def step(self, done: int, reused: bool = False) -> None:
        log(self.progress, self.line(done, reused))
