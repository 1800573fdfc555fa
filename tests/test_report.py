"""Transfer reports rendered from a results.json alone: tables, paired bootstrap comparison, CSV and the plot."""
import csv
import io
import json

import numpy as np
import pytest

from conftest import run_cli
from ticketkit.report import (bootstrap_ci, format_table, paired_comparisons, render_report, results_csv,
                              summary_table)

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


def test_bootstrap_ci_is_deterministic_and_sensible():
    d = [1.0, 2.0, 4.0]
    lo, hi = bootstrap_ci(d)
    assert (lo, hi) == bootstrap_ci(d)  # fixed generator
    assert min(d) <= lo <= np.mean(d) <= hi <= max(d)
    assert bootstrap_ci([10.0, 10.0, 10.0]) == (10.0, 10.0)
    assert all(np.isnan(bootstrap_ci([3.0])))  # one seed: no interval


def test_paired_comparison_pairs_by_seed():
    comps = {(c["level"], c["vs"]): c for c in paired_comparisons(make_results())}
    c = comps[(0.2, "random-prune")]
    assert c["seeds"] == 3 and c["mean_diff"] == pytest.approx(10.0) and c["diffs"] == pytest.approx([10.0] * 3)
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((10.0, 10.0))
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
    assert "82.00 ± 2.00" in md          # transferred at 16.9 %: mean ± std over the three seeds
    assert "87.00 ± 1.00" in md          # the dense reference, beside every level
    assert "| 0.2 | random-prune | 3 | +10.00 | [+10.00, +10.00] |" in md
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
    assert p.returncode == 2 and "no results.json" in p.stderr


def test_partial_results_render(tmp_path):
    res = make_results(status="running")
    res["rows"] = [r for r in res["rows"] if r["arm"] == "transferred" and r["seed"] == 0]
    paths = render_report(res, tmp_path)
    assert paths["plot"].read_bytes()[:8] == PNG_SIGNATURE
    assert "n/a" not in summary_table(res)  # nothing to compare yet: no comparison table at all


def test_format_table_still_aligns():
    out = format_table(["a", "bb"], [[1, 2], [333, 4]]).splitlines()
    assert out[0] == "  a  bb" and out[1] == "---  --" and out[3] == "333   4"
