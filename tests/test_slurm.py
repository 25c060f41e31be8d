"""Sweeps on a real SLURM cluster through ``hydra/launcher=slurm``: the one-node cluster of
scripts/slurm_cluster.sh (``.ci/run`` starts it before the tests and stops it after).

Without that cluster these tests are skipped, saying why; with DEVNETS_SLURM_TESTS=1 (``.ci/run`` sets it)
they fail instead, so CI cannot pass without running them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from conftest import compose_config
from devnets import PROJECT_ROOT
from devnets.results import read_metrics
from devnets.train import train

pytestmark = pytest.mark.slurm
TESTS = Path(__file__).resolve().parent
CURVES = ("train_loss", "test_acc", "test_loss")
# Every job of these tests: the fixture data, a tiny MLP, one core and 1 GB.
COMMON = ("data.n_train=200", "model.hidden=8", "trainer.enable_progress_bar=false", "threads=1")


def cluster_problem() -> str | None:
    """Why devnets' test cluster cannot be used here, or None when it answers."""
    if shutil.which("sbatch") is None or shutil.which("sacct") is None:
        return "no SLURM commands (sbatch, sacct) on this machine"
    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30)
        partition = subprocess.run(["sinfo", "--noheader", "--partition=debug", "--format=%t"], capture_output=True,
                                   text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"slurmctld does not answer ({error})"
    if config.returncode != 0:
        return f"slurmctld does not answer ({config.stderr.strip()})"
    if not re.search(r"^ClusterName\s*=\s*devnets$", config.stdout, re.MULTILINE):
        return "the SLURM cluster here is not the one scripts/slurm_cluster.sh starts (ClusterName=devnets)"
    if not re.search(r"idle|mix|alloc", partition.stdout):
        return f"the debug partition has no node up ({partition.stdout.strip() or partition.stderr.strip()})"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    problem = cluster_problem()
    if problem is not None:
        message = f"{problem}; start the cluster with `scripts/slurm_cluster.sh up` (root, Debian or Ubuntu)"
        if os.environ.get("DEVNETS_SLURM_TESTS") == "1":
            pytest.fail(f"DEVNETS_SLURM_TESTS=1 but {message}", pytrace=False)
        pytest.skip(message)


def slurm_sweep_command(data_root: Path, sweep_dir: Path, *overrides: str, python: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *python, "scripts/train.py", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug",
            "hydra.launcher.mem_gb=1", f"hydra.sweep.dir={sweep_dir}", f"data.root={data_root}", *COMMON, *overrides]


def job_env(cache: Path) -> dict[str, str]:
    """The sweep's environment, which sbatch hands on to its jobs: tests/ importable (tests/pace.py)."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "XDG_CACHE_HOME": str(cache)}


def sacct_states(job_id: str, tasks: int = 1) -> list[str]:
    """Every state job ``job_id`` (``123`` or ``123_4``) went through, requeues included, oldest first, once
    it has ended (a job's result is written before its process has exited) and the accounting lists at least
    ``tasks`` records (an array's tasks reach slurmdbd one by one: one may still be missing when the others
    have ended)."""
    for _ in range(120):
        listed = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--duplicates",
                                 f"--jobs={job_id}", "--format=State"], capture_output=True, text=True, timeout=60,
                                check=True)
        states = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
        ended = not {"PENDING", "RUNNING", "COMPLETING"} & set(states)
        if len(states) >= tasks and ended and states[-1] != "REQUEUED":
            return states
        time.sleep(1)
    raise TimeoutError(f"SLURM job {job_id}: states {states} after 2 minutes ({tasks} ended task records expected)")


def local_run(data_root: Path, run_dir: Path, *overrides: str) -> dict:
    """The same run trained here, in this process, as `python scripts/train.py` would."""
    cfg = compose_config(f"data.root={data_root}", *COMMON, "print_config=false", *overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    threads = torch.get_num_threads()
    try:
        return train(cfg)  # with one torch thread, as the jobs
    finally:
        torch.set_num_threads(threads)


def assert_same_curves(slurm: dict, local: dict) -> None:
    assert slurm["status"] == local["status"] == "complete"
    assert slurm["config"] == local["config"]
    for curve in CURVES:
        assert slurm[curve] == local[curve], curve


def test_a_sweep_on_slurm_completes_as_local_runs_do_and_a_rerun_submits_nothing(data_root, tmp_path):
    sweep_dir, env = tmp_path / "sweep", job_env(tmp_path / "cache")
    grid = ("trainer.max_epochs=3", "method=baseline,dropout", "seed=0,1")
    first = subprocess.run(slurm_sweep_command(data_root, sweep_dir, *grid), cwd=PROJECT_ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-4000:]
    assert "0 of 4 jobs hold finished runs; submitting 4 to SLURM" in first.stdout
    array = re.search(r"submitted SLURM job array (\d+)", first.stdout).group(1)
    assert sacct_states(array, tasks=4) == ["COMPLETED"] * 4
    for method in ("baseline", "dropout"):
        for seed in (0, 1):
            slurm = read_metrics(sweep_dir / f"mnist-n200/h8/{method}/seed{seed}")
            local = local_run(data_root, tmp_path / f"local/{method}/seed{seed}", "trainer.max_epochs=3",
                              f"method={method}", f"seed={seed}")
            assert_same_curves(slurm, local)

    # The rerun finds every run finished before torch is imported (-X importtime lists each import) and
    # submits nothing.
    submitted = len(list((sweep_dir / ".submitit").iterdir()))
    again = subprocess.run(slurm_sweep_command(data_root, sweep_dir, *grid, python=("-X", "importtime")),
                           cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "4 of 4 jobs hold finished runs; submitting 0 to SLURM" in again.stdout
    assert "submitted SLURM job array" not in again.stdout
    assert len(list((sweep_dir / ".submitit").iterdir())) == submitted
    imported = {line.split("|")[-1].strip() for line in again.stderr.splitlines() if line.startswith("import time:")}
    assert "hydra" in imported and not {"torch", "lightning"} & imported


class StoppedSweep:
    """A sweep of two paced jobs (0.2 s an epoch, 300 epochs) with a one-minute time limit: job 0 is stopped by
    SLURM's time-limit signal and requeued, job 1 is scancel'ed once it has saved a checkpoint."""

    EPOCHS = 300
    OVERRIDES = (f"trainer.max_epochs={EPOCHS}", "checkpoint_every_n_epochs=10",
                 "+method.callbacks.pace._target_=pace.Pace", "+method.callbacks.pace.seconds=0.2")
    VARIANT = "+method.callbacks.pace._target_=pace.Pace,+method.callbacks.pace.seconds=0.2"

    def __init__(self, data_root: Path, root: Path):
        self.sweep_dir = root / "sweep"
        self.timed_out = self.sweep_dir / f"mnist-n200/h8/baseline/{self.VARIANT}/seed0"
        self.cancelled = self.sweep_dir / f"mnist-n200/h8/baseline/{self.VARIANT}/seed1"
        self.seen_interrupted: dict | None = None
        self.errors: list[str] = []
        # SLURM checks time limits every 30 s: it warns (SIGUSR2) signal_delay_s before the limit at the latest,
        # up to 30 s earlier; with 1 s that is 29-59 s into the job, once the run trains.
        command = slurm_sweep_command(data_root, self.sweep_dir, *self.OVERRIDES, "hydra.launcher.timeout_min=1",
                                      "hydra.launcher.signal_delay_s=1", "seed=0,1")
        self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=job_env(root / "cache"), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        conductor = threading.Thread(target=self.conduct, daemon=True)
        conductor.start()
        # The uninterrupted run, here, while the jobs run (it sleeps as much as they do).
        self.whole = local_run(data_root, root / "whole", *self.OVERRIDES, "seed=0")
        self.stdout, self.stderr = self.process.communicate(timeout=600)
        conductor.join(timeout=60)

    def job_id(self, task: int) -> str:
        """The SLURM id of the sweep's job ``task`` (the array's task of that index)."""
        folder = self.wait_for(lambda: next((self.sweep_dir / ".submitit").glob(f"*_{task}"), None), "submission")
        return folder.name

    def wait_for(self, found, what: str, seconds: float = 300):
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                value = found()
            except (OSError, ValueError):  # a file half written, a folder not made yet
                value = None
            if value:
                return value
            if self.process.poll() is not None:
                raise RuntimeError(f"the sweep ended before {what}")
            time.sleep(0.5)
        raise TimeoutError(f"no {what} in {seconds} s")

    def conduct(self) -> None:
        try:
            cancelled, timed_out = self.job_id(1), self.job_id(0)
            self.wait_for(lambda: (self.cancelled / "last.ckpt").exists(), "checkpoint of job 1")
            subprocess.run(["scancel", cancelled], check=True, timeout=60)
            self.seen_interrupted = self.wait_for(
                lambda: (read_metrics(self.timed_out) or {}).get("status") == "interrupted" and read_metrics(
                    self.timed_out), "interrupted record of job 0")
            # The requeued job may run its remaining epochs without another time-out.
            subprocess.run(["scontrol", "update", f"JobId={timed_out}", "TimeLimit=10"], check=True, timeout=60)
            self.timed_out_id = timed_out
        except Exception as error:  # reported by the tests
            self.errors.append(f"{type(error).__name__}: {error}")


@pytest.fixture(scope="module")
def stopped_sweep(data_root, tmp_path_factory) -> StoppedSweep:
    return StoppedSweep(data_root, tmp_path_factory.mktemp("stopped"))


def test_a_job_stopped_at_its_time_limit_is_requeued_and_ends_with_the_uninterrupted_curve(stopped_sweep):
    assert not stopped_sweep.errors, stopped_sweep.errors
    interrupted = stopped_sweep.seen_interrupted
    assert 0 < len(interrupted["test_acc"]) < StoppedSweep.EPOCHS  # stopped part-way, its curve so far kept
    assert interrupted["test_acc"] == stopped_sweep.whole["test_acc"][: len(interrupted["test_acc"])]
    assert sacct_states(stopped_sweep.timed_out_id)[0] == "REQUEUED"
    assert sacct_states(stopped_sweep.timed_out_id)[-1] == "COMPLETED"
    assert_same_curves(read_metrics(stopped_sweep.timed_out), stopped_sweep.whole)
    log = "".join(path.read_text() for path in (stopped_sweep.sweep_dir / ".submitit").glob("*_0/*_log.out"))
    assert "this job is timed-out" in log and "Requeued job" in log


def test_a_scancelled_job_reads_interrupted_and_the_sweep_lists_it_with_a_non_zero_exit(stopped_sweep):
    assert not stopped_sweep.errors, stopped_sweep.errors
    record = read_metrics(stopped_sweep.cancelled)
    assert record["status"] == "interrupted"
    assert 10 <= len(record["test_acc"]) < StoppedSweep.EPOCHS
    assert stopped_sweep.process.returncode != 0
    last = stopped_sweep.stderr.strip().splitlines()[-2:]
    assert last[0] == "1 of 2 jobs did not finish:"
    assert last[1].startswith(f"  seed=1: {stopped_sweep.cancelled} (SLURM job ")
    assert "CANCELLED" in last[1] and "its metrics.json reads interrupted" in last[1]
