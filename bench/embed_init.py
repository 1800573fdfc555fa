"""Which embedding initialisation should be the default? Measure it (issue: trustworthy science).

    python bench/embed_init.py --data-dir ../shared/data --store /work/runs/embed-init [--arch cnn lstm]

For each embed_init (xavier, normal, uniform) and architecture: an IMP search on an IMDB subsample (59 % a round to
2.9 %, the project's training otherwise: Adam 5e-3, early stopping, patience 2) and its random-prune control. It prints,
per init: dense validation accuracy, and at 7.0 % and 2.9 % the random-prune control's test accuracy, its majority-class
share and dead-unit share, i.e. whether the control still learns. The same seed draws every init; only the embedding
differs. Resumable (the runs live in --store).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ticketkit import find_ticket
from ticketkit.config import FindConfig


def config(arch: str, init: str, a) -> FindConfig:
    cfg = FindConfig()
    cfg.model.arch, cfg.model.embed_init = arch, init
    cfg.data.max_train, cfg.data.max_test = a.max_train, a.max_test
    cfg.train.epochs = a.epochs
    cfg.prune.rate, cfg.prune.levels = 0.59, 4
    return cfg.validate()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--arch", nargs="+", default=["cnn", "lstm"])
    ap.add_argument("--inits", nargs="+", default=["xavier", "normal", "uniform"])
    ap.add_argument("--max-train", type=int, default=5000)
    ap.add_argument("--max-test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = []
    for arch in a.arch:
        for init in a.inits:
            t0 = time.time()
            cfg = config(arch, init, a)
            imp = find_ticket(cfg, data_dir=a.data_dir, store=a.store, progress=False)
            cfg.prune.control = "random-prune"
            rnd = find_ticket(cfg, data_dir=a.data_dir, store=a.store, progress=False)
            row = {"arch": arch, "embed_init": init, "dense_val_accuracy": imp.levels[0]["val_accuracy"],
                   "dense_test_accuracy": imp.levels[0]["test_accuracy"], "dense_best_epoch": imp.levels[0]["best_epoch"],
                   "minutes": round((time.time() - t0) / 60, 1)}
            for lv, name in ((3, "7.0"), (4, "2.9")):
                for kind, run in (("imp", imp), ("random", rnd)):
                    r = run.levels[lv]
                    row[f"{kind}@{name}"] = {k: r.get(k) for k in ("density_prunable", "test_accuracy", "val_loss",
                                                                   "majority_share", "dead_share", "best_epoch", "epochs")}
            out.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
