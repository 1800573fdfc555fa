"""Issue 20's report and plot items: the lottery-ticket figure of one find run with its controls from the store,
no "± sd" with one seed, a majority-class chance line, ticks at the rows' (requested) densities, arms at one
density side by side, and under late resetting each unpruned number named for what it is."""
import json

import pytest

from conftest import run_cli, tiny_find_config
from test_report import make_results
from ticketkit.report import summary_table
from ticketkit.report.transfer import plot_accuracy, render_markdown

PNG = b"\x89PNG\r\n\x1a\n"


def one_seed(results):
    return {**results, "rows": [r for r in results["rows"] if r["seed"] == 0]}


def test_one_seed_never_claims_a_mean_and_sd():
    res = one_seed(make_results())
    assert "±" not in summary_table(res).splitlines()[0]
    assert "Mean ± sd" not in render_markdown(res)
    assert "mean ± sd" in summary_table(make_results()).splitlines()[0]  # with 3 seeds it does


def test_transfer_plot_chance_line_ticks_and_dodged_arms(tmp_path):
    res = make_results()
    res["data"]["chance_accuracy"] = 0.52
    fig = plot_accuracy(res, tmp_path / "p.png")
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert any(lb.startswith("chance: majority class (52.0)") for lb in labels)
    ticks = sorted(float(t) for t in ax.get_xticks())
    assert ticks == sorted({16.9, 0.2})  # the requested levels, as the rows name them (not 17.0 / 0.195 measured)
    assert "requested" in ax.get_xlabel()
    at_16 = [x for line in ax.get_lines() if line.get_label() in ("transferred", "random-prune", "fresh")
             for x in line.get_xdata() if 10 < x < 30]
    assert len(at_16) == 3 and len(set(at_16)) == 3  # three arms at ~16.9 %, none hidden under another
    assert (tmp_path / "p.png").read_bytes().startswith(PNG)


def test_late_resetting_names_each_unpruned_number(tmp_path):
    res = make_results()
    res["source"]["find"]["prune"]["rewind"] = "epoch:1"
    labels = plot_accuracy(res, tmp_path / "p.png").axes[0].get_legend_handles_labels()[1]
    assert any(lb.startswith("unpruned, source weights rewound to epoch:1") for lb in labels)
    assert any(lb.startswith("fresh (its 100 %: dense (trained from init))") for lb in labels)
    assert "unpruned, source weights rewound to epoch:1" in summary_table(res)
    plain = plot_accuracy(make_results(), tmp_path / "q.png").axes[0].get_legend_handles_labels()[1]
    assert any(lb.startswith("dense (unpruned)") for lb in plain) and "fresh" in plain


@pytest.fixture(scope="module")
def run_with_control(tmp_path_factory, tiny_data):
    from ticketkit.find import find_ticket

    store = tmp_path_factory.mktemp("store")
    cfg = tiny_find_config()
    cfg.train.epochs = 1
    cfg.prune.control = "random-prune"
    ctl = find_ticket(cfg.validate(), data_dir=tiny_data, store=store, progress=False)  # runs the IMP run first
    return store, ctl.path


def test_report_of_a_find_run_draws_it_with_its_control(run_with_control):
    store, ctl = run_with_control
    imp = next(d for d in store.iterdir() if d.name.startswith("find-") and d != ctl)
    p = run_cli("report", imp.name, "--store", store, "--json")
    out = json.loads(p.stdout)
    assert set(out["runs"]) == {"none", "random-prune"} and out["runs"]["random-prune"]["run"] == ctl.name
    assert len(out["runs"]["none"]["levels"]) == 3
    assert (imp / "accuracy_vs_density.png").read_bytes().startswith(PNG)
    from ticketkit.report.lottery import report_find_run

    ax = report_find_run(imp).figure.axes[0]
    assert ax.get_xscale() == "log" and ax.xaxis_inverted()
    labels = ax.get_legend_handles_labels()[1]
    assert {"magnitude pruning (IMP)", "control: random-prune"} <= set(labels)
    assert any(lb.startswith("chance: majority class") for lb in labels)
    assert any(lb.startswith("dense (trained from init)") for lb in labels)


def test_report_of_a_find_run_without_controls(run_with_control, tmp_path):
    import shutil

    store, ctl = run_with_control
    imp = next(d for d in store.iterdir() if d.name.startswith("find-") and d != ctl)
    shutil.copytree(imp, tmp_path / imp.name)
    out = json.loads(run_cli("report", tmp_path / imp.name, "--json").stdout)
    assert list(out["runs"]) == ["none"]
