#!/usr/bin/env bash
# Copy the record (metrics.json) of every finished run under OUTPUT_ROOT into results/runs/, each at its
# run's own path, so that `devnets-aggregate results/runs/<experiment>` rebuilds the tables from the repo
# alone. Unfinished runs are left out; checkpoints and event files are never copied.
#   scripts/collect_records.sh /work/sweeps && git add results/runs
set -euo pipefail
root=${1:?usage: scripts/collect_records.sh OUTPUT_ROOT}
target="$(cd "$(dirname "$0")/.." && pwd)/results/runs"
mkdir -p "$target"
cd "$root"
grep -rlE --include=metrics.json '"status": "(complete|diverged)"' . | xargs --no-run-if-empty cp --parents -p -t "$target"
