"""Hydra's joblib launcher, with finished jobs left unlaunched and every job's failure kept to that job
(``hydra/launcher=local``).

A job whose run folder already holds its finished run is not launched at all (no worker, no imports):
rerunning a finished sweep of 150 runs takes seconds.

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

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher import _core
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from joblib import Parallel, delayed
from joblib.externals.loky.process_executor import TerminatedWorkerError

log = logging.getLogger(__name__)
MAX_WORKER_DEATHS = 2


def failed(overrides: Sequence[str], error: BaseException) -> JobReturn:
    return JobReturn(overrides=list(overrides), status=JobStatus.FAILED,
                     _return_value=RuntimeError(f"{type(error).__name__}: {error}"))


def guarded_job(idx: int, overrides: Sequence[str], *context: Any) -> tuple[int, JobReturn]:
    """``_core.execute_job``, with an error outside the task returned as the job's failure."""
    try:
        return idx, _core.execute_job(idx, overrides, *context)
    except Exception as error:  # the job's own error: the other jobs go on
        return idx, failed(overrides, error)


def did_not_finish(job: JobReturn) -> bool:
    """devnets.train.main returns the final accuracy, and None for a run that failed."""
    return job.status != JobStatus.COMPLETED or job._return_value is None


def finished_jobs(launcher: JoblibLauncher, pending: dict[int, list[str]]) -> dict[int, JobReturn]:
    """The jobs of ``pending`` whose runs are finished, taken out of it, as completed JobReturns."""
    from devnets.train import finished_run  # torch and Lightning: only once a sweep launches

    finished, sweep_config = {}, HydraConfig.instance().cfg
    for idx, overrides in list(pending.items()):
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
        HydraConfig.instance().set_config(cfg)
        run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        previous = finished_run(cfg, run_dir)
        if previous is not None:
            log.info("%s holds a %s run; not launched", run_dir, previous["status"])
            finished[idx] = JobReturn(overrides=pending.pop(idx), status=JobStatus.COMPLETED,
                                      _return_value=previous["final_test_acc"])
    HydraConfig.instance().cfg = sweep_config
    return finished


class LocalLauncher(JoblibLauncher):
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
        context = (self.hydra_context, self.config, self.task_function, Singleton.get_state())
        returns = finished_jobs(self, pending)
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
        self.report([returns[idx] for idx in sorted(returns)])
        return [returns[idx] for idx in sorted(returns)]

    @staticmethod
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
