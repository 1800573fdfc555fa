"""Sharing tickets on the Hub, over real HTTP on 127.0.0.1 (no internet).

Pushes go to `tests/hub_double.py` (a TEST DOUBLE of the upload endpoints: no installable server accepts uploads);
pulls go to the double and to `olah` (a real Hub mirror server) serving a git repo built from a ticket.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported, and conftest imports things early, so
everything that talks to a Hub runs in a subprocess (`run_cli` / `run_py`) with its environment set per call.
"""
from __future__ import annotations

import hashlib
import json
import re
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_FLAGS, run_cli
from hub_double import HubDouble, free_port
from olah_server import commit_all, serve

pytestmark = pytest.mark.hub

TOKEN = "hf_ticketkitTEST" + secrets.token_hex(12)  # unique, so a grep for it cannot match anything else
OUTPUTS: list[str] = []  # every stdout/stderr of this module's subprocesses, for the hygiene test


def hub_env(url: str, hf_home: Path, token: str | None = None, offline: bool = False) -> dict:
    env = {"HF_ENDPOINT": url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
           "HF_HUB_OFFLINE": "1" if offline else "0", "HF_TOKEN": token or "", "HF_HUB_DISABLE_TELEMETRY": "1"}
    return env


def cli(*args, env, check=True):
    # HF_TOKEN="" counts as no token for huggingface_hub; pass it that way rather than relying on the parent's env.
    p = run_cli(*args, env=env, check=check)
    OUTPUTS.extend([p.stdout, p.stderr])
    return p


def run_py(code: str, env: dict) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, **env),
                       timeout=300)
    OUTPUTS.extend([p.stdout, p.stderr])
    assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def one_line_error(p: subprocess.CompletedProcess) -> str:
    """A user error: non-zero exit, no traceback, exactly one `error:` line on stderr."""
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    errors = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), p.stderr
    return errors[0]


def file_digests(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def level_files(run: Path) -> dict[str, str]:
    return {k: v for k, v in file_digests(run).items() if k.startswith("level-")}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory) -> Path:
    """A finished tiny run (2 levels) in a local store."""
    store = tmp_path_factory.mktemp("store")
    cli("find", "imdb", "cnn", "--data-dir", tiny_data, "--store", store, "--rounds", "1", *TINY_FLAGS, "--epochs", "2", "--quiet",
        env={"HF_HUB_OFFLINE": "1"})
    (run,) = [d for d in store.iterdir() if d.name.startswith("find-")]
    assert (run / "levels.csv").is_file()
    return run


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubDouble(tmp_path_factory.mktemp("double"), token=TOKEN) as h:
        yield h


@pytest.fixture(scope="module")
def pushed(run_dir, hub, tmp_path_factory):
    """The run pushed to alice/imdb-run, then pulled by someone else (own HF cache, no token) into their store."""
    home_push, home_pull = tmp_path_factory.mktemp("hfhome-push"), tmp_path_factory.mktemp("hfhome-pull")
    before = len(hub.requests())
    push = cli("push", run_dir.name, "alice/imdb-run", "--store", run_dir.parent, "--json",
               env=hub_env(hub.url, home_push, TOKEN))
    store = tmp_path_factory.mktemp("pull-store")
    pull = cli("pull", "alice/imdb-run", "--store", store, "--json", "--quiet", env=hub_env(hub.url, home_pull))
    info = json.loads(push.stdout)
    return {"push": info, "pull": json.loads(pull.stdout), "path": Path(json.loads(pull.stdout)["path"]),
            "store": store, "home_push": home_push, "home_pull": home_pull, "requests": hub.requests()[before:]}


# ------------------------------------------------------------------------------------------------ push -> pull
def test_push_then_pull_is_bit_identical(run_dir, hub, pushed):
    path = pushed["path"]
    assert path == pushed["store"] / "hub" / "alice" / "imdb-run" / pushed["push"]["commit"]
    # 2 levels x (ticket, init, rewind .safetensors, config, tokenizer, card, trained.safetensors, manifest)
    assert level_files(path) == level_files(run_dir) and len(level_files(run_dir)) == 2 * 8
    for f in ("run.json", "levels.csv", "tokenizer.json"):
        assert (path / f).read_bytes() == (run_dir / f).read_bytes()
    # pulled, a run keeps each distinct tensor file once, as a local one does (init = rewind at every level here)
    assert len({(d / f).stat().st_ino for d in path.glob("level-*") for f in ("init.safetensors", "rewind.safetensors")}) == 1
    # What is on the server is exactly that, in one commit that names the run and its levels
    repo = hub.repo("alice/imdb-run")
    commit = repo["commits"][repo["refs"]["main"]]
    assert commit["parent"] and repo["commits"][commit["parent"]]["parent"] is None  # initial commit + our one
    assert run_dir.name in commit["summary"] and "levels 0-1" in commit["summary"]
    assert not [p for p in commit["files"] if p.startswith(("trained", "checkpoints")) or "/trained/" in p]
    for rel, digest in level_files(run_dir).items():
        assert commit["files"][rel]["sha256"] == digest
    assert commit["files"]["level-00/ticket.safetensors"]["lfs"]  # tensors went through the LFS batch + PUT
    assert any(r.startswith("PUT /__lfs/") for r in pushed["requests"])
    assert [r for r in pushed["requests"] if "/commit/main" in r] == ["POST /api/models/alice/imdb-run/commit/main 200"]
    # Every pulled ticket verifies, and the store lists the pull as someone else's run, not a find of ours
    ls = json.loads(cli("ls", "--store", pushed["store"], "--json", env={}).stdout)
    assert [(r["kind"], r["status"], r["source"]) for r in ls] == [
        ("pulled-run", "complete", f"hf://alice/imdb-run@{path.name}")]
    assert "0 problem(s)" in cli("verify", path, env={}).stdout


def test_run_card_metadata_round_trips(run_dir, pushed):
    from huggingface_hub import ModelCard

    card = ModelCard.load(pushed["path"] / "README.md")
    d = card.data.to_dict()
    assert d["library_name"] == "ticketkit"
    assert {"lottery-ticket", "pruning", "cnn"} <= set(d["tags"])
    assert "datasets" not in d  # measured on local parquet, not on a Hub dataset (issue 20, defect 5)
    ds = d["model-index"][0]["results"][0]["dataset"]
    data = json.loads((run_dir / "level-00" / "config.json").read_text())["data"]
    assert "local parquet" in ds["name"] and ds["args"]["test_reviews"] == data["test_size"]
    levels = json.loads((run_dir / "run.json").read_text())["levels"]
    metrics = [m for r in d["model-index"][0]["results"] for m in r["metrics"]]
    assert [m["value"] for m in metrics] == [round(lv["test_accuracy"], 4) for lv in levels]
    assert [m["type"] for m in metrics] == ["accuracy"] * len(levels)
    assert "| level |" in card.text and "ticketkit find imdb cnn" in card.text
    assert 'Ticket.from_pretrained("alice/imdb-run", subfolder="level-01")' in card.text
    for lv in levels:  # the table gives each level's measured density
        assert f"{lv['density_prunable'] * 100:.3f}" in card.text
    sub = ModelCard.load(pushed["path"] / "level-01" / "README.md").data.to_dict()
    assert sub["library_name"] == "ticketkit" and len(sub["model-index"][0]["results"][0]["metrics"]) == 1


def test_pulled_ticket_loads_offline(run_dir, pushed, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: any request would fail
    env = hub_env(dead, pushed["home_pull"], offline=True)
    show = cli("show", "hf://alice/imdb-run", "--level", "1", "--store", pushed["store"], "--json", env=env)
    assert json.loads(show.stdout)["level"] == 1
    sha = pushed["push"]["commit"]
    code = f"""
from ticketkit import Ticket
local = Ticket.load({str(run_dir / 'level-01')!r})
for rev in (None, {sha!r}):
    t = Ticket.from_pretrained("alice/imdb-run", revision=rev, subfolder="level-01")
    assert t.config == local.config
    assert all(bool((getattr(t, k)[n] == getattr(local, k)[n]).all()) for k in ("init", "mask", "rewind") for n in t.init)
print("offline ok", t.density)
"""
    assert "offline ok" in run_py(code, env).stdout
    # the network being down (not offline mode) also falls back to what was pulled before
    store2 = tmp_path / "store2"
    p = cli("pull", "alice/imdb-run", "--store", store2, "--json", "--quiet", env=hub_env(dead, pushed["home_pull"]))
    assert level_files(Path(json.loads(p.stdout)["path"])) == level_files(run_dir)


def test_ls_hub_lists_published_tickets(hub, pushed, tmp_path):
    items = json.loads(cli("ls", "--hub", "alice", "--json", env=hub_env(hub.url, tmp_path)).stdout)
    ids = [i["id"] for i in items]
    assert "alice/imdb-run" in ids
    assert {"lottery-ticket", "pruning", "cnn"} <= set(items[ids.index("alice/imdb-run")]["tags"])
    assert json.loads(cli("ls", "--hub", "nobody", "--json", env=hub_env(hub.url, tmp_path)).stdout) == []


def test_push_one_level_private_then_whole_run_replaces_it(run_dir, hub, tmp_path):
    env = hub_env(hub.url, tmp_path / "home", TOKEN)
    p = cli("push", run_dir, "alice/one-level", "--level", "80.0", "--private", "--json", "--quiet", env=env)
    # level 1 keeps 80 % of the prunable weights but more of the output layer (pruned at half the rate): 80.2x %
    assert re.search(r"level 1 \(80\.\d\d% weights remaining\)", json.loads(p.stdout)["message"])
    assert hub.repo("alice/one-level")["private"]
    got = json.loads(cli("pull", "alice/one-level", "--store", tmp_path / "s1", "--json", env=env).stdout)
    assert file_digests(Path(got["path"])) == file_digests(run_dir / "level-01")  # a ticket at the repo root
    # a private repo is not readable without the token
    err = one_line_error(cli("pull", "alice/one-level", "--store", tmp_path / "s2", check=False,
                             env=hub_env(hub.url, tmp_path / "anon")))
    assert "not found" in err and "private" in err
    # pushing the whole run to the same repo removes the root ticket in the same commit: no mixed layouts
    cli("push", run_dir, "alice/one-level", "--quiet", env=env)
    files = hub.head_files("alice/one-level")
    assert "ticket.safetensors" not in files and "manifest.json" not in files and "level-01/ticket.safetensors" in files


def test_ticket_push_to_hub_and_from_pretrained(run_dir, hub, tmp_path):
    code = f"""
from ticketkit import Ticket
t = Ticket.load({str(run_dir / 'level-01')!r})
info = t.push_to_hub("alice/api-ticket")
assert "level 1" in info.commit_message, info.commit_message
u = Ticket.from_pretrained("alice/api-ticket")
assert u.config == t.config and u.path.name == info.oid
assert all(bool((getattr(u, k)[n] == getattr(t, k)[n]).all()) for k in ("init", "mask", "rewind") for n in t.init)
print("api ok")
"""
    assert "api ok" in run_py(code, hub_env(hub.url, tmp_path, TOKEN)).stdout
    assert "ticket.safetensors" in hub.head_files("alice/api-ticket")


RUN_LAYOUT = {"run.json", "levels.csv", "tokenizer.json", "README.md", "config.json"}
TICKET_LAYOUT = {"ticket.safetensors", "init.safetensors", "rewind.safetensors", "config.json", "tokenizer.json",
                 "README.md", "trained.safetensors", "manifest.json"}


def _layout(files) -> set[str]:
    return {f for f in files if f != ".gitattributes"}


def test_cli_and_python_pushes_replace_each_other(run_dir, hub, tmp_path):
    """Issue 20, defect 2: a CLI push of a run, then a Python push of one ticket to the same repo (and the reverse),
    leaves only the latest layout, and a later pull returns what was pushed last."""
    env = hub_env(hub.url, tmp_path / "home", TOKEN)
    py_push = f"""
from ticketkit import Ticket
info = Ticket.load({str(run_dir / 'level-01')!r}).push_to_hub("alice/mixed-{{n}}")
print(info.oid)
"""
    # CLI run, then Python ticket
    cli("push", run_dir, "alice/mixed-1", "--quiet", env=env)
    assert any(f.startswith("level-01/") for f in hub.head_files("alice/mixed-1"))
    run_py(py_push.replace("{n}", "1"), env)
    assert _layout(hub.head_files("alice/mixed-1")) == TICKET_LAYOUT
    got = json.loads(cli("pull", "alice/mixed-1", "--store", tmp_path / "s1", "--json", env=env).stdout)
    assert file_digests(Path(got["path"])) == file_digests(run_dir / "level-01")
    # Python ticket, then CLI run
    run_py(py_push.replace("{n}", "2"), env)
    cli("push", run_dir, "alice/mixed-2", "--quiet", env=env)
    files = _layout(hub.head_files("alice/mixed-2"))
    assert files == RUN_LAYOUT | {f"{d.name}/{f}" for d in run_dir.glob("level-*") for f in TICKET_LAYOUT}
    got = json.loads(cli("pull", "alice/mixed-2", "--store", tmp_path / "s2", "--json", env=env).stdout)
    assert level_files(Path(got["path"])) == level_files(run_dir) and not (Path(got["path"]) / "ticket.safetensors").exists()
    # the run's root config.json (the Hub counts downloads through it) says what the repo is and where each level is
    root = json.loads((Path(got["path"]) / "config.json").read_text())
    assert root["ticketkit"]["kind"] == "run" and [lv["subfolder"] for lv in root["levels"]] == ["level-00", "level-01"]


def test_python_push_and_pull(run_dir, hub, tmp_path):
    """`ticketkit.push` / `ticketkit.pull` are what `ticketkit push` / `pull` call (issue 20: the API exports them)."""
    code = f"""
import ticketkit
info = ticketkit.push({str(run_dir)!r}, "alice/py-run")
path = ticketkit.pull("alice/py-run", store={str(tmp_path / 'store')!r})
assert path.name == info.oid, (path, info.oid)
print(path)
"""
    path = Path(run_py(code, hub_env(hub.url, tmp_path / "home", TOKEN)).stdout.strip().splitlines()[-1])
    assert level_files(path) == level_files(run_dir)


# ------------------------------------------------------------------------------------------------ tokens
def test_push_without_token_fails_before_any_request(run_dir, hub, tmp_path):
    before = hub.requests()
    err = one_line_error(cli("push", run_dir, "alice/no-token", check=False, env=hub_env(hub.url, tmp_path / "empty")))
    assert "hf auth login" in err and "HF_TOKEN" in err
    assert hub.requests() == before and hub.repo("alice/no-token") is None
    err = one_line_error(cli("push", run_dir, "alice/no-token", check=False,
                             env=hub_env(hub.url, tmp_path / "empty", "hf_wrong_token")))
    assert "401" in err and "HF_TOKEN" in err and hub.repo("alice/no-token") is None


# ------------------------------------------------------------------------------------------------ errors
def test_pull_errors_are_one_line(run_dir, hub, pushed, tmp_path):
    hub.create("alice/just-a-model")
    hub.commit("alice/just-a-model", "a model", "", {"README.md": b"---\nlicense: mit\n---\n# hi\n", "config.json": b"{}"}, [])
    env = hub_env(hub.url, tmp_path / "home")
    dead = hub_env(f"http://127.0.0.1:{free_port()}", tmp_path / "home")
    cases = [
        (["alice/nope"], env, "not found"),
        (["alice/imdb-run@no-such-branch"], env, "has no revision 'no-such-branch'"),
        (["alice/just-a-model"], env, "is not a ticketkit ticket repo"),
        (["alice/imdb-run"], dead, "cannot reach the Hub"),
        (["alice/imdb-run"], {**env, "HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE=1"),
        (["not a repo"], env, "is not a Hub repo"),
    ]
    for args, e, want in cases:
        err = one_line_error(cli("pull", *args, "--store", tmp_path / "store", check=False, env=e))
        assert want in err, err
    assert not (tmp_path / "store" / "hub").exists() or not any((tmp_path / "store" / "hub").rglob("*.safetensors"))
    p = cli("--debug", "pull", "alice/nope", "--store", tmp_path / "store", check=False, env=env)
    assert p.returncode != 0 and "Traceback" in p.stderr  # --debug shows it


def test_pull_refuses_a_corrupt_repo(run_dir, hub, tmp_path):
    src = run_dir / "level-01"
    files = {f: (src / f).read_bytes() for f in ("config.json", "tokenizer.json", "README.md", "manifest.json",
                                                 "init.safetensors", "rewind.safetensors")}
    blob = bytearray((src / "ticket.safetensors").read_bytes())
    blob[-7] ^= 0x01  # one flipped bit in the tensor data; the manifest is the original
    sha = hub.put_blob(bytes(blob))
    hub.create("alice/corrupt")
    hub.commit("alice/corrupt", "tampered", "", files, [], lfs={"ticket.safetensors": (sha, len(blob))})
    store = tmp_path / "store"
    p = cli("pull", "alice/corrupt", "--store", store, "--quiet", check=False, env=hub_env(hub.url, tmp_path / "h"))
    err = one_line_error(p)
    assert p.returncode == 4 and "refused alice/corrupt" in err and "sha256" in err
    assert [x for x in (store / "hub").rglob("*") if x.is_file()] == []  # nothing half-pulled stays visible
    env = hub_env(hub.url, tmp_path / "h")
    code = """
from ticketkit import Ticket, IntegrityError
try:
    Ticket.from_pretrained("alice/corrupt")
except IntegrityError as e:
    print("refused:", e)
"""
    assert "refused: refused alice/corrupt" in run_py(code, env).stdout


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_ticket_is_refused(run_dir, tmp_path, damage):
    from ticketkit import IntegrityError, Ticket

    t = tmp_path / "ticket"
    shutil.copytree(run_dir / "level-01", t)
    f = t / "ticket.safetensors"
    data = bytearray(f.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x80
    else:
        data = data[: len(data) - 100]
    f.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="modified or corrupted" if damage == "flip" else "truncated"):
        Ticket.load(t)
    err = one_line_error(cli("show", t, check=False, env={}))
    assert "ticket.safetensors" in err


# ------------------------------------------------------------------------------------------------ olah
@pytest.fixture(scope="module")
def olah(run_dir, tmp_path_factory):
    """olah in offline mirror mode serving bob/imdb-run, a git repo holding the run's tickets, and bob/not-a-ticket."""
    if shutil.which("olah-cli") is None or shutil.which("git") is None:
        pytest.skip("olah-cli (pip install olah) and git are needed for the pull tests against a real mirror")
    root = tmp_path_factory.mktemp("olah")
    repo = root / "mirrors" / "models" / "bob" / "imdb-run"
    repo.mkdir(parents=True)
    for f in ("run.json", "levels.csv", "tokenizer.json"):
        shutil.copy(run_dir / f, repo / f)
    for d in sorted(run_dir.glob("level-*")):
        shutil.copytree(d, repo / d.name)
    sha = commit_all(repo, "a ticketkit run")
    other = root / "mirrors" / "models" / "bob" / "not-a-ticket"
    other.mkdir(parents=True)
    (other / "README.md").write_text("# just a model\n")
    (other / "config.json").write_text("{}\n")
    commit_all(other, "x")
    with serve(root) as url:
        yield {"url": url, "sha": sha, "root": root}


def test_olah_pull_load_transfer(olah, run_dir, tiny_data, tmp_path):
    """The researcher's two commands: `ticketkit pull` then `ticketkit transfer hf://...` (offline)."""
    home, store = tmp_path / "home", tmp_path / "store"
    env = hub_env(olah["url"], home)
    got = json.loads(cli("pull", "bob/imdb-run", "--store", store, "--json", "--quiet", env=env).stdout)
    path = Path(got["path"])
    assert path == store / "hub" / "bob" / "imdb-run" / olah["sha"]  # named by the resolved git commit
    assert level_files(path) == level_files(run_dir)
    assert json.loads(cli("pull", f"bob/imdb-run@{olah['sha']}", "--store", store, "--json", env=env).stdout)["path"] == str(path)
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    assert json.loads(cli("show", "hf://bob/imdb-run", "--level", "0", "--store", store, "--json", env=offline).stdout)["level"] == 0
    p = cli("transfer", "hf://bob/imdb-run", "--to", "yelp2", "--data-dir", tiny_data, "--store", store,
            "--densities", "100", "--n-seeds", "1", "--no-fresh", "--controls", "none", "--epochs", "1", "--batch-size", "32",
            "--quiet", "--json", env=offline)
    res = json.loads(p.stdout)
    report = Path(res["run"]) / "report.md"
    assert report.exists() and "yelp2" in report.read_text()
    # one level of a pulled run, by hf:// and --level (resolved by hub.resolve_ref, as `show` does)
    p = cli("transfer", "hf://bob/imdb-run", "--level", "1", "--to", "yelp2", "--data-dir", tiny_data, "--store", store,
            "--densities", "100", "--n-seeds", "1", "--no-fresh", "--controls", "none", "--epochs", "1", "--batch-size", "32",
            "--quiet", "--json", env=offline)
    one = json.loads(p.stdout)
    src = json.loads((Path(one["run"]) / "results.json").read_text())["source"]
    assert src["kind"] == "ticket" and src["path"].endswith("level-01")


def test_olah_errors_are_one_line(olah, tmp_path):
    env = hub_env(olah["url"], tmp_path / "home")
    for spec, want in (("bob/missing", "not found"), ("bob/not-a-ticket", "is not a ticketkit ticket repo")):
        err = one_line_error(cli("pull", spec, "--store", tmp_path / "store", check=False, env=env))
        assert want in err, err


# ------------------------------------------------------------------------------------------------ hygiene (last)
def test_token_is_never_written(run_dir, hub, pushed, tmp_path):
    """After the pushes of this module, no file anywhere and no output contains the token."""
    from ticketkit.hub import _check_no_token

    roots = [hub.root, run_dir.parent, pushed["store"], pushed["home_push"], pushed["home_pull"], tmp_path.parent]
    needle = TOKEN.encode()
    checked = 0
    for root in roots:
        for p in Path(root).rglob("*"):
            if p.is_file() and not p.is_symlink():
                checked += 1
                assert needle not in p.read_bytes(), f"{p} contains the token"
    assert checked > 50
    assert hub.requests() and all(TOKEN not in o for o in OUTPUTS) and len(OUTPUTS) > 10
    # and a ticket that somehow holds it is refused before upload
    with pytest.raises(Exception, match="contains your Hugging Face token"):
        _check_no_token({"run.json": b'{"command": "ticketkit find --x ' + needle + b'"}'}, TOKEN)
