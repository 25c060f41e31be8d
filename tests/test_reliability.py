"""Resume after a crash or an interrupt, divergence, damaged files, and seeds."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

import devnets.train
from conftest import Crash
from devnets.callbacks.run_record import RunRecord
from devnets.results import read_metrics, write_metrics

METHODS = sorted(path.stem for path in (devnets.train.CONF_DIR / "method").glob("*.yaml"))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def assert_same_run(resumed: dict, uninterrupted: dict, resumed_dir: Path, uninterrupted_dir: Path):
    for curve in ("test_acc", "test_loss", "train_loss"):
        assert resumed[curve] == uninterrupted[curve], curve
    assert resumed["method_stats"] == uninterrupted["method_stats"]
    a, b = final_weights(resumed_dir), final_weights(uninterrupted_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("method", METHODS)
def test_crashed_run_resumes_to_the_uninterrupted_result(run, stop_at, tmp_path, method):
    settings = (f"method={method}", "trainer.max_epochs=5", "checkpoint_every_n_epochs=1")
    uninterrupted = run(*settings, run_dir=tmp_path / "whole")
    lift = stop_at(3)
    with pytest.raises(Crash):
        run(*settings, run_dir=tmp_path / "cut")
    assert read_metrics(tmp_path / "cut")["status"] == "failed"
    lift()
    resumed = run(*settings, run_dir=tmp_path / "cut")
    assert resumed["status"] == "complete" and resumed["epochs"] == 5
    assert_same_run(resumed, uninterrupted, tmp_path / "cut", tmp_path / "whole")


def test_complete_run_is_skipped(run, tmp_path, monkeypatch):
    first = run()
    monkeypatch.setattr(devnets.train, "make_trainer", None)  # any attempt to train would fail
    assert run() == first


def test_other_settings_in_the_same_folder_are_refused(run):
    run()
    with pytest.raises(devnets.train.RunConflict, match="holds a run with other settings"):
        run("model.lr=0.05")


def test_divergence_ends_the_run_with_its_epoch(run):
    metrics = run("model.lr=1e38", "trainer.max_epochs=5")
    assert metrics["status"] == "diverged"
    assert metrics["diverged_epoch"] == metrics["epochs"] < 5
    assert metrics["train_loss"][-1] is None  # NaN, written as null: metrics.json stays strict JSON


def whole_and_cut(run, stop_at, tmp_path, settings) -> dict:
    """Runs ``settings`` whole (returned) and again, crashing as epoch 3 starts, beside it ("cut")."""
    uninterrupted = run(*settings, run_dir=tmp_path / "whole")
    lift = stop_at(2)
    with pytest.raises(Crash):
        run(*settings, run_dir=tmp_path / "cut")
    lift()
    return uninterrupted


def test_damaged_checkpoint_is_reported_and_the_run_starts_over(run, stop_at, tmp_path, caplog):
    settings = ("trainer.max_epochs=3", "checkpoint_every_n_epochs=1")
    uninterrupted = whole_and_cut(run, stop_at, tmp_path, settings)
    checkpoint = tmp_path / "cut" / "last.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    resumed = run(*settings, run_dir=tmp_path / "cut")
    assert f"{checkpoint} is damaged" in caplog.text
    assert (tmp_path / "cut" / "last.ckpt.corrupt").exists()
    assert_same_run(resumed, uninterrupted, tmp_path / "cut", tmp_path / "whole")


def test_damaged_metrics_file_is_reported_and_rewritten(run, tmp_path, caplog):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text('{"status": "compl')
    metrics = run()
    assert "metrics.json: not valid JSON" in caplog.text
    assert read_metrics(tmp_path / "run") == metrics


def test_a_failed_run_is_retried(run, tmp_path):
    write_metrics(tmp_path / "run", {"status": "failed", "error": "out of memory"})
    assert run()["status"] == "complete"


def test_same_seed_same_curve_other_seed_other_curve(run, tmp_path):
    first = run("seed=1", "method=dropout", run_dir=tmp_path / "a")
    again = run("seed=1", "method=dropout", run_dir=tmp_path / "b")
    other = run("seed=2", "method=dropout", run_dir=tmp_path / "c")
    assert first["test_acc"] == again["test_acc"] and first["train_loss"] == again["train_loss"]
    assert first["train_loss"] != other["train_loss"]


def test_rerun_may_change_how_often_it_logs_or_checkpoints(run):
    first = run("method=bsp")
    assert run("method=bsp", "histogram_every_n_epochs=1", "checkpoint_every_n_epochs=3") == first


def test_checkpoints_land_every_n_epochs_and_at_the_end(run, tmp_path, monkeypatch):
    """last.ckpt is written after epochs 3 and 6 of 7 (``checkpoint_every_n_epochs=3``) and once more at the end:
    the epochs of curves each checkpoint holds."""
    saved = []

    class Saves(Callback):
        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            record = next(callback for callback in trainer.callbacks if isinstance(callback, RunRecord))
            saved.append(len(record.history["train_loss"]))

    build = devnets.train.make_trainer
    monkeypatch.setattr(devnets.train, "make_trainer",
                        lambda cfg, run_dir, callbacks: build(cfg, run_dir, [*callbacks, Saves()]))
    settings = ("trainer.max_epochs=7", "checkpoint_every_n_epochs=3")
    run(*settings, run_dir=tmp_path / "whole")
    assert saved == [3, 6, 7]
