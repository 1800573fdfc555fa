"""Pruning unit tests: exact per-layer rates, the global threshold, nesting, controls, zeros under Adam."""
import pytest
import torch

from ticketkit.errors import TicketkitError
from ticketkit.models import MODELS, create_model, prunable_names
from ticketkit.prune import densities, full_masks, is_nested, prune, shuffled_like
from ticketkit.train import Masker, make_optimizer


def _weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(10, 7, generator=g), "b": torch.randn(33, generator=g) * 5, "c": torch.randn(4, 4, 3, generator=g) * 0.1}


def test_local_takes_exact_rate_from_each_layer():
    w = _weights()
    m = full_masks(w, w)
    m1 = prune(w, m, 0.2, "local")
    for n in w:
        assert int(m1[n].sum()) == w[n].numel() - round(0.2 * w[n].numel())
    m2 = prune(w, m1, 0.2, "local")
    for n in w:
        alive = int(m1[n].sum())
        assert int(m2[n].sum()) == alive - round(0.2 * alive)


def test_local_prunes_smallest_magnitudes_first():
    w = _weights()
    m1 = prune(w, full_masks(w, w), 0.5, "local")
    for n in w:
        kept, dropped = w[n].abs()[m1[n]], w[n].abs()[~m1[n]]
        assert kept.min() >= dropped.max()


def test_layer_rates_override_per_layer():
    w = _weights()
    m1 = prune(w, full_masks(w, w), 0.2, "local", layer_rates={"a": 0.1})
    assert int(m1["a"].sum()) == 70 - 7
    assert int(m1["b"].sum()) == 33 - round(0.2 * 33)


def test_global_uses_one_threshold_across_layers():
    w = _weights()
    m1 = prune(w, full_masks(w, w), 0.5, "global")
    total = sum(t.numel() for t in w.values())
    assert sum(int(t.sum()) for t in m1.values()) == total - round(0.5 * total)
    kept = torch.cat([w[n].abs()[m1[n]] for n in w])
    dropped = torch.cat([w[n].abs()[~m1[n]] for n in w])
    assert kept.min() >= dropped.max()
    # layers of very different scale are pruned at very different rates under one threshold
    d = densities(m1, w)["layers"]
    assert d["b"] > 0.9 and d["c"] < 0.1


@pytest.mark.parametrize("scope", ["local", "global"])
def test_successive_masks_nest(scope):
    w = _weights()
    m = full_masks(w, w)
    for i in range(6):
        # new "trained" weights each round: nesting must hold regardless of how the weights moved
        new = prune(_weights(seed=i + 1), m, 0.3, scope)
        assert is_nested(new, m)
        m = new


def test_random_control_keeps_every_layer_count_and_nests():
    w = _weights()
    m1 = prune(w, full_masks(w, w), 0.4, "global")
    g = torch.Generator().manual_seed(0)
    r1 = shuffled_like(m1, g)
    assert {n: int(t.sum()) for n, t in r1.items()} == {n: int(t.sum()) for n, t in m1.items()}
    assert any(not torch.equal(r1[n], m1[n]) for n in m1)
    m2 = prune(w, m1, 0.4, "global")
    r2 = shuffled_like(m2, g, within=r1)
    assert is_nested(r2, r1)
    assert {n: int(t.sum()) for n, t in r2.items()} == {n: int(t.sum()) for n, t in m2.items()}


def test_densities_over_prunable_and_all_weights():
    params = {"w": torch.zeros(10, 10), "bias": torch.zeros(10)}
    m = {"w": torch.zeros(10, 10, dtype=torch.bool)}
    m["w"][:5] = True
    d = densities(m, params)
    assert d["prunable"] == 0.5
    assert d["all"] == (50 + 10) / 110


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_pruned_weights_stay_exactly_zero_under_adam(arch):
    model = create_model(arch, 50, seed=0, embed_dim=8, num_filters=4, hidden_size=8)
    params = dict(model.named_parameters())
    names = prunable_names(model)
    masks = prune({n: params[n] for n in names}, full_masks(params, names), 0.7, "local")
    masker = Masker(model, masks)
    masker.weights()
    opt = make_optimizer(model, 5e-3)
    ids = torch.randint(1, 50, (16, 12))
    lengths = torch.randint(5, 13, (16,))
    y = torch.randint(0, 2, (16,))
    for _ in range(25):
        loss = torch.nn.functional.cross_entropy(model(ids, lengths), y)
        opt.zero_grad()
        loss.backward()
        masker.grads()
        opt.step()  # no second multiply: zero gradients and zero moments must leave them at zero by themselves
        for n in names:
            assert bool((params[n][~masks[n]] == 0).all()), n
            assert bool((params[n][masks[n]] != 0).any()), n  # the surviving weights did train
    masker.check()
    # Adam's moments never saw the pruned entries, so nothing could revive them
    for n in names:
        st = opt.state[params[n]]
        assert bool((st["exp_avg"][~masks[n]] == 0).all())
        assert bool((st["exp_avg_sq"][~masks[n]] == 0).all())
    # and if something did (an optimizer with other arithmetic), training stops at the end of the epoch
    with torch.no_grad():
        params[names[0]][~masks[names[0]]] = 1.0
    with pytest.raises(TicketkitError, match="pruned weights of"):
        masker.check()
