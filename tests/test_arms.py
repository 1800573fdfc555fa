"""A level's arms stacked into one model (issue 7): each arm's slice is exactly its own network, and stacked training
gives what training the arms one after another gives (fp32 on the CPU: equal up to float rounding)."""
import json
import shutil

import pytest
import torch

from conftest import run_cli
from ticketkit.arms import STACKED, stack, train_arms, unpack_state
from ticketkit.config import TrainHparams
from ticketkit.data import Encoded
from ticketkit.fsio import read_json
from ticketkit.models import MODELS, create_model, prunable_names
from ticketkit.prune import full_masks, prune, shuffled_like
from ticketkit.train import Feed, Masker, make_optimizer, run_epoch, train
from ticketkit.transfer import TransferConfig, transfer_ticket

CPU = torch.device("cpu")
V = 300
KW = dict(embed_dim=16, num_filters=8, hidden_size=12)


def synthetic(n: int, seed: int) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 40, (n,), generator=g)
    ids = torch.randint(1, V, (n, 40), generator=g).to(torch.int32)
    ids[torch.arange(40)[None] >= lengths[:, None]] = 0
    return Encoded(ids, lengths, (ids[:, 0] % 2).long())


def arms_of(arch: str):
    """Three arms as a transfer level builds them: a magnitude mask, the same counts shuffled, the mask on a reinit."""
    starts = [{k: v.detach().clone() for k, v in create_model(arch, V, seed=s, **KW).state_dict().items()} for s in (0, 0, 5)]
    names = prunable_names(create_model(arch, V, seed=0, **KW))
    ticket = prune(starts[0], full_masks(starts[0], names), 0.5, "local")
    return starts, [ticket, shuffled_like(ticket, torch.Generator().manual_seed(1)), ticket]


def test_a_model_declares_a_stacked_form_exactly_when_arms_has_one():
    """transfer asks models.supports(arch, "stacked") before stacking: the declaration and arms.STACKED agree, and
    an architecture without one (the transformer) trains its arms one by one."""
    from ticketkit.models import supports

    assert {a for a in MODELS if supports(a, "stacked")} == set(STACKED) and {"cnn", "lstm"} <= set(STACKED)


@pytest.mark.parametrize("arch", sorted(STACKED))
def test_each_arm_of_the_stacked_model_is_exactly_its_own_network(arch):
    starts, masks = arms_of(arch)
    model, smasks = stack(arch, KW, V, starts, masks)
    model.eval()
    data = synthetic(20, 1)
    out = model(data.ids, data.lengths)
    assert out.shape == (20, 3, 2)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    for a in range(3):
        single = create_model(arch, V, seed=None, **KW)
        want = {k: starts[a][k] * masks[a][k] if k in masks[a] else starts[a][k] for k in starts[a]}
        single.load_state_dict(want)
        single.eval()
        torch.testing.assert_close(out[:, a], single(data.ids, data.lengths), rtol=1e-5, atol=1e-6)
        got = unpack_state(sd, a, 3)  # the layout round-trips exactly
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    # every weight outside an arm's own block (the block-diagonal LSTM's) is masked, so it stays zero
    for n, m in smasks.items():
        assert not bool((sd[n][~m] != 0).any()), n


@pytest.mark.parametrize("arch", sorted(STACKED))
def test_pruned_and_off_block_weights_stay_exactly_zero_under_adam(arch):
    starts, masks = arms_of(arch)
    model, smasks = stack(arch, KW, V, starts, masks)
    opt, masker = make_optimizer(model, 5e-2), Masker(model, smasks)
    hp = TrainHparams(epochs=1, batch_size=16, precision="fp32")
    run_epoch(model, opt, masker, Feed(synthetic(64, 2), CPU), hp, 0, 0, None, "t", False)
    params = dict(model.named_parameters())
    assert smasks and all(not bool((params[n].detach()[~m] != 0).any()) for n, m in smasks.items())
    assert all(bool((params[n].detach()[m] != torch.tensor(0.0)).any()) for n, m in smasks.items())  # and it trained


@pytest.mark.parametrize("arch", sorted(STACKED))
def test_stacked_training_equals_one_after_another(arch):
    """Same per-arm histories, early stopping, best epoch, weights and test accuracy as three separate trainings."""
    starts, masks = arms_of(arch)
    tr, va, te = synthetic(400, 1), synthetic(100, 2), synthetic(100, 3)
    hp = TrainHparams(epochs=4, batch_size=32, patience=1, precision="fp32")
    stacked = train_arms(arch, KW, V, starts, masks, tr, va, te, hp, seed=3, device=CPU, progress=False)
    seq = []
    for s, m in zip(starts, masks):
        model = create_model(arch, V, seed=None, **KW)
        model.load_state_dict(s)
        seq.append(train(model, m, tr, va, te, hp, seed=3, device=CPU, progress=False))
    for a, (x, y) in enumerate(zip(seq, stacked)):
        assert (x.epochs, x.best_epoch, x.stopped_early) == (y.epochs, y.best_epoch, y.stopped_early), a
        for hx, hy in zip(x.history, y.history):
            assert abs(hx["val_loss"] - hy["val_loss"]) < 1e-5 and abs(hx["train_loss"] - hy["train_loss"]) < 1e-5
        assert x.test["accuracy"] == y.test["accuracy"] and abs(x.test["loss"] - y.test["loss"]) < 1e-5
        for k in x.best_state:
            torch.testing.assert_close(x.best_state[k], y.best_state[k], rtol=1e-4, atol=1e-5)
    if arch == "cnn":  # these seeds stop the arms at different epochs, so per-arm early stopping is exercised
        assert len({r.epochs for r in seq}) > 1


def _close(a: list, b: list) -> None:
    ka = {(r["arm"], r["level"], r["seed"]): r for r in a}
    kb = {(r["arm"], r["level"], r["seed"]): r for r in b}
    assert set(ka) == set(kb)
    for k in ka:
        x, y = ka[k], kb[k]
        assert (x["epochs"], x["best_epoch"], x["digest"]) == (y["epochs"], y["best_epoch"], y["digest"]), k
        assert x["test_accuracy"] == y["test_accuracy"] and abs(x["val_loss"] - y["val_loss"]) < 1e-4, k


def test_transfer_with_stacked_arms_matches_one_after_another(tiny_data, tmp_path):
    """`ticketkit transfer --batch-arms yes` (CLI, fresh arm included) against the API one arm at a time, in fp32."""
    flags = ["--epochs", "2", "--batch-size", "32", "--max-train", "200", "--max-test", "100", "--precision", "fp32"]
    run_cli("find", "imdb", "cnn", "--data-dir", tiny_data, "--store", tmp_path / "a", "--rounds", "2", "--epochs", "2",
            "--vocab-size", "100", "--max-len", "32", "--num-filters", "8", "--embed-dim", "16", "--batch-size", "32",
            "--quiet")
    src = next((tmp_path / "a").glob("find-imdb-*"))
    shutil.copytree(src, tmp_path / "b" / src.name)
    p = run_cli("transfer", str(src), "--to", "yelp2", "--n-seeds", "2", "--densities", "100,64", "--controls",
                "random-prune,random-reinit", "--one-source", "--batch-arms", "yes", "--data-dir", tiny_data,
                "--store", tmp_path / "a",
                *flags, "--json")
    out = json.loads(p.stdout)
    res = read_json(out["run"] + "/results.json")
    assert res["stacked_arms"] is True and res["config"]["batch_arms"] == "yes"
    together = [r for r in res["rows"] if "trained_with" in r]
    # at 64 %, seed 1: transferred, random-prune, random-reinit and fresh differ, so they trained as one stacked
    # model (at seed 0 the fresh arm is the fresh search's own training, recorded from it)
    assert {r["arm"] for r in together if r["seed"] == 1} >= {"transferred", "random-prune", "random-reinit", "fresh"}
    assert {r["arm"] for r in together if r["seed"] == 0} >= {"transferred", "random-prune", "random-reinit"}
    cfg = TransferConfig(target="yelp2", seeds=2, independent=False, levels=[100, 64], controls=["random-prune", "random-reinit"],
                         max_train=200, max_test=100, batch_arms="no",
                         train=TrainHparams(epochs=2, batch_size=32, precision="fp32"))
    one = transfer_ticket(str(tmp_path / "b" / src.name), cfg, data_dir=tiny_data, store=tmp_path / "b", progress=False)
    assert one.path.name == out["run"].rsplit("/", 1)[1]  # batch_arms is not part of the run's identity
    assert read_json(one.path / "results.json")["stacked_arms"] is False
    _close(res["rows"], one.rows)


def test_bad_batch_arms_is_a_clear_error(tiny_data, tmp_path):
    p = run_cli("transfer", "--batch-arms", "sometimes", "--data-dir", tiny_data, "--store", tmp_path, check=False)
    assert p.returncode != 0 and "sometimes" in p.stderr
    with pytest.raises(Exception, match="batch_arms"):
        TransferConfig(batch_arms="sometimes").validate()
