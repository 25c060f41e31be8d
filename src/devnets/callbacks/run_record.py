"""The run's record, kept beside any LightningModule: per-epoch curves, divergence, training time and the
torch RNG states, all in checkpoints, so a resumed run continues exactly as an uninterrupted one; and,
when training ends, a histogram of each weight matrix (``weight_histograms``), from which devnets-aggregate
draws the final weight distributions (BDNN-dsd Fig. 3, BSP Fig. 4) without reading any checkpoint.

The training loss is the mean over the epoch's samples of what ``training_step`` returns (the loss, or a
dict holding it under ``loss``; a ``training_step`` that takes several optimiser steps, as devnets' models
do with ``steps_per_batch`` > 1, returns each step's loss and batch size as ``step_losses`` and
``step_sizes``). The evaluation curves are what the module logs after each validation
epoch as ``test/acc`` and ``test/loss`` (and ``val/acc``, ``val/loss`` for a second validation set), read
from ``trainer.callback_metrics``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.data import extract_batch_size

from devnets.epoch_logging import log_epoch_metrics

# A run has diverged when an epoch's mean training loss is not finite, or, for a module with a
# ``uniform_guess_loss()`` (ln 10 ≈ 2.3 for cross-entropy over 10 classes), above this many times it: SGD
# that far above chance is not coming back (model.lr=1e6 reaches losses of 1e5).
DIVERGED_LOSS_FACTOR = 10
# history key -> the metric the module logs for it
EVALUATION = {"test_acc": "test/acc", "test_loss": "test/loss", "val_acc": "val/acc", "val_loss": "val/loss"}
REQUIRED = ("test/acc", "test/loss")
# One line per epoch: in a run of devnets.train, train.log only (conf/hydra/default.yaml).
epoch_log = logging.getLogger("devnets.epochs")
# Bins of each final weight histogram: an even count, so that 0 is a bin edge.
HISTOGRAM_BINS = 128


@torch.no_grad()
def weight_histograms(module: torch.nn.Module, bins: int = HISTOGRAM_BINS) -> dict[str, dict[str, Any]]:
    """Per weight matrix of ``module`` (every parameter of two or more dimensions), by its name:

    - ``limit``: the smallest power of 2 at or above the largest finite |w| (1 when there is none);
    - ``counts``: the nonzero finite weights in ``bins`` equal bins over [-limit, limit]. As 0 is a bin
      edge and every limit a power of 2, any run's bins merge exactly into those of a wider limit, so
      runs, seeds and matrices add up bin by bin;
    - ``zeros``: the weights exactly 0 (pruned, or held by a zero bound); ``nonfinite``: NaN or ±inf.

    About 1 KB of metrics.json per matrix.
    """
    histograms = {}
    for name, weight in module.named_parameters():
        if weight.ndim < 2:
            continue
        values = weight.detach().flatten().float()
        finite = values[torch.isfinite(values)]
        largest = finite.abs().max().item() if finite.numel() else 0.0
        limit = 2.0 ** math.ceil(math.log2(largest)) if largest > 0 else 1.0
        nonzero = finite[finite != 0]
        counts = torch.histc(nonzero, bins=bins, min=-limit, max=limit) if nonzero.numel() else torch.zeros(bins)
        histograms[name] = {
            "limit": limit,
            "counts": [int(count) for count in counts.round().tolist()],
            "zeros": int((finite == 0).sum()),
            "nonfinite": values.numel() - finite.numel(),
        }
    return histograms


class RunRecord(Callback):
    """Keeps ``history`` (train_loss, test_acc, test_loss and, where logged, val_acc and val_loss, one
    value per epoch), ``diverged_epoch`` (1-based; the run stops there), ``train_seconds`` and, once
    training ends, ``weight_histograms`` (:func:`weight_histograms` of the final weights).

    Lightning calls non-monitoring callbacks' ``on_train_epoch_end`` before its checkpoint callback's,
    so a checkpoint always holds whole epochs.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {"train_loss": [], "test_acc": [], "test_loss": []}
        self.diverged_epoch: int | None = None
        self.train_seconds = 0.0
        self._loss_sum = torch.zeros(())
        self._count = 0
        self._epoch_started = 0.0
        self.weight_histograms: dict[str, dict[str, Any]] | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._loss_sum, self._count = torch.zeros((), device=pl_module.device), 0
        self._epoch_started = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if isinstance(outputs, Mapping) and "step_losses" in outputs:  # several optimiser steps in one batch
            for loss, size in zip(outputs["step_losses"], outputs["step_sizes"], strict=True):
                self._loss_sum = self._loss_sum + loss.detach() * size
                self._count += size
            return
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if pl_module.automatic_optimization:  # Lightning hands on the loss divided by the accumulation
            loss = loss * trainer.accumulate_grad_batches
        size = extract_batch_size(batch)
        self._loss_sum = self._loss_sum + loss.detach() * size
        self._count += size

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        logged = trainer.callback_metrics
        missing = [name for name in REQUIRED if name not in logged]
        if missing:
            raise RuntimeError(f"{type(pl_module).__name__} logs no {' or '.join(missing)} after validation; "
                               f"RunRecord reads the test curves from them")
        for key, name in EVALUATION.items():
            if name in logged:
                self.history.setdefault(key, []).append(logged[name].item())

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loss = (self._loss_sum / self._count).item()
        self.history["train_loss"].append(loss)
        log_epoch_metrics(trainer, {"train/loss": loss})
        self.train_seconds += time.perf_counter() - self._epoch_started
        epoch_log.info("epoch %d: %s", trainer.current_epoch + 1, ", ".join(
            f"{name} {value.item():.6g}" for name, value in sorted(trainer.callback_metrics.items())
        ))
        chance = pl_module.uniform_guess_loss() if hasattr(pl_module, "uniform_guess_loss") else math.inf
        if not math.isfinite(loss) or loss > DIVERGED_LOSS_FACTOR * chance:
            self.diverged_epoch = trainer.current_epoch + 1
            trainer.should_stop = True

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.weight_histograms = weight_histograms(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "diverged_epoch": self.diverged_epoch,
            "train_seconds": self.train_seconds,
            "torch_rng_state": torch.get_rng_state(),
            "cuda_rng_states": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {key: list(values) for key, values in state_dict["history"].items()}
        self.diverged_epoch = state_dict["diverged_epoch"]
        self.train_seconds = state_dict["train_seconds"]
        torch.set_rng_state(state_dict["torch_rng_state"])
        if state_dict["cuda_rng_states"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda_rng_states"])
