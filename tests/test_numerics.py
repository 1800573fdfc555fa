"""Every run records the kind of machine it trained on (ticketkit.numerics), and a resume never mixes two kinds.

Another machine is simulated the only way a test on one machine can: the run's record says it started elsewhere
(a run copied from an AMX Xeon), and this machine's real fingerprint is what the check compares it with.
"""
from __future__ import annotations

import pytest
import torch

from conftest import run_cli
from ticketkit.errors import TicketkitError
from ticketkit.find import find_ticket
from ticketkit.fsio import read_json, write_json
from ticketkit.numerics import describe, fingerprint
from ticketkit.train import resolve_precision

ELSEWHERE = {"torch": torch.__version__, "device": "cpu", "kernels": "AVX512+amx-elsewhere", "precision": "bf16"}


def test_the_fingerprint_names_the_kernels_and_the_resolved_precision():
    fp = fingerprint("cpu")
    assert fp["device"] == "cpu" and fp["torch"] == torch.__version__
    assert fp["kernels"].split("+")[0] == torch.backends.cpu.get_cpu_capability()
    auto = resolve_precision("auto", torch.device("cpu"))
    assert fp["precision"] == ("bf16" if auto is torch.bfloat16 else "fp32")
    assert fingerprint("cpu", "fp32")["precision"] == "fp32" and fingerprint("cpu", "bf16")["precision"] == "bf16"
    assert fp["kernels"] in describe(fp) and fp["precision"] in describe(fp)


def test_runs_tickets_and_transfers_record_where_they_trained(tiny_data, tmp_path, tiny_config):
    from ticketkit.config import TrainHparams, TransferConfig
    from ticketkit.transfer import transfer_ticket

    run = find_ticket(tiny_config(levels=1), data_dir=tiny_data, store=tmp_path, progress=False)
    here = fingerprint(None, run.config.train.precision)
    assert run.info["numerics"] == here
    assert {read_json(d / "config.json")["numerics"]["kernels"] for d in run.ticket_paths()} == {here["kernels"]}
    cfg = TransferConfig(target="yelp2", seeds=[0], levels=[100], controls=[], fresh=False, independent=False,
                         max_train=200, max_test=100, train=TrainHparams(epochs=1, batch_size=32))
    t = transfer_ticket(str(run.path), cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    assert t.results["numerics"] == here
    assert f"Trained on: {describe(here)}" in (t.path / "report.md").read_text()
    from ticketkit.report.show import show

    assert f"trained on {describe(here)}" in show(str(run.path)).text
    assert f"trained on {describe(here)}" in show(str(run.path), level="1").text
    assert f"Trained on {describe(here)}" in (run.ticket_paths()[-1] / "README.md").read_text()  # the model card


def _interrupted(cfg, tiny_data, store):
    rd = store / cfg.run_name()
    with pytest.raises(KeyboardInterrupt):  # stop once level 0 is written, as a kill there would
        find_ticket(cfg, data_dir=tiny_data, store=store, progress=False,
                    stop_flag=lambda: (rd / "level-00" / "manifest.json").exists())
    return rd


def test_a_resume_on_another_kind_of_machine_is_refused(tiny_data, tmp_path, tiny_config):
    cfg = tiny_config()
    rd = _interrupted(cfg, tiny_data, tmp_path)
    info = read_json(rd / "run.json")
    here = info["numerics"]
    write_json(rd / "run.json", dict(info, numerics=ELSEWHERE))  # the run started on an AMX machine
    with pytest.raises(TicketkitError) as e:
        find_ticket(cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "another kind of machine" in msg and ELSEWHERE["kernels"] in msg
    assert here["kernels"] in msg and "--store" in msg
    assert not (rd / "level-01").exists()  # nothing trained here
    assert read_json(rd / "run.json")["numerics"] == ELSEWHERE  # and the record is untouched
    write_json(rd / "run.json", dict(info, numerics=here))  # back on its own kind of machine it resumes
    run = find_ticket(cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    assert run.info["status"] == "complete" and run.info["numerics"] == here


def test_a_run_from_before_the_record_resumes_but_is_not_claimed(tiny_data, tmp_path, tiny_config):
    """A run that trained levels before numerics were recorded cannot say where they trained: it stays unrecorded."""
    cfg = tiny_config()
    rd = _interrupted(cfg, tiny_data, tmp_path)
    info = read_json(rd / "run.json")
    info.pop("numerics")
    write_json(rd / "run.json", info)
    run = find_ticket(cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    assert run.info["status"] == "complete" and "numerics" not in run.info


def test_reusing_a_run_trained_elsewhere_says_so(tiny_data, tmp_path, tiny_config, capsys):
    cfg = tiny_config(levels=0)
    run = find_ticket(cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    write_json(run.path / "run.json", dict(run.info, numerics=ELSEWHERE))
    again = find_ticket(cfg, data_dir=tiny_data, store=tmp_path, progress=True)
    assert again.path == run.path  # a finished run is what it is: reused, not retrained
    err = capsys.readouterr().err
    assert "trained on cpu AVX512+amx-elsewhere" in err and "round differently" in err


def test_the_cli_refuses_a_resume_on_another_kind_of_machine(tiny_data, tmp_path, tiny_config):
    cfg = tiny_config()
    args = ["find", "imdb", "cnn", "--vocab-size", cfg.data.vocab_size, "--max-len", cfg.data.max_len,
            "--num-filters", cfg.model.num_filters, "--embed-dim", cfg.model.embed_dim, "--epochs", 1,
            "--batch-size", cfg.train.batch_size, "--rounds", 1, "--data-dir", tiny_data, "--store", tmp_path]
    run_cli(*args)
    (rd,) = [p for p in tmp_path.iterdir() if p.name.startswith("find-")]
    info = read_json(rd / "run.json")
    write_json(rd / "run.json", dict(info, status="interrupted", numerics=ELSEWHERE))
    import shutil
    shutil.rmtree(rd / "level-01")
    p = run_cli(*args, check=False)
    assert p.returncode != 0
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "another kind of machine" in lines[0], p.stderr
    assert not (rd / "level-01").exists()


def test_a_transfer_resume_on_another_kind_of_machine_is_refused(tiny_data, tmp_path, tiny_config):
    from ticketkit.config import TrainHparams, TransferConfig
    from ticketkit.transfer import transfer_ticket

    src = find_ticket(tiny_config(levels=1), data_dir=tiny_data, store=tmp_path, progress=False)
    cfg = TransferConfig(target="yelp2", seeds=[0], levels=[100, 64], controls=["random-prune"], fresh=False,
                         independent=False, max_train=200, max_test=100, train=TrainHparams(epochs=1, batch_size=32))
    t = transfer_ticket(str(src.path), cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    res = t.results
    rows = len(res["rows"])
    write_json(t.path / "results.json", dict(res, status="interrupted", rows=res["rows"][:1], numerics=ELSEWHERE))
    with pytest.raises(TicketkitError) as e:
        transfer_ticket(str(src.path), cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    assert "another kind of machine" in str(e.value) and "\n" not in str(e.value)
    assert len(read_json(t.path / "results.json")["rows"]) == 1  # nothing trained here
    old = {k: v for k, v in res.items() if k != "numerics"}  # a transfer from before the record
    write_json(t.path / "results.json", dict(old, status="interrupted", rows=res["rows"][:1]))
    done = transfer_ticket(str(src.path), cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    assert len(done.results["rows"]) == rows  # an unrecorded transfer with rows resumes
    assert "numerics" not in done.results  # and is not claimed for this machine


def test_reusing_a_stacked_transfer_on_its_own_kind_of_machine_says_nothing(tiny_data, tmp_path, tiny_config,
                                                                           monkeypatch, capsys):
    """A finished transfer whose arms were stacked is compared with this machine's fingerprint *for stacked arms*.
    Simulated with the GPU's rule (bf16 only when arms are stacked), the one place where arms change the bits."""
    from ticketkit import numerics
    from ticketkit.config import TrainHparams, TransferConfig
    from ticketkit.transfer import transfer_ticket

    src = find_ticket(tiny_config(levels=1), data_dir=tiny_data, store=tmp_path, progress=False)
    cfg = TransferConfig(target="yelp2", seeds=[0], levels=[100, 64], controls=["random-prune"], fresh=False,
                         independent=False, max_train=200, max_test=100, train=TrainHparams(epochs=1, batch_size=32))
    t = transfer_ticket(str(src.path), cfg, data_dir=tiny_data, store=tmp_path, progress=False)
    monkeypatch.setattr(numerics, "resolve_precision", lambda p, d, arms=1: torch.bfloat16 if arms > 1 else None)
    stacked_here = numerics.fingerprint(None, cfg.train.precision, arms=2)
    assert stacked_here != numerics.fingerprint(None, cfg.train.precision)  # the simulation bites
    write_json(t.path / "results.json", dict(t.results, stacked_arms=True, numerics=stacked_here))
    capsys.readouterr()
    transfer_ticket(str(src.path), cfg, data_dir=tiny_data, store=tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "reusing finished transfer" in err and "trained on" not in err, err


def test_a_merged_report_says_which_seed_trained_where():
    """Replicates merged from two kinds of machine: the report names each seed's (their bits would not repeat
    across them); from one kind, one line."""
    from test_report import make_results
    from ticketkit.report.transfer import render_markdown

    here = fingerprint("cpu")
    res = make_results()
    res["replicates"] = {"0": {"numerics": here}, "1": {"numerics": ELSEWHERE}, "2": {"numerics": here}}
    md = render_markdown(res)
    assert f"seed 0: {describe(here)}; seed 1: {describe(ELSEWHERE)}; seed 2: {describe(here)}" in md
    res["replicates"]["1"]["numerics"] = here
    assert f"Trained on: {describe(here)} (every seed)" in render_markdown(res)
    res["replicates"] = {s: {} for s in "012"}  # replicates from before the record: said, not guessed
    assert "Trained on: not recorded" in render_markdown(res)
