"""`ticketkit verify`: check tickets, runs or a whole store, and report every problem found (not just the first)."""
from __future__ import annotations

from pathlib import Path

from .errors import TicketkitError
from .fsio import read_json
from .store import LEVEL_RE, Store, is_ticket_dir


def _is_ticket_dir(p: Path) -> bool:
    """Wider than store.is_ticket_dir on purpose: a damaged ticket (dangling symlinks, only its config.json left)
    is still a ticket to verify, so its problems are listed rather than skipped."""
    return is_ticket_dir(p) or any((p / f).is_symlink() for f in ("ticket.safetensors", "manifest.json")) or \
        ((p / "config.json").exists() and not (p / "run.json").exists())


def _ticket_dirs(p: Path) -> list[Path]:
    if _is_ticket_dir(p):
        return [p]
    out = []
    for d in sorted(p.rglob("*")):
        if d.is_dir() and (LEVEL_RE.match(d.name) or _is_ticket_dir(d)) and not any(x.startswith(".") for x in d.relative_to(p).parts):
            out.append(d)
    return out


def ticket_problems(d: Path) -> list[str]:
    """Every problem with one ticket directory: its files against the manifest, then its contents."""
    from .ticket import Ticket, manifest_problems

    try:
        problems = [x if str(d) in x else f"{d}: {x}" for x in manifest_problems(d)]
        if d.is_symlink():
            return problems
        t = Ticket.load(d, verify=False)
    except OSError as e:  # a file vanished or changed while we read it: a writer is at work (verify writes nothing)
        return [f"{d}: {Path(e.filename or d).name} changed while being read ({e.strerror}): a process is writing "
                f"this run; verify it once that finishes"]
    except TicketkitError as e:
        msg = str(e)
        return problems + ([] if any(msg in x for x in problems) else [msg if str(d) in msg else f"{d}: {msg}"])
    return problems + [f"{d}: {x}" for x in t.problems()]


def run_problems(rd: Path) -> list[str]:
    """Problems with a run's summary: unreadable run.json, or a finished run whose tickets do not match it."""
    if not (rd / "run.json").exists():
        return []
    try:
        info = read_json(rd / "run.json")
    except TicketkitError as e:
        return [str(e)]
    if not isinstance(info, dict):
        return [f"{rd}/run.json is not a JSON object: the run summary is corrupt"]
    if info.get("status") != "complete":
        if info.get("status") == "running" and Store(rd.parent)._locked(rd.name):
            return [f"{rd}: run is still running (a process holds its lock): verify it once it finishes"]
        return [f"{rd}: run is {info.get('status')!r}, not complete: run the same command again to resume it"]
    want = len(info.get("levels") or [])
    have = sorted(int(LEVEL_RE.match(d.name).group(1)) for d in rd.iterdir() if d.is_dir() and LEVEL_RE.match(d.name))
    if have != list(range(want)):
        return [f"{rd}: run.json records {want} level(s), the run holds ticket dirs for levels {have}"]
    return []


def verify_path(ref: str | None, store=None) -> tuple[list[str], int]:
    """(problems, number of tickets checked). Incomplete tickets count as problems."""
    st = Store(store)
    p = Path(ref) if ref else st.root
    if ref and not p.exists():
        p = st.root / ref
    if not p.exists():
        raise TicketkitError(f"nothing to verify at {ref or st.root}: pass a ticket, a run or a store directory")
    if not p.is_dir():
        raise TicketkitError(f"{p} is a file, not a ticket, run or store directory: pass one of those")
    problems, dirs = [], _ticket_dirs(p)
    if not _is_ticket_dir(p):
        runs = [p] + sorted(x for x in p.rglob("*") if x.is_dir() and (x / "run.json").exists()
                            and not any(y.startswith(".") for y in x.relative_to(p).parts))
        runs = [rd for rd in runs if (rd / "run.json").exists()]
        if not runs and not dirs:
            raise TicketkitError(f"nothing to verify in {p}: it holds no ticket and no run; pass a ticket, a run or "
                                 f"a store directory")
        for rd in runs:
            problems += run_problems(rd)
    for d in dirs:
        problems += ticket_problems(d)
    return problems, len(dirs)
