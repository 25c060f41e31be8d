"""The command line: a bad option or key is one line naming the closest valid one, before torch is imported."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devnets import PROJECT_ROOT
from devnets.overrides import BadOverride, check_overrides
from devnets.results import read_metrics

METHODS = "one of [baseline, bdnn_dsd, bdnn_dsd+bsp, bsp, dropout, l2]"
BAD_OVERRIDES = [
    (["method=bsp2"], False, f"method=bsp2 is not allowed: {METHODS} (closest: bsp)"),
    (["method=bsp,bsp2"], True, f"method=bsp2 is not allowed: {METHODS} (closest: bsp)"),
    (["hydra/launcher=locl"], False, "hydra/launcher=locl is not allowed: one of [basic, joblib, local, slurm, "
                                     "submitit_local, submitit_slurm] (closest: local)"),
    (["debug=fdr"], False, "debug=fdr is not allowed: one of [default, fast_dev_run, limit, overfit, profiler]"),
    (["trainer.max_epoch=5"], False, "trainer.max_epoch=5 is not allowed: no such key (closest: trainer.max_epochs)"),
    (["seed=range(2)", "trainer.max_epoch=5"], True,
     "trainer.max_epoch=5 is not allowed: no such key (closest: trainer.max_epochs)"),
    (["method=bsp", "method.alph=0.1"], False, "method.alph=0.1 is not allowed: no such key (closest: method.alpha)"),
    (["methd=bsp"], False, "methd=bsp is not allowed: no such key (closest: method)"),
    (["hydra.run.dri=x"], False, "hydra.run.dri=x is not allowed: no such key (closest: hydra.run.dir)"),
    (["method=bsp,dropout"], False, "Ambiguous value for argument 'method=bsp,dropout' 1. To use it as a list"),
    (["+trainer.max_epochs=3"], False, "Could not append to config. An item is already at 'trainer.max_epochs'."),
    (["seed=["], False, "'seed=[': no viable alternative at input '['"),
    (["method=bsp seed=1"], False,
     "'method=bsp seed=1' (several overrides in one argument: give each its own): mismatched input '=' expecting "
     "<EOF> See https://hydra.cc/docs/1.2/advanced/override_grammar/basic for details"),
]


@pytest.mark.parametrize("overrides, multirun, message", BAD_OVERRIDES, ids=[" ".join(o) for o, _, _ in BAD_OVERRIDES])
def test_a_bad_override_is_one_line_naming_the_closest(overrides, multirun, message):
    with pytest.raises(BadOverride) as error:
        check_overrides(overrides, multirun)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("overrides, multirun", [
    (["method=bsp", "method.alpha=0.1", "seed=3", "tags=[a,b]", "hydra.run.dir=/tmp/x"], False),
    (["method=bsp,dropout", "seed=range(3)", "model.hidden=10,100"], True),
    (["experiment=grid_1200", "hydra/launcher=local"], True),
    (["debug=fast_dev_run", "+trainer.gradient_clip_val=0.5", "~logger"], False),
])
def test_good_overrides_pass(overrides, multirun):
    check_overrides(overrides, multirun)


QUEUED = [line for queue in sorted((PROJECT_ROOT / "scripts" / "queues").glob("*.txt"))
          for line in queue.read_text().splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("line", QUEUED)
def test_every_queued_sweep_is_one_the_config_accepts(line):
    """scripts/run_queue.sh runs each line as ``train.py -m LINE``: a bad line would fail hours into a queue."""
    check_overrides(line.split(), multirun=True)


def train_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/train.py", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("override, message", [
    ("method=bsp2", f"error: method=bsp2 is not allowed: {METHODS} (closest: bsp)"),
    ("trainer.max_epoch=5", "error: trainer.max_epoch=5 is not allowed: no such key (closest: trainer.max_epochs)"),
])
def test_the_command_line_reports_a_bad_override_once_without_importing_torch(override, message):
    completed = train_command(override)
    assert completed.returncode == 1
    assert completed.stderr.splitlines() == [message]
    assert completed.stdout == ""


def test_checking_overrides_imports_neither_torch_nor_lightning():
    imported = "import sys, devnets.overrides; print(sorted({'torch', 'lightning'} & sys.modules.keys()))"
    completed = subprocess.run(
        [sys.executable, "-c", imported],
        capture_output=True, text=True, check=True,
    )
    assert completed.stdout.strip() == "[]"


def test_hydra_flags_still_reach_hydra():
    completed = train_command("--cfg", "job", "method=bsp", "tags=[a]")
    assert completed.returncode == 0, completed.stderr
    assert "name: bsp" in completed.stdout and "- a" in completed.stdout


def test_the_resolved_config_prints_with_each_cells_own_setting():
    # --resolve used to fail on the TensorBoard logger's name, which looks into a run folder not made yet
    completed = train_command("--cfg", "job", "--resolve", "data=fashion_mnist", "model.hidden=10", "method=l2")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "  l2: 0.0003\n" in completed.stdout  # conf/per_cell/paper.yaml's full-set pick for this cell


def imported_modules(stderr: str) -> set[str]:
    """The modules a ``python -X importtime`` run imported."""
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_a_finished_run_is_recognised_before_torch_is_imported(run, data_root, tmp_path):
    settings = (f"data.root={data_root}", "data.n_train=200", "data.batch_size=50", "model.hidden=16",
                "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu")
    done = run(run_dir=tmp_path / "run")  # the same settings (conftest's make_config)
    again = subprocess.run([sys.executable, "-X", "importtime", "scripts/train.py", *settings,
                            f"hydra.run.dir={tmp_path / 'run'}"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{tmp_path / 'run'} already holds a complete run; nothing to do" in again.stdout
    imported = imported_modules(again.stderr)
    assert "hydra" in imported and not {"torch", "lightning"} & imported
    assert read_metrics(tmp_path / "run") == done

    # Any doubt goes to the run itself, which reports it: here a bad setting on the finished run.
    bad = subprocess.run([sys.executable, "scripts/train.py", *settings, "threads=0",
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == "error: threads=0 is not allowed: null or an integer ≥ 1"


def test_a_queue_runs_the_code_of_its_own_checkout(tmp_path):
    """run_queue.sh in a worktree runs that worktree's src/, not the checkout the editable install points at."""
    checkout = tmp_path / "worktree"
    (checkout / "scripts").mkdir(parents=True)
    (checkout / "results" / "runs").mkdir(parents=True)
    (checkout / "src" / "devnets").mkdir(parents=True)
    (checkout / "src" / "devnets" / "__init__.py").write_text("")
    shutil.copy(PROJECT_ROOT / "scripts" / "run_queue.sh", checkout / "scripts")
    (checkout / "scripts" / "train.py").write_text("import devnets\nprint('devnets from', devnets.__file__)\n")
    queue = tmp_path / "queue.txt"
    queue.write_text("experiment=grid_1200\n")
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    completed = subprocess.run(["bash", str(checkout / "scripts" / "run_queue.sh"), str(queue), str(tmp_path / "out"),
                                str(tmp_path / "data")], capture_output=True, text=True, env=environment, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert f"devnets from {checkout / 'src' / 'devnets' / '__init__.py'}" in completed.stdout
