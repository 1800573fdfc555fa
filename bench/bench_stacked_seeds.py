"""Seeds stacked into one model (ticketkit.members, what `find --seeds N` uses on a GPU) against the same seeds
trained one after another, for S = 1, 3, 5, on the device this runs on.

    python bench/bench_stacked_seeds.py                                  # small synthetic shape, CNN and LSTM
    python bench/bench_stacked_seeds.py --n-train 9000 --max-len 256 --vocab 25000 --embed 128 --width 100 --reps 5

One level of S independent searches: member s has its own data (its own synthetic split, vocabulary of the same
size), its own init (seed s), its own mask (a 20 % magnitude prune of its init) and its own seed for data order and
dropout. Sequential: `ticketkit.train.train` S times. Stacked: `ticketkit.members.train_members` once. Both at the
precision a sequential training resolves (`auto`), with early stopping; the two sides alternate (A, B, A, B, ...)
and the medians are compared. The epochs each side trained are printed beside the times, so a speed-up is never an
artefact of one side stopping earlier.
"""
from __future__ import annotations

import argparse

import torch

import common as C
from ticketkit.config import TrainHparams
from ticketkit.data import Encoded
from ticketkit.members import train_members
from ticketkit.models import create_model, prunable_names
from ticketkit.prune import full_masks, prune
from ticketkit.train import default_device, train


def synthetic(n: int, seed: int, vocab: int, max_len: int) -> Encoded:
    """Reviews whose label is carried by a few marker tokens, so training has something to learn and stops early."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(4, max_len // 8), max_len + 1, (n,), generator=g)
    ids = torch.randint(3, vocab, (n, max_len), generator=g).to(torch.int32)
    labels = torch.randint(0, 2, (n,), generator=g)
    ids[:, 0] = 1 + labels.to(torch.int32)
    ids[torch.arange(max_len)[None] >= lengths[:, None]] = 0
    return Encoded(ids, lengths, labels)


def members(arch: str, S: int, a):
    kw = dict(embed_dim=a.embed, num_filters=a.width, hidden_size=a.width)
    starts, masks, data = [], [], []
    for s in range(S):
        st = {k: v.detach().clone() for k, v in create_model(arch, a.vocab, seed=s, **kw).state_dict().items()}
        starts.append(st)
        masks.append(prune(st, full_masks(st, prunable_names(create_model(arch, a.vocab, **kw))), 0.2, "local"))
        data.append(tuple(synthetic(n, 100 * s + i, a.vocab, a.max_len) for i, n in
                          enumerate((a.n_train, a.n_train // 8, a.n_train // 8))))
    return kw, starts, masks, data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="cnn,lstm")
    ap.add_argument("--seeds", default="1,3,5")
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--width", type=int, default=32, help="CNN filters per width / LSTM hidden size")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    a = ap.parse_args()
    dev = default_device()
    hp = TrainHparams(epochs=a.epochs, batch_size=64)
    rows = []
    for arch in a.archs.split(","):
        for S in map(int, a.seeds.split(",")):
            kw, starts, masks, data = members(arch, S, a)
            epochs = {}

            def seq():
                out = []
                for s in range(S):
                    model = create_model(arch, a.vocab, **kw)
                    model.load_state_dict(starts[s])
                    out.append(train(model, masks[s], *data[s], hp, seed=s, device=dev, progress=False).epochs)
                epochs["seq"] = sum(out)

            def stacked():
                res = train_members(arch, kw, starts, masks, data, hp, list(range(S)), device=dev, progress=False)
                epochs["stacked"] = sum(r.epochs for r in res)

            t = C.interleave({"seq": lambda: C.sync_time(seq, dev), "stacked": lambda: C.sync_time(stacked, dev)},
                             a.reps, warmup=1)
            r = [arch, S, f"{C.med(t['seq']):.2f}", f"{C.med(t['stacked']):.2f}",
                 f"**{C.med(t['seq']) / C.med(t['stacked']):.2f}x**", f"{epochs['seq']} / {epochs['stacked']}"]
            rows.append(r)
            print(" | ".join(map(str, r)), flush=True)
    head = ["arch", "seeds S", "one after another (s)", "stacked (s)", "speed-up", "epochs trained (seq / stacked)"]
    body = (C.header(f"Stacked seeds vs one after another ({dev.type})") +
            f"\nOne level of S independent searches (own data, init, mask, data order, dropout each), {a.n_train} "
            f"training reviews per seed (synthetic), vocab {a.vocab}, max_len {a.max_len}, embed {a.embed}, width "
            f"{a.width}, up to {a.epochs} epochs, batch 64, precision auto; median of {a.reps}, interleaved.\n\n"
            + C.table(rows, head) + "\n")
    print(body)
    if a.write:
        C.write_section(f"stacked-seeds-{dev.type}", body)


if __name__ == "__main__":
    main()
