"""What a run's folder holds, read without torch or Lightning: the run's identity (the settings that change
what it computes) and whether the folder already holds this run, finished.

A single run (``python scripts/train.py ...``), the local launcher and the SLURM launcher all ask
:func:`finished_run` before anything heavy is imported or submitted, so rerunning a finished sweep of
150 runs takes seconds. :mod:`devnets.train` uses the same functions under the run's lock.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from devnets.dataset_info import DATASETS
from devnets.errors import is_whole, require
from devnets.results import CorruptMetrics, read_metrics

log = logging.getLogger("devnets")

# Keys that say where, how fast or how long a run goes, not what it computes: a rerun may change them
# (a larger trainer.max_epochs extends a finished run). conf/hydra/default.yaml leaves the same keys out
# of folder names.
NOT_SETTINGS = (
    "per_cell", "logger", "paths", "threads", "experiment_name", "tags", "print_config", "checkpoint_every_n_epochs",
    "histogram_every_n_epochs", "data.root", "data.download", "trainer.max_epochs", "trainer.enable_progress_bar",
    "method.callbacks",  # which classes carry the method: method.name says so (older runs kept copies here)
    "model.steps_per_batch",  # every value gives the same numbers, bit for bit (devnets.model)
    "method.compile",  # BDNN-dsd's compiled time step gives the eager one's numbers, bit for bit
)
# Settings added after runs were recorded, with the value those runs had: a record without one is the run the
# default gives today, so finished runs stay finished and checkpoints stay usable.
ADDED_SETTINGS = {"model.input_activation": "none"}
# The file a run holds a POSIX lock on while it runs (devnets.train.run_lock), naming its process and node.
LOCK_FILE = ".lock"
LOCK_HOLDER = re.compile(r"process (\d+) on (\S+)")
# Where a run's TensorBoard event files went before they went straight into its folder (conf/logger/tensorboard.yaml).
LEGACY_TENSORBOARD = "tensorboard"


# What a metrics.json names its run by, from the config (devnets.aggregate groups runs by these).
SUMMARY_KEYS = {
    "dataset": "data.name",
    "n_train": "data.n_train",
    "hidden": "model.hidden",
    "method": "method.name",
    "seed": "seed",
    "max_epochs": "trainer.max_epochs",
    "experiment": "experiment_name",
    "tags": "tags",
}


def run_summary(cfg: DictConfig) -> dict[str, Any]:
    """The settings the results tables group by, and the run's tags (as given, even when a run could not start)."""
    summary = {key: OmegaConf.select(cfg, path, default=None) for key, path in SUMMARY_KEYS.items()}
    return {key: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            for key, value in summary.items()}


class RunConflict(RuntimeError):
    """The run's folder holds another run, or is in use by another process."""


def tensorboard_name(run_dir: str | None) -> str:
    """The TensorBoard logger's ``name``: '' (event files in the run's folder, so TensorBoard names the run by its
    folder), or ``tensorboard`` for a run begun when they went there, which keeps its curves in one place.
    No folder yet (``--cfg job --resolve`` prints the config before Hydra makes one): ''."""
    return LEGACY_TENSORBOARD if run_dir and (Path(run_dir) / LEGACY_TENSORBOARD).is_dir() else ""


def register_resolvers() -> None:
    """The config's own interpolations (conf/model/*.yaml, conf/paths/default.yaml, conf/logger/tensorboard.yaml)."""
    OmegaConf.register_new_resolver("data_input_dim", lambda name: DATASETS[name].input_dim, replace=True)
    OmegaConf.register_new_resolver("data_shape", lambda name: list(DATASETS[name].shape), replace=True)
    OmegaConf.register_new_resolver("subfolder", lambda name: f"{name}/" if name else "", replace=True)
    OmegaConf.register_new_resolver("tensorboard_name", tensorboard_name, replace=True)


register_resolvers()


def identity(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (a resolved config, or the one a run recorded) without the NOT_SETTINGS keys, and with the
    default of each ADDED_SETTINGS key a run recorded before that key existed."""
    settings = copy.deepcopy(settings)
    for key, default in ADDED_SETTINGS.items():
        node, _, name = key.rpartition(".")
        if isinstance(settings.get(node), dict):
            settings[node].setdefault(name, default)
    for key in NOT_SETTINGS:
        node, _, name = key.rpartition(".")
        parent = settings.get(node) if node else settings
        if isinstance(parent, dict):
            parent.pop(name, None)
    return settings


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus what does not change the computation: a run's identity."""
    top_level = {key for key in NOT_SETTINGS if "." not in key} | {"hydra"}  # a launcher's config has hydra
    resolved = {}
    for key in cfg:
        if key not in top_level:
            value = cfg[key]
            resolved[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return identity(resolved)


def check_run_settings(cfg: DictConfig) -> None:
    """The settings train.py itself reads, and those the others interpolate from, checked before any is used."""
    require(is_whole(cfg.seed), "seed", cfg.seed, "an integer ≥ 0")
    epochs = cfg.trainer.max_epochs
    require(is_whole(epochs, minimum=1), "trainer.max_epochs", epochs, "an integer ≥ 1")
    every = cfg.checkpoint_every_n_epochs
    require(is_whole(every, minimum=1), "checkpoint_every_n_epochs", every, "an integer ≥ 1")
    every = cfg.histogram_every_n_epochs
    require(is_whole(every), "histogram_every_n_epochs", every, "an integer ≥ 0 (0: never)")
    threads = cfg.threads
    require(threads is None or is_whole(threads, minimum=1), "threads", threads, "null or an integer ≥ 1")
    devices = cfg.trainer.devices
    require(devices == 1 and not isinstance(devices, bool), "trainer.devices", devices,
            "1 (a run trains in one process; sweeps run runs side by side)")
    tags = OmegaConf.to_container(cfg.tags) if OmegaConf.is_config(cfg.tags) else cfg.tags
    require(isinstance(tags, list) and all(isinstance(tag, str) for tag in tags), "tags", tags,
            "a list of words, e.g. tags=[first_try,lr_probe]")
    fast_dev_run = cfg.trainer.get("fast_dev_run", False)
    require(not fast_dev_run or cfg.experiment_name == "debug", "trainer.fast_dev_run", fast_dev_run,
            "false outside experiment_name=debug (debug=fast_dev_run sets both)")
    steps = cfg.model.get("steps_per_batch", 1)
    if is_whole(steps, minimum=2):  # what counts Lightning batches, not optimiser steps (devnets.model)
        for key, off in (("accumulate_grad_batches", (None, 1)), ("gradient_clip_val", (None, 0)),
                         ("val_check_interval", (None, 1.0))):
            value = cfg.trainer.get(key)
            require(value in off, "model.steps_per_batch", steps,
                    f"1 with trainer.{key}={value} (it counts Lightning batches, each of steps_per_batch steps)")
    name = cfg.data.name
    require(name in DATASETS, "data.name", name, f"one of {sorted(DATASETS)} (or data=NAME)")
    info = DATASETS[name]
    shapes = {"input_dim": info.input_dim, "input_shape": list(info.shape), "num_classes": info.num_classes}
    for key, value in shapes.items():  # those the model takes (the MLP an input_dim, LeNet an input_shape)
        if key in cfg.model:
            given = OmegaConf.to_object(cfg.model[key]) if OmegaConf.is_config(cfg.model[key]) else cfg.model[key]
            require(given == value and not isinstance(given, bool), f"model.{key}", given,
                    f"{value}, the {name} data's")


def previous_run(run_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The run's metrics.json, None when it has none (or an unreadable one); RunConflict for another run's."""
    try:
        previous = read_metrics(run_dir)
    except CorruptMetrics as error:
        log.warning("%s; it will be rewritten", error)
        return None
    recorded = None if previous is None else previous.get("config")
    if recorded is not None and identity(recorded) != settings:
        raise RunConflict(
            f"{run_dir} holds a run with other settings; pass hydra.run.dir=DIR (or experiment_name=NAME) "
            f"to keep both, or delete that folder to replace it"
        )
    return previous


def is_finished(run_dir: Path, previous: dict[str, Any] | None, max_epochs: int) -> bool:
    """True for a diverged run, or a complete one of ``max_epochs``; a longer complete run is refused."""
    if previous is None or previous["status"] not in ("complete", "diverged"):
        return False
    done = previous.get("epochs") or max_epochs
    if previous["status"] == "complete" and done > max_epochs:
        raise RunConflict(
            f"{run_dir} holds a complete run of {done} epochs; trainer.max_epochs={max_epochs} is fewer: pass "
            f"trainer.max_epochs={done} or more, or delete the folder to start over"
        )
    return previous["status"] == "diverged" or done == max_epochs


def finished_run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any] | None:
    """The metrics.json of the finished run ``cfg`` describes, if ``run_dir`` holds one, else None.

    Anything amiss (a bad setting, another run's record, fewer epochs asked than the run holds) is None:
    the run itself reports it once it starts. A ``fast_dev_run`` is never finished (it saves nothing).
    """
    try:
        check_run_settings(cfg)
        if cfg.trainer.get("fast_dev_run", False):
            return None
        previous = previous_run(Path(run_dir), run_settings(cfg))
        return previous if is_finished(Path(run_dir), previous, cfg.trainer.max_epochs) else None
    except Exception:  # the run reports it
        return None


def process_ended(run_dir: str | Path) -> bool:
    """Whether the process that last held the run's folder was on this machine and is gone (killed, or its
    machine's session ended), so a record it left ``running`` will never be finished: the same command resumes
    the run. False where the lock file names no process, or one on another node (a SLURM job's)."""
    try:
        holder = LOCK_HOLDER.match((Path(run_dir) / LOCK_FILE).read_text())
    except OSError:
        return False
    if holder is None or holder[2] != os.uname().nodename:
        return False
    try:
        os.kill(int(holder[1]), 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):  # no such process
        return True
    except PermissionError:  # another user's: it exists
        pass
    return False
