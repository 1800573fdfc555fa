"""Which arithmetic a training ran on, so that no run mixes two kinds of it.

A run's name covers its settings, data and code, not the machine. The same settings and data give the same bits on
the same kind of machine (the same torch build and the same kernels). oneDNN, however, picks its kernels by the CPU's
instructions (AMX, AVX-512 bf16, AVX2), cuBLAS picks them by the GPU model, and `precision = "auto"` means bf16 on one
CPU and fp32 on another. Each of these rounds differently: the LSTM headline's seed 0, trained on an AMX Xeon and on
an AVX-512-bf16 EPYC, differs from its dense level on (docs/results/README.md). So every run records this
fingerprint: a resume on another kind of machine is refused rather than mixing levels, and a report can say where
each number came from.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import TicketkitError
from .fsio import read_json
from .train import default_device, resolve_precision


def fingerprint(device=None, precision: str = "auto", arms: int = 1) -> dict:
    """torch build, device and kernel family, and what `precision` resolves to there (for `arms` stacked models)."""
    dev = torch.device(device) if device is not None else default_device()
    fp = {"torch": torch.__version__, "device": dev.type}
    if dev.type == "cuda":
        fp["kernels"] = torch.cuda.get_device_name(dev)
    else:
        fp["kernels"] = _cpu_kernels()
    fp["precision"] = "bf16" if resolve_precision(precision, dev, arms=arms) is torch.bfloat16 else "fp32"
    return fp


def _cpu_kernels() -> str:
    """The CPU instruction family oneDNN and ATen dispatch to: the part of the CPU that changes the rounding."""
    cap = torch.backends.cpu.get_cpu_capability()  # ATen's vector kernels: DEFAULT, AVX2, AVX512, ...
    extra = [n for n, probe in (("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
             if getattr(torch.cpu, probe, lambda: False)()]
    return "+".join([cap, *extra[:1]])  # AMX implies avx512_bf16; oneDNN's bf16 GEMM takes the best one


def describe(fp: dict | None) -> str:
    if not fp:
        return "an unrecorded machine"
    return f"{fp.get('device')} {fp.get('kernels')}, {fp.get('precision')}, torch {fp.get('torch')}"


def check_same(recorded: dict | None, now: dict, what: str, rd: Path) -> None:
    """A resume continues `what` only on the kind of machine it started on (a run from before this record: on any)."""
    if not recorded or recorded == now:
        return
    k = next(k for k in ("kernels", "precision", "device", "torch") if recorded.get(k) != now.get(k))
    raise TicketkitError(f"{what} started on another kind of machine ({k} {recorded.get(k)}; this machine gives "
                         f"{now.get(k)}), and resuming here would mix the two kinds of arithmetic in one run: resume "
                         f"it on a {describe(recorded)} machine, pass another --store, or delete {rd} to start it over")


def adopt(info: dict, now: dict, trained: bool, what: str, rd: Path) -> None:
    """Resume `what` (its run.json or results.json `info`) on this machine: refused on another kind, recorded when
    nothing has trained yet. A run from before this record that has trained something stays unrecorded."""
    check_same(info.get("numerics"), now, what, rd)
    if "numerics" in info or not trained:
        info["numerics"] = now


def elsewhere(info_path: Path, device=None, precision: str = "auto", arms: int = 1) -> str:
    """For a reused run's log line: where it was trained, when that is not this kind of machine ('' otherwise)."""
    try:
        recorded = read_json(info_path).get("numerics")
    except TicketkitError:
        return ""
    if not recorded or recorded == fingerprint(device, precision, arms):
        return ""
    return f" (trained on {describe(recorded)}; this machine would round differently)"
