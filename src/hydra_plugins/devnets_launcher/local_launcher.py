"""Hydra's joblib launcher, with finished jobs left unlaunched and every job's failure kept to that job
(``hydra/launcher=local``).

A job whose run folder already holds its finished run is not launched at all (no worker, and neither torch
nor Lightning imported): rerunning a finished sweep of 150 runs takes seconds. The others start the longest
first (by :func:`~hydra_plugins.devnets_launcher.jobs.expected_work`): a sweep in config order ends on its
largest runs, one long run at a time while the other workers idle.

Hydra's own joblib launcher hands all jobs to one ``joblib.Parallel`` call, so a job that fails outside
the task (a file where its run folder should be) or a worker that dies (killed, out of memory) aborts
every other job of the sweep. This launcher runs each job in a guard that turns such an error into that
job's failure, relaunches the jobs a dead worker took down (each at most MAX_WORKER_DEATHS times; they
resume from their checkpoints), and ends the sweep by listing the jobs that did not finish, with a
non-zero exit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_joblib_launcher import _core
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from joblib import Parallel, delayed
from joblib.externals.loky.process_executor import TerminatedWorkerError
from omegaconf import DictConfig

from hydra_plugins.devnets_launcher.jobs import SweepConfigs, failed, finished_jobs, longest_first, report

log = logging.getLogger(__name__)
MAX_WORKER_DEATHS = 2


def guarded_job(idx: int, overrides: Sequence[str], *context: Any) -> tuple[int, JobReturn]:
    """``_core.execute_job``, with an error outside the task returned as the job's failure."""
    try:
        return idx, _core.execute_job(idx, overrides, *context)
    except Exception as error:  # the job's own error: the other jobs go on
        return idx, failed(overrides, error)


class LocalLauncher(JoblibLauncher):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        SweepConfigs.keep(self)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        joblib_cfg = {**self.joblib, "backend": "loky"}
        _core.process_joblib_cfg(joblib_cfg)
        log.info("Launching %d jobs, %s at a time, into %s", len(job_overrides), joblib_cfg.get("n_jobs"),
                 self.config.hydra.sweep.dir)
        pending = {initial_job_idx + k: list(overrides) for k, overrides in enumerate(job_overrides)}
        for idx, overrides in pending.items():
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        returns, _, work = finished_jobs(self, pending)
        pending = longest_first(pending, work)
        context = (self.hydra_context, self.config, self.task_function, Singleton.get_state() if pending else None)
        if returns:
            log.info("%d of %d jobs hold finished runs; launching the other %d", len(returns), len(job_overrides),
                     len(pending))
        deaths = dict.fromkeys(pending, 0)
        while pending:
            try:
                jobs = [delayed(guarded_job)(idx, overrides, *context) for idx, overrides in pending.items()]
                for idx, job in Parallel(return_as="generator_unordered", **joblib_cfg)(jobs):
                    returns[idx] = job
                    del pending[idx]
            except TerminatedWorkerError as error:
                for idx in list(pending):
                    deaths[idx] += 1
                    if deaths[idx] >= MAX_WORKER_DEATHS:
                        returns[idx] = failed(pending.pop(idx), error)
                log.warning("a worker died (%s); relaunching %d unfinished jobs", error, len(pending))
        jobs = [returns[idx] for idx in sorted(returns)]
        report(jobs)
        return jobs
