"""A usable sparse classifier (issue 18): trained weights kept per level, export, load, predict."""
import json

import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score

from conftest import run_cli, tiny_find_config
from ticketkit import Ticket, find_ticket
from ticketkit.data import load_raw, make_splits
from ticketkit.fsio import read_json
from ticketkit.sparse import SparseClassifier, trained_problems


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    cfg = tiny_find_config("cnn")
    cfg.train.epochs = 2
    store = tmp_path_factory.mktemp("sparse-store")
    return find_ticket(cfg.validate(), data_dir=tiny_data, store=store, progress=False), store


def _test_slice(t: Ticket, data_dir):
    from ticketkit.config import FindConfig

    cfg = FindConfig.from_dict(t.config["find"])
    return make_splits(load_raw(cfg.data.dataset, data_dir), cfg.data, cfg.seed).test


def test_every_level_keeps_its_trained_weights_times_mask(run):
    r, _ = run
    for d in r.ticket_paths():
        t = Ticket.load(d)
        assert "trained.safetensors" in read_json(d / "manifest.json")["files"]  # so `verify` checks it
        # packed: each parameter keeps only its mask's values, so the file holds the level's density of the weights
        packed = load_file(str(d / "trained.safetensors"))
        assert all(packed[n].numel() == int(t.mask[n].sum()) for n in packed)
        assert t.trained.keys() == packed.keys()
        for n, w in t.trained.items():
            assert torch.equal(w[t.mask[n]], packed[n])
            assert not bool(w.masked_select(~t.mask[n]).any())  # pruned weights are exact zeros
        assert trained_problems(t.trained, t.config["params"], t.mask) == []
    t = Ticket.load(r.ticket_paths()[-1])
    bad = {n: w.clone() for n, w in t.trained.items()}
    n = t.prunable[0]
    bad[n][~t.mask[n]] = 1.0
    assert any("non-zero weights where the mask pruned" in p for p in trained_problems(bad, t.config["params"], t.mask))


def test_export_load_predict_reproduces_the_recorded_test_accuracy(run, tiny_data, tmp_path):
    r, store = run
    d = r.ticket_paths()[-1]
    t = Ticket.load(d)
    out = tmp_path / "clf"
    p = run_cli("export", r.path.name, "--level", "2", "--trained", out, "--store", store, "--json")
    size = json.loads(p.stdout)
    assert sorted(f.name for f in out.iterdir()) == ["config.json", "model.safetensors", "size.json", "tokenizer.json"]
    assert json.loads((out / "size.json").read_text())["csr_bytes"] == size["csr_bytes"]
    state = load_file(str(out / "model.safetensors"))
    assert size["nonzero"] == sum(int(torch.count_nonzero(w)) for w in state.values())
    assert size["dense_bytes"] == sum(w.numel() * 4 for w in state.values())
    assert size["parameters"] == sum(w.numel() for w in state.values())
    test = _test_slice(t, tiny_data)
    for clf in (SparseClassifier.load(out), t.classifier()):
        assert not clf.model.training
        preds = clf.predict(test.texts)
        acc = accuracy_score(test.labels, [x["label_id"] for x in preds])
        assert acc == t.config["metrics"]["test_accuracy"]
        assert all(0.5 <= x["probability"] <= 1.0 and abs(sum(x["probabilities"].values()) - 1) < 1e-5 for x in preds)
    # an existing output directory is refused, with nothing written
    again = run_cli("export", d, "--trained", out, check=False)
    assert again.returncode == 3 and "already exists" in again.stderr


def test_predict_cli_prints_label_and_probability(run):
    r, store = run
    d = r.ticket_paths()[-1]
    want = Ticket.load(d).classifier().predict(["great superb wonderful film", "awful boring dull plot"])
    p = run_cli("predict", d, "great superb wonderful film", "awful boring dull plot", "--json")
    got = json.loads(p.stdout)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert [g["probability"] for g in got] == pytest.approx([w["probability"] for w in want])
    text = run_cli("predict", r.path.name, "--store", store, "great superb wonderful film").stdout
    assert text.split("\t")[0] == want[0]["label"]


def test_overlap_cli_of_a_run_with_itself_and_across_levels(run):
    r, store = run
    a, b = Ticket.load(r.ticket_paths()[1]), Ticket.load(r.ticket_paths()[2])
    same = json.loads(run_cli("overlap", r.ticket_paths()[2], r.ticket_paths()[2], "--json").stdout)
    assert same["all"]["jaccard"] == 1.0
    p = json.loads(run_cli("overlap", r.path.name, r.path.name, "--level", "1", "--level-b", "2", "--store", store,
                           "--json").stdout)
    # level 2's mask is nested in level 1's: |A∩B| = |B|
    kb = sum(int(m.sum()) for m in b.masks.values())
    assert p["all"]["intersection"] == kb and p["all"]["kept_a"] == sum(int(m.sum()) for m in a.masks.values())
    assert p["all"]["jaccard"] > p["all"]["chance"]


def test_a_ticket_without_trained_weights_is_one_clear_line(run, tmp_path):
    """A ticket found before trained.safetensors was kept (or stripped of it): predict/export say so, exit 3."""
    import shutil

    from ticketkit.ticket import write_manifest

    r, _ = run
    d = tmp_path / "old"
    shutil.copytree(r.ticket_paths()[-1], d)
    (d / "trained.safetensors").unlink()
    write_manifest(d)
    assert Ticket.load(d).trained is None
    for args in (("predict", d, "good"), ("export", d, "--trained", tmp_path / "out")):
        p = run_cli(*args, check=False)
        assert p.returncode == 3 and "has no trained.safetensors" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
