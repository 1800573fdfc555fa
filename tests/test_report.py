"""Transfer reports rendered from a results.json alone: tables, paired comparisons with intervals only for n >= 3,
flagged cells never counted, CSV and the plot."""
import csv
import io
import json

import pytest

from conftest import run_cli
from ticketkit.report import format_table, paired_comparisons, render_report, results_csv, summary_table
from ticketkit.report.stats import t_interval
from ticketkit.report.transfer import findings, flag_line

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ACC = {  # (arm, level) -> accuracy per seed 0, 1, 2
    ("transferred", 100.0): [0.86, 0.88, 0.87],
    ("transferred", 16.9): [0.80, 0.82, 0.84],
    ("random-prune", 16.9): [0.75, 0.76, 0.80],
    ("fresh", 16.9): [0.81, 0.83, 0.85],
    ("transferred", 0.2): [0.60, 0.62, 0.61],
    ("random-prune", 0.2): [0.50, 0.52, 0.51],  # transferred wins by exactly 10 points on every seed
    ("fresh", 0.2): [0.65, 0.66, 0.64],
}
DENSITY = {100.0: (1.0, 1.0), 16.9: (0.168, 0.172), 0.2: (0.00195, 0.0061)}


def make_results(status="complete") -> dict:
    rows = []
    for (arm, level), accs in ACC.items():
        for seed, a in enumerate(accs):
            dp, da = DENSITY[level]
            rows.append({"arm": arm, "level": level, "seed": seed, "source_level": {100.0: 0, 16.9: 8, 0.2: 28}[level],
                         "density_prunable": dp, "density_all": da, "test_accuracy": a, "test_macro_f1": a - 0.01,
                         "val_accuracy": a, "epochs": 5, "best_epoch": 3, "seconds": 12.5})
    plan = [{"requested": lv, "requested_by_user": lv != 100.0} for lv in (100.0, 16.9, 0.2)]
    return {"kind": "transfer", "status": status, "target": "yelp2", "oov_rate": 0.0412, "plan": plan,
            "source": {"dataset": "imdb", "arch": "cnn", "kind": "run", "path": "find-imdb-cnn-x", "seed": 0,
                       "find": {"prune": {"rewind": "init", "scope": "local"}}},
            "config": {"train": {"epochs": 20}}, "data": {"train_size": 22500, "val_size": 2500, "test_size": 38000},
            "command": "ticketkit transfer --to yelp2", "rows": rows}


def test_t_interval_only_for_three_or_more():
    d = [1.0, 2.0, 4.0]
    lo, hi = t_interval(d)
    # mean 7/3, sd 1.5275, t(0.975, 2) = 4.3027: half-width 3.794
    assert (lo, hi) == pytest.approx((7 / 3 - 3.7946, 7 / 3 + 3.7946), abs=1e-3)
    assert t_interval([10.0, 10.0, 10.0]) == (10.0, 10.0)
    assert t_interval([3.0]) is None and t_interval([3.0, 4.0]) is None  # n < 3: no interval, ever


def test_paired_comparison_pairs_by_seed():
    comps = {(c["level"], c["vs"]): c for c in paired_comparisons(make_results())}
    c = comps[(0.2, "random-prune")]
    assert c["seeds"] == 3 and c["mean_diff"] == pytest.approx(10.0) and c["diffs"] == pytest.approx([10.0] * 3)
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((10.0, 10.0))
    c = comps[(16.9, "random-prune")]  # diffs 5, 6, 4: a t-interval that excludes 0
    assert c["ci_low"] > 0 and c["ci_high"] < 10
    c = comps[(16.9, "fresh")]
    assert c["mean_diff"] == pytest.approx(-1.0)
    assert (100.0, "random-prune") not in comps  # the dense level is the reference, not a compared level


def test_render_report_writes_every_file(tmp_path):
    res = make_results()
    paths = render_report(res, tmp_path)
    png = paths["plot"].read_bytes()
    assert png[:8] == PNG_SIGNATURE
    import matplotlib.image

    img = matplotlib.image.imread(str(paths["plot"]))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300 and img.std() > 0  # a real, non-blank image
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert len(rows) == sum(len(v) for v in ACC.values())
    assert rows[0]["arm"] == "transferred" and float(rows[0]["level_requested_pct"]) == 100.0
    assert {"density_prunable", "density_all", "test_accuracy", "test_macro_f1", "epochs", "best_epoch", "seconds"} <= set(rows[0])
    md = paths["markdown"].read_text()
    assert "82.00 ± 2.00" in md          # transferred at 16.9 %: mean ± sd over the three seeds
    assert "87.00 ± 1.00" in md          # the dense reference, beside every level
    assert "| 0.2 | random-prune | 3 | 0 | +10.00 | [+10.00, +10.00] |" in md
    assert "at 0.2 %, transferred is above random-prune by +10.00 points" in md
    assert "one source search: intervals cover training noise only" in md
    assert "## Flagged cells (not evidence)" in md and "None:" in md
    assert "4.12%" in md and "![accuracy vs density](accuracy_vs_density.png)" in md
    assert "Partial results" not in md
    table = summary_table(res)
    assert "82.00 ± 2.00" in table and "OOV rate 4.12%" in table


def test_report_command_rebuilds_from_results_json_alone(tmp_path):
    run = tmp_path / "transfer-imdb-yelp2-cnn-abc"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(make_results(status="running")))
    p = run_cli("report", run)
    assert (run / "accuracy_vs_density.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "Partial results" in (run / "report.md").read_text()
    assert (run / "results.csv").read_text() == results_csv(make_results()["rows"])
    assert "transferred minus control" in p.stdout
    p = run_cli("report", "transfer-imdb", "--store", tmp_path)  # by name (prefix) in a store
    assert p.returncode == 0
    p = run_cli("report", tmp_path, check=False)
    assert p.returncode == 3 and "no results.json" in p.stderr


def test_partial_results_render(tmp_path):
    res = make_results(status="running")
    res["rows"] = [r for r in res["rows"] if r["arm"] == "transferred" and r["seed"] == 0]
    paths = render_report(res, tmp_path)
    assert paths["plot"].read_bytes()[:8] == PNG_SIGNATURE
    assert "n/a" not in summary_table(res)  # nothing to compare yet: no comparison table at all


def test_format_table_still_aligns():
    out = format_table(["a", "bb"], [[1, 2], [333, 4]]).splitlines()
    assert out[0] == "  a  bb" and out[1] == "---  --" and out[3] == "333   4"


def _with_seeds(res, n):
    res["rows"] = [r for r in res["rows"] if r["seed"] < n]
    return res


def test_an_interval_is_never_printed_for_fewer_than_three_seeds(tmp_path):
    for n in (1, 2):
        res = _with_seeds(make_results(), n)
        comps = paired_comparisons(res)
        assert comps and all(c["ci_low"] is None and c["ci_high"] is None for c in comps)
        md = render_report(res, tmp_path)["markdown"].read_text()
        assert "n/a (n = %d < 3)" % n in md and "no interval and no claim" in md
        assert "transferred is above" not in md and "transferred is below" not in md
        assert "n/a (n = %d < 3)" % n in summary_table(res)
    md = render_report(make_results(), tmp_path)["markdown"].read_text()
    assert "n/a (n =" not in md


def test_flagged_cells_are_listed_and_never_counted(tmp_path):
    res = make_results()
    rp = next(r for r in res["rows"] if r["arm"] == "random-prune" and r["level"] == 0.2 and r["seed"] == 2)
    rp.update(test_accuracy=0.6, collapsed=True, majority_share=1.0, dead_units=300, units=300, dead_share=1.0,
              flags=["collapsed", "dead units"])
    c = {(c["level"], c["vs"]): c for c in paired_comparisons(res)}[(0.2, "random-prune")]
    assert c["seeds"] == 2 and c["excluded"] == 1 and c["ci_low"] is None  # seed 2 left out: n = 2, no interval
    md = render_report(res, tmp_path)["markdown"].read_text()
    assert "51.00 ± 1.41 [1 flagged]" in md  # the mean of seeds 0 and 1 only
    assert "| random-prune | 0.2 | 2 | collapsed, dead units | 100.0 % | 300/300 |" in md
    assert flag_line(rp).startswith("warning: random-prune 0.2 % seed 2: collapsed") and "300/300" in flag_line(rp)
    assert not any("0.2 %, transferred is above random-prune" in f for f in findings(res))
    # the report command prints one warning line per flagged cell
    run = tmp_path / "transfer-x"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(res))
    p = run_cli("report", run)
    assert p.stderr.count("warning: ") == 1 and "not evidence" in p.stderr


def test_independent_design_is_stated(tmp_path):
    res = make_results()
    res["independent"] = True
    md = render_report(res, tmp_path)["markdown"].read_text()
    assert "3 independent seeds" in md and "training noise only" not in md


def test_a_comparison_with_no_usable_seed_prints_no_number(tmp_path):
    """Every pair flagged: the tables say so, never '+nan'."""
    res = make_results()
    for r in res["rows"]:
        if r["arm"] == "random-prune" and r["level"] == 0.2:
            r.update(collapsed=True, majority_share=1.0, flags=["collapsed"])
    c = {(c["level"], c["vs"]): c for c in paired_comparisons(res)}[(0.2, "random-prune")]
    assert c["seeds"] == 0 and c["excluded"] == 3
    md = render_report(res, tmp_path)["markdown"].read_text()
    assert "nan" not in md and "nan" not in summary_table(res)
    assert "| 0.2 | random-prune | 0 | 3 | - | n/a (n = 0 < 3) |" in md
