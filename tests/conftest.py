"""Shared fixtures. Tests never touch the network: the Hub is offline, caches live in temp dirs."""
import os
import sys
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub or datasets.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TICKETKIT_CACHE", tempfile.mkdtemp(prefix="ticketkit-cache-"))
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="ticketkit-hfhome-"))
os.environ.pop("TICKETKIT_STORE", None)
os.environ.pop("TICKETKIT_DATA_DIR", None)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TICKETKIT_SHARED_DATA", REPO.parent / "shared" / "data"))

POS = "good great excellent wonderful superb loved enjoyable brilliant".split()
NEG = "bad awful terrible boring poor hated dull worst".split()
FILLER = "the movie film plot actor scene story it was and a of to in this that with for".split()


def make_sentiment_data(root: Path, name: str, n_train: int = 400, n_test: int = 200, seed: int = 0) -> Path:
    """A small, learnable synthetic sentiment dataset in the shared/data layout."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        texts, labels = [], []
        for i in range(n):
            y = i % 2
            words = list(rng.choice(FILLER, rng.integers(8, 40)))
            for _ in range(rng.integers(1, 4)):
                words.insert(rng.integers(0, len(words)), rng.choice(POS if y else NEG))
            texts.append(" ".join(words))
            labels.append(y)
        (root / name).mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"text": texts, "label": labels}).to_parquet(root / name / f"{split}.parquet")
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_sentiment_data(root, "imdb", seed=0)
    make_sentiment_data(root, "yelp2", seed=1)
    return root


TINY_FLAGS = ["--epochs", "3", "--vocab-size", "100", "--max-len", "32", "--num-filters", "8", "--embed-dim", "16",
              "--hidden-size", "16", "--batch-size", "32"]


def tiny_find_config(arch="cnn", dataset="imdb", **prune):
    """A FindConfig that trains in well under a second per level on the tiny data (bench/ uses it too)."""
    from ticketkit.config import FindConfig

    cfg = FindConfig()
    cfg.data.dataset = dataset
    cfg.data.vocab_size, cfg.data.max_len = 100, 32
    cfg.model.arch, cfg.model.num_filters, cfg.model.embed_dim, cfg.model.hidden_size = arch, 8, 16, 16
    cfg.train.epochs, cfg.train.batch_size = 3, 32
    cfg.prune.levels = 2
    for k, v in prune.items():
        setattr(cfg.prune, k, v)
    return cfg.validate()


@pytest.fixture
def tiny_config():
    return tiny_find_config


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "imdb" / "train.parquet").exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def run_cli(*args, env=None, check=True, cwd=None):
    """Run the real `ticketkit` entry point in a subprocess (as a user would)."""
    import subprocess

    e = dict(os.environ, **(env or {}))
    p = subprocess.run([sys.executable, "-m", "ticketkit", *map(str, args)], capture_output=True, text=True, env=e, cwd=cwd)
    if check and p.returncode != 0:
        raise AssertionError(f"ticketkit {' '.join(map(str, args))} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p
