"""`ticketkit sweep`: grid expansion, the local backend, a real local Ray cluster (identical results), failures,
reruns and a killed driver. Every sweep here is real training on the tiny synthetic data."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO, run_cli
from ticketkit.errors import TicketkitError
from ticketkit.fsio import read_json
from ticketkit.sweep import cell_states, expand, load_sweep_recipe, run_sweep, summarize

TINY = """
[data]
vocab_size = 100
max_len = 32
[model]
embed_dim = 16
num_filters = 8
hidden_size = 16
[train]
epochs = 2
batch_size = 32
[prune]
schedule = "oneshot"
target = 0.5
"""

# 2 seeds x (magnitude, random-prune control) + a transfer of each magnitude ticket to yelp2: 6 cells, and two
# kinds of dependency (control -> its magnitude run, transfer -> its source ticket).
SMALL = """
[sweep]
arch = ["cnn"]
control = ["none", "random-prune"]
seed = [0, 1]
transfer = ["yelp2"]
[transfer]
levels = [100, 50]
controls = ["random-prune"]
fresh = false
""" + TINY


def write_recipe(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def sweep_dict(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


# ---------------------------------------------------------------------------------------------------- the grid
def test_seed_study_grid():
    full = expand(load_sweep_recipe(REPO / "recipes" / "seed_study.toml"))
    finds = [c for c in full.cells if c.kind == "find"]
    # one axis at a time around (init, local, iterative, none): 1 + 2 rewinds + 1 scope + 1 schedule + 2 controls,
    # for 2 archs x 3 seeds; no transfer cells (the headline transfer is its own command).
    assert len(finds) == len(full.cells) == 7 * 2 * 3 == 42
    assert len({c.id for c in full.cells}) == len(full.cells)
    ref = {"rewind": "init", "prune": "local", "schedule": "iterative", "control": "none"}
    for c in finds:
        assert sum(c.axes[k] != v for k, v in ref.items()) <= 1, c.axes  # at most one axis off the reference
        assert c.config["prune"]["target"] is None and c.config["prune"]["levels"] == 7  # down to the seed's 0.2 %
    assert {c.axes["schedule"] for c in finds} == {"iterative", "oneshot-levels"}
    assert {c.config["prune"]["control"] for c in finds} == {"none", "random-prune", "random-reinit"}
    assert {(c.axes["arch"], c.axes["seed"]) for c in finds} == {(a, s) for a in ("cnn", "lstm") for s in (0, 1, 2)}
    seen = set()
    for c in full.cells:  # dependency order: every dependency comes before its dependents
        assert all(d in seen for d in c.deps), c.id
        seen.add(c.id)
    ctrl = [c for c in finds if c.config["prune"]["control"] != "none"]
    assert all(full.cell(c.deps[0]).axes == {**c.axes, "control": "none"} for c in ctrl)  # the reference run
    grid = expand({**load_sweep_recipe(REPO / "recipes" / "seed_study.toml"),
                   "sweep": {**load_sweep_recipe(REPO / "recipes" / "seed_study.toml")["sweep"], "design": "grid"}})
    assert len(grid.cells) == 3 * 2 * 2 * 3 * 2 * 3 == 216  # the full factorial grid stays available
    quick = expand(load_sweep_recipe(REPO / "recipes" / "seed_study.toml", quick=True))
    assert len(quick.cells) == 42 and quick.name != full.name
    assert {c.config["seed"] for c in quick.cells} == {0, 1, 2}
    assert all(c.config["data"]["max_train"] == 1000 and c.config["prune"]["levels"] == 3
               and c.config["train"]["epochs"] == 20 for c in quick.cells)


def test_one_at_a_time_design_and_its_errors():
    base = '[sweep]\ndesign = "one-at-a-time"\nrewind = ["init", "final"]\nprune = ["local", "global"]\nseed = [0, 1]\n'
    s = expand(sweep_dict(base + TINY))
    # no reference table: every axis but the seed varies alone around its first value
    assert sorted((c.axes["rewind"], c.axes["prune"], c.axes["seed"]) for c in s.cells) == \
        [("final", "local", 0), ("final", "local", 1), ("init", "global", 0), ("init", "global", 1),
         ("init", "local", 0), ("init", "local", 1)]
    s = expand(sweep_dict(base.replace("seed", 'arch = ["cnn", "lstm"]\nreference = {prune = "global"}\nseed') + TINY))
    # a reference table names the varied axes; the rest (rewind here, arch, seed) are crossed
    assert len(s.cells) == 2 * 2 * 2 * 2 and {c.axes["prune"] for c in s.cells} == {"local", "global"}
    with pytest.raises(TicketkitError, match=r"sweep\.design: must be 'grid' or 'one-at-a-time', got 'ofat'"):
        expand(sweep_dict(base.replace("one-at-a-time", "ofat") + TINY))
    with pytest.raises(TicketkitError, match=r"sweep\.reference: 'lr' is not an axis"):
        expand(sweep_dict(base + 'reference = {lr = 1}\n' + TINY))
    with pytest.raises(TicketkitError, match=r"sweep\.reference: prune = 'both' is not one of"):
        expand(sweep_dict(base + 'reference = {prune = "both"}\n' + TINY))


def test_grid_dedupes_and_adds_dependencies():
    s = expand(sweep_dict('[sweep]\nseed = [0, 0, 1]\n"prune.rate" = [0.2, 0.2]\n' + TINY))
    assert len(s.cells) == 2  # the same settings reached twice are one cell
    s = expand(sweep_dict('[sweep]\ncontrol = ["random-prune"]\nseed = [3]\n' + TINY))
    assert [c.config["prune"]["control"] for c in s.cells] == ["none", "random-prune"]  # its magnitude run is added
    assert s.cells[1].deps == [s.cells[0].id]
    s = expand(sweep_dict('[sweep]\ndataset = ["imdb", "yelp2"]\ntransfer = ["yelp2"]\n' + TINY))
    t = [c for c in s.cells if c.kind == "transfer"]
    assert len(t) == 1 and s.cell(t[0].source).config["data"]["dataset"] == "imdb"  # yelp2 -> yelp2 is skipped


def test_grid_invalid_combinations_fail_before_training(tmp_path):
    bad = '[sweep]\nschedule = ["oneshot", "iterative"]\n[prune]\nlevels = 2\n'
    with pytest.raises(TicketkitError, match=r"schedule=oneshot.*oneshot needs a target.*exclude"):
        expand(sweep_dict(bad))
    ok = expand(sweep_dict(bad.replace("[prune]", 'exclude = [{schedule = "oneshot"}]\n[prune]')))
    assert [c.config["prune"]["schedule"] for c in ok.cells] == ["iterative"]
    with pytest.raises(TicketkitError, match=r"sweep\.flavour: unknown axis"):
        expand(sweep_dict('[sweep]\nflavour = ["x"]\n'))
    with pytest.raises(TicketkitError, match=r"unknown key .*lrr"):
        expand(sweep_dict('[sweep]\nseed = [0]\n[train]\nlrr = 1\n'))
    with pytest.raises(TicketkitError, match=r"sweep\.transfer: unknown target dataset 'mnist'"):
        expand(sweep_dict('[sweep]\nseed = [0]\ntransfer = ["mnist"]\n' + TINY))
    with pytest.raises(TicketkitError, match=r"has no \[quick\] table"):
        load_sweep_recipe(write_recipe(tmp_path, "[sweep]\nseed=[0]\n"), quick=True)


# ---------------------------------------------------------------------------------------------------- local backend
def results(store: Path, sweep_dir: Path) -> dict:
    """Every cell's outcome, for comparing backends: find levels.csv and masks, transfer rows."""
    from ticketkit.ticket import Ticket

    out = {}
    for c in cell_states(sweep_dir):
        assert c["status"] == "done", c
        run = Path(c["run"])
        if c["kind"] == "find":
            masks = [{k: v.clone() for k, v in Ticket.load(d).masks.items()} for d in sorted(run.glob("level-*"))]
            csv = pd.read_csv(run / "levels.csv")
            out[c["id"]] = (csv[["level", "density_prunable", "val_accuracy", "test_accuracy"]].values.tolist(), masks)
        else:
            rows = read_json(run / "results.json")["rows"]
            out[c["id"]] = (sorted((r["arm"], r["level"], r["seed"], r["test_accuracy"], r["val_loss"]) for r in rows), run.name)
    return out


def same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k][0] == b[k][0], k
        if isinstance(a[k][1], list):
            for ma, mb in zip(a[k][1], b[k][1]):
                assert ma.keys() == mb.keys() and all(torch.equal(ma[n], mb[n]) for n in ma), k
        else:
            assert a[k][1] == b[k][1], k  # a transfer run is named for its source tickets' bytes


@pytest.fixture(scope="module")
def local_sweep(tiny_data, tmp_path_factory):
    """The small sweep on the local backend, in this process, with one torch thread like each worker (on a busy
    shared machine, two threads per process are several times slower; results do not depend on it)."""
    tmp = tmp_path_factory.mktemp("local")
    recipe = write_recipe(tmp, SMALL)
    res = run_sweep(recipe, store=tmp / "store", data_dir=tiny_data, progress=False, threads=1)
    return recipe, tmp / "store", res


def test_local_backend_runs_the_grid_with_dependencies(local_sweep, tiny_data):
    recipe, store, res = local_sweep
    assert res.counts == {"total": 6, "done": 6, "running": 0, "failed": 0, "pending": 0}
    info = read_json(res.path / "sweep.json")
    assert len(info["cells"]) == 6 and info["recipe"]["sweep"]["seed"] == [0, 1]
    states = {c["id"]: c for c in res.states}
    for c in info["cells"]:
        st = read_json(res.path / "cells" / f"{c['id']}.json")  # written by whoever ran the cell
        assert st["status"] == "done" and Path(st["run"]).is_dir() and st["pid"] == os.getpid()
        if c["kind"] == "transfer":  # it ran from its source cell's ticket
            r = read_json(Path(st["run"]) / "results.json")
            assert r["status"] == "complete" and Path(r["source"]["path"]).name == c["source"]
            assert {x["arm"] for x in r["rows"]} == {"transferred", "random-prune"}
        else:
            assert Path(st["run"]).name == c["id"] and read_json(Path(st["run"]) / "run.json")["status"] == "complete"
    assert sum(1 for c in states.values() if c["kind"] == "transfer") == 2

    # Every finished cell is reused: nothing trains, no cell file is rewritten.
    before = {p.name: p.stat().st_mtime_ns for p in (res.path / "cells").iterdir()}
    runs_before = {p.name: (p / "run.json").stat().st_mtime_ns for p in store.glob("find-*")}
    again = run_sweep(recipe, store=store, data_dir=tiny_data, progress=False)
    assert again.path == res.path and again.counts["done"] == 6
    assert {p.name: p.stat().st_mtime_ns for p in (res.path / "cells").iterdir()} == before
    assert {p.name: (p / "run.json").stat().st_mtime_ns for p in store.glob("find-*")} == runs_before

    # status works from another process, after the driver has exited; so does the report.
    out = run_cli("sweep", "status", res.path.name, "--store", store).stdout
    assert "6/6 done, 0 running, 0 failed, 0 pending" in out and out.count(" done ") >= 6
    out = run_cli("report", res.path.name, "--store", store).stdout  # `ticketkit report` knows a sweep
    assert "## Conditions" in out and "wrote" in out
    text = (res.path / "report.md").read_text()
    assert "6/6 cells done" in text and "control=random-prune" in text and "transfer=yelp2" in text
    csv = pd.read_csv(res.path / "cells.csv")
    assert set(csv["cell"]) == set(states) and csv["test_accuracy"].between(0, 1).all()


def test_local_worker_processes_give_identical_results(local_sweep, tiny_data, tmp_path):
    recipe, store, res = local_sweep
    pool = run_sweep(recipe, store=tmp_path / "store", data_dir=tiny_data, workers=2, progress=False)
    assert pool.counts["done"] == 6 and pool.path.name == res.path.name
    pids = {read_json(p)["pid"] for p in (pool.path / "cells").iterdir()}
    assert os.getpid() not in pids  # the cells ran in the worker processes
    same(results(store, res.path), results(tmp_path / "store", pool.path))


def broken_data(tiny_data: Path, root: Path) -> Path:
    """The tiny data with yelp2's train split broken (a label of 2), so every yelp2 cell fails at load."""
    shutil.copytree(tiny_data, root)
    df = pd.read_parquet(root / "yelp2" / "train.parquet")
    df.loc[3, "label"] = 2
    df.to_parquet(root / "yelp2" / "train.parquet")
    return root


def test_failing_cell_is_recorded_and_rerun_retries_only_it(tiny_data, tmp_path):
    data = broken_data(tiny_data, tmp_path / "data")
    recipe = write_recipe(tmp_path, '[sweep]\ndataset = ["imdb", "yelp2"]\ncontrol = ["none", "random-prune"]\n' + TINY)
    store = tmp_path / "store"
    p = run_cli("sweep", recipe, "--data-dir", data, "--store", store, "--quiet", check=False)
    assert p.returncode == 1, p.stderr  # some cell failed; the others finished
    assert "2/4 cells done" in p.stdout
    sd = next(store.glob("sweep-*"))
    st = {c["axes"]["dataset"] + "/" + c["axes"]["control"]: c for c in cell_states(sd)}
    assert st["imdb/none"]["status"] == st["imdb/random-prune"]["status"] == "done"
    assert st["yelp2/none"]["status"] == "failed" and "labels must be 0 or 1" in st["yelp2/none"]["error"]
    assert st["yelp2/random-prune"]["status"] == "failed" and "which failed" in st["yelp2/random-prune"]["error"]
    out = run_cli("sweep", "status", sd).stdout
    assert "2/4 done, 0 running, 2 failed, 0 pending" in out and "labels must be 0 or 1" in out

    # Fix the data and run again: only the failed cells run.
    shutil.copy(tiny_data / "yelp2" / "train.parquet", data / "yelp2" / "train.parquet")
    done_before = {k: (sd / "cells" / f"{c['id']}.json").read_bytes() for k, c in st.items() if k.startswith("imdb")}
    res = run_sweep(recipe, store=store, data_dir=data, progress=False)
    assert res.counts["done"] == 4
    assert {k: (sd / "cells" / f"{st[k]['id']}.json").read_bytes() for k in done_before} == done_before


def test_killed_driver_loses_no_finished_cell(tiny_data, tmp_path):
    recipe = write_recipe(tmp_path, '[sweep]\nseed = [0, 1, 2]\n' + TINY)
    store = tmp_path / "store"
    p = subprocess.Popen([sys.executable, "-m", "ticketkit", "sweep", str(recipe), "--data-dir", str(tiny_data),
                          "--store", str(store), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            files = list(store.glob("sweep-*/cells/*.json"))
            if any(read_json(f)["status"] == "done" for f in files if f.stat().st_size):
                break
            assert p.poll() is None, p.stderr.read().decode()
            time.sleep(0.2)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    sd = next(store.glob("sweep-*"))
    states = cell_states(sd)
    done = [c for c in states if c["status"] == "done"]
    assert done and summarize(states)["running"] == 0  # the killed cell is seen as interrupted, not running
    finished = {c["id"]: (Path(c["run"]) / "run.json").stat().st_mtime_ns for c in done}
    res = run_sweep(recipe, store=store, data_dir=tiny_data, progress=False)
    assert res.counts["done"] == 3
    assert {k: (Path(store) / k / "run.json").stat().st_mtime_ns for k in finished} == finished


def test_cli_sweep_forms(tmp_path):
    out = run_cli("sweep", "--help").stdout
    assert "status" in out and "run" in out
    p = run_cli("sweep", "status", "nope", "--store", tmp_path, check=False)
    assert p.returncode == 3 and p.stderr.strip().startswith("error: no sweep called 'nope'")
    p = run_cli("sweep", tmp_path / "missing.toml", check=False)
    assert p.returncode == 3 and "not found" in p.stderr
    p = run_cli("sweep", write_recipe(tmp_path, "[sweep]\nseed = [0]\n"), "--store", "hf://org/tickets", check=False,
                env={"HF_TOKEN": ""})
    assert p.returncode == 3 and "token" in p.stderr  # checked before any cell trains


# ---------------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_ray_backend_gives_identical_results(ray_cluster, local_sweep, tiny_data, tmp_path):
    recipe, store, res = local_sweep
    on_ray = run_sweep(recipe, store=tmp_path / "store", data_dir=tiny_data, ray="auto", progress=False)
    assert on_ray.counts["done"] == 6 and on_ray.path.name == res.path.name
    cells = [read_json(p) for p in (on_ray.path / "cells").iterdir()]
    assert all(c["pid"] != os.getpid() for c in cells)  # each cell ran in a Ray worker
    same(results(store, res.path), results(tmp_path / "store", on_ray.path))


@pytest.mark.ray
def test_ray_failing_cell_does_not_stop_the_sweep(ray_cluster, tiny_data, tmp_path):
    data = broken_data(tiny_data, tmp_path / "data")
    recipe = write_recipe(tmp_path, '[sweep]\ndataset = ["imdb", "yelp2"]\ntransfer = ["yelp2"]\n'
                                    '[transfer]\nlevels = [50]\ncontrols = []\nfresh = false\n' + TINY)
    res = run_sweep(recipe, store=tmp_path / "store", data_dir=data, ray="auto", progress=False)
    st = {(c["kind"], c["axes"]["dataset"]): c for c in res.states}
    assert st[("find", "imdb")]["status"] == "done"
    assert st[("find", "yelp2")]["status"] == "failed" and "labels must be 0 or 1" in st[("find", "yelp2")]["error"]
    # The transfer imdb -> yelp2 ran after its source (an ObjectRef dependency) and failed on the target's data.
    assert st[("transfer", "imdb")]["status"] == "failed" and "labels must be 0 or 1" in st[("transfer", "imdb")]["error"]


# ---------------------------------------------------------------------------------------------------- Hub store
@pytest.mark.hub
def test_hub_store_pushes_each_finished_find_cell(tiny_data, tmp_path):
    """--store hf://alice/tickets: the work happens in the local store; each finished find cell goes to its own repo
    alice/tickets-<cell> over real HTTP (the loopback double of tests/hub_double.py); transfers stay local."""
    from hub_double import HubDouble

    token = "hf_ticketkitSWEEP0123456789"
    recipe = write_recipe(tmp_path, '[sweep]\nseed = [0]\ntransfer = ["yelp2"]\n'
                                    '[transfer]\nlevels = [50]\ncontrols = []\nfresh = false\n' + TINY)
    home = tmp_path / "hf"
    with HubDouble(tmp_path / "double", token=token) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
               "HF_HUB_OFFLINE": "0", "HF_TOKEN": token, "TICKETKIT_STORE": str(tmp_path / "local")}
        run_cli("sweep", recipe, "--data-dir", tiny_data, "--store", "hf://alice/tickets", "--quiet", env=env)
        sd = next((tmp_path / "local").glob("sweep-*"))
        states = {c["kind"]: c for c in cell_states(sd)}
        assert states["find"]["status"] == states["transfer"]["status"] == "done"
        cell = read_json(sd / "cells" / f"{states['find']['id']}.json")
        assert cell["pushed"] == f"alice/tickets-{states['find']['id']}"
        files = hub.head_files(cell["pushed"])
        assert {"run.json", "levels.csv", "level-00/ticket.safetensors", "level-01/manifest.json"} <= set(files)
        # Rerunning pushes nothing again and trains nothing.
        before = len(hub.requests())
        run_cli("sweep", recipe, "--data-dir", tiny_data, "--store", "hf://alice/tickets", "--quiet", env=env)
        assert not [r for r in hub.requests()[before:] if r.split()[0] in ("POST", "PUT")]
