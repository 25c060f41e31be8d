"""Train one run from the Hydra config: ``python scripts/train.py [overrides]`` (or ``devnets-train``).

The run's folder is named for its settings (conf/hydra/default.yaml: every command-line setting not
already in the path names a folder of its own). Starting a run whose folder already holds one carries
on from it: a complete run is skipped (or extended, given a larger ``trainer.max_epochs``), an
unfinished one resumes from ``last.ckpt``, and a run with other settings is refused rather than
overwritten. ``last.ckpt`` carries the settings it was written under and is set aside when they
differ. One process at a time holds a run's folder (``.lock``, released by the OS when it dies).
"""

from __future__ import annotations

import fcntl
import inspect
import logging
import os
import re
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_object, instantiate
from lightning.pytorch.plugins.environments import LightningEnvironment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from devnets.callbacks.epoch_progress_bar import EpochProgressBar
from devnets.callbacks.periodic_checkpoint import PeriodicCheckpoint
from devnets.callbacks.run_identity import RunIdentity, checkpoint_identity
from devnets.callbacks.run_record import RunRecord
from devnets.callbacks.weight_histograms import WeightHistograms
from devnets.config_tree import config_tree
from devnets.data import DataCorrupt, DataNotFound
from devnets.errors import InvalidSetting
from devnets.methods.weights import select_weights
from devnets.overrides import CONF_DIR, closest
from devnets.results import read_metrics, write_metrics
from devnets.run_folder import (  # noqa: F401 (NOT_SETTINGS: where tests and users found it before)
    LOCK_FILE,
    NOT_SETTINGS,
    RunConflict,
    check_run_settings,
    identity,
    is_finished,
    previous_run,
    run_settings,
    run_summary,
)

log = logging.getLogger("devnets")
# Console lines that are not for devnets' users: last.ckpt shares the run's folder with metrics.json on
# purpose; devnets runs each job in one process, not under srun; Lightning's own deprecation and advert.
warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
warnings.filterwarnings("ignore", "The `srun` command is available on your system but is not used")
warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip")
)

CHECKPOINT = "last.ckpt"
# The method keys the model reads (model.dropout: ${method.p}, model.l2: ${method.l2}), or that say which
# method it is; every other method.* key is an argument of one of the method's callbacks.
METHOD_KEYS = ("name", "p", "l2", "callbacks")
# Arguments of a method's callbacks that the pipeline fills in from elsewhere in the config.
PIPELINE_ARGUMENTS = {
    "n_neurons": "model.hidden", "n_samples": "data.n_train", "histogram_every_n_epochs": "histogram_every_n_epochs",
}


class RunInterrupted(RuntimeError):
    """SIGTERM, Ctrl-C or a SLURM time-out stopped the run; rerunning the same command resumes it."""


def stopped(error: BaseException) -> bool:
    """Whether ``error`` stops the run rather than failing it: Ctrl-C (KeyboardInterrupt), SIGTERM (Lightning's
    SIGTERMException and :class:`SigtermStops`, both SystemExit), and submitit's answer to SLURM's time-out
    signal: SystemExit once it has requeued the job, UncompletedJobError when the job may not be requeued
    again (``max_num_timeout`` spent)."""
    if isinstance(error, KeyboardInterrupt | SystemExit):
        return True
    submitit_utils = sys.modules.get("submitit.core.utils")  # loaded in a job that submitit runs
    return submitit_utils is not None and isinstance(error, submitit_utils.UncompletedJobError)


class SigtermStops:
    """While entered, SIGTERM stops the run (SystemExit) wherever it is; within :meth:`deferring` it does not
    raise: in ``trainer.fit`` Lightning's own SIGTERM handler stops the run at the next batch instead, and a
    stopped or failed run writing its record gets the record written whole: in
    a SLURM job, SLURM's SIGTERM follows submitit's requeue by milliseconds, and raised there it cut the
    ``interrupted`` record short.

    Without it a SIGTERM outside ``trainer.fit`` (loading data, saving the end) kills the process as it
    stands, or, in a SLURM job, is only logged by submitit (which waits for its time-out signal), so a
    scancel'ed job runs on until SLURM's SIGKILL and leaves its record reading ``running``.
    """

    def __init__(self) -> None:
        self.previous: Any = None
        self.installed = self.deferred = False

    def __enter__(self) -> SigtermStops:
        # Only the main thread may set handlers; a SIGTERM someone chose to ignore stays ignored.
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) != signal.SIG_IGN:
            self.previous = signal.signal(signal.SIGTERM, self.handle)
            self.installed = True
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self.previous is None else self.previous)

    def handle(self, signum: int, frame: Any) -> None:
        if callable(self.previous):  # submitit's handler logs it
            self.previous(signum, frame)
        if not self.deferred:
            raise SystemExit(128 + signum)

    @contextmanager
    def deferring(self) -> Iterator[None]:
        self.deferred = True
        try:
            yield
        finally:
            self.deferred = False


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its target and renames it into place: a kill never truncates one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        partial = f"{path}.partial"
        super().save_checkpoint(checkpoint, partial, storage_options)
        os.replace(partial, path)


def user_key(cfg: DictConfig, node: str, name: str) -> str:
    """The config key a user sets for ``name`` of ``node``, following a plain ``${...}`` interpolation."""
    raw = OmegaConf.to_container(OmegaConf.select(cfg, node), resolve=False).get(name)
    match = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
    return match.group(1) if match else f"{node}.{name}"


def accepted_arguments(target: Any) -> list[str] | None:
    """The keyword arguments ``target`` takes, following a devnets class's ``**settings`` up to the devnets
    base class that names them (MLPClassifier -> ImageClassifier), or to the tensor core a method's callback
    hands them to (BoundMask -> BDNNDsd); None when it takes any."""
    functions = [target.__init__ if inspect.isclass(target) else target]
    if inspect.isclass(target):
        own = [cls for cls in target.__mro__[1:] if cls.__module__.startswith("devnets.")]
        functions += [cls.__init__ for cls in own if "__init__" in vars(cls)]
        if hasattr(target, "tensor_core"):
            functions.append(target.tensor_core.__init__)
    names = []
    for function in functions:
        parameters = inspect.signature(function).parameters
        names += [name for name, parameter in parameters.items() if parameter.kind is not parameter.VAR_KEYWORD
                  and name != "self" and name not in names]
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters.values()):
            return names
    return None


def check_arguments(cfg: DictConfig, node: str) -> None:
    """Each key of ``node`` is an argument of its ``_target_``: a ``+key=value`` typo is one line, not a TypeError."""
    settings = OmegaConf.to_container(OmegaConf.select(cfg, node), resolve=False)
    parameters = accepted_arguments(get_object(settings["_target_"]))
    if parameters is None:
        return
    for key, value in settings.items():
        if key != "_target_" and key not in parameters:
            allowed = [f"{node}.{name}" for name in parameters]
            raise InvalidSetting(f"{node}.{key}", value, f"not an argument of {settings['_target_']}"
                                 f"{closest(f'{node}.{key}', allowed)}")


def instantiate_node(cfg: DictConfig, node: str) -> Any:
    """``hydra.utils.instantiate`` of one node, with a bad setting reported under its config key."""
    check_arguments(cfg, node)
    try:
        return instantiate(OmegaConf.select(cfg, node))
    except InstantiationException as error:
        if isinstance(error.__cause__, InvalidSetting):
            raise error.__cause__.renamed(user_key(cfg, node, error.__cause__.key)) from None
        raise


def build(cfg: DictConfig):
    """Build the data module, the model and the method's callbacks, each checking its own settings.

    Reads no data: every bad setting is reported before anything is loaded or trained.
    """
    check_arguments(cfg, "trainer")
    data = instantiate_node(cfg, "data")
    L.seed_everything(cfg.seed, verbose=False)
    model = instantiate_node(cfg, "model")
    return data, model, method_callbacks(cfg, model)


def method_callbacks(cfg: DictConfig, model: L.LightningModule) -> list:
    """The method's callbacks, in the order ``method.callbacks`` lists them: a class path gets the ``method.*``
    keys its class takes (the one place a switch is set) and the PIPELINE_ARGUMENTS it takes; a node with a
    ``_target_`` (a callback a user adds, ``+method.callbacks.NAME._target_=...``) gets its own keys too.

    A ``method.*`` key that neither the model (through ``${method.*}``) nor a callback reads is refused,
    as a misspelt switch would otherwise be silently ignored.
    """
    method = OmegaConf.to_container(cfg.method, resolve=True)
    nodes = [entry if isinstance(entry, dict) else {"_target_": entry} for entry in method["callbacks"].values()]
    classes = [get_object(node["_target_"]) for node in nodes]
    taken = {key for cls in classes for key in accepted_arguments(cls) or []}
    for key, value in method.items():
        if key not in taken and key not in METHOD_KEYS:
            allowed = [f"method.{name}" for name in sorted(taken | set(METHOD_KEYS))]
            raise InvalidSetting(f"method.{key}", value,
                                 f"not a setting of method {method['name']}{closest(f'method.{key}', allowed)}")
    callbacks = []
    for name, node, cls in zip(method["callbacks"], nodes, classes, strict=True):
        own = {key: value for key, value in node.items() if key != "_target_"}
        accepted = accepted_arguments(cls) or []
        arguments = {key: method[key] for key in accepted if key in method and key not in own}
        arguments |= {key: OmegaConf.select(cfg, path) for key, path in PIPELINE_ARGUMENTS.items()
                      if key in accepted and key not in method and key not in own}
        user_keys = {key: f"method.{key}" if key in method else PIPELINE_ARGUMENTS[key] for key in arguments}
        user_keys |= {key: f"method.callbacks.{name}.{key}" for key in own}
        try:
            callback = cls(**arguments, **own)
            if hasattr(callback, "layers"):  # the weights a method selects exist in the model
                select_weights(model, callback.layers)
        except InvalidSetting as error:
            raise error.renamed(user_keys.get(error.key, error.key)) from None
        callbacks.append(callback)
    return callbacks


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's folder for this process; RunConflict names the process that holds it already.

    A POSIX lock on ``.lock``: the OS releases it when the process ends, however it ends.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunConflict(f"{run_dir} is in use by {holder}; wait for it to end or stop it") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {os.uname().nodename}\n")  # as run_folder.LOCK_HOLDER reads it
        handle.flush()
        yield


def set_aside(path: Path, reason: str, why: str) -> None:
    """Move ``path`` to a free ``<name>.<reason>[.k]`` beside it, and say so in the log."""
    aside, k = path.with_name(f"{path.name}.{reason}"), 1
    while aside.exists():
        aside, k = path.with_name(f"{path.name}.{reason}.{k}"), k + 1
    shutil.move(path, aside)
    log.warning("%s %s; moved it to %s and starting the run over", path, why, aside.name)


def completed_epochs(checkpoint: dict[str, Any]) -> int:
    return checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"]


def usable_checkpoint(run_dir: Path, settings: dict[str, Any], max_epochs: int) -> Path | None:
    """``last.ckpt`` if it is this run's; a damaged, foreign or other run's one is set aside."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # any failure to unpickle means the file cannot be resumed from
        set_aside(path, "corrupt", f"is damaged ({type(error).__name__}: {error})")
        return None
    try:
        done = completed_epochs(checkpoint)
    except (TypeError, KeyError, IndexError):
        set_aside(path, "foreign", "is not a Lightning checkpoint")
        return None
    written_under = checkpoint_identity(checkpoint)
    if written_under is None or identity(written_under) != settings:
        set_aside(path, "other-settings", "was not written by a run with these settings")
        return None
    if done > max_epochs:
        raise RunConflict(
            f"{run_dir} holds {done} epochs of this run; trainer.max_epochs={max_epochs} is fewer: pass "
            f"trainer.max_epochs={done} or more to go on, or delete the folder to start over"
        )
    return path


def make_trainer(cfg: DictConfig, run_dir: Path, run_callbacks: list) -> L.Trainer:
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values()]
    checkpoint = PeriodicCheckpoint(
        every_n_epochs=cfg.checkpoint_every_n_epochs,
        dirpath=run_dir,
        filename=Path(CHECKPOINT).stem,
        enable_version_counter=False,
    )
    callbacks = [*run_callbacks, RunRecord(), WeightHistograms(cfg.histogram_every_n_epochs), checkpoint]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(EpochProgressBar())
    # The run resumes from its own folder only: Lightning's SLURM requeue (SIGUSR1 -> hpc_ckpt_*.ckpt, restored
    # from default_root_dir when a run has no checkpoint) is off, submitit requeues; LightningEnvironment keeps
    # Lightning from taking a SLURM job for a multi-process launch.
    plugins = [AtomicCheckpointIO(), LightningEnvironment()]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins,
                       default_root_dir=run_dir)


def train(cfg: DictConfig, run_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run (or resume, extend or skip) the run ``cfg`` describes; returns its metrics.json content."""
    run_dir = Path(run_dir if run_dir is not None else cfg.paths.output_dir)
    check_run_settings(cfg)
    settings = run_settings(cfg)
    data, model, method_callbacks = build(cfg)
    if cfg.print_config:  # every setting is checked: the tree resolves them all
        print(config_tree(cfg))
    max_epochs = cfg.trainer.max_epochs
    # Lightning's fast_dev_run trains one batch and saves nothing: such a run is never resumed or skipped.
    fast_dev_run = bool(cfg.trainer.get("fast_dev_run", False))
    with run_lock(run_dir), SigtermStops() as sigterm:
        previous = previous_run(run_dir, settings)
        if not fast_dev_run and is_finished(run_dir, previous, max_epochs):
            log.info("%s already holds a %s run; nothing to do", run_dir, previous["status"])
            return previous
        log.info("run folder %s, %d torch threads", run_dir, cfg.threads or torch.get_num_threads())
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            data.load()
        except InvalidSetting as error:
            raise error.renamed(user_key(cfg, "data", error.key)) from None
        trainer = make_trainer(cfg, run_dir, [*method_callbacks, RunIdentity(settings)])
        record = run_record(trainer)
        checkpoint = None if fast_dev_run else usable_checkpoint(run_dir, settings, max_epochs)
        metrics = {**run_summary(cfg), "status": "running", "config": settings}
        try:
            write_metrics(run_dir, metrics)
            with sigterm.deferring():
                trainer.fit(model, datamodule=data, ckpt_path=checkpoint)
            if not fast_dev_run:
                trainer.save_checkpoint(run_dir / CHECKPOINT, weights_only=False)
            metrics.update(results(record, method_callbacks))
            log_hparams(trainer, metrics)
            metrics = write_metrics(run_dir, metrics)
        except BaseException as error:
            if stopped(error):
                with sigterm.deferring():
                    write_metrics(run_dir, {**metrics, "status": "interrupted", **record.history})
                raise RunInterrupted(
                    f"{run_dir}: interrupted ({type(error).__name__}) after {len(record.history['test_acc'])} "
                    f"epochs; the same command resumes it from {CHECKPOINT}"
                ) from None
            if isinstance(error, Exception):
                with sigterm.deferring():
                    write_metrics(run_dir, {**metrics, "status": "failed", "error": f"{type(error).__name__}: {error}"})
            raise
    log.info("%s: %s, final test accuracy %.2f%%", run_dir, metrics["status"], metrics["final_test_acc"])
    return metrics


def run_record(trainer: L.Trainer) -> RunRecord:
    """The trainer's :class:`RunRecord`, which make_trainer adds to every run."""
    return next(callback for callback in trainer.callbacks if isinstance(callback, RunRecord))


def results(record: RunRecord, method_callbacks: list) -> dict[str, Any]:
    curves = record.history
    test_acc = curves["test_acc"]
    best = max(range(len(test_acc)), key=test_acc.__getitem__)
    method_stats = {}
    for callback in method_callbacks:
        method_stats.update(callback.summary() if hasattr(callback, "summary") else {})
    return {
        "status": "diverged" if record.diverged_epoch else "complete",
        "diverged_epoch": record.diverged_epoch,
        "epochs": len(test_acc),
        "final_test_acc": test_acc[-1],
        "best_test_acc": test_acc[best],
        "best_epoch": best + 1,
        "train_seconds": record.train_seconds,
        **curves,
        "method_stats": method_stats,
        "weight_histograms": record.weight_histograms,
    }


def hparams(metrics: dict[str, Any]) -> dict[str, Any]:
    """The HPARAMS tab's columns: what tells runs apart, flat, with the method's own keys by name."""
    method = metrics["config"]["method"]
    columns = {key: metrics[key] for key in ("dataset", "n_train", "hidden", "method", "seed", "max_epochs")}
    columns["model"] = metrics["config"]["model"]["_target_"].rsplit(".", 1)[-1]
    columns["tags"] = ",".join(metrics["tags"])
    for key, value in method.items():
        if key not in ("name", "callbacks"):
            columns[key] = value if isinstance(value, int | float | str | bool) else str(value)
    return columns


def log_hparams(trainer: L.Trainer, metrics: dict[str, Any]) -> None:
    """The HPARAMS tab: the run's settings beside its final and best test accuracy, and compression."""
    scores = {f"hp/{key}": metrics[key] for key in ("final_test_acc", "best_test_acc", "best_epoch")}
    if "compression" in metrics["method_stats"]:
        scores["hp/compression"] = metrics["method_stats"]["compression"]
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams(metrics), scores)


def record_failure(cfg: DictConfig, run_dir: Path, error: BaseException) -> None:
    """In a sweep, a job that cannot start still leaves a metrics.json that names its failure."""
    write_metrics(run_dir, {**run_summary(cfg), "status": "failed", "error": str(error)})


def log_to_file(message: str) -> None:
    """``message`` into train.log only: the console gets it once, from SystemExit."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def disk_error(error: OSError) -> str:
    return f"cannot write {error.filename or 'the run folder'}: {error.strerror or error}"


USER_ERRORS = (InvalidSetting, DataNotFound, DataCorrupt, RunConflict)


def job(cfg: DictConfig) -> float | None:
    """A run as the command line starts it, alone or as a sweep's job: its final test accuracy, or None for a
    job that failed (a sweep goes on; its launcher lists it). A single run's error, and any run's
    interruption, is SystemExit with one line."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun:
        cfg.print_config = False  # a sweep's jobs print no tree: each job's .hydra/config.yaml holds it
        if cfg.threads is None:  # jobs run side by side: one torch thread each, never oversubscribed
            cfg.threads = 1
    try:
        return train(cfg)["final_test_acc"]
    except RunInterrupted as error:
        log_to_file(str(error))
        raise SystemExit(f"interrupted: {error}") from None
    except (*USER_ERRORS, OSError) as error:
        message = disk_error(error) if isinstance(error, OSError) else str(error)
        if not multirun:
            log_to_file(message)
            raise SystemExit(f"error: {message}") from None
        log.error("%s", message)
        if not isinstance(error, RunConflict | OSError):
            record_failure(cfg, Path(cfg.paths.output_dir), error)
    except Exception as error:
        if stopped(error):  # submitit's time-out handler, before the run had begun
            raise SystemExit(f"interrupted: {error}") from None
        if not multirun:
            raise
        log.exception("job failed; the sweep goes on")
        if read_metrics(cfg.paths.output_dir) is None:
            record_failure(cfg, Path(cfg.paths.output_dir), error)
    return None


# ``python -m devnets.train``. ``devnets-train`` and scripts/train.py start devnets.overrides.run, which reports
# a finished run before torch is imported and hands any other to job().
main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")(job)

if __name__ == "__main__":
    main()
