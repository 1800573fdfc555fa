"""Reliability: crash and resume bit for bit, atomic artifacts, integrity checks, concurrency, safety, fuzzing.

The figures in docs/reliability.md come from these tests: run them with TICKETKIT_RELIABILITY_REPORT=path.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, run_cli
from reliability_util import diff, find_argv, reference_run, report, snapshot

from ticketkit.errors import IntegrityError, TicketkitError

N_KILLS = 7  # >= 5 must interrupt; the last, near the end, may land after the run finished
KILL_SEED = 20240917


def _leftovers(run_dir: Path) -> list[str]:
    """Half-written things a crash can leave: temp files/dirs of atomic writes, displaced ticket dirs."""
    return [str(p) for p in run_dir.rglob(".*") if p.name.endswith((".tmp", ".old"))]


def _state(store: Path) -> str:
    """Where a run was when it was killed: complete tickets, in-level checkpoint epoch, temp files present."""
    from safetensors import safe_open

    rd = next(store.glob("find-*"), None)
    if rd is None or not (rd / "run.json").exists():
        return "starting (no run yet)"
    tickets = len(list(rd.glob("level-*/manifest.json")))
    cks = []
    for ck in sorted(rd.glob("checkpoints/*.safetensors")):
        try:
            with safe_open(str(ck), "pt") as f:
                cks.append(f"{ck.stem}@epoch{json.loads(f.metadata()['meta'])['epoch']}")
        except Exception:
            cks.append(f"{ck.stem}@?")
    return f"{tickets} ticket(s), checkpoints {cks or '-'}, {len(_leftovers(rd))} temp file(s)"


# ---------------------------------------------------------------------------------------------- crash and resume

def _event(line: str) -> str:
    """A progress event in a find log: 'level 1 epoch 2', 'level 1: training at', 'level 1: test accuracy'."""
    m = re.match(r"(?:\[[^\]]*\] )?(level \d+(?: epoch \d+|: training at|: test accuracy))", line)
    return m.group(1) if m else ""


class _Proc:
    """A `ticketkit find` subprocess whose stderr log lines are timestamped by a reader thread."""

    def __init__(self, argv, cwd):
        import threading

        self.t0 = time.monotonic()
        # stderr: the level log; stdout: the per-epoch lines (tqdm.write). Both are merged and timestamped.
        self.p = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=lambda: [self.lines.append((time.monotonic() - self.t0, x)) for x in self.p.stdout])
        self.reader.start()

    def reached(self, events: list[str], j: int):
        """Seconds since start at which this process logged reference event j or any later one (a resumed process
        skips the epochs it restored), or None."""
        later = set(events[j:])
        return next((t for t, x in list(self.lines) if _event(x) in later), None)

    def first(self, needle: str):
        return next((t for t, x in list(self.lines) if needle in x), None)

    def wait_for(self, needle: str, timeout: float):
        """Seconds since start when a line containing `needle` appeared; None if the process ended first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            t = self.first(needle)
            if t is not None or self.p.poll() is not None:
                return self.first(needle)
            time.sleep(0.01)
        return None

    def finish(self):
        self.p.wait()
        self.reader.join()
        return self.p.returncode, "".join(x for _, x in self.lines)


def test_kill_and_resume_is_bit_identical(tiny_data, tmp_path):
    """SIGKILL a real `ticketkit find` at N_KILLS seeded-random moments spread over its timeline, re-run the same
    command each time, and compare everything it produced with an uninterrupted run, bit for bit.

    Kill moments are drawn on the uninterrupted run's own timeline: one during start-up (imports, data), the rest
    uniformly over its training time (levels, epochs, checkpoint and ticket writes). Each attempt is killed that long
    after it starts training, so the points land where drawn however loaded the machine is."""
    argv = find_argv(tiny_data)
    ref_root = tmp_path / "ref"
    ref_root.mkdir()
    r = _Proc(argv, ref_root)
    rc, log = r.finish()
    assert rc == 0, log
    startup = r.first("training at")
    ref = next(ref_root.glob("artifacts/find-*"))

    # The reference's timeline of progress events; a kill point is (last event before it, seconds after that event).
    timeline = [(t, _event(x)) for t, x in r.lines if _event(x)]
    events = [e for _, e in timeline]
    rng = random.Random(KILL_SEED)
    points = sorted(rng.uniform(startup, r.lines[-1][0] * 0.97) for _ in range(N_KILLS - 1))
    plan = [("startup", None, rng.uniform(0.3, 0.9) * startup)]
    for t in points:
        j = max(i for i, (te, _) in enumerate(timeline) if te <= t)
        plan.append((f"{events[j]} +{t - timeline[j][0]:.2f}s", j, t - timeline[j][0]))
    root = tmp_path / "killed"
    root.mkdir()
    kills = []
    for phase, j, delay in plan:
        a = _Proc(argv, root)
        if j is None:
            time.sleep(delay)
        else:  # wait until this attempt reaches the event (or, resumed past it, a later one), then the offset
            while a.reached(events, j) is None and a.p.poll() is None:
                time.sleep(0.005)
            hit = a.reached(events, j)
            if hit is not None:
                time.sleep(max(0.0, delay - (time.monotonic() - a.t0 - hit)))
        alive = a.p.poll() is None
        state = _state(root / "artifacts")
        if alive:
            a.p.send_signal(signal.SIGKILL)
        rc, log = a.finish()
        kills.append({"point": phase, "after_s": round(time.monotonic() - a.t0, 2), "interrupted": alive, "state": state})
        if not alive:
            assert rc == 0, log
            break
    done = _Proc(argv, root)
    rc, log = done.finish()
    assert rc == 0, log
    run = next(root.glob("artifacts/find-*"))

    want, got = snapshot(ref), snapshot(run)
    differences = diff(want, got)
    interrupted = sum(k["interrupted"] for k in kills)
    from ticketkit.verify import verify_path
    problems, checked = verify_path(str(root / "artifacts"))
    report("kill_and_resume", {
        "kill_points": len(kills), "interrupted": interrupted,
        "interrupted_with_training_state_on_disk": sum(k["interrupted"] and ("checkpoints ['" in k["state"] or not k["state"].startswith("0 ticket"))
                                                       for k in kills),
        "runs_to_finish": len(kills) + 1, "identical": not differences, "files_compared": len(want),
        "tensors_compared": sum(len(v) for k, v in want.items() if k.endswith(".safetensors")),
        "reference_seconds": round(r.lines[-1][0], 1), "startup_seconds": round(startup, 1), "kills": kills,
        "leftovers": _leftovers(run), "verify_problems": len(problems), "tickets_verified": checked})
    assert not differences, "\n".join(differences)
    assert interrupted >= 5, kills
    assert not _leftovers(run) and not (run / "checkpoints").exists()
    assert not problems and checked == 3


def test_kill_and_resume_a_transfer_with_two_workers(tiny_data, tmp_path, tmp_path_factory):
    """SIGKILL a real `ticketkit transfer --workers 2` (the fresh search and the cells in spawned workers) at seeded
    moments, re-run the same command each time: the results equal an uninterrupted run's, its workers die with it,
    and nothing half-written or stale is left."""
    src = reference_run(tmp_path_factory, tiny_data)
    argv = lambda store: [sys.executable, "-m", "ticketkit", "transfer", str(store / src.name), "--to", "yelp2",  # noqa: E731
                          "--n-seeds", "2", "--densities", "100,64", "--controls", "random-prune", "--one-source",
                          "--workers", "2", "--data-dir", str(tiny_data), "--store", str(store), "--epochs", "2",
                          "--batch-size", "32", "--max-train", "200", "--max-test", "100", "--quiet"]
    stores = {}
    for k in ("ref", "killed"):
        stores[k] = tmp_path / k
        shutil.copytree(src, stores[k] / src.name)
    t0 = time.monotonic()
    subprocess.run(argv(stores["ref"]), check=True, capture_output=True)
    took = time.monotonic() - t0
    rng = random.Random(KILL_SEED + 1)
    kills = []
    for delay in sorted(rng.uniform(0.35, 0.9) * took for _ in range(3)):
        p = subprocess.Popen(argv(stores["killed"]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        alive = p.poll() is None
        res = next(stores["killed"].glob("transfer-*/results.json"), None)
        rows = len(json.loads(res.read_text())["rows"]) if res and res.stat().st_size else 0
        kids = [int(x) for x in subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()]
        if alive:
            p.send_signal(signal.SIGKILL)
        p.wait()
        kills.append({"after_s": round(delay, 2), "interrupted": alive, "rows_on_disk": rows, "workers": len(kids)})
        end = time.monotonic() + 10
        while time.monotonic() < end and any(Path(f"/proc/{x}").exists() and
                                             Path(f"/proc/{x}/stat").read_text().split(")")[-1].split()[0] != "Z"
                                             for x in kids if Path(f"/proc/{x}/stat").exists()):
            time.sleep(0.1)
        left = [x for x in kids if Path(f"/proc/{x}/stat").exists()
                and Path(f"/proc/{x}/stat").read_text().split(")")[-1].split()[0] != "Z"]
        for x in left:
            os.kill(x, signal.SIGKILL)
        assert not left, f"workers {left} outlived the killed transfer"
    subprocess.run(argv(stores["killed"]), check=True, capture_output=True)

    def rows(store):
        rd = next(store.glob("transfer-*"))
        r = json.loads((rd / "results.json").read_text())
        assert r["status"] == "complete"
        return rd, {(x["arm"], x["level"], x["seed"]): {k: v for k, v in x.items() if k not in ("seconds", "shared_with")}
                    for x in r["rows"]}

    (ref_rd, want), (rd, got) = rows(stores["ref"]), rows(stores["killed"])
    report("kill_and_resume_transfer_workers2", {"kills": kills, "interrupted": sum(k["interrupted"] for k in kills),
                                                 "rows": len(want), "identical": want == got,
                                                 "reference_seconds": round(took, 1)})
    assert rd.name == ref_rd.name and want == got
    assert sum(k["interrupted"] for k in kills) >= 2, kills
    assert not _leftovers(rd) and not (rd / "checkpoints").exists()
    fresh = [d for d in stores["killed"].glob("find-yelp2-*") if d.is_dir()]
    assert fresh and all(not _leftovers(d) and not (d / "checkpoints").exists() for d in fresh)


def _resume_in_process(tiny_data, store: Path) -> None:
    """The reference's own command, run in-process (saves a torch import). A resumed run keeps the command its
    run.json recorded first, so the tickets' `command` still matches the reference."""
    from ticketkit.cli import run_cli as cli

    argv = find_argv(tiny_data, store=str(store), extra=["--quiet"])[3:]
    assert cli(argv) == 0


def _copy_run(ref: Path, tmp_path: Path) -> tuple[Path, Path]:
    store = tmp_path / "artifacts"
    shutil.copytree(ref.parent, store, ignore=shutil.ignore_patterns(".locks"))
    return store, store / ref.name


def _mark_interrupted(run: Path) -> None:
    info = json.loads((run / "run.json").read_text())
    info.update(status="running", levels=[])
    (run / "run.json").write_text(json.dumps(info))
    (run / "levels.csv").unlink()


@pytest.mark.parametrize("window", ["trained-not-ticket", "trained-file-lost", "mid-overwrite", "temp-files-left"])
def test_crash_windows_resume_identically(window, tiny_data, tmp_path, tmp_path_factory):
    """The narrow windows a timed kill rarely hits, recreated exactly: each resumes to the reference, bit for bit."""
    ref = reference_run(tmp_path_factory, tiny_data)
    store, run = _copy_run(ref, tmp_path)
    _mark_interrupted(run)
    if window == "trained-not-ticket":      # killed after level 2 trained, before its ticket was complete
        shutil.rmtree(run / "level-02")
    elif window == "trained-file-lost":     # a level's trained weights lost: the level is retrained (deterministic)
        (run / "level-01" / "trained.safetensors").unlink()
    elif window == "mid-overwrite":         # killed between Ticket.save's two renames
        os.replace(run / "level-02", run / ".level-02.old")
        shutil.copytree(run / ".level-02.old", run / ".level-02.abc123.tmp")
        (run / ".level-02.abc123.tmp" / "manifest.json").unlink()
    else:                                   # temp files of atomic writes, and a stale checkpoint of a finished level
        (run / ".run.json.x1y2.tmp").write_text('{"half": ')
        (run / "level-01" / ".config.json.zz.tmp").write_text("{")
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "level-01.safetensors").write_bytes(b"stale")
    _resume_in_process(tiny_data, store)
    assert not diff(snapshot(ref), snapshot(run)), diff(snapshot(ref), snapshot(run))
    assert not _leftovers(run)


def test_sigint_checkpoints_and_says_how_to_resume(tiny_data, tmp_path, tmp_path_factory):
    """Ctrl-C: the epoch finishes, its checkpoint is saved, exit 130 with a resume hint; the same command finishes
    the run with results identical to the uninterrupted one."""
    ref = reference_run(tmp_path_factory, tiny_data)
    argv = find_argv(tiny_data)  # not --quiet: we wait for level 1 to start before pressing Ctrl-C
    p = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in p.stderr:
        lines.append(line)
        if "level 1: training at" in line:  # Ctrl-C during level 1's first epoch
            p.send_signal(signal.SIGINT)
            break
    rest = p.stderr.read()
    p.wait()
    err = "".join(lines) + rest
    assert p.returncode == 130, err
    assert "run the same command again to resume" in err
    run = next(tmp_path.glob("artifacts/find-*"))
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted"
    ck = run / "checkpoints" / "level-01.safetensors"
    assert ck.exists() and (run / "level-00" / "manifest.json").exists() and not (run / "level-01").exists()
    ls = run_cli("ls", "--store", tmp_path / "artifacts")
    assert "interrupted" in ls.stdout
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # The reference ran with --quiet, this run without: only the recorded command (and the card quoting it) differ.
    want, got = snapshot(ref, same_command=False), snapshot(run, same_command=False)
    assert not diff(want, got), diff(want, got)
    report("sigint", {"exit_code": p.returncode, "checkpoint_kept": True, "identical_after_resume": True})


# ---------------------------------------------------------------------------------------------- atomic artifacts

def test_every_write_in_the_package_goes_through_fsio():
    """Source audit: artifacts are written only by fsio (temp + fsync + rename). A direct open(..., 'w'),
    write_text/write_bytes or a library save to a final path outside fsio fails this test."""
    bad = []
    pat = re.compile(r"\bopen\([^)]*['\"][wa]b?['\"]|\.write_text\(|\.write_bytes\(|\bsave_file\(|savefig\(|to_parquet\(|to_csv\(")
    for f in sorted((REPO / "ticketkit").glob("*.py")):
        if f.name == "fsio.py":
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if pat.search(code) and "lambda p" not in code and "(p)" not in code and "str(p)" not in code:
                bad.append(f"{f.name}:{i}: {line.strip()}")
    assert not bad, "writes that bypass fsio:\n" + "\n".join(bad)


def test_ls_and_show_list_incomplete_and_corrupt_runs(tiny_data, tmp_path, tmp_path_factory):
    ref = reference_run(tmp_path_factory, tiny_data)
    store, run = _copy_run(ref, tmp_path)
    for name in ("find-imdb-cnn-interrupted", "find-imdb-cnn-corrupt"):
        shutil.copytree(run, store / name)
    _mark_interrupted(store / "find-imdb-cnn-interrupted")
    shutil.rmtree(store / "find-imdb-cnn-interrupted" / "level-02")
    (store / "find-imdb-cnn-interrupted" / "level-02").mkdir()  # a ticket dir with no manifest
    (store / "find-imdb-cnn-interrupted" / "level-02" / "config.json").write_text("{}")
    (store / "find-imdb-cnn-corrupt" / "run.json").write_text('{"status": "compl')
    out = run_cli("ls", "--store", store, "--json")
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows[run.name]["status"] == "complete"
    assert rows["find-imdb-cnn-interrupted"]["status"] == "interrupted"
    assert rows["find-imdb-cnn-interrupted"]["incomplete_tickets"] == ["level-02"]
    assert rows["find-imdb-cnn-corrupt"]["status"] == "corrupt"
    table = run_cli("ls", "--store", store).stdout
    assert "1 incomplete ticket" in table and "corrupt" in table
    shown = run_cli("show", "find-imdb-cnn-interrupted", "--store", store).stdout
    assert "status interrupted" in shown and "incomplete: level-02" in shown
    bad = run_cli("show", "find-imdb-cnn-corrupt", "--store", store, check=False)
    assert bad.returncode == 4 and "status corrupt" in bad.stdout and "Traceback" not in bad.stderr


# ---------------------------------------------------------------------------------------------- integrity

def _rewrite_ticket(d: Path, edit) -> None:
    """Change the ticket's tensors, then re-seal the manifest so only the deeper checks can catch it."""
    from ticketkit.ticket import read_tensors, write_manifest, write_tensors

    t = read_tensors(d)
    edit(t)
    write_tensors(d, t)
    write_manifest(d)


def test_verify_reports_every_problem(tiny_data, tmp_path, tmp_path_factory):
    ref = reference_run(tmp_path_factory, tiny_data)
    store, run = _copy_run(ref, tmp_path)
    raw = bytearray((run / "level-00" / "ticket.safetensors").read_bytes())
    raw[-5] ^= 0xFF  # 1: one flipped byte
    (run / "level-00" / "ticket.safetensors").write_bytes(bytes(raw))
    (run / "level-01" / "tokenizer.json").unlink()  # 2: a missing file
    (run / "level-01" / "README.md").write_text("edited")  # 3: a modified file

    def two_problems(t):  # 4 + 5 in one ticket: NaN weight and a float mask
        t["init.fc.weight"][0, 0] = float("nan")
        t["mask.fc.weight"] = t["mask.fc.weight"].float()
    _rewrite_ticket(run / "level-02", two_problems)
    (run / "level-03").mkdir()  # 6: an incomplete ticket dir
    p = run_cli("verify", run, check=False)
    problems = [line for line in p.stdout.splitlines() if line.startswith("PROBLEM")]
    assert p.returncode == 1
    expect = ["level-00/ticket.safetensors does not match its sha256", "level-01/tokenizer.json is missing",
              "level-01/README.md is", "init.fc.weight contains NaN", "mask.fc.weight has dtype float32",
              "level-03 is incomplete", "records 3 level(s)"]
    for e in expect:
        assert any(e in x for x in problems), (e, problems)
    report("verify", {"corruptions_planted": 6, "problems_reported": len(problems), "exit_code": p.returncode})


# ---------------------------------------------------------------------------------------------- concurrency

def test_two_processes_share_a_store(tiny_data, tmp_path):
    """Two processes with the same settings and one with other settings, started together on one store: one of
    the pair trains, the other waits on the lock and reuses the run; the third trains its own; all verify."""
    argv = find_argv(tiny_data, levels=1)
    other = find_argv(tiny_data, levels=1, extra=["--seed", "1"])
    procs = [subprocess.Popen(a, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a in (argv, argv, other)]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    trained = [("level 0: training" in err) for _, err in outs[:2]]
    assert sorted(trained) == [False, True], [o[1][-1500:] for o in outs[:2]]
    waiter = outs[trained.index(False)][1]
    assert "waiting for another process" in waiter or "reusing finished run" in waiter
    assert "level 0: training" in outs[2][1]
    from ticketkit.verify import verify_path
    problems, checked = verify_path(str(tmp_path / "artifacts"))
    assert not problems and checked == 4
    assert len(list((tmp_path / "artifacts").glob("find-*"))) == 2
    report("concurrency", {"processes": 3, "trained_same_run": sum(trained), "waited_or_reused": 1,
                           "runs": 2, "tickets_verified": checked, "problems": len(problems)})


# ---------------------------------------------------------------------------------------------- safety

def test_no_pickle_or_torch_load_in_the_package():
    """The code (comments and docstrings aside, which say 'never pickle') names no unpickling loader."""
    import io
    import tokenize

    hits = []
    for f in sorted((REPO / "ticketkit").rglob("*.py")):
        toks = [t for t in tokenize.generate_tokens(io.StringIO(f.read_text()).readline)
                if t.type not in (tokenize.COMMENT, tokenize.STRING)]
        code = " ".join(t.string for t in toks)
        for pat in (r"torch \. load\b", r"\bpickle\b", r"\bcPickle\b", r"\bdill\b", r"\bjoblib\b", r"\bmarshal\b",
                    r"weights_only = False", r"\bshelve\b", r"numpy \. load|np \. load"):
            hits += [f"{f.name}: {m.group(0)}" for m in re.finditer(pat, code)]
    assert not hits, hits


def test_paths_cannot_escape_the_store(tiny_data, tmp_path, tmp_path_factory):
    from ticketkit.store import Store
    from ticketkit.ticket import Ticket, write_manifest

    s = Store(tmp_path / "artifacts")
    for name in ("../x", "a/../../x", "/etc", "..", "a\\b", ""):
        with pytest.raises(TicketkitError, match="not a valid run name"):
            s.run_dir(name)
    ref = reference_run(tmp_path_factory, tiny_data)
    d = tmp_path / "t"
    shutil.copytree(ref / "level-01", d)
    man = json.loads((d / "manifest.json").read_text())
    man["files"]["../outside.txt"] = man["files"]["README.md"]
    (tmp_path / "outside.txt").write_text("x")
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(IntegrityError, match="unsafe path '../outside.txt'"):
        Ticket.load(d)
    shutil.rmtree(d)
    shutil.copytree(ref / "level-01", d)
    outside = tmp_path / "tok.json"
    shutil.move(d / "tokenizer.json", outside)
    (d / "tokenizer.json").symlink_to(outside)  # same bytes, so only the symlink check can refuse it
    write_manifest(d)
    with pytest.raises(IntegrityError, match="symlink"):
        Ticket.load(d)
    # A recipe has no path-valued settings at all: a path where a value goes is just an unknown key or a bad value.
    from ticketkit.cli import build_find_config
    (tmp_path / "r.toml").write_text('[data]\ndataset = "../../etc/passwd"\n')
    with pytest.raises(TicketkitError, match="is not a dataset name"):
        build_find_config(str(tmp_path / "r.toml"), None, None, {})


# ---------------------------------------------------------------------------------------------- property tests

def _check_recipe(text: str, tmp: Path) -> str:
    from ticketkit.cli import build_find_config

    p = tmp / "fuzz.toml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass") if isinstance(text, str) else p.write_bytes(text)
    try:
        build_find_config(str(p), None, None, {})
        return "accepted"
    except TicketkitError:
        return "refused"


FIELDS = {"seed": st.integers(-5, 10**12), "data": {"dataset": st.sampled_from(["imdb", "yelp2", "mnist", "", "../x"]),
          "max_train": st.one_of(st.none(), st.integers(-10, 10**6)), "val_fraction": st.floats(allow_nan=True),
          "vocab_size": st.integers(-1, 10**6), "max_len": st.integers(-1, 10**4)},
          "model": {"arch": st.sampled_from(["cnn", "lstm", "rnn"]), "filter_widths": st.lists(st.integers(-2, 9), max_size=4),
                    "dropout": st.floats(-1, 2), "pooling": st.text(max_size=5)},
          "train": {"epochs": st.integers(-3, 50), "lr": st.floats(allow_infinity=True, allow_nan=True),
                    "precision": st.sampled_from(["auto", "fp32", "bf16", "fp8"]), "bucketing": st.booleans()},
          "prune": {"rate": st.floats(-1, 2), "levels": st.integers(-3, 300), "target": st.one_of(st.none(), st.floats(-1, 2)),
                    "rewind": st.sampled_from(["init", "final", "epoch:2", "epoch:0", "epoch:x", "late"]),
                    "schedule": st.sampled_from(["iterative", "oneshot", "x"]),
                    "layer_rates": st.dictionaries(st.text(max_size=4), st.floats(-1, 2), max_size=2)}}
ANY = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6)),
                   lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=3)), max_leaves=8)


def _config_dicts():
    def table(spec):
        return st.fixed_dictionaries({}, optional={k: table(v) if isinstance(v, dict) else st.one_of(v, ANY)
                                                   for k, v in spec.items()} | {"bogus": ANY})
    return st.one_of(table(FIELDS), ANY)


FUZZ = {"recipe_text": [0, 0], "config_dict": [0, 0], "ticket_bytes": [0, 0], "ticket_bytes_resealed": [0, 0]}


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=200),
                      st.lists(st.sampled_from(["[train]", "[prune]", "[data]", "[model]", "[x]", "epochs = 3", "rate = 1.5",
                                                "lr = nan", "levels = -1", 'arch = "cnn"', "epochs = \"3\"", "seed = 1",
                                                "rate =", "= 3", "[[prune]]", "exclude = [1, 2]", "layer_rates = {a = 0.5}",
                                                "target = inf", "filter_widths = []", "[prune.layer_rates]", "x.y = 1"]),
                               max_size=8).map("\n".join)))
def test_fuzz_recipe_parser(text, tmp_path_factory):
    """Random TOML-ish text through the recipe loader and config validation: a valid config or a TicketkitError."""
    FUZZ["recipe_text"][_check_recipe(text, tmp_path_factory.getbasetemp()) == "refused"] += 1


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(d=_config_dicts())
def test_fuzz_config_dicts(d):
    from ticketkit.config import FindConfig

    try:
        FindConfig.from_dict(d).validate()
        FUZZ["config_dict"][0] += 1
    except TicketkitError:
        FUZZ["config_dict"][1] += 1


def _corrupt(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, pos, val in ops:
        i = pos % max(len(b), 1)
        if kind == "flip" and b:
            b[i] ^= val or 1
        elif kind == "truncate":
            del b[i:]
        elif kind == "insert":
            b[i:i] = bytes([val]) * (1 + val % 7)
        elif kind == "delete" and b:
            del b[i:i + 1 + val % 16]
    return bytes(b)


OPS = st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "delete"]), st.integers(0, 10**7), st.integers(0, 255)),
               min_size=1, max_size=4)


@pytest.fixture(scope="module")
def fuzz_ticket(tiny_data, tmp_path_factory):
    return reference_run(tmp_path_factory, tiny_data) / "level-01"


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(["ticket.safetensors", "config.json", "tokenizer.json", "README.md", "manifest.json",
                             "trained.safetensors"]),
       ops=OPS, reseal=st.booleans())
def test_fuzz_ticket_loader(name, ops, reseal, fuzz_ticket, tmp_path_factory):
    """Corrupted bytes in any ticket file: Ticket.load gives a Ticket or a TicketkitError, never another exception.
    Without resealing, every change is refused (the manifest's sha256). With the manifest re-sealed over the bad
    bytes, the deeper checks (parse, schema, shapes, dtypes, NaN, densities, tokenizer) must hold the line."""
    from ticketkit.ticket import Ticket, write_manifest

    d = tmp_path_factory.getbasetemp() / "fuzz-ticket"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(fuzz_ticket, d)
    before = (d / name).read_bytes()
    after = _corrupt(before, ops)
    (d / name).write_bytes(after)
    if reseal and name != "manifest.json":
        write_manifest(d)
    key = "ticket_bytes_resealed" if reseal and name != "manifest.json" else "ticket_bytes"
    try:
        t = Ticket.load(d)
        FUZZ[key][0] += 1
        same = after == before or (name == "manifest.json" and json.loads(after) == json.loads(before))  # re-spaced JSON
        assert same or key == "ticket_bytes_resealed", f"{name} changed but the ticket loaded"
        assert not t.problems()
    except TicketkitError:
        FUZZ[key][1] += 1


def test_zz_fuzz_report():
    """Runs after the property tests (file order): quote how many fuzzed inputs were accepted and refused."""
    if not any(sum(v) for v in FUZZ.values()):
        pytest.skip("property tests were not run in this session")
    report("fuzz", {k: {"accepted": a, "refused": r, "other_exceptions": 0} for k, (a, r) in FUZZ.items()})
