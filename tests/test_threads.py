"""Issue 20: `--threads` / TICKETKIT_THREADS. The budget defaults to the cores this process may use, caps the
workers and every thread pool, and never changes a result: training stays at one thread per process."""
import hashlib
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, TINY_FLAGS, run_cli
from ticketkit import threads


def in_child(code: str, env=None) -> str:
    """Run `code` in a fresh interpreter (a changed CPU affinity must not leak into this test process)."""
    e = {k: v for k, v in os.environ.items() if k != threads.ENV and k not in threads.POOL_ENV}
    e.update(env or {}, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, check=True).stdout.strip()


def test_the_default_is_the_cores_this_process_may_use():
    assert threads.available() == len(os.sched_getaffinity(0))
    out = in_child("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
                   "from ticketkit import threads as t; print(t.available(), t.budget(), t.cap_workers(4), t.apply(None), "
                   "os.environ['RAYON_NUM_THREADS'])")
    assert out == "1 1 1 1 1"  # pinned to one core: one worker, one thread per pool, whatever --workers says


def test_never_more_than_the_cores_and_a_users_pool_setting_wins():
    n = threads.available()
    out = in_child("from ticketkit import threads as t; import os; print(t.budget(), t.cap_workers(10 ** 6), "
                   "os.environ.get('OMP_NUM_THREADS'), t.apply(None), os.environ['OMP_NUM_THREADS'])",
                   env={threads.ENV: str(10 ** 6), "OMP_NUM_THREADS": "1"})
    assert out == f"{n} {n} 1 {n} 1"


def test_bad_threads_is_a_usage_error():
    p = run_cli("find", "--threads", "0", "--help", check=False)
    assert p.returncode == 2 and "--threads" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def _digests(run_dir):
    return {p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted([*run_dir.glob("level-*/ticket.safetensors"), *run_dir.glob("level-*/trained.safetensors")])}


@pytest.mark.skipif(threads.available() < 2, reason="needs 2 cores to compare 1 thread with 2")
def test_the_thread_budget_changes_no_bit_and_no_run_name(tmp_path, tiny_data):
    runs = {}
    for n in (1, 2):
        out = run_cli("find", "imdb", "cnn", "--rounds", "1", *TINY_FLAGS, "--epochs", "2", "--data-dir", tiny_data,
                      "--store", tmp_path / f"s{n}", "--threads", n, "--json", "--quiet").stdout
        info = json.loads(out)
        runs[n] = (info["name"], _digests(tmp_path / f"s{n}" / info["name"]),
                   [lv["test_accuracy"] for lv in info["levels"]])
    assert runs[1] == runs[2] and len(runs[1][1]) == 4  # 2 tickets, 2 trained states
