"""What a ticket's config.json must say to be loadable: its structure, and that its params are what its
architecture builds. Pure checks on the config (no files), kept apart from ticket.py's reading and writing."""
from __future__ import annotations

import torch

from .errors import TicketkitError, shorten


def _config_problem(c) -> str | None:
    """The first structural problem with a ticket's config.json, so later code can index it safely."""
    from .config import FindConfig

    if not isinstance(c, dict):
        return "is not a JSON object"
    for key, tp in (("params", dict), ("find", dict), ("prunable", list), ("density", dict), ("vocab_size", int)):
        if not isinstance(c.get(key), tp) or isinstance(c.get(key), bool):
            return f"has no valid {key!r} ({tp.__name__} expected)"
    for n, spec in c["params"].items():
        if not (isinstance(spec, dict) and isinstance(spec.get("shape"), list) and isinstance(spec.get("dtype"), str)
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in spec["shape"])):
            return f"has a malformed params entry for {n!r}"
    if not all(isinstance(n, str) and n in c["params"] for n in c["prunable"]):
        return "lists a prunable parameter that is not in 'params'"
    if not all(isinstance(c["density"].get(k), (int, float)) for k in ("prunable", "all")) or \
            not isinstance(c["density"].get("layers", {}), dict):
        return "has a malformed 'density'"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in c["density"].get("layers", {}).values()):
        return "has a per-layer density that is not a number"
    m = c.get("metrics")
    if not isinstance(m, dict) or not all(isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)
                                          for k in ("test_accuracy", "test_macro_f1")):
        return "has no valid 'metrics' (test_accuracy and test_macro_f1 numbers expected)"
    if not isinstance(c.get("data", {}), dict):
        return "has a malformed 'data'"
    try:
        FindConfig.from_dict(c["find"], "find").validate()
    except TicketkitError as e:
        return f"has invalid settings ({e})"
    return None


def _model_spec_problem(c: dict) -> str | None:
    """Whether config.json's params are what its architecture and settings build (a config naming lstm over CNN
    tensors, or a vocabulary larger than the embedding, would make build_model fail)."""
    from .config import FindConfig
    from .models import MODELS, model_kwargs

    try:
        hp = FindConfig.from_dict(c["find"]).model
        with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
            model = MODELS[hp.arch](vocab_size=c["vocab_size"], **model_kwargs(hp))
        want = param_spec(model)
    except Exception as e:  # noqa: BLE001 - settings the model cannot be built from
        return f"config.json's model settings do not build a model ({shorten(str(e) or type(e).__name__)})"
    have = c.get("params", {})
    if want != have:
        diff = sorted(set(want) ^ set(have)) or [n for n in want if want[n] != have[n]]
        n = diff[0]
        return (f"config.json's params do not fit a {hp.arch} model with its settings and vocab_size {c['vocab_size']} "
                f"(first difference: {n}: recorded {have.get(n, {}).get('shape')}, built {want.get(n, {}).get('shape')})")
    return None


def param_spec(model: torch.nn.Module) -> dict:
    return {n: {"shape": list(p.shape), "dtype": str(p.dtype).replace("torch.", "")} for n, p in model.named_parameters()}
