"""One progress bar over the run's epochs, with the latest test accuracy.

Lightning's default bar redraws every batch and opens a new validation bar every epoch: at 1200
samples (2 batches an epoch) that costs more than the training itself. A run of the papers is 500
short epochs, so this bar counts epochs instead, and redraws once per epoch.
"""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from tqdm.auto import tqdm


class EpochProgressBar(ProgressBar):
    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._bar: tqdm | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._enabled:
            self._bar = tqdm(
                total=trainer.max_epochs, initial=trainer.current_epoch, desc="epochs", unit="epoch", dynamic_ncols=True
            )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._bar is not None:
            metrics = {name: f"{float(value):.4g}" for name, value in trainer.callback_metrics.items()
                       if name in ("train/loss", "test/acc")}
            self._bar.set_postfix(metrics, refresh=False)
            self._bar.update(1)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
