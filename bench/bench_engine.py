"""ticketkit's training engine against the reference loop: throughput, MFU, masking cost, levers.

    nice -n 10 python bench/bench_engine.py                 # everything (~25 min on a loaded 2-core CPU)
    nice -n 10 python bench/bench_engine.py --quick         # smaller subset, fewer repetitions
    nice -n 10 python bench/bench_engine.py --what throughput,masking --arch cnn

Each part prints its ratios and replaces its own section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import sys
import contextlib
import time

import torch

import common as C
import reference as R
from ticketkit import train as T
from ticketkit.config import TrainHparams
from ticketkit.data import Encoded
from ticketkit.models import create_model, prunable_names
from ticketkit.prune import full_masks, prune


# ------------------------------------------------------------------------------------------------ setup

def subset(data: Encoded, n: int) -> Encoded:
    return Encoded(data.ids[:n], data.lengths[:n], data.labels[:n])


def masks_at(arch: str, vocab: int, density: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-layer magnitude masks on the initial weights (one shot), the same for engine and reference."""
    m = create_model(arch, vocab, seed=seed)
    w = {k: v.detach() for k, v in m.state_dict().items()}
    full = full_masks(w, prunable_names(m))
    return full if density >= 1 else prune(w, full, 1 - density, "local")


def masks_one_pruned(arch: str, vocab: int) -> dict[str, torch.Tensor]:
    """Every prunable weight masked, one entry per layer pruned: the arithmetic of a dense model, but no layer is
    all ones (the engine skips all-ones masks, section *engine-steps*), so every mask op runs."""
    out = masks_at(arch, vocab, 1.0)
    for m in out.values():
        m.view(-1)[0] = False
    return out


def flops_per_token(arch: str, E: int = 128, F: int = 100, widths=(3, 4, 5), H: int = 128) -> int:
    """Training FLOPs per token: the matmul work of the forward pass x3 (backward = grad input + grad weight).
    CNN: a conv of width w costs 2*E*F*w per output position; LSTM: 2*4H*(E+H) per step. The embedding is a
    gather (no FLOPs); the output layer is per review and negligible; element-wise gates are not counted."""
    fwd = 2 * E * F * sum(widths) if arch == "cnn" else 2 * 4 * H * (E + H)
    return 3 * fwd


@T.fixed_threads  # the peak at the thread count every training runs at (ticketkit.train.TRAIN_THREADS)
def gemm_flops(dtype, n: int = 2048, reps: int = 4) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def hp(**kw) -> TrainHparams:
    return TrainHparams(**{"epochs": 1, "batch_size": C.BATCH, "patience": 5, "eval_batch_size": 512, **kw})


def engine_epoch(arch, vocab, masks, train, tiny, device=torch.device("cpu"), **kw) -> float:
    """One epoch through ticketkit.train.train itself (its evaluation runs on a 16-review set, so ~free)."""
    model = create_model(arch, vocab, seed=0)
    return C.sync_time(lambda: T.train(model, masks, train, tiny, tiny, hp(**kw), seed=0, device=device,
                                       progress=False), device)


@T.fixed_threads  # the reference at the engine's thread count: the ratio is per core, not 1 thread vs all cores
def reference_epoch(arch, vocab, masks, tensors, hooks: bool = True, device=torch.device("cpu"),
                    textbook: bool = True) -> float:
    """One epoch of bench/reference.py's loop; `tensors` must already be on `device`. textbook=False: the reference
    loop around ticketkit's own KimCNN forward (see reference.create)."""
    model = R.create(arch, vocab, 0, textbook=textbook).to(device)
    if hooks:
        R.attach_masks(model, {k: v.to(device) for k, v in masks.items()})
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    torch.manual_seed(0)
    return C.sync_time(lambda: R.train_epoch(model, opt, tensors, C.BATCH, torch.Generator().manual_seed(0)), device)


def eval_pair(arch, vocab, masks, test, ref_test, amp, reps, device=torch.device("cpu")) -> tuple[float, float]:
    """Median seconds of one evaluation of `test`: the engine's `evaluate` at batch 512 (inference_mode, bucketing,
    `amp`) vs the reference's at batch 64 (no_grad, prune hooks, `ref_test` padded and on `device`)."""
    me = create_model(arch, vocab, seed=0).to(device)
    T.Masker(me, masks).weights()
    mr = R.create(arch, vocab, 0).to(device)
    R.attach_masks(mr, {k: v.to(device) for k, v in masks.items()})
    t = timed({"e": lambda: C.sync_time(lambda: T.evaluate(me, test, 512, device, amp), device),
               "r": lambda: C.sync_time(lambda: R.evaluate(mr, ref_test, C.BATCH), device)}, reps)
    return C.med(t["e"]), C.med(t["r"])


def speed_row(arch, dens, tr_tok, te_tok, e, r, ee, er, model: str | None = None) -> list[str]:
    """A throughput table row: train then eval tokens/s, reference and engine, and the engine's speed-up (eval
    columns '-' where ee/er are None); `model` names the reference's model in a column of its own."""
    ev = ["-", "-", "-"] if ee is None else [f"{te_tok / er:,.0f}", f"{te_tok / ee:,.0f}", f"**{er / ee:.2f}x**"]
    return [arch, f"{dens:.0%}", *([model] if model else []), f"{tr_tok / r:,.0f}", f"{tr_tok / e:,.0f}",
            f"**{r / e:.2f}x**", *ev]


def timed(fns: dict, reps: int) -> dict[str, list[float]]:
    """Round-robin; each callable returns its own elapsed seconds (setup outside the timed region)."""
    for f in fns.values():  # warm-up: oneDNN builds its primitives (cuDNN picks its kernels) per shape on first use
        f()
    out = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            out[k].append(f())
    return out


# ------------------------------------------------------------------------------------------------ parts

def part_throughput(ctx, archs, reps):
    d, vocab = ctx["data"], ctx["vocab"]
    train, tiny, test = ctx["train"], ctx["tiny"], d.test
    tr_tok, te_tok = train.tokens(), test.tokens()
    rows, mfu_rows = [], []
    gemm = {"fp32": [], "bf16": []}
    amp = T.resolve_precision("auto", torch.device("cpu"))
    ref_t, ref_test = R.padded(train, C.MAX_LEN), R.padded(test, C.MAX_LEN)
    for arch in archs:
        for dens in (1.0, 0.01):
            masks = masks_at(arch, vocab, dens)
            fns = {"engine": lambda: engine_epoch(arch, vocab, masks, train, tiny),
                   "reference": lambda: reference_epoch(arch, vocab, masks, ref_t),
                   "gemm_fp32": lambda: gemm["fp32"].append(gemm_flops(torch.float32)) or 0.0,
                   "gemm_bf16": lambda: gemm["bf16"].append(gemm_flops(torch.bfloat16)) or 0.0}
            if arch == "cnn":  # the reference loop once more around ticketkit's own KimCNN forward
                fns["shared"] = lambda: reference_epoch(arch, vocab, masks, ref_t, textbook=False)
            t = timed(fns, reps)
            e, r = C.med(t["engine"]), C.med(t["reference"])
            ee, er = eval_pair(arch, vocab, masks, test, ref_test, amp, reps)
            rows.append(speed_row(arch, dens, tr_tok, te_tok, e, r, ee, er,
                                  "textbook Kim CNN" if arch == "cnn" else "ticketkit's (= textbook)"))
            if "shared" in t:
                rows.append(speed_row(arch, dens, tr_tok, te_tok, e, C.med(t["shared"]), None, None,
                                      "ticketkit's KimCNN"))
            print(rows[-1 - ("shared" in t):], flush=True)
            if dens == 1.0:
                fpt = flops_per_token(arch)
                pad_tok = ctx["padded_tokens"]
                g32, g16 = C.med(gemm["fp32"]), C.med(gemm["bf16"])
                ach_e, ach_r = fpt * tr_tok / e, fpt * tr_tok / r
                eng_peak = g16 if amp is not None else g32
                mfu_rows.append([arch, f"{fpt / 1e3:,.0f} k", "engine (" + ("bf16" if amp else "fp32") + ")",
                                 f"{ach_e / 1e9:.1f}", f"{eng_peak / 1e9:.1f}", f"**{ach_e / eng_peak:.0%}**",
                                 f"{fpt * pad_tok / e / eng_peak:.0%}"])
                mfu_rows.append([arch, f"{fpt / 1e3:,.0f} k", "reference (fp32)", f"{ach_r / 1e9:.1f}",
                                 f"{g32 / 1e9:.1f}", f"{ach_r / g32:.0%}",
                                 f"{fpt * len(train) * C.MAX_LEN / r / g32:.0%}"])
                print(mfu_rows[-2:], flush=True)
    g32, g16 = C.med(gemm["fp32"]), C.med(gemm["bf16"])
    body = C.header("Throughput: engine vs reference loop")
    body += (f"\nTrain: one epoch over {len(train):,} IMDB reviews ({tr_tok:,} real tokens, max_len {C.MAX_LEN}, "
             f"vocab {vocab:,}, embed 128, batch {C.BATCH}), `ticketkit.train.train` (bucketing, "
             f"{'bf16 autocast' if amp else 'fp32'}, fused Adam, foreach masking) vs `bench/reference.py` (fp32, "
             f"padded to {C.MAX_LEN}, Adam defaults, `torch.nn.utils.prune` hooks). The reference's CNN is the "
             f"tutorials' Kim CNN (`reference.forward_textbook`: nn.Conv1d on [B, E, L], ReLU, max_pool1d) on "
             f"ticketkit's parameters and init; a second CNN row runs the same loop around ticketkit's own KimCNN "
             f"forward (channels-last convolutions, pooling before ReLU), which credits the model-level speed-ups to "
             f"both sides. The LSTM classifier is the same in both. Eval: {len(test):,} test reviews "
             f"({te_tok:,} tokens), engine `evaluate` at batch 512 vs reference at batch {C.BATCH}. "
             f"Density 1 % = per-layer magnitude masks on the init weights, the same masks for both. Both train at "
             f"{T.TRAIN_THREADS} torch thread(s), the count every ticketkit training runs at (`TRAIN_THREADS`): "
             f"the ratio is per core. "
             f"Tokens/s count real tokens only. Median of {reps} interleaved repetitions after a warm-up.\n\n")
    body += C.table(rows, ["arch", "density", "reference model", "ref train tok/s", "engine train tok/s",
                           "train speed-up", "ref eval tok/s", "engine eval tok/s", "eval speed-up"])
    body += "\n\nTarget: engine trains >= 2.5x the reference's tokens/s on CNN and LSTM.\n"
    C.write_section("throughput", body)
    mb = C.header("Model FLOP utilisation (MFU)")
    mb += (f"\nTraining FLOPs per token counted analytically (`flops_per_token`: the matmul work of the forward pass "
           f"x3; CNN 2*E*F*(3+4+5), LSTM 2*4H*(E+H); embedding gather and element-wise ops not counted). Achieved "
           f"= FLOPs/token x real tokens/s of the dense train epoch above. Peak = a 2048^3 GEMM of the same dtype, "
           f"measured interleaved with the trainings in the same process at the trainings' {T.TRAIN_THREADS} "
           f"thread(s), so MFU is per core: fp32 {g32 / 1e9:.0f} GFLOP/s, "
           f"bf16 {g16 / 1e9:.0f} GFLOP/s (medians of {len(gemm['fp32'])}). 'executed' counts padded tokens too "
           f"(the work the kernels actually did).\n\n")
    mb += C.table(mfu_rows, ["arch", "train FLOPs/token", "loop", "achieved GFLOP/s (real tokens)",
                             "same-run GEMM GFLOP/s", "MFU", "MFU executed"])
    mb += ("\n\nTargets (issue 16): the CNN >= 70 %, the LSTM >= 55 % of the same-run GEMM throughput of its dtype "
           "(issue 7's was the CNN >= 50 %).\n")
    C.write_section("mfu", mb)


class LoopMasker(T.Masker):
    """One multiply per parameter (a Python loop) instead of one foreach call: the lever's 'off' side."""

    def grads(self):
        for p, m in zip(self.params, self.masks):
            if p.grad is not None:
                p.grad.mul_(m)

    @torch.no_grad()
    def weights(self):
        for p, m in zip(self.params, self.masks):
            p.mul_(m)


@contextlib.contextmanager
def patched(**kw):
    old = {k: getattr(T, k) for k in kw}
    for k, v in kw.items():
        setattr(T, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(T, k, v)


def with_patch(fn, **kw):
    def run():
        with patched(**kw):
            return fn()
    return run


def part_masking(ctx, archs, reps):
    vocab, train, tiny = ctx["vocab"], ctx["train"], ctx["tiny"]
    rows = []
    for arch in archs:
        ones = masks_one_pruned(arch, vocab)
        ref_t = R.padded(train, C.MAX_LEN)
        t = timed({"none": lambda: engine_epoch(arch, vocab, None, train, tiny),
                   "foreach": lambda: engine_epoch(arch, vocab, ones, train, tiny),
                   "loop": with_patch(lambda: engine_epoch(arch, vocab, ones, train, tiny), Masker=LoopMasker),
                   "ref_plain": lambda: reference_epoch(arch, vocab, ones, ref_t, hooks=False),
                   "ref_hooks": lambda: reference_epoch(arch, vocab, ones, ref_t, hooks=True)}, reps)
        m = {k: C.med(v) for k, v in t.items()}
        rows.append([arch, "engine: one foreach multiply of the gradients before each step (default)",
                     f"{m['none']:.2f}", f"{m['foreach']:.2f}", f"**{m['foreach'] / m['none'] - 1:+.1%}**"])
        rows.append([arch, "engine: one mul_ per gradient (Python loop)", f"{m['none']:.2f}", f"{m['loop']:.2f}",
                     f"{m['loop'] / m['none'] - 1:+.1%}"])
        rows.append([arch, "reference: torch.nn.utils.prune hooks", f"{m['ref_plain']:.2f}", f"{m['ref_hooks']:.2f}",
                     f"{m['ref_hooks'] / m['ref_plain'] - 1:+.1%}"])
        print(rows[-3:], flush=True)
    body = C.header("Masking cost")
    body += (f"\nOne train epoch ({len(train):,} reviews) with a mask on every prunable weight (one entry per layer "
             f"pruned, so the engine cannot skip a layer as all ones) against the same epoch with no masks at all "
             f"(same arithmetic otherwise). Median seconds of {reps} interleaved "
             f"repetitions.\n\n")
    body += C.table(rows, ["arch", "how masks are applied", "s without masks", "s with masks", "cost"])
    body += "\n\nTarget: masking costs <= 3 % of a step.\n"
    C.write_section("masking", body)


def _bel_input(self, ids, cast_once: bool):
    """The [B, E, L] convolution input of the older CNN forwards, padded so every filter fits. cast_once: cast to
    the autocast dtype here and make it contiguous (session 2); else the transposed view, cast by each conv."""
    x = self.embedding(ids)
    if cast_once and torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    x = x.transpose(1, 2).contiguous() if cast_once else x.transpose(1, 2)
    if x.shape[2] < self.min_len:
        x = torch.nn.functional.pad(x, (0, self.min_len - x.shape[2]))
    return x


def forward_conv1d(self, ids, lengths):
    """KimCNN.forward of session 2: the input cast once and transposed to a contiguous [B, E, L] for nn.Conv1d."""
    x = _bel_input(self, ids, cast_once=True)
    h = torch.relu(torch.cat([conv(x).max(dim=2).values for conv in self.convs], 1))
    return self.fc(self.dropout(h))


def forward_per_conv_cast(self, ids, lengths):
    """KimCNN.forward before issue 7's two changes: autocast casts the fp32 [B, E, L] input (and its gradient)
    separately for each of the three convs, and ReLU runs over the whole [B, F, L] map before an amax (whose
    backward compares the whole map)."""
    x = _bel_input(self, ids, cast_once=False)
    h = torch.cat([torch.relu(conv(x)).amax(dim=2) for conv in self.convs], dim=1)
    return self.fc(self.dropout(h))


def forward_amax(self, ids, lengths):
    """The first change only: the input cast once, pooling still ReLU map + amax."""
    x = _bel_input(self, ids, cast_once=True)
    h = torch.cat([torch.relu(conv(x)).amax(dim=2) for conv in self.convs], dim=1)
    return self.fc(self.dropout(h))


def with_forward(fn, forward, plain_convs: bool = True):
    """Run `fn` with KimCNN.forward swapped for `forward` (the 'off' side of a CNN forward lever). plain_convs: the
    variant feeds its convolutions [B, E, L], so they run as plain nn.Conv1d meanwhile (module calls, so the
    reference's prune hooks still fire); False leaves them channels-last as shipped."""
    from ticketkit.models import Conv1dNLC, KimCNN

    def run():
        shipped = KimCNN.forward, Conv1dNLC.forward
        KimCNN.forward = forward
        if plain_convs:
            Conv1dNLC.forward = torch.nn.Conv1d.forward
        try:
            return fn()
        finally:
            KimCNN.forward, Conv1dNLC.forward = shipped
    return run


def part_cnnforward(ctx, archs, reps):
    """The CNN forward as shipped against its two predecessors, one train epoch through ticketkit.train.train."""
    vocab, train, tiny = ctx["vocab"], ctx["train"], ctx["tiny"]
    masks = masks_at("cnn", vocab, 1.0)
    base = lambda: engine_epoch("cnn", vocab, masks, train, tiny)
    t = timed({"shipped": base, "max_dim2": with_forward(base, forward_max_dim2, plain_convs=False), "conv1d": with_forward(base, forward_conv1d),
               "amax": with_forward(base, forward_amax), "per_conv": with_forward(base, forward_per_conv_cast)}, reps)
    m = {k: C.med(v) for k, v in t.items()}
    rows = [["[B, L, E] input straight into channels-last 2-D convolutions, input cast once, "
             "adaptive_max_pool1d, then ReLU (shipped, session 5)", f"{m['shipped']:.2f}", "1.00x"],
            ["the same, pooled with max-with-indices `.max(dim=2)` (session 4)", f"{m['max_dim2']:.2f}",
             f"**{m['max_dim2'] / m['shipped']:.2f}x**"],
            ["transposed to a contiguous [B, E, L] for nn.Conv1d, max-with-indices (session 2)", f"{m['conv1d']:.2f}",
             f"**{m['conv1d'] / m['shipped']:.2f}x**"],
            ["input cast once, ReLU map + amax", f"{m['amax']:.2f}", f"**{m['amax'] / m['shipped']:.2f}x**"],
            ["each conv casts its input, ReLU map + amax (before issue 7)", f"{m['per_conv']:.2f}",
             f"**{m['per_conv'] / m['shipped']:.2f}x**"]]
    for r in rows:
        print(r, flush=True)
    body = C.header("CNN forward variants")
    body += (f"\nOne train epoch over {len(train):,} reviews through `ticketkit.train.train` with `KimCNN.forward` "
             f"swapped for each variant (same init, data, masks); median seconds of {reps} interleaved repetitions. "
             f"'slower by' is the variant's time over the shipped forward's.\n\n")
    body += C.table(rows, ["forward", "s per epoch", "slower by"])
    C.write_section("cnnforward", body)


class OnesMasker(T.Masker):
    """The Masker before session 5: layers whose mask prunes nothing are multiplied by ones all the same."""

    def __init__(self, model, masks):
        params = dict(model.named_parameters())
        masks = masks or {}
        self.names = list(masks)
        self.params = [params[n] for n in masks]
        self.masks = [masks[n].to(device=params[n].device, dtype=params[n].dtype) for n in masks]


MAKE_OPTIMIZER = T.make_optimizer


def zeroing_optimizer(model, lr):
    """make_optimizer whose zero_grad keeps the gradient buffers and fills them with zeros (before session 5)."""
    opt = MAKE_OPTIMIZER(model, lr)  # the shipped one (T.make_optimizer is this function while patched)
    zg = opt.zero_grad
    opt.zero_grad = lambda set_to_none=True: zg(set_to_none=False)
    return opt


def remasking_optimizer(model, lr):
    """make_optimizer whose step also multiplies every masked weight by its mask afterwards, the textbook second
    multiply (before session 5). The masks are read from the Masker that train() builds right after this."""
    opt = MAKE_OPTIMIZER(model, lr)
    step = opt.step

    def step_then_mask(*a, **kw):
        out = step(*a, **kw)
        mk = REMASK["masker"]
        if mk.params:
            with torch.no_grad():
                torch._foreach_mul_(mk.params, mk.masks)
        return out
    opt.step = step_then_mask
    return opt


REMASK: dict = {}


class RemaskMasker(T.Masker):
    def __init__(self, model, masks):
        super().__init__(model, masks)
        REMASK["masker"] = self


def forward_max_dim2(self, ids, lengths):
    """KimCNN.forward of session 4: channels-last convolutions, pooled with .max(dim=2) (max with indices)."""
    x = self.embedding(ids)
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    if x.shape[1] < self.min_len:
        x = torch.nn.functional.pad(x, (0, 0, 0, self.min_len - x.shape[1]))
    h = torch.relu(torch.cat([conv(x).max(dim=2).values for conv in self.convs], dim=1))
    return self.fc(self.dropout(h))


def part_steps(ctx, archs, reps):
    """Session 5's four changes to a training step, each switched off alone (three at density 100 %, the post-step
    weight multiply at 1 %, where it has work to do)."""
    vocab, train, tiny = ctx["vocab"], ctx["train"], ctx["tiny"]
    rows = []
    for arch in archs:
        masks = masks_at(arch, vocab, 1.0)
        sparse = masks_at(arch, vocab, 0.01)
        base = lambda: engine_epoch(arch, vocab, masks, train, tiny)  # noqa: E731
        base1 = lambda: engine_epoch(arch, vocab, sparse, train, tiny)  # noqa: E731
        fns = {"shipped": base, "zeros": with_patch(base, make_optimizer=zeroing_optimizer),
               "ones": with_patch(base, Masker=OnesMasker), "shipped1": base1,
               "remask1": with_patch(base1, make_optimizer=remasking_optimizer, Masker=RemaskMasker)}
        if arch == "cnn":
            fns["max"] = with_forward(base, forward_max_dim2, plain_convs=False)
        t = timed(fns, reps)
        m = {k: C.med(v) for k, v in t.items()}
        rows.append([arch, "100 %", "as shipped", f"{m['shipped']:.2f}", "1.00x"])
        what = {"zeros": "gradients zeroed in place (`zero_grad(set_to_none=False)`) instead of set to None",
                "ones": "all-ones masks multiplied in anyway (two passes over every weight and gradient a step)",
                "max": "max-over-time pooling by `.max(dim=2)` instead of `adaptive_max_pool1d`"}
        for k in ("max", "zeros", "ones"):
            if k in m:
                rows.append([arch, "100 %", what[k], f"{m[k]:.2f}", f"**{m[k] / m['shipped']:.2f}x**"])
        rows.append([arch, "1 %", "as shipped", f"{m['shipped1']:.2f}", "1.00x"])
        rows.append([arch, "1 %", "weights multiplied by their masks again after every optimizer step",
                     f"{m['remask1']:.2f}", f"**{m['remask1'] / m['shipped1']:.2f}x**"])
        for r in rows[-len(fns):]:
            print(r, flush=True)
    body = C.header("Training step: four changes of session 5, each switched off alone")
    body += (f"\nOne train epoch over {len(train):,} reviews through `ticketkit.train.train` with one change undone "
             f"at a time: at density 100 % (all-ones masks, as at a find's level 0 or a dense arm) and at 1 % "
             f"(per-layer magnitude masks); median seconds of {reps} interleaved repetitions. 'slower by' is that "
             f"variant's time over the shipped engine's at the same density. None of the four changes the "
             f"arithmetic of training: the same maximum and gradient, the same gradients, multiplying by one, and "
             f"multiplying weights that are already exactly zero by zero.\n\n")
    body += C.table(rows, ["arch", "density", "variant", "s per epoch", "slower by"])
    C.write_section("engine-steps", body)


def _alloc_child(ctx, archs, reps):
    """Run in a subprocess by part_allocator: one warm-up, then `reps` engine and reference epochs at density 1 %;
    prints one JSON line of wall seconds, kernel seconds and minor page faults per epoch."""
    import json
    import resource

    vocab, train, tiny = ctx["vocab"], ctx["train"], ctx["tiny"]
    arch = archs[0]
    ms = {d: masks_at(arch, vocab, d) for d in (1.0, 0.01)}
    ref_t = R.padded(train, C.MAX_LEN)
    out = {"allocator": T.tune_allocator()}  # honours the TICKETKIT_MALLOC the parent set
    fns = {}
    for d, m in ms.items():
        fns[f"engine@{d}"] = lambda m=m: engine_epoch(arch, vocab, m, train, tiny)
        fns[f"reference@{d}"] = lambda m=m: reference_epoch(arch, vocab, m, ref_t)
    for k, f in fns.items():
        f()
        rows = []
        for _ in range(reps):
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            wall = f()
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            rows.append([wall, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt])
        out[k] = [C.med([r[i] for r in rows]) for i in range(3)]
    print("ALLOC " + json.dumps(out), flush=True)


def part_allocator(ctx, archs, reps):
    """glibc malloc as it comes (TICKETKIT_MALLOC=system) vs ticketkit's tune_allocator, each in fresh processes
    (the setting is per process), alternating; the reference loop measured in the same processes."""
    import json
    import os
    import subprocess

    rows = []
    for arch in archs:
        got: dict = {"system": [], "tuned": []}
        for _ in range(2):
            for mode in ("system", "tuned"):
                env = {**os.environ, "TICKETKIT_MALLOC": "system" if mode == "system" else ""}
                cmd = [sys.executable, __file__, "--what", "_alloc_child", "--arch", arch, "--reps", str(reps),
                       "--max-train", str(ctx["max_train"])]
                p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                got[mode].append(json.loads(next(x for x in p.stdout.splitlines() if x.startswith("ALLOC "))[6:]))
        for d in (1.0, 0.01):
            med = {(side, m): [C.med([g[f"{side}@{d}"][i] for g in got[m]]) for i in range(3)]
                   for side in ("engine", "reference") for m in ("system", "tuned")}
            for side in ("engine", "reference"):
                s_, t_ = med[(side, "system")], med[(side, "tuned")]
                # the engine as shipped against the reference loop as a researcher runs it (its own process, glibc)
                vs = f"**{med[('reference', 'system')][0] / t_[0]:.2f}x**" if side == "engine" else "-"
                rows.append([arch, f"{d:.0%}", side, f"{s_[0]:.2f}", f"{s_[1]:.2f}", f"{s_[2]:,.0f}", f"{t_[0]:.2f}",
                             f"{t_[1]:.2f}", f"{t_[2]:,.0f}", f"**{s_[0] / t_[0]:.2f}x**", vs])
                print(rows[-1], flush=True)
    body = C.header("Allocator: glibc malloc as it comes vs `ticketkit.train.tune_allocator`")
    body += (f"\nOne train epoch over {len(ctx['train']):,} reviews at density 100 % and 1 %, engine (`ticketkit.train.train`) and "
             f"reference loop, each process either with glibc's defaults (`TICKETKIT_MALLOC=system`) or with "
             f"`tune_allocator` (mmap and trimming off: freed memory stays in the heap for the next step). The setting "
             f"is per process, so each side runs in fresh processes: 2 per setting, alternating, each a warm-up then "
             f"the median of {reps} epochs. Kernel seconds and minor page faults from getrusage, per epoch.\n\n")
    body += C.table(rows, ["arch", "density", "loop", "glibc s/epoch", "kernel s", "page faults", "tuned s/epoch",
                           "kernel s", "page faults", "speed-up from tuning", "engine (tuned) vs reference (glibc)"])
    body += ("\n\nThe engine calls `tune_allocator` at the start of every training, so in a benchmark that runs both "
             "loops in one process (*throughput*, *mfu*, *engine-steps*) the reference loop gets it too: those "
             "ratios do not credit the engine with it. The last column does: ticketkit as it ships against the "
             "reference loop in a plain Python process, both timed in this run.\n")
    C.write_section("allocator", body)


def part_levers(ctx, archs, reps):
    d, vocab, train, tiny, test = ctx["data"], ctx["vocab"], ctx["train"], ctx["tiny"], ctx["data"].test
    dev = torch.device("cpu")
    amp = T.resolve_precision("auto", dev)
    rows = []

    def adam(kind):
        def make(model, lr):
            ps = [p for p in model.parameters() if p.requires_grad]
            return torch.optim.Adam(ps, lr=lr, **({"fused": True} if kind == "fused" else
                                                   {"foreach": True} if kind == "foreach" else {"foreach": False}))
        return make

    for arch in archs:
        masks = masks_at(arch, vocab, 1.0)
        base = lambda **kw: (lambda: engine_epoch(arch, vocab, masks, train, tiny, **kw))
        fns = {"default": base(),
               "no_bucketing": base(bucketing=False),
               "fp32": base(precision="fp32"),
               "adam_foreach": with_patch(base(), make_optimizer=adam("foreach")),
               "adam_loop": with_patch(base(), make_optimizer=adam("loop"))}
        if arch == "cnn":
            fns["cast_per_conv"] = with_forward(base(), forward_per_conv_cast)
        t = timed(fns, reps)
        m = {k: C.med(v) for k, v in t.items()}
        for k, what in (("no_bucketing", "length bucketing (off: every batch padded to max_len)"),
                        ("fp32", "bf16 autocast (off: fp32)"),
                        ("adam_foreach", "fused Adam (off: foreach Adam)"),
                        ("adam_loop", "fused Adam (off: for-loop Adam)"),
                        ("cast_per_conv", "CNN forward: input cast once, ReLU after max-with-indices pooling (off: each conv casts, ReLU map + amax)")):
            if k not in m:
                continue
            rows.append([arch, what, f"{m[k]:.2f}", f"{m['default']:.2f}", f"**{m[k] / m['default']:.2f}x**"])
            print(rows[-1], flush=True)
        # evaluation: inference_mode at 512 (default) vs batch 64, vs autograd left on at 64
        model = create_model(arch, vocab, seed=0)
        T.Masker(model, masks).weights()

        def ev(bs, grad):
            def run():
                t0 = time.perf_counter()
                if grad:
                    model.eval()
                    for idx in T.batches(test, bs, None, bucketing=True):
                        ids, lengths, labels = T.take(test, idx, dev)
                        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
                            model(ids, lengths).float().argmax(1)
                else:
                    T.evaluate(model, test, bs, dev, amp)
                return time.perf_counter() - t0
            return run
        te = timed({"512": ev(512, False), "64": ev(64, False), "64grad": ev(64, True)}, reps)
        me = {k: C.med(v) for k, v in te.items()}
        rows.append([arch, "eval at batch 512 (off: batch 64, inference_mode)", f"{me['64']:.2f}", f"{me['512']:.2f}",
                     f"**{me['64'] / me['512']:.2f}x**"])
        rows.append([arch, "eval without autograd at 512 (off: autograd on, batch 64)", f"{me['64grad']:.2f}",
                     f"{me['512']:.2f}", f"**{me['64grad'] / me['512']:.2f}x**"])
        print(rows[-2:], flush=True)
    # tokenized data cached on disk as int tensors: re-tokenize vs load the safetensors cache
    import tempfile
    from ticketkit.data import encode, load_raw, make_splits
    from ticketkit.config import DataHparams
    raw = load_raw("imdb", C.DATA_DIR)
    sp = make_splits(raw, DataHparams(max_train=ctx["max_train"], max_test=1000), 0).train
    with tempfile.TemporaryDirectory() as tmp:
        encode(sp, d.tokenizer, C.MAX_LEN, tmp)  # fill the cache

        def cold():
            t0 = time.perf_counter(); encode(sp, d.tokenizer, C.MAX_LEN, None); return time.perf_counter() - t0

        def warm():
            t0 = time.perf_counter(); encode(sp, d.tokenizer, C.MAX_LEN, tmp); return time.perf_counter() - t0
        tc = timed({"cold": cold, "warm": warm}, reps)
    mc, mw = C.med(tc["cold"]), C.med(tc["warm"])
    rows.append(["both", f"encoded ids cached on disk (off: tokenize {len(sp):,} reviews each time)",
                 f"{mc:.3f}", f"{mw:.3f}", f"**{mc / mw:.0f}x**"])
    print(rows[-1], flush=True)
    body = C.header("Levers, one at a time")
    body += (f"\nEach row: the engine with the lever off against the engine as shipped (all levers on), one train epoch "
             f"over {len(train):,} reviews (or one evaluation of {len(test):,} test reviews; or encoding the train "
             f"split), median seconds of {reps} interleaved repetitions. A speed-up above 1 means the lever pays. "
             f"Optimizer variants are swapped in by patching `ticketkit.train.make_optimizer`, so the loop measured "
             f"is `ticketkit.train.train` itself.\n\n")
    body += C.table(rows, ["arch", "lever (what 'off' means)", "s off", "s on (default)", "speed-up"])
    C.write_section("levers", body)


def part_maskstep(ctx, archs, reps):
    """Masking cost per step, isolated: the engine's per-step mask op (one foreach multiply of the gradients) timed
    alone against a whole step without it; the textbook second multiply (weights after the step) beside it.
    Many short repetitions, so a loaded machine's noise averages out better than in whole-epoch timings."""
    train, vocab, dev = ctx["train"], ctx["vocab"], torch.device("cpu")
    amp = T.resolve_precision("auto", dev)
    idx = T.batches(train, C.BATCH, T.epoch_generator(0, 0), True)
    rows = []
    for arch in archs:
        model = create_model(arch, vocab, seed=0)
        masks = masks_one_pruned(arch, vocab)
        opt, mk = T.make_optimizer(model, 5e-3), T.Masker(model, masks)
        it = iter(range(10 ** 9))
        post: list[float] = []

        def step(masked):
            def run():
                ids, lengths, labels = T.take(train, idx[next(it) % len(idx)], dev)
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
                    loss = torch.nn.functional.cross_entropy(model(ids, lengths).float(), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                tm = tw = 0.0
                if masked:
                    t1 = time.perf_counter(); mk.grads(); tm += time.perf_counter() - t1
                opt.step()
                if masked:  # what the engine no longer does each step (see Masker): timed for comparison only
                    t1 = time.perf_counter(); mk.weights(); tw += time.perf_counter() - t1
                total = time.perf_counter() - t0
                if masked:
                    post.append(tw)
                return tm if masked else total
            return run
        t = timed({"mask_ops": step(True), "step": step(False)}, reps)
        mo, st, pw = C.med(t["mask_ops"]), C.med(t["step"]), C.med(post)
        rows.append([arch, f"{st * 1e3:.1f}", f"{mo * 1e3:.2f}", f"**{mo / st:.1%}**", f"{pw * 1e3:.2f}",
                     f"{(mo + pw) / st:.1%}"])
        print(rows[-1], flush=True)
    body = C.header("Masking cost per step, isolated")
    body += (f"\nThe engine's per-step mask op (one foreach multiply of the gradients before the optimizer step) timed "
             f"on its own, against a whole training step (forward, backward, fused Adam) without it, on real bucketed "
             f"batches of {C.BATCH} reviews; median of {reps} interleaved steps. All prunable weights masked (one entry "
             f"per layer pruned). The last two columns add the textbook second multiply (the weights after the step), "
             f"which the engine dropped in session 5: masked gradients alone keep pruned weights at zero under Adam "
             f"(`ticketkit.train.Masker`, checked once an epoch).\n\n")
    body += C.table(rows, ["arch", "step without masks (ms)", "engine mask op (ms)", "cost", "weights after the step (ms)",
                           "cost with both"])
    body += "\n\nTarget: masking costs <= 3 % of a step.\n"
    C.write_section("maskstep", body)


def part_evalbatch(ctx, archs, reps):
    """Evaluation batch size sweep (inference_mode, bucketing, bf16 where supported): which batch is fastest here."""
    test, vocab, dev = ctx["data"].test, ctx["vocab"], torch.device("cpu")
    amp = T.resolve_precision("auto", dev)
    sizes = (64, 128, 256, 512)
    rows = []
    for arch in archs:
        model = create_model(arch, vocab, seed=0)

        def ev(bs):
            def run():
                t0 = time.perf_counter(); T.evaluate(model, test, bs, dev, amp); return time.perf_counter() - t0
            return run
        t = timed({bs: ev(bs) for bs in sizes}, reps)
        m = {bs: C.med(v) for bs, v in t.items()}
        rows.append([arch] + [f"{test.tokens() / m[bs]:,.0f}" for bs in sizes] + [f"{m[64] / m[512]:.2f}x"])
        print(rows[-1], flush=True)
    body = C.header(f"Evaluation batch size ({torch.get_num_threads()} thread(s))")
    body += (f"\n`ticketkit.train.evaluate` over {len(test):,} test reviews ({test.tokens():,} tokens), tokens/s, median of "
             f"{reps} interleaved repetitions.\n\n")
    body += C.table(rows, ["arch"] + [f"batch {bs}" for bs in sizes] + ["512 vs 64"])
    C.write_section(f"evalbatch-{torch.get_num_threads()}t", body)


# ------------------------------------------------------------------------------------------------ workers

def _worker(args):
    arch, threads, max_train = args
    torch.set_num_threads(threads)
    import common as C2
    d = C2.load(max_train)
    tiny = subset(d.val, 16)
    vocab = d.tokenizer.get_vocab_size()
    masks = masks_at(arch, vocab, 1.0)
    return engine_epoch(arch, vocab, masks, d.train, tiny)


def part_workers(ctx, archs, reps):
    """Four independent trainings on this 2-core machine: one after another in 1 process x 2 threads, two at a time
    in 2 processes x 1 thread, and all four at once in 4 processes x 1 thread (oversubscribed, as a sweep of 2 cells
    with 2 transfer workers each runs them)."""
    import multiprocessing as mp
    rows = []
    mpc = mp.get_context("spawn")
    job = lambda arch: (arch, 1, ctx["max_train"])  # noqa: E731
    with mpc.Pool(2) as two, mpc.Pool(4) as four:
        for arch in archs:
            t = {"seq": [], "two": [], "four": []}
            two.map(_worker, [job(arch)] * 2)  # warm every worker
            four.map(_worker, [job(arch)] * 4)
            for _ in range(reps):
                t0 = time.perf_counter()
                for _ in range(4):
                    _worker((arch, 2, ctx["max_train"]))
                t["seq"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                two.map(_worker, [job(arch)] * 4, chunksize=1)
                t["two"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                four.map(_worker, [job(arch)] * 4, chunksize=1)
                t["four"].append(time.perf_counter() - t0)
            torch.set_num_threads(2)
            m = {k: C.med(v) for k, v in t.items()}
            rows.append([arch, f"{m['seq']:.2f}", f"{m['two']:.2f}", f"{m['four']:.2f}", f"**{m['seq'] / m['two']:.2f}x**",
                         f"**{m['seq'] / m['four']:.2f}x**", f"{m['two'] / m['four']:.2f}x"])
            print(rows[-1], flush=True)
    body = C.header("Parallel workers: 1 process x 2 threads vs 2 or 4 processes x 1 thread")
    body += (f"\nFour independent one-epoch trainings ({len(ctx['train']):,} reviews each, engine defaults), wall time "
             f"for all four. Workers are warm (data loaded from the disk cache, oneDNN primitives built); the time "
             f"includes loading the cached encoded data in each task. Median of {reps} interleaved repetitions.\n\n")
    body += C.table(rows, ["arch", "1 proc x 2 threads, 4 in a row (s)", "2 procs x 1 thread (s)", "4 procs x 1 thread (s)",
                           "2 procs vs sequential", "4 procs vs sequential", "4 procs vs 2 procs"])
    C.write_section("workers", body)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1,200 reviews, 2 repetitions")
    ap.add_argument("--what", default="throughput,masking,levers,workers")
    ap.add_argument("--arch", default="cnn,lstm")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    max_train = a.max_train or (1200 if a.quick else 3000)
    reps = a.reps or (2 if a.quick else 3)
    d = C.load(max_train)
    ctx = {"data": d, "vocab": d.tokenizer.get_vocab_size(), "train": d.train, "tiny": subset(d.val, 16),
           "max_train": max_train}
    ctx["padded_tokens"] = sum(int(d.train.lengths[i].max()) * len(i)
                               for i in T.batches(d.train, C.BATCH, T.epoch_generator(0, 0), True))
    print(f"{C.device_line()}\ntrain {len(d.train)} reviews, {d.train.tokens():,} tokens "
          f"({ctx['padded_tokens']:,} after bucketing, {len(d.train) * C.MAX_LEN:,} padded to {C.MAX_LEN})", flush=True)
    archs = a.arch.split(",")
    parts = {"throughput": part_throughput, "masking": part_masking, "maskstep": part_maskstep, "evalbatch": part_evalbatch, "levers": part_levers, "cnnforward": part_cnnforward, "workers": part_workers, "steps": part_steps, "allocator": part_allocator, "_alloc_child": _alloc_child}
    for w in a.what.split(","):
        parts[w](ctx, archs, reps)


if __name__ == "__main__":
    main()
