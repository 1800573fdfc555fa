"""Talking to the Hugging Face Hub without touching tickets or the store: repo specs, tokens, and errors.

A leaf (it imports nothing of ticketkit but errors), so ticket.py and hub.py can both use it without importing
each other: hub.py moves tickets in and out of the store, ticket.py loads one through the Hub cache.
"""
from __future__ import annotations

import contextlib
import re

from .errors import TicketkitError, shorten

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
RUN_FILES = ("README.md", "run.json", "levels.csv", "tokenizer.json")  # a pushed run's root, beside level-NN/
LOGIN_HINT = "run `hf auth login` or set HF_TOKEN"


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def offline() -> bool:
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
    last: dict = {}  # the last answer the server gave, to name it when it is malformed
    unhook = _watch_answers(last)
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
        raise TicketkitError(f"repository {where} not found on {endpoint()} (or it is private and you may not read "
                             f"it{', or has no such revision' if revision else ''}): check the id, or {LOGIN_HINT}") from None
    except RemoteEntryNotFoundError as e:
        raise TicketkitError(f"{where} lacks a file ticketkit needs ({error_line(e)}): it is not a ticketkit ticket "
                             f"repo") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        if offline():
            raise TicketkitError(f"{where} is not in the local cache and HF_HUB_OFFLINE=1 forbids downloading it: "
                                 f"unset HF_HUB_OFFLINE and pull it once") from None
        raise TicketkitError(f"cannot reach the Hub at {endpoint()} to fetch {where}, and it is not cached: check "
                             f"your network (or HF_ENDPOINT)") from None
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        msg = shorten((e.server_message or "").strip().splitlines()[0]) if e.server_message else ""
        if status == 401:
            raise TicketkitError(f"the Hub at {endpoint()} refused your credentials for {repo_id} (401"
                                 f"{': ' + msg if msg else ''}): {LOGIN_HINT} with a valid token") from None
        if status == 403:
            raise TicketkitError(f"your token may not do this on {repo_id} (403): use a token with write access to "
                                 f"its namespace ({LOGIN_HINT})") from None
        if status is not None and status >= 500:
            raise TicketkitError(f"the Hub at {endpoint()} failed ({status}) on {where}: try again later") from None
        raise TicketkitError(f"the Hub at {endpoint()} refused the request for {where} ({status}"
                             f"{': ' + msg if msg else ''})") from None
    except HFValidationError:
        raise TicketkitError(f"{repo_id!r} is not a valid Hub repo id: use user/repo[@revision]") from None
    except ValueError as e:  # huggingface_hub's own checks, e.g. "Invalid metadata in README.md"
        raise TicketkitError(f"the Hub refused {where}: {shorten(str(e), 200)}") from None
    except (TransportError, ConnectionError, TimeoutError) as e:
        raise TicketkitError(f"cannot reach the Hub at {endpoint()} ({type(e).__name__}): check your network or "
                             f"HF_ENDPOINT; already-pulled tickets still load with HF_HUB_OFFLINE=1") from None
    except (KeyError, AttributeError, TypeError, IndexError) as e:  # the client could not parse the answer
        what = f"no {e.args[0]!r} in it" if isinstance(e, KeyError) and e.args else \
            f"not the shape a Hub answer has ({type(e).__name__}: {shorten(str(e), 120)})"
        answer = f"{last['method']} {last['path']} -> {last['status']}" if last else "its answer"
        raise TicketkitError(f"the Hub at {endpoint()} gave a malformed answer for {where} ({answer}: {what}): "
                             f"check that HF_ENDPOINT is a Hugging Face Hub, or try again later") from None
    finally:
        unhook()


def _watch_answers(last: dict):
    """Record each answer's request and status (not its body: a download streams) in `last`; returns the undo."""
    try:
        from huggingface_hub.utils import get_session

        hooks = get_session().event_hooks["response"]
    except Exception:  # noqa: BLE001 - another HTTP backend: the message just names no request
        return lambda: None

    def hook(resp):
        last.update(method=resp.request.method, path=resp.request.url.path, status=resp.status_code)

    hooks.append(hook)
    return lambda: hook in hooks and hooks.remove(hook)


def error_line(e: BaseException) -> str:
    """The line of a huggingface_hub error that names the problem: its last (the first is often a URL)."""
    lines = [x for x in str(e).splitlines() if x.strip()]
    return shorten(lines[-1]) if lines else type(e).__name__


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
    """The token from the argument, HF_TOKEN or `hf auth login`; checked before anything is sent."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise TicketkitError(f"pushing needs a Hugging Face token with write access: {LOGIN_HINT}, then push again")
    return token


def owned(ticket_files) -> list[str]:
    """The repo paths a push owns: a ticket's files at the root, a run's, and level-NN/. On a later push to the same
    repo the ones it does not write again are deleted in the same commit, so a repo never mixes an old single ticket
    with a new run's levels (or the reverse). Anything else a user added to the repo is left alone."""
    return ["level-*", *dict.fromkeys([*ticket_files, *RUN_FILES])]


def commit_files(repo_id: str, files: dict, message: str, description: str, owned_patterns: list[str],
                 private: bool = False, token: str | None = None):
    """THE push: create the repo if needed, then one commit that adds `files` ({path in repo: local path or bytes})
    and deletes every owned path they do not replace. `Ticket.push_to_hub` and `ticketkit push` both come here.
    Returns huggingface_hub's CommitInfo."""
    from pathlib import Path

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.utils import filter_repo_objects

    token = require_token(token)
    check_no_token(files, token)
    api = HfApi(token=token)
    with hub_errors(repo_id):
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        existing = api.list_repo_files(repo_id)
        stale = [p for p in filter_repo_objects(existing, allow_patterns=list(owned_patterns))
                 if p not in files and p != ".gitattributes"]
        ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=src if isinstance(src, bytes) else str(Path(src)))
               for p, src in sorted(files.items())]
        ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
        return api.create_commit(repo_id, ops, commit_message=message, commit_description=description)


def check_no_token(files: dict, token: str) -> None:
    """A last guard: refuse to publish a file that contains the token (e.g. pasted into a command line)."""
    from pathlib import Path

    needle = token.encode()
    for path, src in files.items():
        if path.endswith(".safetensors"):
            continue  # binary tensors; their JSON header holds only the format and density
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        if needle in data:
            raise TicketkitError(f"{path} contains your Hugging Face token: remove it from the ticket before pushing")
