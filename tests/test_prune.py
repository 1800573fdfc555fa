"""Pruning unit tests: exact per-layer rates, the global threshold, nesting, controls, zeros under Adam."""
import pytest
import torch

from ticketkit.errors import TicketkitError
from ticketkit.models import MODELS, create_model, prunable_names
from ticketkit.prune import densities, full_masks, is_nested, prune, shuffled_like, shuffled_rows_like
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
    w["c"][0, 0, 0] = 10.0  # one large weight, so the small-scale layer is thinned, not emptied (that is refused)
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
        # (every layer at one scale: under one global threshold a 0.1-scale layer would empty, which is refused)
        g = torch.Generator().manual_seed(i + 1)
        new = prune({n: torch.randn(t.shape, generator=g) for n, t in w.items()}, m, 0.3, scope)
        assert is_nested(new, m)
        m = new


def test_random_control_keeps_every_layer_count_and_nests():
    w = _weights()
    w["c"] = w["c"] * 30  # so two global rounds thin c without emptying it (that is refused)
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


def test_output_layer_is_pruned_at_half_the_rate():
    w = _weights()
    m1 = prune(w, full_masks(w, w), 0.2, "local", output_layer="a", output_factor=0.5)
    assert int(m1["a"].sum()) == 70 - round(0.1 * 70)
    assert int(m1["b"].sum()) == 33 - round(0.2 * 33)
    # global: the output layer leaves the shared threshold and takes its own half rate
    g = prune(w, full_masks(w, w), 0.4, "global", output_layer="a", output_factor=0.5)
    assert int(g["a"].sum()) == 70 - round(0.2 * 70)
    rest = w["b"].numel() + w["c"].numel()
    assert int(g["b"].sum()) + int(g["c"].sum()) == rest - round(0.4 * rest)
    # layer_rates still override the output layer's half rate
    o = prune(w, full_masks(w, w), 0.2, "local", layer_rates={"a": 0.5}, output_layer="a", output_factor=0.5)
    assert int(o["a"].sum()) == 35


@pytest.mark.parametrize("scope", ["local", "global"])
def test_a_layer_keeps_its_floor(scope):
    w = {"x": torch.randn(200, 5), "tiny": torch.tensor([[1e-4, 2e-4, 3e-4]])}
    m = full_masks(w, w)
    for _ in range(12):  # 60 % a round would take "tiny" (3 weights, far the smallest) to 0
        m = prune(w, m, 0.6, scope, floor=0.001)
        assert int(m["tiny"].sum()) == 1 and bool(m["tiny"][0, 2])  # its largest weight is the one kept
    assert int(m["x"].sum()) == 1  # x is held at its own floor, ceil(0.001 * 1000) = 1
    m = prune(w, full_masks(w, w), 0.9, scope, floor=0.01)
    assert int(m["x"].sum()) == (100 if scope == "local" else 99) and int(m["tiny"].sum()) == 1  # 903 of 1003 go


@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("arch", ["cnn", "lstm"])
def test_no_layer_empties_on_the_way_to_0_2_percent(arch, scope):
    """20 % a round with the output layer at half rate, 28 rounds (0.8^28 = 0.19 %), on the real model shapes."""
    model = create_model(arch, 25000, seed=0)
    names = prunable_names(model)
    params = {n: p.detach() for n, p in model.named_parameters()}
    m = full_masks(params, names)
    g = torch.Generator().manual_seed(0)
    for i in range(28):
        # "trained" weights of each round: the init plus noise, so the order changes from round to round
        w = {n: params[n] * (1 + 0.1 * torch.randn(params[n].shape, generator=g)) for n in names}
        m = prune(w, m, 0.2, scope, output_layer="fc.weight", output_factor=0.5)
    d = densities(m, params)
    assert d["prunable"] <= 0.0025
    assert all(int(t.sum()) > 0 for t in m.values()), {n: int(t.sum()) for n, t in m.items()}
    assert all(int(m[n].sum()) >= int(0.001 * m[n].numel()) for n in m)  # the floor
    assert d["groups"]["density_output"] >= 0.9 ** 28 - 0.01 if scope == "local" else d["groups"]["density_output"] > 0


def test_row_control_keeps_every_embedding_row_count_exactly():
    g0 = torch.Generator().manual_seed(3)
    m = {"embedding.weight": torch.rand(300, 16, generator=g0) < torch.linspace(0.9, 0.0, 300)[:, None],
         "convs.0.weight": torch.rand(8, 16, 3, generator=g0) < 0.3, "fc.weight": torch.rand(2, 24, generator=g0) < 0.5}
    r = shuffled_rows_like(m, torch.Generator().manual_seed(0))
    assert torch.equal(r["embedding.weight"].sum(1), m["embedding.weight"].sum(1))  # every word keeps its count
    assert not torch.equal(r["embedding.weight"], m["embedding.weight"])            # ...but other weights of it
    for n in ("convs.0.weight", "fc.weight"):
        assert int(r[n].sum()) == int(m[n].sum()) and not torch.equal(r[n], m[n])
    again = shuffled_rows_like(m, torch.Generator().manual_seed(0))
    assert all(torch.equal(again[n], r[n]) for n in m)  # reproducible from its generator


def test_local_counts_predict_iterative_pruning_and_oneshot_lands_on_them():
    from ticketkit.prune import local_counts, prune_to_counts

    w = _weights()
    m = full_masks(w, w)
    predicted = local_counts(m, 0.4, 5, output_layer="a", output_factor=0.5)
    it = m
    for k in range(5):
        it = prune(_weights(seed=k + 1), it, 0.4, "local", output_layer="a", output_factor=0.5)
        assert {n: int(t.sum()) for n, t in it.items()} == predicted[k]
    one = prune_to_counts(w, m, predicted[-1])  # straight from the dense weights to level 5's per-layer counts
    assert {n: int(t.sum()) for n, t in one.items()} == predicted[-1]
    for n in w:  # the largest magnitudes of the dense weights survive
        assert w[n].abs()[one[n]].min() >= w[n].abs()[~one[n]].max()
    g = prune_to_counts(w, m, 50)
    assert sum(int(t.sum()) for t in g.values()) == 50
