"""What devnets' launchers share: finished jobs taken out of a sweep before anything is launched or submitted,
a job's failure as a JobReturn, and the end of a sweep that lists the jobs that did not finish.

Imports neither torch nor Lightning (Hydra imports every module under hydra_plugins when it starts).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf

from devnets.run_folder import finished_run

log = logging.getLogger(__name__)
# The test sets' size (MNIST, Fashion-MNIST, CIFAR-10), evaluated after every epoch.
TEST_IMAGES = 10_000


def failed(overrides: Sequence[str], error: BaseException | str, run_dir: str | Path | None = None) -> JobReturn:
    """A job that did not finish, for :func:`report`; ``run_dir`` names its folder there."""
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    job = JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=RuntimeError(reason))
    if run_dir is not None:
        job.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}})
    return job


def did_not_finish(job: JobReturn) -> bool:
    """devnets' task returns the final accuracy, and None for a run that failed."""
    return job.status != JobStatus.COMPLETED or job._return_value is None


class SweepConfigs:
    """``load_sweep_config`` of a Hydra config loader, remembering each job's config, and deriving a job's
    config from one composed for a job whose overrides differ in plain values only (``seed=3`` where that
    one has ``seed=0``): a copy with those values set, as Hydra's composition sets them.

    Composing one job's config takes about 0.3 s, and Hydra's sweeper composes every job's config to check
    the batch (``validate_batch_is_legal``) just before the launcher gets it: a sweep of 150 jobs over 2
    datasets x 5 methods x hidden sizes x seeds composes 10 configs this way, and :func:`finished_jobs`
    reads each job's from here rather than composing it again.
    """

    def __init__(self, loader: Any) -> None:
        self.loader, self.compose = loader, loader.load_sweep_config
        self.configs: dict[tuple[str, ...], DictConfig] = {}
        self.bases: dict[tuple[tuple[str, str], ...], DictConfig] = {}
        self.parser = OverridesParser.create()

    def __call__(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = tuple(sweep_overrides)
        if key not in self.configs:
            try:
                parsed = self.parser.parse_overrides(list(sweep_overrides))
                shape = tuple(("value", o.key_or_group) if self.plain(o) else ("fixed", o.input_line) for o in parsed)
            except Exception:  # Hydra's composition reports it
                parsed, shape = None, None
            base = self.bases.get(shape) if shape is not None else None
            if base is not None:
                self.configs[key] = self.derive(base, parsed)
            else:
                self.configs[key] = self.compose(master_config, list(sweep_overrides))
                if shape is not None:
                    self.bases[shape] = self.configs[key]
        return self.configs[key]

    def plain(self, override: Override) -> bool:
        """``key=value`` of a key that is no config group, outside hydra: it only sets that value."""
        return (override.type is OverrideType.CHANGE and override.package is None and not override.is_hydra_override()
                and override.value_type is ValueType.ELEMENT and not self.loader.repository.group_exists(
                    override.key_or_group))

    def derive(self, base: DictConfig, parsed: list[Override]) -> DictConfig:
        """``base`` with ``parsed``'s plain values, task overrides and override_dirname, as composing them
        gives (hydra/_internal/config_loader_impl.py, ``_load_configuration_impl``)."""
        cfg = copy.deepcopy(base)
        ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if self.plain(o)], cfg)
        task = [o for o in parsed if not o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in task]
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=task, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys)
        return cfg

    @classmethod
    def keep(cls, launcher: Launcher) -> None:
        """From the launcher's setup (before the sweeper checks the batch) to :func:`finished_jobs`."""
        loader = launcher.hydra_context.config_loader
        if not isinstance(loader.load_sweep_config, cls):
            loader.load_sweep_config = cls(loader)

    @classmethod
    def forget(cls, launcher: Launcher) -> None:
        """Back to Hydra's own method, before the loader is pickled for the jobs."""
        loader = launcher.hydra_context.config_loader
        if isinstance(loader.load_sweep_config, cls):
            del loader.load_sweep_config


def expected_work(cfg: DictConfig) -> float:
    """Roughly the arithmetic of a job's run, to start the longest first: epochs × (3 passes over the training
    samples + 1 over the 10,000 test images) × the MLP's weights; 0 where the config names no such sizes."""
    try:
        model = cfg.model
        weights = model.input_dim * model.hidden + model.hidden * model.num_classes
        return float(cfg.trainer.max_epochs * (3 * cfg.data.n_train + TEST_IMAGES) * weights)
    except Exception:  # another model, or sizes the run itself refuses
        return 0.0


def longest_first(pending: dict[int, list[str]], work: dict[int, float]) -> dict[int, list[str]]:
    """``pending`` with the jobs of most ``work`` first (in config order among equals): in config order a sweep
    ends on its largest runs, one long run at a time while the other workers idle."""
    return dict(sorted(pending.items(), key=lambda job: -work[job[0]]))


def finished_jobs(
    launcher: Launcher, pending: dict[int, list[str]]
) -> tuple[dict[int, JobReturn], dict[int, Path], dict[int, float]]:
    """The jobs of ``pending`` whose run folders hold them finished, taken out of it as completed
    JobReturns, every job's run folder, and the :func:`expected_work` of the jobs left in ``pending``. Reads
    each folder's metrics.json; imports no torch."""
    finished, dirs, work, sweep_config = {}, {}, {}, HydraConfig.instance().cfg
    try:
        for idx, overrides in list(pending.items()):
            cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
            HydraConfig.instance().cfg = cfg  # the folder's ${hydra:...} interpolations: this job's hydra node
            dirs[idx] = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
            previous = finished_run(cfg, dirs[idx])
            if previous is None:
                work[idx] = expected_work(cfg)
            else:
                log.info("%s holds a %s run; not launched", dirs[idx], previous["status"])
                finished[idx] = JobReturn(overrides=pending.pop(idx), status=JobStatus.COMPLETED,
                                          _return_value=previous["final_test_acc"])
    finally:
        HydraConfig.instance().cfg = sweep_config
        SweepConfigs.forget(launcher)
    return finished, dirs, work


def report(jobs: Sequence[JobReturn]) -> None:
    """Raise SystemExit naming every job that did not finish by the settings that set it apart."""
    unfinished = [job for job in jobs if did_not_finish(job)]
    if not unfinished:
        return
    shared = set.intersection(*(set(job.overrides) for job in jobs))
    lines = [f"{len(unfinished)} of {len(jobs)} jobs did not finish:"]
    for job in unfinished:
        own = " ".join(override for override in job.overrides if override not in shared)
        where = job.hydra_cfg.hydra.runtime.output_dir if job.hydra_cfg is not None else "no run folder"
        reason = f" ({job._return_value})" if job.status == JobStatus.FAILED else ""
        lines.append(f"  {own}: {where}{reason}")
    raise SystemExit("\n".join(lines))
