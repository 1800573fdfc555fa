"""The controls registry (ticketkit.controls) and what models declare: a third architecture without a stacked form
trains its arms one by one instead of failing."""
from types import SimpleNamespace

import torch.nn as nn

from ticketkit.config import TransferConfig
from ticketkit.controls import CONTROLS, REINIT_SEED_OFFSET, prune_generator
from ticketkit.models import MODELS, register_model, supports
from ticketkit.transfer import ARMS
from ticketkit.transfer.executors import Executors


def test_controls_are_registered_once_for_find_and_transfer():
    assert list(CONTROLS) == ["random-prune", "random-prune-rows", "random-reinit"]
    assert ARMS == ("transferred", "random-prune", "random-prune-rows", "random-reinit", "snip", "synflow", "fresh")
    assert REINIT_SEED_OFFSET == 1_000_003
    # the published seed streams: find's chain and a transfer arm's (seed, level) stream
    assert prune_generator(3).initial_seed() == 3 * 7919 + 17
    assert prune_generator(1, 2).initial_seed() == 1_000_003 + 3 * 7919 + 17


def test_an_architecture_without_a_stacked_form_trains_its_arms_one_by_one():
    assert supports("cnn", "stacked") and supports("lstm", "stacked")

    class Plain(nn.Module):
        pass

    register_model("plain-test")(Plain)
    try:
        assert not supports("plain-test", "stacked")
        for batch_arms in ("yes", "auto"):
            tr = SimpleNamespace(device="cuda", cfg=TransferConfig(batch_arms=batch_arms, workers=1),
                                 src=SimpleNamespace(arch="plain-test"), progress=False, name="t")
            assert Executors.stacked(tr) is False
        tr.src.arch = "cnn"
        assert Executors.stacked(tr) is True
    finally:
        MODELS.pop("plain-test")
