"""Ctrl-C in a command that trains: the first finishes the epoch and checkpoints, the second stops at once."""
from __future__ import annotations

import signal

import click


class SigintFlag:
    """First Ctrl-C: finish the current epoch, checkpoint, stop. Second Ctrl-C: stop now (last checkpoint stays)."""

    def __init__(self):
        self.hit = False

    def __call__(self) -> bool:
        return self.hit

    def __enter__(self):
        def handler(signum, frame):
            if self.hit:
                raise KeyboardInterrupt
            self.hit = True
            click.echo("\ninterrupt: stopping after this epoch's checkpoint (Ctrl-C again to stop at once)", err=True)
        self._old = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)
