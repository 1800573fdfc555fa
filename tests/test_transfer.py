"""Transfer experiments (issue 3): arm construction, the end-to-end command, resume, worker processes, errors."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY_FLAGS, run_cli
from ticketkit.config import TrainHparams
from ticketkit.errors import IntegrityError, TicketkitError
from ticketkit.fsio import read_json
from ticketkit.store import Store, level_dirs
from ticketkit.ticket import Ticket
from ticketkit.transfer import (TransferConfig, arm_start, config_from_recipe, resolve_source,
                                transfer_ticket)

TRANSFER_FLAGS = ["--epochs", "2", "--batch-size", "32", "--max-train", "200", "--max-test", "100"]
# One source search, seeds varying the target training only: the mechanics of one transfer (replicates are below).
ARMS_ARGS = ["--to", "yelp2", "--n-seeds", "2", "--densities", "100,64", "--controls", "random-prune,random-reinit",
             "--one-source"]


def _cfg(**kw) -> TransferConfig:
    base = dict(target="yelp2", seeds=2, levels=[100, 64], controls=["random-prune", "random-reinit"],
                max_train=200, max_test=100, train=TrainHparams(epochs=2, batch_size=32), independent=False)
    return TransferConfig(**{**base, **kw})


def _metrics(rows) -> dict:
    """Everything that a re-run must reproduce exactly (wall time and which arm trained a shared cell aside)."""
    return {(r["arm"], r["level"], r["seed"]): {k: v for k, v in r.items() if k not in ("seconds", "shared_with")}
            for r in rows}


@pytest.fixture(scope="module")
def source_store(tmp_path_factory, tiny_data) -> Path:
    """A tiny finished IMDB find run (levels 100, 80, 64 %) in a store of its own."""
    store = tmp_path_factory.mktemp("source-store")
    run_cli("find", "imdb", "cnn", "--data-dir", tiny_data, "--store", store, "--rounds", "2", *TINY_FLAGS, "--quiet")
    return store


@pytest.fixture(scope="module")
def reference(source_store, tiny_data, tmp_path_factory):
    """The end-to-end CLI run every other test compares against: 2 levels, 2 seeds, both controls, fresh arm."""
    store = tmp_path_factory.mktemp("ref-store")
    src = level_dirs(next(source_store.glob("find-imdb-*")))[0].parent
    shutil.copytree(src, store / src.name)
    p = run_cli("transfer", *ARMS_ARGS, "--data-dir", tiny_data, "--store", store, *TRANSFER_FLAGS, "--json")
    out = json.loads(p.stdout)
    return store, Path(out["run"]), out


def _copy_source(source_store: Path, dest: Path) -> Path:
    src = next(source_store.glob("find-imdb-*"))
    shutil.copytree(src, dest / src.name)
    return dest / src.name


# ------------------------------------------------------------------------------------------ arm construction

def test_random_prune_keeps_every_layer_density_exactly(source_store):
    src = resolve_source(None, source_store, "yelp2")
    for lv in src.levels[1:]:
        _, masks, rewind = src.weights(lv)
        for seed in (0, 1):
            rand, start = arm_start(src, "random-prune", lv.index, seed)
            assert set(rand) == set(masks)
            for n in masks:
                assert rand[n].dtype == torch.bool and rand[n].shape == masks[n].shape
                assert int(rand[n].sum()) == int(masks[n].sum()), n  # exact per-layer counts
            assert any(not torch.equal(rand[n], masks[n]) for n in masks)  # it is a different mask
            assert all(torch.equal(start[n], rewind[n]) for n in rewind)  # over the same starting weights
        r0, _ = arm_start(src, "random-prune", lv.index, 0)
        r0b, _ = arm_start(src, "random-prune", lv.index, 0)
        r1, _ = arm_start(src, "random-prune", lv.index, 1)
        assert all(torch.equal(r0[n], r0b[n]) for n in r0)  # reproducible per seed
        assert any(not torch.equal(r0[n], r1[n]) for n in r0)  # a new draw per seed


def test_transferred_ticket_equals_its_source_bit_for_bit(source_store):
    src = resolve_source(None, source_store, "yelp2")
    for d in level_dirs(src.path):
        t = Ticket.load(d)
        masks, start = arm_start(src, "transferred", t.config["level"], 0)
        assert set(masks) == set(t.masks) and all(torch.equal(masks[n], t.masks[n]) for n in masks)
        assert set(start) == set(t.rewind) and all(torch.equal(start[n], t.rewind[n]) for n in start)
    # random-reinit: the same mask over weights drawn from another seed
    masks, start = arm_start(src, "random-reinit", 2, 0)
    t = Ticket.load(level_dirs(src.path)[2])
    assert all(torch.equal(masks[n], t.masks[n]) for n in masks)
    assert not torch.equal(start["embedding.weight"], t.rewind["embedding.weight"])


def test_single_ticket_source_has_its_level_and_the_same_dense_level(source_store):
    run_src = resolve_source(None, source_store, "yelp2")
    ticket_dir = level_dirs(run_src.path)[2]
    single = resolve_source(str(ticket_dir), source_store, "yelp2")
    assert single.kind == "ticket" and [lv.index for lv in single.levels] == [0, 2]
    dense_masks, dense_start = arm_start(single, "transferred", 0, 0)
    run_masks, run_start = arm_start(run_src, "transferred", 0, 0)  # the run's own level 0
    assert all(torch.equal(dense_masks[n], run_masks[n]) for n in run_masks)
    assert all(torch.equal(dense_start[n], run_start[n]) for n in run_start)
    assert resolve_source(str(run_src.path), source_store, "yelp2", level="2").kind == "ticket"


# ------------------------------------------------------------------------------------------ end to end

def test_transfer_cli_end_to_end(reference, tiny_data):
    store, rd, out = reference
    assert rd.parent == store and rd.name.startswith("transfer-imdb-yelp2-cnn-")
    for f in ("results.json", "results.csv", "report.md", "accuracy_vs_density.png"):
        assert (rd / f).is_file(), f
    res = read_json(rd / "results.json")
    assert res["status"] == "complete" and res["target"] == "yelp2" and res["source"]["dataset"] == "imdb"
    assert 0.0 <= res["oov_rate"] < 1.0
    keys = {(r["arm"], r["level"], r["seed"]) for r in res["rows"]}
    assert keys == {(a, lv, s) for a in ("transferred", "random-prune", "random-reinit", "fresh")
                    for lv in (100.0, 64.0) for s in (0, 1)}
    by = {(r["arm"], r["level"], r["seed"]): r for r in res["rows"]}
    for s in (0, 1):
        t, rp, fr = by[("transferred", 64.0, s)], by[("random-prune", 64.0, s)], by[("fresh", 64.0, s)]
        assert t["density_prunable"] == rp["density_prunable"]  # measured, identical counts
        assert abs(t["density_prunable"] - 0.64) < 0.01 and t["source_level"] == 2
        assert abs(fr["density_prunable"] - t["density_prunable"]) < 1e-9  # the fresh level matches in density
        assert 0.0 <= t["test_accuracy"] <= 1.0 and t["epochs"] >= 1 and 1 <= t["best_epoch"] <= t["epochs"]
        # at 100 % with rewinding to init, transferred, random-prune and fresh are one training, recorded thrice
        assert by[("random-prune", 100.0, s)]["test_accuracy"] == by[("transferred", 100.0, s)]["test_accuracy"]
        assert by[("fresh", 100.0, s)]["test_accuracy"] == by[("transferred", 100.0, s)]["test_accuracy"]
    # seed 1 trains the dense cell once; at seed 0 (the fresh search's seed) the search already trained it
    assert by[("random-prune", 100.0, 1)]["shared_with"].startswith("transferred")
    assert by[("transferred", 100.0, 0)]["shared_with"] == f"{res['fresh']['run']} level 0"
    csv_lines = (rd / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 16 and csv_lines[0].startswith("arm,level_requested_pct,seed")
    md = (rd / "report.md").read_text()
    assert "Mean ± sd" in md and "t-interval" in md and "random-prune" in md and "OOV" in md
    assert out["rows"] and out["run"] == str(rd)
    # the same command again reuses the finished run (no training) and prints the summary table
    p = run_cli("transfer", *ARMS_ARGS, "--data-dir", tiny_data, "--store", store, *TRANSFER_FLAGS)
    assert "reusing finished transfer" in p.stderr and "transferred" in p.stdout
    assert _metrics(read_json(rd / "results.json")["rows"]) == _metrics(res["rows"])


def test_fresh_arm_starts_from_the_source_init_bit_for_bit(reference, source_store):
    store, rd, _ = reference
    res = read_json(rd / "results.json")
    fresh = store / res["fresh"]["run"]
    info = read_json(fresh / "run.json")
    assert info["config"]["data"]["dataset"] == "yelp2" and "tokenizer_from" in info and res["fresh"]["same_init"]
    src = next(source_store.glob("find-imdb-*"))
    a, b = Ticket.load(level_dirs(src)[0]), Ticket.load(level_dirs(fresh)[0])
    assert set(a.init) == set(b.init) and all(torch.equal(a.init[n], b.init[n]) for n in a.init)
    assert (fresh / "tokenizer.json").read_text() == (src / "tokenizer.json").read_text()
    # and it really searched the target: its level-2 mask is not the source's
    assert not all(torch.equal(Ticket.load(level_dirs(fresh)[2]).masks[n], Ticket.load(level_dirs(src)[2]).masks[n])
                   for n in a.masks)


def test_cells_the_fresh_search_trained_are_recorded_from_it_and_equal_a_retraining(reference, tiny_data, tmp_path):
    """At the fresh search's seed, the fresh arm (and the dense cells) are trainings the search already ran: same
    start, data, settings and seed. They are recorded from it, not trained twice, and retraining one gives exactly
    the recorded numbers."""
    from ticketkit.transfer import _Cell, _digest, _train_job, _Transfer

    store, rd, _ = reference
    res = read_json(rd / "results.json")
    fresh = store / res["fresh"]["run"]
    shared = {(r["arm"], r["level"], r["seed"]): r for r in res["rows"] if r.get("shared_with", "").startswith(fresh.name)}
    assert set(shared) == {("fresh", 100.0, 0), ("fresh", 64.0, 0), ("transferred", 100.0, 0), ("random-prune", 100.0, 0)}
    assert all(r["seconds"] == 0.0 for r in shared.values())
    assert shared[("fresh", 64.0, 0)]["shared_with"] == f"{fresh.name} level 2"
    trained = [r for r in res["rows"] if "shared_with" not in r]
    assert not any(r["arm"] == "fresh" and r["seed"] == 0 for r in trained)  # no fresh training at the search's seed
    assert any(r["arm"] == "fresh" and r["seed"] == 1 for r in trained)      # another seed retrains the fresh ticket

    tr = _Transfer(_cfg().validate(), resolve_source(None, store, "yelp2"), Store(store), tiny_data, False, None, None, None)
    tr.prepare()
    for cell in (_Cell("fresh", 64.0, 0, 2, {"fresh_dir": level_dirs(fresh)[2]}), _Cell("transferred", 100.0, 0, 0)):
        masks, start = tr.build(cell)
        dg = _digest(masks, start)
        assert dg == shared[cell.key]["digest"]
        job = {**tr.job(cell, masks, start, dg), "checkpoint": str(tmp_path / f"{cell.arm}.safetensors")}
        again = _train_job(job, tr.data)
        assert {k: v for k, v in again.items() if k != "seconds"} == \
            {k: shared[cell.key][k] for k in again if k != "seconds"}, cell


def test_workers_give_identical_results(reference, source_store, tiny_data, tmp_path):
    _, rd, _ = reference
    src = _copy_source(source_store, tmp_path)
    run = transfer_ticket(str(src), _cfg(workers=2), data_dir=tiny_data, store=tmp_path, progress=False)
    assert run.path.name == rd.name  # workers is not part of the run's identity
    ref = read_json(rd / "results.json")
    assert _metrics(run.rows) == _metrics(ref["rows"])
    # Each run records its two phases; in one process the training phase holds every training it timed.
    t, t1 = run.results["timing"], ref["timing"]
    assert (run.results["config"]["workers"], ref["config"]["workers"]) == (2, 1)
    assert t["prepare_seconds"] > 0 and t["train_seconds"] > 0
    assert t1["train_seconds"] >= sum(r["seconds"] for r in ref["rows"]) - 0.01 * len(ref["rows"])


def test_interrupted_transfer_resumes_without_redoing_cells(reference, source_store, tiny_data, tmp_path):
    _, rd, _ = reference
    src = _copy_source(source_store, tmp_path)
    cfg = _cfg(fresh=False)  # the fresh arm resumes through find's own level-by-level resume
    name = cfg.run_name(resolve_source(str(src), tmp_path, "yelp2"))

    def stop_after_three_cells():
        p = tmp_path / name / "results.json"
        return p.exists() and len(read_json(p)["rows"]) >= 3

    with pytest.raises(KeyboardInterrupt):
        transfer_ticket(str(src), cfg, data_dir=tiny_data, store=tmp_path, progress=False, stop_flag=stop_after_three_cells)
    first = read_json(tmp_path / name / "results.json")
    assert first["status"] == "running" and 3 <= len(first["rows"]) < 12
    assert Store(tmp_path).runs("transfer")[0]["status"] == "interrupted"
    run = transfer_ticket(str(src), cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    final = {(r["arm"], r["level"], r["seed"]): r for r in run.rows}
    assert len(final) == 12
    for r in first["rows"]:  # finished cells are kept as they were, wall time included: not trained again
        assert final[(r["arm"], r["level"], r["seed"])] == r
    ref = _metrics(read_json(rd / "results.json")["rows"])
    assert _metrics(run.rows) == {k: v for k, v in ref.items() if k[0] != "fresh"}  # = the uninterrupted run
    assert not list((run.path / "checkpoints").glob("*.safetensors"))


def test_mask_overlap_of_transferred_and_fresh_tickets_per_level_and_layer(reference, source_store):
    """results.json holds, per requested level, the Jaccard of the transferred (source) and fresh masks per layer,
    recomputed here from the two tickets, and the report shows it against chance."""
    from ticketkit.overlap import chance_jaccard

    store, rd, _ = reference
    res = read_json(rd / "results.json")
    src, fresh = level_dirs(next(source_store.glob("find-imdb-*"))), level_dirs(store / res["fresh"]["run"])
    recs = {float(r["level"]): r for r in res["overlap"]}
    assert set(recs) == {100.0, 64.0}
    for level, r in recs.items():
        a, b = Ticket.load(src[r["source_level"]]).masks, Ticket.load(fresh[r["fresh_level"]]).masks
        assert set(r["layers"]) == set(a)
        for n, x in r["layers"].items():
            inter, ka, kb = int((a[n] & b[n]).sum()), int(a[n].sum()), int(b[n].sum())
            assert (x["intersection"], x["kept_a"], x["kept_b"]) == (inter, ka, kb)
            assert x["jaccard"] == inter / (ka + kb - inter) and x["chance"] == chance_jaccard(ka, kb, a[n].numel())
    assert recs[100.0]["all"]["jaccard"] == 1.0  # dense: both masks keep everything
    assert 0 < recs[64.0]["all"]["jaccard"] < 1
    md = (rd / "report.md").read_text()
    assert "## Mask overlap: transferred vs fresh ticket" in md and "E|A∩B| = k_A k_B / n" in md


def test_report_rebuilds_every_file_from_results_json(reference, tmp_path):
    _, rd, _ = reference
    copy = tmp_path / rd.name
    copy.mkdir()
    shutil.copy(rd / "results.json", copy / "results.json")
    p = run_cli("report", copy)
    for f in ("results.csv", "report.md"):
        assert (copy / f).read_text() == (rd / f).read_text(), f
    assert "transferred minus control" in p.stdout


# ------------------------------------------------------------------------------------------ errors before training

def test_corrupt_source_fails_before_training(source_store, tiny_data, tmp_path):
    src = _copy_source(source_store, tmp_path)
    f = level_dirs(src)[2] / "ticket.safetensors"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        transfer_ticket(str(src), _cfg(), data_dir=tiny_data, store=tmp_path, progress=False)
    assert not list(tmp_path.glob("transfer-*"))  # nothing was started


def test_missing_tokenizer_fails_before_training(source_store, tiny_data, tmp_path):
    src = _copy_source(source_store, tmp_path)
    ticket = level_dirs(src)[1]
    (ticket / "tokenizer.json").unlink()
    p = run_cli("transfer", str(ticket), "--to", "yelp2", "--data-dir", tiny_data, "--store", tmp_path, check=False)
    assert p.returncode != 0 and "tokenizer.json" in p.stderr and p.stderr.startswith("error:")
    assert not list(tmp_path.glob("transfer-*"))


def test_architecture_mismatch_fails_before_training(source_store, tiny_data, tmp_path):
    src = _copy_source(source_store, tmp_path)
    p = run_cli("transfer", str(src), "--to", "yelp2", "--arch", "lstm", "--data-dir", tiny_data, "--store", tmp_path,
                check=False)
    assert p.returncode == 3 and "architecture cnn, not lstm" in p.stderr
    # a ticket whose tensors do not fit the architecture its config claims
    t = Ticket.load(level_dirs(src)[0])
    t.config["find"]["model"]["arch"] = "lstm"
    t.save(tmp_path / "wrong-arch")
    with pytest.raises(TicketkitError, match="different architecture"):
        transfer_ticket(str(tmp_path / "wrong-arch"), _cfg(), data_dir=tiny_data, store=tmp_path, progress=False)
    assert not list(tmp_path.glob("transfer-*"))


def test_no_source_in_store_is_a_clear_error(tmp_path, tiny_data):
    with pytest.raises(TicketkitError, match="ticketkit find imdb"):
        transfer_ticket(None, _cfg(), data_dir=tiny_data, store=tmp_path, progress=False)


# ------------------------------------------------------------------------------------------ config and recipes

def test_config_validation_and_recipes(tmp_path):
    assert TransferConfig(seeds=3).seeds == [0, 1, 2]
    for bad, match in ((dict(levels=[0]), "levels"), (dict(controls=["shuffle"]), "controls"),
                       (dict(seeds=[]), "seeds"), (dict(workers=0), "workers"), (dict(target="../x"), "target")):
        with pytest.raises(TicketkitError, match=match):
            TransferConfig(**bad).validate()
    c = config_from_recipe({"transfer": {"seeds": 2, "levels": [100, 7]}, "train": {"epochs": 3},
                            "data": {"max_train": 500}, "prune": {"rate": 0.59}})
    assert c.seeds == [0, 1] and c.levels == [100.0, 7.0] and c.train.epochs == 3 and c.max_train == 500
    with pytest.raises(TicketkitError, match="unknown key 'transfer.bogus'"):
        config_from_recipe({"transfer": {"bogus": 1}})
    with pytest.raises(TicketkitError, match="epoch"):
        config_from_recipe({"transfer": {}, "train": {"epochz": 1}})
    repo = Path(__file__).resolve().parents[1]
    from ticketkit.config import load_recipe
    every_arm = ["random-prune", "random-prune-rows", "random-reinit"]
    for name, levels in (("transfer_imdb_yelp2.toml", [100, 41.1, 16.9, 7.0, 2.9, 1.2, 0.5, 0.2]),
                         ("transfer_imdb_yelp2_cpu.toml", [100, 41.1, 16.9, 7.0, 2.9, 1.2, 0.5, 0.2]),
                         ("transfer_quick.toml", [100, 16.9, 7.0, 2.9])):
        cfg = config_from_recipe(load_recipe(repo / "recipes" / name))
        # every recipe runs every arm over 3 independent seeds
        assert cfg.levels == levels and cfg.fresh and cfg.controls == every_arm, name
        assert cfg.seeds == [0, 1, 2] and cfg.independent, name
    # a recipe with an unknown key fails on the command line before anything runs
    bad = tmp_path / "bad.toml"
    bad.write_text('[transfer]\ntarget = "yelp2"\nlevelz = [1]\n')
    p = run_cli("transfer", "--recipe", bad, "--store", tmp_path / "s", check=False)
    assert p.returncode == 3 and "levelz" in p.stderr and not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------ real data

@pytest.mark.realdata
def test_real_data_imdb_to_yelp2_smoke(shared_data, tmp_path):
    store = tmp_path / "store"
    run_cli("find", "imdb", "cnn", "--data-dir", shared_data, "--store", store, "--rounds", "1", "--rate", "0.5",
            "--max-train", "300", "--max-test", "200", *TINY_FLAGS, "--epochs", "1", "--quiet")
    p = run_cli("transfer", "--to", "yelp2", "--data-dir", shared_data, "--store", store, "--densities", "50",
                "--n-seeds", "1", "--max-train", "300", "--max-test", "200", "--epochs", "1", "--batch-size", "32",
                "--quiet", "--json")
    res = json.loads(p.stdout)
    assert res["status"] == "complete" and res["data"]["test_size"] == 200 and res["data"]["train_size"] == 270
    assert 0.05 < res["oov_rate"] < 0.9  # a 100-word IMDB vocabulary leaves much of Yelp-2 unknown
    arms = {(r["arm"], r["level"]) for r in res["rows"]}
    assert {("transferred", 100.0), ("transferred", 50.0), ("random-prune", 50.0), ("fresh", 50.0)} <= arms
    for r in res["rows"]:
        assert 0.0 <= r["test_accuracy"] <= 1.0
    assert (Path(res["run"]) / "accuracy_vs_density.png").stat().st_size > 1000


def test_recipe_without_source_finds_its_own_source_first(tiny_data, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("""
[transfer]
target = "yelp2"
seeds = 1
levels = [80]
controls = []
fresh = false

[data]
vocab_size = 100
max_len = 32
max_train = 200

[model]
num_filters = 8
embed_dim = 16

[train]
epochs = 1
batch_size = 32

[prune]
levels = 1
""")
    store = tmp_path / "store"
    p = run_cli("transfer", "--recipe", recipe, "--data-dir", tiny_data, "--store", store, "--json")
    res = json.loads(p.stdout)
    finds = list(store.glob("find-imdb-cnn-*"))
    assert len(finds) == 1 and res["source"]["path"] == str(finds[0])
    find_cfg = read_json(finds[0] / "run.json")["config"]
    assert find_cfg["data"]["max_train"] == 200 and find_cfg["train"]["epochs"] == 1 and find_cfg["prune"]["levels"] == 1
    assert {(r["arm"], r["level"]) for r in res["rows"]} == {("transferred", 100.0), ("transferred", 80.0)}
    assert res["config"]["max_train"] == 200 and res["data"]["train_size"] == 180


# ------------------------------------------------------------------------------------------ independent replicates

def test_seeds_are_independent_replicates_end_to_end(source_store, tiny_data, tmp_path):
    """--seeds 3 from a run: seed s searches the source again at seed s and transfers that search with its own
    fresh search and controls; the group's report takes intervals over the 3 independent seeds."""
    src = _copy_source(source_store, tmp_path)
    p = run_cli("transfer", str(src), "--to", "yelp2", "--n-seeds", "3", "--densities", "100,64",
                "--data-dir", tiny_data, "--store", tmp_path, *TRANSFER_FLAGS, "--json", "--quiet")
    out = json.loads(p.stdout)
    res = read_json(Path(out["run"]) / "results.json")
    assert res["independent"] and sorted(res["replicates"]) == ["0", "1", "2"]
    arms = ("transferred", "random-prune", "random-prune-rows", "random-reinit", "fresh")
    assert {(r["arm"], r["level"], r["seed"]) for r in res["rows"]} == {(a, lv, s) for a in arms for lv in (100.0, 64.0)
                                                                        for s in (0, 1, 2)}
    reps = [res["replicates"][str(s)] for s in (0, 1, 2)]
    sources = [Ticket.load(level_dirs(Path(r["source"]))[2]) for r in reps]
    assert [t.config["seed"] for t in sources] == [0, 1, 2]
    for a, b in ((0, 1), (1, 2)):
        assert not torch.equal(sources[a].init["convs.0.weight"], sources[b].init["convs.0.weight"])
        assert not torch.equal(sources[a].masks["embedding.weight"], sources[b].masks["embedding.weight"])
        assert reps[a]["fresh"]["run"] != reps[b]["fresh"]["run"]
        assert reps[a]["data"]["val_fingerprint"] != reps[b]["data"]["val_fingerprint"]  # the target split too
    assert all(r["fresh"]["same_init"] for r in reps)  # each fresh search starts from its own source's init
    for r in res["rows"]:  # per-layer densities and diagnostics on every row
        assert {"density_embedding", "density_non_embedding", "density_output", "layers", "flags"} <= set(r)
    # each seed's transferred-vs-fresh mask overlap, from its own source and fresh search
    assert {(float(o["level"]), o["seed"]) for o in res["overlap"]} == {(lv, s) for lv in (100.0, 64.0) for s in (0, 1, 2)}
    md = (Path(out["run"]) / "report.md").read_text()
    assert "independent" in md and "95%" in md and "Mask overlap" in md
    # the same command again reuses everything
    again = run_cli("transfer", str(src), "--to", "yelp2", "--n-seeds", "3", "--densities", "100,64",
                    "--data-dir", tiny_data, "--store", tmp_path, *TRANSFER_FLAGS, "--json", "--quiet")
    assert json.loads(again.stdout)["run"] == out["run"]
    assert _metrics(read_json(Path(out["run"]) / "results.json")["rows"]) == _metrics(res["rows"])
