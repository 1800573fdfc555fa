"""End to end: one IMP level, a whole small `find`, and accuracy parity, ticketkit against the reference loop.

    nice -n 10 python bench/bench_e2e.py --what parity --arch cnn --seeds 0      # one level on 10k/5k, both loops
    nice -n 10 python bench/bench_e2e.py --what find                              # 3-level find on 2k reviews
    nice -n 10 python bench/bench_e2e.py --quick                                  # small and fast

`parity` trains the same init on the same data and seed with ticketkit's engine (bf16 autocast + bucketing +
fused Adam) and with the fp32 reference loop, and records test accuracy and wall time: it is both the accuracy
check and the "one IMP level" timing (a dense level-0 training with evaluation each epoch and test at the best
validation state). Results accumulate in bench/e2e_results.json (one entry per arch/seed/size), and the
RESULTS.md sections are rebuilt from all of them, so seeds can be added run by run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace

import torch

import common as C
import reference as R
from ticketkit import train as T
from ticketkit.config import DataHparams, FindConfig, PruneHparams, TrainHparams
from ticketkit.find import find_ticket
from ticketkit.fsio import write_json
from ticketkit.models import create_model, prunable_names

STORE = C.ROOT / "bench" / "e2e_results.json"


def load_results() -> list[dict]:
    return json.loads(STORE.read_text()) if STORE.exists() else []


def save_result(r: dict) -> None:
    rs = [x for x in load_results() if x["key"] != r["key"]] + [r]
    write_json(STORE, rs)


def parity(arch: str, seed: int, max_train: int, max_test: int, epochs: int, order: str) -> dict:
    d = C.load(max_train, max_test, seed=seed)
    vocab = d.tokenizer.get_vocab_size()
    hp = TrainHparams(epochs=epochs, patience=epochs, batch_size=C.BATCH, lr=5e-3)
    out = {"key": f"parity/{arch}/{seed}/{max_train}/{max_test}/{epochs}", "kind": "parity", "arch": arch, "seed": seed,
           "max_train": max_train, "max_test": max_test, "epochs": epochs, "train_reviews": len(d.train),
           "test_reviews": len(d.test), "train_tokens": d.train.tokens(), "command": C.command(),
           "device": C.device_line()}

    def run_engine():
        model = create_model(arch, vocab, seed=seed)
        masks = {n: torch.ones_like(model.get_parameter(n), dtype=torch.bool) for n in prunable_names(model)}
        t = time.perf_counter()
        res = T.train(model, masks, d.train, d.val, d.test, hp, seed=seed, device=torch.device("cpu"), progress=False)
        out["engine"] = {"test_accuracy": res.test["accuracy"], "best_epoch": res.best_epoch,
                         "seconds": time.perf_counter() - t, "history": res.history}

    def run_reference():
        model = R.create(arch, vocab, seed)
        R.attach_masks(model, {n: torch.ones_like(model.get_parameter(n), dtype=torch.bool)
                               for n in prunable_names(model)})
        ts = [R.padded(x, C.MAX_LEN) for x in (d.train, d.val, d.test)]
        t = time.perf_counter()
        res = R.train(model, *ts, epochs=epochs, patience=epochs, lr=5e-3, batch_size=C.BATCH, seed=seed)
        out["reference"] = {"test_accuracy": res["test_accuracy"], "seconds": time.perf_counter() - t}

    for which in order.split(","):
        (run_engine if which == "engine" else run_reference)()
        print(arch, seed, which, out[which], flush=True)
    out["load"] = C.load_avg()
    return out


def precision(arch: str, seed: int, max_train: int, max_test: int, epochs: int) -> dict:
    """The engine against itself with bf16 autocast on and off: same init, same bucketed batch order, so the gap
    is the precision's alone (the reference comparison also changes the data order)."""
    d = C.load(max_train, max_test, seed=seed)
    vocab = d.tokenizer.get_vocab_size()
    out = {"key": f"precision/{arch}/{seed}/{max_train}/{max_test}/{epochs}", "kind": "precision", "arch": arch,
           "seed": seed, "train_reviews": len(d.train), "test_reviews": len(d.test), "epochs": epochs,
           "command": C.command(), "device": C.device_line()}
    for prec in ("fp32", "auto"):
        model = create_model(arch, vocab, seed=seed)
        masks = {n: torch.ones_like(model.get_parameter(n), dtype=torch.bool) for n in prunable_names(model)}
        hp = TrainHparams(epochs=epochs, patience=epochs, batch_size=C.BATCH, lr=5e-3, precision=prec)
        t = time.perf_counter()
        res = T.train(model, masks, d.train, d.val, d.test, hp, seed=seed, device=torch.device("cpu"), progress=False)
        out[prec] = {"test_accuracy": res.test["accuracy"], "seconds": time.perf_counter() - t}
        print(arch, seed, prec, out[prec], flush=True)
    return out


def lengths() -> None:
    """Mean tokens per review (cut at max_len) of IMDB and Yelp-2, for time estimates across datasets."""
    from ticketkit.data import load_raw
    tok = C.load(1000).tokenizer  # word-level: the token count does not depend on the vocabulary
    rows = []
    for name in ("imdb", "yelp2"):
        raw = load_raw(name, C.DATA_DIR)
        for sp in ("train", "test"):
            n = [len(e.ids) for e in tok.encode_batch(raw[sp].texts[:5000], add_special_tokens=False)]
            rows.append([name, sp, f"{len(raw[sp]):,}", f"{sum(n) / len(n):.1f}"])
    body = (f"## Review lengths\n\nCommand: `{C.command()}`. Mean tokens per review after truncation to {C.MAX_LEN}, "
            f"first 5,000 reviews of each split.\n\n")
    C.write_section("lengths", body + C.table(rows, ["dataset", "split", "reviews", "mean tokens"]) + "\n")


def small_find(arch: str, max_train: int, levels: int, epochs: int) -> dict:
    """A whole `find` (levels+1 trainings, 20 % per round, rewind to init) through the public API vs the reference."""
    cfg = FindConfig(seed=0, data=DataHparams(max_train=max_train, max_test=1000),
                     train=TrainHparams(epochs=epochs, patience=epochs),
                     prune=PruneHparams(levels=levels, rate=0.2))
    cfg.model = replace(cfg.model, arch=arch)
    out = {"key": f"find/{arch}/{max_train}/{levels}/{epochs}", "kind": "find", "arch": arch, "max_train": max_train,
           "levels": levels, "epochs": epochs, "command": C.command(), "device": C.device_line()}
    d = C.load(max_train, 1000)  # the reference gets the same prepared data (and its prep is not timed)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run = find_ticket(cfg, data_dir=C.DATA_DIR, store=tmp, progress=False)
        out["engine"] = {"seconds": time.perf_counter() - t,
                         "test_accuracy": [r["test_accuracy"] for r in run.levels]}
    print(arch, "engine find", out["engine"], flush=True)
    t = time.perf_counter()
    rows = R.find(arch, d.tokenizer.get_vocab_size(), {}, prunable_names, d, levels, 0.2, epochs, epochs, 5e-3,
                  C.BATCH, 0, C.MAX_LEN)
    out["reference"] = {"seconds": time.perf_counter() - t, "test_accuracy": [r["test_accuracy"] for r in rows]}
    print(arch, "reference find", out["reference"], flush=True)
    out["load"] = C.load_avg()
    return out



def _gap_summary(rows: list[dict], new: str, base: str) -> str:
    """Per architecture: mean (and sd) over seeds of the test-accuracy gap new - base, in points."""
    gaps = {}
    for r in rows:
        gaps.setdefault(r["arch"], []).append((r[new]["test_accuracy"] - r[base]["test_accuracy"]) * 100)
    return "; ".join(f"{a}: mean gap {statistics.mean(g):+.2f} points over {len(g)} seed(s)"
                     + (f" (sd {statistics.stdev(g):.2f})" if len(g) > 1 else "") for a, g in sorted(gaps.items()))

def render() -> None:
    rs = load_results()
    par = [r for r in rs if r["kind"] == "parity"]
    if par:
        rows = []
        for r in sorted(par, key=lambda r: (r["arch"], r["max_train"], r["seed"])):
            e, f = r["engine"], r["reference"]
            rows.append([r["arch"], r["seed"], f"{r['train_reviews']:,} / {r['test_reviews']:,}", r["epochs"],
                         f"{f['test_accuracy']:.2%}", f"{e['test_accuracy']:.2%}",
                         f"{(e['test_accuracy'] - f['test_accuracy']) * 100:+.2f}",
                         f"{f['seconds']:.0f}", f"{e['seconds']:.0f}", f"**{f['seconds'] / e['seconds']:.2f}x**",
                         f"`{r['command']}`"])
        summary = _gap_summary(par, "engine", "reference")
        body = (f"## Accuracy parity and one IMP level, end to end\n\nDevice: {par[0]['device']}  \n"
                f"Each row: the same initial weights (create_model seed), the same subset and split, trained once by "
                f"`ticketkit.train.train` (bucketing, bf16 autocast, fused Adam, foreach masks, eval at 512) and once by "
                f"`bench/reference.py` (fp32, padded to 256, Adam, prune hooks, eval at 64); fixed epochs (patience = "
                f"epochs), evaluation on the validation split after each epoch, test at the best-validation state. "
                f"The seconds are one whole level (a dense level-0 training with its evaluations), run one after the "
                f"other in the same process. Shared, loaded machine: times are inflated, compare within a row.\n\n")
        body += C.table(rows, ["arch", "seed", "train / test reviews", "epochs", "reference test acc",
                               "engine test acc", "gap (points)", "reference s", "engine s", "level speed-up",
                               "command"])
        body += f"\n\n{summary}. Target: within 0.3 points of the fp32 reference.\n"
        C.write_section("parity", body)
    pr = [r for r in rs if r["kind"] == "precision"]
    if pr:
        rows = [[r["arch"], r["seed"], f"{r['train_reviews']:,} / {r['test_reviews']:,}", r["epochs"],
                 f"{r['fp32']['test_accuracy']:.2%}", f"{r['auto']['test_accuracy']:.2%}",
                 f"{(r['auto']['test_accuracy'] - r['fp32']['test_accuracy']) * 100:+.2f}",
                 f"{r['fp32']['seconds']:.0f}", f"{r['auto']['seconds']:.0f}", f"`{r['command']}`"]
                for r in sorted(pr, key=lambda r: (r["arch"], r["seed"]))]
        summary = _gap_summary(pr, "auto", "fp32")
        body = (f"## Accuracy: bf16 autocast against fp32, same engine, same batch order\n\nDevice: {pr[0]['device']}  \n"
                f"`ticketkit.train.train` twice per row, `precision=fp32` and `precision=auto` (bf16 autocast here), same "
                f"init, data and bucketed batch order, fixed epochs, test at the best-validation state.\n\n")
        body += C.table(rows, ["arch", "seed", "train / test reviews", "epochs", "fp32 test acc", "bf16 test acc",
                               "gap (points)", "fp32 s", "bf16 s", "command"])
        C.write_section("precision", body + f"\n\n{summary}.\n")
    fs = [r for r in rs if r["kind"] == "find"]
    if fs:
        rows = [[r["arch"], f"{r['max_train']:,}", r["levels"] + 1, r["epochs"], f"{r['reference']['seconds']:.0f}",
                 f"{r['engine']['seconds']:.0f}", f"**{r['reference']['seconds'] / r['engine']['seconds']:.2f}x**",
                 " / ".join(f"{a:.1%}" for a in r["reference"]["test_accuracy"]),
                 " / ".join(f"{a:.1%}" for a in r["engine"]["test_accuracy"]), f"`{r['command']}`"] for r in fs]
        body = (f"## A whole find, end to end\n\nDevice: {fs[0]['device']}  \n"
                f"`ticketkit.find.find_ticket` (public API: data preparation with its disk cache, tokenizer, every "
                f"level's training, tickets written atomically with manifests) against `bench/reference.py:find` (the "
                f"tutorial loop: `l1_unstructured` 20 % per layer per round, rewind to init, same epochs, data prepared "
                f"beforehand and not timed). IMDB subset, 1,000 test reviews, 20 % per round. Run one after the other "
                f"in one process on a loaded machine.\n\n")
        body += C.table(rows, ["arch", "reviews", "trainings", "epochs each", "reference s", "ticketkit s", "speed-up",
                               "reference test acc per level", "ticketkit test acc per level", "command"])
        C.write_section("find", body + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", default="parity,find")
    ap.add_argument("--arch", default="cnn,lstm")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--max-train", type=int, default=10000)
    ap.add_argument("--max-test", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--find-train", type=int, default=2000)
    ap.add_argument("--find-levels", type=int, default=2, help="pruning rounds after the dense level")
    ap.add_argument("--find-epochs", type=int, default=2)
    ap.add_argument("--order", default="engine,reference")
    ap.add_argument("--quick", action="store_true", help="1,000/500 reviews, 1 epoch; 600-review find")
    ap.add_argument("--render", action="store_true", help="only rebuild the RESULTS.md sections")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quick:
        a.max_train, a.max_test, a.epochs, a.find_train, a.find_epochs = 1000, 500, 1, 600, 1
    if a.what == "lengths":
        return lengths()
    if not a.render:
        for w in a.what.split(","):
            for arch in a.arch.split(","):
                if w == "precision":
                    for s in a.seeds.split(","):
                        save_result(precision(arch, int(s), a.max_train, a.max_test, a.epochs))
                        render()
                elif w == "parity":
                    for s in a.seeds.split(","):
                        save_result(parity(arch, int(s), a.max_train, a.max_test, a.epochs, a.order))
                        render()
                else:
                    save_result(small_find(arch, a.find_train, a.find_levels, a.find_epochs))
                    render()
    render()


if __name__ == "__main__":
    main()
