"""Shared helpers for the hand-run benchmarks: fixed IMDB subsets, side-by-side timing, RESULTS.md sections.

Not part of the package and not tests. Every figure is a ratio measured in one process with the variants
interleaved (A, B, A, B, ...) and medians taken, because the machine is shared and absolute timings drift.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as `python bench/x.py` from a checkout

from ticketkit.config import DataHparams  # noqa: E402
from ticketkit.data import prepare_data  # noqa: E402
from ticketkit.fsio import write_text  # noqa: E402

RESULTS = Path(os.environ.get("TICKETKIT_BENCH_RESULTS", ROOT / "bench" / "RESULTS.md"))
DATA_DIR = Path(os.environ.get("TICKETKIT_DATA_DIR", ROOT.parent / "shared" / "data"))
CACHE = Path(os.environ.get("TICKETKIT_BENCH_CACHE", Path.home() / ".cache" / "ticketkit-bench"))
MAX_LEN, VOCAB, BATCH = 256, 25000, 64


def load(max_train: int, max_test: int = 1000, seed: int = 0, dataset: str = "imdb"):
    """A fixed, stratified IMDB subset with the project defaults (vocab 25k, max_len 256), cached on disk."""
    hp = DataHparams(dataset=dataset, max_train=max_train, max_test=max_test, vocab_size=VOCAB, max_len=MAX_LEN)
    return prepare_data(hp, seed, DATA_DIR, CACHE)


def device_line() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    except (OSError, StopIteration):
        isa = []
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return (f"{cpu}, {os.cpu_count()} logical cores ({', '.join(isa)}), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, oneDNN bf16 {'yes' if bf16 else 'no'}, python {platform.python_version()}")


def _loadavg() -> list[str]:
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return []


def load_avg() -> str:
    la = _loadavg()
    return "load average " + " ".join(la) if la else ""


def interleave(fns: dict, reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each callable `reps` times in round-robin order; return the wall times per name."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return times


def sync_time(fn, device=torch.device("cpu")) -> float:
    """Seconds of fn(); on a GPU with the device drained on both sides, so queued kernels are counted."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def med(xs) -> float:
    return statistics.median(xs)


def spread(xs) -> str:
    return f"{med(xs):.3f} s (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"


def command() -> str:
    nice = os.nice(0)  # the niceness this process really ran at, not an assumed one
    return (f"nice -n {nice} " if nice else "") + "python " + " ".join(["bench/" + Path(sys.argv[0]).name] + sys.argv[1:])


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section `name` of bench/RESULTS.md, keeping the other scripts' sections."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results (issue #7)\n\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_text(RESULTS, text)
    print(f"wrote section {name!r} of {RESULTS}")


def header(title: str) -> str:
    la = _loadavg()
    busy = len(la) == 3 and float(la[1]) > (os.cpu_count() or 1) + 0.5  # the 5-minute load
    who = ("the machine was shared (5-minute load above the core count), so absolute times are inflated"
           if busy else "5-minute load within the core count: no other work contending")
    return (f"## {title}\n\nCommand: `{command()}`  \nDevice: {device_line()}  \n"
            f"Measured {time.strftime('%Y-%m-%d %H:%M')}, {load_avg()} at the end ({who}; ratios are side by side "
            f"in one process, interleaved, medians).\n")


def table(rows: list[list], head: list[str]) -> str:
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(head))) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
