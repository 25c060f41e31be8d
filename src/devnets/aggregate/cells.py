"""One row per cell: counts of seeds by status, and mean ± std of each measure over the expected seeds."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from devnets.aggregate.pairing import rate_name
from devnets.aggregate.runs import CELL, GROUP, STATUS_ORDER, method_rank, natural, seeds_text
from devnets.claims import epochs_text
from devnets.convergence import mean_std


def summarise(runs: pd.DataFrame, expected: Sequence[int], references: Sequence[str]) -> pd.DataFrame:
    """One row per cell: counts, mean ± std of each measure, and the seeds that do not count. Only the
    ``expected`` seeds count; the others are listed as ``unexpected_seeds``."""
    rows = []
    for key, group in runs.groupby(CELL, sort=False):
        unexpected = group[~group["seed"].isin(expected)]
        group = group[group["seed"].isin(expected)]
        complete = group[group["status"] == "complete"]
        row = dict(zip(CELL, key, strict=True))
        row["n_expected"] = len(expected)
        row["n_complete"] = len(complete)
        row["complete_seeds"] = seeds_text(complete["seed"])
        row["epochs"] = epochs_text(group["max_epochs"])
        row["method_settings"] = next((text for text in group["method_settings"] if text), "")
        measures = {
            "final_acc": "final_test_acc",
            "best_acc": "best_test_acc",
            "val_acc": "final_val_acc",
            **{rate_name(reference): rate_name(reference) for reference in references},
            "compression": "compression",
        }
        for name, column in measures.items():
            row[f"{name}_mean"], row[f"{name}_std"], row[f"{name}_n"] = mean_std(complete[column])
        minutes = complete["train_seconds"].dropna() / 60  # training time, summed over a run's resumed parts
        row["minutes_median"], row["minutes_min"], row["minutes_max"] = minutes.median(), minutes.min(), minutes.max()
        row["core_hours"] = minutes.sum() / 60  # one torch thread per run
        row["missing_seeds"] = seeds_text(set(expected) - set(group["seed"]))
        for status in STATUS_ORDER[1:]:
            row[f"{status}_seeds"] = seeds_text(group.loc[group["status"] == status, "seed"])
        row["unexpected_seeds"] = seeds_text(unexpected["seed"])
        rows.append(row)
    cells = pd.DataFrame(rows)
    variants = {variant: rank for rank, variant in enumerate(sorted(set(cells["variant"]), key=natural))}
    order = pd.DataFrame({
        "method_rank": cells["method"].map(method_rank),
        "variant_rank": cells["variant"].map(variants),
    })
    keys = ["dataset", "n_train", "hidden", "method_rank", "method", "variant_rank"]
    ordered = pd.concat([cells, order], axis=1).sort_values(keys)
    return ordered.drop(columns=list(order)).reset_index(drop=True)


def with_paper_values(cells: pd.DataFrame, papers: pd.DataFrame) -> pd.DataFrame:
    """``cells`` plus a column ``paper_<paper>_<metric>`` for each value the papers give a cell."""
    values = papers.assign(column="paper_" + papers["paper"] + "_" + papers["metric"])
    wide = values.pivot_table(index=GROUP, columns="column", values="number", aggfunc="first").reset_index()
    wide.columns.name = None
    return cells.merge(wide, on=GROUP, how="left")
