"""Transfer levels with 3 arms: worker processes against the same arms trained one after another.

    python bench/bench_arms.py                               # CNN, 3 levels, 4k reviews, 2 epochs, 2 reps
    python bench/bench_arms.py --arch lstm --levels 16.9 --workers 3

Both sides are `ticketkit.transfer.transfer_ticket` itself, on the same source ticket and settings:
`workers=1` trains the arms in this process one after another (torch's default threads, i.e. every core), and
`workers=N` hands them to N spawned processes with one thread each. Each repetition writes into a fresh
temporary store, so nothing is reused between them; the two sides alternate (A, B, A, B, ...). The rows of both
sides are compared: worker processes must not change a single accuracy.
The source is a small IMDB find run made once and kept in the bench cache.
A level's time is the run's training phase (results.json `timing.train_seconds`) over the number of levels: within
a transfer the levels share one pool of workers, so a single-level run (`--densities 16.9`) also charges the level with
spawning the workers and their first-use costs (torch import, oneDNN kernels built per shape), which a transfer of
several levels pays once.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common as C
from ticketkit.config import DataHparams, FindConfig, ModelHparams, PruneHparams, TrainHparams
from ticketkit.find import find_ticket
from ticketkit.transfer import TransferConfig, transfer_ticket

ARMS = ["random-prune", "random-reinit"]  # + the transferred arm = 3 arms at one level


def source_run(arch: str, max_train: int, epochs: int) -> Path:
    cfg = FindConfig(data=DataHparams(dataset="imdb", max_train=max_train, max_test=2000),
                     model=ModelHparams(arch=arch), train=TrainHparams(epochs=epochs),
                     prune=PruneHparams(rate=0.59, levels=4))
    return find_ticket(cfg, data_dir=C.DATA_DIR, store=C.CACHE / "arms-store", progress=False).path


def one(src: Path, levels: list[float], max_train: int, epochs: int, workers: int) -> tuple[float, float, list]:
    """(seconds of the whole call, seconds of its training phase as the run records it, the rows)."""
    cfg = TransferConfig(target="yelp2", seeds=[0], levels=levels, controls=ARMS, fresh=False,
                         max_train=max_train, max_test=2000, workers=workers, train=TrainHparams(epochs=epochs))
    with tempfile.TemporaryDirectory(dir=C.CACHE) as tmp:
        t = time.perf_counter()
        run = transfer_ticket(str(src), cfg, data_dir=C.DATA_DIR, store=tmp, progress=False)
        dt = time.perf_counter() - t
        rows = sorted((r["arm"], r["level"], r["test_accuracy"], r["epochs"]) for r in run.rows)
        return dt, run.results["timing"]["train_seconds"], rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--levels", default="16.9,7.0,2.9", help="comma-separated %% remaining (source has 100..2.8)")
    ap.add_argument("--max-train", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    levels = [float(x) for x in a.levels.split(",")]
    n = len(levels)
    C.CACHE.mkdir(parents=True, exist_ok=True)
    src = source_run(a.arch, a.max_train, a.epochs)
    print(f"{C.device_line()}\nsource {src.name}", flush=True)
    t = {"seq": [], "par": []}
    tr = {"seq": [], "par": []}
    rows = {}
    for _ in range(a.reps):
        for k, w in (("seq", 1), ("par", a.workers)):
            dt, ts, r = one(src, levels, a.max_train, a.epochs, w)
            t[k].append(dt)
            tr[k].append(ts)
            rows.setdefault(k, r)
            print(k, f"{dt:.1f} s (training phase {ts:.1f} s)", r, flush=True)
    same = rows["seq"] == rows["par"]
    seq, par = C.med(t["seq"]), C.med(t["par"])
    tseq, tpar = C.med(tr["seq"]), C.med(tr["par"])
    arms = ["transferred"] + ARMS
    what = "A transfer level" if n == 1 else f"Transfer levels ({n} in one run)"
    body = C.header(f"{what} with 3 arms: {a.workers} worker processes vs one after another ({a.arch})")
    body += (f"\n`transfer_ticket` from a 5-level IMDB find ({a.arch}, {a.max_train:,} reviews, 59 % a round) at "
             f"{', '.join(f'{x:g}' for x in levels)} % remaining, 3 arms per level ({', '.join(arms)}) plus the "
             f"dense row, seed 0, Yelp-2 target with {a.max_train:,} train / 2,000 test reviews, {a.epochs} epochs "
             f"each, no fresh arm: {3 * n + 1} trainings. Sequential: `workers=1` (this process, torch's default "
             f"threads). Parallel: `workers={a.workers}` (spawned processes, one thread each). Two clocks: the whole "
             f"`transfer_ticket` call, and its training phase as the run records it (results.json "
             f"`timing.train_seconds`, after the target data is prepared, which a transfer does once however many "
             f"levels it has; the workers spawn during it). Per level = training phase / {n}. Each repetition in a "
             f"fresh temporary store; medians of {a.reps}, alternating.\n\n")
    same_s = "identical" if same else "DIFFERENT"
    body += C.table([[a.arch, "whole call", f"{seq:.1f}", f"{par:.1f}", f"{seq / par:.2f}x", same_s],
                     [a.arch, f"training phase / {n} = per level", f"{tseq / n:.1f}", f"{tpar / n:.1f}",
                      f"**{tseq / tpar:.2f}x**", same_s]],
                    ["arch", "clock", "sequential (s)", f"{a.workers} workers (s)", "speed-up", "accuracies of the arms"])
    body += ("\n\nTarget: a transfer level with 3 arms finishes >= 1.2x faster than the same arms one after another.\n"
             f"Rows (arm, level, test accuracy, epochs), sequential: {rows['seq']}\n")
    if not same:
        body += f"Rows, {a.workers} workers: {rows['par']}\n"
    C.write_section(f"arms-{a.arch}" if n == 1 else f"arms-{a.arch}-{n}levels", body)
    print(f"sequential {seq:.1f} s, {a.workers} workers {par:.1f} s: {seq / par:.2f}x; training phase "
          f"{tseq:.1f} s vs {tpar:.1f} s: {tseq / tpar:.2f}x; identical={same}")


if __name__ == "__main__":
    main()
