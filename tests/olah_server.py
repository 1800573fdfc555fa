"""olah (PyPI), a real Hub mirror server, in offline mirror mode over local git repos: what pull tests talk to.

Each test module lays out ROOT/mirrors/{models,datasets}/ORG/NAME as git repos, then serves them with `serve`.
"""
from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

from hub_double import free_port


def git(cwd: Path, *args) -> str:
    return subprocess.run(["git", "-c", "user.name=ticketkit", "-c", "user.email=t@example.com", *args], cwd=cwd,
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """Make REPO a git repo on main holding everything in it; returns the commit."""
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def _wait_port(port: int, proc: subprocess.Popen, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"olah exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"olah did not listen on {port} within {seconds}s")


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ROOT/mirrors with olah on a free loopback port; yields its URL (HF_ENDPOINT)."""
    port = free_port()
    (root / "olah.toml").write_text(f"""
[basic]
host = "127.0.0.1"
port = {port}
repos-path = "{root / 'cache'}"
mirrors-path = ["{root / 'mirrors'}"]
mirror-netloc = "127.0.0.1:{port}"
mirror-lfs-netloc = "127.0.0.1:{port}"
[accessibility]
offline = true
""")
    log = open(root / "olah.log", "w")
    proc = subprocess.Popen(["olah-cli", "-c", str(root / "olah.toml")], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
