"""Pruning at initialisation (SNIP, SynFlow): scores against a hand computation, exact counts, find end to end."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ticketkit.models import create_model, prunable_names
from ticketkit.prune import PruneContext, full_masks, prune_step
from ticketkit.prune_init import METHODS, counts_at, prune_at_init


class Toy(nn.Module):
    """Two linear layers: an embedding E [V, D] (mean over the tokens) and an output W [C, D], no bias."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embedding = nn.Embedding(5, 3)
        self.fc = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.embedding.weight.copy_(torch.randn(5, 3, generator=g))
            self.fc.weight.copy_(torch.randn(2, 3, generator=g))

    def forward(self, ids, lengths):
        return self.fc(self.embedding(ids).mean(1))


def toy_masks(model):
    return full_masks(dict(model.named_parameters()), ["embedding.weight", "fc.weight"])


def test_synflow_scores_match_the_hand_computed_product():
    toy = Toy()
    E, W = toy.embedding.weight.detach().abs().double(), toy.fc.weight.detach().abs().double()
    # R = sum_j sum_d |W_jd| x_d with x_d = sum_v |E_vd| (the all-ones input through the embedding as a linear layer)
    x = E.sum(0)
    want_w = W * x[None, :]               # |dR/dW_jd * W_jd| = |W_jd| x_d
    want_e = E * W.sum(0)[None, :]        # |dR/dE_vd * E_vd| = |E_vd| sum_j |W_jd|
    got = METHODS["synflow"](None, toy_masks(toy), PruneContext(model=toy))
    assert torch.allclose(got["fc.weight"].double(), want_w, rtol=1e-6)
    assert torch.allclose(got["embedding.weight"].double(), want_e, rtol=1e-6)


def test_synflow_ignores_pruned_weights():
    toy = Toy()
    masks = toy_masks(toy)
    masks["fc.weight"][0, 1] = False
    W = toy.fc.weight.detach().abs().clone()
    W[0, 1] = 0
    got = METHODS["synflow"](None, masks, PruneContext(model=toy))
    assert got["fc.weight"][0, 1] == 0
    want_e = toy.embedding.weight.detach().abs() * W.sum(0)[None, :]
    assert torch.allclose(got["embedding.weight"].float(), want_e, rtol=1e-5)


def test_snip_scores_match_the_hand_computed_gradient():
    toy = Toy()
    ids = torch.tensor([[1, 2, 2, 4], [3, 3, 0, 1]])
    labels = torch.tensor([0, 1])
    batches = [(ids, torch.tensor([4, 4]), labels), (ids.flip(0), torch.tensor([4, 4]), labels)]
    E, W = toy.embedding.weight.detach(), toy.fc.weight.detach()
    gW, gE = torch.zeros_like(W), torch.zeros_like(E)
    for b_ids, _, y in batches:
        h = E[b_ids].mean(1)                                   # [B, D]
        dz = (F.softmax(h @ W.T, 1) - F.one_hot(y, 2)) / len(y)  # dL/dz of the batch-mean cross-entropy
        gW += dz.T @ h
        dh = dz @ W                                            # [B, D]
        for b in range(len(y)):
            for t in b_ids[b]:
                gE[t] += dh[b] / b_ids.shape[1]
    got = METHODS["snip"](None, toy_masks(toy), PruneContext(model=toy, batches=batches))
    assert torch.allclose(got["fc.weight"], (gW * W).abs(), atol=1e-6)
    assert torch.allclose(got["embedding.weight"], (gE * E).abs(), atol=1e-6)


def test_counts_at_is_exponential_and_ends_on_the_target():
    full = {"a": torch.ones(1000, dtype=torch.bool)}
    assert counts_at(full, {"a": 10}, 1.0) == {"a": 10}
    assert counts_at(full, {"a": 10}, 0.5) == {"a": 100}  # sqrt(1000 * 10)


def _batches(n=2):
    g = torch.Generator().manual_seed(0)
    return [(torch.randint(1, 100, (8, 20), generator=g), torch.full((8,), 20), torch.randint(0, 2, (8,), generator=g))
            for _ in range(n)]


@pytest.mark.parametrize("arch", ["cnn", "lstm", "transformer"])
@pytest.mark.parametrize("method", ["snip", "synflow"])
@pytest.mark.parametrize("scope", ["local", "global"])
def test_masks_hit_the_requested_counts(arch, method, scope):
    model = create_model(arch, 100, seed=0, embed_dim=16, num_filters=8, hidden_size=16, ff_dim=32, max_positions=64)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    names = prunable_names(model)
    full = full_masks(init, names)
    like = full
    for _ in range(3):  # the IMP schedule's counts at round 3: 20 %/round, output layer at half rate
        like = prune_step("magnitude", init, like, 0.2, scope, None, "fc.weight", 0.5)
    ctx = PruneContext(model=model, batches=_batches())
    got = prune_at_init(method, init, full, like, ctx, scope, "fc.weight", 0.5, rounds=3)
    if scope == "local":
        assert {n: int(m.sum()) for n, m in got.items()} == {n: int(m.sum()) for n, m in like.items()}
    else:
        assert int(got["fc.weight"].sum()) == int(like["fc.weight"].sum())
        assert sum(int(m.sum()) for m in got.values()) == sum(int(m.sum()) for m in like.values())
    assert all(int(m.sum()) >= 1 for m in got.values())  # no layer emptied
    assert not all(torch.equal(got[n], like[n]) for n in names)  # not the magnitude mask


def test_find_with_snip_and_synflow_matches_imp_densities_and_verifies(tiny_data, tmp_path, tiny_config):
    from ticketkit.find import find_ticket
    from ticketkit.ticket import Ticket
    from ticketkit.verify import verify_path

    def cfg(**kw):
        c = tiny_config("cnn", **kw)
        c.train.epochs = 1  # the masks are the point here, not the accuracy
        return c

    imp = find_ticket(cfg(), data_dir=tiny_data, store=tmp_path, progress=False)
    for method in ("snip", "synflow"):
        run = find_ticket(cfg(method=method), data_dir=tiny_data, store=tmp_path, progress=False)
        assert [r["layers"] for r in run.levels] == [r["layers"] for r in imp.levels]  # same per-layer density
        t = Ticket.load(run.ticket_paths()[-1])
        assert torch.equal(t.rewind["fc.weight"], t.init["fc.weight"])  # the rewind point is the init
        assert not all(torch.equal(t.masks[n], Ticket.load(imp.ticket_paths()[-1]).masks[n]) for n in t.masks)
        assert verify_path(str(run.path))[0] == []  # ordinary tickets: `verify` finds nothing wrong


def test_method_at_init_with_late_rewind_is_refused(tiny_config):
    from ticketkit.errors import TicketkitError

    with pytest.raises(TicketkitError, match="prune.rewind"):
        tiny_config("cnn", method="snip", rewind="epoch:1")


@pytest.mark.parametrize("arch", ["cnn", "lstm", "transformer"])
def test_synflow_gives_every_layer_a_flow(arch):
    """No prunable layer sits behind a flat or saturated non-linearity (LayerNorm, softmax, LSTM gates): every one
    has non-zero, finite scores, so a mask is chosen by them and not by position among ties."""
    model = create_model(arch, 100, seed=0, embed_dim=16, num_filters=8, hidden_size=16, ff_dim=32, max_positions=64)
    masks = full_masks(dict(model.named_parameters()), prunable_names(model))
    scores = METHODS["synflow"](None, masks, PruneContext(model=model))
    for n, s in scores.items():
        s = s if n != "embedding.weight" else s[1:]  # [PAD]'s row is zero at init
        assert torch.isfinite(s).all() and (s > 0).float().mean() > 0.99, n


def test_keep_top_equals_the_stable_sort_with_ties():
    from ticketkit.prune import prune_to_counts
    from ticketkit.prune_init import _keep_top

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (40, 7), generator=g).double()  # many ties
    alive = torch.rand(40, 7, generator=g) > 0.3
    for count in (0, 1, 17, int(alive.sum()) - 1, int(alive.sum())):
        want = prune_to_counts({"w": scores}, {"w": alive}, {"w": count})["w"]
        assert torch.equal(_keep_top(scores, alive, count), want), count


def test_pai_recipe_has_imp_snip_and_synflow_rows_for_three_seeds():
    from conftest import REPO
    from ticketkit.sweep import expand, load_sweep_recipe

    cells = expand(load_sweep_recipe(REPO / "recipes" / "pai_quick.toml")).cells
    got = {(c.config["prune"]["method"], c.config["seed"], c.config["model"]["arch"]) for c in cells}
    assert got == {(m, s, "cnn") for m in ("magnitude", "snip", "synflow") for s in (0, 1, 2)}
    assert len({c.config["data"]["max_train"] for c in cells}) == 1  # one subsample for every method
