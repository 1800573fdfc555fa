"""The local store: a directory of runs, each named for its settings hash (OpenLTH-style).

    artifacts/
      find-imdb-cnn-<hash>/       run.json, levels.csv, tokenizer.json, level-00/ ... level-28/ (tickets)
      transfer-<hash>/            results.json, results.csv, report.md, accuracy_vs_density.png
      hub/<user>/<repo>/<commit>/ tickets pulled from the Hub
      .cache/                     encoded datasets
      .locks/                     file locks, one per run
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import TicketkitError
from .fsio import read_json, sha256_file

LEVEL_RE = re.compile(r"^level-(\d+)$")


def default_root() -> Path:
    return Path(os.environ.get("TICKETKIT_STORE") or "artifacts")


class Store:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_root()
        if self.root.exists() and not self.root.is_dir():
            how = "TICKETKIT_STORE" if not root and os.environ.get("TICKETKIT_STORE") else "--store"
            raise TicketkitError(f"the store {self.root} is a file, not a directory: point {how} at a directory")

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    @property
    def cache(self) -> Path:
        return self.root / ".cache"

    def ensure(self) -> "Store":
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / ".locks").mkdir(exist_ok=True)
        except OSError as e:
            raise TicketkitError(f"cannot create the store at {self.root} ({e.strerror}): pass a writable --store DIR") from None
        if not os.access(self.root, os.W_OK):
            raise TicketkitError(f"the store {self.root} is not writable: fix its permissions or pass --store DIR")
        return self

    def lock(self, name: str, timeout: float = -1):
        """A file lock per run: two processes with the same settings take turns, and the second reuses the first's work."""
        from filelock import FileLock

        self.ensure()
        return FileLock(str(self.root / ".locks" / f"{name}.lock"), timeout=timeout)

    def run_dir(self, name: str) -> Path:
        self._safe_name(name)
        return self.root / name

    @staticmethod
    def _safe_name(name: str) -> None:
        if not name or ".." in Path(name).parts or Path(name).is_absolute() or "\\" in name:
            raise TicketkitError(f"{name!r} is not a valid run name inside the store")

    # ------------------------------------------------------------------ listing
    def runs(self, kind: str | None = None) -> list[dict]:
        """Every run in the store with its status; incomplete or unreadable ones are listed, not hidden."""
        out = []
        if not self.root.is_dir():
            return out
        for d in sorted(self.root.iterdir()):
            if d.name.startswith(".") or not d.is_dir() or d.name == "hub":
                continue
            out.append(self.describe(d))
        hub = self.root / "hub"
        if hub.is_dir():
            for d in sorted(hub.glob("*/*/*")):
                if d.is_dir() and not d.name.startswith("."):
                    r = self.describe(d)
                    if r.get("kind") == "find":  # a pulled run is someone else's: never the default transfer source
                        r["kind"] = "pulled-run"
                    out.append({**r, "source": f"hf://{d.parent.parent.name}/{d.parent.name}@{d.name}"})
        return [r for r in out if kind is None or r.get("kind") == kind]

    def describe(self, d: Path) -> dict:
        """One directory of the store as `ls` lists it: its kind and status (corrupt, interrupted, ... included)."""
        name = str(d.relative_to(self.root))
        if (d / "run.json").exists():
            try:
                info = read_json(d / "run.json")
                if not isinstance(info, dict):
                    raise TicketkitError(f"{d}/run.json is not a JSON object")
                # until the search completes, the level tickets finished on disk: a long run can be watched
                levels = finished_levels(d, info)
            except (TicketkitError, KeyError, TypeError) as e:
                return {"name": name, "path": str(d), "status": "corrupt", "error": str(e), **ticket_states(d)}
            out = {**info, "levels": levels, "name": name, "path": str(d), **ticket_states(d)}
            if out.get("status") == "running" and not self._locked(d.name):
                out["status"] = "interrupted"  # killed (no process holds its lock): the same command resumes it
            return out
        if (d / "results.json").exists():
            try:  # a transfer run writes its status into results.json after every cell
                res = read_json(d / "results.json")
                status = res.get("status", "complete")
            except (TicketkitError, AttributeError):
                return {"name": name, "path": str(d), "kind": "transfer", "status": "corrupt"}
            if status == "running" and not self._locked(d.name):
                status = "interrupted"
            return {"name": name, "path": str(d), "kind": "transfer", "status": status, **transfer_summary(res)}
        if (d / "sweep.json").exists():  # `ticketkit sweep status` tells its cells' states
            return {"name": name, "path": str(d), "kind": "sweep", "status": "sweep"}
        if is_ticket_dir(d):
            return {"name": name, "path": str(d), "kind": "ticket", "status": "complete" if (d / "manifest.json").exists() else "incomplete"}
        if any(LEVEL_RE.match(p.name) for p in d.iterdir()):
            return {"name": name, "path": str(d), "kind": "pulled-run", "status": "complete"}
        return {"name": name, "path": str(d), "status": "unknown"}

    def _locked(self, name: str) -> bool:
        """Whether a process holds this run's lock right now (so 'running' is true, not left over from a kill)."""
        from filelock import FileLock, Timeout

        path = self.root / ".locks" / f"{name}.lock"
        if not path.exists():
            return False
        try:
            with FileLock(str(path)).acquire(timeout=0):
                return False
        except Timeout:
            return True
        except OSError:  # read-only store: nobody can be writing it either
            return False

    # ------------------------------------------------------------------ resolving what the user typed
    def find_run(self, ref, what: str = "run", accept=None) -> Path:
        """`ref` as a path when it exists (and `accept(path)` holds), else the store entry named `ref`, else the one
        whose name starts with `ref`: the single lookup behind every command that takes a run by name."""
        ok = accept or (lambda d: True)
        p = Path(str(ref))
        if p.exists() and ok(p):
            return p
        ref = str(ref)
        entries = [d for d in (self.root.iterdir() if self.root.is_dir() else []) if not d.name.startswith(".") and ok(d)]
        matches = [d for d in entries if d.name == ref] or [d for d in entries if d.name.startswith(ref)]
        if len(matches) > 1:
            raise TicketkitError(f"{ref!r} matches {len(matches)} entries in {self.root}: give more of the name "
                                 f"({', '.join(sorted(d.name for d in matches)[:3])}, ...)")
        if not matches:
            there = f"{ref} is not a {what}, and" if p.exists() else "not a path, and"
            raise TicketkitError(f"no {what} called {ref!r} ({there} not in the store {self.root}): pass its directory; "
                                 f"see `ticketkit ls`")
        return matches[0]

    def resolve(self, ref: str, level: str | None = None) -> Path:
        """A ticket directory for: a ticket path, or a run path or name (its sparsest level unless `level`).
        Local only: hf://user/repo refs go through `ticketkit.hub.resolve_ref`, which pulls them first."""
        if ref.startswith("hf://"):  # the store never reaches the network (hub.py imports store, not the reverse)
            raise TicketkitError(f"{ref} is on the Hub: resolve it with ticketkit.hub.resolve_ref, which pulls it "
                                 f"into the store first")
        p = self.find_run(ref, what="ticket or run")
        if is_ticket_dir(p):
            if level is not None:
                raise TicketkitError(f"{p} is a single ticket: --level applies to runs only")
            return p
        levels = level_dirs(p)
        if not levels:
            raise TicketkitError(f"{p} holds no tickets (no level-NN/ with a manifest): is the run finished? see `ticketkit show {p}`")
        return pick_level(levels, level)


def transfer_summary(res: dict) -> dict:
    """What `ls` shows of a transfer run: its settings, arms, and the transferred arm's mean test accuracy per
    requested level (% remaining -> accuracy)."""
    rows = [r for r in res.get("rows", []) if isinstance(r, dict)]
    acc: dict = {}
    for r in rows:
        if r.get("arm") == "transferred" and isinstance(r.get("test_accuracy"), (int, float)):
            acc.setdefault(float(r["level"]), []).append(r["test_accuracy"])
    return {"config": res.get("config", {}), "source": res.get("source", {}), "target": res.get("target"),
            "arms": sorted({str(r.get("arm")) for r in rows}),
            "transferred": {lv: sum(v) / len(v) for lv, v in sorted(acc.items(), reverse=True)}}


def is_ticket_dir(p: Path) -> bool:
    """A ticket directory, complete or not: it holds ticket.safetensors or a manifest (a run holds level-NN/)."""
    return (Path(p) / "ticket.safetensors").exists() or (Path(p) / "manifest.json").exists()


def ticket_states(run: Path) -> dict:
    """How many level tickets of a run are complete, and which are not (no manifest: interrupted mid-write)."""
    done, incomplete = 0, []
    for d in sorted(run.iterdir()) if run.is_dir() else []:
        if LEVEL_RE.match(d.name) and d.is_dir():
            if (d / "manifest.json").is_file():
                done += 1
            else:
                incomplete.append(d.name)
    return {"tickets": done, "incomplete_tickets": incomplete}


def finished_levels(run: Path, info: dict) -> list[dict]:
    """A find run's level rows: run.json lists them once the search completes; until then (running, or killed)
    each finished level ticket's own summary, so a long search can be watched and published with its status."""
    if info.get("levels"):
        return info["levels"]
    return [read_json(d / "config.json")["summary"] for d in level_dirs(run)]


def level_dirs(run: Path) -> list[Path]:
    """Complete ticket directories of a run, in level order. Incomplete ones (no manifest) are skipped."""
    out = []
    for d in run.iterdir() if run.is_dir() else []:
        m = LEVEL_RE.match(d.name)
        if m and (d / "manifest.json").exists():
            out.append((int(m.group(1)), d))
    return [d for _, d in sorted(out)]


def pick_level(levels: list[Path], level: str | None) -> Path:
    """`level`: an integer is a level index; a number with '.' or '%' is % weights remaining (closest measured)."""
    if level is None:
        return levels[-1]
    s = str(level).strip()
    if "." in s or s.endswith("%"):
        try:
            want = float(s.rstrip("%")) / 100
        except ValueError:
            raise TicketkitError(f"--level {level!r}: expected a level index (3) or % weights remaining (16.9)") from None
        measured = [read_json(d / "config.json")["density"]["prunable"] for d in levels]
        if not 0 < want <= 1 or want < min(measured) * 0.95:  # "closest" must not silently mean "sparsest there is"
            raise TicketkitError(f"--level {level}: this run reached {min(measured) * 100:.2f}% weights remaining at its "
                                 f"sparsest; pick a level between {min(measured) * 100:.2f}% and 100%")
        dens = [(abs(m - want), i) for i, m in enumerate(measured)]
        return levels[min(dens)[1]]
    if not s.isdigit():
        raise TicketkitError(f"--level {level!r}: expected a level index (3) or % weights remaining (16.9)")
    for d in levels:
        if int(LEVEL_RE.match(d.name).group(1)) == int(s):
            return d
    raise TicketkitError(f"level {s} is not in this run (it has levels {', '.join(d.name[6:] for d in levels)})")


def link_duplicates(ticket_dir: Path) -> int:
    """Keep each distinct tensor file of a run once: every *.safetensors a level's manifest lists that is
    byte-identical to one in another level of the same run (same sha256 and size, re-checked on the other copy)
    becomes a hardlink to it. init.safetensors is the same at every level and rewind.safetensors usually is, so a
    29-level run stores them once. Each level stays a directory of ordinary files that verifies, loads, pushes and
    copies on its own; every write replaces a file by rename, never in place, so one level's rewrite never changes
    another's. Returns the bytes saved (0 where the filesystem has no hardlinks: the copies stay)."""
    d = Path(ticket_dir)
    try:
        mine = read_json(d / "manifest.json")["files"]
    except (TicketkitError, KeyError, TypeError):
        return 0
    seen: dict = {}  # (sha256, bytes) -> the first such file in another level, or beside it in this one
    for other in [*(x for x in level_dirs(d.parent) if x.resolve() != d.resolve()), d]:
        try:
            for name, info in read_json(other / "manifest.json")["files"].items():
                if name.endswith(".safetensors"):
                    seen.setdefault((info.get("sha256"), info.get("bytes")), other / name)
        except (TicketkitError, KeyError, TypeError, AttributeError):
            continue  # a damaged level is verify's to report, never a source of bytes
    saved = 0
    for name, info in mine.items():
        src, dst = seen.get((info.get("sha256"), info.get("bytes"))), d / name
        if not name.endswith(".safetensors") or src is None or src.is_symlink() or not src.is_file():
            continue
        if os.path.samefile(src, dst) or sha256_file(src) != info["sha256"]:
            continue  # already one file, or the other copy was damaged since: never spread a bad one
        tmp = dst.with_name(f".{name}.link")
        try:
            tmp.unlink(missing_ok=True)
            os.link(src, tmp)
            os.replace(tmp, dst)
            saved += info["bytes"]
        except OSError:  # no hardlinks on this filesystem: keep the copy
            tmp.unlink(missing_ok=True)
    return saved
