"""A ticket's tensors on disk: one safetensors file per kind, so the store can keep each distinct file once.

    ticket.safetensors   mask.<param> (bool) and the JSON __metadata__ (format, version, density)
    init.safetensors     <param>: the initial weights, unmasked
    rewind.safetensors   <param>: the weights the ticket rewinds to, unmasked (the same bytes as init.safetensors
                         when it rewinds to init)

init is the same at every level of a run and rewind usually is too, so these files are byte-identical from level
to level: the store hardlinks them (store.link_duplicates) and a 29-level run holds them once, while every level
stays an ordinary, self-contained directory of plain files. Format 1 (every kind in ticket.safetensors, keys
prefixed init./mask./rewind.) still loads. Plain safetensors: no pickle anywhere.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import IntegrityError, shorten
from .fsio import write_with
from .version import __version__

FORMAT_VERSION = 2
KINDS = ("init", "mask", "rewind")
KIND_FILES = {"mask": "ticket.safetensors", "init": "init.safetensors", "rewind": "rewind.safetensors"}
WEIGHT_FILES = ("init.safetensors", "rewind.safetensors")


def write_tensors(d: Path, tensors: dict, density: float | None = None) -> None:
    """Write {"init.<p>": t, "mask.<p>": t, "rewind.<p>": t} as format 2, each file atomically."""
    from safetensors.torch import save_file

    parts: dict[str, dict] = {f: {} for f in KIND_FILES.values()}
    for k, t in tensors.items():
        kind, _, name = k.partition(".")
        # the mask file keeps its kind prefix (format 1's names); the weight files hold bare parameter names, so
        # init and rewind files are byte-identical when the weights are
        f = KIND_FILES.get(kind, KIND_FILES["mask"])
        # safetensors refuses shared or strided storage (rewind == init at level 0): clone each tensor.
        parts[f][k if f == KIND_FILES["mask"] else name] = t.detach().cpu().contiguous().clone()
    meta = {"ticketkit": json.dumps({"format": FORMAT_VERSION, "version": __version__, "density": density})}
    for f, part in parts.items():
        write_with(Path(d) / f, lambda p, part=part, f=f: save_file(
            part, str(p), metadata=meta if f == KIND_FILES["mask"] else None))


def read_tensors(d: Path) -> dict:
    """Every tensor of a ticket directory as {"init.<p>", "mask.<p>", "rewind.<p>"}, format 1 or 2."""
    from safetensors import safe_open

    out: dict = {}
    for f in ("ticket.safetensors", *WEIGHT_FILES):
        p = Path(d) / f
        if f != "ticket.safetensors" and not p.exists():
            continue  # format 1: every kind is in ticket.safetensors
        try:
            with safe_open(str(p), "pt") as h:
                got = {k: h.get_tensor(k) for k in h.keys()}
        except Exception as e:
            why = shorten(str(e).splitlines()[0] if str(e) else type(e).__name__)
            raise IntegrityError(f"{p} is unreadable ({why}): the file is corrupt or truncated") from None
        prefix = "" if f == "ticket.safetensors" else f.split(".")[0] + "."
        for k, t in got.items():
            if prefix + k in out:
                raise IntegrityError(f"{p} repeats tensor {prefix + k}: the ticket's files disagree; re-create it")
            out[prefix + k] = t
    return out
