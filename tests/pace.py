"""A callback that makes a run last a known time whatever the CPU, for tests that stop a run part-way
(tests/test_slurm.py): ``+method.callbacks.pace._target_=pace.Pace +method.callbacks.pace.seconds=0.2``.
A SLURM job finds it through PYTHONPATH=tests, which sbatch hands on."""

from __future__ import annotations

import time

from lightning.pytorch import Callback, LightningModule, Trainer


class Pace(Callback):
    """Sleeps ``seconds`` before each training epoch."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        time.sleep(self.seconds)
