"""Beyond the peers: at extreme sparsity, does skipping pruned work pay on this CPU?

    nice -n 10 python bench/bench_sparse.py            # ~3 min on a quiet 2-core CPU
    nice -n 10 python bench/bench_sparse.py --quick

Three candidates, each against what the engine does now, at 1 % density (per-layer magnitude masks), one batch
of 64 reviews x 256 tokens, interleaved repetitions, medians:
1. where a masked training step spends its time (forward, backward, Adam, masking): the upper bound on any win;
2. Adam only on unpruned entries (gather the surviving grads, fused Adam on the compact vectors, scatter back),
   checked bit-for-bit against the dense fused Adam;
3. sparse kernels for the convolutions (CSR weight x unfolded input, `torch.sparse.mm`) and the output layer,
   against the dense conv1d/linear in fp32 and in bf16, forward and the input-gradient product of backward;
   plus how many embedding rows are fully pruned (rows the step could skip).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import common as C
from bench_engine import masks_at, timed
from ticketkit import train as T
from ticketkit.models import create_model


def clock(fn):
    def run():
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    return run


def step_breakdown(vocab, ids, lengths, labels, reps):
    model = create_model("cnn", vocab, seed=0)
    masks = masks_at("cnn", vocab, 0.01)
    opt, mk = T.make_optimizer(model, 5e-3), T.Masker(model, masks)
    mk.weights()
    state = {}

    def fwd():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            state["loss"] = F.cross_entropy(model(ids, lengths).float(), labels)

    def bwd():
        opt.zero_grad(set_to_none=False)
        state["loss"].backward()

    def step():
        opt.step()

    def mask():
        mk.grads()
        mk.weights()
    parts = {"forward": clock(fwd), "zero_grad + backward": clock(bwd), "mask (grads + weights)": clock(mask),
             "fused Adam step": clock(step)}
    t = timed(parts, reps)
    return {k: C.med(v) for k, v in t.items()}, model, masks, opt


def compact_adam(model, masks, reps):
    """Adam over the surviving entries only. Adam is element-wise, so on the unpruned entries it must give the
    same bits as the dense step; pruned entries stay zero either way."""
    params = dict(model.named_parameters())
    torch.manual_seed(1)
    for p in params.values():
        p.grad = torch.randn_like(p) * 1e-2
        if p is not None:
            pass
    for n, m in masks.items():
        params[n].grad.mul_(m)
    names = list(params)
    idx = {n: masks[n].flatten().nonzero().squeeze(1) if n in masks else None for n in names}
    dense_p = [p.detach().clone() for p in params.values()]
    dense_g = [p.grad.clone() for p in params.values()]
    comp_p = [p.detach().flatten()[idx[n]].clone() if idx[n] is not None else p.detach().clone()
              for n, p in params.items()]
    comp_g = [p.grad.flatten()[idx[n]].clone() if idx[n] is not None else p.grad.clone() for n, p in params.items()]
    dp = [torch.nn.Parameter(x) for x in dense_p]
    cp = [torch.nn.Parameter(x) for x in comp_p]
    for p, g in zip(dp, dense_g):
        p.grad = g
    for p, g in zip(cp, comp_g):
        p.grad = g
    od = torch.optim.Adam(dp, lr=5e-3, fused=True)
    oc = torch.optim.Adam(cp, lr=5e-3, fused=True)
    full = [p.detach() for p in params.values()]

    def dense_step():
        od.step()

    def compact_step():
        # what a compact path must do every step: gather the live grads, step, scatter the live weights back
        for n, p, c in zip(names, params.values(), cp):
            if idx[n] is not None:
                c.grad = p.grad.flatten()[idx[n]]
        oc.step()
        with torch.no_grad():
            for n, w, c in zip(names, full, cp):
                if idx[n] is not None:
                    w.view(-1)[idx[n]] = c
    # exactness first (before timing moves the states apart): 3 steps each from the same state
    for _ in range(3):
        od.step()
        oc.step()
    same = all(torch.equal(d.detach().flatten()[idx[n]] if idx[n] is not None else d.detach(), c.detach())
               for n, d, c in zip(names, dp, cp))
    t = timed({"dense fused Adam (all entries)": clock(dense_step),
               "compact fused Adam (live entries, incl. gather/scatter)": clock(compact_step)}, reps)
    return {k: C.med(v) for k, v in t.items()}, same


def sparse_kernels(vocab, ids, reps):
    model = create_model("cnn", vocab, seed=0)
    masks = masks_at("cnn", vocab, 0.01)
    T.Masker(model, masks).weights()
    with torch.no_grad():
        x = model.embedding(ids).transpose(1, 2).contiguous()  # [B, E, L]
    B, E, L = x.shape
    rows = []
    for i, conv in enumerate(model.convs):
        w = conv.weight.detach()  # [F, E, k]
        Fo, _, k = w.shape
        xu = x.unfold(2, k, 1).permute(0, 2, 1, 3).reshape(B * (L - k + 1), E * k)  # [B*L', E*k]
        xuT = xu.t().contiguous()
        w2 = w.reshape(Fo, E * k)
        wcsr = w2.to_sparse_csr()
        wTcsr = w2.t().contiguous().to_sparse_csr()
        go = torch.randn(Fo, B * (L - k + 1))
        x16, w16 = x.bfloat16(), w.bfloat16()
        ok = torch.allclose(torch.sparse.mm(wcsr, xuT), w2 @ xuT, atol=1e-4)
        fns = {"dense conv1d fwd fp32": clock(lambda: F.conv1d(x, w)),
               "dense conv1d fwd bf16": clock(lambda: F.conv1d(x16, w16)),
               "unfold (sparse path needs it)": clock(lambda: x.unfold(2, k, 1).permute(0, 2, 1, 3).reshape(B * (L - k + 1), E * k).t().contiguous()),
               "CSR weight x unfolded input fwd fp32": clock(lambda: torch.sparse.mm(wcsr, xuT)),
               "dense grad-input (conv_transpose1d) fp32": clock(lambda: F.conv_transpose1d(go.view(Fo, B, -1).permute(1, 0, 2).contiguous(), w)),
               "CSR W^T x grad-out fp32": clock(lambda: torch.sparse.mm(wTcsr, go))}
        t = {n: C.med(v) for n, v in timed(fns, reps).items()}
        rows.append((f"conv width {k} ({int(masks[f'convs.{i}.weight'].sum())} of {w.numel()} weights live)", t, ok))
    fc = model.fc.weight.detach()
    h = torch.randn(B, fc.shape[1])
    fcsr = fc.to_sparse_csr()
    t = {n: C.med(v) for n, v in timed({"dense linear fp32": clock(lambda: F.linear(h, fc)),
                                          "CSR linear fp32": clock(lambda: torch.sparse.mm(fcsr, h.t()))}, reps).items()}
    rows.append((f"output layer ({int(masks['fc.weight'].sum())} of {fc.numel()} live)", t, True))
    emb = masks["embedding.weight"]
    dead = float((~emb.any(1)).float().mean())
    return rows, dead


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    reps = a.reps or (5 if a.quick else 15)
    d = C.load(1000)
    vocab = d.tokenizer.get_vocab_size()
    g = torch.Generator().manual_seed(0)
    sel = torch.randperm(len(d.train), generator=g)[:C.BATCH]
    ids = F.pad(d.train.ids[sel].long(), (0, max(0, C.MAX_LEN - d.train.ids.shape[1])))[:, :C.MAX_LEN]
    lengths, labels = d.train.lengths[sel], d.train.labels[sel]

    parts, model, masks, opt = step_breakdown(vocab, ids, lengths, labels, reps)
    total = sum(parts.values())
    adam, same = compact_adam(model, masks, reps)
    kern, dead = sparse_kernels(vocab, ids, reps)

    body = C.header("Beyond the peers: skipping pruned work at 1 % density (CNN)")
    body += (f"\nOne batch of {C.BATCH} reviews padded to {C.MAX_LEN} tokens, vocab {vocab:,}, per-layer magnitude masks at "
             f"1 %, median of {reps} interleaved repetitions, {torch.get_num_threads()} thread(s).\n\n"
             f"**Where a masked engine step goes** (bf16 autocast, fused Adam): total {total * 1e3:.1f} ms\n\n")
    body += C.table([[k, f"{v * 1e3:.2f}", f"{v / total:.0%}"] for k, v in parts.items()], ["part", "ms", "share"])
    body += "\n\n**Adam only on unpruned entries**\n\n"
    body += C.table([[k, f"{v * 1e3:.2f}"] for k, v in adam.items()], ["optimizer step", "ms"])
    body += (f"\n\nBit-identical to the dense fused Adam on the live entries after 3 steps: **{same}**. "
             f"Compact/dense time: {list(adam.values())[1] / list(adam.values())[0]:.2f}x.\n\n"
             f"**Sparse kernels (fp32 CSR via `torch.sparse.mm`) against dense kernels**\n\n")
    rws = []
    for name, t, ok in kern:
        for k, v in t.items():
            rws.append([name, k, f"{v * 1e3:.2f}"])
    body += C.table(rws, ["layer", "kernel", "ms"])
    body += (f"\n\nCSR results match dense: {all(ok for _, _, ok in kern)}. Embedding rows with no live weight at 1 % "
             f"(init-magnitude masks): {dead:.1%} of {vocab:,} rows.\n")
    C.write_section("sparse", body)
    print(body)


if __name__ == "__main__":
    main()
