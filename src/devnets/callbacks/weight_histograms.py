"""TensorBoard histograms of the weight matrices every few epochs (BDNN-dsd Fig. 3, BSP Fig. 4)."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

# TensorBoard's histogram bins end at ±1e20; a tensor with no value inside them has no histogram.
TENSORBOARD_RANGE = 1e20


def add_histograms(trainer: Trainer, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` as histograms at the current step to every TensorBoard logger of ``trainer``."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            for name, values in tensors.items():
                values = values.detach().cpu()
                values = values[values.abs() < TENSORBOARD_RANGE]  # a diverged run's NaN or huge weights
                if values.numel():
                    logger.experiment.add_histogram(name, values, trainer.current_epoch + 1)


def is_due(trainer: Trainer, every_n_epochs: int) -> bool:
    """True on every ``every_n_epochs``-th epoch and on the last one; never for 0."""
    epoch = trainer.current_epoch + 1
    return every_n_epochs > 0 and (epoch % every_n_epochs == 0 or epoch == trainer.max_epochs)


class WeightHistograms(Callback):
    def __init__(self, every_n_epochs: int = 25):
        self.every_n_epochs = every_n_epochs

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if is_due(trainer, self.every_n_epochs):
            add_histograms(
                trainer,
                {f"weights/{name}": p for name, p in pl_module.named_parameters() if p.ndim > 1},
            )
