"""End-to-end runs through the real Hydra config on the fixture data."""

import json
from pathlib import Path

import pytest
import torch


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


def test_tensorboard_has_curves_histograms_and_hparams(run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    metrics = run("trainer.max_epochs=3", "histogram_every_n_epochs=2", "tags=[first_try,lr_probe]")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"histograms": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "test/acc", "test/loss", "hp/final_test_acc"} <= set(tags["scalars"])
    assert [round(e.value, 4) for e in events.Scalars("test/acc")] == [round(a, 4) for a in metrics["test_acc"]]
    assert {"weights/net.0.weight", "weights/net.3.weight"} <= set(tags["histograms"])
    assert [e.step for e in events.Histograms("weights/net.0.weight")] == [2, 3]
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert set(hparams) == {"dataset", "n_train", "hidden", "model", "method", "seed", "max_epochs", "p", "l2", "tags"}
    assert hparams["tags"].string_value == "first_try,lr_probe"
    assert [e.value for e in events.Scalars("hp/final_test_acc")] == [pytest.approx(metrics["final_test_acc"])]


def test_dropout_and_l2_change_training(run, tmp_path):
    baseline = run(run_dir=tmp_path / "b")
    dropout = run("method=dropout", run_dir=tmp_path / "d")
    l2 = run("method=l2", "method.l2=0.5", run_dir=tmp_path / "l")
    assert dropout["config"]["model"]["dropout"] == 0.5 and l2["config"]["model"]["l2"] == 0.5
    assert len({tuple(m["train_loss"]) for m in (baseline, dropout, l2)}) == 3


NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")


@pytest.mark.parametrize("accelerator, device", [("cpu", "cpu"), pytest.param("gpu", "cuda", marks=NEEDS_GPU)])
def test_data_and_model_go_to_the_chosen_device(make_config, accelerator, device):
    from devnets.train import build, make_trainer

    cfg = make_config(f"trainer.accelerator={accelerator}", "trainer.max_epochs=1")
    data, model, callbacks = build(cfg)
    trainer = make_trainer(cfg, Path(cfg.paths.output_dir), callbacks)
    trainer.fit(model, datamodule=data)
    assert data.train_x.device.type == data.test_x.device.type == model.device.type == device
