"""Choosing the L2 coefficient per cell from a tuning sweep, on validation accuracy only."""

import pytest

from devnets.results import write_metrics
from devnets.tuning import main


def tuning_run(root, dataset, hidden, l2, seed, val, test, n_train=1200):
    write_metrics(root / f"{dataset}-n{n_train}/h{hidden}/l2/l2{l2}/seed{seed}", {
        "status": "complete", "dataset": dataset, "n_train": n_train, "hidden": hidden, "seed": seed,
        "config": {"method": {"l2": l2}, "data": {"val_size": 5000}}, "val_acc": [50.0, val], "final_test_acc": test,
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


def test_a_full_set_split_into_training_and_validation_picks_for_the_full_set_cell(tmp_path, capsys):
    """tune_l2 with data.n_train=55000 holds 5,000 of MNIST's 60,000 out: the pick is the 60,000-sample cell's."""
    tuning_run(tmp_path, "mnist", 10, 0.0001, 0, val=93.0, test=93.0, n_train=55000)
    tuning_run(tmp_path, "mnist", 10, 0.001, 0, val=94.0, test=93.0, n_train=55000)
    tuning_run(tmp_path, "mnist", 10, 0.01, 0, val=95.0, test=93.0, n_train=50000)  # a cell of its own
    main([str(tmp_path)])
    assert capsys.readouterr().out.splitlines()[-2:] == ["    n50000: {h10: 0.01}", "    n60000: {h10: 0.001}"]
