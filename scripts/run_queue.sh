#!/usr/bin/env bash
# Run sweeps one after another, each line of QUEUE_FILE being scripts/train.py's arguments for one sweep
# (`-m`, data.root and paths.output_root are added; blank lines and # comments are skipped). Meant for the
# papers' tables on a shared machine: start one queue per core with nohup, from a git worktree pinned at a
# commit, with OUTPUT_ROOT outside the checkout:
#   git worktree add --detach ../sweep HEAD
#   nohup ../sweep/scripts/run_queue.sh QUEUE_FILE /work/sweeps ../shared/datasets > /work/sweeps/a.log 2>&1 &
# The repo's committed records (results/runs) are copied into OUTPUT_ROOT first, so finished runs are
# skipped before they start; a sweep that fails goes on to the next line. Collect finished runs' records
# with scripts/collect_records.sh OUTPUT_ROOT.
set -uo pipefail
queue=${1:?usage: scripts/run_queue.sh QUEUE_FILE OUTPUT_ROOT DATA_ROOT}
output_root=${2:?usage: scripts/run_queue.sh QUEUE_FILE OUTPUT_ROOT DATA_ROOT}
data_root=${3:?usage: scripts/run_queue.sh QUEUE_FILE OUTPUT_ROOT DATA_ROOT}
repo="$(cd "$(dirname "$0")/.." && pwd)"
# This checkout's code, not that of the checkout the environment's editable install points at (a worktree's
# scripts/train.py would otherwise import the main checkout's src/, edits included); SLURM jobs inherit it.
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$output_root"
flock "$output_root/.copy.lock" cp -rn "$repo/results/runs/." "$output_root/"  # two queues start together
grep -vE '^\s*(#|$)' "$queue" | while read -r line; do
  echo "$(date -Is) start: $line"
  # shellcheck disable=SC2086  # each line is a list of arguments
  (cd "$repo" && python scripts/train.py -m $line "data.root=$data_root" "paths.output_root=$output_root" \
    hydra.launcher.n_jobs=1) < /dev/null
  echo "$(date -Is) end ($?): $line"
done
