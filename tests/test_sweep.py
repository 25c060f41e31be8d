"""Sweeps: the experiments compose, a real joblib multirun, skipping finished jobs, failing jobs."""

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from conftest import compose_config
from devnets.results import read_metrics
from devnets.train import CONF_DIR, PROJECT_ROOT

GRID = {"data": "mnist,fashion_mnist", "model.hidden": "10,100,500", "method": "baseline,dropout,l2,bdnn_dsd,bsp",
        "seed": "range(5)"}


def hydra_config(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


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
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.partition == "cpu" and cfg.hydra.launcher.timeout_min == 240


@pytest.mark.parametrize("hidden, n_train, p", [(10, 1200, 0.0), (100, 1200, 0.4), (500, 1200, 0.6),
                                                (100, 60000, 0.3), (500, 60000, 0.4)])
def test_dropout_rate_follows_bsp_table_1(hidden, n_train, p):
    cfg = compose_config("method=dropout", f"model.hidden={hidden}", f"data.n_train={n_train}")
    assert cfg.method.p == p
    assert compose_config("method=dropout", "data=cifar10", f"model.hidden={hidden}").method.p == 0.3
    assert compose_config("method=dropout", "method.p=0.25").method.p == 0.25


def sweep(data_root, sweep_dir):
    return subprocess.run(
        [sys.executable, "scripts/train.py", "-m", "hydra/launcher=local", f"hydra.sweep.dir={sweep_dir}",
         f"data.root={data_root}", "data.n_train=200,5000", "data.batch_size=50", "model.hidden=8",
         "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "threads=1"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )


def test_joblib_sweep_runs_skips_finished_jobs_and_records_failures(data_root, tmp_path):
    first = sweep(data_root, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    done, failed = tmp_path / "mnist-n200/h8/baseline/seed0", tmp_path / "mnist-n5000/h8/baseline/seed0"
    assert read_metrics(done)["status"] == "complete"
    assert read_metrics(failed)["status"] == "failed"
    assert "data.n_train=5000 is not allowed" in read_metrics(failed)["error"]
    finished_at = (done / "metrics.json").stat().st_mtime_ns

    again = sweep(data_root, tmp_path)
    assert again.returncode == 0
    assert f"{done} already holds a complete run; nothing to do" in again.stderr + again.stdout
    assert (done / "metrics.json").stat().st_mtime_ns == finished_at


@pytest.mark.parametrize("name, key", [("t_num", "count_threshold"), ("r_d", "bound_step"), ("r_i", "initial_bound")])
def test_sensitivity_sweeps_vary_one_bdnn_parameter_in_its_own_folders(name, key):
    cfg = hydra_config(f"experiment=sensitivity_{name}")
    assert cfg.method.name == "bdnn_dsd" and cfg.model.hidden == 100 and cfg.data.name == "mnist"
    assert set(cfg.hydra.sweeper.params) == {f"method.{key}", "seed"}
    assert f"/{key}{cfg.method[key]}/seed0" in cfg.paths.run_subdir


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
    assert f"/{key}{value}/seed0" in cfg.paths.run_subdir
