"""The engine on a GPU: bench_engine's and bench_e2e's measurements there, plus a level's arms stacked into one model.

    python bench/bench_gpu.py --what throughput,masking,arms           # a few minutes on an H100
    python bench/bench_gpu.py --what parity --seeds 40 --arch cnn
    python bench/bench_gpu.py --what find

Needs CUDA. Same shape as the CPU benchmarks: every ratio is measured side by side in this process, interleaved,
medians; every CUDA timing ends with a synchronize. Each part prints its rows and replaces its own gpu-* section of
bench/RESULTS.md (run from a checkout, or write RESULTS.md elsewhere with TICKETKIT_BENCH_RESULTS).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace

import torch

import common as C
import reference as R
import bench_engine as E
from bench_engine import flops_per_token, masks_at, subset, timed
from ticketkit import arms as A
from ticketkit import train as T
from ticketkit.config import DataHparams, FindConfig, PruneHparams, TrainHparams
from ticketkit.controls import REINIT_SEED_OFFSET
from ticketkit.find import find_ticket
from ticketkit.models import create_model, prunable_names
from ticketkit.prune import shuffled_like

DEV = torch.device("cuda")


def sync_time(fn):
    return C.sync_time(fn, DEV)


def gpu_line() -> str:
    if DEV.type != "cuda":
        return C.device_line()
    p = torch.cuda.get_device_properties(0)
    return (f"{p.name} ({p.multi_processor_count} SMs, {p.total_memory / 2 ** 30:.0f} GiB), CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}, torch {torch.__version__}, TF32 matmul "
            f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}")


def header(title: str) -> str:
    return (f"## {title}\n\nCommand: `{C.command()}`  \nDevice: {gpu_line()}  \nMeasured {time.strftime('%Y-%m-%d %H:%M')} "
            f"(ratios side by side in one process, interleaved, medians; CUDA synchronized around every timing).\n")


def gemm_flops(dtype, n: int = 8192, reps: int = 10, tf32: bool = False) -> float:
    n = n if DEV.type == "cuda" else 512
    a, b = torch.randn(n, n, device=DEV, dtype=dtype), torch.randn(n, n, device=DEV, dtype=dtype)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        for _ in range(3):
            a @ b
        return 2 * n ** 3 * reps / sync_time(lambda: [a @ b for _ in range(reps)])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def engine_epoch(*args, **kw) -> float:
    return E.engine_epoch(*args, device=DEV, **kw)


def reference_epoch(*args, **kw) -> float:
    return E.reference_epoch(*args, device=DEV, **kw)


def on_dev(tensors):
    return tuple(t.to(DEV) for t in tensors)


# ------------------------------------------------------------------------------------------------ parts

def part_throughput(ctx, archs, reps):
    vocab, train, tiny, test = ctx["vocab"], ctx["train"], ctx["tiny"], ctx["data"].test
    tr_tok, te_tok = train.tokens(), test.tokens()
    amp = T.resolve_precision("auto", DEV)
    rows, mfu = [], []  # amp: the engine's default on this device
    gemm = {"fp32": [], "bf16": [], "tf32": []}
    ref_tr, ref_te = on_dev(R.padded(train, C.MAX_LEN)), on_dev(R.padded(test, C.MAX_LEN))
    for arch in archs:
        for dens in (1.0, 0.01):
            masks = masks_at(arch, vocab, dens)
            t = timed({"engine": lambda: engine_epoch(arch, vocab, masks, train, tiny),
                       "reference": lambda: reference_epoch(arch, vocab, masks, ref_tr),
                       "gemm_fp32": lambda: gemm["fp32"].append(gemm_flops(torch.float32)) or 0.0,
                       "gemm_bf16": lambda: gemm["bf16"].append(gemm_flops(torch.bfloat16)) or 0.0,
                       "gemm_tf32": lambda: gemm["tf32"].append(gemm_flops(torch.float32, tf32=True)) or 0.0}, reps)
            e, r = C.med(t["engine"]), C.med(t["reference"])
            ee, er = E.eval_pair(arch, vocab, masks, test, ref_te, amp, reps, DEV)
            rows.append(E.speed_row(arch, dens, tr_tok, te_tok, e, r, ee, er))
            print(rows[-1], flush=True)
            if dens == 1.0:
                fpt = flops_per_token(arch)
                g32, g16, gtf = C.med(gemm["fp32"]), C.med(gemm["bf16"]), C.med(gemm["tf32"])
                pk, what = (g16, "bf16") if amp is not None else (gtf, "fp32 with TF32 convolutions; peak: TF32 GEMM")
                mfu.append([arch, f"engine ({what})", f"{fpt * tr_tok / e / 1e12:.2f}", f"{pk / 1e12:.0f}",
                            f"**{fpt * tr_tok / e / pk:.2%}**", f"{fpt * ctx['padded_tokens'] / e / pk:.2%}"])
                mfu.append([arch, "reference (fp32)", f"{fpt * tr_tok / r / 1e12:.2f}", f"{g32 / 1e12:.0f}",
                            f"{fpt * tr_tok / r / g32:.2%}", f"{fpt * len(train) * C.MAX_LEN / r / g32:.2%}"])
                print(mfu[-2:], flush=True)
    body = header("GPU: throughput, engine vs reference loop")
    body += (f"\nAs the CPU section 'throughput': one train epoch over {len(train):,} IMDB reviews ({tr_tok:,} real "
             f"tokens, batch {C.BATCH}), `ticketkit.train.train` on the GPU (data on the device, bucketing, "
             f"precision `auto` = {'bf16 autocast' if amp is not None else 'fp32 (TF32 convolutions)'} on this device, fused Adam, foreach masking, no per-step host sync) vs `bench/reference.py` on the GPU (fp32, "
             f"padded to {C.MAX_LEN}, prune hooks, a `.item()` per step as the tutorial loop has). Eval: "
             f"{len(test):,} test reviews, engine at batch 512 vs reference at {C.BATCH}. Median of {reps}.\n\n")
    body += C.table(rows, ["arch", "density", "ref train tok/s", "engine train tok/s", "train speed-up",
                           "ref eval tok/s", "engine eval tok/s", "eval speed-up"])
    body += "\n\n#" + header("GPU: model FLOP utilisation")
    body += ("\nFLOPs per token as in the CPU section 'mfu'; peak = an 8192^3 GEMM of the dtype on this GPU in the same "
             "run (fp32 without TF32, as the reference runs).\n\n")
    body += C.table(mfu, ["arch", "loop", "achieved TFLOP/s (real tokens)", "same-run GEMM TFLOP/s", "MFU",
                          "MFU executed"])
    body += ("\n\nAt batch 64 these models are far too small to fill an H100: a step is a few hundred small kernels, "
             "bound by launches and latency, not by arithmetic. Stacking a level's arms into one model (section "
             "gpu-arms) is the lever that uses the idle width.\n")
    C.write_section("gpu-throughput", body)


def part_masking(ctx, archs, reps):
    vocab, train, tiny = ctx["vocab"], ctx["train"], ctx["tiny"]
    ref_tr = on_dev(R.padded(train, C.MAX_LEN))
    rows = []
    for arch in archs:
        ones = masks_at(arch, vocab, 1.0)
        t = timed({"none": lambda: engine_epoch(arch, vocab, None, train, tiny),
                   "masked": lambda: engine_epoch(arch, vocab, ones, train, tiny),
                   "ref_plain": lambda: reference_epoch(arch, vocab, ones, ref_tr, hooks=False),
                   "ref_hooks": lambda: reference_epoch(arch, vocab, ones, ref_tr, hooks=True)}, reps)
        m = {k: C.med(v) for k, v in t.items()}
        rows.append([arch, "engine: foreach masks of grads + weights", f"{m['none']:.3f}", f"{m['masked']:.3f}",
                     f"**{m['masked'] / m['none'] - 1:+.1%}**"])
        rows.append([arch, "reference: prune hooks", f"{m['ref_plain']:.3f}", f"{m['ref_hooks']:.3f}",
                     f"{m['ref_hooks'] / m['ref_plain'] - 1:+.1%}"])
        print(rows[-2:], flush=True)
    body = header("GPU: masking cost")
    body += (f"\nOne train epoch ({len(train):,} reviews) with all-ones masks on every prunable weight vs none; median "
             f"seconds of {reps}.\n\n")
    body += C.table(rows, ["arch", "how", "s without masks", "s with masks", "cost"])
    body += "\n\nTarget: masking costs <= 3 % of a step.\n"
    C.write_section("gpu-masking", body)


def part_levers(ctx, archs, reps):
    """Which engine path is fastest on this device: each lever off against the engine's default, one train epoch."""
    vocab, train, tiny = ctx["vocab"], ctx["train"], ctx["tiny"]
    rows = []
    for arch in archs:
        masks = masks_at(arch, vocab, 1.0)
        t = timed({"default": lambda: engine_epoch(arch, vocab, masks, train, tiny),
                   "fp32": lambda: engine_epoch(arch, vocab, masks, train, tiny, precision="fp32"),
                   "bf16": lambda: engine_epoch(arch, vocab, masks, train, tiny, precision="bf16"),
                   "no_bucketing": lambda: engine_epoch(arch, vocab, masks, train, tiny, bucketing=False)}, reps)
        m = {k: C.med(v) for k, v in t.items()}
        for k, what in (("fp32", "precision fp32 (TF32 convolutions, cuDNN's default)"), ("bf16", "bf16 autocast"),
                        ("no_bucketing", "no length bucketing (every batch padded to max_len)")):
            rows.append([arch, what, f"{m[k]:.3f}", f"{m['default']:.3f}", f"**{m[k] / m['default']:.2f}x**"])
            print(rows[-1], flush=True)
    body = header("GPU: levers, one at a time")
    body += (f"\nOne train epoch over {len(train):,} reviews through `ticketkit.train.train` with each setting against "
             f"the engine's default on this device (precision `auto`: {T.resolve_precision('auto', DEV)}); median "
             f"seconds of {reps} interleaved repetitions. Above 1x: the default is faster.\n\n")
    body += C.table(rows, ["arch", "setting", "s", "s default", "setting / default"])
    C.write_section("gpu-levers", body + "\n")


def level_arms(arch: str, vocab: int):
    """A level's three arms as the transfer builds them: the magnitude ticket at 16.8 % (one-shot on the init),
    the same per-layer counts shuffled (random-prune), the same mask over re-drawn weights (random-reinit)."""
    start = {k: v.detach().clone() for k, v in create_model(arch, vocab, seed=0).state_dict().items()}
    reinit = {k: v.detach().clone() for k, v in create_model(arch, vocab, seed=REINIT_SEED_OFFSET).state_dict().items()}
    ticket = masks_at(arch, vocab, 0.168)
    rand = shuffled_like(ticket, torch.Generator().manual_seed(1))
    return ["transferred", "random-prune", "random-reinit"], [start, start, reinit], [ticket, rand, ticket]


def part_arms(ctx, archs, reps):
    d, vocab = ctx["data"], ctx["vocab"]
    h = TrainHparams(epochs=ctx["epochs"], patience=2, batch_size=C.BATCH)
    rows, accs = [], []
    for arch in archs:
        names, starts, masks = level_arms(arch, vocab)
        got = {}

        def sequential():
            def run():
                out = []
                for s, m in zip(starts, masks):
                    model = create_model(arch, vocab, seed=None)
                    model.load_state_dict(s)
                    out.append(T.train(model, m, d.train, d.val, d.test, h, seed=0, device=DEV, progress=False))
                got["seq"] = out
            return sync_time(run)

        def stacked():
            def run():
                got["stk"] = A.train_arms(arch, {}, vocab, starts, masks, d.train, d.val, d.test, h, seed=0,
                                          device=DEV, progress=False)
            return sync_time(run)
        t = timed({"seq": sequential, "stk": stacked}, reps)
        s, k = C.med(t["seq"]), C.med(t["stk"])
        rows.append([arch, f"{s:.1f}", f"{k:.1f}", f"**{s / k:.2f}x**",
                     f"{sum(r.epochs for r in got['seq'])} / {sum(r.epochs for r in got['stk'])}"])
        for n, a, b in zip(names, got["seq"], got["stk"]):
            accs.append([arch, n, f"{a.test['accuracy']:.2%}", f"{b.test['accuracy']:.2%}",
                         f"{(b.test['accuracy'] - a.test['accuracy']) * 100:+.2f}", f"{a.epochs} / {b.epochs}"])
        print(rows[-1], accs[-3:], flush=True)
    body = header("GPU: a transfer level's 3 arms, stacked into one model vs one after another")
    body += (f"\nThree arms of one level (the 16.8 % magnitude ticket, random-prune with the same per-layer counts, "
             f"random-reinit), each a full training with early stopping (up to {ctx['epochs']} epochs, patience 2, "
             f"validation every epoch, test at the best state) on {len(d.train):,} IMDB reviews. Sequential: "
             f"`ticketkit.train.train` three times. Stacked: `ticketkit.arms.train_arms` (one model, grouped "
             f"convolutions / a block-diagonal LSTM, per-arm early stopping), as `transfer` does on a GPU. Each side "
             f"at its own default precision `auto` on this device: {T.resolve_precision('auto', DEV)} for one model, "
             f"{T.resolve_precision('auto', DEV, arms=3)} for the stacked one. Median of "
             f"{reps}, interleaved.\n\n")
    body += C.table(rows, ["arch", "sequential (s)", "stacked (s)", "speed-up", "epochs trained (seq / stacked)"])
    body += "\n\nTarget on a GPU: >= 2x per level over sequential arms.\n\nTest accuracy of each arm, both ways " \
            "(same data, seed and dropout masks; each side at its own default precision, so the gap includes it):\n\n"
    body += C.table(accs, ["arch", "arm", "sequential", "stacked", "gap (points)", "epochs (seq / stacked)"])
    C.write_section("gpu-arms", body + "\n")


def part_parity(ctx, archs, reps):
    """Engine (bf16, bucketing, fused Adam) against the fp32 reference on the same data, init and seed, many seeds:
    paired test-accuracy gaps, mean and 95 % interval."""
    d, vocab, seeds, epochs = ctx["data"], ctx["vocab"], ctx["seeds"], ctx["epochs"]
    ts = [on_dev(R.padded(x, C.MAX_LEN)) for x in (d.train, d.val, d.test)]
    rows = []
    for arch in archs:
        gaps, e_acc, r_acc, e_s, r_s = [], [], [], [], []
        for seed in range(seeds):
            model = create_model(arch, vocab, seed=seed)
            ones = {n: torch.ones_like(model.get_parameter(n), dtype=torch.bool) for n in prunable_names(model)}
            t = time.perf_counter()
            res = T.train(model, ones, d.train, d.val, d.test, TrainHparams(epochs=epochs, patience=epochs,
                          batch_size=C.BATCH), seed=seed, device=DEV, progress=False)
            e_s.append(time.perf_counter() - t)
            ref = R.create(arch, vocab, seed).to(DEV)
            R.attach_masks(ref, {k: v.to(DEV) for k, v in ones.items()})
            t = time.perf_counter()
            rr = R.train(ref, *ts, epochs=epochs, patience=epochs, lr=5e-3, batch_size=C.BATCH, seed=seed)
            r_s.append(time.perf_counter() - t)
            e_acc.append(res.test["accuracy"] * 100)
            r_acc.append(rr["test_accuracy"] * 100)
            gaps.append(e_acc[-1] - r_acc[-1])
            print(arch, seed, f"engine {e_acc[-1]:.2f} reference {r_acc[-1]:.2f} gap {gaps[-1]:+.2f}", flush=True)
        m, sd = statistics.mean(gaps), statistics.stdev(gaps)
        half = 1.96 * sd / len(gaps) ** 0.5
        rows.append([arch, len(gaps), f"{statistics.mean(e_acc):.2f}", f"{statistics.mean(r_acc):.2f}",
                     f"**{m:+.2f}**", f"{sd:.2f}", f"[{m - half:+.2f}, {m + half:+.2f}]",
                     "yes" if -0.3 <= m - half and m + half <= 0.3 else "no",
                     f"{statistics.mean(r_s) / statistics.mean(e_s):.2f}x"])
        print(rows[-1], flush=True)
        cpu = DEV.type == "cpu"  # the one part whose CPU run is a measurement, not a dry run: it has its own section
        title = f"{'CPU' if cpu else 'GPU'}: accuracy parity, engine (bf16) vs the fp32 reference, many seeds"
        body = C.header(title) if cpu else header(title)
        body += (f"\nEach seed: the same init (create_model seed), the same {len(d.train):,}/{len(d.val):,}/{len(d.test):,} "
                 f"IMDB train/validation/test reviews, the same training seed; {epochs} epochs, test at the best validation "
                 f"loss. The engine's batches are length-bucketed, the reference's are not, so the data order differs as "
                 f"well as the precision: the gap is the whole fast path's. 95 % interval = mean +- 1.96 sd/sqrt(n).\n\n")
        body += C.table(rows, ["arch", "seeds", "engine mean acc", "reference mean acc", "mean gap (points)", "sd of gap",
                               "95 % interval", "inside +-0.3?", "time ratio ref/engine"])
        body += "\n\nTarget: test accuracy within 0.3 points of the fp32 reference on the same data and seed.\n"
        # A run of some archs only gets a section of its own, so it does not erase another run's rows.
        name = ("cpu-parity" if cpu else "gpu-parity") + ("" if set(archs) >= {"cnn", "lstm"} else "-" + "-".join(archs))
        C.write_section(name, body)


def part_find(ctx, archs, reps):
    """A whole find on a fixed subset: ticketkit's find_ticket vs the reference IMP loop, both on the GPU."""
    rows = []
    for arch in archs:
        levels, epochs, n = 4, ctx["epochs"], ctx["max_train"]
        cfg = FindConfig(seed=0, data=DataHparams(max_train=n, max_test=1000), train=TrainHparams(epochs=epochs, patience=epochs),
                         prune=PruneHparams(levels=levels, rate=0.2))
        cfg.model = replace(cfg.model, arch=arch)
        d = C.load(n, 1000)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            run = find_ticket(cfg, data_dir=C.DATA_DIR, store=tmp, progress=False, device=DEV)
            e = time.perf_counter() - t
            ea = [r["test_accuracy"] for r in run.levels]
        t = time.perf_counter()
        rr = R.find(arch, d.tokenizer.get_vocab_size(), {}, prunable_names, d, levels, 0.2, epochs, epochs, 5e-3,
                    C.BATCH, 0, C.MAX_LEN, device=DEV)
        r = time.perf_counter() - t
        rows.append([arch, f"{n:,}", levels + 1, f"{r:.1f}", f"{e:.1f}", f"**{r / e:.2f}x**",
                     " ".join(f"{x:.3f}" for x in ea), " ".join(f"{x['test_accuracy']:.3f}" for x in rr)])
        print(rows[-1], flush=True)
    body = header("GPU: a whole find, end to end")
    body += (f"\n`find_ticket` (public API, data prep included, cached) vs the reference IMP loop (prune hooks, "
             f"fp32, padded), 20 % per round, {ctx['epochs']} epochs a training, rewind to init, both on the GPU.\n\n")
    body += C.table(rows, ["arch", "train reviews", "trainings", "reference (s)", "ticketkit (s)", "speed-up",
                           "ticketkit test acc per level", "reference test acc per level"])
    C.write_section("gpu-find", body + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", default="throughput,masking,arms")
    ap.add_argument("--arch", default="cnn,lstm")
    ap.add_argument("--max-train", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cuda", help="cpu: dry-runs this script, except --what parity, which is measured on the CPU too (section cpu-parity); other CPU figures come from bench_engine.py")
    a = ap.parse_args()
    global DEV
    DEV = torch.device(a.device)
    if DEV.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs CUDA; on a CPU run bench_engine.py / bench_e2e.py")
    d = C.load(a.max_train, 5000)
    ctx = {"data": d, "vocab": d.tokenizer.get_vocab_size(), "train": d.train, "tiny": subset(d.val, 16),
           "max_train": a.max_train, "epochs": a.epochs, "seeds": a.seeds}
    ctx["padded_tokens"] = sum(int(d.train.lengths[i].max()) * len(i)
                               for i in T.batches(d.train, C.BATCH, T.epoch_generator(0, 0), True))
    print(gpu_line(), f"train {len(d.train)} reviews, {d.train.tokens():,} tokens", flush=True)
    parts = {"throughput": part_throughput, "masking": part_masking, "arms": part_arms, "parity": part_parity,
             "find": part_find, "levers": part_levers}
    for w in a.what.split(","):
        parts[w](ctx, a.arch.split(","), a.reps)


if __name__ == "__main__":
    main()
