"""The Transformer classifier: padding, masking, and a find and a transfer (with arms pruned at init) on tiny data."""
import json

import torch

from conftest import run_cli
from ticketkit.fsio import read_json
from ticketkit.models import create_model, prunable_names

TINY_TRANSFORMER = ["--epochs", "2", "--vocab-size", "100", "--max-len", "32", "--embed-dim", "16", "--num-heads", "2",
                    "--ff-dim", "32", "--max-positions", "32", "--batch-size", "32", "--lr", "1e-3"]


def test_padding_changes_nothing_and_is_masked_in_attention():
    m = create_model("transformer", 100, seed=0, embed_dim=16, num_heads=4, ff_dim=32).eval()
    ids = torch.randint(1, 100, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 10, dtype=torch.long)], 1)
    assert torch.allclose(m(ids, torch.tensor([6])), m(padded, torch.tensor([6])), atol=1e-5)
    # [PAD] is a zero row, but its learned position is not: only the key padding mask keeps it out of attention
    other = padded.clone()
    other[0, 6:] = 7  # what sits beyond the length must not matter either
    assert torch.allclose(m(padded, torch.tensor([6])), m(other, torch.tensor([6])), atol=1e-5)


def test_every_projection_is_its_own_prunable_xavier_layer():
    m = create_model("transformer", 100, seed=0)
    names = prunable_names(m)
    assert names[0] == "embedding.weight" and names[-1] == "fc.weight" and "positions.weight" not in names
    for i in range(2):
        for p in ("q", "k", "v", "out", "ff1", "ff2"):
            assert f"layers.{i}.{p}.weight" in names
    w = dict(m.named_parameters())["layers.0.ff1.weight"]  # [512, 128]: Xavier-normal std sqrt(2 / (128 + 512))
    assert abs(float(w.detach().std()) - (2 / 640) ** 0.5) < 0.1 * (2 / 640) ** 0.5
    assert all(float(p.detach().min()) == 1.0 for n, p in m.named_parameters() if "norm" in n and n.endswith("weight"))


def test_find_and_transfer_with_arms_pruned_at_init(tiny_data, tmp_path):
    store = tmp_path / "s"
    p = run_cli("find", "imdb", "transformer", "--data-dir", tiny_data, "--store", store, "--levels", "2",
                *TINY_TRANSFORMER, "--quiet", "--json")
    run = json.loads(p.stdout)
    info = read_json(next(store.glob("find-imdb-transformer-*")) / "run.json")
    assert info["status"] == "complete" and len(info["levels"]) == 3, run
    last = info["levels"][-1]
    assert abs(last["density_nonzero"] - last["density_prunable"]) < 1e-9  # pruned weights stayed exactly zero
    assert last["layers"]["fc.weight"] > last["layers"]["layers.0.q.weight"]  # output layer at half rate
    p = run_cli("transfer", "--to", "yelp2", "--seeds", "1", "--levels", "100,64", "--controls", "random-prune,snip,synflow",
                "--one-source", "--data-dir", tiny_data, "--store", store, "--epochs", "1", "--batch-size", "32",
                "--max-train", "200", "--max-test", "100", "--json")
    res = read_json(json.loads(p.stdout)["run"] + "/results.json")
    by = {(r["arm"], r["level"]): r for r in res["rows"]}
    assert {a for a, _ in by} == {"transferred", "random-prune", "snip", "synflow", "fresh"}
    for arm in ("snip", "synflow"):  # same per-layer counts as the transferred ticket (the source is local)
        assert by[(arm, 64.0)]["density_prunable"] == by[("transferred", 64.0)]["density_prunable"]
    md = (json.loads(p.stdout)["run"] + "/report.md")
    assert "snip" in open(md).read()
