"""A run's name means its bits (issue 19, items 1-5): reuse and resume check the data, a transfer's source identity
covers everything that changes what its training means, the thread count cannot change a training's bits, the
encoded-data cache is verified on load, and a failed Hub push is never reported as done."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import make_sentiment_data
from ticketkit.errors import TicketkitError
from ticketkit.find import find_ticket
from ticketkit.fsio import read_json


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> Path:
    """Same layout and size as tiny_data, other reviews: other fingerprints."""
    root = make_sentiment_data(tmp_path_factory.mktemp("other-data"), "imdb", seed=7)
    return make_sentiment_data(root, "yelp2", seed=8)


# ------------------------------------------------------------------------------------------ 1. reuse checks data

def test_resume_on_other_data_is_refused(tiny_data, other_data, tmp_path, tiny_config):
    cfg = tiny_config()
    rd = tmp_path / cfg.run_name()
    with pytest.raises(KeyboardInterrupt):  # stop once level 0 is written, as a kill there would
        find_ticket(cfg, data_dir=tiny_data, store=tmp_path, progress=False,
                    stop_flag=lambda: (rd / "level-00" / "manifest.json").exists())
    assert (rd / "level-00" / "manifest.json").exists() and not (rd / "level-01" / "manifest.json").exists()
    want = read_json(rd / "level-00" / "config.json")["data"]["train_fingerprint"]
    with pytest.raises(TicketkitError) as e:
        find_ticket(cfg, data_dir=other_data, store=tmp_path, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and want in msg and "--store" in msg
    assert not (rd / "level-01").exists()  # nothing trained on the other data
    # The original data still resumes the run.
    run = find_ticket(cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    assert {read_json(d / "config.json")["data"]["train_fingerprint"] for d in run.ticket_paths()} == {want}
    assert run.info["data"]["train_fingerprint"] == want


def test_finished_run_is_not_reused_on_other_data(tiny_data, other_data, tmp_path, tiny_config):
    cfg = tiny_config(levels=0)
    run = find_ticket(cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    assert find_ticket(cfg, data_dir=tiny_data, store=tmp_path, progress=False).path == run.path  # same data: reused
    with pytest.raises(TicketkitError) as e:
        find_ticket(cfg, data_dir=other_data, store=tmp_path, progress=False)
    assert run.info["data"]["train_fingerprint"] in str(e.value) and "\n" not in str(e.value)


def _small_transfer():
    from ticketkit.config import TrainHparams, TransferConfig

    return TransferConfig(target="yelp2", seeds=[0], levels=[100], controls=[], fresh=False, independent=False,
                          max_train=200, max_test=100, train=TrainHparams(epochs=1, batch_size=32))


def test_finished_transfer_is_not_reused_on_other_target_data(tiny_data, other_data, tmp_path, tiny_config):
    from ticketkit.transfer import transfer_ticket

    src = find_ticket(tiny_config(levels=0), data_dir=tiny_data, store=tmp_path, progress=False)
    run = transfer_ticket(str(src.path), _small_transfer(), data_dir=tiny_data, store=tmp_path, progress=False)
    assert transfer_ticket(str(src.path), _small_transfer(), data_dir=tiny_data, store=tmp_path,
                           progress=False).path == run.path
    with pytest.raises(TicketkitError) as e:
        transfer_ticket(str(src.path), _small_transfer(), data_dir=other_data, store=tmp_path, progress=False)
    assert run.results["data"]["train_fingerprint"] in str(e.value) and "\n" not in str(e.value)


def test_a_finished_transfer_leaves_no_temp_files_or_checkpoints(tiny_data, tmp_path, tiny_config):
    """Issue 19 item 12: temp files of atomic writes and an empty checkpoints/ go, on finishing and on a rerun."""
    from ticketkit.transfer import transfer_ticket

    src = find_ticket(tiny_config(levels=0), data_dir=tiny_data, store=tmp_path, progress=False)
    run = transfer_ticket(str(src.path), _small_transfer(), data_dir=tiny_data, store=tmp_path, progress=False)
    assert not (run.path / "checkpoints").exists()
    (run.path / ".results.json.x1y2.tmp").write_text("{")
    (run.path / "checkpoints").mkdir()
    (run.path / "checkpoints" / ".abc-s0.safetensors.q9.tmp").write_bytes(b"x")
    again = transfer_ticket(str(src.path), _small_transfer(), data_dir=tiny_data, store=tmp_path, progress=False)
    assert again.path == run.path
    assert not [p for p in run.path.rglob(".*") if p.name.endswith(".tmp")]
    assert not (run.path / "checkpoints").exists()


# ------------------------------------------------------------------------------------------ 2. source identity

def test_source_identity_covers_config_tokenizer_and_data(tiny_data, tmp_path, tiny_config):
    """Two level-0 tickets that differ only in max_len hold byte-identical tensors; their transfers must not share
    a name (the second would reuse the first's results)."""
    from ticketkit.config import TransferConfig
    from ticketkit.transfer import resolve_source

    a = find_ticket(tiny_config(levels=0), data_dir=tiny_data, store=tmp_path, progress=False)
    cfg_b = tiny_config(levels=0)
    cfg_b = replace(cfg_b, data=replace(cfg_b.data, max_len=24)).validate()
    b = find_ticket(cfg_b, data_dir=tiny_data, store=tmp_path, progress=False)
    ta, tb = (read_json(r.ticket_paths()[0] / "manifest.json")["files"]["ticket.safetensors"]["sha256"] for r in (a, b))
    assert ta == tb  # the premise: same tensors
    sa, sb = (resolve_source(str(r.path), tmp_path, "yelp2") for r in (a, b))
    tc = TransferConfig(target="yelp2")
    assert tc.run_name(sa) != tc.run_name(sb)
    # The same source resolved twice (or pulled elsewhere) keeps its name.
    assert tc.run_name(sa) == tc.run_name(resolve_source(str(a.path), tmp_path, "yelp2"))


# ------------------------------------------------------------------------------------------ 3. thread count

def test_training_bits_do_not_depend_on_the_callers_thread_count(tiny_data):
    """A worker trains with 1 thread, this process with all cores: oneDNN's reductions differ between the two, so a
    training must fix its own thread count. The model is big enough to show it (embedding 64, 32 filters, reviews
    of up to 64 tokens); a tiny one rounds the same either way."""
    from ticketkit.config import FindConfig
    from ticketkit.data import prepare_data
    from ticketkit.models import create_model, model_kwargs
    from ticketkit.train import train

    cfg = FindConfig()
    cfg.data.vocab_size, cfg.data.max_len = 100, 64
    cfg.model.embed_dim, cfg.model.num_filters = 64, 32
    cfg.train.epochs, cfg.train.batch_size = 2, 32
    cfg.validate()
    d = prepare_data(cfg.data, 0, tiny_data)
    saved = torch.get_num_threads()
    out = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            m = create_model("cnn", d.tokenizer.get_vocab_size(), seed=0, **model_kwargs(cfg.model))
            out.append(train(m, None, d.train, d.val, d.test, cfg.train, 0, progress=False))
            assert torch.get_num_threads() == threads  # the caller's setting is restored
    finally:
        torch.set_num_threads(saved)
    a, b = out
    assert all(torch.equal(a.best_state[k], b.best_state[k]) for k in a.best_state)
    assert a.test == b.test


# ------------------------------------------------------------------------------------------ 4. encoded cache

def _cache_files(cache: Path) -> list[Path]:
    return sorted((cache / "encoded").glob("*.safetensors"))


def _rewrite(path: Path, edit, keep_metadata: bool = True) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        md = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
    edit(t)
    save_file(t, str(path), metadata=md if keep_metadata else None)


@pytest.mark.parametrize("damage", ["flip-labels", "ids-out-of-range", "ids-out-of-range-resealed"])
def test_a_tampered_encoded_cache_is_rebuilt_with_a_warning(damage, tiny_data, tmp_path, tiny_config, capfd):
    from ticketkit.data import prepare_data
    from ticketkit.train import _tensors_digest

    cfg = tiny_config()
    ref = prepare_data(cfg.data, 0, tiny_data, tmp_path)
    files = _cache_files(tmp_path)
    assert len(files) == 3
    capfd.readouterr()
    for f in files:
        if damage == "flip-labels":
            _rewrite(f, lambda t: t.__setitem__("labels", 1 - t["labels"]))
        else:
            def big(t):
                t["ids"] = t["ids"].clone()
                t["ids"][0, 0] = 10 ** 6
                if damage.endswith("resealed"):  # a valid digest over bad content: the range check must catch it
                    t.pop("__digest__", None)
            _rewrite(f, big)
            if damage.endswith("resealed"):
                from safetensors import safe_open
                from safetensors.torch import save_file

                with safe_open(str(f), "pt") as h:
                    md, t = dict(h.metadata() or {}), {k: h.get_tensor(k) for k in h.keys()}
                md["sha256"] = _tensors_digest(t)
                save_file(t, str(f), metadata=md)
    got = prepare_data(cfg.data, 0, tiny_data, tmp_path)
    for k in ("train", "val", "test"):
        a, b = getattr(ref, k), getattr(got, k)
        assert torch.equal(a.ids, b.ids) and torch.equal(a.labels, b.labels) and torch.equal(a.lengths, b.lengths)
    err = capfd.readouterr().err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 3 and all("encoded" in w and "rebuilt" in w for w in warnings), err
    # rebuilt, so the next load is silent
    prepare_data(cfg.data, 0, tiny_data, tmp_path)
    assert "warning" not in capfd.readouterr().err


# ------------------------------------------------------------------------------------------ 5. a failed push

def test_a_failed_push_is_not_reported_done(tiny_data, tmp_path, monkeypatch):
    """--store hf://...: the local run completes, its push fails; the cell is failed (not done) everywhere, and the
    sweep's counts say so."""
    import ticketkit.sweep.cell as cell_mod
    import ticketkit.sweep.drivers as drivers
    from ticketkit.sweep import cell_states, run_sweep

    from test_sweep import TINY, write_recipe

    def refuse(run_dir, spec, kind):
        if kind == "find":
            raise TicketkitError("401: token rejected")
        return None

    monkeypatch.setattr(cell_mod, "_push", refuse)
    monkeypatch.setattr(drivers, "_push_available", lambda spec: None)
    monkeypatch.setenv("TICKETKIT_STORE", str(tmp_path / "local"))
    recipe = write_recipe(tmp_path, "[sweep]\nseed = [0]\n" + TINY)
    res = run_sweep(recipe, store="hf://alice/tickets", data_dir=tiny_data, progress=False)
    st = cell_states(res.path)
    assert [s["status"] for s in st] == ["failed"], st
    assert "push failed" in st[0]["error"] and "401" in st[0]["error"]
    assert res.counts.get("failed") == 1 and not res.counts.get("done")
    # A rerun retries the push only, and still reports the failure.
    res = run_sweep(recipe, store="hf://alice/tickets", data_dir=tiny_data, progress=False)
    assert [s["status"] for s in cell_states(res.path)] == ["failed"]


# ------------------------------------------------------------------------------------------ 6. secrets

SECRET = "hf_SeCrEt0123456789abcdefXYZ"


def test_a_token_echoed_by_an_error_is_redacted_everywhere(tiny_data, tmp_path, monkeypatch, capfd):
    """Issue 19 item 6: a Hub error that echoes the Authorization header must not put the token on the terminal,
    in an error, a log line or a sweep cell file."""
    import ticketkit.sweep.cell as cell_mod
    import ticketkit.sweep.drivers as drivers
    from ticketkit.log import log, one_line
    from ticketkit.sweep import cell_states, run_sweep

    from test_sweep import TINY, write_recipe

    echoed = f"401: token rejected: Bearer {SECRET} (authorization: Bearer {SECRET})"
    assert SECRET not in str(TicketkitError(echoed)) and SECRET not in one_line(RuntimeError(echoed))
    assert "token rejected" in one_line(RuntimeError(echoed))
    assert "Bearer" not in one_line(RuntimeError("Bearer abc.def-ghi")).replace("Bearer ***", "")
    log(True, f"pushing with {SECRET}")
    assert SECRET not in capfd.readouterr().err

    # The Hub's own error type, through hub_errors (what push and pull raise).
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    from ticketkit.hubspec import hub_errors

    resp = httpx.Response(401, request=httpx.Request("POST", "http://hub.invalid/api/repos/create"),
                          json={"error": echoed})
    with pytest.raises(TicketkitError) as e:
        with hub_errors("alice/x"):
            raise HfHubHTTPError(echoed, response=resp, server_message=echoed)
    assert SECRET not in str(e.value) and "401" in str(e.value)

    def leak(run_dir, spec, kind):
        raise RuntimeError(echoed)

    monkeypatch.setattr(cell_mod, "_push", leak)
    monkeypatch.setattr(drivers, "_push_available", lambda spec: None)
    monkeypatch.setenv("TICKETKIT_STORE", str(tmp_path / "local"))
    res = run_sweep(write_recipe(tmp_path, "[sweep]\nseed = [0]\n" + TINY), store="hf://alice/tickets",
                    data_dir=tiny_data, progress=False)
    files = list(res.path.rglob("*.json"))
    assert files and not [f for f in files if SECRET in f.read_text()]
    assert all(SECRET not in str(c) for c in cell_states(res.path))
    assert "token rejected" in cell_states(res.path)[0]["error"]


def test_a_search_in_a_worker_equals_one_in_this_process(tiny_data, tmp_path, tiny_config):
    """End to end, on the same bigger model: `find --seeds` in 2 worker processes (1 thread each) gives the tickets
    that this process (all its threads) gives, so whichever ran first may be reused by the other."""
    from ticketkit.seeds import find_seeds
    from reliability_util import tensor_digests

    cfg = tiny_config(levels=1)
    cfg.data.max_len, cfg.model.embed_dim, cfg.model.num_filters, cfg.train.epochs = 64, 64, 32, 2
    cfg = cfg.validate()
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        here = [find_ticket(replace(cfg, seed=s), data_dir=tiny_data, store=tmp_path / "here", progress=False)
                for s in (0, 1)]
    finally:
        torch.set_num_threads(saved)
    there = find_seeds(cfg, [0, 1], workers=2, data_dir=tiny_data, store=tmp_path / "workers", progress=False)
    for a, b in zip(here, there):
        assert a.path.name == b.path.name
        for da, db in zip(a.ticket_paths(), b.ticket_paths()):
            assert tensor_digests(da / "ticket.safetensors") == tensor_digests(db / "ticket.safetensors"), da.name
            # the trained weights too: a mask can survive a rounding difference that the weights still show
            ta, tb = (d / "trained.safetensors" for d in (da, db))
            assert tensor_digests(ta) == tensor_digests(tb), ta
        assert [r["test_accuracy"] for r in a.levels] == [r["test_accuracy"] for r in b.levels]
