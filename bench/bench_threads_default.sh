#!/bin/sh
# --threads' default (the cores this process may use; capping --workers) against the code before it, whole process,
# under whatever load the machine has. A and B alternate; compare medians of /usr/bin/time's user, sys and wall.
#   sh bench/bench_threads_default.sh OLD_CHECKOUT [SEEDS WORKERS] [PAIRS]
# OLD_CHECKOUT: a tree of the earlier ticketkit (e.g. `git archive <commit> ticketkit | tar -x -C /tmp/old`).
# The old code took --levels/--seeds; the new one --rounds/--n-seeds (the old names still work there, with a warning).
old=$1; seeds=${2:-4}; workers=${3:-4}; pairs=${4:-3}; new=$(cd "$(dirname "$0")/.." && pwd)
one() {  # CODE STORE ROUNDS_FLAG SEEDS_FLAG
  rm -rf "$2"
  PYTHONPATH=$1 /usr/bin/time -f "$5 user %U sys %S wall %e" nice -n 5 python3 -m ticketkit find imdb cnn \
    --data-dir "${TICKETKIT_DATA_DIR:-../shared/data}" --store "$2" --max-train 800 --max-test 400 --vocab-size 5000 \
    --max-len 128 --epochs 1 "$3" 1 "$4" "$seeds" --workers "$workers" --quiet --json >/dev/null 2>"$2.log"
  tail -1 "$2.log"
}
for i in $(seq "$pairs"); do
  one "$new" /tmp/tk-bench-new --rounds --n-seeds new
  one "$old" /tmp/tk-bench-old --levels --seeds old
done
