"""Any text dataset (issue 18, part 3): unregistered names from a data dir, other column names, string and k-class
labels, the sst2 / ag_news registry entries, the Hub path's split mapping. Every dataset here is made by the test."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY_FLAGS, run_cli
from ticketkit.config import DataHparams, TrainHparams
from ticketkit.datasets import DATASETS, from_dataset_dict, load_raw, parse_split_map, to_classes
from ticketkit.errors import TicketkitError
from ticketkit.fsio import read_json

TOPICS = {"World": "war election minister border treaty".split(), "Sports": "goal match coach season league".split(),
          "Business": "market shares profit bank merger".split(), "Sci/Tech": "software chip robot physics online".split()}
FILLER = "the a of to in on and reported today new after says this with for".split()


def make_topics(root, name, n_train=320, n_test=160, seed=0, label=lambda k, names: k, text="text", label_col="label"):
    """A small learnable 4-class dataset: each text carries one to three keywords of its class."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    (root / name).mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        texts, labels = [], []
        for i in range(n):
            k = i % 4
            words = list(rng.choice(FILLER, rng.integers(6, 20)))
            for _ in range(rng.integers(1, 4)):
                words.insert(rng.integers(0, len(words)), rng.choice(TOPICS[names[k]]))
            texts.append(" ".join(words))
            labels.append(label(k, names))
        pd.DataFrame({text: texts, label_col: labels}).to_parquet(root / name / f"{split}.parquet")
    return root


def _run(store):
    (run,) = [p for p in store.iterdir() if p.name.startswith("find-")]
    return run


def test_unregistered_name_with_other_columns_from_a_data_dir(tmp_path):
    """`find NAME cnn --data-dir DIR` for a NAME no registry knows, its columns named by flags (CSV files)."""
    root = make_topics(tmp_path / "data", "reviews", text="body", label_col="stars", label=lambda k, n: k % 2)
    for s in ("train", "test"):  # CSV works as parquet does
        pd.read_parquet(root / "reviews" / f"{s}.parquet").to_csv(root / "reviews" / f"{s}.csv", index=False)
        (root / "reviews" / f"{s}.parquet").unlink()
    assert "reviews" not in DATASETS
    store = tmp_path / "store"
    p = run_cli("find", "reviews", "cnn", "--data-dir", root, "--store", store, "--text-column", "body",
                "--label-column", "stars", *TINY_FLAGS, "--levels", "1", "--quiet", "--json")
    run = _run(store)
    assert run.name.startswith("find-reviews-cnn-") and json.loads(p.stdout)["status"] == "complete"
    cfg = read_json(run / "run.json")["config"]
    assert cfg["data"]["text_column"] == "body" and cfg["data"]["label_column"] == "stars"
    assert cfg["model"]["num_classes"] == 2 and cfg["data"]["labels"] == []  # 0/1 integers: nothing to map
    # without the flags: the error names the columns it found and the flags that fix it
    with pytest.raises(TicketkitError, match=r"expected columns 'text' and 'label', found \['body', 'stars'\]; pass --text-column"):
        load_raw("reviews", root)


def test_a_name_neither_registry_nor_data_dir_knows_is_one_line(tmp_path):
    (tmp_path / "data").mkdir()
    p = run_cli("find", "mnist", "cnn", "--data-dir", tmp_path / "data", "--store", tmp_path / "store", check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 3 and len(lines) == 1, p.stderr
    assert "unknown dataset 'mnist'" in lines[0] and "imdb" in lines[0] and "mnist/train.parquet" in lines[0]
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").glob("find-*"))
    with pytest.raises(TicketkitError, match="unknown dataset 'mnist': not registered.*--data-dir DIR"):
        load_raw("mnist")  # no data dir at all
    with pytest.raises(TicketkitError, match="data.dataset: '../x' is not a dataset name"):
        DataHparams(dataset="../x").validate()


def test_string_labels_are_mapped_in_sorted_order_and_recorded(tmp_path, tiny_config):
    from ticketkit.find import find_ticket

    root = make_topics(tmp_path / "data", "topics", label=lambda k, names: names[k])
    raw = load_raw("topics", root)
    assert raw.labels == sorted(TOPICS) and raw.num_classes == 4
    names = pd.read_parquet(root / "topics" / "train.parquet")["label"]
    assert [raw.labels[i] for i in raw["train"].labels] == list(names)  # maps back exactly
    cfg = tiny_config(dataset="topics", levels=1)
    cfg.train.epochs = 2
    run = find_ticket(cfg, data_dir=root, store=tmp_path / "store", progress=False)
    t = run.ticket(0)
    assert t.config["find"]["data"]["labels"] == sorted(TOPICS) and t.config["find"]["model"]["num_classes"] == 4
    assert t.config["data"]["classes"] == sorted(TOPICS) and t.init["fc.weight"].shape[0] == 4
    assert run.config.data.labels == sorted(TOPICS)  # the run name hashes them: the name means the output layer
    from ticketkit.report.show import show
    assert f"4 classes: {', '.join(sorted(TOPICS))}" in show(str(run.path / "level-00"), None, tmp_path / "store").text
    # predict names each class by its string label (class i is classes[i])
    clf = t.classifier()
    assert clf.labels == sorted(TOPICS)
    assert {p["label"] for p in clf.predict(["a text", "another one"])} <= set(TOPICS)
    # a test label the training split never had: one line naming it
    df = pd.read_parquet(root / "topics" / "test.parquet")
    df.loc[3, "label"] = "Weather"
    df.to_parquet(root / "topics" / "test.parquet")
    with pytest.raises(TicketkitError, match="'Weather' at row 3 is not one of the classes"):
        load_raw("topics", root)


def test_integer_labels_that_are_not_0_to_k_are_mapped_numerically(tmp_path):
    root = make_topics(tmp_path / "data", "stars", label=lambda k, n: [1, 2, 5, 10][k])
    raw = load_raw("stars", root)
    assert raw.labels == ["1", "2", "5", "10"] and raw.num_classes == 4
    assert set(raw["test"].labels) == {0, 1, 2, 3}


def test_four_classes_through_find_transfer_and_report(tmp_path, tiny_config):
    """A 4-class source and target: the output layer has 4 rows, accuracy and macro-F1 are recorded per level,
    the transfer maps the target's labels with the source's classes, and the report states them and chance."""
    from ticketkit.find import find_ticket
    from ticketkit.report import render_report
    from ticketkit.transfer import TransferConfig, transfer_ticket

    root = make_topics(tmp_path / "data", "news_a", seed=0)
    make_topics(root, "news_b", seed=1)
    cfg = tiny_config(dataset="news_a", levels=1)
    store = tmp_path / "store"
    run = find_ticket(cfg, data_dir=root, store=store, progress=False)
    assert run.config.model.num_classes == 4 and len(run.levels) == 2
    for row in run.levels:
        assert 0 <= row["test_macro_f1"] <= 1 and 0 <= row["test_accuracy"] <= 1
    info = run.info["data"]
    assert info["num_classes"] == 4 and info["classes"] == ["0", "1", "2", "3"]
    assert run.levels[0]["test_accuracy"] > info["chance_accuracy"]  # it learned more than the majority class
    assert run.ticket(1).masks["fc.weight"].shape[0] == 4
    tcfg = TransferConfig(target="news_b", seeds=1, levels=[100, 80], controls=["random-prune"], fresh=False,
                          train=TrainHparams(epochs=2, batch_size=32))
    tr = transfer_ticket(str(run.path), tcfg, data_dir=root, store=store, progress=False)
    res = read_json(tr.path / "results.json")
    assert res["data"]["num_classes"] == 4 and {r["arm"] for r in res["rows"]} >= {"transferred", "random-prune"}
    assert all(0 <= r["test_macro_f1"] <= 1 for r in res["rows"])
    (tr.path / "report.md").unlink()
    paths = render_report(res, tr.path)
    md = paths["markdown"].read_text()
    assert "4 classes (0, 1, 2, 3)" in md and f"{res['data']['chance_accuracy'] * 100:.2f}%" in md
    assert paths["plot"].stat().st_size > 0
    # a binary target under the 4-class ticket: one line, before any training
    from conftest import make_sentiment_data
    make_sentiment_data(root, "binary")
    with pytest.raises(TicketkitError, match="binary has 2 classes.*ticket 4"):
        transfer_ticket(str(run.path), TransferConfig(target="binary", seeds=1, levels=[100], controls=[], fresh=False,
                                                      train=TrainHparams(epochs=1)), data_dir=root, store=store,
                        progress=False)


def test_sst2_and_ag_news_registered_with_local_stand_ins(tmp_path):
    """Their files as `datasets` would export them: sst2's text column is `sentence` and its labelled validation
    split is the test split; ag_news has 4 named classes."""
    assert DATASETS["sst2"].hub_id == "stanfordnlp/sst2" and DATASETS["sst2"].splits["test"] == "validation"
    assert DATASETS["ag_news"].hub_id == "fancyzhx/ag_news"
    make_topics(tmp_path, "sst2", text="sentence", label=lambda k, n: k % 2)
    raw = load_raw("sst2", tmp_path)
    assert raw.num_classes == 2 and raw.classes == ["negative", "positive"] and len(raw["test"]) == 160
    make_topics(tmp_path, "ag_news")
    raw = load_raw("ag_news", tmp_path)
    assert raw.num_classes == 4 and raw.classes == list(TOPICS) and raw.labels == []
    df = pd.read_parquet(tmp_path / "ag_news" / "train.parquet")
    df.loc[2, "label"] = 4
    df.to_parquet(tmp_path / "ag_news" / "train.parquet")
    with pytest.raises(TicketkitError, match=r"labels must be integers 0\.\.3, found 4 at row 2"):
        load_raw("ag_news", tmp_path)


def test_hub_split_mapping_on_a_local_datasets_dict(tmp_path):
    """The Hub path after the download: a `datasets.DatasetDict` read through the split mapping (sst2's default,
    then a --split override). The download and the revision lookup: test_a_hub_dataset_through_find_records_its_revision."""
    import datasets

    from ticketkit.datasets import _spec

    def part(n, label):
        return datasets.Dataset.from_dict({"idx": list(range(n)), "sentence": [f"w{i} good" for i in range(n)],
                                           "label": [label(i) for i in range(n)]})
    dd = datasets.DatasetDict({"train": part(40, lambda i: i % 2), "validation": part(12, lambda i: i % 2),
                               "test": part(8, lambda i: -1)})  # sst2's hidden test labels
    spec = _spec(DataHparams(dataset="sst2"))
    raw = to_classes(from_dataset_dict(dd, spec).__getitem__, DataHparams(dataset="sst2"), spec)
    assert len(raw["train"]) == 40 and len(raw["test"]) == 12  # the test split is the labelled validation split
    hp = DataHparams(dataset="org/corpus", text_column="sentence", split="test=test")
    with pytest.raises(TicketkitError, match="labels must be 0 or 1, found -1"):
        to_classes(from_dataset_dict(dd, _spec(hp)).__getitem__, hp, _spec(hp))
    hp = DataHparams(dataset="org/corpus", text_column="sentence", split="test=dev")
    with pytest.raises(TicketkitError, match="has no split 'dev'.*train, validation, test"):
        from_dataset_dict(dd, _spec(hp))
    assert parse_split_map("train=train,test=validation") == {"train": "train", "test": "validation"}
    for bad in ("dev=validation", "test", "test="):
        with pytest.raises(TicketkitError, match="data.split"):
            parse_split_map(bad)
    # a Hub id offline: one line that names the way out, nothing fetched
    with pytest.raises(TicketkitError, match="cannot load org/corpus.*--data-dir"):
        load_raw(hp)
    # a Hub id with a local copy under the data dir reads it (and names the run safely)
    make_topics(tmp_path, "org/corpus")
    assert load_raw("org/corpus", tmp_path).num_classes == 4
    from ticketkit.config import FindConfig
    assert FindConfig(data=DataHparams(dataset="org/corpus")).run_name().startswith("find-org--corpus-cnn-")


def test_k_class_metrics_and_collapse():
    """macro-F1 over every class of the output layer, and the collapse flag, for 4 classes."""
    from sklearn.metrics import f1_score

    from ticketkit.data import Encoded
    from ticketkit.diagnostics import diagnose
    from ticketkit.models import create_model
    from ticketkit.train import evaluate

    model = create_model("cnn", 20, seed=0, num_classes=4, num_filters=4, embed_dim=8)
    with torch.no_grad():
        model.fc.bias[:] = torch.tensor([0.0, 0.0, 100.0, 0.0])  # always class 2
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 4
    data = Encoded(torch.randint(2, 20, (40, 10), generator=g, dtype=torch.int32), torch.full((40,), 10), y)
    m = evaluate(model, data, 16, torch.device("cpu"))
    assert m["majority_share"] == 1.0 and m["accuracy"] == float((y == 2).float().mean())
    assert m["macro_f1"] == pytest.approx(f1_score(y.numpy(), np.full(40, 2), average="macro", labels=range(4), zero_division=0))
    assert diagnose(m["majority_share"], None, 1, 3)["flags"] == ["collapsed"]


@pytest.fixture
def olah_dataset(tmp_path):
    """olah (a real Hub mirror server, offline mode, on loopback) serving org/corpus, a dataset repo in git with
    data/train.parquet and data/validation.parquet, as `datasets` exports them."""
    import shutil

    from olah_server import commit_all, serve

    if shutil.which("olah-cli") is None or shutil.which("git") is None:
        pytest.skip("olah-cli (pip install olah) and git are needed to serve a dataset repo on loopback")
    root = tmp_path / "olah"
    repo = root / "mirrors" / "datasets" / "org" / "corpus"
    make_topics(repo, "data", text="sentence")
    (repo / "data" / "test.parquet").rename(repo / "data" / "validation.parquet")  # labelled, as sst2's is
    sha = commit_all(repo, "data")
    with serve(root) as url:
        yield {"url": url, "sha": sha}


def test_a_hub_dataset_through_find_records_its_revision(olah_dataset, tmp_path):
    """`find --dataset org/corpus cnn --split ...` against a loopback Hub mirror: the splits are mapped, and the
    commit the revision resolved to is recorded in run.json and every ticket's config.json (data.source.revision)."""
    env = {"HF_ENDPOINT": olah_dataset["url"], "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_TOKEN": "", "TICKETKIT_CACHE": str(tmp_path / "tk")}
    store = tmp_path / "store"
    # olah answers a dataset's info only at a named revision, so the test names one (the Hub resolves none too)
    p = run_cli("find", "--dataset", "org/corpus", "cnn", "--text-column", "sentence", "--split",
                "train=train,test=validation", "--data-revision", "main", "--store", store, *TINY_FLAGS,
                "--epochs", "1", "--levels", "1", "--quiet", "--json", env=env)
    out = json.loads(p.stdout)
    assert out["run"].endswith(tuple(p.name for p in store.glob("find-org--corpus-cnn-*")))
    d = out["data"]
    src = d["source"]
    assert src["kind"] == "hub" and src["id"] == "org/corpus" and src["revision"] == olah_dataset["sha"]
    assert src["splits"] == {"train": "train", "test": "validation"} and d["test_size"] == 160 and d["num_classes"] == 4
    t = read_json(next(store.glob("find-*")) / "level-01" / "config.json")
    assert t["data"]["source"]["revision"] == olah_dataset["sha"] and t["find"]["data"]["revision"] == "main"
