"""Data read from the Hub is recorded with the revision that was resolved and read (issue 20, defect 5).

The Hub is `olah` (a real Hub mirror server) in offline mirror mode, serving a git repo as the dataset
stanfordnlp/imdb: `datasets` itself resolves and downloads it, over HTTP on 127.0.0.1.
"""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import TINY_FLAGS, make_sentiment_data, run_cli
from olah_server import commit_all, serve

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def olah_dataset(tmp_path_factory):
    if shutil.which("olah-cli") is None or shutil.which("git") is None:
        pytest.skip("olah-cli (pip install olah) and git are needed to serve a dataset repo")
    root = tmp_path_factory.mktemp("olah-ds")
    make_sentiment_data(root / "data", "imdb")
    repo = root / "mirrors" / "datasets" / "stanfordnlp" / "imdb"
    repo.mkdir(parents=True)
    for split in ("train", "test"):
        shutil.copy(root / "data" / "imdb" / f"{split}.parquet", repo / f"{split}.parquet")
    sha = commit_all(repo, "the reviews")
    with serve(root) as url:
        yield {"url": url, "sha": sha, "root": root}


def test_find_on_hub_data_records_the_revision(olah_dataset, tmp_path):
    from huggingface_hub import metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    env = {"HF_ENDPOINT": olah_dataset["url"], "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
           "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1", "TICKETKIT_CACHE": str(tmp_path / "cache")}
    run_cli("find", "imdb", "cnn", "--store", tmp_path / "store", "--levels", "0", *TINY_FLAGS, "--epochs", "1",
            "--max-test", "100", "--quiet", env=env)
    (level,) = (tmp_path / "store").glob("find-*/level-00")
    source = json.loads((level / "config.json").read_text())["data"]["source"]
    assert source == {"kind": "hub", "id": "stanfordnlp/imdb", "revision": olah_dataset["sha"],
                      "splits": {"train": "train", "test": "test"}, "rows": {"train": 400, "test": 200}}
    _, (e,) = model_index_to_eval_results(metadata_load(level / "README.md")["model-index"])
    assert (e.dataset_type, e.dataset_revision, e.dataset_split) == ("stanfordnlp/imdb", olah_dataset["sha"], "test")
    assert e.dataset_args == {"test_reviews": 100, "test_reviews_in_split": 200, "subsample": "stratified, seed 0"}
