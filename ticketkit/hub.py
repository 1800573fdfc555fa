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

import os
import shutil
from pathlib import Path

from .errors import IntegrityError, TicketkitError
from .fsio import atomic_dir, read_json, write_with
# hub_errors, parse_spec, require_token live in the leaf hubspec (ticket.py needs them too); importable from here
from .hubspec import check_no_token as _check_no_token  # noqa: F401  (the last guard, in the one push)
from .hubspec import RUN_FILES, SHA_RE, commit_files, hub_errors, offline, owned, parse_spec, require_token  # noqa: F401
from .store import LEVEL_RE, Store, is_ticket_dir, level_dirs, link_duplicates
from .ticket import TICKET_DIR_FILES, Ticket, load_from_hub  # noqa: F401  (load_from_hub: importable from here)

OWNED = owned(TICKET_DIR_FILES)  # what a push deletes when it no longer writes it (hubspec.owned says why)
ALLOW = [*TICKET_DIR_FILES, *RUN_FILES, *(f"level-*/{f}" for f in TICKET_DIR_FILES)]  # what a pull downloads


# ---------------------------------------------------------------------------------------------------- push
def plan(ref: str, level: str | None = None, store=None, repo_id: str | None = None) -> tuple[dict[str, Path | bytes], str, str]:
    """What a push would upload: {path in repo: local file or bytes}, the commit message, and what it is.
    Only verified tickets go up; training leftovers (trained/, checkpoints/) never do."""
    from .card import level_row, run_card

    st = store if isinstance(store, Store) else Store(store)
    ref = os.fspath(ref)
    ticket_dir = resolve_ref(ref, level, st)
    run_dir = ticket_dir.parent
    whole_run = level is None and LEVEL_RE.match(ticket_dir.name) and not is_ticket_dir(Path(ref)) \
        and (run_dir / "run.json").exists()
    files: dict[str, Path | bytes] = {}
    if not whole_run:
        t = Ticket.load(ticket_dir, verify=True)
        for f in TICKET_DIR_FILES:
            if (ticket_dir / f).exists():  # trained.safetensors is optional
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
            if (d / f).exists():  # trained.safetensors is optional
                files[f"{d.name}/{f}"] = d / f
    for f in ("run.json", "levels.csv", "tokenizer.json"):
        if (run_dir / f).exists():
            files[f] = run_dir / f
    rows = [level_row(c) for c in cfgs]
    levels = f"levels {rows[0]['level']}-{rows[-1]['level']}" if len(rows) > 1 else f"level {rows[0]['level']}"
    what = (f"run {run_dir.name}, {levels} ({rows[0]['density_prunable'] * 100:.2f}% -> "
            f"{rows[-1]['density_prunable'] * 100:.2f}% weights remaining)")
    files["README.md"] = run_card(info, cfgs, [d.name for d in level_dirs(run_dir)], repo_id).encode()
    files["config.json"] = _run_config(run_dir.name, cfgs, level_dirs(run_dir))
    return files, f"ticketkit: {what}", what


def _run_config(name: str, cfgs: list[dict], dirs: list[Path]) -> bytes:
    """A run repo's top-level config.json: the Hub counts a model repo's downloads through its root config.json,
    and a run's tickets are in level-NN/. It says what the repo is and where each level is; the tickets' own
    config.json files stay the full record."""
    import json

    levels = [{"subfolder": d.name, "level": c.get("level"), "density": c["density"], "metrics": c.get("metrics")}
              for d, c in zip(dirs, cfgs)]
    doc = {"ticketkit": {"kind": "run", "run": name, "format": 1}, "find": cfgs[0]["find"],
           "data": cfgs[0].get("data"), "levels": levels}
    return (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()


def push(ref: str, repo_id: str, private: bool = False, level: str | None = None, store=None,
         token: str | None = None):
    """Publish a ticket, one level of a run, or a whole run in ONE commit, deleting what an earlier push to the
    repo left that this one does not write. Returns huggingface_hub's CommitInfo (a str: the commit url; `.oid`)."""
    repo_id, rev = parse_spec(repo_id)
    if rev:
        raise TicketkitError(f"push goes to the main branch: drop @{rev} from the repo id")
    token = require_token(token)  # before anything is read or sent
    files, message, what = plan(ref, level, store, repo_id)
    return commit_files(repo_id, files, message, f"Pushed with ticketkit: {what}.", OWNED, private=private,
                        token=token)


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
    if is_ticket_dir(d):
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

    if offline():
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
        with atomic_dir(dest) as tmp:  # verified in full before it is renamed into place
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
        for d in level_dirs(dest):
            link_duplicates(d)  # a pulled run's levels share init (and rewind) like a local run's
    return dest


def resolve_ref(ref: str, level: str | None = None, store=None) -> Path:
    """A ticket directory for what a user typed: a ticket path, a run path or name (its sparsest level unless
    `level`), or hf://user/repo[@rev], pulled into the store first. The one place that turns hf:// into a path."""
    st = store if isinstance(store, Store) else Store(store)
    ref = os.fspath(ref)  # a Path works as well as what a user typed
    if ref.startswith("hf://"):
        ref = str(pull(ref[5:], store=st))
    return st.resolve(ref, level)


# ---------------------------------------------------------------------------------------------------- list
def list_hub(user: str, token: str | None = None) -> list[dict]:
    """The ticketkit repos a user or org has published (newest first)."""
    from huggingface_hub import HfApi

    with hub_errors(user):
        models = list(HfApi(token=token).list_models(author=user, filter="ticketkit", token=token))
        out = [{"id": m.id, "last_modified": m.last_modified.isoformat() if m.last_modified else "",
                "tags": [t for t in (m.tags or []) if t != "ticketkit"]} for m in models]
    return sorted(out, key=lambda r: r["last_modified"], reverse=True)
