"""A lever tried for issue 16 (the CPU engine): reuse the embedding's gradient buffer between steps.

    python bench/bench_embedgrad.py --reps 5

nn.Embedding's CPU backward allocates a fresh dense [vocab, E] gradient every step (12.8 MB at vocab 25,000, E 128),
zero-fills it and adds each position's row into it one at a time. The variant keeps one buffer, zeroes it in place and
scatters with index_add_ (the same additions in the same order, so the trained weights must be bit-identical, which this
script checks). torch.profiler credits the fresh fill with 10-12 % of a CNN step, so the variant looked worth up to
~10 %. It is timed here by wall time and by process CPU time (the trainings run on 1 thread; CPU time is the figure a
shared machine disturbs least). Not part of the package: it ships only if it pays.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import common as C
import bench_engine as B
from ticketkit import train as T
from ticketkit.models import create_model


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, ids, owner):
        ctx.save_for_backward(ids)
        ctx.owner = owner
        return F.embedding(ids, weight, owner.padding_idx)

    @staticmethod
    def backward(ctx, g):
        ids, = ctx.saved_tensors
        m, w = ctx.owner, ctx.owner.weight
        buf = m.store
        # reuse only a buffer nobody else holds (ours + the temporary storage handle): a caller's old .grad stays intact
        if buf is not None and w.grad is None and torch._C._storage_Use_Count(buf.untyped_storage()._cdata) <= 2:
            buf.zero_()
        else:
            buf = torch.zeros(w.shape, dtype=g.dtype)
        buf.index_add_(0, ids.reshape(-1), g.reshape(-1, g.shape[-1]))
        buf[m.padding_idx].zero_()  # the dense backward skips padding positions
        m.store = buf
        return buf.detach(), None, None  # a fresh TensorImpl: autograd steals it instead of copying


class ReusedGradEmbedding(nn.Embedding):
    store = None

    def forward(self, ids):
        return _Gather.apply(self.weight, ids, self) if torch.is_grad_enabled() else super().forward(ids)


def epoch(arch, vocab, train, tiny, reuse: bool):
    m = create_model(arch, vocab, seed=0)
    if reuse:
        e = m.embedding
        m.embedding = ReusedGradEmbedding(e.num_embeddings, e.embedding_dim, padding_idx=e.padding_idx)
        m.embedding.weight = e.weight
    masks = B.masks_at(arch, vocab, 1.0)
    w, c = time.perf_counter(), time.process_time()
    T.train(m, masks, train, tiny, tiny, B.hp(), seed=0, progress=False)
    return time.perf_counter() - w, time.process_time() - c, m.state_dict()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="cnn,lstm")
    ap.add_argument("--max-train", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    d = C.load(a.max_train)
    vocab, tiny = d.tokenizer.get_vocab_size(), B.subset(d.val, 16)
    rows = []
    for arch in a.arch.split(","):
        out = {False: [], True: []}
        same = None
        for rep in range(a.reps + 1):  # the first round warms up oneDNN's primitives and is not counted
            sd = {}
            for reuse in (False, True):
                wall, cpu, sd[reuse] = epoch(arch, vocab, d.train, tiny, reuse)
                if rep:
                    out[reuse].append((wall, cpu))
            if same is None:
                same = all(torch.equal(sd[False][k], sd[True][k]) for k in sd[False])
        mw = {r: C.med([x[0] for x in out[r]]) for r in out}
        mc = {r: C.med([x[1] for x in out[r]]) for r in out}
        rows.append([arch, f"{mw[False]:.3f}", f"{mw[True]:.3f}", f"**{mw[False] / mw[True]:.2f}x**",
                     f"{mc[False]:.3f}", f"{mc[True]:.3f}", f"**{mc[False] / mc[True]:.2f}x**", "yes" if same else "NO"])
        print(rows[-1], flush=True)
    body = C.header("Embedding gradient: a fresh dense buffer each step (shipped) vs one reused buffer (issue 16)")
    body += (f"\nOne dense training epoch over {len(d.train):,} IMDB reviews, `ticketkit.train.train` as it ships (1 "
             f"thread), with nn.Embedding's own backward vs `bench_embedgrad.ReusedGradEmbedding`; median of "
             f"{a.reps} interleaved repetitions after a warm-up. CPU = process CPU time.\n\n")
    body += C.table(rows, ["arch", "shipped wall (s)", "reused wall (s)", "wall speed-up", "shipped CPU (s)",
                           "reused CPU (s)", "CPU speed-up", "trained weights bit-identical"])
    body += "\n\nShip it if both speed-ups are clearly above 1 (run-to-run spread here is a few %).\n"
    C.write_section("embedgrad", body)


if __name__ == "__main__":
    main()
