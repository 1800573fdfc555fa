"""Hostile input that must neither hang, leak, nor crash later (issue 19, items 7-13): FIFOs in ticket dirs, verify
checking all that show/load/build_model rely on, nothing to verify, orphaned pool workers, malformed Hub answers,
and the small ones. Each case runs the real CLI where a user would."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reliability_util import reference_run

from ticketkit.errors import TicketkitError

CLI_TIMEOUT = 60  # far above a CLI start (a few seconds): only a hang reaches it


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ticketkit", *map(str, args)], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, **kw)


def _one_line_error(p) -> str:
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode != 0 and len(lines) == 1 and lines[0].startswith("error:"), (p.returncode, p.stderr)
    return lines[0]


@pytest.fixture
def ticket(tiny_data, tmp_path, tmp_path_factory) -> Path:
    """A copy of the reference run's level 1 ticket, free to break."""
    ref = reference_run(tmp_path_factory, tiny_data)
    d = tmp_path / "ticket"
    shutil.copytree(ref / "level-01", d)
    return d


def _reseal(d: Path) -> None:
    from ticketkit.ticket import write_manifest

    write_manifest(d)


def _edit_config(d: Path, edit) -> None:
    c = json.loads((d / "config.json").read_text())
    edit(c)
    (d / "config.json").write_text(json.dumps(c))
    _reseal(d)


# ------------------------------------------------------------------------------------------ 7. FIFOs

@pytest.mark.parametrize("name", ["tokenizer.json", "config.json", "ticket.safetensors", "manifest.json"])
def test_a_fifo_in_a_ticket_does_not_hang_verify_or_show(name, ticket):
    (ticket / name).unlink()
    os.mkfifo(ticket / name)
    p = _cli("verify", ticket)
    assert p.returncode != 0 and "not a regular file" in p.stdout + p.stderr, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    line = _one_line_error(_cli("show", ticket))
    assert "not a regular file" in line


# ------------------------------------------------------------------------------------------ 9. verify covers show

@pytest.mark.parametrize("damage", ["metrics-missing", "metrics-list", "layer-density-string", "lstm-over-cnn",
                                    "tokenizer-larger-than-embedding"])
def test_verify_catches_what_show_and_build_model_rely_on(damage, ticket):
    if damage == "metrics-missing":
        _edit_config(ticket, lambda c: c.pop("metrics"))
    elif damage == "metrics-list":
        _edit_config(ticket, lambda c: c.__setitem__("metrics", [1, 2]))
    elif damage == "layer-density-string":
        _edit_config(ticket, lambda c: c["density"]["layers"].__setitem__(next(iter(c["density"]["layers"])), "x"))
    elif damage == "lstm-over-cnn":
        _edit_config(ticket, lambda c: c["find"]["model"].__setitem__("arch", "lstm"))
    else:
        from tokenizers import Tokenizer

        tok = json.loads((ticket / "tokenizer.json").read_text())
        vocab = tok["model"]["vocab"]
        for i in range(50):
            vocab[f"extraword{i}"] = len(vocab)
        (ticket / "tokenizer.json").write_text(json.dumps(tok))
        Tokenizer.from_file(str(ticket / "tokenizer.json"))  # still a valid tokenizer
        _edit_config(ticket, lambda c: (c.__setitem__("vocab_size", len(vocab)),
                                        c["data"].pop("tokenizer_sha256", None)))
    p = _cli("verify", ticket)
    assert p.returncode == 1 and "PROBLEM" in p.stdout, (damage, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    # and whatever verify passes, show and build_model take
    from ticketkit.ticket import Ticket

    with pytest.raises(TicketkitError):
        Ticket.load(ticket).build_model()


def test_a_symlinked_ticket_dir_and_an_escaping_subfolder_are_refused(ticket, tmp_path):
    from ticketkit.ticket import Ticket

    link = tmp_path / "link"
    link.symlink_to(ticket, target_is_directory=True)
    p = _cli("verify", link)
    assert p.returncode != 0 and "symlink" in p.stdout + p.stderr
    with pytest.raises(TicketkitError, match="symlink"):
        Ticket.load(link)
    (tmp_path / "run").mkdir()
    with pytest.raises(TicketkitError, match="subfolder"):
        Ticket.from_pretrained(str(tmp_path / "run"), subfolder="../ticket")


# ------------------------------------------------------------------------------------------ 10. nothing to verify

def test_nothing_to_verify_is_an_error(tiny_data, tmp_path, tmp_path_factory):
    ref = reference_run(tmp_path_factory, tiny_data)
    _one_line_error(_cli("verify", "/etc/passwd"))
    (tmp_path / "empty").mkdir()
    _one_line_error(_cli("verify", tmp_path / "empty"))
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    for d in run.glob("level-*"):
        shutil.rmtree(d)
    p = _cli("verify", run)
    assert p.returncode != 0 and "Traceback" not in p.stderr, (p.stdout, p.stderr)


def test_verify_of_a_running_run_says_it_is_running(tiny_data, tmp_path, tmp_path_factory):
    from ticketkit.store import Store

    ref = reference_run(tmp_path_factory, tiny_data)
    store = tmp_path / "store"
    shutil.copytree(ref, store / ref.name)
    info = json.loads((store / ref.name / "run.json").read_text())
    (store / ref.name / "run.json").write_text(json.dumps(dict(info, status="running")))
    with Store(store).lock(ref.name):
        p = _cli("verify", store / ref.name)
    out = p.stdout + p.stderr
    assert "still running" in out and "run the same command again" not in out, out


# ------------------------------------------------------------------------------------------ 8. orphaned workers

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its new parent) is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_killing_the_sweep_driver_ends_its_pool_workers(tiny_data, tmp_path):
    import signal
    import time

    from test_sweep import TINY, write_recipe

    # two cells that train for minutes: many levels, no early stopping
    slow = TINY.replace("epochs = 2", "epochs = 30\npatience = 30").replace('schedule = "oneshot"\ntarget = 0.5',
                                                                          "levels = 20")
    recipe = write_recipe(tmp_path, "[sweep]\nseed = [0, 1]\n" + slow)
    store = tmp_path / "store"
    p = subprocess.Popen([sys.executable, "-m", "ticketkit", "sweep", str(recipe), "--data-dir", str(tiny_data),
                          "--store", str(store), "--workers", "2", "--quiet"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pids: set[int] = set()
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(pids) < 2:
            for f in store.glob("sweep-*/cells/*.json"):
                try:
                    st = json.loads(f.read_text())
                except (OSError, ValueError):
                    continue
                if st.get("status") == "running":
                    pids.add(int(st["pid"]))
            assert p.poll() is None, p.stderr.read().decode()
            time.sleep(0.2)
        assert len(pids) == 2 and all(_alive(x) for x in pids)
        p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = time.time() + 10  # the watchdog polls every 0.5 s
        while time.time() < deadline and any(_alive(x) for x in pids):
            time.sleep(0.1)
        left = [x for x in pids if _alive(x)]
    finally:
        for x in pids:
            if _alive(x):
                os.kill(x, signal.SIGKILL)
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not left, f"workers {left} outlived their killed driver"


# ------------------------------------------------------------------------------------------ 11. malformed Hub answers

class _Malformed:
    """A loopback 'Hub' that gives one fixed answer to every request: status and JSON body."""

    def __init__(self, status: int, body):
        import http.server
        import threading

        outer = self
        self.status, self.body = status, json.dumps(body).encode()

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(outer.body)

            do_GET = do_POST = do_PUT = do_HEAD = _answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("op,status,body,names", [
    ("push", 409, {"error": "conflict"}, "url"),
    ("push", 200, {}, "url"),
    ("pull", 200, {}, "id"),
    ("pull", 200, [], "AttributeError"),
    ("pull", 200, {"id": "alice/x", "sha": "0" * 40, "siblings": "abc"}, "TypeError"),
])
def test_malformed_hub_answers_are_one_line(op, status, body, names, tiny_data, tmp_path, tmp_path_factory):
    ref = reference_run(tmp_path_factory, tiny_data)
    hub = _Malformed(status, body)
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_TOKEN="hf_" + "x" * 30,
               HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1")
    try:
        args = ("push", ref, "alice/x") if op == "push" else ("pull", "alice/x", "--store", tmp_path / "s")
        p = _cli(*args, env=env)
    finally:
        hub.close()
    line = _one_line_error(p)
    assert "malformed" in line and names in line and f"-> {status}" in line, line


# ------------------------------------------------------------------------------------------ 13. the small ones

def test_a_store_that_is_a_file_is_one_line(tmp_path):
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    for args in (("ls", "--store", f), ("verify", "--store", f)):
        line = _one_line_error(_cli(*args))
        assert str(f) in line and "--store" in line, line
    for cmd in ("ls", "verify"):
        line = _one_line_error(_cli(cmd, env=dict(os.environ, TICKETKIT_STORE=str(f))))
        assert str(f) in line, line


def test_error_text_is_cut_at_a_word_not_mid_word():
    from ticketkit.errors import shorten

    text = "HeaderTooLarge while deserializing " + "averyveryverylongword " * 20
    out = shorten(text, 100)
    assert len(out) <= 100 and out.endswith(" ...")
    assert all(w in text.split() for w in out[:-4].split())
