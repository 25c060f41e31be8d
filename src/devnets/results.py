"""metrics.json: the per-run results file that aggregate.py and users' own scripts read.

A run writes it when it starts (``status: running``), and again when it ends (``complete``, ``interrupted``,
``failed`` or ``diverged``). Every write goes to a temporary file that then replaces the old one,
so a run killed at any moment never leaves a file that reads as complete.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
STATUSES = ("running", "complete", "failed", "diverged", "interrupted")


class CorruptMetrics(ValueError):
    pass


def write_metrics(run_dir: str | os.PathLike, metrics: dict[str, Any]) -> dict[str, Any]:
    """Atomically replace the run's metrics.json; returns the content as written."""
    path = Path(run_dir) / METRICS_FILE
    metrics = _finite_or_null(metrics)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{METRICS_FILE}.partial")
    try:
        with open(partial, "w") as handle:
            json.dump(metrics, handle, indent=1, allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except OSError:  # a full or read-only disk: leave no half-written file behind
        partial.unlink(missing_ok=True)
        raise
    return metrics


def _finite_or_null(value: Any) -> Any:
    """NaN and infinities (a diverged run's losses) become null: the file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value


def read_metrics(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's metrics, None if it has none yet; CorruptMetrics names a file that cannot be read."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptMetrics(f"{path}: not valid JSON ({error})") from error
    if not isinstance(metrics, dict) or metrics.get("status") not in STATUSES:
        raise CorruptMetrics(f"{path}: no 'status' among {list(STATUSES)}")
    return metrics
