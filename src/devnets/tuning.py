"""Pick a method's coefficient per cell from a tuning sweep: ``python scripts/pick_per_cell.py outputs/tune_l2``.

Reads every complete run's metrics.json under the sweep folders, averages the final validation
accuracy (``val_acc``; the test set is never used to choose) over seeds for each value of the swept
key, and prints the best value per cell as the YAML block that ``conf/per_cell/paper.yaml`` takes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from devnets.dataset_info import DATASETS
from devnets.results import CorruptMetrics, read_metrics


def tuning_runs(sweep_dirs: list[Path], key: str) -> pd.DataFrame:
    rows = []
    for sweep_dir in sweep_dirs:
        for path in sorted(sweep_dir.rglob("metrics.json")):
            try:
                metrics = read_metrics(path.parent)
            except CorruptMetrics as error:
                print(f"warning: skipped {error}", file=sys.stderr)
                continue
            if metrics["status"] != "complete" or not metrics.get("val_acc"):
                continue
            rows.append({
                "dataset": metrics["dataset"], "n_train": cell_size(metrics), "hidden": metrics["hidden"],
                "seed": metrics["seed"], "value": metrics["config"]["method"][key],
                "val_acc": metrics["val_acc"][-1], "test_acc": metrics["final_test_acc"],
            })
    return pd.DataFrame(rows)


def cell_size(metrics: dict) -> int:
    """The training-set size of the cell a tuning run chooses for: its ``n_train``, or the whole training set
    when the run split that into ``n_train`` and the validation samples (55,000 + 5,000 for MNIST's 60,000)."""
    n_train = metrics["n_train"]
    val_size = ((metrics.get("config") or {}).get("data") or {}).get("val_size") or 0
    info = DATASETS.get(metrics["dataset"])
    return info.train_size if info is not None and n_train + val_size == info.train_size else n_train


def best_per_cell(runs: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the value with the highest mean final validation accuracy (ties: the smaller value)."""
    means = runs.groupby(["dataset", "n_train", "hidden", "value"], as_index=False)[["val_acc", "test_acc"]].mean()
    means = means.sort_values(["dataset", "n_train", "hidden", "val_acc", "value"], ascending=[1, 1, 1, 0, 1])
    return means.groupby(["dataset", "n_train", "hidden"], as_index=False).first()


def as_yaml(best: pd.DataFrame, key: str, source: str) -> str:
    lines = [f"{key}:", f"  # Chosen by devnets.tuning from {source} (best mean final val/acc)."]
    for dataset, cells in best.groupby("dataset", sort=True):
        lines.append(f"  {dataset}:")
        for n_train, row in cells.groupby("n_train", sort=True):
            values = ", ".join(f"h{r.hidden}: {r.value:g}" for r in row.itertuples())
            lines.append(f"    n{n_train}: {{{values}}}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path)
    parser.add_argument("--key", default="l2", help="the swept key under method (default: l2)")
    args = parser.parse_args(argv)
    for sweep_dir in args.sweep_dirs:
        if not sweep_dir.is_dir():
            parser.exit(2, f"error: sweep_dirs: {sweep_dir} is not a folder\n")
    runs = tuning_runs(args.sweep_dirs, args.key)
    if runs.empty:
        parser.exit(2, f"error: sweep_dirs: no complete runs with a validation curve under {args.sweep_dirs}\n")
    best = best_per_cell(runs)
    print(best.to_string(index=False), file=sys.stderr)
    print(as_yaml(best, args.key, " ".join(str(d) for d in args.sweep_dirs)))


if __name__ == "__main__":
    main()
