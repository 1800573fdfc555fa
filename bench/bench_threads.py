"""What fixing every training at one torch thread (ticketkit.train.TRAIN_THREADS) costs in-process: one CNN epoch
(project defaults, engine as it is) on an IMDB subset, with 1 thread against 2, interleaved, medians.

    python bench/bench_threads.py --max-train 3000 --reps 3
"""
from __future__ import annotations

import argparse

import common as C
from ticketkit.config import FindConfig
from ticketkit.models import create_model, model_kwargs
import ticketkit.train as T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-train", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--arch", default="cnn")
    a = ap.parse_args()
    d = C.load(a.max_train)
    cfg = FindConfig()
    cfg.model.arch = a.arch
    cfg.train.epochs = 1
    cfg.validate()
    vocab = d.tokenizer.get_vocab_size()

    def epoch(threads):
        def go():
            saved = T.TRAIN_THREADS
            T.TRAIN_THREADS = threads
            try:
                m = create_model(a.arch, vocab, seed=0, **model_kwargs(cfg.model))
                T.train(m, None, d.train, d.val, d.test, cfg.train, 0, progress=False)
            finally:
                T.TRAIN_THREADS = saved
        return go

    la0 = C.load_avg()
    t = C.interleave({"1": epoch(1), "2": epoch(2)}, a.reps)
    la1 = C.load_avg()
    m1, m2 = C.med(t["1"]), C.med(t["2"])
    body = C.header("Thread count: every training at 1 torch thread vs 2 (in-process)")
    body += (f"\nOne {a.arch} training of 1 epoch (train {len(d.train):,} reviews, then validation and test "
             f"evaluation), project defaults, `ticketkit.train.train` with TRAIN_THREADS set to 1 or 2. Median of "
             f"{a.reps} interleaved repetitions after one warm-up each; {la0} before, {la1} after (the machine is "
             f"shared, so 2 threads rarely get 2 free cores).\n\n")
    body += C.table([[a.arch, C.spread(t["1"]), C.spread(t["2"]), f"**{m1 / m2:.2f}x**"]],
                    ["arch", "1 thread (s)", "2 threads (s)", "1 thread / 2 threads"])
    print(body, flush=True)
    C.write_section(f"threads-{a.arch}", body)


if __name__ == "__main__":
    main()
