"""Worker processes that do not outlive their parent.

A pool worker (a sweep's, a transfer's, find --n-seeds') whose parent is SIGKILLed is re-parented and would train on,
holding its memory, for nobody. `exit_with_parent()`, called in each pool's initializer, starts a daemon thread that
notices the re-parenting within `POLL_SECONDS` and ends the worker. Its checkpoints stay: the same command resumes.
"""
from __future__ import annotations

import os
import threading

POLL_SECONDS = 0.5


def exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        ev = threading.Event()
        while not ev.wait(POLL_SECONDS):
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="ticketkit-exit-with-parent", daemon=True).start()
