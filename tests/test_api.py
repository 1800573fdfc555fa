"""The Python API does what the CLI does (issue 20): show, verify, report, sweep from `import ticketkit`, with the
same answers as the commands. push and pull from Python are in test_hub.py (they need a Hub endpoint set before
huggingface_hub is imported)."""
from __future__ import annotations

import json
import shutil

import pytest

import ticketkit
from conftest import run_cli
from test_sweep import TINY, write_recipe


@pytest.fixture(scope="module")
def sweep_run(tiny_data, tmp_path_factory):
    """One tiny one-cell sweep, run through `ticketkit.sweep`: its store holds a finished find run."""
    tmp = tmp_path_factory.mktemp("api")
    recipe = write_recipe(tmp, '[sweep]\narch = ["cnn"]\nseed = [0]\n' + TINY)
    res = ticketkit.sweep(recipe, store=tmp / "store", data_dir=tiny_data, progress=False)
    return tmp / "store", res


def test_exports_are_the_cli_commands():
    import ticketkit.report.show  # noqa: F401  (importing submodules must not unbind the functions)
    import ticketkit.sweep.live  # noqa: F401

    for name in ("push", "pull", "show", "verify", "report", "sweep"):
        assert name in ticketkit.__all__ and callable(getattr(ticketkit, name)), name
    assert ticketkit.report.show.show is ticketkit.show  # the package stays a package


def test_sweep_show_verify_report(sweep_run, tmp_path):
    store, res = sweep_run
    assert res.counts["done"] == res.counts["total"] == 1
    (run,) = [d for d in store.iterdir() if d.name.startswith("find-")]
    shown = ticketkit.show(run.name, store=store)
    assert shown.data == json.loads(run_cli("show", run.name, "--store", store, "--json").stdout)
    one = ticketkit.show(run.name, level="1", store=store)
    assert one.data["level"] == 1 and "% weights remaining" in one.text
    ok = ticketkit.verify(run.name, store=store)
    assert ok == {"checked": 2, "problems": []} == json.loads(run_cli("verify", run, "--json").stdout)
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    (bad / "level-01" / "config.json").write_text("{}\n")
    assert any("config.json" in p for p in ticketkit.verify(str(bad))["problems"])
    (sweep_dir,) = [d for d in store.iterdir() if d.name.startswith("sweep-")]
    rep = ticketkit.report(sweep_dir.name, store=store)
    assert set(rep.data) == {"report", "csv"} and (sweep_dir / "cells.csv").exists()
    assert rep.data == json.loads(run_cli("report", sweep_dir, "--json").stdout)


def test_report_of_a_transfer_run(tmp_path):
    from test_report import make_results

    (tmp_path / "results.json").write_text(json.dumps(make_results()))
    rep = ticketkit.report(str(tmp_path))
    assert rep.data == {k: str(tmp_path / f) for k, f in
                        (("csv", "results.csv"), ("markdown", "report.md"), ("plot", "accuracy_vs_density.png"))}
    assert all((tmp_path / f).stat().st_size for f in ("results.csv", "report.md", "accuracy_vs_density.png"))
    assert "wrote" in rep.text
