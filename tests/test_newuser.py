"""What a new user hits first (issue 20): offline without --data-dir, the transfer source it picked, built-in recipes."""
import json
import os
import time

from conftest import TINY_FLAGS, run_cli


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
