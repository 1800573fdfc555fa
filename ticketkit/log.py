"""One-line messages for people: progress lines on stderr and one-line error summaries.

stderr, so `--json` keeps stdout machine-readable; flushed, so a worker's lines appear as they happen.
"""
from __future__ import annotations

import sys

from .errors import TicketkitError, redact


def log(progress: bool, msg: str) -> None:
    if progress:
        print(redact(msg), file=sys.stderr, flush=True)


def one_line(e: BaseException) -> str:
    """An exception as one line: a TicketkitError's own message, anything else prefixed by its type."""
    msg = redact(str(e).strip().splitlines()[0]) if str(e).strip() else ""
    return msg if isinstance(e, TicketkitError) else f"{type(e).__name__}: {msg}".rstrip(": ")
