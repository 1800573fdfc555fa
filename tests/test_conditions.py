"""Conditions compared, on small synthetic results: `ticketkit report SWEEP`'s per-axis curves and paired tables,
and `ticketkit compare` over runs named by hand. Intervals only for n >= 3; flagged cells hollow, listed, never
counted."""
import json
from pathlib import Path

import pytest

from conftest import run_cli
from ticketkit.report.compare import compare
from ticketkit.report.conditions import Design, curves, differences, plot_axis, statement
from ticketkit.report.sweep import report_sweep

PNG = b"\x89PNG\r\n\x1a\n"
DENS = [1.0, 0.411, 0.169, 0.07]
# condition -> accuracy per level for seed 0; seed s adds s * 0.005 (so differences are exact per seed)
ACC = {
    ("init", "local"): [0.86, 0.85, 0.83, 0.78],
    ("epoch:1", "local"): [0.86, 0.86, 0.85, 0.82],   # +1, +2, +4 points over init on every seed
    ("final", "local"): [0.86, 0.84, 0.80, 0.70],
    ("init", "global"): [0.86, 0.85, 0.84, 0.79],
}


def level_rows(accs, seed, flag_at=None):
    return [{"level": i, "density_prunable": d, "test_accuracy": a + seed * 0.005,
             "flags": ["collapsed"] if i == flag_at else []} for i, (d, a) in enumerate(zip(DENS, accs))]


def write_sweep(root: Path) -> Path:
    """A finished sweep on disk: rewind x 3 seeds and global x 2 seeds around (init, local), for cnn and lstm; the
    lstm's epoch:1 seed 2 collapsed at level 3."""
    sd = root / "sweep-x"
    (sd / "cells").mkdir(parents=True)
    cells = []
    for arch in ("cnn", "lstm"):
        for (rewind, scope), accs in ACC.items():
            for seed in ((0, 1) if scope == "global" else (0, 1, 2)):
                cid = f"find-imdb-{arch}-{rewind.replace(':', '')}-{scope}-{seed}"
                axes = {"arch": arch, "rewind": rewind, "prune": scope, "seed": seed}
                cells.append({"id": cid, "kind": "find", "axes": axes, "deps": []})
                flag = 3 if (arch, rewind, seed) == ("lstm", "epoch:1", 2) else None
                (root / cid).mkdir()
                (root / cid / "run.json").write_text(json.dumps(
                    {"status": "complete", "config": {"seed": seed}, "levels": level_rows(accs, seed, flag)}))
    sw = {"arch": ["cnn", "lstm"], "rewind": ["init", "epoch:1", "final"], "prune": ["local", "global"],
          "seed": [0, 1, 2], "design": "one-at-a-time", "reference": {"rewind": "init", "prune": "local"}}
    (sd / "sweep.json").write_text(json.dumps({"recipe": {"sweep": sw}, "cells": cells}))
    return sd


def test_sweep_report_compares_each_axis(tmp_path):
    from ticketkit.sweep import cell_states

    sd = write_sweep(tmp_path)
    md = report_sweep(sd, cell_states(sd)).read_text()
    for axis in ("arch", "rewind", "prune"):  # one PNG per varying axis, never the seed
        assert (sd / f"axis-find-{axis}.png").read_bytes()[:8] == PNG and f"axis-find-{axis}.png" in md
    assert not (sd / "axis-find-seed.png").exists()
    assert "## Conditions compared" in md and md.index("## Conditions compared") < md.index("## Cells")
    # epoch:1 - init at 16.9 %: +2 points on each of 3 seeds, an interval that excludes 0
    assert "at 16.9 % (arch=cnn), epoch:1 is above init by +2.00 points (95 % CI [+2.00, +2.00], n = 3)." in md
    # global has 2 seeds: its differences get no interval, and no claim
    assert "at 16.9 % (arch=cnn), global − local: +1.00, +1.00 points over 2 seed(s): no interval (n < 3), no claim." in md
    # lstm epoch:1 seed 2 collapsed at 7 %: left out of the pair (n = 2, no interval) and listed
    assert "at 7 % (arch=lstm), epoch:1 − init: +4.00, +4.00 points over 2 seed(s): no interval (n < 3)" in md
    assert "| arch=lstm, rewind=epoch:1, prune=local | 2 | 7 | " in md and "collapsed" in md


def test_curves_and_differences_by_seed_with_reference_and_facets():
    points = []
    for (rewind, scope), accs in ACC.items():
        for seed in range(3):
            for r in level_rows(accs, seed, flag_at=2 if (rewind, seed) == ("final", 0) else None):
                points.append({"cond": {"rewind": rewind, "prune": scope}, "seed": seed, "key": r["level"],
                               "density": r["density_prunable"], "acc": r["test_accuracy"], "flags": r["flags"]})
    design = Design({"rewind": ["init", "epoch:1", "final"], "prune": ["local", "global"]},
                    {"rewind": "init", "prune": "local"})
    c = curves(points, design, "rewind", {})
    assert list(c) == ["init", "epoch:1", "final"]  # global is held at its reference (local)
    final = {r["key"]: r for r in c["final"]}
    assert final[2]["n"] == 2 and final[2]["ci"] is None and [tuple(round(v, 6) for v in h) for h in final[2]["hollow"]] == [(16.9, 80.0)]  # flagged: hollow
    assert final[1]["n"] == 3 and final[1]["ci"] is not None
    d = {(x["value"], x["key"]): x for x in differences(points, design, "rewind", {})}
    assert d[("epoch:1", 3)]["diffs"] == pytest.approx([4.0] * 3) and d[("epoch:1", 3)]["reference"] == "init"
    assert d[("final", 2)]["n"] == 2 and d[("final", 2)]["excluded"] == 1 and d[("final", 2)]["ci"] is None
    noisy = {**d[("epoch:1", 3)], "diffs": [3.0, -2.0, 1.0], "mean_diff": 2 / 3, "ci": (-5.5, 6.9)}
    assert statement(noisy).endswith("includes 0 (n = 3): not distinguishable.")
    fig = plot_axis(points, design, "rewind", Path(__import__("tempfile").mkdtemp()) / "r.png", "t")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["rewind=init (reference)", "rewind=epoch:1", "rewind=final", "flagged cell (not evidence)"]
    assert fig.axes[0].xaxis_inverted() and fig.axes[0].get_xscale() == "log"


def find_run(root: Path, name: str, rewind: str, seed: int, accs) -> Path:
    cfg = {"seed": seed, "model": {"arch": "cnn"}, "prune": {"rewind": rewind, "scope": "local"}}
    (root / name).mkdir(parents=True)
    (root / name / "run.json").write_text(json.dumps({"kind": "find", "status": "complete", "config": cfg,
                                                      "levels": level_rows(accs, seed)}))
    return root / name


def transfer_run(root: Path, name: str, rewind: str, accs) -> Path:
    rows = [{"arm": arm, "level": lv, "seed": s, "density_prunable": d, "test_accuracy": a + s * 0.01 - (arm != "transferred") * 0.05,
             "flags": []} for arm in ("transferred", "random-prune") for s in range(3)
            for lv, d, a in zip([100.0, 41.1, 16.9, 7.0], DENS, accs)]
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps({
        "rows": rows, "config": {"target": "yelp2", "seeds": [0, 1, 2], "workers": 2},
        "source": {"find": {"seed": 0, "model": {"arch": "cnn"}, "prune": {"rewind": rewind}}}}))
    return root / name


def test_compare_groups_by_the_settings_that_differ(tmp_path):
    store = tmp_path / "store"
    for s in range(3):
        find_run(store, f"find-imdb-cnn-init{s}", "init", s, ACC[("init", "local")])
        find_run(store, f"find-imdb-cnn-late{s}", "epoch:1", s, ACC[("epoch:1", "local")])
    res = compare([f"find-imdb-cnn-init{s}" for s in range(3)] + [str(store / f"find-imdb-cnn-late{s}") for s in range(3)],
                  out=tmp_path / "cmp", store=store)
    assert res.axes == {"prune.rewind": ["init", "epoch:1"]}  # the seed is not a condition: it pairs
    assert (tmp_path / "cmp" / "axis-prune_rewind.png").read_bytes()[:8] == PNG
    md = res.markdown.read_text()
    assert "at 7 %, epoch:1 is above init by +4.00 points (95 % CI [+4.00, +4.00], n = 3)." in md
    assert (tmp_path / "cmp" / "points.csv").read_text().count("\n") == 1 + 6 * 4

    transfer_run(store, "transfer-a", "init", ACC[("init", "local")])
    transfer_run(store, "transfer-b", "epoch:1", ACC[("epoch:1", "local")])
    res = compare(["transfer-a", "transfer-b"], out=tmp_path / "t", store=store)
    assert res.axes == {"prune.rewind": ["init", "epoch:1"]}  # workers and the seed list are not conditions
    assert {d["n"] for d in res.differences} == {3} and all(d["ci"] is not None for d in res.differences)
    res = compare(["transfer-a"], out=tmp_path / "one", arm="random-prune", store=store)
    assert res.axes == {} and "differ only in their seed" in res.markdown.read_text()


def test_compare_cli_and_bad_input(tmp_path):
    store = tmp_path / "store"
    for s in range(2):
        find_run(store, f"find-a{s}", "init", s, ACC[("init", "local")])
        find_run(store, f"find-b{s}", "final", s, ACC[("final", "local")])
    p = run_cli("compare", "find-a0", "find-a1", "find-b0", "find-b1", "--store", store, "--out", tmp_path / "o")
    assert "no interval (n < 3)" in p.stdout and (tmp_path / "o" / "compare.md").exists()
    p = run_cli("compare", "find-zzz", "--store", store, check=False)
    assert p.returncode == 3 and len(p.stderr.strip().splitlines()) == 1 and "find-zzz" in p.stderr
    transfer_run(store, "transfer-a", "init", ACC[("init", "local")])
    p = run_cli("compare", "transfer-a", "--arm", "fresh", "--store", store, check=False)
    assert p.returncode == 3 and "no 'fresh' arm" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_compare_runs_that_differ_only_in_seed_gives_a_table_per_level(tmp_path):
    """Seeds of one setting (the headline's source searches): one curve, a per-level mean with a t-interval over
    the usable seeds only for n >= 3, flagged cells counted apart and labelled runs=all, not by every setting."""
    store = tmp_path / "store"
    for s in range(3):
        find_run(store, f"find-imdb-cnn-s{s}", "init", s, ACC[("init", "local")])
    info = json.loads((store / "find-imdb-cnn-s2" / "run.json").read_text())
    info["levels"][3]["flags"] = ["dead units"]
    (store / "find-imdb-cnn-s2" / "run.json").write_text(json.dumps(info))
    md = compare([f"find-imdb-cnn-s{s}" for s in range(3)], out=tmp_path / "c", store=store).markdown.read_text()
    # seed s adds s * 0.5 points: level 0 is 86.0, 86.5, 87.0 -> mean 86.50, sd 0.50, t(2) half-width 1.24
    assert "| 0 | 100 | 3 | 0 | 86.50 | 0.50 | [85.26, 87.74] |" in md
    assert "| 3 | 7 | 2 | 1 | 78.25 | 0.35 | no interval (n < 3) |" in md
    assert "| runs=all | 2 | 7 | 79.00 | dead units |" in md
