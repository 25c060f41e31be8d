"""devnets-aggregate on run folders written here with known curves, and on two real tiny runs."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib import colors

import devnets
from devnets.aggregate import load_paper_tables, main, plots, status_main
from devnets.callbacks.run_record import weight_histograms
from devnets.results import read_metrics, write_metrics

BDNN_DSD = {"count_threshold": 10, "bound_step": 0.06, "initial_bound": 0.45}


def write_run(root, method="baseline", seed=0, curve=(50.0, 60.0, 70.0), *, status="complete", hidden=100,
              dataset="mnist", n_train=1200, method_settings=None, max_epochs=500, experiment="paper", **extra):
    """A run folder as train.py lays it out, with ``curve`` as its per-epoch test accuracy (of ``max_epochs``
    planned: a short curve keeps the arithmetic simple)."""
    run_dir = root / experiment / f"{dataset}-n{n_train}" / f"h{hidden}" / method / f"seed{seed}"
    config = {
        "seed": seed,
        "data": {"name": dataset, "n_train": n_train, "seed": seed},
        "model": {"hidden": hidden},
        "method": {"name": method, **(method_settings or {})},
    }
    metrics = {"status": status, "dataset": dataset, "n_train": n_train, "hidden": hidden, "method": method,
               "seed": seed, "max_epochs": max_epochs, "experiment": experiment, "config": config}
    if status in ("complete", "diverged"):
        curve = list(curve)
        metrics |= {"test_acc": curve, "final_test_acc": curve[-1], "best_test_acc": max(curve),
                    "best_epoch": curve.index(max(curve)) + 1, "epochs": len(curve), "method_stats": {}}
    write_metrics(run_dir, metrics | extra)
    return run_dir


def aggregate(capsys, *args):
    assert main([str(arg) for arg in args]) == 0
    return capsys.readouterr()


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def cell(rows, method, hidden="100"):
    return next(row for row in rows if row["method"] == method and row["hidden"] == hidden)


@pytest.fixture
def sweep(tmp_path):
    """MNIST-1200 h100: baseline and bdnn_dsd on seeds 0-2, BSP on seed 0 only, with known curves."""
    root = tmp_path / "outputs"
    for seed, final in enumerate((80.0, 82.0, 84.0)):
        write_run(root, "baseline", seed, [10.0, 20.0, 30.0, 40.0, final])
    # against the baseline's 10 20 30 40: reached at epochs 1 1 1 2 -> L = 4/2 = 2 at level 40 (seed 0)
    write_run(root, "bdnn_dsd", 0, [30.0, 40.0, 40.0, 40.0, 40.0], method_settings=BDNN_DSD)
    write_run(root, "bdnn_dsd", 1, [40.0, 40.0, 40.0, 40.0, 40.0], method_settings=BDNN_DSD)  # L = 4
    # gap 1 at every level 10..40: the highest, 40, gives 4/3
    write_run(root, "bdnn_dsd", 2, [20.0, 30.0, 40.0, 40.0, 40.0], method_settings=BDNN_DSD)
    write_run(root, "bsp", 0, [40.0, 50.0, 60.0, 70.0, 85.0], method_stats={"compression": 0.9})
    return root


FIVE_SEEDS = ("--seeds", "0", "1", "2", "3", "4")


def test_cells_hold_mean_and_sample_std_over_seeds(capsys, sweep, tmp_path):
    aggregate(capsys, sweep, "--out", tmp_path / "agg", *FIVE_SEEDS)
    cells = read_csv(tmp_path / "agg" / "cells.csv")
    baseline = cell(cells, "baseline")
    assert (float(baseline["final_acc_mean"]), float(baseline["final_acc_std"])) == (82.0, 2.0)
    assert baseline["n_complete"] == "3" and baseline["missing_seeds"] == "3 4"
    bdnn = cell(cells, "bdnn_dsd")
    rates = [2.0, 4.0, 4 / 3]
    assert float(bdnn["L_mean"]) == pytest.approx(sum(rates) / 3)
    assert float(bdnn["L_std"]) == pytest.approx(math.sqrt(sum((r - sum(rates) / 3) ** 2 for r in rates) / 2))
    assert float(cell(cells, "bsp")["compression_mean"]) == pytest.approx(90.0)
    runs = read_csv(tmp_path / "agg" / "runs.csv")
    assert len(runs) == 7
    assert [float(row["L"]) for row in runs if row["method"] == "bdnn_dsd"] == pytest.approx(rates)


def test_each_cell_reports_its_training_minutes_and_the_tables_their_core_hours(capsys, tmp_path):
    """The wall time of each sweep (issue 15), from the records alone; a failed run's time does not count."""
    for seed, seconds in enumerate((60.0, 300.0, 120.0)):
        write_run(tmp_path / "runs", "baseline", seed, train_seconds=seconds)
    write_run(tmp_path / "runs", "baseline", 3, status="failed", train_seconds=9000.0)
    write_run(tmp_path / "runs", "dropout", 0)  # an earlier record without train_seconds
    tables = aggregate(capsys, tmp_path / "runs", "--out", tmp_path / "agg", *FIVE_SEEDS).out
    baseline = cell(read_csv(tmp_path / "agg" / "cells.csv"), "baseline")
    minutes = [float(baseline[f"minutes_{what}"]) for what in ("median", "min", "max")]
    assert minutes == [2.0, 1.0, 5.0] and float(baseline["core_hours"]) == pytest.approx(480 / 3600)
    rows = {line.split("|")[2].strip(): [text.strip() for text in line.split("|")]
            for line in tables.splitlines() if line.startswith("| 100 ")}
    assert rows["baseline"][-3] == "2.0 (1.0–5.0)" and rows["dropout"][-3] == "—"
    assert "Training time of the complete runs counted above: 0.1 core-hours" in tables


def test_tables_show_the_papers_values_beside_ours(capsys, sweep, tmp_path):
    printed = aggregate(capsys, sweep, "--out", tmp_path / "agg", *FIVE_SEEDS).out
    tables = (tmp_path / "agg" / "tables.md").read_text()
    assert printed == tables
    assert "### BDNN-dsd Table 3: test accuracy (%)" in tables
    assert "### BDNN-dsd Table 4: convergence rate L against the baseline" in tables
    row_100 = next(line for line in tables.splitlines() if line.startswith("| 100 ") and "89.56" in line)
    assert "82.00 ± 2.00 [3/5] (85.01 ± 0.31)" in row_100
    assert "40.00 ± 0.00 [3/5] (89.56 ± 0.13)" in row_100
    assert "— (88.65 ± 0.13)" in row_100  # a method we did not run still shows the paper's value
    bsp_row = next(line for line in tables.splitlines() if line.startswith("| 100 ") and "(87.5)" in line)
    assert "85.00 [1/5] (87.5)" in bsp_row and "90.00 [1/5] (85.95)" in bsp_row
    # hidden sizes only the paper has are no rows of "—" (issue 19)
    assert "(83.76 ± 0.34)" not in tables and not any(line.startswith("| 10 ") for line in tables.splitlines())


def test_without_seeds_a_cell_expects_the_seeds_the_sweep_has(capsys, tmp_path):
    """Issue 19: a 2-seed sweep does not list seeds 2-4 as missing; a cell lacking one of its seeds does."""
    root = tmp_path / "outputs"
    for seed in (0, 1):
        write_run(root, "baseline", seed)
    write_run(root, "dropout", 1)
    tables = aggregate(capsys, root, "--out", tmp_path / "agg").out
    assert "expected seeds: 0 1 (every seed some run has; `--seeds` sets them)" in tables
    cells = read_csv(tmp_path / "agg" / "cells.csv")
    assert [(row["method"], row["n_complete"], row["missing_seeds"]) for row in cells] == [
        ("baseline", "2", ""), ("dropout", "1", "0")]


def test_claims_pair_seeds_and_judge_each_cell_beside_the_paper(capsys, sweep, tmp_path):
    aggregate(capsys, sweep, "--out", tmp_path / "agg", "--judge-any-protocol")
    claims = read_csv(tmp_path / "agg" / "claims.csv")

    def claim(text):
        return next(row for row in claims if row["claim"].startswith(text) and row["hidden"] == "100")

    # bdnn_dsd ends at 40 on seeds 0-2 against the baseline's 80, 82, 84: gains -40, -42, -44
    more_accurate = claim("BDNN-dsd is more accurate than the initial network")
    assert (float(more_accurate["ours_mean"]), float(more_accurate["ours_std"])) == (-42.0, 2.0)
    assert more_accurate["ours_n"] == "3" and more_accurate["holds"] == "no"
    # BDNN-dsd Table 3, MNIST-1200 h100: 89.56 against the initial network's 85.01
    assert float(more_accurate["paper"]) == pytest.approx(4.55) and more_accurate["holds_in_paper"] == "yes"
    faster = claim("BDNN-dsd converges faster than the initial network")
    assert float(faster["ours_mean"]) == pytest.approx((2 + 4 + 4 / 3) / 3) and faster["holds"] == "yes"
    bsp_accuracy = claim("BSP loses no accuracy")
    assert float(bsp_accuracy["ours_mean"]) == 5.0 and bsp_accuracy["ours_n"] == "1"  # 85 - 80, seed 0 only
    assert bsp_accuracy["holds"] == "yes"
    compression = claim("BSP compresses")
    assert float(compression["ours_mean"]) == 90.0 and float(compression["paper"]) == 85.95
    assert not any(row["claim"].startswith("BDNN-dsd is more accurate than dropout") for row in claims)
    tables = (tmp_path / "agg" / "tables.md").read_text()
    assert "| BDNN-dsd is more accurate than the initial network " in tables
    assert "| MNIST   | 1200    | 100    | 3     | 500    | -42.00 ± 2.00 pts | no    | 4.55 pts | yes " in tables
    assert "Every cell is judged, whatever its seeds and epochs (`--judge-any-protocol`)." in tables


def test_a_claim_off_the_papers_protocol_is_not_judged(capsys, tmp_path):
    """Issue 19: 5 seeds at 500 epochs are judged; 2 seeds, or 30 epochs, are not, and each row says why."""
    root = tmp_path / "outputs"
    for seed in range(5):
        write_run(root, "baseline", seed, [50.0, 60.0, 70.0])
        write_run(root, "bdnn_dsd", seed, [60.0, 70.0, 80.0])
        for method, final in (("baseline", 70.0), ("bdnn_dsd", 80.0)):
            write_run(root, method, seed, [60.0, final], hidden=10, max_epochs=30)
    for seed in range(2):
        for method, final in (("baseline", 70.0), ("bdnn_dsd", 80.0)):
            write_run(root, method, seed, [60.0, final], dataset="fashion_mnist")
    tables = aggregate(capsys, root, "--out", tmp_path / "agg").out
    verdicts = {(row["dataset"], row["hidden"], row["ours_n"], row["epochs"]): row["holds"]
                for row in read_csv(tmp_path / "agg" / "claims.csv")
                if row["claim"] == "BDNN-dsd is more accurate than the initial network"}
    assert verdicts == {("mnist", "100", "5", "500"): "yes", ("mnist", "10", "5", "30"): "not judged",
                        ("fashion_mnist", "100", "2", "500"): "not judged"}
    claim = "| BDNN-dsd is more accurate than the initial network "
    summary = next(line for line in tables.splitlines() if line.startswith(claim))
    assert [cell.strip() for cell in summary.split("|")[2:-1]] == [
        "2 × 500; 5 × 30; 5 × 500", "1 of 1; 2 not judged", "3 of 3"]
    assert "A claim is judged only in a cell of at least 5 seeds at 500 epochs" in tables
    assert "| MNIST         | 1200    | 10     | 5     | 30     | 10.00 ± 0.00 pts | not judged |" in tables


def test_claims_judge_each_variant_against_the_plain_reference(capsys, tmp_path):
    root = tmp_path / "outputs"
    write_run(root / "grid", "baseline", 0, [50.0, 60.0, 70.0])
    write_run(root / "a", "bdnn_dsd", 0, [60.0, 70.0, 80.0], method_settings={"counting": "consecutive"})
    write_run(root / "b", "bdnn_dsd", 0, [40.0, 50.0, 60.0], method_settings={"counting": "cumulative"})
    aggregate(capsys, root, "--out", tmp_path / "agg", "--seeds", "0", "--judge-any-protocol")
    gains = {row["variant"]: (row["ours_mean"], row["holds"]) for row in read_csv(tmp_path / "agg" / "claims.csv")
             if row["claim"] == "BDNN-dsd is more accurate than the initial network"}
    assert gains == {'counting="consecutive"': ("10.0", "yes"), 'counting="cumulative"': ("-10.0", "no")}
    tables = (tmp_path / "agg" / "tables.md").read_text()
    claim = "BDNN-dsd is more accurate than the initial network"
    summary = [[cell.strip() for cell in line.split("|")[2:-1]] for line in tables.splitlines()
               if line.startswith(f"| {claim}")]
    assert summary == [['counting="consecutive"', "1 × 500", "1 of 1", "1 of 1"],
                       ['counting="cumulative"', "1 × 500", "0 of 1", "1 of 1"]]


def test_runs_of_other_epochs_are_kept_apart_and_named(capsys, tmp_path):
    """Issue 19: a 5-epoch single run beside a 30-epoch sweep in outputs/runs is its own cell, compared with
    no run of other epochs, and the mix is named."""
    sweep = tmp_path / "outputs" / "runs"
    for seed in (0, 1):
        write_run(sweep, "baseline", seed, [50.0, 60.0, 70.0], max_epochs=30)
        write_run(sweep, "dropout", seed, [60.0, 70.0, 75.0], max_epochs=30)
    single = write_run(tmp_path / "single", "dropout", 0, [40.0, 50.0], max_epochs=5)
    metrics = read_metrics(single)
    write_metrics(single, metrics | {"experiment": "single"})
    result = aggregate(capsys, tmp_path, "--out", tmp_path / "agg")
    mix = "warning: runs set to different epochs are read together: 5 epochs (1 runs), 30 epochs (4 runs)"
    assert mix in result.err and "several experiments" not in result.err  # the single run is a cell of its own
    cells = {(row["method"], row["variant"]): (row["n_complete"], row["epochs"], row["L_mean"])
             for row in read_csv(tmp_path / "agg" / "cells.csv")}
    assert cells == {("baseline", ""): ("2", "30", ""), ("dropout", "trainer.max_epochs=30"): ("2", "30", "1.5"),
                     ("dropout", "trainer.max_epochs=5"): ("1", "5", "")}


def test_a_cell_with_runs_of_several_experiments_is_named(capsys, tmp_path):
    write_run(tmp_path / "a", "baseline", 0)
    run_dir = write_run(tmp_path / "b", "baseline", 1)
    write_metrics(run_dir, read_metrics(run_dir) | {"experiment": "runs"})
    result = aggregate(capsys, tmp_path, "--out", tmp_path / "agg")
    assert "warning: mnist-n1200 h100 baseline holds runs of several experiments: paper (seeds 0), runs (seeds 1)" \
        in result.err


def test_a_switch_older_runs_lack_makes_no_variant_unless_its_values_differ(capsys, tmp_path):
    root = tmp_path / "outputs"
    write_run(root / "old", "bdnn_dsd", 0, method_settings=BDNN_DSD)
    write_run(root / "new", "bdnn_dsd", 1, method_settings=BDNN_DSD | {"counting": "cumulative"})
    aggregate(capsys, root, "--out", tmp_path / "agg")
    assert [(row["variant"], row["n_complete"]) for row in read_csv(tmp_path / "agg" / "cells.csv")] == [("", "2")]
    write_run(root / "newer", "bdnn_dsd", 2, method_settings=BDNN_DSD | {"counting": "consecutive"})
    aggregate(capsys, root, "--out", tmp_path / "agg")
    variants = {row["variant"] for row in read_csv(tmp_path / "agg" / "cells.csv")}
    assert variants == {"counting=unset", 'counting="cumulative"', 'counting="consecutive"'}


def test_a_setting_that_repeats_another_is_named_once(capsys, tmp_path):
    """``model.l2`` follows ``method.l2`` by interpolation: the variant names the L2 coefficient once."""
    root = tmp_path / "outputs"
    for l2 in (3e-05, 0.001):
        run_dir = write_run(root / f"l2{l2}", "l2", 0, method_settings={"l2": l2})
        metrics = read_metrics(run_dir)
        metrics["config"]["model"]["l2"] = l2
        write_metrics(run_dir, metrics)
    aggregate(capsys, root, "--out", tmp_path / "agg", "--seeds", "0")
    assert sorted(row["variant"] for row in read_csv(tmp_path / "agg" / "cells.csv")) == ["l2=0.001", "l2=3e-05"]


def test_each_run_is_compared_with_the_reference_run_of_the_same_readings(capsys, tmp_path):
    """The baselines differ in the loss only, the BDNN-dsd runs in the loss and the counting: each BDNN-dsd run
    is paired with the baseline of its own loss."""
    root = tmp_path / "outputs"
    write_run(root / "ce", "baseline", 0, [50.0, 60.0, 70.0], method_settings={"loss": "cross_entropy"})
    write_run(root / "mse", "baseline", 0, [30.0, 40.0, 50.0], method_settings={"loss": "mse"})
    write_run(root / "a", "bdnn_dsd", 0, [40.0, 50.0, 55.0], method_settings={"loss": "mse", "counting": "a"})
    write_run(root / "b", "bdnn_dsd", 0, [60.0, 70.0, 72.0], method_settings={"loss": "cross_entropy", "counting": "b"})
    aggregate(capsys, root, "--out", tmp_path / "agg", "--seeds", "0")
    gains = {row["variant"]: float(row["ours_mean"]) for row in read_csv(tmp_path / "agg" / "claims.csv")
             if row["claim"] == "BDNN-dsd is more accurate than the initial network"}
    assert gains == {'counting="a", loss="mse"': 5.0, 'counting="b", loss="cross_entropy"': 2.0}


def test_runs_that_do_not_count_are_named(capsys, tmp_path):
    root = tmp_path / "outputs"
    write_run(root, "dropout", 0, [70.0, 80.0])
    write_run(root, "dropout", 1, status="failed", error="RuntimeError: out of memory")
    write_run(root, "dropout", 2, [70.0, math.nan], status="diverged", diverged_epoch=2)
    write_run(root, "dropout", 3, status="running")
    corrupt = write_run(root, "dropout", 5, [60.0, 60.0]) / "metrics.json"
    corrupt.write_text('{"status": "complete", "test_')
    write_run(root, "dropout", 6, status="interrupted")
    killed = write_run(root, "dropout", 7, status="running")  # by a process that is gone: interrupted
    (killed / ".lock").write_text(f"process {2**62} on {os.uname().nodename}\n")
    seeds = [str(seed) for seed in range(8)]
    result = aggregate(capsys, root, "--out", tmp_path / "agg", "--seeds", *seeds)
    tables = (tmp_path / "agg" / "tables.md").read_text()
    assert f"warning: skipped {corrupt}: not valid JSON" in result.err
    assert f"- skipped {corrupt}: not valid JSON" in tables
    assert "80.00 [1/8] (87.74 ± 0.19)" in tables  # only the complete seed is averaged
    assert "missing 4; diverged 2; failed 1; running 3; interrupted 6 7; unreadable 5" in tables
    assert "- h100 dropout: seed 4 missing (no metrics.json)" in tables
    assert "- h100 dropout: seed 1 failed: RuntimeError: out of memory (`" in tables
    assert "- h100 dropout: seed 2 diverged at epoch 2 (`" in tables
    assert "- h100 dropout: seed 3 running (`" in tables
    assert "- h100 dropout: seed 5 unreadable: metrics.json: not valid JSON (" in tables
    assert "- h100 dropout: seed 7 interrupted (`" in tables
    dropout = cell(read_csv(tmp_path / "agg" / "cells.csv"), "dropout")
    statuses = ("missing", "failed", "diverged", "running", "interrupted", "unreadable")
    assert [dropout[f"{status}_seeds"] for status in statuses] == ["4", "1", "2", "3", "6 7", "5"]
    assert dropout["n_complete"] == "1"


def test_a_cell_counts_only_its_expected_seeds_and_names_an_unreadable_run(capsys, tmp_path):
    """Issue 14, item 5: seeds 0-5 present, seed 3's metrics.json truncated, seeds 0-4 expected."""
    root = tmp_path / "outputs"
    for seed in range(6):
        write_run(root, "baseline", seed, [50.0, 60.0, 70.0 + seed])
    truncated = root / "paper/mnist-n1200/h100/baseline/seed3/metrics.json"
    truncated.write_text(truncated.read_text()[:40])
    aggregate(capsys, root, "--out", tmp_path / "agg", *FIVE_SEEDS)
    baseline = cell(read_csv(tmp_path / "agg" / "cells.csv"), "baseline")
    assert baseline["n_complete"] == "4" and baseline["complete_seeds"] == "0 1 2 4"
    assert float(baseline["final_acc_mean"]) == (70 + 71 + 72 + 74) / 4  # seed 5 is not averaged
    assert (baseline["missing_seeds"], baseline["unreadable_seeds"], baseline["unexpected_seeds"]) == ("", "3", "5")
    tables = (tmp_path / "agg" / "tables.md").read_text()
    assert "| 100    | baseline | 4/5   | 500    |" in tables
    assert "unreadable 3; unexpected 5" in tables
    assert "- h100 baseline: seed 3 unreadable: metrics.json: not valid JSON (" in tables
    assert "- h100 baseline: seed 5 complete, not an expected seed (`" in tables
    assert "no metrics.json" not in tables


def status_rows(printed):
    """devnets-status's table: (dataset, n_train, hidden, method) -> the counts, s/epoch and time left."""
    return {tuple(cell.strip() for cell in line.split("|")[1:5]): [cell.strip() for cell in line.split("|")[5:-1]]
            for line in printed.splitlines() if line.startswith("| ") and line.split("|")[2].strip().isdigit()}


def test_status_counts_each_cells_runs_and_times_whats_left(capsys, tmp_path):
    root = tmp_path / "outputs"
    for seed in (0, 1):  # 10 and 20 min for 5 epochs: 3 min an epoch
        write_run(root, "baseline", seed, [10.0, 20.0, 30.0, 40.0, 50.0], max_epochs=5,
                  train_seconds=600.0 * (seed + 1))
    no_process = 2**62  # no process has this id
    elsewhere = write_run(root, "baseline", 2, status="running", max_epochs=5)
    (elsewhere / ".lock").write_text(f"process {no_process} on another-node\n")  # a SLURM job's: not checked
    write_run(root, "bsp", 0, status="failed", max_epochs=5, error="RuntimeError: boom")
    alive = write_run(root, "bsp", 1, status="running", max_epochs=5, epochs=1)
    (alive / ".lock").write_text(f"process {os.getpid()} on {os.uname().nodename}\n")
    stopped = write_run(root, "bsp", 2, status="interrupted", max_epochs=5, test_acc=[10.0, 20.0, 30.0])
    line = "[2026-12-01 10:00:0{0},000][devnets.epochs][INFO] - epoch {0}: test/acc 50.0"
    (stopped / "train.log").write_text("\n".join(line.format(epoch) for epoch in (1, 2, 3)) + "\n")
    killed = write_run(root, "bsp", 3, status="running", max_epochs=5)  # its record never finished: interrupted
    (killed / ".lock").write_text(f"process {no_process} on {os.uname().nodename}\n")
    printed = aggregate(capsys, "--status", root, "--seeds", "0", "1", "2", "3").out
    rows = {method: row for (_, _, _, method), row in status_rows(printed).items()}
    # complete, running, interrupted, failed, diverged, not started, s/epoch, left
    assert rows["baseline"] == ["2", "1", "0", "0", "0", "1", "180.00", "30 min"]  # (5 + 5) epochs at 3 min
    # timed as its size: 4 (running) + 2 (interrupted, resumed after its 3 epochs) + 5 (killed at epoch 0) epochs
    assert rows["bsp"] == ["0", "1", "2", "1", "0", "0", "180.00", "33 min"]
    assert "Runs: 2 complete, 2 running, 2 interrupted, 1 failed, 0 diverged, 1 not started." in printed
    assert "Left: 1 h 03 min of training, ETA 32 min at 2 run(s) at a time." in printed
    assert not (root / "aggregate").exists()


def test_status_times_a_size_with_no_complete_run_by_its_running_runs_train_log(capsys, tmp_path):
    root = tmp_path / "outputs"
    run_dir = write_run(root, "bsp", 0, status="running", hidden=500, max_epochs=10)
    line = "[2026-12-01 10:{:02d}:{:02d},000][devnets.epochs][INFO] - epoch {}: test/acc 50.0"
    log = [line.format(0, 10 * epoch, epoch) for epoch in (1, 2, 3)]  # 10 s an epoch, then stopped
    log += ["[2026-12-01 10:30:00,000][devnets][INFO] - resuming from last.ckpt"]
    log += [line.format(31, 15 * (epoch - 2), epoch) for epoch in (3, 4, 5)]  # resumed after epoch 2: 15 s an epoch
    log += [line.format(35, 15, 6), line.format(35, 30, 7)]  # paused (SIGSTOP) for 3 min 30 s before epoch 6
    (run_dir / "train.log").write_text("\n".join(log) + "\n")
    write_run(root, "bsp", 1, status="running", hidden=500, max_epochs=10)  # no train.log yet
    write_run(root, "l2", 0, status="running", hidden=500, max_epochs=10)  # nor here: timed as its size's runs
    printed = aggregate(capsys, "--status", root, "--seeds", "0", "1").out
    # complete, running, interrupted, failed, diverged, not started, s/epoch (the median gap), left: (10 - 7) + 10
    # epochs at 15 s; 10 + 10 at 15 s
    assert status_rows(printed) == {("MNIST", "1200", "500", "bsp"): ["0", "2", "0", "0", "0", "0", "15.00", "3 min"],
                                    ("MNIST", "1200", "500", "l2"): ["0", "1", "0", "0", "0", "1", "15.00", "5 min"]}
    assert "not counting" not in printed


def test_status_of_a_sweep_lists_its_jobs_that_have_not_started(capsys, tmp_path):
    root = tmp_path / "outputs"
    for seed in (0, 1):  # 10 and 20 min for 5 epochs: 3 min an epoch
        write_run(root, "baseline", seed, [10.0, 20.0, 30.0, 40.0, 50.0], max_epochs=5,
                  train_seconds=600.0 * (seed + 1), experiment="grid_1200")
    write_run(root, "bsp", 0, status="running", max_epochs=5, epochs=1, experiment="grid_1200")
    write_run(root, "baseline", 0, hidden=10, max_epochs=5, experiment="grid_1200")  # not of this sweep
    sweep = ["--sweep", "experiment=grid_1200", "model.hidden=100", "method=baseline,bsp", "seed=0,1,2",
             "trainer.max_epochs=5"]
    printed = aggregate(capsys, "--status", root / "grid_1200", *sweep).out
    # complete, running, interrupted, failed, diverged, not started, s/epoch, left: the grid's Fashion-MNIST half has no
    # run yet, and is timed as MNIST's runs of its shape
    assert status_rows(printed) == {
        ("Fashion-MNIST", "1200", "100", "baseline"): ["0", "0", "0", "0", "0", "3", "180.00", "45 min"],
        ("Fashion-MNIST", "1200", "100", "bsp"): ["0", "0", "0", "0", "0", "3", "180.00", "45 min"],
        ("MNIST", "1200", "100", "baseline"): ["2", "0", "0", "0", "0", "1", "180.00", "15 min"],
        ("MNIST", "1200", "100", "bsp"): ["0", "1", "0", "0", "0", "2", "180.00", "42 min"],  # 4 + 5 + 5 epochs
    }
    assert "Runs: 2 complete, 1 running, 0 interrupted, 0 failed, 0 diverged, 9 not started." in printed
    assert "Left: 2 h 27 min of training, ETA 2 h 27 min at 1 run(s) at a time." in printed
    # the output root above the sweep's folder reads the same; a sweep not begun is all "not started"
    assert aggregate(capsys, "--status", root, *sweep).out == printed
    fresh = aggregate(capsys, "--status", tmp_path / "not_yet", *sweep).out
    assert "Runs: 0 complete, 0 running, 0 interrupted, 0 failed, 0 diverged, 12 not started." in fresh
    assert "Left: unknown of training, ETA unknown at 1 run(s) at a time, not counting 4 cell(s) with no run of " \
           "their size or shape to time." in fresh

    # Without --sweep: the runs there, and the jobs not started of the sweep last started there (Hydra's
    # multirun.yaml names its overrides)
    overrides = {"hydra": ["hydra.mode=MULTIRUN"], "task": sweep[1:]}
    (root / "grid_1200" / "multirun.yaml").write_text(json.dumps({"hydra": {"overrides": overrides}}))
    alone = aggregate(capsys, "--status", root / "grid_1200").out
    assert status_rows(alone) == status_rows(printed) | {  # expecting seeds 0-2 as every other cell; not timed
        ("MNIST", "1200", "10", "baseline"): ["1", "0", "0", "0", "0", "2", "—", "unknown"]}
    assert "Runs: 3 complete, 1 running, 0 interrupted, 0 failed, 0 diverged, 11 not started." in alone
    # a sweep whose overrides the config no longer takes: its runs alone, and a warning that says why
    overrides["task"] = ["experiment=grid_1200", "method=retired"]
    (root / "grid_1200" / "multirun.yaml").write_text(json.dumps({"hydra": {"overrides": overrides}}))
    changed = aggregate(capsys, "--status", root / "grid_1200")
    assert "Runs: 3 complete, 1 running, 0 interrupted, 0 failed, 0 diverged, 2 not started." in changed.out
    assert "multirun.yaml: its jobs not started are not listed (method=retired is not allowed" in changed.err


def test_status_of_a_sweep_refuses_a_bad_override_in_one_line(capsys, sweep):
    assert main(["--status", str(sweep), "--sweep", "method=bdnn"]) == 2
    assert capsys.readouterr().err.strip() == (
        "devnets-aggregate: error: --sweep: method=bdnn is not allowed: one of "
        "[baseline, bdnn_dsd, bdnn_dsd+bsp, bsp, dropout, l2] (closest: bdnn_dsd)")
    with pytest.raises(SystemExit):
        main([str(sweep), "--sweep", "method=bsp"])
    assert "--sweep goes with --status" in capsys.readouterr().err
    # the overrides quoted as one argument: named, under the name the user typed
    assert status_main([str(sweep), "--sweep", "experiment=grid_1200 model.hidden=500"]) == 2
    assert capsys.readouterr().err.strip() == (
        "devnets-status: error: --sweep: 'experiment=grid_1200 model.hidden=500' (several overrides in one argument: "
        "give each its own): mismatched input '=' expecting <EOF> See "
        "https://hydra.cc/docs/1.2/advanced/override_grammar/basic for details")


@pytest.mark.parametrize("plan", [[], ["--sweep", "experiment=grid_1200", "data=mnist", "model.hidden=100"]])
def test_status_reads_no_torch_or_lightning(sweep, plan):
    code = ("import sys; from devnets.aggregate import status_main; assert status_main(sys.argv[1:]) == 0; "
            "assert not {'torch', 'lightning', 'matplotlib'} & set(sys.modules), sorted(sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(sweep), *plan], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(devnets.__file__).parents[1])})
    assert result.returncode == 0, result.stderr
    assert "| MNIST   | 1200    | 100    | bsp " in result.stdout


def final_weights(seed, scale=1.0, zero_share=0.0):
    """A run's ``weight_histograms`` as training writes them, of a 784-100-10 MLP's random weights."""
    generator = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(784, 100), torch.nn.Sigmoid(), torch.nn.Linear(100, 10))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))
            parameter.view(-1)[: int(zero_share * parameter.numel())] = 0
    return weight_histograms(net)


def zero_counts(epochs=5):
    """BoundMask's per-epoch counts (method_stats.per_epoch) for BDNN-dsd Fig. 5."""
    zeros = [0, 0] + [100 * k for k in range(1, epochs - 1)]
    return {"bounded_weights": 79_400, "per_epoch": {
        "zero_weights": zeros, "zero_bounds": zeros, "zero_weight_overlap": [0] + [z // 2 for z in zeros[:-1]],
        "zero_bound_overlap": [0] + [z // 2 for z in zeros[:-1]], "mean_bound": [0.4] * epochs}}


@pytest.fixture
def drawn(monkeypatch):
    """The figures aggregate draws, by file name, kept open to be looked into."""
    figures = {}
    monkeypatch.setattr(plots, "save", lambda figure, path: figures.__setitem__(path.name, figure))
    yield figures
    for figure in figures.values():
        plt.close(figure)


@pytest.fixture
def recorded(sweep):
    """The sweep, each run recording its final weights (as runs do since they record them) and BDNN-dsd's
    runs their per-epoch zero counts."""
    for path in sorted(sweep.rglob("metrics.json")):
        metrics = read_metrics(path.parent)
        scale = {"baseline": 1.0, "bdnn_dsd": 0.1, "bsp": 1.0}[metrics["method"]]
        metrics["weight_histograms"] = final_weights(metrics["seed"], scale, 0.8 if metrics["method"] == "bsp" else 0)
        if metrics["method"] == "bdnn_dsd":
            metrics["method_stats"] = zero_counts()
        write_metrics(path.parent, metrics)
    return sweep


def test_plots_are_written(capsys, recorded, tmp_path):
    for value, seed in ((5, 0), (5, 1), (20, 0), (20, 1)):  # a T_num sensitivity sweep beside the sweep
        settings = BDNN_DSD | {"count_threshold": value}
        write_run(recorded / f"t{value}", "bdnn_dsd", seed, [40.0, 50.0, value], method_settings=settings,
                  weight_histograms=final_weights(seed, 0.1), method_stats=zero_counts())
    assert "warning" not in aggregate(capsys, recorded, "--out", tmp_path / "agg").err
    for name in ("curves", "weights", "zeros", "sensitivity"):
        path = tmp_path / "agg" / f"{name}_mnist-n1200_h100.png"
        assert path.stat().st_size > 10_000, name
    assert not list(recorded.rglob("*.ckpt"))  # drawn from the records alone
    tables = (tmp_path / "agg" / "tables.md").read_text()
    for name in ("weights", "zeros", "sensitivity"):
        assert f"![{name}_mnist-n1200_h100.png]({name}_mnist-n1200_h100.png)" in tables
    assert "| 100 (count_threshold=5) " in tables  # each setting of a varied parameter is its own cell
    cells = read_csv(tmp_path / "agg" / "cells.csv")
    variants = {row["variant"]: row["n_complete"] for row in cells if row["method"] == "bdnn_dsd"}
    assert variants == {"count_threshold=5": "2", "count_threshold=10": "3", "count_threshold=20": "2"}


def test_a_tuning_sweep_lists_each_setting_with_its_validation_accuracy(capsys, tmp_path):
    for l2, val in ((0.001, 70.0), (0.01, 75.0)):
        write_run(tmp_path / f"l2{l2}", "l2", 0, [60.0, 80.0], method_settings={"l2": l2}, val_acc=[50.0, val])
    tables = aggregate(capsys, tmp_path, "--seeds", "0", "--out", tmp_path / "agg").out
    assert "final val acc (%)" in tables
    row = next(line for line in tables.splitlines() if "| l2=0.01 " in line)
    assert [cell.strip() for cell in row.split("|")[1:8]] == ["100", "l2", "l2=0.01", "1/1", "500", "80.00", "80.00"]
    assert row.split("|")[8].strip() == "75.00"


def test_every_seed_is_drawn_with_log_counts(capsys, recorded, tmp_path, drawn):
    aggregate(capsys, recorded, "--out", tmp_path / "agg")
    figure = drawn["weights_mnist-n1200_h100.png"]
    panels = [axis for axis in figure.axes if axis.get_visible()]
    titles = [axis.get_title().splitlines()[0] for axis in panels]
    assert titles == ["baseline (n=3)", "bdnn_dsd (n=3)", "bsp (seed 0)", "every method, mean over seeds"]
    assert [len(axis.patches) for axis in panels] == [3, 3, 1, 3]  # a line per seed; per method on the last
    assert all(axis.get_yscale() == "log" for axis in panels)
    assert "weights at 0: 80.0%" in panels[2].get_title() and "weights at 0: none" in panels[0].get_title()
    # the histograms hold every weight of every seed: 784·100 + 100·10 per run
    counts = [patch.get_data().values.sum() for patch in panels[0].patches]
    assert counts == [79_400] * 3


def test_a_method_has_one_colour_and_line_style_in_every_figure(capsys, recorded, tmp_path, drawn):
    aggregate(capsys, recorded, "--out", tmp_path / "agg")
    curves = drawn["curves_mnist-n1200_h100.png"].axes[0]
    weights = drawn["weights_mnist-n1200_h100.png"].axes[3]  # every method on one axis
    for method in ("baseline", "bdnn_dsd", "bsp"):
        style = plots.METHOD_STYLES[method]
        line = next(line for line in curves.get_lines() if line.get_label().startswith(f"{method} ("))
        step = next(patch for patch in weights.patches if patch.get_label() == method)
        assert colors.to_hex(line.get_color()) == colors.to_hex(step.get_edgecolor()) == style.color.lower()
        assert step.get_linestyle() == style.linestyle
        assert line._unscaled_dash_pattern == step._unscaled_dash_pattern  # Line2D names any dashes '--'
    assert curves.get_lines()[0].get_linestyle() == "--"  # the baseline: dashed
    styles = {(style.color, str(style.linestyle)) for style in plots.METHOD_STYLES.values()}
    assert len(styles) == len({style.color for style in plots.METHOD_STYLES.values()}) == len(plots.METHOD_STYLES)
    zeros = drawn["zeros_mnist-n1200_h100.png"].axes[0]
    assert colors.to_hex(zeros.get_lines()[0].get_color()) == plots.METHOD_STYLES["bdnn_dsd"].color.lower()


def test_fig_5_counts_the_zeros_of_epoch_k_minus_1_and_those_still_zero_at_k(capsys, recorded, tmp_path, drawn):
    aggregate(capsys, recorded, "--out", tmp_path / "agg")
    weights, bounds = drawn["zeros_mnist-n1200_h100.png"].axes
    assert weights.get_title() == "(a) zero weights: bdnn_dsd (n=3)"
    assert bounds.get_title() == "(b) zero bounds: bdnn_dsd (n=3)"
    mean_before, mean_overlap = weights.get_lines()[-2:]  # each seed's thin lines, then their mean
    assert list(mean_before.get_xdata()) == [2, 3, 4, 5]
    assert list(mean_before.get_ydata()) == [0, 0, 100, 200]  # zero after epochs 1..4
    assert list(mean_overlap.get_ydata()) == [0, 0, 50, 100]  # of those, zero after epochs 2..5 too
    assert weights.get_yscale() == "symlog" and weights.get_ylim()[1] == 79_400


def test_a_record_without_the_figures_data_skips_it_with_one_warning(capsys, sweep, tmp_path):
    """Records written before runs recorded their final weights: no histogram, and no checkpoint is read."""
    run_dir = sweep / "paper/mnist-n1200/h100/baseline/seed0"
    torch.save({"state_dict": {"net.0.weight": torch.randn(100, 784)}}, run_dir / "last.ckpt")
    err = aggregate(capsys, sweep, "--out", tmp_path / "agg").err
    assert (tmp_path / "agg" / "curves_mnist-n1200_h100.png").exists()
    assert not (tmp_path / "agg" / "weights_mnist-n1200_h100.png").exists()
    assert not (tmp_path / "agg" / "zeros_mnist-n1200_h100.png").exists()
    assert not (tmp_path / "agg" / "sensitivity_mnist-n1200_h100.png").exists()
    assert err.splitlines()[:2] == [
        "warning: no weights_mnist-n1200_h100.png: none of its 7 runs records weight_histograms (records written "
        "before devnets recorded it)",
        "warning: no zeros_mnist-n1200_h100.png: none of its 3 runs records zero weight and bound counts per epoch "
        "(records written before devnets recorded it)",
    ]


def test_runs_without_histograms_are_left_out_of_the_figure_and_named(capsys, recorded, tmp_path, drawn):
    for method, seed in (("baseline", 1), ("baseline", 2), ("bsp", 0)):
        run_dir = recorded / f"paper/mnist-n1200/h100/{method}/seed{seed}"
        write_metrics(run_dir, {**read_metrics(run_dir), "weight_histograms": None})
    err = aggregate(capsys, recorded, "--out", tmp_path / "agg").err
    assert ("warning: weights_mnist-n1200_h100.png leaves out 3 of 7 runs that record no weight_histograms: "
            "baseline seeds 1 2, bsp seed 0\n") in err
    titles = [axis.get_title().splitlines()[0] for axis in drawn["weights_mnist-n1200_h100.png"].axes]
    assert titles[:3] == ["baseline (seed 0)", "bdnn_dsd (n=3)", "every method, mean over seeds"]


def test_histograms_of_other_limits_add_up_bin_by_bin():
    """Runs' histograms of other ranges (powers of 2) rebin exactly onto the widest one's bins."""
    weights = torch.cat([0.3 * torch.randn(5000), torch.tensor([0.0, 3.0, -0.25])])
    narrow = plots.run_histogram({"w": {"limit": 4.0, "counts": torch.histc(weights[weights != 0], 128, -4, 4)
                                        .int().tolist(), "zeros": 1, "nonfinite": 0}})
    wider = narrow.rebinned(16.0)
    expected, _ = np.histogram(weights[weights != 0].numpy(), bins=np.linspace(-16, 16, 129))
    assert wider.counts.tolist() == expected.tolist() and wider.zeros == 1 and wider.total == 5003
    assert plots.add([narrow, wider]).counts.tolist() == (2 * expected).tolist()
    assert plots.run_histogram({"w": {"limit": 3.0, "counts": [1, 2], "zeros": 0}}) is None  # not a power of 2
    assert plots.run_histogram({"w": {"counts": [1, 2]}}) is None


def test_committed_records_rebuild_the_tables_without_checkpoints(capsys, tmp_path):
    """results/runs/<experiment>/<dataset>-n<n>/h<hidden>/<method>/[variant/]seed<k>/metrics.json, no last.ckpt."""
    records = tmp_path / "results" / "runs" / "paper"
    cifar = {"dataset": "cifar10", "n_train": 50000, "hidden": 10}
    for seed in range(5):
        write_run(records.parent, "baseline", seed, weight_histograms=final_weights(seed), **cifar)
        staged = write_run(tmp_path / "staged", "bdnn_dsd", seed, method_settings={"counting": "consecutive"},
                           weight_histograms=final_weights(seed, 0.1), method_stats=zero_counts(), **cifar)
        write_metrics(records / "cifar10-n50000/h10/bdnn_dsd/consecutive" / f"seed{seed}", read_metrics(staged))
    truncated = records / "cifar10-n50000/h10/bdnn_dsd/consecutive/seed4/metrics.json"
    truncated.write_text(truncated.read_text()[:30])
    out = tmp_path / "results" / "grid_cifar10"
    assert main([str(records), "--out", str(out)]) == 0
    skipped, wrote = capsys.readouterr().err.splitlines()  # no word of the absent checkpoints
    assert skipped.startswith(f"warning: skipped {truncated}: not valid JSON (")
    assert wrote == f"wrote tables.md, cells.csv, runs.csv and plots to {out}"
    cells = read_csv(out / "cells.csv")
    assert [(row["method"], row["n_complete"], row["unreadable_seeds"]) for row in cells] == [
        ("baseline", "5", ""), ("bdnn_dsd", "4", "4")]
    assert sorted(path.name for path in out.glob("*.png")) == [
        "curves_cifar10-n50000_h10.png", "weights_cifar10-n50000_h10.png", "zeros_cifar10-n50000_h10.png"]


def test_a_runs_table_reads_back_beside_new_records(capsys, sweep, tmp_path):
    """results/grid_full/runs.csv holds the 10- and 100-hidden runs of sweeps from before records were
    committed; the 500-hidden runs come as records: one aggregate of both gives every cell."""
    aggregate(capsys, sweep, "--out", tmp_path / "before", *FIVE_SEEDS)
    newer = tmp_path / "records"
    for seed, final in enumerate((70.0, 72.0, 74.0)):
        write_run(newer, "baseline", seed, [10.0, 20.0, 30.0, 40.0, final], hidden=500)
    err = aggregate(capsys, tmp_path / "before" / "runs.csv", newer, "--out", tmp_path / "after", *FIVE_SEEDS).err
    before, after = read_csv(tmp_path / "before" / "cells.csv"), read_csv(tmp_path / "after" / "cells.csv")
    def numbers(rows):  # a runs table holds no method settings: the rest, L included (from no curves)
        return [{key: value for key, value in row.items() if key != "method_settings"} for row in rows]

    assert numbers(row for row in after if row["hidden"] == "100") == numbers(before)
    assert float(cell(after, "baseline", "500")["final_acc_mean"]) == 72.0
    assert "7 runs read from a runs table have no per-epoch curves: the curves plot leaves them out" in err
    assert sorted(path.name for path in (tmp_path / "after").glob("curves_*.png")) == ["curves_mnist-n1200_h500.png"]


def test_a_record_of_another_experiment_beside_a_runs_tables_row_is_its_own_variant(capsys, sweep, tmp_path):
    """A runs table keeps no settings. A reading's sweep (another experiment) in the same cell and seeds is
    a variant named by its experiment and never replaces the table's rows; a rerun of the table's own
    experiment does."""
    aggregate(capsys, sweep, "--out", tmp_path / "before")  # bdnn_dsd seeds 0-2 end at 40, experiment "paper"
    reading, rerun = tmp_path / "reading", tmp_path / "rerun"
    for seed in range(3):
        write_run(reading, "bdnn_dsd", seed, [45.0] * 5, method_settings={**BDNN_DSD, "counting": "consecutive"},
                  experiment="paper_consecutive")
    write_run(rerun, "bdnn_dsd", 0, [41.0] * 5, method_settings=BDNN_DSD)
    err = aggregate(capsys, tmp_path / "before" / "runs.csv", reading, rerun, "--out", tmp_path / "after").err
    bdnn = {row["variant"]: (row["n_complete"], float(row["final_acc_mean"]))
            for row in read_csv(tmp_path / "after" / "cells.csv") if row["method"] == "bdnn_dsd"}
    assert bdnn == {"": ("3", pytest.approx(121 / 3)), "experiment=paper_consecutive": ("3", 45.0)}
    ignored = [line for line in err.splitlines() if "ignored" in line]
    assert len(ignored) == 1 and "bdnn_dsd/seed0: the same cell and seed as" in ignored[0]
    assert str(rerun) in ignored[0]


@pytest.mark.parametrize("problem", ["missing", "empty", "file"])
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(capsys, sweep, tmp_path, problem):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("")
    bad = tmp_path / {"missing": "nowhere", "empty": "empty", "file": "file.txt"}[problem]
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep), str(bad), "--out", str(tmp_path / "agg")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and err.startswith("devnets-aggregate: error:")
    assert not (tmp_path / "agg").exists() and not (sweep / "aggregate").exists()


def test_a_sweep_of_only_corrupt_runs_is_an_error(capsys, tmp_path):
    corrupt = tmp_path / "sweep" / "a" / "metrics.json"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text("[]")
    assert main([str(tmp_path / "sweep")]) == 1
    err = capsys.readouterr().err
    assert f"warning: skipped {corrupt}: no 'status'" in err and "error: no readable metrics.json" in err
    assert not (tmp_path / "sweep" / "aggregate").exists()


def test_default_out_is_under_the_first_sweep(capsys, sweep):
    aggregate(capsys, sweep)
    assert (sweep / "aggregate" / "tables.md").exists()
    aggregate(capsys, sweep)  # the outputs do not count as runs on a second pass
    assert "warning" not in capsys.readouterr().err


def test_paper_tables_hold_every_table():
    papers = load_paper_tables()
    tables = papers.groupby("paper")["table"].agg(lambda names: set(names))
    assert tables["bdnn_dsd"] == {str(k) for k in range(1, 11)}
    assert {str(k) for k in range(1, 7)} <= tables["bsp"]
    assert not papers.duplicated(["paper", "table", "dataset", "n_train", "hidden", "method", "metric"]).any()
    value = papers.query("paper == 'bdnn_dsd' and dataset == 'mnist' and n_train == 1200 and hidden == 100 "
                         "and method == 'bdnn_dsd' and metric == 'acc'")["value"]
    assert value.tolist() == ["89.56"]


def test_two_real_runs_aggregate(capsys, run, tmp_path):
    sweep = tmp_path / "sweep"
    for method in ("baseline", "dropout"):
        run(f"method={method}", run_dir=sweep / method / "seed0")
    aggregate(capsys, sweep, "--seeds", "0", "--out", tmp_path / "agg")
    cells = read_csv(tmp_path / "agg" / "cells.csv")
    assert {row["method"] for row in cells} == {"baseline", "dropout"}
    assert all(row["n_complete"] == "1" and row["missing_seeds"] == "" for row in cells)
    assert math.isfinite(float(cell(cells, "dropout", hidden="16")["L_mean"]))
    assert (tmp_path / "agg" / "weights_mnist-n200_h16.png").stat().st_size > 10_000
    assert "warning" not in capsys.readouterr().err
