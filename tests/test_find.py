"""End-to-end tests of `find`: tickets, rewinding, schedules, controls, determinism, the store and the CLI."""
import json

import pytest
import torch

from conftest import TINY_FLAGS, run_cli
from ticketkit import Ticket, find_ticket
from ticketkit.config import FindConfig
from ticketkit.prune import is_nested


def _masks(run):
    return [Ticket.load(p).masks for p in run.ticket_paths()]


def test_find_iterative_cnn_end_to_end(tiny_data, tmp_path, tiny_config):
    cfg = tiny_config("cnn")
    run = find_ticket(cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    levels = run.levels
    assert [r["level"] for r in levels] == [0, 1, 2]
    # measured densities: 20 % of the survivors of every layer per round
    assert levels[0]["density_prunable"] == 1.0
    assert abs(levels[1]["density_prunable"] - 0.8) < 0.01 and abs(levels[2]["density_prunable"] - 0.64) < 0.01
    assert levels[2]["density_all"] > levels[2]["density_prunable"]  # biases are never pruned
    for r in levels:
        assert r["density_nonzero"] <= r["density_prunable"] + 1e-12  # the weights really are zero where pruned
    assert levels[0]["test_accuracy"] > 0.6  # the tiny task is learnable
    masks = _masks(run)
    for outer, inner in zip(masks, masks[1:]):
        assert is_nested(inner, outer)
    # rewound weights equal init x mask (rewind=init), and the ticket rebuilds that exact model
    t = run.ticket(2)
    model = t.build_model()
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), t.init[n] * t.mask[n])
    assert (run.path / "levels.csv").exists() and (run.path / "tokenizer.json").exists()
    assert json.loads((run.path / "level-02" / "config.json").read_text())["density"]["prunable"] == levels[2]["density_prunable"]


def test_same_seed_same_masks_bit_for_bit(tiny_data, tmp_path, tiny_config):
    a = find_ticket(tiny_config("cnn"), data_dir=tiny_data, store=tmp_path / "a", progress=False)
    b = find_ticket(tiny_config("cnn"), data_dir=tiny_data, store=tmp_path / "b", progress=False)
    for ma, mb in zip(_masks(a), _masks(b)):
        assert all(torch.equal(ma[n], mb[n]) for n in ma)
    ta, tb = a.ticket(), b.ticket()
    assert all(torch.equal(ta.rewind[n], tb.rewind[n]) for n in ta.rewind)
    assert [r["test_accuracy"] for r in a.levels] == [r["test_accuracy"] for r in b.levels]


def test_ticket_safetensors_round_trip(tiny_data, tmp_path, tiny_config):
    run = find_ticket(tiny_config("cnn"), data_dir=tiny_data, store=tmp_path, progress=False)
    t = run.ticket(1)
    t2 = Ticket.load(t.save(tmp_path / "copy"))
    for kind in ("init", "mask", "rewind"):
        a, b = getattr(t, kind), getattr(t2, kind)
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) and a[n].dtype == b[n].dtype for n in a)
    assert all(m.dtype == torch.bool for m in t2.mask.values())
    assert t2.config == t.config
    assert t2.tokenizer.to_str() == t.tokenizer.to_str()
    # no pickle: the file is plain safetensors with JSON metadata
    from safetensors import safe_open

    with safe_open(str(tmp_path / "copy" / "ticket.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["ticketkit"])["format"] == 2
        assert {k.split(".")[0] for k in f.keys()} == {"mask"}
    for kind in ("init", "rewind"):  # the weights, one file per kind, bare parameter names
        with safe_open(str(tmp_path / "copy" / f"{kind}.safetensors"), "pt") as f:
            assert set(f.keys()) == set(t.init)


def test_lstm_global_late_resetting(tiny_data, tmp_path, tiny_config):
    cfg = tiny_config("lstm", scope="global", rewind="epoch:1")
    run = find_ticket(cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    t0, t2 = run.ticket(0), run.ticket(2)
    # late resetting: the rewind weights are the weights after epoch 1 of the dense training, not init
    assert any(not torch.equal(t2.rewind[n], t2.init[n]) for n in t2.rewind)
    assert all(torch.equal(t2.rewind[n], t0.rewind[n]) for n in t2.rewind)
    # global pruning: one threshold, so per-layer densities differ
    layers = run.levels[2]["layers"]
    assert len({round(v, 3) for v in layers.values()}) > 1


def test_final_rewind_fine_tunes_from_trained_weights(tiny_data, tmp_path, tiny_config):
    run = find_ticket(tiny_config("cnn", rewind="final", levels=1), data_dir=tiny_data, store=tmp_path, progress=False)
    trained0 = run.ticket(0).trained  # level 0's best-validation state (mask all ones)
    t1 = run.ticket(1)
    assert all(torch.equal(t1.rewind[n], trained0[n]) for n in t1.rewind)


def test_oneshot_reaches_target_in_one_round(tiny_data, tmp_path, tiny_config):
    run = find_ticket(tiny_config("cnn", schedule="oneshot", target=0.5), data_dir=tiny_data, store=tmp_path, progress=False)
    assert len(run.levels) == 2
    assert abs(run.levels[1]["density_prunable"] - 0.5) < 0.005
    layers = run.levels[1]["layers"]  # the output layer at half the rate of the others (Frankle & Carbin)
    assert abs((1 - layers["fc.weight"]) / (1 - layers["convs.0.weight"]) - 0.5) < 0.03


def test_iterative_stops_at_target(tiny_data, tmp_path, tiny_config):
    run = find_ticket(tiny_config("cnn", target=0.7, levels=10), data_dir=tiny_data, store=tmp_path, progress=False)
    assert len(run.levels) == 3  # 100 % -> 80 % -> 70 % (the last round takes only what reaches the target)
    assert abs(run.levels[-1]["density_prunable"] - 0.7) < 0.005


@pytest.mark.parametrize("control", ["random-prune", "random-reinit"])
def test_controls_keep_per_layer_density(tiny_data, tmp_path, tiny_config, control):
    run = find_ticket(tiny_config("cnn", control=control), data_dir=tiny_data, store=tmp_path, progress=False)
    src = find_ticket(tiny_config("cnn"), data_dir=tiny_data, store=tmp_path, progress=False)  # reused, not retrained
    for a, b in zip(run.levels, src.levels):
        assert a["layers"] == b["layers"]
    t, s = run.ticket(2), src.ticket(2)
    if control == "random-prune":
        assert any(not torch.equal(t.mask[n], s.mask[n]) for n in t.prunable)
        assert all(torch.equal(t.rewind[n], s.rewind[n]) for n in t.rewind)  # same starting weights
    else:
        assert all(torch.equal(t.mask[n], s.mask[n]) for n in t.mask)
        assert all(not torch.equal(t.rewind[n], s.rewind[n]) for n in t.prunable)  # re-drawn weights


def test_same_settings_reuse_the_finished_run(tiny_data, tmp_path, tiny_config):
    a = find_ticket(tiny_config("cnn"), data_dir=tiny_data, store=tmp_path, progress=False)
    before = (a.path / "run.json").stat().st_mtime_ns
    b = find_ticket(tiny_config("cnn"), data_dir=tiny_data, store=tmp_path, progress=False)
    assert a.path == b.path and (b.path / "run.json").stat().st_mtime_ns == before


def test_cli_find_ls_show(tiny_data, tmp_path):
    store = tmp_path / "store"
    p = run_cli("find", "imdb", "cnn", "--data-dir", tiny_data, "--store", store, "--rounds", "2", *TINY_FLAGS, "--quiet", "--json")
    out = json.loads(p.stdout)
    assert out["status"] == "complete" and len(out["levels"]) == 3
    ls = run_cli("ls", "--store", store)
    assert "find-imdb-cnn-" in ls.stdout and "complete" in ls.stdout
    show = run_cli("show", out["name"], "--store", store, "--level", "1")
    assert "80.231 (prunable)" in show.stdout and "per-layer" in show.stdout  # the output layer pruned at 10 %
    show_run = run_cli("show", out["run"])
    assert "level" in show_run.stdout and "64.444" in show_run.stdout


def test_cli_oneshot_and_recipe(tiny_data, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('seed = 1\n[prune]\nschedule = "oneshot"\ntarget = 0.5\n[train]\nepochs = 2\n')
    p = run_cli("find", "imdb", "cnn", "--recipe", recipe, "--data-dir", tiny_data, "--store", tmp_path / "s",
                *TINY_FLAGS, "--quiet", "--json")  # TINY_FLAGS' --epochs 3 overrides the recipe's 2
    out = json.loads(p.stdout)
    assert out["config"]["seed"] == 1 and out["config"]["train"]["epochs"] == 3
    assert abs(out["levels"][-1]["density_prunable"] - 0.5) < 0.005


def test_recipe_errors_name_the_key_before_training(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[prune]\nrat = 0.2\n")
    p = run_cli("find", "imdb", "cnn", "--recipe", bad, "--store", tmp_path / "s", check=False)
    assert p.returncode != 0 and "rat" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    bad.write_text("[prune]\nrate = 1.5\n")
    p = run_cli("find", "imdb", "cnn", "--recipe", bad, "--store", tmp_path / "s", check=False)
    assert p.returncode != 0 and "prune.rate" in p.stderr
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").glob("find-*"))


def test_shipped_recipes_are_valid():
    from ticketkit.cli import build_find_config
    from conftest import REPO

    for r in sorted((REPO / "recipes").glob("*.toml")):
        if r.name.startswith(("transfer", "seed_study")) or "\n[sweep]" in r.read_text():
            continue  # a transfer or a sweep recipe (tests/test_sweep.py)
        cfg = build_find_config(str(r), None, None, {})
        assert isinstance(cfg, FindConfig)


@pytest.mark.realdata
def test_real_imdb_slice_smoke(shared_data, tmp_path):
    """A slice of the real IMDB data through the whole CLI: loads, tokenizes, trains, prunes, saves."""
    p = run_cli("find", "imdb", "cnn", "--data-dir", shared_data, "--store", tmp_path, "--max-train", "600",
                "--max-test", "300", "--rounds", "1", "--epochs", "2", "--vocab-size", "5000", "--max-len", "128",
                "--embed-dim", "32", "--num-filters", "16", "--quiet", "--json")
    out = json.loads(p.stdout)
    assert out["data"]["train_size"] == 540 and out["data"]["val_size"] == 60 and out["data"]["test_size"] == 300
    assert out["levels"][0]["test_accuracy"] > 0.5
    t = Ticket.load(next(iter(sorted((tmp_path / out["name"]).glob("level-01")))))
    assert t.tokenizer.get_vocab_size() == 5000


def test_artifacts_are_readable_by_others_in_a_shared_store(tiny_data, tmp_path, tiny_config):
    import os
    import stat

    run = find_ticket(tiny_config("cnn", levels=1), data_dir=tiny_data, store=tmp_path, progress=False)
    umask = os.umask(0)
    os.umask(umask)
    for p in [run.path / "run.json", run.path / "level-01", run.path / "level-01" / "ticket.safetensors"]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o777 if p.is_dir() else 0o666) & ~umask, (p, oct(mode))


def test_find_calls_the_registered_pruning_method(tiny_data, tmp_path, tiny_config):
    """Pruning is method x scope: a method registered in one place is what find's loop scores with."""
    from ticketkit.prune import METHODS, register_method

    @register_method("smallest-first")
    def smallest(weights, masks, context=None):  # keeps the SMALLEST magnitudes: the opposite of magnitude
        return {n: -weights[n].detach().abs() for n in masks}

    try:
        run = find_ticket(tiny_config("cnn", method="smallest-first", levels=1), data_dir=tiny_data, store=tmp_path,
                          progress=False)
        trained = run.ticket(0).trained
        m = run.ticket(1).masks["convs.0.weight"]
        w = trained["convs.0.weight"].abs()
        assert w[m].max() <= w[~m].min()  # survivors are the smallest trained weights
        assert run.config.prune.method == "smallest-first"
    finally:
        METHODS.pop("smallest-first")


@pytest.mark.parametrize("scope,rewind", [("local", "init"), ("global", "final")])
def test_oneshot_levels_share_the_dense_training_and_hit_the_iterative_counts(tiny_data, tmp_path, tiny_config,
                                                                               monkeypatch, scope, rewind):
    """oneshot-levels: one dense training (level 0), then each level pruned in one shot from its trained weights to
    the iterative schedule's counts at that round (per layer under local pruning, in total under global)."""
    import ticketkit.find as find_mod
    from ticketkit.prune import full_masks, local_counts

    dense_flags, real = [], find_mod.train

    def counting(model, masks, *a, **k):
        dense_flags.append(all(bool(m.all()) for m in masks.values()))
        return real(model, masks, *a, **k)

    monkeypatch.setattr(find_mod, "train", counting)
    kw = dict(scope=scope, rewind=rewind, levels=3, rate=0.4)
    one = find_ticket(tiny_config("cnn", schedule="oneshot-levels", **kw), data_dir=tiny_data, store=tmp_path, progress=False)
    assert dense_flags == [True, False, False, False]  # the dense network is trained once, shared by every level
    it = find_ticket(tiny_config("cnn", **kw), data_dir=tiny_data, store=tmp_path, progress=False)
    assert one.path != it.path and one.levels[0]["test_accuracy"] == it.levels[0]["test_accuracy"]

    dense = one.ticket(0).trained
    out = "fc.weight"
    full = full_masks(dense, Ticket.load(one.ticket_paths()[0]).masks)
    predicted = local_counts(full, 0.4, 3, output_layer=out, output_factor=0.5)
    for k, (mo, mi) in enumerate(zip(_masks(one), _masks(it))):
        co, ci = ({n: int(m.sum()) for n, m in x.items()} for x in (mo, mi))
        if scope == "local":
            assert co == ci and (k == 0 or co == predicted[k - 1])  # exactly the iterative per-layer counts
            groups = [[n] for n in mo]
        else:
            assert sum(co.values()) == sum(ci.values()) and co[out] == ci[out]  # the same total, output apart
            groups = [[out], [n for n in mo if n != out]]
        if k == 0:
            continue
        for g in groups:  # every level is a top-k of the same dense trained weights: no other training chose it
            w = torch.cat([dense[n].abs().flatten() for n in g])
            m = torch.cat([mo[n].flatten() for n in g])
            assert w[m].min() >= w[~m].max()
        t = Ticket.load(one.ticket_paths()[k])
        start = t.init if rewind == "init" else dense  # fine-tuning restarts every level from the dense weights
        assert all(torch.equal(t.rewind[n], start[n]) for n in t.rewind)


def test_oneshot_levels_is_validated():
    cfg = FindConfig()
    cfg.prune.schedule = "oneshot-level"
    with pytest.raises(Exception, match="prune.schedule: must be iterative, oneshot, oneshot-levels"):
        cfg.validate()
