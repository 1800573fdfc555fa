"""What `ls` and `pull` print: the runs in the store, a Hub user's repos, the tickets a pull brought in."""
from __future__ import annotations

from pathlib import Path

from ..fsio import read_json
from ..store import is_ticket_dir, level_dirs
from .tables import format_table


def runs_table(runs: list[dict]) -> str:
    """`ls`: one line per run in the store, its status, levels and first/last accuracy."""
    rows = []
    for r in runs:
        lv = r.get("levels") if isinstance(r.get("levels"), list) else []
        status = r.get("status", "?") + (f" ({len(r['incomplete_tickets'])} incomplete ticket(s))" if r.get("incomplete_tickets") else "")
        try:
            nums = [f"{lv[-1]['density_prunable'] * 100:.2f}", f"{lv[0]['test_accuracy'] * 100:.2f}",
                    f"{lv[-1]['test_accuracy'] * 100:.2f}"] if lv else ["", "", ""]
        except (KeyError, TypeError, IndexError):  # a run.json edited by hand: list it, don't crash
            nums, status = ["", "", ""], "corrupt"
        rows.append([r["name"], r.get("kind", "?"), status, len(lv) or r.get("tickets", 0), *nums])
    return format_table(["run", "kind", "status", "levels", "% remaining", "dense acc", "sparsest acc"], rows) if rows else ""


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
