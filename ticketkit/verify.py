"""`ticketkit verify`: check tickets, runs or a whole store, and report every problem found."""
from __future__ import annotations

from pathlib import Path

from .errors import TicketkitError
from .store import LEVEL_RE, Store


def _ticket_dirs(p: Path) -> list[Path]:
    if (p / "ticket.safetensors").exists() or (p / "manifest.json").exists() or (p / "config.json").exists() and not (p / "run.json").exists():
        return [p]
    out = []
    for d in sorted(p.rglob("*")):
        if d.is_dir() and (LEVEL_RE.match(d.name) or (d / "ticket.safetensors").exists()) and not any(x.startswith(".") for x in d.relative_to(p).parts):
            out.append(d)
    return out


def verify_path(ref: str | None, store=None) -> tuple[list[str], int]:
    """(problems, number of tickets checked). Incomplete tickets count as problems."""
    from .ticket import Ticket

    st = Store(store)
    p = Path(ref) if ref else st.root
    if ref and not p.exists():
        p = st.root / ref
    if not p.exists():
        raise TicketkitError(f"nothing to verify at {ref or st.root}: pass a ticket, a run or a store directory")
    problems, dirs = [], _ticket_dirs(p)
    for d in dirs:
        try:
            t = Ticket.load(d, verify=True)
            problems += [f"{d}: {x}" for x in t.problems()]
        except TicketkitError as e:
            problems.append(str(e) if str(d) in str(e) else f"{d}: {e}")
    return problems, len(dirs)
