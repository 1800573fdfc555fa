"""What a new user hits first (issue 20): offline without --data-dir, the transfer source it picked, built-in recipes."""
import json
import os
import time

from conftest import run_cli


def test_offline_find_without_data_dir_fails_fast_in_one_line(tmp_path):
    """No network and HF_HUB_OFFLINE unset: one line naming --data-dir within seconds, not ~30 s of the datasets
    library's retries; nothing is left in the store."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", TICKETKIT_CACHE=str(tmp_path / "cache"))  # loopback, nothing listens
    import subprocess
    import sys

    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "ticketkit", "find", "imdb", "cnn", "--store", str(tmp_path / "s"),
                        "--quiet"], capture_output=True, text=True, env=env)
    took = time.time() - t0
    assert p.returncode != 0 and took < 15, (took, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--data-dir" in lines[0], p.stderr[-2000:]
    assert not any((tmp_path / "s").glob("find-*"))


def test_transfer_without_source_names_it_and_a_newer_subsample_before_training(tiny_config, tiny_data, tmp_path):
    """The newest run is a subsample while a full one exists: both are named, before any training starts (here the
    data dir is missing, so the command stops right after choosing)."""
    from ticketkit.find import find_ticket

    store = tmp_path / "s"
    full = tiny_config(levels=0)
    sub = tiny_config(levels=0)
    sub.data.max_train, sub.data.max_test = 100, 50
    find_ticket(full, data_dir=tiny_data, store=store, progress=False)
    find_ticket(sub, data_dir=tiny_data, store=store, progress=False)
    p = run_cli("transfer", "--to", "yelp2", "--store", store, "--data-dir", tmp_path / "missing", check=False)
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith(f"source: {sub.run_name()} (imdb, cnn, subsample 100 train / 50 test, 3 epochs, seed 0")
    assert lines[1].startswith(f"note: that is a subsampled run; the newest full-data run is {full.run_name()}")
    assert lines[-1].startswith("error: data dir") and p.returncode == 3


def test_recipes_ship_in_the_package_and_resolve_by_name(tiny_data, tmp_path):
    from ticketkit.config import FindConfig
    from ticketkit.recipebook import BUILTIN, builtin_recipes

    rows = {r["name"]: r for r in json.loads(run_cli("recipes", "--json").stdout)}
    assert {"quick", "cnn", "transfer_quick"} <= set(rows) and rows["quick"]["purpose"].startswith("Minutes on a laptop")
    assert BUILTIN.parent.name == "ticketkit" and len(builtin_recipes()) == len(list(BUILTIN.glob("*.toml")))
    assert FindConfig.from_recipe("quick").data.max_train == FindConfig.from_recipe(BUILTIN / "quick.toml").data.max_train
    # a path still works, and wins over a built-in name
    (tmp_path / "quick").write_text("[train]\nepochs = 1\n")
    assert FindConfig.from_recipe(tmp_path / "quick").train.epochs == 1
    text = run_cli("recipes").stdout
    assert any(line.startswith("quick ") and "laptop" in line for line in text.splitlines())
