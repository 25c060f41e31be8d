"""tables.md: the papers' tables with ours beside them, every cell, the runs not counted, and the claims."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from devnets.aggregate.pairing import rate_name
from devnets.aggregate.runs import CELL, STATUS_ORDER, natural, seeds_text
from devnets.claims import CLAIMS, NOT_JUDGED, PROTOCOL, UNITS

DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
PAPER_TITLES = {"bdnn_dsd": "BDNN-dsd", "bsp": "BSP"}
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


def minutes_text(cell: pd.Series) -> str:
    """``7.1 (6.8–9.0)``: a cell's minutes of training per complete run; ``—`` for none."""
    if not math.isfinite(cell["minutes_median"]):
        return "—"
    return f"{cell['minutes_median']:.1f} ({cell['minutes_min']:.1f}–{cell['minutes_max']:.1f})"


def all_cells_md(cells: pd.DataFrame, references: Sequence[str]) -> list[str]:
    rates = [rate_name(reference) for reference in references]
    header = ["hidden", "method", "variant", "seeds", "epochs", "final acc (%)", "best acc (%)", *rates,
              "compression (%)", "min/run: median (range)", "not counted"]
    measures = ["final_acc", "best_acc", *rates, "compression"]
    if cells["val_acc_n"].any():  # runs with a validation split (val_size > 0), e.g. a tuning sweep
        header.insert(7, "final val acc (%)")
        measures.insert(2, "val_acc")
    body = [
        [str(cell["hidden"]), cell["method"], cell["variant"], f"{cell['n_complete']}/{cell['n_expected']}",
         cell["epochs"], *(ours_text(cell, measure) for measure in measures), minutes_text(cell),
         not_counted(cell)]
        for _, cell in cells.iterrows()
    ]
    if not cells["variant"].astype(bool).any():
        header.pop(2)
        body = [row[:2] + row[3:] for row in body]
    core_hours = cells["core_hours"].sum()
    return ["### All cells", "", markdown_table(header, body), "",
            f"Training time of the complete runs counted above: {core_hours:.1f} core-hours (`train_seconds`, one "
            "torch thread a run; wall time on a busy machine, so the spread is wide).", ""]


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
