"""Issue 20, a new user's view of long work: `ls` tells a quick run from a full one (subsample, epochs, seeds,
levels; a transfer's requested levels and arms), and off a terminal find and transfer print one line per
finished level or cell with an ETA."""
import re

import pytest

from conftest import TINY_FLAGS, run_cli


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory, tiny_data):
    store = tmp_path_factory.mktemp("store")
    flags = ["--epochs", "1", "--batch-size", "32", "--store", store, "--data-dir", tiny_data]
    find = run_cli("find", "imdb", "cnn", "--rounds", "2", "--max-train", "300", *TINY_FLAGS, *flags)
    transfer = run_cli("transfer", "--to", "yelp2", "--densities", "100,64.4", "--n-seeds", "1",
                       "--controls", "random-prune", "--no-fresh", *flags)
    return store, find, transfer


def test_find_prints_one_line_per_finished_level_off_a_terminal(quick_runs):
    _, find, _ = quick_runs
    lines = [ln for ln in find.stderr.splitlines() if re.search(r"\blevel \d+/3 finished", ln)]
    assert [re.search(r"level (\d+)/3", ln).group(1) for ln in lines] == ["1", "2", "3"]
    assert "ETA" in lines[0] and lines[-1].endswith("done)")
    assert "\r" not in find.stderr  # no progress bars in a log


def test_transfer_prints_one_line_per_finished_cell_off_a_terminal(quick_runs):
    _, _, transfer = quick_runs
    cells = re.findall(r"cell (\d+)/(\d+) finished", transfer.stderr)
    assert cells == [(str(i), "4") for i in range(1, 5)]  # 2 levels x (transferred, random-prune) x 1 seed


def test_ls_tells_a_quick_run_from_a_full_one(quick_runs):
    store, _, _ = quick_runs
    out = run_cli("ls", "--store", store).stdout
    head, _, *rows = out.splitlines()
    for col in ("subsample", "epochs", "seeds", "levels"):
        assert col in head
    find = next(r.split() for r in rows if r.split()[0].startswith("find-"))
    assert find[1:8] == ["find", "complete", "imdb", "300/all", "1", "seed", "0"] and find[8] == "3/3"
    tr = next(r for r in rows if r.split()[0].startswith("transfer-"))
    assert "100,64.4 x 2 arms" in tr and "1 seed(s)" in tr and "levels 0" not in tr
    assert len(tr.split()) >= 12  # every column filled: dense and sparsest accuracy too


def test_ls_counts_the_finished_levels_of_a_run_still_going(quick_runs, tmp_path):
    """run.json lists its levels only when the search completes; while it runs (or after a kill) `ls` counts the
    level tickets already on disk, so a long search can be watched."""
    import json
    import shutil

    store, _, _ = quick_runs
    src = next(p for p in store.iterdir() if p.name.startswith("find-"))
    part = tmp_path / "store"
    run = part / src.name
    shutil.copytree(src, run)
    shutil.rmtree(run / "level-02")  # killed while training level 2
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(dict(info, status="running", levels=[])))
    row = next(r.split() for r in run_cli("ls", "--store", part).stdout.splitlines()[2:] if r.startswith("find-"))
    assert row[2] == "interrupted" and row[8] == "2/3", row
    # and the accuracies of the levels it finished: % remaining at the last one, dense and last test accuracy
    lv = info["levels"]
    assert row[9:12] == [f"{lv[1]['density_prunable'] * 100:.2f}", f"{lv[0]['test_accuracy'] * 100:.2f}",
                         f"{lv[1]['test_accuracy'] * 100:.2f}"], row
    (run / "level-01" / "config.json").write_text("{not json")  # a damaged level ticket: the run lists as corrupt
    row = next(r.split() for r in run_cli("ls", "--store", part).stdout.splitlines()[2:] if r.startswith("find-"))
    assert row[2] == "corrupt", row


def test_compare_reads_the_finished_levels_of_a_run_still_going(quick_runs, tmp_path):
    """A long search is published with its status: compare (and Run.levels) take the levels already finished on
    disk when run.json does not list them yet, each with its seed."""
    import json
    import shutil

    from ticketkit.find import Run

    store, _, _ = quick_runs
    src = next(p for p in store.iterdir() if p.name.startswith("find-"))
    run = tmp_path / "store" / src.name
    shutil.copytree(src, run)
    full = json.loads((run / "run.json").read_text())
    shutil.rmtree(run / "level-02")
    (run / "run.json").write_text(json.dumps(dict(full, status="running", levels=[])))
    assert Run(run).levels == full["levels"][:2]
    out = run_cli("compare", run, src, "--out", tmp_path / "cmp", "--store", store).stdout
    pts = (tmp_path / "cmp" / "points.csv").read_text().splitlines()[1:]
    assert sorted(ln.split(",")[2] for ln in pts) == ["0", "0", "1", "1", "2"]  # 2 levels of the partial, 3 of the whole
    row = next(ln.split() for ln in out.splitlines() if str(run.name) in ln and "running" in ln)
    assert row[1:5] == ["find", "running", "2", "0"], row  # its status, its finished cells and its seed
