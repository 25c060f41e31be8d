"""The command line: ``devnets-aggregate SWEEP_DIR... [--out DIR]`` and ``devnets-status SWEEP_DIR...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from devnets.aggregate.cells import summarise, with_paper_values
from devnets.aggregate.markdown import tables_md
from devnets.aggregate.pairing import add_rates, rate_name
from devnets.aggregate.plots import write_plots
from devnets.aggregate.runs import (
    GROUP,
    SENSITIVITY,
    NothingToAggregate,
    drop_duplicates,
    expected_seeds,
    load_paper_tables,
    mixed_protocols,
    read_runs,
    variant_labels,
)
from devnets.aggregate.status import status_text
from devnets.claims import claims_table
from devnets.overrides import BadOverride
from devnets.results import METRICS_FILE

DEFAULT_AGAINST = ("dropout",)


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad argument in one line (no usage block) and exits with status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    parser = OneLineParser(prog=prog,
                           description="Aggregate sweeps into the papers' tables, or print their progress (--status).")
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR",
                        help="folders searched (recursively) for metrics.json, or runs tables (.csv) that aggregate "
                             "wrote as runs.csv (the runs of sweeps from before each run's metrics.json was kept)")
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
    parser.add_argument("--sweep", nargs="+", metavar="OVERRIDE",
                        help="with --status: the overrides the sweep was started with (train.py -m OVERRIDE...): "
                             "its jobs alone are listed, those without a run as not started")
    args = parser.parse_args(argv)
    if args.sweep is not None and not args.status:
        parser.error("--sweep goes with --status (devnets-status)")
    for sweep in args.sweep_dirs:
        if args.sweep is not None and not sweep.exists():  # a sweep that has not started
            continue
        if not sweep.exists():
            parser.error(f"SWEEP_DIR '{sweep}' does not exist")
        if sweep.is_file() and sweep.suffix == ".csv":  # a runs table
            continue
        if not sweep.is_dir():
            parser.error(f"SWEEP_DIR '{sweep}' is not a directory or a runs table (.csv)")
        if args.sweep is None and next(sweep.rglob(METRICS_FILE), None) is None:
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


def main(argv: Sequence[str] | None = None, prog: str = "devnets-aggregate") -> int:
    args = parse_args(argv, prog)
    try:
        if args.status:
            text, warnings = status_text(args.sweep_dirs, args.seeds, args.jobs, args.sweep)
        else:
            text, warnings = aggregate(args.sweep_dirs, args.out, args.seeds, args.references,
                                       args.judge_any_protocol)
    except NothingToAggregate as error:
        for warning in error.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    except BadOverride as error:  # --sweep
        print(f"{prog}: error: --sweep: {error}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(text, end="")
    if not args.status:
        print(f"wrote tables.md, cells.csv, runs.csv and plots to {args.out}", file=sys.stderr)
    return 0


def status_main(argv: Sequence[str] | None = None) -> int:
    """``devnets-status SWEEP_DIR...``: ``devnets-aggregate --status``."""
    return main(["--status", *(sys.argv[1:] if argv is None else argv)], prog="devnets-status")
