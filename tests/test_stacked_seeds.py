"""`find --seeds N` stacked into one model (issue 16): each member is exactly its own search.

What is exact and what is toleranced (fp32 on the CPU): the stacked kernels (grouped convolution, block-diagonal LSTM,
per-member linear) round differently from a single model's, by ~1 ulp per step. So:
  exact      run names, inits, masks (bit for bit), densities, best epochs, epochs trained, test/val accuracy
  toleranced losses (|diff| < TOL_LOSS) and trained weights (rtol 1e-4, atol TOL_W)
A mask is bit-for-bit only while no two surviving weights sit within that rounding of the pruning threshold; on these
shapes none does (a failure here would show a drift far above rounding, not a tie).
"""
import json
from dataclasses import replace

import pytest
import torch

from conftest import TINY_FLAGS, run_cli, tiny_find_config
from ticketkit.config import TrainHparams
from ticketkit.data import Encoded
from ticketkit.find import find_ticket
from ticketkit.members import has_member_form, stack, train_members, unpack_state
from ticketkit.models import MODELS, create_model, prunable_names
from ticketkit.prune import full_masks, prune
from ticketkit.seeds import find_seeds
from ticketkit.stacked_find import use_stacked
from ticketkit.ticket import Ticket
from ticketkit.train import train

CPU = torch.device("cpu")
TOL_LOSS, TOL_W = 1e-5, 1e-5
KW = dict(embed_dim=16, num_filters=8, hidden_size=12)


def synthetic(n: int, seed: int, vocab: int, noise: bool = False) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 40, (n,), generator=g)
    ids = torch.randint(1, vocab, (n, 40), generator=g).to(torch.int32)
    ids[torch.arange(40)[None] >= lengths[:, None]] = 0
    labels = torch.randint(0, 2, (n,), generator=g) if noise else (ids[:, 0] % 2).long()
    return Encoded(ids, lengths, labels)


def members_of(arch: str, vocabs):
    starts, masks = [], []
    for s, v in enumerate(vocabs):
        st = {k: t.detach().clone() for k, t in create_model(arch, v, seed=s, **KW).state_dict().items()}
        starts.append(st)
        masks.append(prune(st, full_masks(st, prunable_names(create_model(arch, v, **KW))), 0.3, "local"))
    return starts, masks


@pytest.mark.parametrize("arch", sorted(a for a in MODELS if has_member_form(a)))
def test_each_member_slice_is_exactly_its_own_network_on_its_own_batch(arch):
    """Different vocabularies, different batch lengths and sizes: each member's logits are its single model's."""
    vocabs = [300, 250, 280]
    starts, masks = members_of(arch, vocabs)
    model, smasks, _ = stack(arch, KW, starts, masks)
    model.eval()
    batches = [synthetic(n, 10 + m, v) for m, (n, v) in enumerate(zip((20, 13, 20), vocabs))]
    batches = [Encoded(b.ids[:, :int(b.lengths.max()) - 3 * m], b.lengths.clamp(max=int(b.lengths.max()) - 3 * m), b.labels)
               for m, b in enumerate(batches)]
    from ticketkit.members import _assemble
    ids, lengths, trim = _assemble([(b.ids, b.lengths) for b in batches], CPU)
    out = model(ids, lengths, trim)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    for m, b in enumerate(batches):
        single = create_model(arch, vocabs[m], **KW)
        single.load_state_dict({k: v * masks[m][k] if k in masks[m] else v for k, v in starts[m].items()})
        single.eval()
        torch.testing.assert_close(out[:len(b), m], single(b.ids, b.lengths), rtol=1e-5, atol=1e-6)
        got = unpack_state(sd, m, vocabs)
        assert all(torch.equal(got[k], single.state_dict()[k]) for k in got)


@pytest.mark.parametrize("arch", sorted(a for a in MODELS if has_member_form(a)))
def test_per_member_early_stopping_and_best_state_are_each_members_own(arch):
    """Member 0 learns a rule, member 1 fits noise: they stop at different epochs; each one's history, best epoch and
    best state are those of its own sequential training (own data, own seed)."""
    vocabs = [300, 260]
    starts, masks = members_of(arch, vocabs)
    data = [(synthetic(256, 1, 300), synthetic(64, 2, 300), synthetic(64, 3, 300)),
            (synthetic(256, 4, 260, noise=True), synthetic(64, 5, 260, noise=True), synthetic(64, 6, 260, noise=True))]
    # rates at which these members stop at different epochs while their float drift stays at rounding level (a
    # higher rate can flip a near-tied max-pool arg-max mid-training, after which the runs drift apart legitimately)
    hp = TrainHparams(epochs=5, batch_size=32, patience=1, lr={"cnn": 5e-3, "lstm": 1e-2}[arch], precision="fp32")
    stacked = train_members(arch, KW, starts, masks, data, hp, [7, 8], device=CPU, progress=False)
    seq = []
    for m, (s, mk, d) in enumerate(zip(starts, masks, data)):
        model = create_model(arch, vocabs[m], **KW)
        model.load_state_dict(s)
        seq.append(train(model, mk, *d, hp, seed=7 + m, device=CPU, progress=False))
    assert len({r.epochs for r in stacked}) > 1, "the members should stop at different epochs"
    for m, (x, y) in enumerate(zip(seq, stacked)):
        assert (x.epochs, x.best_epoch, x.stopped_early) == (y.epochs, y.best_epoch, y.stopped_early), m
        for hx, hy in zip(x.history, y.history):
            assert abs(hx["val_loss"] - hy["val_loss"]) < TOL_LOSS and abs(hx["train_loss"] - hy["train_loss"]) < TOL_LOSS
        assert x.test["accuracy"] == y.test["accuracy"] and abs(x.test["loss"] - y.test["loss"]) < TOL_LOSS
        for k in x.best_state:
            torch.testing.assert_close(x.best_state[k], y.best_state[k], rtol=1e-4, atol=TOL_W)


@pytest.mark.parametrize("arch", sorted(a for a in MODELS if has_member_form(a)))
def test_stacked_seeds_equal_their_sequential_runs(tiny_data, tmp_path, arch):
    # late resetting, so each member's snapshots (after K steps / K epochs) are exercised too
    cfg = tiny_find_config(arch, rewind={"cnn": "step:3", "lstm": "epoch:1"}.get(arch, "step:3"))
    cfg.train.epochs, cfg.train.precision = 2, "fp32"
    stacked = find_seeds(cfg, 2, data_dir=tiny_data, store=tmp_path / "s", progress=False, stacked=True)
    seq = [find_ticket(replace(cfg, seed=s), data_dir=tiny_data, store=tmp_path / "q", progress=False) for s in (0, 1)]
    assert stacked[0].path.name != stacked[1].path.name
    for a, b in zip(stacked, seq):
        assert a.path.name == b.path.name and a.info["status"] == "complete" and len(a.levels) == 3
        assert sorted(p.name for p in a.path.rglob("*")) == sorted(p.name for p in b.path.rglob("*"))
        for la, lb in zip(a.levels, b.levels):
            for k in ("density_prunable", "density_all", "density_nonzero", "best_epoch", "epochs", "val_accuracy",
                      "test_accuracy", "test_macro_f1"):
                assert la[k] == lb[k], (a.path.name, la["level"], k)
            assert abs(la["val_loss"] - lb["val_loss"]) < TOL_LOSS and abs(la["test_loss"] - lb["test_loss"]) < TOL_LOSS
        for pa, pb in zip(a.ticket_paths(), b.ticket_paths()):
            ta, tb = Ticket.load(pa), Ticket.load(pb)
            assert all(torch.equal(ta.masks[k], tb.masks[k]) for k in tb.masks), pa
            assert all(torch.equal(ta.init[k], tb.init[k]) for k in tb.init)
            for k in tb.rewind:
                torch.testing.assert_close(ta.rewind[k], tb.rewind[k], rtol=1e-4, atol=TOL_W)


def test_cli_stacked_find_seeds_3_writes_three_verifiable_runs(tiny_data, tmp_path):
    store = tmp_path / "store"
    flags = [f for f in TINY_FLAGS]
    flags[flags.index("--epochs") + 1] = "1"
    p = run_cli("find", "imdb", "cnn", "--data-dir", tiny_data, "--store", store, "--levels", "1", *flags,
                "--seeds", "3", "--stacked", "--json")
    out = json.loads(p.stdout)
    assert "train as one stacked model" in p.stderr
    assert len(out) == 3 and len({r["name"] for r in out}) == 3 and [r["config"]["seed"] for r in out] == [0, 1, 2]
    assert all(r["status"] == "complete" and len(r["levels"]) == 2 for r in out)
    assert all(r["trained_by"] == "stacked lockstep of seeds 0, 1, 2" for r in out)  # provenance in each run.json
    v = run_cli("verify", "--store", store, "--json")
    assert json.loads(v.stdout) == {"checked": 6, "problems": []}


def test_stacked_path_is_selected_only_where_cuda_is_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert use_stacked("cnn", 3) and use_stacked("lstm", 3)
    assert not use_stacked("cnn", 1) and not use_stacked("cnn", 3, stacked=False)
    assert not use_stacked("cnn", 3, device="cpu")  # a CPU device asked for explicitly: worker processes
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not use_stacked("cnn", 3) and not use_stacked("lstm", 5)
    assert use_stacked("cnn", 3, stacked=True)  # forced (the tests do this on the CPU)


def test_an_architecture_without_a_stacked_form_falls_back_with_a_line(monkeypatch, capsys):
    class Plain(torch.nn.Module):  # a registered model that declares no stacked form
        pass

    monkeypatch.setitem(MODELS, "plain", Plain)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not use_stacked("plain", 3)
    assert not use_stacked("plain", 3, stacked=True)
    assert "plain has no stacked form" in capsys.readouterr().err


def test_members_whose_epochs_differ_in_batch_count_are_not_stacked():
    """Adam steps every member on every step, so lockstep needs equal batch counts; else the caller trains them one
    by one (Lockstep does), never a silently different training."""
    from ticketkit.members import NotStackable

    starts, masks = members_of("cnn", [300, 300])
    data = [(synthetic(n, 1, 300), synthetic(32, 2, 300), synthetic(32, 3, 300)) for n in (64, 100)]
    with pytest.raises(NotStackable, match="batch counts"):
        train_members("cnn", KW, starts, masks, data, TrainHparams(epochs=1, batch_size=32), [0, 1], device=CPU,
                      progress=False)


def test_independent_transfer_stacks_every_seeds_source_and_fresh_search(tiny_data, tmp_path):
    """transfer --seeds 2 from a run, stacking forced (batch_arms yes, as a GPU does by itself): both seeds' source
    searches and both fresh searches train stacked, and each seed's transfer then reuses its own fresh run."""
    from ticketkit.fsio import read_json
    from ticketkit.transfer import TransferConfig, transfer_ticket

    cfg = tiny_find_config("cnn")
    cfg.train.epochs, cfg.train.precision, cfg.prune.levels = 1, "fp32", 1
    src = find_ticket(cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    tcfg = TransferConfig(target="yelp2", seeds=2, levels=[100, 80], controls=[], batch_arms="yes", max_train=200,
                          max_test=100, train=TrainHparams(epochs=1, batch_size=32, precision="fp32"))
    tr = transfer_ticket(str(src.path), tcfg, data_dir=tiny_data, store=tmp_path, progress=False)
    res = read_json(tr.path / "results.json")
    assert res["status"] == "complete" and sorted(res["replicates"]) == ["0", "1"]
    # seed 0's source search is the given run (reused); seed 1's went through the lockstep (alone: nothing else trained)
    assert "trained_by" not in read_json(res["replicates"]["0"]["source"] + "/run.json")
    assert read_json(res["replicates"]["1"]["source"] + "/run.json")["trained_by"] == "stacked lockstep of seeds 0, 1"
    for s, rep in res["replicates"].items():
        fresh = read_json(rep["fresh"]["path"] + "/run.json")
        assert fresh["trained_by"] == "stacked lockstep of seeds 0, 1" and fresh["config"]["seed"] == int(s)
        assert rep["fresh"]["same_init"] is True
    assert {(r["arm"], int(r["seed"])) for r in res["rows"] if r["arm"] == "fresh"} == {("fresh", 0), ("fresh", 1)}


def test_an_interrupted_stacked_find_resumes_to_the_same_runs(tiny_data, tmp_path):
    """Ctrl-C during level 1 reaches every search (no thread left waiting), each run says interrupted and keeps its
    finished level 0; the same call then finishes them, equal to an uninterrupted stacked find."""
    cfg = tiny_find_config("cnn")
    cfg.train.epochs, cfg.train.precision, cfg.prune.levels = 1, "fp32", 1
    calls = []

    def stop_at_level_1():  # called once per epoch of each stacked training; level 1's first epoch says stop
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(KeyboardInterrupt):
        find_seeds(cfg, 2, data_dir=tiny_data, store=tmp_path / "a", progress=False, stacked=True,
                   stop_flag=stop_at_level_1)
    runs = sorted((tmp_path / "a").glob("find-*"))
    assert len(runs) == 2
    for rd in runs:
        assert json.loads((rd / "run.json").read_text())["status"] == "interrupted"
        assert (rd / "level-00" / "manifest.json").exists() and not (rd / "level-01").exists()
    resumed = find_seeds(cfg, 2, data_dir=tiny_data, store=tmp_path / "a", progress=False, stacked=True)
    clean = find_seeds(cfg, 2, data_dir=tiny_data, store=tmp_path / "b", progress=False, stacked=True)
    for a, b in zip(resumed, clean):
        assert a.path.name == b.path.name and a.info["status"] == "complete"
        for pa, pb in zip(a.ticket_paths(), b.ticket_paths()):
            ta, tb = Ticket.load(pa), Ticket.load(pb)
            assert all(torch.equal(ta.masks[k], tb.masks[k]) for k in tb.masks)
        assert [r["test_accuracy"] for r in a.levels] == [r["test_accuracy"] for r in b.levels]
