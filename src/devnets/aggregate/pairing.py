"""Pairing each run with the reference methods' runs of its seed, and the convergence rate L against them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from devnets.claims import CLAIM_REFERENCES
from devnets.convergence import convergence_rate


def rate_name(reference: str) -> str:
    """Column of L against ``reference``: the papers' ``L`` for the baseline, ``L_vs_<method>`` otherwise."""
    return "L" if reference == "baseline" else f"L_vs_{reference}"


def matched_reference(runs: pd.DataFrame, reference: str) -> list[int | None]:
    """Per run, the row of the ``reference`` method's complete run it is compared with: of that method's
    runs of the same cell, seed and epochs, the only one, or else the one whose settings agree with the run's on
    every setting in which those runs differ (that the run has too); None for an incomplete run, a run of
    the reference itself, or no single such run."""
    complete = runs[(runs["status"] == "complete") & (runs["method"] == reference)]
    by_seed = dict(list(complete.groupby(["dataset", "n_train", "hidden", "seed", "max_epochs"])))
    matches = []
    for row in runs.itertuples():
        candidates = by_seed.get((row.dataset, row.n_train, row.hidden, row.seed, row.max_epochs))
        usable = candidates is not None and row.status == "complete" and row.method != reference
        matches.append(agreeing_run(candidates, row.settings) if usable else None)
    return matches


def agreeing_run(candidates: pd.DataFrame, settings: dict[str, str]) -> int | None:
    if len(candidates) == 1:
        return candidates.index[0]
    keys = set().union(*candidates["settings"]) & set(settings)
    varying = [key for key in keys if len({theirs.get(key) for theirs in candidates["settings"]}) > 1]
    agreeing = [index for index, theirs in candidates["settings"].items()
                if all(theirs.get(key) == settings[key] for key in varying)]
    return agreeing[0] if len(agreeing) == 1 else None


def add_rates(runs: pd.DataFrame, references: Sequence[str]) -> pd.DataFrame:
    """Per complete run, L against each reference method's matched run (``matched_reference``) and, for
    the claims, the gains over the claims' references: ``acc_gain_vs_<m>`` (final accuracy minus the
    matched run's) and ``L_gain_vs_<m>`` (L minus the matched run's L, both against the baseline)."""
    runs = runs.reset_index(drop=True)
    matches = {reference: matched_reference(runs, reference) for reference in {*references, *CLAIM_REFERENCES}}

    def matched(reference: str, column: str) -> list:
        return [runs.at[row, column] if row is not None else math.nan for row in matches[reference]]

    for reference in references:
        name = rate_name(reference)
        runs[name] = [
            convergence_rate(curve, other) if curve and isinstance(other, list) and other
            else (recorded or {}).get(name, math.nan)  # a run read from a runs table: its L as written there
            for curve, other, recorded in zip(
                runs["test_acc"], matched(reference, "test_acc"), runs["recorded_rates"], strict=True
            )
        ]
    for reference in CLAIM_REFERENCES:
        runs[f"acc_gain_vs_{reference}"] = runs["final_test_acc"] - matched(reference, "final_test_acc")
        if reference != "baseline":  # L itself is the comparison with the baseline
            runs[f"L_gain_vs_{reference}"] = runs["L"] - matched(reference, "L")
    return runs
