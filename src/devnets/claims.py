"""The papers' claims, cell by cell: our value beside the paper's, and whether the claim holds in each.

A claim compares a method with a reference in one measure:

- ``acc_gain``: final test accuracy of the method minus the reference's (points), paired by seed;
- ``L``: the convergence rate against the baseline, L_vs_dropout against dropout (> 1: faster);
- ``L_gain``: the method's L minus the reference's L, both against the baseline, paired by seed (how the
  papers compare two methods' speed: BDNN-dsd Table 2 puts L_BDNN-dsd beside L_drop and L_L2);
- ``compression``: the share of zero weights (%).

Ours is the mean ± sample std over seeds of the per-run values devnets.aggregate computes (each run paired
with the reference's run of the same seed); the paper's side is the same arithmetic on the printed means.
A cell with variants (runs that differ in other settings, such as a fidelity sweep's readings) is judged
per variant, each run against the reference's run of the same seed and readings
(devnets.aggregate.pairing.matched_reference).

A claim is judged only where our runs follow the papers' protocol (PROTOCOL: at least 5 seeds, 500
epochs); elsewhere it reads ``not judged``, unless ``judge_any_protocol`` is set. Each row states its
seeds and epochs.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import pandas as pd

from devnets.convergence import mean_std

CELL_KEY = ["dataset", "n_train", "hidden"]
PROTOCOL = {"seeds": 5, "epochs": 500}  # both papers: 5 runs per cell, 500 epochs
NOT_JUDGED = "not judged"


@dataclass(frozen=True)
class Claim:
    text: str
    paper: str  # whose tables give the paper's side: bdnn_dsd or bsp
    method: str
    measure: str  # acc_gain, L, L_vs_dropout, L_gain or compression
    reference: str | None  # the method compared with (acc_gain, L_gain)
    relation: str  # how ours must compare with ``bound`` for the claim to hold: ">" or "≥"
    bound: float


CLAIMS = (
    Claim("BDNN-dsd is more accurate than the initial network", "bdnn_dsd", "bdnn_dsd", "acc_gain", "baseline", ">", 0),
    Claim("BDNN-dsd is more accurate than dropout", "bdnn_dsd", "bdnn_dsd", "acc_gain", "dropout", ">", 0),
    Claim("BDNN-dsd is more accurate than L2", "bdnn_dsd", "bdnn_dsd", "acc_gain", "l2", ">", 0),
    Claim("BDNN-dsd converges faster than the initial network (L > 1)", "bdnn_dsd", "bdnn_dsd", "L", None, ">", 1),
    Claim("BDNN-dsd converges faster than dropout (L above L_drop)", "bdnn_dsd", "bdnn_dsd", "L_gain", "dropout",
          ">", 0),
    Claim("BDNN-dsd converges faster than L2 (L above L_L2)", "bdnn_dsd", "bdnn_dsd", "L_gain", "l2", ">", 0),
    Claim("BSP compresses the network by 59–90% (share of zero weights ≥ 59%)", "bsp", "bsp", "compression", None,
          "≥", 59),
    Claim("BSP loses no accuracy against the initial network", "bsp", "bsp", "acc_gain", "baseline", "≥", 0),
    Claim("BSP learns faster than the initial network (L_BSP-init > 1)", "bsp", "bsp", "L", None, ">", 1),
    Claim("BSP learns faster than dropout (L_BSP-dropout > 1)", "bsp", "bsp", "L_vs_dropout", None, ">", 1),
)
RELATIONS = {">": operator.gt, "≥": operator.ge}
# The methods the claims compare with; devnets.aggregate adds each run's gains over them.
CLAIM_REFERENCES = ("baseline", "dropout", "l2")
UNITS = {"acc_gain": " pts", "compression": "%"}


def column(claim: Claim) -> str:
    """The per-run column of devnets.aggregate's runs table that holds ``claim``'s measure."""
    if claim.measure in ("acc_gain", "L_gain"):
        return f"{claim.measure.split('_')[0]}_gain_vs_{claim.reference}"
    return claim.measure


def ours(claim: Claim, runs: pd.DataFrame) -> pd.DataFrame:
    """Per cell and variant of ``claim.method``: mean, std and count of the claim's measure over complete runs,
    and the epochs those runs were set to train (``5, 30`` where they differ)."""
    mine = runs[(runs["method"] == claim.method) & (runs["status"] == "complete")]
    rows = []
    for key, group in mine.groupby([*CELL_KEY, "variant"]):
        measured = group[group[column(claim)].map(math.isfinite)]
        rows.append(dict(zip([*CELL_KEY, "variant"], key, strict=True))
                    | dict(zip(("mean", "std", "n"), mean_std(group[column(claim)]), strict=True))
                    | {"epochs": epochs_text(measured["max_epochs"])})
    return pd.DataFrame(rows, columns=[*CELL_KEY, "variant", "mean", "std", "n", "epochs"])


def epochs_text(max_epochs: pd.Series) -> str:
    """The epochs runs were set to train: ``500``, or ``5, 30`` where they differ."""
    return ", ".join(f"{epochs:.0f}" for epochs in sorted(set(max_epochs.dropna())))


def papers_value(claim: Claim, cells: pd.DataFrame, row: pd.Series) -> float:
    """The paper's side of ``claim`` in ``row``'s cell (NaN where the paper prints no value)."""

    def printed(method: str, metric: str) -> float:
        column = f"paper_{claim.paper}_{metric}"
        match = cells[(cells[CELL_KEY] == row[CELL_KEY]).all(axis=1) & (cells["method"] == method)]
        if column not in cells or match.empty:
            return math.nan
        return float(match[column].iloc[0])

    if claim.measure == "acc_gain":
        return printed(claim.method, "acc") - printed(claim.reference, "acc")
    if claim.measure == "L_gain":
        return printed(claim.method, "L") - printed(claim.reference, "L")
    return printed(claim.method, claim.measure)


def judge(claim: Claim, value: float) -> str:
    if not math.isfinite(value):
        return "—"
    return "yes" if RELATIONS[claim.relation](round(value, 2), claim.bound) else "no"


def follows_protocol(seeds: int, epochs: str) -> bool:
    return seeds >= PROTOCOL["seeds"] and epochs == str(PROTOCOL["epochs"])


def claims_table(runs: pd.DataFrame, cells: pd.DataFrame, judge_any_protocol: bool = False) -> pd.DataFrame:
    """One row per claim and cell: ours (mean, std, seeds, epochs), the paper's value, and whether each holds
    (``not judged`` off the papers' protocol unless ``judge_any_protocol``)."""
    rows = []
    for claim in CLAIMS:
        for _, row in ours(claim, runs).iterrows():
            if not row["n"]:  # the cell lacks the reference's runs
                continue
            paper = papers_value(claim, cells, row)
            judged = judge_any_protocol or follows_protocol(row["n"], row["epochs"])
            rows.append({
                "claim": claim.text, **row[[*CELL_KEY, "variant"]].to_dict(),
                "ours_mean": row["mean"], "ours_std": row["std"], "ours_n": row["n"], "epochs": row["epochs"],
                "paper": paper, "holds": judge(claim, row["mean"]) if judged else NOT_JUDGED,
                "holds_in_paper": judge(claim, paper),
            })
    columns = ["claim", *CELL_KEY, "variant", "ours_mean", "ours_std", "ours_n", "epochs", "paper", "holds",
               "holds_in_paper"]
    return pd.DataFrame(rows, columns=columns)
