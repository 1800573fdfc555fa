#!/bin/sh
# Issue 16: the quick study of both architectures under the science defaults (this checkout's
# recipes/transfer_quick_both.toml) against the same study before the science issue (an earlier checkout's recipe
# and code: 1 seed, transferred + random-prune + fresh, a 2-epoch cap), one after the other in one session, whole
# process, each in a fresh store. Prints /usr/bin/time's wall and CPU and what each did (trainings, epochs).
#   sh bench/bench_quick_study.sh OLD_CHECKOUT [WORKDIR]
# OLD_CHECKOUT: a tree of the earlier ticketkit, e.g. `git archive 919cb44 | tar -x -C /tmp/old` (session 5's code).
old=$1; work=${2:-/tmp/tk-quick-bench}; new=$(cd "$(dirname "$0")/.." && pwd)
data=$(cd "${TICKETKIT_DATA_DIR:-$new/../shared/data}" && pwd)
one() {  # LABEL CODE
  rm -rf "$work/$1"; mkdir -p "$work/$1"
  (cd "$2" && PYTHONPATH=$2 /usr/bin/time -f "$1 wall %e s  user %U s  sys %S s  peak %M KB" python3 -m ticketkit \
    sweep run recipes/transfer_quick_both.toml --workers 2 --data-dir "$data" --store "$work/$1/store" \
    >"$work/$1/out.log" 2>"$work/$1/err.log")
  tail -1 "$work/$1/err.log"
  python3 - "$work/$1/store" "$1" <<'EOF'
import json, sys
from pathlib import Path
trainings = epochs = 0
for p in Path(sys.argv[1]).rglob("*.json"):
    if p.name not in ("run.json", "results.json"):
        continue
    r = json.loads(p.read_text())
    if "replicates" in r:  # a merge of per-seed transfers counted on their own
        continue
    if r.get("kind") == "transfer":  # rows shared with the fresh search are that search's trainings, not new ones
        rows = [x for x in r.get("rows", []) if not x.get("shared_with")]
    elif isinstance(r.get("levels"), list):
        rows = r["levels"]
    else:
        continue
    trainings += len(rows)
    epochs += sum(int(x.get("epochs") or x.get("metrics", {}).get("epochs") or 0) for x in rows)
print(f"{sys.argv[2]}: {trainings} trainings, {epochs} epochs")
EOF
}
one old "$old"
one new "$new"
