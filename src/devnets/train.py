"""Train one run from the Hydra config: ``python scripts/train.py [overrides]`` (or ``devnets-train``).

The run's folder is named for its settings (conf/hydra/default.yaml). Starting a run whose folder
already holds one carries on from it: a complete run is skipped, an unfinished one resumes from
``last.ckpt``, and a run with other settings is refused rather than overwritten.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from devnets.callbacks.epoch_progress_bar import EpochProgressBar
from devnets.callbacks.weight_histograms import WeightHistograms
from devnets.data import DATASETS, PROJECT_ROOT, DataCorrupt, DataNotFound
from devnets.errors import InvalidSetting, require
from devnets.results import CorruptMetrics, read_metrics, write_metrics

log = logging.getLogger("devnets")
# last.ckpt shares the run's folder with metrics.json and the logs on purpose.
warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")

CONF_DIR = PROJECT_ROOT / "conf"
CHECKPOINT = "last.ckpt"
# Keys that say where or how fast a run goes, not what it computes: a rerun may change them.
NOT_SETTINGS = ("per_cell", "logger", "paths", "threads", "experiment_name")
NOT_SETTINGS += ("checkpoint_every_n_epochs", "histogram_every_n_epochs")
NOT_DATA_SETTINGS = ("root", "download")


class RunConflict(RuntimeError):
    pass


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("data_input_dim", lambda name: DATASETS[name].input_dim, replace=True)


register_resolvers()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its target and renames it into place: a kill never truncates one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        partial = f"{path}.partial"
        super().save_checkpoint(checkpoint, partial, storage_options)
        os.replace(partial, path)


SUMMARY_KEYS = {
    "dataset": "data.name",
    "n_train": "data.n_train",
    "hidden": "model.hidden",
    "method": "method.name",
    "seed": "seed",
    "max_epochs": "trainer.max_epochs",
    "experiment": "experiment_name",
}


def run_summary(cfg: DictConfig) -> dict[str, Any]:
    """The settings the results tables group by (as given, even when a run could not start)."""
    return {key: OmegaConf.select(cfg, path, default=None) for key, path in SUMMARY_KEYS.items()}


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus what does not change the computation: a run's identity."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_SETTINGS:
        settings.pop(key, None)
    for key in NOT_DATA_SETTINGS:
        settings["data"].pop(key, None)
    for callback in (settings["method"].get("callbacks") or {}).values():
        for key in NOT_SETTINGS:
            callback.pop(key, None)
    return settings


def user_key(cfg: DictConfig, node: str, name: str) -> str:
    """The config key a user sets for ``name`` of ``node``, following a plain ``${...}`` interpolation."""
    raw = OmegaConf.to_container(OmegaConf.select(cfg, node), resolve=False).get(name)
    match = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
    return match.group(1) if match else f"{node}.{name}"


def instantiate_node(cfg: DictConfig, node: str) -> Any:
    """``hydra.utils.instantiate`` of one node, with a bad setting reported under its config key."""
    try:
        return instantiate(OmegaConf.select(cfg, node))
    except InstantiationException as error:
        if isinstance(error.__cause__, InvalidSetting):
            raise error.__cause__.renamed(user_key(cfg, node, error.__cause__.key)) from None
        raise


def build(cfg: DictConfig):
    """Check every setting and build the data module, the model and the method's callbacks.

    Reads no data: every bad setting is reported before anything is loaded or trained.
    """
    require(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", cfg.seed, "an integer ≥ 0")
    epochs = cfg.trainer.max_epochs
    require(isinstance(epochs, int) and epochs >= 1, "trainer.max_epochs", epochs, "an integer ≥ 1")
    every = cfg.checkpoint_every_n_epochs
    require(isinstance(every, int) and every >= 1, "checkpoint_every_n_epochs", every, "an integer ≥ 1")
    every = cfg.histogram_every_n_epochs
    require(isinstance(every, int) and every >= 0, "histogram_every_n_epochs", every, "an integer ≥ 0 (0: never)")
    threads = cfg.threads
    ok = threads is None or (isinstance(threads, int) and threads >= 1)
    require(ok, "threads", threads, "null or an integer ≥ 1")
    data = instantiate_node(cfg, "data")
    L.seed_everything(cfg.seed, verbose=False)
    model = instantiate_node(cfg, "model")
    callbacks = [instantiate_node(cfg, f"method.callbacks.{name}") for name in cfg.method.callbacks]
    return data, model, callbacks


def usable_checkpoint(run_dir: Path) -> Path | None:
    """``last.ckpt`` if it loads; a damaged one is moved aside with a warning and the run starts over."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # any failure to unpickle means the file cannot be resumed from
        aside = path.with_name(f"{CHECKPOINT}.corrupt")
        shutil.move(path, aside)
        log.warning("%s is damaged (%s); moved it to %s and starting the run over", path, error, aside.name)
        return None
    return path


def previous_run(run_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    try:
        previous = read_metrics(run_dir)
    except CorruptMetrics as error:
        log.warning("%s; it will be rewritten", error)
        return None
    if previous is not None and previous.get("config", settings) != settings:
        raise RunConflict(
            f"{run_dir} holds a run with other settings; pass hydra.run.dir=DIR (or experiment_name=NAME) "
            f"to keep both, or delete that folder to replace it"
        )
    return previous


def make_trainer(cfg: DictConfig, run_dir: Path, method_callbacks: list) -> L.Trainer:
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values()]
    checkpoint = ModelCheckpoint(
        dirpath=run_dir,
        filename=Path(CHECKPOINT).stem,
        every_n_epochs=cfg.checkpoint_every_n_epochs,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    callbacks = [*method_callbacks, WeightHistograms(cfg.histogram_every_n_epochs), checkpoint]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(EpochProgressBar())
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])


def train(cfg: DictConfig, run_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run (or resume, or skip) the run ``cfg`` describes; returns its metrics.json content."""
    run_dir = Path(run_dir if run_dir is not None else cfg.paths.output_dir)
    settings = run_settings(cfg)
    previous = previous_run(run_dir, settings)
    if previous is not None and previous["status"] in ("complete", "diverged"):
        log.info("%s already holds a %s run; nothing to do", run_dir, previous["status"])
        return previous
    data, model, method_callbacks = build(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        data.load()
    except InvalidSetting as error:
        raise error.renamed(user_key(cfg, "data", error.key)) from None
    trainer = make_trainer(cfg, run_dir, method_callbacks)
    checkpoint = usable_checkpoint(run_dir)
    metrics = {**run_summary(cfg), "status": "running", "config": settings}
    write_metrics(run_dir, metrics)
    try:
        trainer.fit(model, datamodule=data, ckpt_path=checkpoint)
    except Exception as error:
        write_metrics(run_dir, {**metrics, "status": "failed", "error": f"{type(error).__name__}: {error}"})
        raise
    trainer.save_checkpoint(run_dir / CHECKPOINT, weights_only=False)
    metrics.update(results(model, method_callbacks))
    log_hparams(trainer, metrics)
    metrics = write_metrics(run_dir, metrics)
    log.info("%s: %s, final test accuracy %.2f%%", run_dir, metrics["status"], metrics["final_test_acc"])
    return metrics


def results(model, method_callbacks: list) -> dict[str, Any]:
    curves = model.history
    test_acc = curves["test_acc"]
    best = max(range(len(test_acc)), key=test_acc.__getitem__)
    method_stats = {}
    for callback in method_callbacks:
        method_stats.update(callback.summary() if hasattr(callback, "summary") else {})
    return {
        "status": "diverged" if model.diverged_epoch else "complete",
        "diverged_epoch": model.diverged_epoch,
        "epochs": len(test_acc),
        "final_test_acc": test_acc[-1],
        "best_test_acc": test_acc[best],
        "best_epoch": best + 1,
        "train_seconds": model.train_seconds,
        **curves,
        "method_stats": method_stats,
    }


def log_hparams(trainer: L.Trainer, metrics: dict[str, Any]) -> None:
    """The HPARAMS tab: the run's settings beside its final and best test accuracy."""
    scores = {"hp/final_test_acc": metrics["final_test_acc"], "hp/best_test_acc": metrics["best_test_acc"]}
    for logger in trainer.loggers:
        logger.log_hyperparams(metrics["config"], scores)


def record_failure(cfg: DictConfig, run_dir: Path, error: BaseException) -> None:
    """In a sweep, a job that cannot start still leaves a metrics.json that names its failure."""
    write_metrics(run_dir, {**run_summary(cfg), "status": "failed", "error": str(error)})


USER_ERRORS = (InvalidSetting, DataNotFound, DataCorrupt, RunConflict)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return train(cfg)["final_test_acc"]
    except USER_ERRORS as error:
        log.error("%s", error)
        if not multirun:
            raise SystemExit(f"error: {error}") from None
        if not isinstance(error, RunConflict):
            record_failure(cfg, Path(cfg.paths.output_dir), error)
    except Exception as error:
        if not multirun:
            raise
        log.exception("job failed; the sweep goes on")
        if read_metrics(cfg.paths.output_dir) is None:
            record_failure(cfg, Path(cfg.paths.output_dir), error)
    return None


if __name__ == "__main__":
    main()
