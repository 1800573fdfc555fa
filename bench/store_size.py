"""How many bytes a 29-level CNN find run's tickets take in the store, at the default model size (vocabulary
25,000, embedding 128, 100 maps per width): every level self-contained (format 1, one ticket.safetensors holding
init, mask and rewind) against the store as it is now (format 2: mask, init and rewind in their own files, and
byte-identical files hardlinked across levels by `store.link_duplicates`, exactly as `find` does after each level).

No training: the levels' masks are nested magnitude masks at 20 % a round (the output layer at half the rate)
over fixed scores, which is what a real run's sizes depend on (a bool mask costs one byte per weight whatever it
keeps). Each level also keeps its trained weights (trained.safetensors, for predict/export and resuming), packed
by its mask: they differ per level, so they count in full. "Before" is the layout before this change: format 1 and
a dense float32 copy of every level's trained weights under trained/.

    python bench/store_size.py [--levels 29]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, table, write_section  # noqa: E402

from ticketkit.config import FindConfig  # noqa: E402
from ticketkit.data import build_tokenizer  # noqa: E402
from ticketkit.models import create_model, model_kwargs, prunable_names  # noqa: E402
from ticketkit.prune import densities  # noqa: E402
from ticketkit.store import link_duplicates  # noqa: E402
from ticketkit.ticket import Ticket, param_spec  # noqa: E402

MB = 1e6


def disk_bytes(root: Path) -> tuple[int, int]:
    """(bytes if every file were its own copy, bytes actually stored: each inode once)."""
    apparent, inodes = 0, {}
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            apparent += st.st_size
            inodes[(st.st_dev, st.st_ino)] = st.st_size
    return apparent, sum(inodes.values())


def v1_bytes(t: Ticket, tmp: Path) -> int:
    """The size of the same level's format-1 ticket.safetensors (every kind in one file)."""
    from safetensors.torch import save_file

    f = tmp / "v1.safetensors"
    save_file({f"{k}.{n}": v.contiguous().clone() for k in ("init", "mask", "rewind") for n, v in getattr(t, k).items()},
              str(f))
    size = f.stat().st_size
    f.unlink()
    return size


def build_run(root: Path, levels: int, rewind: str) -> dict:
    cfg = FindConfig()
    cfg.prune.levels = levels - 1
    vocab = cfg.data.vocab_size
    tok = build_tokenizer([" ".join(f"w{i}" for i in range(j, j + 1000)) for j in range(0, vocab, 1000)], vocab,
                          cfg.data.max_len)
    model = create_model(cfg.model.arch, tok.get_vocab_size(), seed=0, **model_kwargs(cfg.model))
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(1)
    # late resetting rewinds every level to the same epoch-K weights of the dense training: one more shared file
    rew = init if rewind == "init" else {n: v + 0.01 * torch.randn(v.shape, generator=g) for n, v in init.items()}
    names = prunable_names(model)
    out_layer = getattr(model, "output_layer", None)
    scores = {n: torch.rand(init[n].shape, generator=g) for n in names}
    run = root / f"find-bench-{rewind}"
    v1_total = packed = 0
    for k in range(levels):
        masks = {}
        for n in names:
            keep = (0.9 if n.startswith(str(out_layer)) else 0.8) ** k
            cut = max(1, round(scores[n].numel() * keep))
            thr = scores[n].flatten().kthvalue(scores[n].numel() - cut + 1).values if cut < scores[n].numel() else -1
            masks[n] = scores[n] >= thr
        full = {n: masks.get(n, torch.ones_like(v, dtype=torch.bool)) for n, v in init.items()}
        dens = densities(masks, init)
        config = {"ticketkit": "ticket", "format": 2, "run": run.name, "level": k, "find": cfg.to_dict(), "seed": 0,
                  "vocab_size": tok.get_vocab_size(), "prunable": names, "params": param_spec(model),
                  "density": {"prunable": dens["prunable"], "all": dens["all"], "layers": dens["layers"]},
                  "metrics": {"test_accuracy": 0.5, "test_macro_f1": 0.5}, "data": {"dataset": "imdb"}}
        # trained weights differ at every level (so they never deduplicate); their values do not matter to the size
        trained = {n: (v + 0.05 * torch.randn(v.shape, generator=g)) * full[n] for n, v in init.items()}
        t = Ticket(config, init, full, rew, tok, trained=trained)
        t.save(run / f"level-{k:02d}")
        link_duplicates(run / f"level-{k:02d}")  # what find does after saving each level
        packed += (run / f"level-{k:02d}" / "trained.safetensors").stat().st_size
        v1_total += v1_bytes(t, root) + sum((run / f"level-{k:02d}" / f).stat().st_size for f in
                                            ("config.json", "tokenizer.json", "README.md", "manifest.json"))
    apparent, stored = disk_bytes(run)
    Ticket.load(run / f"level-{levels - 1:02d}")  # still an ordinary, verified ticket
    dense_trained = levels * sum(v.numel() * v.element_size() for v in init.values())
    return {"v1": v1_total + dense_trained, "apparent": apparent, "stored": stored, "trained": packed,
            "params": sum(v.numel() for v in init.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, default=29)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ticketkit-store-size-", dir=os.environ.get("TMPDIR")) as tmp:
        for rewind in ("init", "late"):
            r = build_run(Path(tmp), args.levels, rewind)
            print(rewind, {k: round(v / MB, 1) for k, v in r.items()}, flush=True)
            rows.append([f"rewind to {'init' if rewind == 'init' else 'epoch K (late resetting)'}",
                         f"{r['v1'] / MB:.0f}", f"{r['stored'] / MB:.0f}", f"{r['v1'] / r['stored']:.1f}x",
                         f"{r['trained'] / MB:.0f}", "yes" if r["stored"] <= 300 * MB else "no"])
    body = (header(f"store-size: a {args.levels}-level CNN run in the store (tickets and trained weights), before and "
                   f"after keeping each distinct tensor file once and packing trained weights by the mask")
            + f"\nDefault model size ({r['params']:,} parameters: vocabulary 25,000, embedding 128). MB = 10^6 bytes.\n\n"
            + table(rows, ["run", "before: format 1 + dense trained/ copies, MB", "now: format 2 + hardlinks + packed trained, MB",
                           "smaller by", "of which trained.safetensors, MB", "<= 300 MB"])
            + "\n\nEach level is still a directory of ordinary files (ticket.safetensors: masks; init.safetensors, "
              "rewind.safetensors: weights) that verifies, loads, pushes and copies on its own; identical files are "
              "one inode. trained.safetensors keeps only the weights its mask keeps, so at 20 % a round the 29 levels "
              "hold about 1/(1 - 0.8) = 5 dense copies' worth instead of 29.\n")
    write_section("store-size", body)


if __name__ == "__main__":
    main()
