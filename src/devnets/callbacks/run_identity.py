"""The run's identity (its settings) in every checkpoint it writes, so a resume can check it."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

CHECKPOINT_KEY = "devnets_identity"


def checkpoint_identity(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The settings a checkpoint was written under; None for one written without this callback."""
    return checkpoint.get(CHECKPOINT_KEY)


class RunIdentity(Callback):
    """Writes ``settings`` into each checkpoint under ``devnets_identity``."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.settings
