"""Sweeps: the experiments compose, a real joblib multirun, skipping finished jobs, failing jobs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus

from conftest import compose_config
from devnets import PROJECT_ROOT
from devnets.results import read_metrics
from devnets.train import CONF_DIR

GRID = {"data": "mnist,fashion_mnist", "model.hidden": "10,100,500", "method": "baseline,dropout,l2,bdnn_dsd,bsp",
        "seed": "range(5)"}


def hydra_config(*overrides):
    """The config a job of these overrides gets, its ``hydra:`` interpolations (the run folder) resolvable."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize("experiment, n_train", [("grid_1200", 1200), ("grid_full", 60000)])
def test_paper_grids_sweep_datasets_sizes_methods_and_five_seeds(experiment, n_train):
    cfg = hydra_config(f"experiment={experiment}")
    assert dict(cfg.hydra.sweeper.params) == GRID
    assert cfg.data.n_train == n_train and cfg.threads == 1
    assert cfg.hydra.launcher.n_jobs == 2
    assert cfg.hydra.sweep.dir == f"outputs/{experiment}"


def test_cifar_experiment_uses_cifar():
    cfg = hydra_config("experiment=cifar10")
    assert cfg.data.name == "cifar10" and cfg.data.n_train == 50000
    assert cfg.hydra.sweeper.params["model.hidden"] == "10,100,500"


def test_slurm_launcher_composes():
    cfg = hydra_config("experiment=grid_full", "hydra/launcher=slurm", "hydra.launcher.partition=cpu")
    assert cfg.hydra.launcher._target_ == "hydra_plugins.devnets_launcher.slurm_launcher.SlurmLauncher"
    assert cfg.hydra.launcher.partition == "cpu" and cfg.hydra.launcher.timeout_min == 240
    assert cfg.hydra.launcher.max_num_timeout == 3  # a time-out is requeued, not recorded as failed
    assert cfg.hydra.launcher.cpus_per_task == cfg.threads == 1
    wider = hydra_config("experiment=grid_full", "hydra/launcher=slurm", "threads=4")
    assert wider.hydra.launcher.cpus_per_task == 4


@pytest.mark.parametrize("hidden, n_train, p", [(10, 1200, 0.0), (100, 1200, 0.4), (500, 1200, 0.6),
                                                (100, 60000, 0.3), (500, 60000, 0.4)])
def test_dropout_rate_follows_bsp_table_1(hidden, n_train, p):
    cfg = compose_config("method=dropout", f"model.hidden={hidden}", f"data.n_train={n_train}")
    assert cfg.method.p == p
    assert compose_config("method=dropout", "data=cifar10", f"model.hidden={hidden}").method.p == 0.3
    assert compose_config("method=dropout", "method.p=0.25").method.p == 0.25


def sweep(data_root, sweep_dir, *overrides, python=()):
    return subprocess.run(
        [sys.executable, *python, "scripts/train.py", "-m", "hydra/launcher=local", f"hydra.sweep.dir={sweep_dir}",
         f"data.root={data_root}", "model.hidden=8", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
         "threads=1", *(overrides or ("data.n_train=200,5000",))],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )


def test_joblib_sweep_runs_skips_finished_jobs_and_lists_failures(data_root, tmp_path):
    first = sweep(data_root, tmp_path)
    done, failed = tmp_path / "mnist-n200/h8/baseline/seed0", tmp_path / "mnist-n5000/h8/baseline/seed0"
    assert read_metrics(done)["status"] == "complete"
    assert read_metrics(failed)["status"] == "failed"
    assert "data.n_train=5000 is not allowed" in read_metrics(failed)["error"]
    assert first.returncode != 0
    assert first.stderr.strip().splitlines()[-2:] == ["1 of 2 jobs did not finish:", f"  data.n_train=5000: {failed}"]
    finished_at = (done / "metrics.json").stat().st_mtime_ns

    # A finished job is left out before anything is launched, and before torch is imported (-X importtime
    # lists every import of the sweep's process).
    again = sweep(data_root, tmp_path, "data.n_train=200", python=("-X", "importtime"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{done} holds a complete run; not launched" in again.stdout
    assert "1 of 1 jobs hold finished runs; launching the other 0" in again.stdout
    assert (done / "metrics.json").stat().st_mtime_ns == finished_at
    imported = {line.split("|")[-1].strip() for line in again.stderr.splitlines() if line.startswith("import time:")}
    assert "joblib" in imported and not {"torch", "lightning"} & imported


def test_a_sweep_composes_each_config_of_a_group_choice_once_and_derives_the_others_as_hydra_composes_them():
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from hydra_plugins.devnets_launcher.jobs import SweepConfigs

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("train", ["experiment=grid_1200", "data.root=/data", "model.lr=0.2"],
                                           run_mode=RunMode.MULTIRUN)
        jobs = [["data.root=/data", "model.lr=0.2", f"data={data}", f"model.hidden={hidden}", f"method={method}",
                 f"seed={seed}"] for data in ("mnist", "fashion_mnist") for method in ("bsp", "dropout")
                for hidden, seed in ((10, 0), (500, 3))]
        remembered = SweepConfigs(loader)
        derived = [remembered(master, job) for job in jobs]
        assert len(remembered.bases) == 4  # one composed config per (data, method)
        for job, config in zip(jobs, derived, strict=True):
            composed = loader.load_sweep_config(master, job)
            assert OmegaConf.to_container(config) == OmegaConf.to_container(composed)
            assert OmegaConf.is_struct(config) and config.hydra.job.override_dirname == "model.lr=0.2"
        assert remembered(master, jobs[1]) is derived[1]


def test_a_job_that_cannot_make_its_folder_fails_alone(data_root, tmp_path):
    blocked = tmp_path / "mnist-n200/h8/baseline/seed1"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the run folder should be")
    completed = sweep(data_root, tmp_path, "data.n_train=200", "seed=0,1,2")
    assert completed.returncode != 0
    for seed in (0, 2):
        assert read_metrics(tmp_path / f"mnist-n200/h8/baseline/seed{seed}")["status"] == "complete"
    assert completed.stderr.strip().splitlines()[-2:] == [
        "1 of 3 jobs did not finish:", "  seed=1: no run folder (FileExistsError: [Errno 17] File exists: "
        f"'{blocked}')",
    ]


@pytest.mark.parametrize("name, key", [("t_num", "count_threshold"), ("r_d", "bound_step"), ("r_i", "initial_bound")])
def test_sensitivity_sweeps_vary_one_bdnn_parameter_in_its_own_folders(name, key):
    cfg = hydra_config(f"experiment=sensitivity_{name}")
    assert cfg.method.name == "bdnn_dsd" and cfg.model.hidden == 100 and cfg.data.name == "mnist"
    assert set(cfg.hydra.sweeper.params) == {f"method.{key}", "seed"}
    swept = hydra_config(f"experiment=sensitivity_{name}", f"method.{key}=0.5", "seed=3")
    assert swept.paths.run_subdir == f"mnist-n1200/h100/bdnn_dsd/method.{key}=0.5/seed3"


@pytest.mark.parametrize("experiment, readings", [
    ("fidelity_bdnn", ["method.counting=consecutive", "method.reset_after_update=false", "method.cadence=epoch"]),
    ("fidelity_bsp", ["method.iteration=epoch", "method.candidates=per_layer"]),
    ("fidelity_setup", ["model.loss=mse", "data.subset=balanced", "model.init=glorot"]),
])
def test_fidelity_sweeps_give_each_reading_its_own_run_folder(experiment, readings):
    default = hydra_config(f"experiment={experiment}")
    assert default.data.n_train == 1200 and default.model.hidden == 100
    assert set(default.hydra.sweeper.params) >= {"data", "seed"}
    folders = {default.paths.run_subdir} | {
        hydra_config(f"experiment={experiment}", reading).paths.run_subdir for reading in readings
    }
    assert len(folders) == len(readings) + 1


@pytest.mark.parametrize("experiment, key, value", [("tune_l2", "l2", 0.001), ("tune_dropout", "p", 0.2)])
def test_tuning_sweeps_hold_out_validation_and_name_the_value_in_the_run_folder(experiment, key, value):
    cfg = hydra_config(f"experiment={experiment}", f"method.{key}={value}")
    assert cfg.data.val_size == 5000 and cfg.data.n_train == 1200
    assert f"method.{key}" in cfg.hydra.sweeper.params
    assert f"/method.{key}={value}/seed0" in cfg.paths.run_subdir


def test_a_run_folder_names_every_setting_its_path_lacks_but_not_where_or_how_long():
    cfg = hydra_config("model.lr=0.2", "method=bsp", "method.iteration=epoch", "seed=2", "data.root=/data",
                       "trainer.max_epochs=7", "threads=1", "checkpoint_every_n_epochs=2")
    assert cfg.paths.run_subdir == "mnist-n60000/h100/bsp/method.iteration=epoch,model.lr=0.2/seed2"
    assert hydra_config("data=cifar10", "model.hidden=10").paths.run_subdir == "cifar10-n50000/h10/baseline/seed0"


def test_what_a_run_identity_leaves_out_no_folder_name_holds():
    from devnets.train import NOT_SETTINGS

    excluded = set(hydra_config().hydra.job.config.override_dirname.exclude_keys)
    # per_cell acts through the method's keys, which are named; paths.output_root is the one path a user moves
    assert set(NOT_SETTINGS) - {"per_cell", "paths"} <= excluded
    assert "paths.output_root" in excluded


def test_a_killed_worker_takes_no_other_job_down_and_its_job_is_relaunched(data_root, tmp_path):
    command = [sys.executable, "scripts/train.py", "-m", "hydra/launcher=local", f"hydra.sweep.dir={tmp_path}",
               f"data.root={data_root}", "data.n_train=200", "model.hidden=8", "trainer.max_epochs=600",
               "checkpoint_every_n_epochs=20", "trainer.enable_progress_bar=false", "seed=0,1"]
    sweep_process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
    first = tmp_path / "mnist-n200/h8/baseline/seed0"
    while not (first / "last.ckpt").exists():  # the job is under way in a worker
        assert sweep_process.poll() is None
        time.sleep(0.2)
    workers = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and loky_worker_of(int(pid), sweep_process.pid)]
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    output = sweep_process.communicate(timeout=900)[0]
    assert workers and "a worker died" in output
    assert sweep_process.returncode == 0, output[-2000:]
    for seed in (0, 1):
        assert read_metrics(tmp_path / f"mnist-n200/h8/baseline/seed{seed}")["status"] == "complete"


def loky_worker_of(pid: int, parent: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return f"PPid:\t{parent}\n" in status and b"LokyProcess" in command


class Watcher:
    """submitit's sacct watcher where sacct fails (a cluster without accounting): no state for any job."""

    def update(self):
        pass

    def get_info(self, job_id, mode="standard"):
        return {}

    def is_done(self, job_id, mode="standard"):
        return False

    def get_state(self, job_id, mode="standard"):
        return "UNKNOWN"


class CancelledJob:
    """A SLURM job that ended without a result, as submitit's Job shows it."""

    job_id = "7_1"
    watcher = Watcher()

    def __init__(self, folder: Path):
        self.paths = SimpleNamespace(result_pickle=folder / "7_1_0_result.pkl", stdout=folder / "7_1_0_log.out")

    def results(self):
        from submitit.core.utils import UncompletedJobError

        raise UncompletedJobError("Job 7_1 (task: 0) has not produced any output (state: UNKNOWN)")


def test_without_accounting_a_job_gone_from_the_queue_ends_as_its_failure_naming_its_record(tmp_path, monkeypatch):
    from devnets.results import write_metrics
    from hydra_plugins.devnets_launcher import slurm_launcher
    from hydra_plugins.devnets_launcher.jobs import report

    in_queue = [{"7_1"}, {"7_1"}, set()]  # squeue lists it twice, then no more
    monkeypatch.setattr(slurm_launcher, "queue", lambda job_ids: in_queue.pop(0) if in_queue else set())
    monkeypatch.setattr(slurm_launcher, "POLL_S", 0)
    monkeypatch.setattr(slurm_launcher, "GONE_AFTER_S", 0.5)
    job = CancelledJob(tmp_path)
    started = time.time()
    assert slurm_launcher.wait([job]) == [job]
    assert 0.5 <= time.time() - started < 10 and not in_queue

    run_dir = tmp_path / "seed1"
    write_metrics(run_dir, {"status": "interrupted"})
    ended = slurm_launcher.outcome(job, ["method=bsp", "seed=1"], run_dir)
    done = JobReturn(overrides=["method=bsp", "seed=0"], status=JobStatus.COMPLETED, _return_value=97.5)
    with pytest.raises(SystemExit) as listed:
        report([done, ended])
    assert str(listed.value).splitlines() == [
        "1 of 2 jobs did not finish:",
        f"  seed=1: {run_dir} (SLURM job 7_1 UNKNOWN, its metrics.json reads interrupted; "
        f"log: {tmp_path}/7_1_0_log.out)",
    ]


def test_a_sweep_starts_its_longest_runs_first(data_root, tmp_path):
    """In config order the sweep would run hidden=4 first; one worker runs hidden=32 first, then 8, then 4."""
    completed = sweep(data_root, tmp_path, "data.n_train=200", "model.hidden=4,32,8", "hydra.launcher.n_jobs=1")
    assert completed.returncode == 0, completed.stderr[-3000:]
    finished_at = {hidden: (tmp_path / f"mnist-n200/h{hidden}/baseline/seed0/metrics.json").stat().st_mtime_ns
                   for hidden in (4, 8, 32)}
    assert finished_at[32] < finished_at[8] < finished_at[4]
