"""What `ls` and `pull` print: the runs in the store, a Hub user's repos, the tickets a pull brought in."""
from __future__ import annotations

from pathlib import Path

from ..fsio import read_json
from ..store import is_ticket_dir, level_dirs
from .tables import format_table


def _subsample(max_train, max_test) -> str:
    """`full`, or the subsample a quick run trained and tested on (what tells a toy run from a real one)."""
    if max_train is None and max_test is None:
        return "full"
    return f"{max_train or 'all'}/{max_test or 'all'}"


def _find_row(r: dict) -> list:
    c = r.get("config") if isinstance(r.get("config"), dict) else {}
    lv = r.get("levels") if isinstance(r.get("levels"), list) else []
    d, p = c.get("data", {}), c.get("prune", {})
    rounds = 1 if p.get("schedule") == "oneshot" else p.get("levels")
    nums = [f"{lv[-1]['density_prunable'] * 100:.2f}", f"{lv[0]['test_accuracy'] * 100:.2f}",
            f"{lv[-1]['test_accuracy'] * 100:.2f}"] if lv else ["", "", ""]
    return [d.get("dataset", "?"), _subsample(d.get("max_train"), d.get("max_test")), c.get("train", {}).get("epochs", ""),
            f"seed {c['seed']}" if "seed" in c else "",
            f"{len(lv)}/{rounds + 1}" if isinstance(rounds, int) else len(lv),
            *nums]


def _transfer_row(r: dict) -> list:
    c, acc = r.get("config") or {}, r.get("transferred") or {}
    src, arms = r.get("source") or {}, r.get("arms") or []
    levels = c.get("levels") or list(acc)
    dense, sparsest = acc.get(100.0), acc.get(min(acc)) if acc else None
    return [f"{src.get('dataset', '?')}->{r.get('target') or c.get('target', '?')}",
            _subsample(c.get("max_train"), c.get("max_test")), c.get("train", {}).get("epochs", ""),
            f"{len(c.get('seeds', []))} seed(s)", ",".join(f"{float(x):g}" for x in levels) + f" x {len(arms)} arms",
            f"{min(map(float, levels)):g} (req.)" if levels else "",
            "" if dense is None else f"{dense * 100:.2f}", "" if sparsest is None else f"{sparsest * 100:.2f}"]


def runs_table(runs: list[dict]) -> str:
    """`ls`: one line per run in the store: its status, what tells a quick run from a full one (data and
    subsample, epochs, seeds, levels; a transfer's requested levels and arms) and first/last test accuracy."""
    rows = []
    for r in runs:
        status = r.get("status", "?") + (f" ({len(r['incomplete_tickets'])} incomplete ticket(s))" if r.get("incomplete_tickets") else "")
        try:
            cols = _transfer_row(r) if r.get("kind") == "transfer" and "config" in r else \
                _find_row(r) if "config" in r or "levels" in r else ["", "", "", "", r.get("tickets", ""), "", "", ""]
        except (KeyError, TypeError, IndexError, ValueError, AttributeError):  # a file edited by hand: list it
            cols, status = ["", "", "", "", "", "", "", ""], "corrupt"
        rows.append([r["name"], r.get("kind", "?"), status, *cols])
    return format_table(["run", "kind", "status", "data", "subsample", "epochs", "seeds", "levels", "% remaining",
                         "dense acc", "sparsest acc"], rows) if rows else ""


def hub_table(items: list[dict]) -> str:
    """`ls --hub USER`: the repos a user has published."""
    return format_table(["repo", "last modified", "tags"],
                        [[i["id"], i.get("last_modified", ""), ",".join(i.get("tags", []))] for i in items])


def pulled(path: Path) -> tuple[list[dict], str]:
    """`pull`: every ticket now in `path` (one, or a run's levels), as rows and as a table."""
    dirs = [path] if is_ticket_dir(path) else level_dirs(path)
    rows = []
    for d in dirs:
        c = read_json(d / "config.json")
        rows.append({"ticket": str(d), "level": c.get("level"), "density_prunable": c["density"]["prunable"],
                     "test_accuracy": c.get("metrics", {}).get("test_accuracy")})
    table = format_table(["ticket", "level", "% remaining", "test acc"],
                         [[r["ticket"], r["level"], f"{r['density_prunable'] * 100:.3f}",
                           "" if r["test_accuracy"] is None else f"{r['test_accuracy'] * 100:.2f}"] for r in rows])
    return rows, table
