"""Independent replicates run apart (`transfer --replicate S`) and merged by `report RUN...`: the group that one
`transfer --n-seeds N` run writes, with the same name and rows, so that a study too long for one sitting can be
finished seed by seed on machines that do not keep their disk."""
import json
import shutil
from pathlib import Path

import pytest

from conftest import TINY_FLAGS, run_cli
from ticketkit.fsio import read_json, write_json

FLAGS = ["--to", "yelp2", "--densities", "100,64", "--epochs", "2", "--batch-size", "32", "--max-train", "200",
         "--max-test", "100", "--quiet"]


def _metrics(rows) -> dict:
    return {(r["arm"], r["level"], r["seed"]): {k: v for k, v in r.items() if k not in ("seconds", "shared_with")}
            for r in rows}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data):
    """A seed-0 IMDB search; the 2-seed group from it in one store; seeds 0 and 1 run apart in another."""
    base = tmp_path_factory.mktemp("merge")
    src_store = base / "source"
    run_cli("find", "imdb", "cnn", "--data-dir", tiny_data, "--store", src_store, "--rounds", "2", *TINY_FLAGS, "--quiet")
    src = next(src_store.glob("find-imdb-*"))
    group_store, apart_store = base / "group", base / "apart"
    for st in (group_store, apart_store):
        shutil.copytree(src, st / src.name)
    g = run_cli("transfer", str(group_store / src.name), "--n-seeds", "2", *FLAGS, "--data-dir", tiny_data,
                "--store", group_store, "--json")
    reps = [json.loads(run_cli("transfer", str(apart_store / src.name), "--replicate", str(s), *FLAGS,
                               "--data-dir", tiny_data, "--store", apart_store, "--json").stdout)["run"]
            for s in (1, 0)]  # out of order on purpose: the merge sorts by seed
    return base, Path(json.loads(g.stdout)["run"]), [Path(r) for r in reps], apart_store


def test_replicates_run_apart_merge_into_the_group_one_command_writes(runs):
    base, group, (rep1, rep0), apart = runs
    g = read_json(group / "results.json")
    one = read_json(rep1 / "results.json")
    assert one["config"]["seeds"] == [1] and one["source"]["find"]["seed"] == 1  # seed 1 searched the source again
    assert len(list(apart.glob("find-imdb-*"))) == 2  # seed 0's search (given) and seed 1's, nothing else
    out = base / "merged"
    p = run_cli("report", str(rep1), str(rep0 / "results.json"), "--out", str(out), "--json")
    data = json.loads(p.stdout)
    m = read_json(out / "results.json")
    assert data["name"] == g["name"] == m["name"] and data["seeds"] == [0, 1]  # the group's name: same bits
    assert _metrics(m["rows"]) == _metrics(g["rows"])  # every cell of both seeds, bit for bit
    assert m["independent"] and sorted(m["replicates"]) == ["0", "1"] and m["status"] == "complete"
    assert {(float(o["level"]), o["seed"]) for o in m["overlap"]} == {(float(o["level"]), o["seed"]) for o in g["overlap"]}
    assert m["plan"] == g["plan"] and m["source"]["find"] == g["source"]["find"]
    assert m["merged_from"]["1"]["name"] == one["name"]
    # each replicate is recorded the same way by both paths (one helper): its run name, not a machine's path
    gr, mr = g["replicates"], m["replicates"]
    for s in ("0", "1"):
        assert set(gr[s]) == set(mr[s])
        assert gr[s]["transfer"] == mr[s]["transfer"] == read_json((rep0, rep1)[int(s)] / "results.json")["name"]
        assert Path(gr[s]["source"]).name == Path(mr[s]["source"]).name
        assert {k: gr[s][k] for k in ("data", "oov_rate")} == {k: mr[s][k] for k in ("data", "oov_rate")}
    assert {k: m[k] for k in ("data", "oov_rate")} == {k: g[k] for k in ("data", "oov_rate")}
    md = (out / "report.md").read_text()
    assert "2 independent seeds" in md and (out / "accuracy_vs_density.png").stat().st_size > 0
    assert "Merged from 2 replicates run apart" in md and one["name"] in md and "--replicate 1" in md
    assert (out / "results.csv").read_text().count("\n") == len(g["rows"]) + 1
    # merging again replaces the earlier merge of the same group
    run_cli("report", str(rep0), str(rep1), "--out", str(out), "--quiet")
    assert read_json(out / "results.json")["name"] == g["name"]


def _edited(src: Path, dest: Path, edit) -> Path:
    res = read_json(src / "results.json")
    edit(res)
    dest.mkdir(parents=True, exist_ok=True)
    write_json(dest / "results.json", res)
    return dest


@pytest.mark.parametrize("what, edit, message", [
    ("another setting", lambda r: r["config"]["train"].update(lr=0.01), "differ in transfer.train.lr"),
    ("a source searched at another seed", lambda r: r["source"]["find"].update(seed=7), "not an independent replicate"),
    ("an unfinished replicate", lambda r: r.update(status="running"), "is running"),
    ("a group", lambda r: r.update(independent=True), "one-seed replicates"),
])
def test_a_merge_refuses_what_is_not_one_experiment(runs, tmp_path, what, edit, message):
    _, _, (rep1, rep0), _ = runs
    bad = _edited(rep1, tmp_path / "bad", edit)
    p = run_cli("report", str(rep0), str(bad), "--out", str(tmp_path / "out"), check=False)
    assert p.returncode != 0 and message in p.stderr, (what, p.stderr)
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_merge_refuses_a_seed_twice_and_never_overwrites_another_directory(runs, tmp_path):
    _, _, (rep1, rep0), _ = runs
    p = run_cli("report", str(rep0), str(rep0 / "results.json"), "--out", str(tmp_path / "out"), check=False)
    assert p.returncode != 0 and "seed 0 twice" in p.stderr
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    p = run_cli("report", str(rep0), str(rep1), "--out", str(keep), check=False)
    assert p.returncode != 0 and "not an earlier merge" in p.stderr
    assert [f.name for f in keep.iterdir()] == ["notes.txt"]


def test_replicate_with_level_or_a_ticket_is_a_clear_error(runs, tiny_data, tmp_path):
    base, _, _, apart = runs
    src = next(apart.glob("find-imdb-*"))
    p = run_cli("transfer", str(src), "--replicate", "1", "--level", "1", *FLAGS, "--data-dir", tiny_data,
                "--store", tmp_path, check=False)
    assert p.returncode != 0 and "drop --level" in p.stderr
    ticket = sorted(src.glob("level-*"))[1]
    p = run_cli("transfer", str(ticket), "--replicate", "1", *FLAGS, "--data-dir", tiny_data, "--store", tmp_path,
                check=False)
    assert p.returncode != 0 and "a single ticket cannot be searched again" in p.stderr
