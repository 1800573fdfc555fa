"""Sharing tickets on the Hugging Face Hub: push, pull, list. Every request goes through `huggingface_hub`.

    push("find-imdb-cnn-1a2b", "user/imdb-cnn-ticket")     a whole run: level-00/ ... level-NN/ + an index card
    push(run, "user/repo", level="16.9")                   one level, as a ticket at the repo root
    pull("user/imdb-cnn-ticket@<rev>")                     -> store/hub/user/imdb-cnn-ticket/<commit>/ (verified)

A repo is a ticket directory (ticket.safetensors, config.json, tokenizer.json, README.md, manifest.json), or a run:
one such directory per level plus run.json, levels.csv, tokenizer.json and a README.md that indexes the levels.
Pulls go through the Hugging Face cache (so `Ticket.from_pretrained` works offline afterwards) and are then copied,
as plain files, into the store, where they are verified before they are visible.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from .errors import IntegrityError, TicketkitError
from .fsio import fsync_dir, public_mode, read_json, write_with
from .store import LEVEL_RE, Store, level_dirs
from .ticket import TICKET_FILES, Ticket

TICKET_DIR_FILES = (*TICKET_FILES, "manifest.json")
RUN_FILES = ("README.md", "run.json", "levels.csv", "tokenizer.json")
# Files a push owns: on a later push to the same repo, stale ones are deleted in the same commit, so a repo never
# mixes an old single ticket with a new run's levels. Anything else a user added to the repo is left alone.
OWNED = ("level-*", *TICKET_DIR_FILES, *RUN_FILES)
ALLOW = [*TICKET_DIR_FILES, *RUN_FILES, *(f"level-*/{f}" for f in TICKET_DIR_FILES)]  # what a pull downloads
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
LOGIN_HINT = "run `huggingface-cli login` (or `hf auth login`) or set HF_TOKEN"


# ---------------------------------------------------------------------------------------------------- errors
def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None = None):
    """Turn huggingface_hub's exceptions into one-line TicketkitErrors that say what to do."""
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)
    from huggingface_hub.errors import HTTPError as TransportError  # the HTTP client's base error (connect, timeout)

    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        yield
    except TicketkitError:
        raise
    except RevisionNotFoundError:
        raise TicketkitError(f"{repo_id} has no revision {revision!r}: give an existing branch, tag or commit "
                             f"(or drop @{revision} for main)") from None
    except GatedRepoError:
        raise TicketkitError(f"{repo_id} is gated: accept its terms on the Hub, then {LOGIN_HINT}") from None
    except RepositoryNotFoundError:
        raise TicketkitError(f"repository {where} not found on {_endpoint()} (or it is private and you may not read "
                             f"it{', or has no such revision' if revision else ''}): check the id, or {LOGIN_HINT}") from None
    except RemoteEntryNotFoundError as e:
        raise TicketkitError(f"{where} lacks a file ticketkit needs ({_first_line(e)}): it is not a ticketkit ticket "
                             f"repo") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        if _offline():
            raise TicketkitError(f"{where} is not in the local cache and HF_HUB_OFFLINE=1 forbids downloading it: "
                                 f"unset HF_HUB_OFFLINE and pull it once") from None
        raise TicketkitError(f"cannot reach the Hub at {_endpoint()} to fetch {where}, and it is not cached: check "
                             f"your network (or HF_ENDPOINT)") from None
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        msg = (e.server_message or "").strip().splitlines()[0][:160] if e.server_message else ""
        if status == 401:
            raise TicketkitError(f"the Hub at {_endpoint()} refused your credentials for {repo_id} (401"
                                 f"{': ' + msg if msg else ''}): {LOGIN_HINT} with a valid token") from None
        if status == 403:
            raise TicketkitError(f"your token may not do this on {repo_id} (403): use a token with write access to "
                                 f"its namespace ({LOGIN_HINT})") from None
        if status is not None and status >= 500:
            raise TicketkitError(f"the Hub at {_endpoint()} failed ({status}) on {where}: try again later") from None
        raise TicketkitError(f"the Hub at {_endpoint()} refused the request for {where} ({status}"
                             f"{': ' + msg if msg else ''})") from None
    except HFValidationError:
        raise TicketkitError(f"{repo_id!r} is not a valid Hub repo id: use user/repo[@revision]") from None
    except ValueError as e:  # huggingface_hub's own checks, e.g. "Invalid metadata in README.md"
        raise TicketkitError(f"the Hub refused {where}: {' '.join(str(e).split())[:200]}") from None
    except (TransportError, ConnectionError, TimeoutError) as e:
        raise TicketkitError(f"cannot reach the Hub at {_endpoint()} ({type(e).__name__}): check your network or "
                             f"HF_ENDPOINT; already-pulled tickets still load with HF_HUB_OFFLINE=1") from None


def _first_line(e: BaseException) -> str:
    lines = [x for x in str(e).splitlines() if x.strip()]
    return lines[-1][:160] if lines else type(e).__name__


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'hf://user/repo@rev' or 'user/repo' -> ('user/repo', 'rev' | None)."""
    from huggingface_hub.utils import validate_repo_id

    s = spec[5:] if spec.startswith("hf://") else spec
    repo_id, _, rev = s.partition("@")
    repo_id = repo_id.strip("/")
    if repo_id.count("/") != 1 or any(not p for p in repo_id.split("/")):
        raise TicketkitError(f"{spec!r} is not a Hub repo: use user/repo[@revision]")
    with hub_errors(repo_id, rev or None):
        validate_repo_id(repo_id)
    return repo_id, rev or None


def require_token(token: str | None = None) -> str:
    """The token from the argument, HF_TOKEN or `huggingface-cli login`; checked before anything is sent."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise TicketkitError(f"pushing needs a Hugging Face token with write access: {LOGIN_HINT}, then push again")
    return token


# ---------------------------------------------------------------------------------------------------- push
def _is_ticket(p: Path) -> bool:
    return (p / "ticket.safetensors").exists() or (p / "manifest.json").exists()


def plan(ref: str, level: str | None = None, store=None, repo_id: str | None = None) -> tuple[dict[str, Path | bytes], str, str]:
    """What a push would upload: {path in repo: local file or bytes}, the commit message, and what it is.
    Only verified tickets go up; training leftovers (trained/, checkpoints/) never do."""
    from .card import level_row, run_card

    st = store if isinstance(store, Store) else Store(store)
    ticket_dir = st.resolve(ref, level)
    run_dir = ticket_dir.parent
    whole_run = level is None and LEVEL_RE.match(ticket_dir.name) and not _is_ticket(Path(ref)) \
        and (run_dir / "run.json").exists()
    files: dict[str, Path | bytes] = {}
    if not whole_run:
        t = Ticket.load(ticket_dir, verify=True)
        for f in TICKET_DIR_FILES:
            files[f] = ticket_dir / f
        c = t.config
        what = f"run {c.get('run')} level {c.get('level')} ({c['density']['prunable'] * 100:.2f}% weights remaining)"
        return files, f"ticketkit: {what}", what
    info = read_json(run_dir / "run.json")
    if info.get("status") != "complete":
        raise TicketkitError(f"{run_dir} is not finished (status {info.get('status')!r}): finish it with the same "
                             f"`ticketkit find` command, or push one level with --level")
    cfgs = []
    for d in level_dirs(run_dir):
        t = Ticket.load(d, verify=True)
        cfgs.append(t.config)
        for f in TICKET_DIR_FILES:
            files[f"{d.name}/{f}"] = d / f
    for f in ("run.json", "levels.csv", "tokenizer.json"):
        if (run_dir / f).exists():
            files[f] = run_dir / f
    rows = [level_row(c) for c in cfgs]
    levels = f"levels {rows[0]['level']}-{rows[-1]['level']}" if len(rows) > 1 else f"level {rows[0]['level']}"
    what = (f"run {run_dir.name}, {levels} ({rows[0]['density_prunable'] * 100:.2f}% -> "
            f"{rows[-1]['density_prunable'] * 100:.2f}% weights remaining)")
    files["README.md"] = run_card(info, cfgs, [d.name for d in level_dirs(run_dir)], repo_id).encode()
    return files, f"ticketkit: {what}", what


def _check_no_token(files: dict[str, Path | bytes], token: str) -> None:
    """A last guard: refuse to publish a file that contains the token (e.g. pasted into a command line)."""
    needle = token.encode()
    for path, src in files.items():
        if path.endswith(".safetensors"):
            continue  # binary tensors; their JSON header holds only the format and density
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        if needle in data:
            raise TicketkitError(f"{path} contains your Hugging Face token: remove it from the ticket before pushing")


def push(ref: str, repo_id: str, private: bool = False, level: str | None = None, store=None,
         token: str | None = None):
    """Publish a ticket, one level of a run, or a whole run in ONE commit. Returns huggingface_hub's CommitInfo
    (a str: the commit url; `.oid` is the commit)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.utils import filter_repo_objects

    repo_id, rev = parse_spec(repo_id)
    if rev:
        raise TicketkitError(f"push goes to the main branch: drop @{rev} from the repo id")
    token = require_token(token)  # before anything is read or sent
    files, message, what = plan(ref, level, store, repo_id)
    _check_no_token(files, token)
    api = HfApi(token=token)
    with hub_errors(repo_id):
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        existing = api.list_repo_files(repo_id)
        stale = [p for p in filter_repo_objects(existing, allow_patterns=list(OWNED))
                 if p not in files and p != ".gitattributes"]
        ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=src if isinstance(src, bytes) else str(src))
               for p, src in sorted(files.items())]
        ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
        return api.create_commit(repo_id, ops, commit_message=message,
                                 commit_description=f"Pushed with ticketkit: {what}.")


# ---------------------------------------------------------------------------------------------------- pull
def ticket_files(paths: list[str]) -> list[str]:
    """The repo files a pull needs, or [] if the repo does not hold a ticket (at its root or in level-NN/)."""
    keep = [p for p in paths if p in TICKET_DIR_FILES or p in RUN_FILES
            or (p.count("/") == 1 and LEVEL_RE.match(p.split("/")[0]) and p.split("/")[1] in TICKET_DIR_FILES)]
    tickets = {p.rpartition("/")[0] for p in keep if p.endswith("ticket.safetensors")}
    manifests = {p.rpartition("/")[0] for p in keep if p.endswith("manifest.json")}
    return keep if tickets & manifests else []


def verify_tree(d: Path) -> int:
    """Verify every ticket in a pulled directory (the root, or each level-NN/); returns how many."""
    if _is_ticket(d):
        Ticket.load(d, verify=True)
        return 1
    levels = sorted(p for p in d.iterdir() if p.is_dir() and LEVEL_RE.match(p.name))
    if not levels:
        raise IntegrityError(f"{d} holds no ticket (no ticket.safetensors at its root or in level-NN/)")
    for p in levels:
        Ticket.load(p, verify=True)
    return len(levels)


def _snapshot(repo_id: str, rev: str | None, token) -> str:
    """The repo's ticket files in the Hugging Face cache: checked against the repo's file list and downloaded, or,
    offline or with the network down, whatever an earlier pull left in the cache."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from huggingface_hub.errors import HTTPError as TransportError

    def cached() -> str:
        return snapshot_download(repo_id, revision=rev, local_files_only=True, allow_patterns=ALLOW, token=token)

    if _offline():
        return cached()
    try:
        info = HfApi(token=token).model_info(repo_id, revision=rev or "main")
    except HfHubHTTPError:
        raise  # the Hub answered (not found, unauthorized, ...): hub_errors says what
    except (TransportError, ConnectionError, TimeoutError) as e:  # no answer: maybe it was pulled before
        try:
            return cached()
        except LocalEntryNotFoundError:
            raise e from None
    if not ticket_files([s.rfilename for s in info.siblings or []]):
        raise TicketkitError(f"{repo_id}@{info.sha[:12]} is not a ticketkit ticket repo (no ticket.safetensors with a "
                             f"manifest.json at its root or in level-NN/): check the repo id")
    # By the name the user gave, so the cache records which commit "main" is and `Ticket.from_pretrained` finds it
    # offline later; the snapshot folder's name says which commit it was.
    return snapshot_download(repo_id, revision=rev, allow_patterns=ALLOW, token=token)


def pull(spec: str, store=None, token: str | None = None) -> Path:
    """Download user/repo[@revision] into store/hub/<user>/<repo>/<commit>/ and verify it. Returns that directory.
    Reuses a verified copy; works offline (HF_HUB_OFFLINE=1) for anything pulled before."""
    repo_id, rev = parse_spec(spec)
    st = store if isinstance(store, Store) else Store(store)
    st.ensure()
    user, name = repo_id.split("/")
    base = st.root / "hub" / user / name
    if rev and SHA_RE.match(rev) and (base / rev).is_dir():
        return base / rev  # a commit never changes: no network needed
    with hub_errors(repo_id, rev):
        local = _snapshot(repo_id, rev, token)
    src = Path(local)
    commit = src.name  # a snapshot folder is named by its commit
    if not SHA_RE.match(commit):  # it names a directory in the store: never let a server's answer escape it
        raise IntegrityError(f"{repo_id}: the server resolved {rev or 'main'} to {commit!r}, which is not a commit sha")
    dest = base / commit
    with st.lock(f"hub--{user}--{name}"):
        if dest.is_dir():
            try:
                verify_tree(dest)
                return dest
            except TicketkitError:
                shutil.rmtree(dest)  # a damaged copy: copy it again from the cache
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{commit}.", suffix=".tmp", dir=base))
        public_mode(tmp, directory=True)
        try:
            for f in sorted(src.rglob("*")):
                rel = f.relative_to(src)
                if f.is_dir() or rel.parts[0].startswith("."):
                    continue
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                write_with(tmp / rel, lambda p, f=f: shutil.copyfile(f, p))  # follows the cache's symlinks
            try:
                verify_tree(tmp)
            except TicketkitError as e:
                raise IntegrityError(f"refused {repo_id}@{commit[:12]}: {str(e).replace(str(tmp), 'the repo')}") from None
            os.replace(tmp, dest)
            fsync_dir(base)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ---------------------------------------------------------------------------------------------------- list
def list_hub(user: str, token: str | None = None) -> list[dict]:
    """The ticketkit repos a user or org has published (newest first)."""
    from huggingface_hub import HfApi

    with hub_errors(user):
        models = list(HfApi(token=token).list_models(author=user, filter="ticketkit", token=token))
    out = [{"id": m.id, "last_modified": m.last_modified.isoformat() if m.last_modified else "",
            "tags": [t for t in (m.tags or []) if t != "ticketkit"]} for m in models]
    return sorted(out, key=lambda r: r["last_modified"], reverse=True)


# ---------------------------------------------------------------------------------------------------- Ticket.from_pretrained
def load_from_hub(repo_id: str, revision: str | None = None, subfolder: str | None = None, cache_dir=None,
                  token=None, force_download: bool = False, local_files_only: bool = False) -> Ticket:
    """Download one ticket (the repo root, or `subfolder` of a run) through the Hugging Face cache and load it
    verified. The cache holds symlinks, which a ticket directory refuses, so it is loaded from a plain copy."""
    from huggingface_hub import snapshot_download

    sub = (subfolder or "").strip("/")
    if sub and not LEVEL_RE.match(sub):
        raise TicketkitError(f"subfolder {subfolder!r}: a run's tickets are in level-NN/ subfolders")
    prefix = f"{sub}/" if sub else ""
    with hub_errors(repo_id, revision):
        local = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                       force_download=force_download, local_files_only=local_files_only,
                                       allow_patterns=[prefix + f for f in TICKET_DIR_FILES] + ["run.json"]))
    src = local / sub if sub else local
    where = f"{repo_id}@{local.name[:12]}" + (f"/{sub}" if sub else "")
    if not (src / "ticket.safetensors").exists():
        if not sub and (local / "run.json").exists():
            n = len(read_json(local / "run.json").get("levels", []))
            raise TicketkitError(f"{repo_id} is a run of {n} levels: pass subfolder='level-NN' (0 to {n - 1}), or "
                                 f"`ticketkit pull {repo_id}` for all of them")
        raise TicketkitError(f"{where} holds no ticket (no ticket.safetensors): it is not a ticketkit ticket repo")
    with tempfile.TemporaryDirectory(prefix="ticketkit-hub-") as tmp:
        for f in TICKET_DIR_FILES:
            if (src / f).exists():
                shutil.copyfile(src / f, Path(tmp) / f)  # follows the cache's symlink to the blob
        try:
            ticket = Ticket.load(tmp, verify=True)
        except TicketkitError as e:
            raise IntegrityError(f"refused {where}: {str(e).replace(str(tmp), 'the ticket')}") from None
    ticket.path = src
    return ticket
