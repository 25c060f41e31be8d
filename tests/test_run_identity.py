"""A run's folder, checkpoint and record belong to that run only (issue 14): names, identity, locks, cache."""

import gzip
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from submitit.core.utils import UncompletedJobError

import devnets.train
from conftest import write_mnist_like
from devnets import PROJECT_ROOT
from devnets.data import locate
from devnets.results import read_metrics
from devnets.train import RunConflict, RunInterrupted


def test_a_sweep_over_any_key_gives_each_value_its_own_folder(data_root, tmp_path):
    completed = subprocess.run(
        [sys.executable, "scripts/train.py", "-m", "hydra/launcher=basic", f"hydra.sweep.dir={tmp_path}",
         f"data.root={data_root}", "data.n_train=200", "model.hidden=8", "trainer.max_epochs=1",
         "trainer.enable_progress_bar=false", "model.lr=0.05,0.2"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    for lr in (0.05, 0.2):
        run_dir = tmp_path / f"mnist-n200/h8/baseline/model.lr={lr}/seed0"
        metrics = read_metrics(run_dir)
        assert metrics["status"] == "complete" and metrics["config"]["model"]["lr"] == lr
        assert f"[devnets.epochs][INFO] - epoch 1: test/acc {metrics['test_acc'][0]:.6g}, test/loss" in (
            run_dir / "train.log").read_text()  # a line per epoch, in train.log only
    assert "epoch 1: " not in completed.stdout + completed.stderr


def test_a_checkpoint_of_other_settings_is_set_aside(run, tmp_path, caplog):
    settings = ("trainer.max_epochs=2", "checkpoint_every_n_epochs=1")
    run(*settings, "model.lr=0.2")
    (tmp_path / "run" / "metrics.json").unlink()
    resumed = run(*settings, "model.lr=0.1")
    fresh = run(*settings, "model.lr=0.1", run_dir=tmp_path / "fresh")
    assert resumed["config"]["model"]["lr"] == 0.1
    assert resumed["test_acc"] == fresh["test_acc"] and resumed["train_loss"] == fresh["train_loss"]
    assert (tmp_path / "run" / "last.ckpt.other-settings").exists()
    assert "was not written by a run with these settings" in caplog.text


def test_a_torch_file_that_is_not_a_checkpoint_is_set_aside(run, tmp_path):
    (tmp_path / "run").mkdir()
    torch.save({"a": 1}, tmp_path / "run" / "last.ckpt")
    assert run()["status"] == "complete"
    assert (tmp_path / "run" / "last.ckpt.foreign").exists()


def test_a_second_process_on_the_same_folder_is_refused_until_the_first_ends(run, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from devnets.train import run_lock\n"
         f"with run_lock(Path({str(tmp_path / 'run')!r})):\n print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunConflict, match=f"is in use by process {holder.pid} on "):
            run()
        assert read_metrics(tmp_path / "run") is None
    finally:
        holder.kill()
        holder.wait()
    assert run()["status"] == "complete"  # the OS released the killed holder's lock


def test_a_finished_run_is_extended_by_more_epochs_and_refuses_fewer(run, tmp_path):
    whole = run("trainer.max_epochs=4", run_dir=tmp_path / "whole")
    run("trainer.max_epochs=2")
    extended = run("trainer.max_epochs=4")
    assert extended["epochs"] == 4 and extended["status"] == "complete"
    assert extended["test_acc"] == whole["test_acc"] and extended["train_loss"] == whole["train_loss"]
    with pytest.raises(RunConflict, match=r"holds a complete run of 4 epochs; trainer.max_epochs=3 is fewer"):
        run("trainer.max_epochs=3")


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SIGTERMException, UncompletedJobError])
def test_a_stopped_run_reads_interrupted_keeps_its_curves_and_resumes(run, stop_at, tmp_path, stop):
    """Ctrl-C; SIGTERM (scancel); submitit's time-out handler once max_num_timeout is spent."""
    settings = ("trainer.max_epochs=4", "checkpoint_every_n_epochs=1")
    whole = run(*settings, run_dir=tmp_path / "whole")
    lift = stop_at(2, stop)
    try:
        with pytest.raises(RunInterrupted, match="interrupted .* after 2 epochs; the same command resumes it"):
            run(*settings)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores SIGINT after one
    stopped = read_metrics(tmp_path / "run")
    assert stopped["status"] == "interrupted" and stopped["test_acc"] == whole["test_acc"][:2]
    lift()
    assert run(*settings)["test_acc"] == whole["test_acc"]


def test_an_exploding_loss_is_divergence(run):
    metrics = run("model.lr=1e6", "trainer.max_epochs=5")
    assert metrics["status"] == "diverged" and metrics["diverged_epoch"] == 1


def test_the_unpacked_copy_of_a_flat_folder_follows_its_source(tmp_path):
    flat = tmp_path / "flat"
    write_mnist_like(flat / "fashion-mnist", seed=1, compress=True)
    first = locate("fashion_mnist", flat)
    other = tmp_path / "other"
    write_mnist_like(other / "fashion-mnist", seed=2, compress=True)
    assert locate("fashion_mnist", other) != first
    time.sleep(0.01)
    write_mnist_like(flat / "fashion-mnist", seed=3, compress=True)  # the same folder, new content
    refreshed = locate("fashion_mnist", flat)
    assert refreshed != first
    images = refreshed / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    assert images.read_bytes() == gzip.decompress((flat / "fashion-mnist/train-images-idx3-ubyte.gz").read_bytes())


def test_sigterm_before_training_ends_the_run_even_where_a_handler_only_logs_it(run, tmp_path, monkeypatch):
    """submitit only logs SIGTERM in a SLURM job; a run scancel'ed while it loads still ends, with no record
    reading ``running``."""
    logged = []

    def log_only(signum, frame):
        logged.append(signum)

    previous = signal.signal(signal.SIGTERM, log_only)

    def terminated(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs here

    monkeypatch.setattr(devnets.train, "usable_checkpoint", terminated)
    try:
        with pytest.raises(SystemExit):
            run()
        assert signal.getsignal(signal.SIGTERM) is log_only  # the run's own handler is gone with it
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert logged == [signal.SIGTERM]
    assert read_metrics(tmp_path / "run") is None


def test_a_sigterm_while_a_stopped_run_writes_its_record_leaves_the_record_whole(run, tmp_path, monkeypatch):
    """In a SLURM job, SLURM's SIGTERM follows submitit's requeue (a SystemExit in the run) by milliseconds:
    the run's ``interrupted`` record is still written, and the SIGTERM reaches submitit's handler."""
    logged = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: logged.append(signum))

    def requeued(*args):
        raise SystemExit(-1)  # submitit's exit once it has requeued the job

    write_metrics = devnets.train.write_metrics

    def write_under_sigterm(run_dir, metrics):
        if metrics["status"] == "interrupted":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the handler runs here
        return write_metrics(run_dir, metrics)

    monkeypatch.setattr(devnets.train, "results", requeued)
    monkeypatch.setattr(devnets.train, "write_metrics", write_under_sigterm)
    try:
        with pytest.raises(RunInterrupted):
            run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert logged == [signal.SIGTERM]
    assert read_metrics(tmp_path / "run")["status"] == "interrupted"


def test_a_full_disk_is_one_line_naming_the_file(data_root, tmp_path, monkeypatch):
    def full(run_dir, metrics):
        raise OSError(28, "No space left on device", str(run_dir / "metrics.json"))

    monkeypatch.setattr(devnets.train, "write_metrics", full)
    monkeypatch.setattr(sys, "argv", ["train.py", f"data.root={data_root}", f"hydra.run.dir={tmp_path / 'run'}",
                                      "data.n_train=200", "model.hidden=8", "trainer.max_epochs=1"])
    with pytest.raises(SystemExit) as stop:
        devnets.train.main()
    assert str(stop.value) == f"error: cannot write {tmp_path / 'run' / 'metrics.json'}: No space left on device"


def test_an_interrupted_metrics_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from devnets import results

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.json, "dump", fail)
    with pytest.raises(OSError):
        results.write_metrics(tmp_path, {"status": "running"})
    assert list(tmp_path.iterdir()) == []


def test_under_slurm_a_run_never_resumes_from_an_hpc_checkpoint_outside_its_folder(run, tmp_path, monkeypatch):
    other = run("seed=1", "trainer.max_epochs=3", run_dir=tmp_path / "other")
    fresh = run("trainer.max_epochs=2", run_dir=tmp_path / "fresh")
    monkeypatch.chdir(tmp_path)
    for name, value in {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train"}.items():
        monkeypatch.setenv(name, value)
    shutil.copy(tmp_path / "other" / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt")  # Lightning's own requeue file
    metrics = run("trainer.max_epochs=2")
    assert metrics["test_acc"] == fresh["test_acc"] != other["test_acc"][:2]
