"""Digests of what a small find and transfer produce, to show that a refactor changed no bit of any result.

    python bench/redesign_digests.py            # print the digests as JSON
    python bench/redesign_digests.py --check bench/redesign_digests.json   # compare with a committed reference

Runs on synthetic data the tests make (no network, ~1 min on 2 cores): a CNN and an LSTM search (local and global,
rewind to init and to epoch 1), a random-prune and a random-reinit control, and a transfer with every arm, serially.
Every ticket.safetensors is hashed (init, masks, rewind: the bits of the ticket), and every results row is kept
without its timing fields. A behaviour-preserving change must reproduce the reference exactly.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import make_sentiment_data, tiny_find_config as _tiny  # noqa: E402  (sets the offline environment first)

TIMING = ("seconds", "trained_with", "shared_with", "digest", "label")


def _run_digests(run: Path) -> dict:
    out = {}
    for d in sorted(run.glob("level-*")):
        out[d.name] = hashlib.sha256((d / "ticket.safetensors").read_bytes()).hexdigest()[:16]
    return out


def collect() -> dict:
    import ticketkit
    from ticketkit import TransferConfig, find_ticket, transfer_ticket

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_sentiment_data(Path(tmp) / "data", "imdb", seed=0)
        make_sentiment_data(data, "yelp2", seed=1)
        store = Path(tmp) / "store"
        cases = {
            "cnn-local-init": _tiny("cnn"),
            "cnn-global-epoch1": _tiny("cnn", scope="global", rewind="epoch:1"),
            "lstm-local-init": _tiny("lstm"),
            "cnn-random-prune": _tiny("cnn", control="random-prune"),
            "cnn-random-reinit": _tiny("cnn", control="random-reinit"),
        }
        runs = {}
        for name, cfg in cases.items():
            run = find_ticket(cfg, data_dir=data, store=store, progress=False)
            runs[name] = run
            out[f"find/{name}"] = {"levels": _run_digests(run.path),
                                   "rows": [{k: v for k, v in r.items() if k not in TIMING} for r in run.levels]}
        for name in ("cnn-local-init", "lstm-local-init"):
            tcfg = TransferConfig(target="yelp2", seeds=[0, 1], levels=[100.0, 41.1, 16.9],
                                  controls=["random-prune", "random-reinit"], workers=1)
            tcfg.train.epochs, tcfg.train.batch_size = 3, 32
            tr = transfer_ticket(runs[name].path, tcfg, data_dir=data, store=store, progress=False)
            rows = sorted(({k: v for k, v in r.items() if k not in TIMING} for r in tr.rows),
                          key=lambda r: (r["arm"], r["level"], r["seed"]))
            out[f"transfer/{name}"] = rows
    out["_versions"] = {"ticketkit": getattr(ticketkit, "__version__", "?")}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", help="a reference JSON written by this script")
    ap.add_argument("--out", help="write the digests here")
    a = ap.parse_args()
    got = collect()
    got.pop("_versions")
    text = json.dumps(got, indent=1, sort_keys=True)
    if a.out:
        Path(a.out).write_text(text + "\n")
    if not a.check:
        print(text)
        return 0
    ref = json.loads(Path(a.check).read_text())
    bad = [k for k in sorted(set(ref) | set(got)) if ref.get(k) != got.get(k)]
    for k in bad:
        print(f"DIFFERS: {k}\n  reference: {json.dumps(ref.get(k))[:400]}\n  now:       {json.dumps(got.get(k))[:400]}")
    print(f"{len(ref) - len(bad)}/{len(ref)} entries identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
