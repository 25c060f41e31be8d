"""End-to-end runs through the real Hydra config on the fixture data."""

import json

import pytest

from devnets.results import read_metrics


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "cifar10"])
def test_each_dataset_trains_and_writes_metrics(run, tmp_path, dataset):
    metrics = run(f"data={dataset}", "trainer.max_epochs=3")
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk == metrics
    assert metrics["status"] == "complete"
    assert (metrics["dataset"], metrics["n_train"], metrics["hidden"], metrics["method"], metrics["seed"]) == (
        dataset, 200, 16, "baseline", 0,
    )
    assert len(metrics["test_acc"]) == 3 == metrics["epochs"]
    assert metrics["final_test_acc"] == metrics["test_acc"][-1]
    assert metrics["best_test_acc"] == max(metrics["test_acc"])
    assert metrics["train_seconds"] > 0
    assert metrics["config"]["model"]["input_dim"] == (3072 if dataset == "cifar10" else 784)
