"""Aggregate sweeps into the papers' tables: ``python scripts/aggregate.py SWEEP_DIR... [--out DIR]``.

Every ``metrics.json`` under the sweep dirs is one run. Runs are grouped into cells by dataset,
n_train, hidden and method (and, when runs of one cell differ in other settings, such as a
sensitivity sweep's ``method.count_threshold``, or the epochs a run was set to train, by those settings:
the cell's variant). Only ``complete`` runs of the expected seeds (``--seeds``, or else every seed some run
has) count; each cell names its missing seeds, its failed, diverged, running and unreadable runs, and the
runs of other seeds. Runs set to different epochs, or a cell holding runs of several experiments, are warned
of.

Written to ``--out`` (default ``<first sweep dir>/aggregate/``):

- ``tables.md``: per dataset, our cells beside the papers' values, laid out as each paper's table
  (rows: hidden sizes; columns: methods; a cell reads ``ours (paper)``), then every cell with its
  best accuracy, seeds and uncounted runs. The same text goes to stdout.
- ``cells.csv`` (one row per cell, with the papers' values) and ``runs.csv`` (one row per run).
- ``claims.csv`` and the *Claims* section of tables.md: each of the papers' claims (devnets.claims) per
  cell, our value beside the paper's, its seeds and epochs, and where it holds: ``not judged`` in a cell
  off the papers' protocol (fewer than 5 seeds, or other than 500 epochs) unless ``--judge-any-protocol``.
- PNG plots: mean ± std test-accuracy curves per cell, final weight histograms from ``last.ckpt``,
  and BDNN-dsd's sensitivity to T_num, R_d and R_i when a sweep varies them.

Accuracies are final test accuracies in %, mean ± sample std (ddof=1) over seeds. L is the
convergence rate of devnets.convergence, against the baseline and against dropout (``--against``
adds more methods); the papers' values come from paper_tables.csv in this package.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from devnets.claims import CLAIM_REFERENCES, CLAIMS, NOT_JUDGED, PROTOCOL, UNITS, claims_table, epochs_text
from devnets.convergence import convergence_rate, mean_std
from devnets.results import METRICS_FILE, CorruptMetrics, read_metrics

GROUP = ["dataset", "n_train", "hidden", "method"]
CELL = [*GROUP, "variant"]
METHODS = ("baseline", "dropout", "l2", "bdnn_dsd", "bsp")
DEFAULT_AGAINST = ("dropout",)
STATUS_ORDER = ("complete", "diverged", "failed", "running", "unreadable")
# Settings that never make a variant: the seed's, the callbacks' copies of method.* (interpolated), and
# the trainer's display and device switches.
NOT_VARIANT = (
    "seed", "data.seed", "method.callbacks.", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps", "trainer.accelerator", "trainer.devices",
)
SENSITIVITY = {"count_threshold": "T_num", "bound_step": "R_d", "initial_bound": "R_i"}
DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
PAPER_TITLES = {"bdnn_dsd": "BDNN-dsd", "bsp": "BSP"}
CHECKPOINT = "last.ckpt"
WEIGHT_KEY = re.compile(r"net\.\d+\.weight")
# A run folder as train.py lays it out (paths.run_subdir), with an optional variant folder before the seed's.
RUN_PATH = re.compile(r"(?:^|/)(?P<dataset>[^/]+)-n(?P<n_train>\d+)/h(?P<hidden>\d+)/(?P<method>[^/]+)/(?:[^/]+/)?"
                      r"seed(?P<seed>\d+)$")
# Each paper's tables: (title, [(column heading, method, metric)]); metric "acc" is our final accuracy.
PAPER_LAYOUTS = {
    "bdnn_dsd": [
        ("test accuracy (%)", [
            ("A_init", "baseline", "acc"), ("A_drop", "dropout", "acc"),
            ("A_L2", "l2", "acc"), ("A_BDNN-dsd", "bdnn_dsd", "acc"),
        ]),
        ("convergence rate L against the baseline", [
            ("L_drop", "dropout", "L"), ("L_L2", "l2", "L"), ("L_BDNN-dsd", "bdnn_dsd", "L"),
        ]),
    ],
    "bsp": [
        ("test accuracy (%), convergence rate L and compression (%)", [
            ("A_init", "baseline", "acc"), ("A_dropout", "dropout", "acc"), ("A_BSP", "bsp", "acc"),
            ("L_BSP-init", "bsp", "L"), ("L_BSP-dropout", "bsp", "L_vs_dropout"),
            ("compression", "bsp", "compression"),
        ]),
    ],
}


class NothingToAggregate(RuntimeError):
    """No metrics.json under the sweep dirs could be read; ``warnings`` says why for each."""

    def __init__(self, message: str, warnings: Sequence[str]):
        super().__init__(message)
        self.warnings = list(warnings)


# ----------------------------------------------------------------------------------------------- reading


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
    compression = number((metrics.get("method_stats") or {}).get("compression"))
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
        "settings": settings,
        "method_settings": json.dumps(
            {key: value for key, value in method_settings.items() if key not in ("name", "callbacks")},
            sort_keys=True,
        ) if method_settings else "",
    }


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
    path names its cell), and a warning for each metrics.json that is not readable."""
    runs, warnings, seen = [], [], set()
    for sweep in sweep_dirs:
        for path in sorted(sweep.rglob(METRICS_FILE)):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                metrics = read_metrics(path.parent)
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


# ------------------------------------------------------------------------------------------ aggregating


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
    return labels


def natural(text: str) -> list:
    """Sort key that orders ``count_threshold=5`` before ``count_threshold=20``."""
    return [(0, float(part), "") if index % 2 else (1, 0.0, part)
            for index, part in enumerate(re.split(r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)", text))]


def drop_duplicates(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One run per cell and seed: the most finished (complete first), then the first by path."""
    rank = runs["status"].map({status: rank for rank, status in enumerate(STATUS_ORDER)})
    ordered = runs.assign(_rank=rank).sort_values(["_rank", "path"], kind="stable").drop(columns="_rank")
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
        runs[rate_name(reference)] = [
            convergence_rate(curve, other) if isinstance(other, list) else math.nan
            for curve, other in zip(runs["test_acc"], matched(reference, "test_acc"), strict=True)
        ]
    for reference in CLAIM_REFERENCES:
        runs[f"acc_gain_vs_{reference}"] = runs["final_test_acc"] - matched(reference, "final_test_acc")
        if reference != "baseline":  # L itself is the comparison with the baseline
            runs[f"L_gain_vs_{reference}"] = runs["L"] - matched(reference, "L")
    return runs


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


# --------------------------------------------------------------------------------------------- markdown


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub table padded to line up in a terminal."""
    rows = [[str(cell).replace("|", "\\|") for cell in row] for row in rows]
    widths = [max(len(str(title)), *(len(row[i]) for row in rows)) for i, title in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        padded = (str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    return "\n".join([line(header), line(["-" * width for width in widths]), *map(line, rows)])


def ours_text(cell: pd.Series | None, measure: str) -> str:
    """``mean ± std``, with ``[n/N]`` when fewer than the expected seeds count; ``—`` for none."""
    if cell is None or not cell[f"{measure}_n"]:
        return "—"
    mean, std, count = cell[f"{measure}_mean"], cell[f"{measure}_std"], cell[f"{measure}_n"]
    text = f"{mean:.2f}" + (f" ± {std:.2f}" if math.isfinite(std) else "")
    return text + (f" [{count}/{cell['n_expected']}]" if count < cell["n_expected"] else "")


def paper_text(values: dict[str, str], metric: str) -> str:
    if metric not in values:
        return "(—)"
    std = values.get(f"{metric}_std")
    return f"({values[metric]}" + (f" ± {std})" if std else ")")


MEASURE = {"acc": "final_acc", "L": "L", "L_vs_dropout": "L_vs_dropout", "compression": "compression"}


def row_keys(cells: pd.DataFrame) -> list[tuple[int, str]]:
    """(hidden, variant) rows: each hidden size our cells have, with each variant of that size (the papers'
    other sizes are not rows: they would read ``—`` throughout)."""
    rows = []
    for hidden in sorted(set(cells["hidden"])):
        variants = sorted(set(cells.loc[cells["hidden"] == hidden, "variant"]), key=natural)
        rows += [(hidden, variant) for variant in variants]
    return rows


def paper_tables_md(cells: pd.DataFrame, papers: pd.DataFrame, paper: str) -> list[str]:
    """The paper's tables for one dataset and n_train, each cell ``ours (paper)``; [] if it has none."""
    lookup: dict[tuple[int, str], dict[str, str]] = {}
    for row in papers.itertuples():
        lookup.setdefault((row.hidden, row.method), {})[row.metric] = row.value
    by_key = {(cell["hidden"], cell["method"], cell["variant"]): cell for _, cell in cells.iterrows()}
    lines = []
    for title, columns in PAPER_LAYOUTS[paper]:
        metrics = {(method, metric) for _, method, metric in columns}
        shown = papers[[pair in metrics for pair in zip(papers["method"], papers["metric"], strict=True)]]
        own = cells[cells["method"].isin({method for _, method, _ in columns})]
        if shown.empty or own.empty:
            continue
        numbers = ", ".join(sorted(set(shown["table"]), key=lambda table: (len(table), table)))
        body = []
        for hidden, variant in row_keys(own):
            body.append([f"{hidden}" + (f" ({variant})" if variant else "")] + [
                f"{ours_text(by_key.get((hidden, method, variant)), MEASURE[metric])} "
                f"{paper_text(lookup.get((hidden, method), {}), metric)}"
                for _, method, metric in columns
            ])
        header = ["hidden"] + [f"{heading} ({method})" for heading, method, _ in columns]
        lines += [f"### {PAPER_TITLES[paper]} Table {numbers}: {title}", "", markdown_table(header, body), ""]
    return lines


def not_counted(cell: pd.Series) -> str:
    """``missing 3 4; failed 2``: the expected seeds of a cell that do not count, by reason."""
    statuses = ("missing", *STATUS_ORDER[1:], "unexpected")
    return "; ".join(f"{status} {cell[f'{status}_seeds']}" for status in statuses if cell[f"{status}_seeds"])


def all_cells_md(cells: pd.DataFrame, references: Sequence[str]) -> list[str]:
    rates = [rate_name(reference) for reference in references]
    header = ["hidden", "method", "variant", "seeds", "epochs", "final acc (%)", "best acc (%)", *rates,
              "compression (%)", "not counted"]
    measures = ["final_acc", "best_acc", *rates, "compression"]
    if cells["val_acc_n"].any():  # runs with a validation split (val_size > 0), e.g. a tuning sweep
        header.insert(7, "final val acc (%)")
        measures.insert(2, "val_acc")
    body = [
        [str(cell["hidden"]), cell["method"], cell["variant"], f"{cell['n_complete']}/{cell['n_expected']}",
         cell["epochs"], *(ours_text(cell, measure) for measure in measures), not_counted(cell)]
        for _, cell in cells.iterrows()
    ]
    if not cells["variant"].astype(bool).any():
        header.pop(2)
        body = [row[:2] + row[3:] for row in body]
    return ["### All cells", "", markdown_table(header, body), ""]


def uncounted_md(runs: pd.DataFrame, cells: pd.DataFrame) -> list[str]:
    """A line per seed that does not count: missing, failed (with its error), diverged, running, unreadable
    (with the reason) or not among the expected seeds."""
    lines = []
    for _, cell in cells.iterrows():
        name = f"h{cell['hidden']} {cell['method']}" + (f" ({cell['variant']})" if cell["variant"] else "")
        if cell["missing_seeds"]:
            seeds = "seeds" if " " in cell["missing_seeds"] else "seed"
            lines.append(f"- {name}: {seeds} {cell['missing_seeds']} missing (no metrics.json)")
        unexpected = set(map(int, cell["unexpected_seeds"].split()))
        mine = runs[(runs[CELL] == cell[CELL]).all(axis=1)
                    & ((runs["status"] != "complete") | runs["seed"].isin(unexpected))]
        for run in mine.sort_values("seed").itertuples():
            detail = run.status
            if run.seed in unexpected:
                detail = f"{run.status}, not an expected seed"
            elif run.status in ("failed", "unreadable") and run.error:
                detail = f"{run.status}: {run.error[:120]}"
            elif run.status == "diverged" and math.isfinite(run.diverged_epoch):
                detail = f"diverged at epoch {run.diverged_epoch:.0f}"
            lines.append(f"- {name}: seed {run.seed} {detail} (`{run.path}`)")
    return ["### Runs not counted", "", *lines, ""] if lines else []


def claim_value(mean: float, std: float, unit: str) -> str:
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if math.isfinite(std) else "") + unit


def claims_md(claims: pd.DataFrame, judge_any_protocol: bool) -> list[str]:
    """A summary line per claim and variant (in how many cells it holds, here and in the paper), then
    each cell."""
    if claims.empty:
        return []
    with_variants = claims["variant"].astype(bool).any()
    summary, details = [], []
    for claim in CLAIMS:
        rows = claims[claims["claim"] == claim.text]
        if rows.empty:
            continue
        for variant, group in sorted(rows.groupby("variant"), key=lambda item: natural(item[0])):
            printed = group[group["holds_in_paper"] != "—"]
            judged = group[group["holds"] != NOT_JUDGED]
            holds = f"{(judged['holds'] == 'yes').sum()} of {len(judged)}" if len(judged) else "—"
            protocols = group.groupby(["ours_n", "epochs"], sort=True).size().index
            summary.append([
                claim.text, *([variant] if with_variants else []),
                "; ".join(f"{seeds} × {epochs}" for seeds, epochs in protocols),
                holds + (f"; {len(group) - len(judged)} not judged" if len(judged) < len(group) else ""),
                f"{(printed['holds_in_paper'] == 'yes').sum()} of {len(printed)}" if len(printed) else "—",
            ])
        unit = UNITS.get(claim.measure, "")
        body = [
            [DATASET_TITLES.get(row.dataset, row.dataset), str(row.n_train), str(row.hidden),
             *([row.variant] if with_variants else []), str(row.ours_n), row.epochs,
             claim_value(row.ours_mean, row.ours_std, unit), row.holds, claim_value(row.paper, math.nan, unit),
             row.holds_in_paper]
            for row in rows.itertuples()
        ]
        header = ["dataset", "n_train", "hidden", *(["variant"] if with_variants else []), "seeds", "epochs", "ours",
                  "holds", "paper", "holds in paper"]
        details += [f"### {claim.text}", "", markdown_table(header, body), ""]
    header = ["claim", *(["variant"] if with_variants else []), "seeds × epochs", "holds here (cells)",
              "holds in the paper (cells it prints)"]
    return [
        "## Claims", "",
        "Each claim per cell: ours is the mean ± sample std over seeds, differences paired by seed; the "
        "paper's value is the same arithmetic on its printed means (devnets/claims.py). "
        + ("Every cell is judged, whatever its seeds and epochs (`--judge-any-protocol`)." if judge_any_protocol else
           f"A claim is judged only in a cell of at least {PROTOCOL['seeds']} seeds at {PROTOCOL['epochs']} "
           "epochs, the papers' protocol; elsewhere it reads `not judged` (`--judge-any-protocol` judges every "
           "cell)."), "",
        markdown_table(header, summary), "", *details,
    ]


def tables_md(
    runs: pd.DataFrame, cells: pd.DataFrame, papers: pd.DataFrame, claims: pd.DataFrame, *,
    sweep_dirs: Sequence[Path], expected: Sequence[int], seeds_given: bool, references: Sequence[str],
    warnings: Sequence[str], figures: dict[tuple, list], judge_any_protocol: bool
) -> str:
    source = "" if seeds_given else " (every seed some run has; `--seeds` sets them)"
    lines = [
        "# devnets results",
        "",
        f"Sweeps: {', '.join(f'`{path}`' for path in sweep_dirs)}; expected seeds: {seeds_text(expected)}{source}.",
        "",
        "A cell reads `ours (paper)`: ours is the mean ± sample std (ddof=1) over the complete runs, "
        "`[n/N]` when only n of the N expected seeds count (see *Runs not counted*), `—` for none. "
        "Accuracy is the final test accuracy in %. L = T_reference / T_method (> 1: the method is faster; "
        "docs/reproduction.md, *Convergence rate L*).",
        "",
    ]
    if warnings:
        lines += ["## Warnings", "", *(f"- {warning}" for warning in warnings), ""]
    lines += claims_md(claims, judge_any_protocol)
    for (dataset, n_train), group in cells.groupby(["dataset", "n_train"], sort=True):
        lines += [f"## {DATASET_TITLES.get(dataset, dataset)}, {n_train} training samples", ""]
        for paper in PAPER_LAYOUTS:
            mine = papers[(papers["paper"] == paper) & (papers["dataset"] == dataset)]
            lines += paper_tables_md(group, mine[mine["n_train"] == n_train], paper)
        lines += all_cells_md(group, references)
        in_group = (runs["dataset"] == dataset) & (runs["n_train"] == n_train)
        lines += uncounted_md(runs[in_group], group)
        for hidden in sorted(set(group["hidden"])):
            for name in figures.get((dataset, n_train, hidden), []):
                lines.append(f"![{name}]({name})")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------------------ plots


def label(method: str, variant: str) -> str:
    return method + (f" ({variant})" if variant else "")


def method_rank(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


def by_method(runs: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """The runs grouped by (method, variant), in the papers' method order, variants in natural order."""
    groups = list(runs.groupby(["method", "variant"], sort=False))
    return sorted(groups, key=lambda item: (method_rank(item[0][0]), item[0][0], natural(item[0][1])))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(complete: pd.DataFrame, path: Path, title: str) -> None:
    """Mean ± std test accuracy per epoch for each method of one cell (BSP Fig. 3)."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for (method, variant), group in by_method(complete):
        length = max(len(curve) for curve in group["test_acc"])
        matrix = np.full((len(group), length), np.nan)
        for row, curve in enumerate(group["test_acc"]):
            matrix[row, : len(curve)] = curve
        epochs = np.arange(1, length + 1)
        mean = np.nanmean(matrix, axis=0)
        std = np.nanstd(matrix, axis=0, ddof=1) if len(group) > 1 else np.zeros(length)
        axes.plot(epochs, mean, label=f"{label(method, variant)} (n={len(group)})")
        axes.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    axes.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def final_weights(run_dir: Path, warnings: list[str]) -> np.ndarray | None:
    """The run's weight matrices from last.ckpt, flattened; None without a readable checkpoint."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    except Exception as error:  # any unpickling failure: the histogram is skipped, not the aggregation
        warnings.append(f"no weight histogram from {path}: {type(error).__name__}: {error}")
        return None
    tensors = [value.float().reshape(-1).numpy() for key, value in state.items() if WEIGHT_KEY.fullmatch(key)]
    return np.concatenate(tensors) if tensors else None


def plot_weights(complete: pd.DataFrame, path: Path, title: str, warnings: list[str]) -> bool:
    """Final weight histogram per method, from its lowest complete seed (BDNN-dsd Fig. 3, BSP Fig. 4)."""
    panels = []
    for (method, variant), group in by_method(complete):
        for run in group.sort_values("seed").itertuples():
            weights = final_weights(Path(run.path), warnings)
            if weights is not None:
                panels.append((f"{label(method, variant)}, seed {run.seed}", weights))
                break
    if not panels:
        return False
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), sharex=True, squeeze=False)
    for axis, (name, weights) in zip(axes[0], panels, strict=True):
        axis.hist(weights, bins=80)
        axis.set_title(f"{name}\nzero: {100 * np.mean(weights == 0):.1f}%", fontsize="small")
        axis.set_xlabel("weight")
    axes[0][0].set_ylabel("connections")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def sensitivity_points(bdnn: pd.DataFrame, parameter: str) -> pd.DataFrame:
    """Mean ± std of final accuracy and L per value of ``parameter``, the other parameters at their mode."""
    others = [name for name in SENSITIVITY if name != parameter and bdnn[name].notna().any()]
    for name in others:
        bdnn = bdnn[bdnn[name] == bdnn[name].mode().iloc[0]]
    rows = []
    for value, group in bdnn.groupby(parameter):
        acc, acc_std, _ = mean_std(group["final_test_acc"])
        rate, rate_std, _ = mean_std(group["L"])
        rows.append({"value": value, "acc": acc, "acc_std": acc_std, "L": rate, "L_std": rate_std})
    return pd.DataFrame(rows)


def plot_sensitivity(complete: pd.DataFrame, cells: pd.DataFrame, path: Path, title: str) -> bool:
    """Accuracy and L of BDNN-dsd against each of T_num, R_d, R_i the sweep varies (BDNN-dsd Fig. 4)."""
    bdnn = complete[complete["method"] == "bdnn_dsd"]
    varied = [name for name in SENSITIVITY if bdnn[name].nunique() > 1]
    if not varied:
        return False
    plt = pyplot()
    figure, axes = plt.subplots(2, len(varied), figsize=(4 * len(varied), 6.5), squeeze=False)
    others = cells[(cells["method"] != "bdnn_dsd") & (cells["variant"] == "")]
    for column, parameter in enumerate(varied):
        points = sensitivity_points(bdnn, parameter)
        for row, (measure, cell_measure, ylabel) in enumerate(
            (("acc", "final_acc", "final test accuracy (%)"), ("L", "L", "L against the baseline"))
        ):
            axis = axes[row][column]
            axis.errorbar(points["value"], points[measure], yerr=points[f"{measure}_std"].fillna(0),
                          marker="o", capsize=3, label="bdnn_dsd")
            for cell in others.itertuples():
                level = getattr(cell, f"{cell_measure}_mean")
                if math.isfinite(level):
                    color = f"C{cell.Index + 1}"
                    axis.axhline(level, linestyle="--", linewidth=1, label=cell.method, color=color)
            axis.set(xlabel=f"{SENSITIVITY[parameter]} ({parameter})", ylabel=ylabel)
            axis.legend(fontsize="x-small")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write_plots(runs: pd.DataFrame, cells: pd.DataFrame, out: Path, warnings: list[str]) -> dict[tuple, list]:
    """Every plot of every (dataset, n_train, hidden); returns the file names written per key."""
    figures: dict[tuple, list[str]] = {}
    complete = runs[runs["status"] == "complete"]
    for (dataset, n_train, hidden), group in complete.groupby(["dataset", "n_train", "hidden"], sort=True):
        stem = f"{dataset}-n{n_train}_h{hidden}"
        title = f"{DATASET_TITLES.get(dataset, dataset)}, {n_train} samples, {hidden} hidden"
        names = [f"curves_{stem}.png"]
        plot_curves(group, out / names[0], title)
        if plot_weights(group, out / f"weights_{stem}.png", title, warnings):
            names.append(f"weights_{stem}.png")
        in_cell = (cells["dataset"] == dataset) & (cells["n_train"] == n_train) & (cells["hidden"] == hidden)
        sensitivity = out / f"sensitivity_{stem}.png"
        if plot_sensitivity(group, cells[in_cell].reset_index(drop=True), sensitivity, title):
            names.append(f"sensitivity_{stem}.png")
        figures[(dataset, n_train, hidden)] = names
    return figures


# -------------------------------------------------------------------------------------------------- CLI


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad argument in one line (no usage block) and exits with status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="devnets-aggregate", description=__doc__.split("\n", 1)[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR",
                        help="folders searched (recursively) for metrics.json")
    parser.add_argument("--out", type=Path, help="output folder (default: <first SWEEP_DIR>/aggregate)")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                        help="seeds each cell should have (default: every seed some run read has)")
    parser.add_argument("--against", nargs="+", default=list(DEFAULT_AGAINST), metavar="METHOD",
                        help="methods to compute L against besides the baseline (default: dropout)")
    parser.add_argument("--judge-any-protocol", action="store_true",
                        help="judge each claim in every cell, also where it has fewer than 5 seeds or other "
                             "than 500 epochs (the papers' protocol)")
    parser.add_argument("--status", action="store_true",
                        help="print each cell's progress and an ETA instead (devnets-status); writes nothing")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="with --status: runs at a time for the ETA (default: the runs running now)")
    args = parser.parse_args(argv)
    for sweep in args.sweep_dirs:
        if not sweep.exists():
            parser.error(f"SWEEP_DIR '{sweep}' does not exist")
        if not sweep.is_dir():
            parser.error(f"SWEEP_DIR '{sweep}' is not a directory")
        if next(sweep.rglob(METRICS_FILE), None) is None:
            parser.error(f"SWEEP_DIR '{sweep}' holds no {METRICS_FILE}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out '{args.out}' is not a directory")
    negative = [seed for seed in args.seeds or [] if seed < 0]
    if negative:
        parser.error(f"--seeds {negative[0]}: a seed is an integer ≥ 0")
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: an integer ≥ 1")
    args.references = list(dict.fromkeys(["baseline", "dropout", *args.against]))
    args.out = args.out if args.out is not None else args.sweep_dirs[0] / "aggregate"
    return args


RUN_COLUMNS = [
    "path", "experiment", *GROUP, "variant", "seed", "status", "epochs", "max_epochs", "final_test_acc",
    "best_test_acc", "best_epoch", "final_val_acc", "train_seconds", "diverged_epoch", "compression", *SENSITIVITY,
    "error",
]


def aggregate(
    sweep_dirs: Sequence[Path], out: Path, seeds: Sequence[int] | None = None,
    references: Sequence[str] = ("baseline", "dropout"), judge_any_protocol: bool = False,
) -> tuple[str, list[str]]:
    """Write every output to ``out``; returns tables.md's text and the warnings. ``seeds``: the seeds each
    cell should have (``expected_seeds``); ``judge_any_protocol``: judge claims off the papers' protocol too."""
    records, warnings = read_runs(sweep_dirs)
    if not records:
        where = ", ".join(map(str, sweep_dirs))
        raise NothingToAggregate(f"no readable {METRICS_FILE} under {where}", warnings)
    runs = pd.DataFrame(records)
    runs["variant"] = variant_labels(runs)
    runs, duplicates = drop_duplicates(runs)
    warnings += duplicates + mixed_protocols(runs)
    expected = expected_seeds(runs, seeds)
    runs = add_rates(runs, references)
    cells = summarise(runs, expected, references)
    counted = runs[runs["seed"].isin(expected)]
    papers = load_paper_tables()
    out.mkdir(parents=True, exist_ok=True)
    figures = write_plots(counted, cells, out, warnings)
    cells_with_papers = with_paper_values(cells, papers)
    claims = claims_table(counted, cells_with_papers, judge_any_protocol)
    text = tables_md(runs, cells, papers, claims, sweep_dirs=sweep_dirs, expected=expected,
                     seeds_given=seeds is not None, references=references, warnings=warnings, figures=figures,
                     judge_any_protocol=judge_any_protocol)
    (out / "tables.md").write_text(text)
    cells_with_papers.to_csv(out / "cells.csv", index=False)
    claims.to_csv(out / "claims.csv", index=False)
    rate_columns = [rate_name(reference) for reference in references]
    runs.sort_values(["dataset", "n_train", "hidden", "method", "variant", "seed"])[
        RUN_COLUMNS[:-1] + rate_columns + RUN_COLUMNS[-1:]
    ].to_csv(out / "runs.csv", index=False)
    return text, warnings


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.status:
            from devnets.status import status_text  # devnets.status reads this module's runs

            text, warnings = status_text(args.sweep_dirs, args.seeds, args.jobs)
        else:
            text, warnings = aggregate(args.sweep_dirs, args.out, args.seeds, args.references,
                                       args.judge_any_protocol)
    except NothingToAggregate as error:
        for warning in error.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"devnets-aggregate: error: {error}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(text, end="")
    if not args.status:
        print(f"wrote tables.md, cells.csv, runs.csv and plots to {args.out}", file=sys.stderr)
    return 0


def status_main(argv: Sequence[str] | None = None) -> int:
    """``devnets-status SWEEP_DIR...``: ``devnets-aggregate --status``."""
    return main(["--status", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
