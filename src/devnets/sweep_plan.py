"""The jobs of a sweep before they run: ``train.py -m OVERRIDES`` taken apart as Hydra's basic sweeper takes it
(``hydra.sweeper.params`` of the config, then the command line's own sweeps), each job with its run folder and
the summary its metrics.json will start with. ``devnets-status`` reads it to list the jobs no run has
started yet (of ``--sweep OVERRIDES``, or of the sweep a folder's multirun.yaml names). Imports neither torch
nor Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode

from devnets.overrides import CONF_DIR, CONFIG_NAME, check_overrides
from devnets.run_folder import run_settings, run_summary
from hydra_plugins.devnets_launcher.jobs import SweepConfigs


@dataclass(frozen=True)
class PlannedRun:
    """One job of a sweep: its folder (the sweep's folder, and the run's below it) and its metrics.json's start."""

    sweep_dir: Path  # hydra.sweep.dir: <paths.output_root>/<experiment_name>
    subdir: Path  # hydra.sweep.subdir: <dataset>-n<n_train>/h<hidden>/<method>/[<variant>/]seed<k>
    metrics: dict[str, Any]


def planned_runs(overrides: Sequence[str]) -> list[PlannedRun]:
    """Every job of ``train.py -m OVERRIDES``, in the order the sweep launches them; BadOverride (one line)
    for an override the config does not accept."""
    check_overrides(list(overrides), multirun=True)
    parser = OverridesParser.create()
    sweep_config = HydraConfig.instance().cfg
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration(CONFIG_NAME, list(overrides), run_mode=RunMode.MULTIRUN)
        params = [f"{key}={value}" for key, value in (master.hydra.sweeper.get("params") or {}).items()]
        task = list(master.hydra.overrides.task)  # the command line's overrides but hydra's own
        (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides(params + task), max_batch_size=None)
        configs, planned = SweepConfigs(loader), []
        try:
            for job in jobs:
                cfg = configs(master, job)
                HydraConfig.instance().cfg = cfg  # the folder's ${hydra:...} interpolations: this job's hydra node
                metrics = {**run_summary(cfg), "status": "not started", "config": run_settings(cfg)}
                planned.append(PlannedRun(Path(str(cfg.hydra.sweep.dir)), Path(str(cfg.hydra.sweep.subdir)), metrics))
        finally:
            HydraConfig.instance().cfg = sweep_config
    return planned
