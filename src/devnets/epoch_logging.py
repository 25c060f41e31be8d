"""Per-epoch scalars, written straight to the run's loggers.

``LightningModule.log`` keeps a metric object per key and moves it to the device on every call; on a
2-core CPU that bookkeeping costs 1-2 ms a call, as much as a whole training step at 1200 samples (see
scripts/benchmark.py). Every devnets metric is a once-per-epoch scalar, so this writes them to the
loggers directly, with the epoch number (from 1) as the step, and puts them in
``trainer.callback_metrics``, where callbacks such as ``EarlyStopping`` look for them.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Trainer


def log_epoch_metrics(trainer: Trainer, metrics: dict[str, float]) -> None:
    # float64, so a callback reading a value back (RunRecord) gets the very float logged
    trainer.callback_metrics.update(
        {name: torch.tensor(float(value), dtype=torch.float64) for name, value in metrics.items()}
    )
    for logger in trainer.loggers:
        logger.log_metrics({name: float(value) for name, value in metrics.items()}, step=trainer.current_epoch + 1)
