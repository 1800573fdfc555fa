"""The registries' names (datasets, architectures, embedding inits, pruning methods, controls), for the CLI's
choices. Functions that import lazily, so that importing config (and `ticketkit --help`) does not import torch."""
from __future__ import annotations


def dataset_names() -> tuple[str, ...]:
    from .datasets import DATASETS
    return tuple(sorted(DATASETS))


def arch_names() -> tuple[str, ...]:
    from .models import MODELS
    return tuple(sorted(MODELS))


def embed_init_names() -> tuple[str, ...]:
    from .models import EMBED_INITS
    return tuple(EMBED_INITS)


def method_names() -> tuple[str, ...]:
    from .prune_init import METHODS  # magnitude, with the methods at init registered
    return tuple(sorted(METHODS))


def control_names() -> tuple[str, ...]:
    from .controls import CONTROLS
    return ("none", *CONTROLS)
