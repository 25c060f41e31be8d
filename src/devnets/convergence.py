"""The convergence rate L of BDNN-dsd eq. 4.1 and BSP eq. 6: how much sooner a method reaches an accuracy.

For two per-epoch test-accuracy curves, a method's and a reference's (the baseline, or any other
method, as BSP's ``L_BSP-dropout``):

- the levels are every accuracy value either curve attains, up to the lower of the two maxima (the
  levels both curves reach). Between two such values the first-reach epochs cannot change, so these
  levels give every pair of first-reach epochs that any real level would;
- a curve reaches a level at its first epoch (1-based) with accuracy ≥ the level;
- the level chosen is the one where the two first-reach epochs differ most, the highest such level
  on a tie;
- ``L = T_reference / T_method`` there: L > 1 means the method is faster, L < 1 slower, L = 1 when
  the curves reach every common level at the same epoch;
- L is NaN when a curve has no finite value (the curves share no level).

The papers report L as the mean ± std over seeds of the per-seed L, each seed's method run paired
with the same seed's reference run; ``mean_std`` uses the sample std (ddof=1).
docs/reproduction.md ("Convergence rate L") explains this reading of the papers' equations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Convergence:
    """L and where it was measured: the accuracy level and each curve's first epoch at that level."""

    rate: float
    level: float
    epoch_reference: int
    epoch_method: int


NEVER_MEET = Convergence(math.nan, math.nan, 0, 0)


def as_curve(curve: Sequence[float | None]) -> np.ndarray:
    """The curve as floats, NaN (a missing or non-finite epoch) as -inf so that it reaches no level."""
    values = np.asarray(curve, dtype=float).reshape(-1)
    return np.where(np.isfinite(values), values, -np.inf)


def first_epochs(curve: Sequence[float | None], levels: Sequence[float]) -> np.ndarray:
    """The first epoch (1-based) at which ``curve`` is ≥ each level; len(curve) + 1 where it never is."""
    best_so_far = np.maximum.accumulate(as_curve(curve))
    return np.searchsorted(best_so_far, np.asarray(levels, dtype=float), side="left") + 1


def convergence(method: Sequence[float | None], reference: Sequence[float | None]) -> Convergence:
    """L = T_reference / T_method at the common level where the two first-reach epochs differ most."""
    method_curve, reference_curve = as_curve(method), as_curve(reference)
    reached = [curve[np.isfinite(curve)] for curve in (method_curve, reference_curve)]
    if not all(len(values) for values in reached):
        return NEVER_MEET
    top = min(values.max() for values in reached)
    levels = np.unique(np.concatenate(reached))
    levels = levels[levels <= top]
    t_method = first_epochs(method_curve, levels)
    t_reference = first_epochs(reference_curve, levels)
    gap = np.abs(t_reference - t_method)
    chosen = np.flatnonzero(gap == gap.max())[-1]  # levels ascend: the last tie is the highest level
    return Convergence(
        rate=float(t_reference[chosen] / t_method[chosen]),
        level=float(levels[chosen]),
        epoch_reference=int(t_reference[chosen]),
        epoch_method=int(t_method[chosen]),
    )


def convergence_rate(method: Sequence[float | None], reference: Sequence[float | None]) -> float:
    """L of ``method`` against ``reference`` (> 1: the method is faster); NaN if the curves never meet."""
    return convergence(method, reference).rate


def paired_rates(
    method: Mapping[int, Sequence[float]], reference: Mapping[int, Sequence[float]]
) -> dict[int, float]:
    """L per seed for the seeds both ``method`` and ``reference`` (seed -> curve) have."""
    seeds = sorted(set(method) & set(reference))
    return {seed: convergence_rate(method[seed], reference[seed]) for seed in seeds}


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample std (ddof=1; NaN for fewer than two) and count of the finite ``values``."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(finite):
        return math.nan, math.nan, 0
    std = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    return float(finite.mean()), std, len(finite)
