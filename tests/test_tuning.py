"""Choosing the L2 coefficient per cell from a tuning sweep, on validation accuracy only."""

import pytest

from devnets.results import write_metrics
from devnets.tuning import main


def tuning_run(root, dataset, hidden, l2, seed, val, test):
    write_metrics(root / f"{dataset}-n1200/h{hidden}/l2/l2{l2}/seed{seed}", {
        "status": "complete", "dataset": dataset, "n_train": 1200, "hidden": hidden, "seed": seed,
        "config": {"method": {"l2": l2}}, "val_acc": [50.0, val], "final_test_acc": test,
    })


def test_best_mean_validation_accuracy_wins_per_cell(tmp_path, capsys):
    tuning_run(tmp_path, "mnist", 10, 0.001, 0, val=80.0, test=99.0)  # best on test, not on validation
    tuning_run(tmp_path, "mnist", 10, 0.01, 0, val=84.0, test=70.0)
    tuning_run(tmp_path, "mnist", 10, 0.01, 1, val=82.0, test=70.0)
    tuning_run(tmp_path, "mnist", 10, 0.001, 1, val=83.0, test=99.0)   # mean 81.5 < 83.0
    tuning_run(tmp_path, "mnist", 100, 0.0001, 0, val=90.0, test=90.0)
    tuning_run(tmp_path, "mnist", 100, 0.001, 0, val=90.0, test=91.0)  # tie: the smaller value
    write_metrics(tmp_path / "unfinished", {"status": "running"})
    main([str(tmp_path)])
    assert capsys.readouterr().out.splitlines()[-2:] == ["  mnist:", "    n1200: {h10: 0.01, h100: 0.0001}"]


def test_empty_sweep_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    assert exit_.value.code == 2
    assert "no complete runs with a validation curve" in capsys.readouterr().err
