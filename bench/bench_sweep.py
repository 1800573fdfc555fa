"""The same small sweep on the local backend and on a local 2-worker Ray cluster, side by side in one run.

    nice -n 10 python bench/bench_sweep.py                 # real IMDB/Yelp-2 subsamples from ../shared/data
    nice -n 10 python bench/bench_sweep.py --synthetic     # the tests' synthetic data (no shared data needed)

Variants, interleaved (A, B, C, A, B, C, ...), each in a fresh store so nothing is reused:
  local-1   the local backend, cells one after another in this process (torch's default threads)
  local-2   the local backend, 2 spawned worker processes, 1 thread each
  ray-2     a local Ray instance with num_cpus=2, each cell a task with num_cpus=1 (1 thread)
Ray is started once, before the first repetition (its start-up time is reported apart), and its results are
checked to equal the local backend's, cell for cell. Writes the `sweep` section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_DIR, header, load_avg, med, table, write_section  # noqa: E402

from ticketkit.fsio import read_json  # noqa: E402
from ticketkit.sweep import expand, run_sweep  # noqa: E402


def recipe(args) -> dict:
    return {
        "sweep": {"arch": ["cnn"], "control": ["none", "random-prune"], "seed": list(range(args.seeds)),
                  "transfer": ["yelp2"]},
        "transfer": {"levels": [100, 50], "controls": ["random-prune"], "fresh": False},
        "data": {"max_train": args.max_train, "max_test": args.max_test, "vocab_size": 5000, "max_len": 128},
        "model": {"embed_dim": 64, "num_filters": 32},
        "train": {"epochs": args.epochs, "batch_size": 64},
        "prune": {"schedule": "oneshot", "target": 0.5},
    }


def outcome(res) -> dict:
    """Per cell: the test accuracies it produced (find levels, or transfer rows)."""
    out = {}
    for c in res.states:
        run = Path(c["run"])
        if c["kind"] == "find":
            out[c["id"]] = [r["test_accuracy"] for r in read_json(run / "run.json")["levels"]]
        else:
            out[c["id"]] = sorted((r["arm"], r["level"], r["test_accuracy"]) for r in read_json(run / "results.json")["rows"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-train", type=int, default=1000)
    ap.add_argument("--max-test", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--synthetic", action="store_true", help="use the tests' synthetic data instead of ../shared/data")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = ap.parse_args()

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    data_dir = DATA_DIR
    if args.synthetic:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from conftest import make_sentiment_data

        data_dir = tmp / "data"
        make_sentiment_data(data_dir, "imdb", n_train=args.max_train, n_test=args.max_test, seed=0)
        make_sentiment_data(data_dir, "yelp2", n_train=args.max_train, n_test=args.max_test, seed=1)
    rec = recipe(args)
    cells = expand(dict(rec)).cells
    print(f"{len(cells)} cells ({sum(c.kind == 'find' for c in cells)} find, {sum(c.kind == 'transfer' for c in cells)} "
          f"transfer), data {data_dir}", flush=True)

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t
    variants = {
        "local-1": dict(),
        "local-2": dict(workers=2),
        "ray-2": dict(ray="auto"),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    results: dict[str, dict] = {}
    try:
        for rep in range(args.reps):
            for name, kw in variants.items():
                store = tmp / f"{name}-{rep}"
                t = time.perf_counter()
                res = run_sweep(dict(rec), store=store, data_dir=data_dir, progress=False, **kw)
                dt = time.perf_counter() - t
                assert res.counts["done"] == len(cells), (name, res.counts)
                times[name].append(dt)
                results[name] = outcome(res)
                print(f"rep {rep} {name}: {dt:.1f} s", flush=True)
                shutil.rmtree(store, ignore_errors=True)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    identical = results["ray-2"] == results["local-1"] == results["local-2"]
    base = med(times["local-1"])
    rows = [[name, f"{med(ts):.1f}", " / ".join(f"{x:.1f}" for x in ts), f"{base / med(ts):.2f}x"] for name, ts in times.items()]
    ratio = med(times["local-1"]) / med(times["ray-2"])
    ratio2 = med(times["local-2"]) / med(times["ray-2"])
    body = (header("Sweep: local backend vs a local 2-worker Ray cluster") + "\n"
            f"The same sweep, {len(cells)} cells: cnn x (magnitude, random-prune control) x {args.seeds} seeds, one-shot to "
            f"50 %, each magnitude ticket transferred to yelp2 (levels 100/50, random-prune arm, no fresh arm). "
            f"{'Synthetic data' if args.synthetic else 'Real IMDB/Yelp-2'}: max_train {args.max_train}, max_test "
            f"{args.max_test}, vocab 5000, max_len 128, embed 64, 32 filters, {args.epochs} epochs. Each variant runs in a "
            f"fresh store (nothing reused); {args.reps} interleaved repetition(s), medians. Ray start-up "
            f"(`ray.init(num_cpus=2)`, once, not in the times): {ray_start:.1f} s.\n\n"
            + table(rows, ["variant", "median wall s", "each rep", "speed-up vs local-1"]) + "\n\n"
            f"Wall-time ratio local-1 / ray-2: **{ratio:.2f}x**; local-2 / ray-2: **{ratio2:.2f}x**. "
            f"Results identical across the three variants (every cell's test accuracies): **{'yes' if identical else 'NO'}**. "
            f"{load_avg()} at the end.\n")
    print(body)
    if not args.no_write:
        write_section("sweep", body)
    if not identical:
        sys.exit("results differ between backends")


if __name__ == "__main__":
    main()
