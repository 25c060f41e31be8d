"""The pipeline beyond the papers' MLP: LeNet on image-shaped data with each method, BDNN-dsd and BSP
together on the same weights, and the run's record kept by a callback (RunRecord) for any LightningModule."""

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from devnets.aggregate import main as aggregate
from devnets.callbacks.bound_mask import BoundMask
from devnets.callbacks.synaptic_pruning import SynapticPruning
from devnets.model import LeNet
from devnets.results import read_metrics
from devnets.train import build
from test_methods_on_any_model import FOUR, Pushed
from test_sweep import sweep

# LeNet's weights at model.hidden=16: conv 1(or 3)·6·25 and 6·16·25, then 400·16, 16·84 and 84·10
LENET_WEIGHTS = {"mnist": 150 + 2400 + 6400 + 1344 + 840, "cifar10": 450 + 2400 + 6400 + 1344 + 840}


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
@pytest.mark.parametrize("method", ["bdnn_dsd", "bsp"])
def test_lenet_trains_with_each_method_on_image_shaped_data(run, tmp_path, dataset, method):
    metrics = run("model=lenet", f"data={dataset}", f"method={method}")
    assert metrics["status"] == "complete" and metrics["epochs"] == 2
    assert read_metrics(tmp_path / "run") == metrics
    assert len(metrics["test_acc"]) == len(metrics["train_loss"]) == 2
    stats = metrics["method_stats"]
    if method == "bsp":  # the convolutions are pruned too, and N_neu is model.hidden (conf/model/lenet.yaml)
        assert stats["synapses"] == LENET_WEIGHTS[dataset]
        assert set(stats["pruned_fraction"]) == {"net.0", "net.3", "net.7", "net.9", "net.12"}
    else:
        assert stats["bounded_weights"] == LENET_WEIGHTS[dataset]


def test_lenet_takes_28_and_32_pixel_images():
    for shape in ((1, 28, 28), (3, 32, 32)):
        assert LeNet(input_shape=shape)(torch.zeros(2, *shape)).shape == (2, 10)


def test_a_lenet_run_has_its_own_folder_and_aggregates_like_the_mlp(data_root, tmp_path):
    completed = sweep(data_root, tmp_path / "sweep", "data.n_train=200", "model=lenet", "method=bsp")
    assert completed.returncode == 0, completed.stderr[-2000:]
    metrics = read_metrics(tmp_path / "sweep" / "mnist-n200/h8/bsp/model=lenet/seed0")
    assert metrics["status"] == "complete" and metrics["config"]["model"]["_target_"] == "devnets.model.LeNet"
    assert aggregate([str(tmp_path / "sweep"), "--out", str(tmp_path / "agg"), "--seeds", "0"]) == 0
    assert "mnist,200,8,bsp" in (tmp_path / "agg" / "cells.csv").read_text()


def test_bdnn_dsd_and_bsp_together_bound_and_prune_the_same_weights(run, tmp_path):
    metrics = run("method=bdnn_dsd+bsp", "method.threshold_scale=40", "trainer.max_epochs=3")
    assert metrics["status"] == "complete" and metrics["method"] == "bdnn_dsd+bsp"
    stats = metrics["method_stats"]
    assert stats["bounded_weights"] == stats["synapses"] == 784 * 16 + 16 * 10 and stats["pruned"] > 0
    state = torch.load(tmp_path / "run" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for layer in ("net.0", "net.3"):
        weight = state[f"{layer}.weight"]
        assert torch.all(weight[state[f"{layer}.weight_bsp_mask"] == 0] == 0)
        assert torch.all(weight.abs() <= state[f"{layer}.weight_bdnn_bound"])


def test_bdnn_dsd_steps_before_bsp_after_each_optimizer_step(make_config):
    """FOUR under a zero loss: BSP prunes the two smallest at the third step. BDNN-dsd, first, saw them
    before the prune, so no bound has moved; had BSP gone first, BDNN-dsd would have seen 0.125 and 0.25
    fall to 0 and (T_num = 1) lowered their bounds to 0.25."""
    cfg = make_config(
        "method=bdnn_dsd+bsp", "method.initial_bound=0.5", "method.bound_step=0.25", "method.count_threshold=1",
        f"method.alpha={0.6 / math.log(2)}", "method.mu=0", "method.threshold_scale=2", "model.hidden=2",
        "data.n_train=1200",
    )
    _, _, callbacks = build(cfg)
    assert [type(callback) for callback in callbacks] == [BoundMask, SynapticPruning]
    model = Pushed(FOUR, push=0.0)
    trainer = L.Trainer(
        max_epochs=1, callbacks=callbacks, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(TensorDataset(torch.zeros(3, 1)), batch_size=1))
    assert model.layer.weight.tolist() == [[0, 0, 0.375, 0.5]]
    assert model.layer.weight_bdnn_bound.tolist() == [[0.5, 0.5, 0.5, 0.5]]
