"""How many cores ticketkit may use: `--threads N` / TICKETKIT_THREADS, by default the cores this process may run
on (`os.sched_getaffinity`: what taskset, cgroups' cpusets and Slurm leave it), never more.

The budget bounds everything that runs at once: worker processes (`--workers`, `find --n-seeds`, sweeps) are capped
at it, each gets its share (TICKETKIT_THREADS in its environment, so a transfer inside a sweep cell caps its own
workers in turn), and the thread pools outside training (tokenizers' Rayon, OpenMP, MKL, torch's intra-op pool in
this process) get the budget, so they never run more threads than cores. On a shared machine the threads beyond
the free cores only spin and wait: they cost CPU time without buying wall time.

Training itself stays at train.TRAIN_THREADS = 1 torch thread, whatever the budget: oneDNN's reductions round
differently with 1 and 2 threads, and a run's name must mean its bits (its config hash does not, and must not,
depend on the machine). So `--threads` changes how fast, never what: the same command gives the same bits and the
same run name with any budget (tests/test_threads.py checks this). More cores speed a search up through parallel
work: `find --n-seeds N --workers N`, `transfer --workers N`, `sweep --workers N`.
"""
from __future__ import annotations

import os

ENV = "TICKETKIT_THREADS"
# Every native thread pool a process may start: set before torch or tokenizers first start theirs.
POOL_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")
SET_HERE: set = set()  # the POOL_ENV variables apply() set (a user's own setting is left alone, and wins)


def available() -> int:
    """The cores this process may run on (all of them where the OS cannot say)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def budget() -> int:
    """TICKETKIT_THREADS if set (at most `available()`), else `available()`."""
    raw = os.environ.get(ENV, "").strip()
    want = int(raw) if raw.isdigit() and int(raw) > 0 else available()
    return min(want, available())


def cap_workers(workers: int, log=None) -> int:
    """`workers`, at most the budget: N one-thread workers on fewer cores only take turns."""
    b = budget()
    if workers > b and log is not None:
        log(f"note: --workers {workers} is more than the {b} core(s) ticketkit may use (--threads, "
            f"TICKETKIT_THREADS, the CPU affinity): running {b}")
    return max(1, min(workers, b))


def share(workers: int) -> int:
    """Each of `workers` processes' part of the budget (at least 1)."""
    return max(1, budget() // max(1, workers))


def apply(threads: int | None) -> int:
    """Set this process's budget (None: the default) and the native pools' sizes that are not set explicitly;
    returns the budget. Call before torch or tokenizers start their pools (cli.py does, while parsing)."""
    if threads is not None:
        if threads < 1:
            from .errors import TicketkitError

            raise TicketkitError(f"--threads must be at least 1, got {threads}")
        os.environ[ENV] = str(min(threads, available()))
    b = budget()
    os.environ[ENV] = str(b)
    for k in POOL_ENV:
        if k not in os.environ or k in SET_HERE:
            os.environ[k] = str(b)
            SET_HERE.add(k)
    import sys

    if "torch" in sys.modules:  # already imported (the Python API): size its pool now
        sys.modules["torch"].set_num_threads(b)
    return b
