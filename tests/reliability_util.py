"""Helpers shared by test_reliability.py and test_bad_input.py: the tiny find command, a bit-for-bit snapshot of a
run, a store listing, and the figures report (TICKETKIT_RELIABILITY_REPORT=path) quoted in docs/reliability.md."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from pathlib import Path

from conftest import TINY_FLAGS

VOLATILE = ("seconds", "created", "finished")  # wall-clock fields: the only ones allowed to differ after a resume


def find_argv(data_dir, arch="cnn", levels=2, store="artifacts", extra=()):
    """The tiny find, with a *relative* store, so runs in different working dirs have the same `command`."""
    return [sys.executable, "-m", "ticketkit", "find", "imdb", arch, "--data-dir", str(data_dir), "--store", store,
            "--rounds", str(levels), *TINY_FLAGS, *extra]


def _drop_volatile(o, volatile=VOLATILE):
    if isinstance(o, dict):
        return {k: _drop_volatile(v, volatile) for k, v in o.items() if k not in volatile}
    if isinstance(o, list):
        return [_drop_volatile(v, volatile) for v in o]
    return o


def tensor_digests(path: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    return {k: (str(v.dtype), list(v.shape), hashlib.sha256(v.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest())
            for k, v in load_file(str(path)).items()}


def snapshot(run_dir: Path, same_command: bool = True) -> dict:
    """Everything a run produced, in comparable form: every tensor's bytes (tickets and trained weights), every
    JSON/CSV value except wall-clock fields, every other file's bytes. Manifests are compared without config.json's
    digest (config.json holds `seconds`; its other values are compared directly)."""
    out = {}
    volatile = VOLATILE if same_command else VOLATILE + ("command",)
    for p in sorted(run_dir.rglob("*")):
        if not same_command and p.name == "README.md":  # the model card quotes the command
            continue
        if p.is_dir():
            continue
        rel = str(p.relative_to(run_dir))
        if p.suffix == ".safetensors":
            out[rel] = tensor_digests(p)
        elif p.name == "levels.csv":
            out[rel] = [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(io.StringIO(p.read_text()))]
        elif p.name == "manifest.json":
            m = json.loads(p.read_text())
            m["files"].pop("config.json")
            if not same_command:
                m["files"].pop("README.md")
            out[rel] = m
        elif p.suffix == ".json":
            out[rel] = _drop_volatile(json.loads(p.read_text()), volatile)
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def diff(a: dict, b: dict) -> list[str]:
    return [f"{k}: {str(a.get(k))[:200]} != {str(b.get(k))[:200]}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def listing(store: Path) -> set[str]:
    """Files and dirs in a store, except the lock files and the encoded-data cache (infrastructure, not artifacts)."""
    if not store.exists():
        return set()
    return {str(p.relative_to(store)) for p in store.rglob("*")
            if not str(p.relative_to(store)).startswith((".locks", ".cache"))}


def report(section: str, figures: dict) -> None:
    """Merge `figures` into the JSON report named by TICKETKIT_RELIABILITY_REPORT (no-op when unset)."""
    path = os.environ.get("TICKETKIT_RELIABILITY_REPORT")
    if not path:
        return
    p = Path(path)
    data = json.loads(p.read_text()) if p.exists() else {}
    data[section] = figures
    p.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def reference_run(tmp_path_factory, data_dir, arch="cnn") -> Path:
    """An uninterrupted tiny find (made once per test session, shared by both test files): the bit-for-bit baseline."""
    import subprocess

    root = tmp_path_factory.getbasetemp() / f"reference-{arch}"
    runs = list(root.glob("artifacts/find-*"))
    if runs and (runs[0] / "levels.csv").exists():
        return runs[0]
    root.mkdir(exist_ok=True)
    subprocess.run(find_argv(data_dir, arch, extra=["--quiet"]), cwd=root, check=True, capture_output=True)
    return next(root.glob("artifacts/find-*"))
