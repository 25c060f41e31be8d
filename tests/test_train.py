"""End-to-end runs through the real Hydra config on the fixture data."""

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback


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
    assert list((tmp_path / "run").glob("events.out.tfevents.*")) and not (tmp_path / "run" / "tensorboard").exists()
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"histograms": 0}).Reload()
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


def test_tensorboard_names_each_run_of_a_sweep_by_its_folder(run, tmp_path):
    """``tensorboard --logdir outputs/<experiment>`` lists mnist-n200/h16/baseline/seed0, not .../seed0/tensorboard."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    sweep = tmp_path / "outputs" / "grid"
    for method in ("baseline", "bsp"):
        run(f"method={method}", "trainer.max_epochs=1", run_dir=sweep / f"mnist-n200/h16/{method}/seed0")
    runs = EventMultiplexer().AddRunsFromDirectory(str(sweep)).Runs()
    assert set(runs) == {"mnist-n200/h16/baseline/seed0", "mnist-n200/h16/bsp/seed0"}


def test_a_run_begun_with_a_tensorboard_folder_keeps_its_events_there(run, tmp_path, stop_at):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "run" / "tensorboard").mkdir(parents=True)  # as runs begun before the events moved wrote them
    metrics = run("trainer.max_epochs=2")
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert len(events.Scalars("test/acc")) == len(metrics["test_acc"]) == 2


def test_the_record_holds_each_weight_matrix_histogram(run, tmp_path):
    """metrics.json keeps what the final weight histograms need (a few KB), so plots need no checkpoint."""
    import numpy as np

    metrics = run("method=bsp", "method.threshold_scale=40")
    weights = torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)["state_dict"]
    histograms = metrics["weight_histograms"]
    assert set(histograms) == {"net.0.weight", "net.3.weight"}
    for name, entry in histograms.items():
        weight = weights[name].flatten().numpy()
        limit = entry["limit"]
        assert limit == 2.0 ** np.ceil(np.log2(np.abs(weight).max()))
        expected, _ = np.histogram(weight[weight != 0], bins=np.linspace(-limit, limit, len(entry["counts"]) + 1))
        assert entry["counts"] == expected.tolist()
        assert entry["zeros"] == int((weight == 0).sum()) and entry["nonfinite"] == 0
    assert sum(entry["zeros"] for entry in histograms.values()) == metrics["method_stats"]["pruned"] > 0
    assert len(json.dumps(histograms)) < 4000


def test_dropout_and_l2_change_training(run, tmp_path):
    baseline = run(run_dir=tmp_path / "b")
    dropout = run("method=dropout", run_dir=tmp_path / "d")
    l2 = run("method=l2", "method.l2=0.5", run_dir=tmp_path / "l")
    assert dropout["config"]["model"]["dropout"] == 0.5 and l2["config"]["model"]["l2"] == 0.5
    assert len({tuple(m["train_loss"]) for m in (baseline, dropout, l2)}) == 3


def test_data_and_model_go_to_the_chosen_device(make_config, device):
    from devnets.train import build, make_trainer

    accelerator = {"cpu": "cpu", "cuda": "gpu"}[device.type]  # as a user writes it (the tests elsewhere: cuda)
    cfg = make_config(f"trainer.accelerator={accelerator}", "trainer.max_epochs=1")
    data, model, callbacks = build(cfg)
    seen = []

    class RecordDevices(Callback):  # while training: Lightning moves the model back to the CPU after fit
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append({data.train_x.device.type, data.test_x.device.type, pl_module.device.type})

    trainer = make_trainer(cfg, Path(cfg.paths.output_dir), [*callbacks, RecordDevices()])
    trainer.fit(model, datamodule=data)
    assert seen == [{device.type}]
