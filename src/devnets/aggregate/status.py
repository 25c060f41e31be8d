"""A sweep's progress: ``devnets-status SWEEP_DIR...`` (the same as ``devnets-aggregate --status``).

Per cell (dataset, n_train, hidden, method, variant as devnets.aggregate groups them), how many of the
expected seeds are complete, running, interrupted (also a run whose record says running but whose process,
on this machine, is gone: devnets.aggregate.runs.read_runs), failed (failed, or a metrics.json that cannot be
read), diverged and not started, and the time left: each unfinished run's epochs left (a running or interrupted
run's done epochs are counted from its train.log's epoch lines) at the cell's seconds per epoch, the mean of
``train_seconds / epochs`` over its complete runs (over the complete runs of the same dataset, n_train and
hidden when the cell has none, else the running runs' own pace over their last epochs in train.log, else the
complete runs of a dataset of as many inputs at the same n_train and hidden).
The ETA divides the total by the runs at a time (``--jobs``, default the runs running now, at least one).
With ``--sweep OVERRIDE...`` (the sweep's ``train.py -m`` overrides) the cells are the sweep's, every job
of it counted (devnets.sweep_plan), a job no run has reached as not started; else the cells some run has
reached, and the jobs of the sweep last started in each SWEEP_DIR (its multirun.yaml) not started yet.
Reads metrics.json and train.log files only, and composes the config: no torch, no lightning.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from devnets.aggregate.markdown import DATASET_TITLES, markdown_table
from devnets.aggregate.runs import (
    CELL,
    NothingToAggregate,
    drop_duplicates,
    expected_seeds,
    read_runs,
    run_record,
    variant_labels,
)
from devnets.dataset_info import DATASETS
from devnets.sweep_plan import planned_runs

COUNTS = {"complete": ("complete",), "running": ("running",), "interrupted": ("interrupted",),
          "failed": ("failed", "unreadable"), "diverged": ("diverged",)}
UNFINISHED = ("running", "interrupted")  # a rerun resumes an interrupted run from its last checkpoint
SIZE = ["dataset", "n_train", "hidden"]
SHAPE = ["inputs", "n_train", "hidden"]
# devnets.callbacks.run_record's line after each epoch, as conf/hydra/default.yaml formats it in train.log.
EPOCH_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[devnets\.epochs\]\[INFO\] - epoch (\d+):", re.M)
MULTIRUN_FILE = "multirun.yaml"  # Hydra's record of a sweep's config and overrides, in its folder
RECENT_EPOCHS = 20  # a running run's pace: over its last epochs, after any stop and resume
LOG_TAIL_BYTES = 64 * 1024


def duration(seconds: float) -> str:
    """``2 h 05 min``, ``7 min``, or ``unknown`` for NaN."""
    if not math.isfinite(seconds):
        return "unknown"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def logged_progress(run_dir: str) -> tuple[float, float]:
    """A running run's epochs done and its seconds per epoch, the median gap between its last RECENT_EPOCHS
    epoch lines since it last (re)started in its train.log (a median, so a run paused for a while, as
    SIGSTOP pauses a sweep, keeps its pace); NaN for what the log does not give."""
    try:
        with open(Path(run_dir) / "train.log", "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            lines = EPOCH_LINE.findall(log.read().decode("utf-8", "replace"))
    except OSError:
        return math.nan, math.nan
    if not lines:
        return math.nan, math.nan
    first = len(lines) - 1  # back to where the epochs stop counting up by one: a resume from a checkpoint
    while first > 0 and len(lines) - first < RECENT_EPOCHS and int(lines[first - 1][1]) == int(lines[first][1]) - 1:
        first -= 1
    end_epoch = float(lines[-1][1])
    if first == len(lines) - 1:
        return end_epoch, math.nan
    try:
        times = [datetime.strptime(time, "%Y-%m-%d %H:%M:%S,%f") for time, _ in lines[first:]]
    except ValueError:  # not a time
        return end_epoch, math.nan
    return end_epoch, statistics.median((later - earlier).total_seconds() for earlier, later in pairwise(times))


def seconds_per_epoch(runs: pd.DataFrame, own_pace: pd.Series) -> pd.Series:
    """Per run, its cell's mean seconds per epoch over complete runs, else its size's, else the mean pace of
    the cell's running runs (``own_pace``), else of its size's, else its shape's (the complete runs of another
    dataset of as many inputs, at the same n_train and hidden: Fashion-MNIST's epoch costs MNIST's); NaN
    without any."""
    runs = runs.assign(inputs=runs["dataset"].map(lambda name: DATASETS[name].input_dim if name in DATASETS else name))
    complete = runs[(runs["status"] == "complete") & (runs["epochs"] > 0)]
    per_epoch = (complete["train_seconds"] / complete["epochs"]).rename("per_epoch")

    def mean_over(columns: list[str], values: pd.Series) -> pd.Series:
        """Per run, the mean of ``values`` over the runs that share its ``columns``."""
        means = pd.concat([runs.loc[values.index, columns], values], axis=1).groupby(columns)[values.name].mean()
        return runs[columns].apply(tuple, axis=1).map(means)

    by_cell, by_size, by_shape = (mean_over(columns, per_epoch) for columns in (CELL, SIZE, SHAPE))
    paced = own_pace.rename("pace")
    return by_cell.fillna(by_size).fillna(mean_over(CELL, paced)).fillna(mean_over(SIZE, paced)).fillna(by_shape)


def progress(runs: pd.DataFrame, expected: Sequence[int]) -> pd.DataFrame:
    """One row per cell: the expected seeds by status, seconds per epoch and seconds of training left."""
    runs = runs[runs["seed"].isin(expected)].copy()
    unfinished = runs["status"].isin(UNFINISHED)
    logged = pd.DataFrame([logged_progress(path) for path in runs.loc[unfinished, "path"]],
                          index=runs.index[unfinished], columns=["epochs", "pace"], dtype=float)
    runs.loc[unfinished, "epochs"] = runs.loc[unfinished, "epochs"].fillna(logged["epochs"])
    runs["per_epoch"] = seconds_per_epoch(runs, logged["pace"].reindex(runs.index))
    rows = []
    for key, group in runs.groupby(CELL, sort=True):
        row = dict(zip(CELL, key, strict=True))
        row |= {name: int(group["status"].isin(statuses).sum()) for name, statuses in COUNTS.items()}
        row["not started"] = int((group["status"] == "not started").sum()) + len(expected) - len(group)
        planned = group["max_epochs"].max()
        unfinished = group[group["status"].isin(UNFINISHED)]
        epochs_left = (planned - unfinished["epochs"].fillna(0)).clip(lower=0).sum() + row["not started"] * planned
        row["s/epoch"] = group["per_epoch"].iloc[0]
        row["left_s"] = epochs_left * row["s/epoch"] if epochs_left else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def last_sweep(sweep_dir: Path) -> list[str] | None:
    """The overrides of the sweep last started in ``sweep_dir``, as Hydra saved them there (multirun.yaml);
    None without one."""
    path = sweep_dir / MULTIRUN_FILE
    if not path.is_file():
        return None
    overrides = OmegaConf.load(path).hydra.overrides
    return [override for override in overrides.hydra if not override.startswith("hydra.mode=")] + list(overrides.task)


def planned_records(
    sweep_dirs: Sequence[Path], records: list[dict[str, Any]], sweep: Sequence[str]
) -> list[dict[str, Any]]:
    """Per job of the sweep ``train.py -m SWEEP``, the record of its run under ``sweep_dirs`` (each the sweep's
    folder, or the output root above it), or a record of status ``not started`` for one that has none."""
    found = {Path(record["path"]).resolve(): record for record in records}
    planned = []
    for job in planned_runs(sweep):
        folders = [folder.resolve() for sweep_dir in sweep_dirs
                   for folder in (sweep_dir / job.subdir, sweep_dir / job.sweep_dir.name / job.subdir)]
        record = next((found[folder] for folder in folders if folder in found), None)
        planned.append(record or run_record(sweep_dirs[0] / job.subdir, job.metrics))
    return planned


def status_text(
    sweep_dirs: Sequence[Path], seeds: Sequence[int] | None, jobs: int | None, sweep: Sequence[str] | None = None
) -> tuple[str, list[str]]:
    """The progress table of ``sweep_dirs`` (of the jobs of ``train.py -m SWEEP`` alone, when given) and its
    ETA, as Markdown, and the warnings."""
    records, warnings = read_runs([path for path in sweep_dirs if path.exists()])
    if sweep is not None:
        records = planned_records(sweep_dirs, records, sweep)
    else:  # the jobs of the sweep last started in each folder that no run has reached yet
        for sweep_dir in sweep_dirs:
            last = last_sweep(sweep_dir)
            try:
                planned = [] if last is None else planned_records([sweep_dir], records, last)
            except Exception as error:  # the config has changed since: the runs alone are listed
                warnings.append(f"{sweep_dir / MULTIRUN_FILE}: its jobs not started are not listed ({error})")
                continue
            records += [record for record in planned if record["status"] == "not started"]
    if not records:
        raise NothingToAggregate(f"no metrics.json under {', '.join(map(str, sweep_dirs))}", warnings)
    runs = pd.DataFrame(records)
    runs["variant"] = variant_labels(runs)
    runs, _ = drop_duplicates(runs)
    expected = expected_seeds(runs, seeds)
    cells = progress(runs, expected)
    with_variants = cells["variant"].astype(bool).any()
    header = ["dataset", "n_train", "hidden", "method", *(["variant"] if with_variants else []), *COUNTS,
              "not started", "s/epoch", "left"]
    body = [
        [DATASET_TITLES.get(cell.dataset, cell.dataset), str(cell.n_train), str(cell.hidden), cell.method,
         *([cell.variant] if with_variants else []), *(str(cell[name]) for name in [*COUNTS, "not started"]),
         f"{cell['s/epoch']:.2f}" if math.isfinite(cell["s/epoch"]) else "—", duration(cell["left_s"])]
        for _, cell in cells.iterrows()
    ]
    running = int(cells["running"].sum())
    at_once = jobs or max(running, 1)
    total, untimed = cells["left_s"].sum(min_count=1), cells["left_s"].isna().sum()
    counts = ", ".join(f"{cells[name].sum()} {name}" for name in [*COUNTS, "not started"])
    by = "the sweep has" if sweep else "some run has"
    return "\n".join([
        markdown_table(header, body), "",
        f"Expected seeds: {' '.join(map(str, expected))}" + ("" if seeds is not None else
                                                               f" (every seed {by}; --seeds sets them)")
        + f". Runs: {counts}.",
        f"Left: {duration(total)} of training, ETA {duration(total / at_once)} at {at_once} run(s) at a time"
        + (f", not counting {untimed} cell(s) with no run of their size or shape to time" if untimed else "") + ".",
    ]) + "\n", warnings
