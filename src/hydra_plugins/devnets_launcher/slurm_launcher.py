"""Hydra's submitit SLURM launcher, with finished jobs left unsubmitted and every job's end kept to that job
(``hydra/launcher=slurm``).

Hydra's own launcher submits every job of a sweep, finished or not, and ends at the first job that ends
without a result (cancelled, killed at its time limit, failed outside the task) with that job's
traceback, never hearing of the others. This one:

- submits only the jobs whose run folders do not hold them finished, and says how many it left out; a
  rerun of a finished sweep submits nothing and imports neither torch nor Lightning; the array lists the
  largest runs first, as the local launcher starts them;
- waits for each job, taking one that ends without a result (scancel, a time-out past
  ``max_num_timeout``, a crash) as that job's failure, named with its SLURM state and what its record
  says; ``sacct`` is asked every ``poll_s`` seconds (submitit's own waits grow to 10 minutes);
- without accounting (``sacct`` failing), takes a job that has left the queue (``squeue``) without a
  result as ended, where submitit would poll for ever;
- ends the sweep by listing the jobs that did not finish, with a non-zero exit.

A job that reaches its time limit is requeued by submitit (``max_num_timeout`` times) and resumes from
its ``last.ckpt``.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import DictConfig, OmegaConf

from devnets.results import CorruptMetrics, read_metrics
from hydra_plugins.devnets_launcher.jobs import SweepConfigs, failed, finished_jobs, longest_first, report

log = logging.getLogger(__name__)
# Seconds between sacct calls while the sweep waits for its jobs (one call covers them all).
POLL_S = 10
# Without accounting, a job that has been out of squeue this long without a result has ended without one.
GONE_AFTER_S = 30


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        SweepConfigs.keep(self)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        pending = {initial_job_idx + k: list(overrides) for k, overrides in enumerate(job_overrides)}
        returns, run_dirs, work = finished_jobs(self, pending)
        pending = longest_first(pending, work)  # the array's first tasks start first
        log.info("%d of %d jobs hold finished runs; submitting %d to SLURM, sweep folder %s",
                 len(returns), len(job_overrides), len(pending), sweep_dir)
        if pending:
            returns.update(self.submit(pending, run_dirs))
        jobs = [returns[idx] for idx in sorted(returns)]
        report(jobs)
        return jobs

    def executor(self) -> Any:
        """submitit's executor, set up as Hydra's submitit launcher sets it up."""
        import submitit  # only when jobs are submitted

        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                                         **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]})
        common = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{key if key in common else f"{self._EXECUTOR}_{key}": value
                                      for key, value in self.params.items() if key not in init_keys})
        return executor

    def submit(self, pending: dict[int, list[str]], run_dirs: dict[int, Path]) -> dict[int, JobReturn]:
        """Submit ``pending`` as one job array; each job's JobReturn, or its failure, once all have ended."""
        for idx, overrides in pending.items():
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        indices, state = list(pending), Singleton.get_state()  # one state for all (Hydra's launcher takes it per job)
        arguments = [(pending[idx], "hydra.sweep.dir", idx, f"job_id_for_{idx}", state) for idx in indices]
        jobs = self.executor().map_array(self, *zip(*arguments, strict=True))
        log.info("submitted SLURM job array %s", jobs[0].job_id.split("_")[0])
        returns = {}
        for idx, job in zip(indices, wait(jobs), strict=True):
            returns[idx] = outcome(job, pending[idx], run_dirs[idx])
        return returns


def outcome(job: Any, overrides: list[str], run_dir: Path) -> JobReturn:
    """The job's JobReturn, or, for a job that ended without one, its failure naming its SLURM state and
    what its run's record says (``interrupted``: the next submission resumes it)."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        return job.results()[0]
    except (UncompletedJobError, FailedJobError) as error:
        try:
            record = read_metrics(run_dir)
            status = f"its metrics.json reads {record['status']}" if record else "no metrics.json"
        except CorruptMetrics:
            status = "its metrics.json is unreadable"
        state = job.watcher.get_state(job.job_id, mode="cache")
        log.warning("SLURM job %s (%s) ended without a result: %s", job.job_id, run_dir,
                    str(error).splitlines()[0] if str(error) else type(error).__name__)
        return failed(overrides, f"SLURM job {job.job_id} {state}, {status}; log: {job.paths.stdout}", run_dir)


def wait(jobs: Sequence[Any]) -> Sequence[Any]:
    """Return ``jobs`` once each has ended: its result written, or its state final in sacct, or (sacct
    failing) out of the queue for GONE_AFTER_S seconds."""
    watcher = jobs[0].watcher
    waiting = {job.job_id: job for job in jobs}
    gone_since: dict[str, float] = {}
    last_poll = float("-inf")
    while waiting:
        if time.time() - last_poll >= POLL_S:
            watcher.update()  # one sacct call for the whole array
            queued = queue([job_id for job_id in waiting if not watcher.get_info(job_id, mode="cache")])
            last_poll = time.time()
        for job_id, job in list(waiting.items()):
            if job.paths.result_pickle.exists() or watcher.is_done(job_id, mode="cache"):
                del waiting[job_id]
            elif queued is not None and job_id not in queued and not watcher.get_info(job_id, mode="cache"):
                if time.time() - gone_since.setdefault(job_id, time.time()) >= GONE_AFTER_S:
                    log.warning("SLURM job %s left the queue; sacct knows nothing of it (no accounting?)", job_id)
                    del waiting[job_id]
            else:
                gone_since.pop(job_id, None)
        if waiting:
            time.sleep(1)
    return jobs


def queue(job_ids: list[str]) -> set[str] | None:
    """Which of ``job_ids`` (array tasks, ``123_4``) squeue lists; None when squeue cannot say."""
    if not job_ids:
        return set()
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    try:
        listed = subprocess.run(["squeue", "--noheader", "--array", "--format=%i", f"--jobs={','.join(arrays)}"],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:  # slurmctld forgets a job MinJobAge after its end: an invalid id is no job
        return set() if "Invalid job id" in listed.stderr else None
    return {line.strip() for line in listed.stdout.splitlines()}
