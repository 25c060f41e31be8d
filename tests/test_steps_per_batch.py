"""model.steps_per_batch: K optimiser steps per Lightning batch give the run that one step a batch gives,
bit for bit, and Lightning's step counting, max_steps, mid-epoch checkpoints and epoch hooks keep working."""

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import devnets.train
from conftest import Crash
from devnets.errors import InvalidSetting
from devnets.model import MLPClassifier
from devnets.train import build, make_trainer, run_settings
from test_reliability import assert_same_run, final_weights

# The fixture's 200 samples in batches of 50: 4 steps an epoch, which 3 does not divide.
STEPS_PER_EPOCH = 4
# Settings under which the methods act within 3 epochs: bounds that move and clip, synapses pruned.
BOUNDS = ("method.initial_bound=0.1", "method.count_threshold=2")
PRUNE = ("method.threshold_scale=40",)
FAST = {"bdnn_dsd": BOUNDS, "bsp": PRUNE, "bdnn_dsd+bsp": (*BOUNDS, *PRUNE)}


@pytest.mark.parametrize("method", ["baseline", "dropout", "bdnn_dsd", "bsp", "bdnn_dsd+bsp"])
@pytest.mark.parametrize("steps", [3, 100])
def test_k_steps_a_batch_give_the_run_of_one_step_a_batch_bit_for_bit(run, tmp_path, method, steps):
    settings = (f"method={method}", "trainer.max_epochs=3", *FAST.get(method, ()))
    one = run(*settings, "model.steps_per_batch=1", run_dir=tmp_path / "one")
    many = run(*settings, f"model.steps_per_batch={steps}", run_dir=tmp_path / "many")
    assert_same_run(many, one, tmp_path / "many", tmp_path / "one")
    if "bsp" in method:
        assert one["method_stats"]["pruned"] > 0  # the prunes, not only the counts, are the same
    if "bdnn" in method:
        assert one["method_stats"]["clipped_total"] > 0


class StepsSeen(Callback):
    """What Lightning reports: global_step after each batch, epochs begun and ended, optimiser steps seen."""

    def __init__(self) -> None:
        self.global_steps, self.epochs_started, self.epochs_ended, self.steps = [], 0, 0, 0

    def on_train_start(self, trainer, pl_module) -> None:
        trainer.optimizers[0].register_step_post_hook(lambda *_: setattr(self, "steps", self.steps + 1))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs_started += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.global_steps.append(trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs_ended += 1


def fit(make_config, tmp_path: Path, steps: int, *overrides: str, callbacks=()):
    """The shrunk config's model and data under a Trainer of devnets' callbacks plus ``callbacks``."""
    cfg = make_config(f"model.steps_per_batch={steps}", *overrides, run_dir=tmp_path / f"k{steps}")
    data, model, method_callbacks = build(cfg)
    trainer = make_trainer(cfg, tmp_path / f"k{steps}", [*method_callbacks, *callbacks])
    trainer.fit(model, datamodule=data)
    return trainer, model


@pytest.mark.parametrize("steps", [1, 3, 100])
def test_global_step_counts_optimiser_steps_and_every_epoch_hook_runs(make_config, tmp_path, steps):
    seen = StepsSeen()
    trainer, _ = fit(make_config, tmp_path, steps, "trainer.max_epochs=3", callbacks=[seen])
    assert trainer.global_step == seen.steps == 3 * STEPS_PER_EPOCH
    assert seen.epochs_started == seen.epochs_ended == trainer.current_epoch == 3
    per_epoch = {1: [1, 2, 3, 4], 3: [3, 4], 100: [4]}[steps]  # a batch never spans two epochs
    assert seen.global_steps == [epoch * STEPS_PER_EPOCH + step for epoch in range(3) for step in per_epoch]


@pytest.mark.parametrize("max_steps", [5, 6])
def test_max_steps_stops_at_that_optimiser_step_inside_a_batch(make_config, tmp_path, max_steps):
    one, model_one = fit(make_config, tmp_path, 1, "trainer.max_epochs=5", f"+trainer.max_steps={max_steps}")
    many, model_many = fit(make_config, tmp_path, 3, "trainer.max_epochs=5", f"+trainer.max_steps={max_steps}")
    assert one.global_step == many.global_step == max_steps
    for (name, a), b in zip(model_one.state_dict().items(), model_many.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_mid_epoch_checkpoints_land_on_their_steps(make_config, tmp_path):
    saved = {}
    for steps in (1, 3):
        folder = tmp_path / f"steps{steps}"
        every = ModelCheckpoint(dirpath=folder, filename="{step}", every_n_train_steps=2, save_top_k=-1)
        fit(make_config, tmp_path, steps, "trainer.max_epochs=2", callbacks=[every])
        saved[steps] = {path.name: torch.load(path, weights_only=False)["state_dict"] for path in folder.iterdir()}
    assert sorted(saved[3]) == sorted(saved[1]) == [f"step={k}.ckpt" for k in (2, 4, 6, 8)]
    for name, state in saved[1].items():
        assert all(torch.equal(state[key], saved[3][name][key]) for key in state), name


@pytest.mark.parametrize("before, after", [(1, 3), (3, 1), (100, 3)])
def test_a_run_resumes_under_another_steps_per_batch_to_the_same_result(run, stop_at, tmp_path, before, after):
    settings = ("method=bsp", "method.threshold_scale=40", "trainer.max_epochs=4", "checkpoint_every_n_epochs=1")
    whole = run(*settings, run_dir=tmp_path / "whole")
    lift = stop_at(2)
    with pytest.raises(Crash):
        run(*settings, f"model.steps_per_batch={before}", run_dir=tmp_path / "cut")
    lift()
    seen = StepsSeen()
    build_trainer = devnets.train.make_trainer
    devnets.train.make_trainer = lambda cfg, run_dir, callbacks: build_trainer(cfg, run_dir, [*callbacks, seen])
    try:
        resumed = run(*settings, f"model.steps_per_batch={after}", run_dir=tmp_path / "cut")
    finally:
        devnets.train.make_trainer = build_trainer
    assert_same_run(resumed, whole, tmp_path / "cut", tmp_path / "whole")
    assert seen.global_steps[-1] == 4 * STEPS_PER_EPOCH  # global_step went on from the checkpoint's 8


def test_steps_per_batch_is_no_part_of_a_run_identity_or_folder(make_config, run, tmp_path, monkeypatch):
    assert run_settings(make_config("model.steps_per_batch=1")) == run_settings(make_config())
    first = run("model.steps_per_batch=1")
    monkeypatch.setattr(devnets.train, "make_trainer", None)  # any attempt to train would fail
    assert run("model.steps_per_batch=7") == first  # the same run: found complete, skipped


@pytest.mark.parametrize("setting", ["+trainer.accumulate_grad_batches=2", "+trainer.gradient_clip_val=1.0",
                                     "+trainer.val_check_interval=0.5"])
def test_what_counts_lightning_batches_is_refused_with_several_steps_a_batch(run, setting):
    with pytest.raises(InvalidSetting, match=r"^model\.steps_per_batch=100 is not allowed: 1 with trainer\."):
        run(setting)
    run(setting, "model.steps_per_batch=1", "trainer.max_epochs=1")  # one step a batch takes them all


class Scheduled(MLPClassifier):
    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)]


def plain_lightning(model, callbacks=(), epochs=1) -> L.Trainer:
    """``model`` under a plain Trainer on a DataLoader of 90 random samples in batches of 20 (5 steps)."""
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(90, 1, 28, 28, generator=generator), torch.randint(0, 10, (90,), generator=generator)
    data = TensorDataset(images, labels)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))
    trainer.fit(model, DataLoader(data, batch_size=20))
    return trainer


def test_a_learning_rate_scheduler_is_refused_with_several_steps_a_batch():
    with pytest.raises(InvalidSetting, match="steps_per_batch=4 is not allowed: 1 with a learning-rate scheduler"):
        plain_lightning(Scheduled(hidden=4, steps_per_batch=4))


class StepHooks(Callback):
    def __init__(self) -> None:
        self.calls = dict.fromkeys(
            ("on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step"), 0
        )

    def on_before_zero_grad(self, trainer, pl_module, optimizer) -> None:
        self.calls["on_before_zero_grad"] += 1

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.calls["on_before_backward"] += 1

    def on_after_backward(self, trainer, pl_module) -> None:
        self.calls["on_after_backward"] += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.calls["on_before_optimizer_step"] += 1


def test_with_any_dataloader_the_steps_and_per_step_hooks_match_one_step_a_batch():
    """A torch DataLoader, batches moved to the device by Lightning's hooks, and a callback on the per-step
    hooks, which then run once per optimiser step, as with one step a batch."""
    models, hooks = {}, {}
    for steps in (1, 4):
        torch.manual_seed(0)
        models[steps], hooks[steps] = MLPClassifier(hidden=4, steps_per_batch=steps, dropout=0.3), StepHooks()
        trainer = plain_lightning(models[steps], [hooks[steps]], epochs=2)
        assert trainer.global_step == 10
    assert hooks[4].calls == hooks[1].calls == dict.fromkeys(hooks[1].calls, 10)
    for (name, a), b in zip(models[1].state_dict().items(), models[4].state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_steps_per_batch_is_a_whole_number():
    with pytest.raises(InvalidSetting, match="steps_per_batch=0 is not allowed: an integer ≥ 1"):
        MLPClassifier(steps_per_batch=0)


def test_a_checkpoint_written_at_one_step_a_batch_loads_into_a_model_of_many(run, tmp_path):
    run("model.steps_per_batch=1", "trainer.max_epochs=1")
    model = MLPClassifier.load_from_checkpoint(tmp_path / "run" / "last.ckpt", steps_per_batch=5, strict=False)
    assert model.steps_per_batch == 5 and not model.automatic_optimization
    assert torch.equal(model.net[0].weight, final_weights(tmp_path / "run")["net.0.weight"])
