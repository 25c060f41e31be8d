"""Reading runs: every metrics.json under the sweep folders as one row, grouped into cells and variants."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from devnets.results import METRICS_FILE, CorruptMetrics, read_metrics
from devnets.run_folder import process_ended

GROUP = ["dataset", "n_train", "hidden", "method"]
CELL = [*GROUP, "variant"]
METHODS = ("baseline", "dropout", "l2", "bdnn_dsd", "bsp")
STATUS_ORDER = ("complete", "diverged", "failed", "running", "interrupted", "unreadable")
# Settings that never make a variant: the seed's, the callbacks' copies of method.* (interpolated), and
# the trainer's display and device switches.
NOT_VARIANT = (
    "seed", "data.seed", "method.callbacks.", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps", "trainer.accelerator", "trainer.devices",
)
SENSITIVITY = {"count_threshold": "T_num", "bound_step": "R_d", "initial_bound": "R_i"}
# A run folder as train.py lays it out (paths.run_subdir), with an optional variant folder before the seed's.
RUN_PATH = re.compile(r"(?:^|/)(?P<dataset>[^/]+)-n(?P<n_train>\d+)/h(?P<hidden>\d+)/(?P<method>[^/]+)/(?:[^/]+/)?"
                      r"seed(?P<seed>\d+)$")


class NothingToAggregate(RuntimeError):
    """No metrics.json under the sweep dirs could be read; ``warnings`` says why for each."""

    def __init__(self, message: str, warnings: Sequence[str]):
        super().__init__(message)
        self.warnings = list(warnings)


def load_paper_tables() -> pd.DataFrame:
    """The papers' values, one per row; ``value`` is the text as printed, ``number`` the float."""
    with resources.files("devnets").joinpath("paper_tables.csv").open() as handle:
        table = pd.read_csv(handle, dtype={"table": str, "value": str})
    table["number"] = table["value"].astype(float)
    return table


def flat_settings(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``config`` as dotted keys -> JSON text of each leaf, without the NOT_VARIANT settings."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_settings(value, f"{name}."))
        elif not name.startswith(NOT_VARIANT):
            flat[name] = json.dumps(value, sort_keys=True)
    return flat


def number(value: Any) -> float:
    """``value`` as a float; NaN for anything that is not a number (None, a string, a list)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def first_given(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def run_record(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    absent = [key for key in GROUP + ["seed"] if metrics.get(key) is None]
    if absent:
        raise ValueError(f"no {', '.join(absent)}")
    config = metrics.get("config") or {}
    method_settings = config.get("method") or {}
    method_stats = metrics.get("method_stats") or {}
    compression = number(method_stats.get("compression"))
    max_epochs = number(first_given(
        metrics.get("max_epochs"), (config.get("trainer") or {}).get("max_epochs"), metrics.get("epochs")))
    settings = flat_settings(config)
    if math.isfinite(max_epochs):  # the epochs a run is set to train separate its cell, also where config lacks them
        settings["trainer.max_epochs"] = json.dumps(int(max_epochs))
    return {
        "path": str(run_dir),
        "experiment": metrics.get("experiment"),
        "dataset": str(metrics["dataset"]),
        "n_train": int(metrics["n_train"]),
        "hidden": int(metrics["hidden"]),
        "method": str(metrics["method"]),
        "seed": int(metrics["seed"]),
        "status": metrics["status"],
        "epochs": number(metrics.get("epochs")),
        "max_epochs": max_epochs,
        "final_test_acc": number(metrics.get("final_test_acc")),
        "best_test_acc": number(metrics.get("best_test_acc")),
        "best_epoch": number(metrics.get("best_epoch")),
        "train_seconds": number(metrics.get("train_seconds")),
        "diverged_epoch": number(metrics.get("diverged_epoch")),
        "compression": 100 * compression,
        **{name: number(method_settings.get(name)) for name in SENSITIVITY},
        "final_val_acc": number((metrics.get("val_acc") or [math.nan])[-1]),
        "error": str(metrics.get("error") or ""),
        "test_acc": [number(value) for value in metrics.get("test_acc") or []],
        # for the plots: the final weights' histograms (runs since they were recorded), BDNN-dsd's per-epoch counts
        "weight_histograms": metrics.get("weight_histograms") or None,
        "per_epoch": method_stats.get("per_epoch") or None,
        "bounded_weights": number(method_stats.get("bounded_weights")),
        "settings": settings,
        "method_settings": json.dumps(
            {key: value for key, value in method_settings.items() if key not in ("name", "callbacks")},
            sort_keys=True,
        ) if method_settings else "",
        # a run read from a runs table: its variant label and its L against each reference, as written there
        "recorded_variant": None,
        "recorded_rates": None,
    }


def table_records(path: Path) -> list[dict[str, Any]]:
    """The runs of a runs table (the runs.csv aggregate writes: cli.RUN_COLUMNS and the L columns), as
    :func:`run_record` gives a run's metrics.json, with the variant and L as aggregate wrote them. It holds
    the runs of sweeps from before each run's metrics.json was committed (results/runs/grid_full/
    earlier_runs.csv): every number the tables need, not the curves, histograms or settings."""
    table = pd.read_csv(path, dtype={"variant": str, "error": str, "experiment": str}, keep_default_na=True)
    absent = [column for column in [*GROUP, "seed", "status"] if column not in table.columns]
    if absent:
        raise ValueError(f"{path}: not a runs table aggregate wrote (no {', '.join(absent)} column)")
    records = []
    for row in table.to_dict("records"):
        complete = row["status"] == "complete"
        metrics = {
            key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()
        }
        record = run_record(Path(str(row.get("path") or path)), {
            **metrics,
            "max_epochs": first_given(metrics.get("max_epochs"), metrics.get("epochs") if complete else None),
            "test_acc": None, "config": None, "error": metrics.get("error"),
        })
        record["compression"] = number(metrics.get("compression"))  # already a percentage there
        for name in SENSITIVITY:
            record[name] = number(metrics.get(name))
        record["final_val_acc"] = number(metrics.get("final_val_acc"))
        record["recorded_variant"] = metrics.get("variant") or ""
        record["recorded_rates"] = {
            key: number(value) for key, value in metrics.items() if key == "L" or key.startswith("L_vs_")
        }
        records.append(record)
    return records


def unreadable_record(run_dir: Path, reason: str) -> dict[str, Any] | None:
    """A run whose metrics.json cannot be read, placed in its cell by its folder's path; None off the layout."""
    match = RUN_PATH.search(run_dir.as_posix())
    if match is None:
        return None
    fields = {**match.groupdict(), "status": "unreadable", "error": f"{METRICS_FILE}: {reason}"}
    for key in ("n_train", "hidden", "seed"):
        fields[key] = int(fields[key])
    return run_record(run_dir, fields)


def read_runs(sweep_dirs: Sequence[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every run under ``sweep_dirs`` (one whose metrics.json is unreadable as status ``unreadable``, when its
    path names its cell; one left ``running`` by a process that is gone as ``interrupted``), and a warning for
    each metrics.json that is not readable."""
    runs, warnings, seen = [], [], set()
    for sweep in sweep_dirs:
        if sweep.is_file():  # a runs table (.csv)
            runs.extend(table_records(sweep))
            continue
        for path in sorted(sweep.rglob(METRICS_FILE)):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                metrics = read_metrics(path.parent)
                if metrics.get("status") == "running" and process_ended(path.parent):
                    metrics["status"] = "interrupted"  # its process is gone: it will not finish unless run again
                runs.append(run_record(path.parent, metrics))
                continue
            except CorruptMetrics as error:
                reason = str(error).removeprefix(f"{path}: ")
            except OSError as error:
                reason = str(error.strerror or error)
            except (TypeError, ValueError) as error:  # valid JSON, but not the fields a run writes
                reason = str(error)
            warnings.append(f"skipped {path}: {reason}")
            record = unreadable_record(path.parent, reason)
            if record is not None:
                runs.append(record)
    return runs, warnings


def variant_labels(runs: pd.DataFrame) -> pd.Series:
    """Per run, the settings (other than the seed's) in which the runs of its group differ: '' if none.

    A setting only some runs have (a switch added to devnets after the others ran) varies only where the
    runs that have it differ: a new switch's default is the behaviour that came before it. A setting that
    repeats another across every run (``model.l2`` interpolated from ``method.l2``) is named once.
    """
    labels = pd.Series("", index=runs.index, dtype=object)
    for _, group in runs.groupby(GROUP, sort=False):
        known = group["settings"][group["settings"].map(bool)]
        keys = sorted(set().union(*known)) if len(known) else []
        columns = {key: tuple(settings.get(key) for settings in known) for key in keys}
        varying = [key for key in keys if len({value for value in columns[key] if value is not None}) > 1]
        varying = [key for rank, key in enumerate(varying) if columns[key] not in map(columns.get, varying[:rank])]
        for index, settings in known.items():
            labels[index] = ", ".join(
                f"{key.removeprefix('method.')}={settings.get(key, 'unset')}" for key in varying
            )
    recorded = runs["recorded_variant"].notna()
    labels[recorded] = runs.loc[recorded, "recorded_variant"]
    # A runs table keeps no settings, so a record beside its rows cannot be told apart by them: one of another
    # experiment (a reading's sweep) is named by its experiment, never read as a rerun of the table's rows.
    table_experiments = runs[recorded].groupby(GROUP)["experiment"].agg(set)
    for index in runs.index[~recorded & (labels == "") & runs["experiment"].notna()]:
        experiments = table_experiments.get(tuple(runs.loc[index, GROUP]))
        if experiments and runs.loc[index, "experiment"] not in experiments:
            labels[index] = f"experiment={runs.loc[index, 'experiment']}"
    return labels


def natural(text: str) -> list:
    """Sort key that orders ``count_threshold=5`` before ``count_threshold=20``."""
    return [(0, float(part), "") if index % 2 else (1, 0.0, part)
            for index, part in enumerate(re.split(r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)", text))]


def method_rank(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


def drop_duplicates(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One run per cell and seed: the most finished (complete first), a run's record before a runs table's
    row (which has no curves), then the first by path."""
    rank = runs["status"].map({status: rank for rank, status in enumerate(STATUS_ORDER)})
    ordered = runs.assign(_rank=rank, _table=runs["recorded_variant"].notna()).sort_values(
        ["_rank", "_table", "path"], kind="stable").drop(columns=["_rank", "_table"])
    kept: dict[tuple, str] = {}
    dropped, warnings = [], []
    keys = ordered[[*CELL, "seed"]].itertuples(index=False)
    for index, key, path in zip(ordered.index, keys, ordered["path"], strict=True):
        if key in kept:
            dropped.append(index)
            warnings.append(f"ignored {path}: the same cell and seed as {kept[key]}")
        else:
            kept[key] = path
    return runs.drop(index=dropped), warnings


def expected_seeds(runs: pd.DataFrame, seeds: Sequence[int] | None) -> list[int]:
    """``seeds`` as given (``--seeds``), or else every seed that some run read has."""
    return sorted(set(seeds) if seeds is not None else set(runs["seed"]))


def mixed_protocols(runs: pd.DataFrame) -> list[str]:
    """Warnings for runs set to different epochs read together, and for a cell holding runs of several
    experiments (single runs and sweeps share ``outputs/runs``)."""
    epochs = runs["max_epochs"].dropna().value_counts().sort_index()
    warnings = [
        "runs set to different epochs are read together: "
        + ", ".join(f"{value:.0f} epochs ({count} runs)" for value, count in epochs.items())
        + "; a cell's runs of other epochs are its variants, and each run is compared only with reference runs "
        "of its epochs"
    ] if len(epochs) > 1 else []
    for key, cell in runs.dropna(subset=["experiment"]).groupby(CELL, sort=True):
        if cell["experiment"].nunique() > 1:
            by_experiment = cell.groupby("experiment")["seed"].agg(seeds_text)
            warnings.append(f"{cell_name(*key)} holds runs of several experiments: "
                            + ", ".join(f"{name} (seeds {seeds})" for name, seeds in by_experiment.items()))
    return warnings


def cell_name(dataset: str, n_train: int, hidden: int, method: str, variant: str) -> str:
    return f"{dataset}-n{n_train} h{hidden} {method}" + (f" ({variant})" if variant else "")


def seeds_text(seeds: Iterable[int]) -> str:
    return " ".join(str(seed) for seed in sorted(seeds))
