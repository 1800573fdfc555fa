"""The science defaults: embedding init, late resetting by steps, and the diagnostics that keep a dead or
collapsed cell from being read as evidence."""
import pytest
import torch

from ticketkit.config import FindConfig, TrainHparams
from ticketkit.data import Encoded
from ticketkit.diagnostics import diagnose, flags
from ticketkit.models import MODELS, create_model
from ticketkit.train import Feed, train


def _data(n=96, length=20, vocab=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    ids = torch.randint(2, vocab, (n, length), generator=g)
    ids[:, 0] = 2 + labels  # token 2 or 3 gives the label away: learnable in a few steps
    lengths = torch.randint(5, length + 1, (n,), generator=g)
    for i, L in enumerate(lengths):
        ids[i, L:] = 0
    return Encoded(ids, lengths, labels)


def _hp(**kw):
    hp = TrainHparams(epochs=3, batch_size=16, patience=2, precision="fp32")
    for k, v in kw.items():
        setattr(hp, k, v)
    return hp


KW = dict(embed_dim=16, num_filters=8, hidden_size=16)


@pytest.mark.parametrize("init,std", [("xavier", (2 / (60 + 16)) ** 0.5), ("normal", 1.0), ("uniform", 0.5 / 12 ** 0.5)])
@pytest.mark.parametrize("arch", sorted(MODELS))
def test_embed_init_sets_the_embedding_scale_only(arch, init, std):
    base = create_model(arch, 60, seed=0, **KW).state_dict()
    m = create_model(arch, 60, seed=0, embed_init=init, **KW).state_dict()
    emb = m["embedding.weight"]
    assert torch.equal(emb[0], torch.zeros_like(emb[0]))  # [PAD] stays zero
    assert abs(float(emb[1:].std()) - std) < 0.25 * std
    if init == "uniform":
        assert float(emb.abs().max()) <= 0.25
    # every other tensor draws from the same place in the seed's stream, whatever the embedding's init
    same = [k for k in base if k != "embedding.weight" and torch.equal(base[k], m[k])]
    assert len(same) == len(base) - 1


def test_embed_init_is_validated():
    cfg = FindConfig()
    cfg.model.embed_init = "glorot"
    with pytest.raises(Exception, match="model.embed_init"):
        cfg.validate()


def test_step_rewind_equals_the_weights_after_k_steps():
    data = _data()
    steps_per_epoch = -(-len(data) // 16)  # 6
    a = create_model("cnn", 60, seed=0, **KW)
    res = train(a, None, data, _data(seed=1), _data(seed=2), _hp(epochs=2), seed=5, device="cpu", progress=False,
                snapshots_at=("step:3", f"step:{steps_per_epoch}", "epoch:1"))
    # after a whole epoch of steps, the step snapshot is the epoch snapshot
    s, e = res.snapshots[f"step:{steps_per_epoch}"], res.snapshots["epoch:1"]
    assert all(torch.equal(s[k], e[k]) for k in s)
    # and step:3 is what three steps give: the same training stopped after 3 optimizer steps
    b = create_model("cnn", 60, seed=0, **KW)
    short = Encoded(*(t for t in (data.ids, data.lengths, data.labels)))
    from ticketkit.train import Masker, make_optimizer, run_epoch, resolve_precision
    opt, masker = make_optimizer(b, 5e-3), Masker(b, None)
    torch.manual_seed(5)
    n = 0

    class Stop(Exception):
        pass

    def on_step():
        nonlocal n
        n += 1
        if n == 3:
            raise Stop

    from ticketkit.train import fixed_threads

    with pytest.raises(Stop):  # at the thread count every training runs with (train.TRAIN_THREADS)
        fixed_threads(run_epoch)(b, opt, masker, Feed(short, "cpu"), _hp(), 5, 0,
                                 resolve_precision("fp32", torch.device("cpu")), "t", False, on_step=on_step)
    three = b.state_dict()
    assert all(torch.equal(res.snapshots["step:3"][k], three[k]) for k in three)
    assert not all(torch.equal(res.snapshots["step:3"][k], e[k]) for k in three)


def test_step_snapshot_survives_resume(tmp_path):
    data = _data()
    ck = tmp_path / "ck.safetensors"
    a = create_model("cnn", 60, seed=0, **KW)
    whole = train(a, None, data, _data(seed=1), _data(seed=2), _hp(epochs=3, patience=5), seed=5, device="cpu",
                  progress=False, snapshots_at=("step:2",))
    b = create_model("cnn", 60, seed=0, **KW)
    flag = {"n": 0}

    def stop():  # interrupt after the first epoch; the checkpoint holds the step snapshot taken during it
        flag["n"] += 1
        return flag["n"] == 1
    with pytest.raises(KeyboardInterrupt):
        train(b, None, data, _data(seed=1), _data(seed=2), _hp(epochs=3, patience=5), seed=5, device="cpu",
              progress=False, snapshots_at=("step:2",), checkpoint=ck, stop_flag=stop)
    c = create_model("cnn", 60, seed=0, **KW)
    resumed = train(c, None, data, _data(seed=1), _data(seed=2), _hp(epochs=3, patience=5), seed=5, device="cpu",
                    progress=False, snapshots_at=("step:2",), checkpoint=ck)
    assert all(torch.equal(whole.snapshots["step:2"][k], resumed.snapshots["step:2"][k]) for k in whole.best_state)


def test_a_killed_network_is_flagged_collapsed_with_every_filter_dead():
    model = create_model("cnn", 60, seed=0, **KW)
    with torch.no_grad():
        for conv in model.convs:
            conv.bias.fill_(-10.0)  # no pre-activation reaches 0: the ReLU never fires, nothing can learn
    res = train(model, None, _data(), _data(seed=1), _data(seed=2), _hp(epochs=2), seed=0, device="cpu", progress=False)
    d = res.diagnostics
    assert d["collapsed"] and d["majority_share"] == 1.0
    assert d["dead_units"] == d["units"] == 24 and d["dead_share"] == 1.0
    assert "collapsed" in d["flags"] and "dead units" in d["flags"]


def test_a_healthy_network_is_not_flagged_and_the_epoch_cap_is():
    res = train(create_model("cnn", 60, seed=0, **KW), None, _data(), _data(seed=1), _data(seed=2), _hp(epochs=2),
                seed=0, device="cpu", progress=False)
    d = res.diagnostics
    assert not d["collapsed"] and d["dead_share"] < 0.5
    assert d["undertrained"] == (res.best_epoch == 2)  # still improving at the cap: flagged
    assert flags(d) == (["undertrained"] if d["undertrained"] else [])


def test_a_filter_the_mask_emptied_is_pruned_not_dead():
    """IMP at high sparsity empties whole filters (at 1.16 % of the headline CNN's weights, 164 of its 300 filters
    have no weight left). Those are pruned structure, not a training that died: they are counted apart
    (pruned_units), and only the filters that still have weights can be dead."""
    model = create_model("cnn", 60, seed=0, **KW)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if p.dim() >= 2}
    for i in range(3):  # 6 of each conv's 8 filters lose every weight: 18 of 24 features
        masks[f"convs.{i}.weight"][:6] = False
    res = train(model, masks, _data(), _data(seed=1), _data(seed=2), _hp(epochs=3, patience=5), seed=0, device="cpu",
                progress=False)
    d = res.diagnostics
    assert d["units"] == 24 and d["pruned_units"] == 18
    assert d["dead_units"] <= 6 and "dead units" not in d["flags"], d
    assert d["dead_share"] == d["dead_units"] / 6


def test_lstm_dead_units_are_constant_ones():
    model = create_model("lstm", 60, seed=0, **KW)
    with torch.no_grad():  # units 0-3 get no input and no recurrence: their output is the same for every review
        model.lstm.weight_ih_l0.view(4, 16, 16)[:, :4] = 0
        model.lstm.weight_hh_l0.view(4, 16, 16)[:, :4] = 0
    from ticketkit.diagnostics import dead_units
    dead, total, pruned = dead_units(model, Feed(_data(), "cpu"), 64)
    assert total == 16 and pruned == 4 and dead == 0  # emptied by the mask: pruned, not dead
    with torch.no_grad():  # units 4-7 keep their weights but their output gate is shut: constant 0, dead
        model.lstm.weight_ih_l0.view(4, 16, 16)[3, 4:8] = 0
        model.lstm.weight_hh_l0.view(4, 16, 16)[3, 4:8] = 0
        model.lstm.bias_ih_l0.view(4, 16)[3, 4:8] = -1e4
    dead, total, pruned = dead_units(model, Feed(_data(), "cpu"), 64)
    assert (dead, total, pruned) == (4, 16, 4)


def test_diagnose_thresholds():
    assert diagnose(0.99, (0, 10, 0), 3, 20)["collapsed"]
    assert not diagnose(0.98, (0, 10, 0), 3, 20)["collapsed"]
    assert diagnose(0.6, (5, 10, 0), 3, 20)["flags"] == ["dead units"]
    assert diagnose(0.6, (4, 10, 0), 20, 20)["flags"] == ["undertrained"]
    # the share is over the units that still have weights: 2 dead of 4 left is half; 2 of 8 emptied is not
    assert diagnose(0.6, (2, 10, 6), 3, 20)["flags"] == ["dead units"]
    assert diagnose(0.6, (1, 10, 6), 3, 20)["flags"] == []
    assert diagnose(0.6, (0, 10, 10), 3, 20)["dead_share"] == 1.0  # nothing left to carry a feature


def test_find_seeds_gives_independent_searches(tiny_data, tmp_path, tiny_config):
    from ticketkit.seeds import find_seeds

    runs = find_seeds(tiny_config("cnn", levels=1), 3, data_dir=tiny_data, store=tmp_path, progress=False)
    assert [r.config.seed for r in runs] == [0, 1, 2] and len({r.path for r in runs}) == 3
    t = [r.ticket(1) for r in runs]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert not torch.equal(t[a].init["convs.0.weight"], t[b].init["convs.0.weight"])  # init
        assert not torch.equal(t[a].masks["convs.0.weight"], t[b].masks["convs.0.weight"])  # the search
        assert runs[a].info["data"]["val_fingerprint"] != runs[b].info["data"]["val_fingerprint"]  # the split
    # a second call reuses every finished run
    again = find_seeds(tiny_config("cnn", levels=1), 3, data_dir=tiny_data, store=tmp_path, progress=False)
    assert [r.path for r in again] == [r.path for r in runs]


def _interrupted(tmp_path, seed=5):
    """A training killed after its first epoch: (checkpoint path, the uninterrupted result)."""
    data = _data()
    ck = tmp_path / "ck.safetensors"
    whole = train(create_model("cnn", 60, seed=0, **KW), None, data, _data(seed=1), _data(seed=2),
                  _hp(epochs=3, patience=5), seed=seed, device="cpu", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(create_model("cnn", 60, seed=0, **KW), None, data, _data(seed=1), _data(seed=2), _hp(epochs=3, patience=5),
              seed=seed, device="cpu", progress=False, checkpoint=ck, stop_flag=lambda: True)
    return ck, whole


def _resume(ck):
    return train(create_model("cnn", 60, seed=0, **KW), None, _data(), _data(seed=1), _data(seed=2),
                 _hp(epochs=3, patience=5), seed=5, device="cpu", progress=False, checkpoint=ck)


def test_a_bit_flip_in_a_checkpoint_is_caught_and_the_training_starts_over(tmp_path, capfd):
    ck, whole = _interrupted(tmp_path)
    raw = bytearray(ck.read_bytes())
    raw[-200] ^= 0x01  # one bit inside the tensor data
    ck.write_bytes(bytes(raw))
    res = _resume(ck)
    err = capfd.readouterr().err
    assert "digest does not match" in err and "starts over" in err
    assert all(torch.equal(res.best_state[k], whole.best_state[k]) for k in whole.best_state)  # as if never resumed


def test_a_wrong_shaped_checkpoint_is_discarded_not_a_traceback(tmp_path, capfd):
    from safetensors.torch import load_file, save_file

    ck, whole = _interrupted(tmp_path)
    t = load_file(str(ck))
    t["model.fc.weight"] = torch.zeros(3, 3)
    save_file(t, str(ck), metadata={"meta": '{"snapshots": []}', "sha256": "x"})
    res = _resume(ck)
    assert "unusable" in capfd.readouterr().err
    assert all(torch.equal(res.best_state[k], whole.best_state[k]) for k in whole.best_state)


def test_cli_find_seeds_three_runs_with_different_inits_and_masks(tiny_data, tmp_path):
    import json

    from conftest import TINY_FLAGS, run_cli
    from ticketkit.ticket import Ticket

    p = run_cli("find", "imdb", "cnn", "--n-seeds", "3", "--rounds", "1", "--data-dir", tiny_data, "--store", tmp_path,
                *TINY_FLAGS, "--quiet", "--json")
    out = json.loads(p.stdout)
    assert [o["config"]["seed"] for o in out] == [0, 1, 2]
    tickets = [Ticket.load(f"{o['run']}/level-01") for o in out]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert not torch.equal(tickets[a].init["embedding.weight"], tickets[b].init["embedding.weight"])
        assert not torch.equal(tickets[a].masks["convs.1.weight"], tickets[b].masks["convs.1.weight"])
    assert p.stderr.count("undertrained") >= 1  # 3 epochs on tiny data: flagged levels are warned about
