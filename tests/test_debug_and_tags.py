"""What lightning-hydra-template users expect: the config tree, debug= runs kept apart, and tags."""

import subprocess
import sys

import pytest
from omegaconf import open_dict

from conftest import compose_config
from devnets import PROJECT_ROOT
from devnets.config_tree import config_tree
from devnets.results import read_metrics
from devnets.train import hparams, run_settings, train
from test_sweep import hydra_config

DEBUG = ["fast_dev_run", "limit", "overfit", "profiler"]


def test_the_config_tree_shows_the_resolved_config_groups_first():
    cfg = compose_config("method=dropout", "tags=[a]")
    with open_dict(cfg):
        cfg.paths.variant, cfg.paths.output_dir = "", "/runs/x"
    lines = config_tree(cfg).splitlines()
    assert lines[:3] == ["CONFIG", "├── data:", "│     _target_: devnets.data.ImageClassificationData"]
    branches = [line[4:].split(":")[0] for line in lines if line[:4] in ("├── ", "└── ")]
    assert branches[:6] == ["data", "model", "method", "trainer", "logger", "paths"]
    assert "per_cell" not in branches
    assert "│     p: 0.3" in lines  # the dropout rate resolved from per_cell
    assert "│     input_dim: 784" in lines
    assert lines[-1].startswith("└── ")


@pytest.mark.parametrize("name", DEBUG)
def test_a_debug_run_goes_to_its_own_experiment_folder(name):
    cfg = hydra_config(f"debug={name}", "experiment=grid_1200")
    assert cfg.experiment_name == "debug" and list(cfg.tags) == ["debug"]
    assert cfg.hydra.sweep.dir == "outputs/debug"
    assert f"/debug={name}/seed0" in cfg.paths.run_subdir


def test_tags_and_print_config_name_no_folder_and_change_no_identity(make_config):
    plain = hydra_config().paths.run_subdir
    assert hydra_config("tags=[a,b]", "print_config=false").paths.run_subdir == plain
    assert run_settings(make_config("tags=[a]", "print_config=false")) == run_settings(make_config())


def test_tags_reach_metrics_and_hparams_and_a_retagged_rerun_is_the_same_run(run, tmp_path):
    metrics = run("tags=[first_try,lr_probe]")
    assert metrics["tags"] == ["first_try", "lr_probe"]
    assert read_metrics(tmp_path / "run")["tags"] == ["first_try", "lr_probe"]
    assert hparams(metrics)["tags"] == "first_try,lr_probe"
    again = run("tags=[other]")
    assert again["status"] == "complete" and again["tags"] == ["first_try", "lr_probe"]  # skipped, not refused


def test_fast_dev_run_trains_one_batch_saves_no_checkpoint_and_is_never_skipped(run, tmp_path):
    first = run("debug=fast_dev_run")
    assert first["experiment"] == "debug" and first["epochs"] == 1 and first["tags"] == ["debug"]
    assert not (tmp_path / "run" / "last.ckpt").exists()
    assert not (tmp_path / "run" / "tensorboard").exists() and not list((tmp_path / "run").glob("events.out.*"))
    written = (tmp_path / "run" / "metrics.json").stat().st_mtime_ns
    run("debug=fast_dev_run")
    assert (tmp_path / "run" / "metrics.json").stat().st_mtime_ns != written


@pytest.mark.parametrize("name, epochs", [("limit", 3), ("profiler", 1)])
def test_limit_and_profiler_runs_complete(make_config, name, epochs):
    cfg = make_config(f"debug={name}")
    with open_dict(cfg):
        cfg.trainer.max_epochs = epochs  # make_config's 2 epochs would override the debug config's
    metrics = train(cfg)
    assert metrics["status"] == "complete" and metrics["epochs"] == epochs and metrics["experiment"] == "debug"


def test_overfit_trains_on_one_batch_until_it_is_learnt(data_root, tmp_path):
    cfg = compose_config(f"data.root={data_root}", "data.batch_size=50", "debug=overfit", "model.hidden=16",
                         "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "print_config=false")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    metrics = train(cfg)
    assert metrics["n_train"] == 50 and metrics["epochs"] == 300
    assert metrics["train_loss"][-1] < metrics["train_loss"][0] / 2


def test_a_run_prints_its_config_tree_unless_told_not_to(data_root, tmp_path):
    def fast_dev_run(*overrides):
        return subprocess.run(
            [sys.executable, "scripts/train.py", "debug=fast_dev_run", f"data.root={data_root}", "data.n_train=200",
             "model.hidden=8", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}", *overrides],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        )

    shown = fast_dev_run()
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("CONFIG\n├── data:\n")
    assert "│     fast_dev_run: true" in shown.stdout
    hidden = fast_dev_run("print_config=false")
    assert hidden.returncode == 0, hidden.stderr
    assert "CONFIG" not in hidden.stdout
    assert read_metrics(tmp_path)["experiment"] == "debug"
