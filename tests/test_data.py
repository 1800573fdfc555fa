"""Data loading: local layouts, splits, the tokenizer, the encoded cache, and the offline message."""
import pandas as pd
import pytest

from ticketkit.config import DataHparams
from ticketkit.data import build_tokenizer, encode, load_raw, make_splits, oov_rate
from ticketkit.errors import TicketkitError


def test_parquet_csv_and_aclimdb_layouts(tiny_data, tmp_path):
    raw = load_raw("imdb", tiny_data)
    assert len(raw["train"]) == 400 and set(raw["train"].labels) == {0, 1}
    csv_root = tmp_path / "csv"
    (csv_root / "imdb").mkdir(parents=True)
    for s in ("train", "test"):
        pd.read_parquet(tiny_data / "imdb" / f"{s}.parquet").to_csv(csv_root / "imdb" / f"{s}.csv", index=False)
    assert load_raw("imdb", csv_root)["test"].texts == raw["test"].texts
    acl = tmp_path / "acl" / "imdb" / "aclImdb"
    for s in ("train", "test"):
        for lab, sub in ((0, "neg"), (1, "pos")):
            (acl / s / sub).mkdir(parents=True)
            for i, t in enumerate(raw[s].texts[:20]):
                (acl / s / sub / f"{i}_1.txt").write_text(t)
    got = load_raw("imdb", tmp_path / "acl")
    assert len(got["train"]) == 40 and sorted(set(got["train"].labels)) == [0, 1]


def test_env_var_data_dir(tiny_data, monkeypatch):
    monkeypatch.setenv("TICKETKIT_DATA_DIR", str(tiny_data))
    assert len(load_raw("yelp2")["test"]) == 200


def test_offline_without_data_dir_names_the_flag(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TicketkitError, match="--data-dir"):
        load_raw("imdb")


def test_failed_hub_is_not_retried_for_a_minute(monkeypatch, tmp_path):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TICKETKIT_CACHE", str(tmp_path))
    (tmp_path / "hub-unreachable").touch()
    t = time.perf_counter()
    with pytest.raises(TicketkitError, match="not retrying"):
        load_raw("yelp2")
    assert time.perf_counter() - t < 5


def test_splits_are_seeded_stratified_and_subsampled(tiny_data):
    raw = load_raw("imdb", tiny_data)
    hp = DataHparams(max_train=200, max_test=100, val_fraction=0.1)
    a, b, c = make_splits(raw, hp, 0), make_splits(raw, hp, 0), make_splits(raw, hp, 1)
    assert a.train.texts == b.train.texts and a.val.texts == b.val.texts
    assert a.val.texts != c.val.texts
    assert len(a.train) == 180 and len(a.val) == 20 and len(a.test) == 100
    assert a.val.labels.mean() == 0.5 and a.test.labels.mean() == 0.5
    assert not set(a.train.texts) & set(a.val.texts)


def test_tokenizer_and_encoded_cache(tiny_data, tmp_path):
    raw = load_raw("imdb", tiny_data)
    tok = build_tokenizer(raw["train"].texts, 30, 16)
    assert tok.get_vocab_size() == 30 and tok.token_to_id("[PAD]") == 0 and tok.token_to_id("[UNK]") == 1
    enc = encode(raw["test"], tok, 16, tmp_path)
    assert enc.ids.shape[1] <= 16 and int(enc.lengths.max()) <= 16 and enc.ids.dtype.is_floating_point is False
    files = list((tmp_path / "encoded").glob("*.safetensors"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    enc2 = encode(raw["test"], tok, 16, tmp_path)  # second run: read from the cache, not re-tokenized
    assert files[0].stat().st_mtime_ns == mtime and bool((enc2.ids == enc.ids).all())
    assert 0 < oov_rate(tok, raw["test"].texts) < 1
    assert tok.truncation["max_length"] == 16  # oov_rate restores truncation


def test_bad_labels_and_columns_are_clear_errors(tmp_path):
    (tmp_path / "imdb").mkdir()
    pd.DataFrame({"text": ["a b c", "d e f"], "label": [0, 2]}).to_parquet(tmp_path / "imdb" / "train.parquet")
    pd.DataFrame({"review": ["a b c"], "label": [0]}).to_parquet(tmp_path / "imdb" / "test.parquet")
    with pytest.raises(TicketkitError, match="labels must be 0 or 1"):
        load_raw("imdb", tmp_path)
