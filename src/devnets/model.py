"""The papers' three-layer MLP: inputs -> ``hidden`` sigmoid units -> 10 softmax outputs, trained by SGD."""

from __future__ import annotations

import math
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from devnets.epoch_logging import log_epoch_metrics
from devnets.errors import is_number, is_whole, require

LOSSES = ("cross_entropy", "mse")
# torch: nn.Linear's own, U(±1/√fan_in) for weights and biases; glorot: Keras' Dense default,
# U(±√(6/(fan_in + fan_out))) weights and zero biases. The papers do not say (docs/reproduction.md).
INITS = ("torch", "glorot")
# A run has diverged when an epoch's mean training loss is not finite, or is above this many times the
# loss of a uniform guess (ln 10 ≈ 2.3 for cross-entropy over 10 classes): SGD that far above chance is
# not coming back (model.lr=1e6 reaches losses of 1e5).
DIVERGED_LOSS_FACTOR = 10


class MLPClassifier(L.LightningModule):
    """inputs -> Linear -> sigmoid -> (dropout) -> Linear -> softmax.

    ``l2`` is the coefficient λ of the penalty (λ/2)·Σw² on the weight matrices (biases are not
    penalised); its gradient λw is applied through SGD's ``weight_decay`` on the weights' parameter
    group, which is the same update without building the penalty every step.

    The module keeps the run's per-epoch curves (``history``), stops at the first epoch whose training
    loss is not finite or explodes (``diverged_epoch``, 1-based; DIVERGED_LOSS_FACTOR) and times
    training. Those, and the torch RNG states (dropout masks; CPU and, where present, CUDA), travel in
    checkpoints, so a resumed run continues exactly as an uninterrupted one.
    Lightning's checkpoint callback runs after this module's ``on_train_epoch_end``, so a checkpoint
    always holds whole epochs.
    """

    def __init__(
        self,
        input_dim: int = 784,
        hidden: int = 100,
        num_classes: int = 10,
        lr: float = 0.1,
        momentum: float = 0.0,
        dropout: float = 0.0,
        l2: float = 0.0,
        loss: str = "cross_entropy",
        init: str = "torch",
    ):
        super().__init__()
        require(is_whole(hidden, minimum=1), "hidden", hidden, "an integer ≥ 1")
        require(is_whole(input_dim, minimum=1), "input_dim", input_dim, "an integer ≥ 1")
        require(is_number(lr) and lr > 0, "lr", lr, "a finite number > 0")
        require(is_number(momentum) and 0 <= momentum < 1, "momentum", momentum, "a number in [0, 1)")
        require(is_number(dropout) and 0 <= dropout < 1, "dropout", dropout, "a number in [0, 1)")
        require(is_number(l2) and l2 >= 0, "l2", l2, "a finite number ≥ 0")
        require(loss in LOSSES, "loss", loss, f"one of {list(LOSSES)}")
        require(init in INITS, "init", init, f"one of {list(INITS)}")
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden),
            nn.Sigmoid(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(hidden, num_classes),
        )
        if init == "glorot":
            for layer in (self.net[0], self.net[3]):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.history: dict[str, list[float]] = {"train_loss": [], "test_acc": [], "test_loss": []}
        self.diverged_epoch: int | None = None
        self.train_seconds = 0.0
        self._train_loss_sum = torch.zeros(())
        self._train_count = 0
        self._eval_sums: dict[int, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample losses: softmax cross-entropy, or squared error of the softmax against one-hot."""
        if self.hparams.loss == "cross_entropy":
            return F.cross_entropy(logits, y, reduction="none")
        target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return (logits.softmax(dim=1) - target).pow(2).sum(dim=1)

    def uniform_guess_loss(self) -> float:
        """The loss of predicting every class with probability 1/C: ln C, or 1 - 1/C for ``mse``."""
        classes = self.hparams.num_classes
        return math.log(classes) if self.hparams.loss == "cross_entropy" else 1 - 1 / classes

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self._losses(self(x), y).mean()
        self._train_loss_sum = self._train_loss_sum + loss.detach() * len(y)
        self._train_count += len(y)
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_loss_sum, self._train_count = torch.zeros((), device=self.device), 0
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        loss = (self._train_loss_sum / self._train_count).item()
        self.history["train_loss"].append(loss)
        log_epoch_metrics(self.trainer, {"train/loss": loss})
        self.train_seconds += time.perf_counter() - self._epoch_started
        if not math.isfinite(loss) or loss > DIVERGED_LOSS_FACTOR * self.uniform_guess_loss():
            self.diverged_epoch = self.current_epoch + 1
            self.trainer.should_stop = True

    def on_validation_epoch_start(self) -> None:
        self._eval_sums = {}

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, y = batch
        logits = self(x)
        sums = torch.stack(
            [self._losses(logits, y).sum(), (logits.argmax(dim=1) == y).sum(), torch.tensor(len(y))]
        ).to(device="cpu", dtype=torch.float64)
        self._eval_sums[dataloader_idx] = self._eval_sums.get(dataloader_idx, 0) + sums

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        for dataloader_idx, (loss_sum, correct, count) in self._eval_sums.items():
            split = "test" if dataloader_idx == 0 else "val"
            accuracy, loss = (100.0 * correct / count).item(), (loss_sum / count).item()
            self.history.setdefault(f"{split}_acc", []).append(accuracy)
            self.history.setdefault(f"{split}_loss", []).append(loss)
            log_epoch_metrics(self.trainer, {f"{split}/acc": accuracy, f"{split}/loss": loss})

    def configure_optimizers(self):
        weights = [p for p in self.parameters() if p.ndim > 1]
        others = [p for p in self.parameters() if p.ndim <= 1]
        return torch.optim.SGD(
            [{"params": weights, "weight_decay": self.hparams.l2}, {"params": others, "weight_decay": 0.0}],
            lr=self.hparams.lr,
            momentum=self.hparams.momentum,
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["devnets"] = {
            "history": self.history,
            "diverged_epoch": self.diverged_epoch,
            "train_seconds": self.train_seconds,
            "torch_rng_state": torch.get_rng_state(),
            "cuda_rng_states": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["devnets"]
        self.history = {key: list(values) for key, values in state["history"].items()}
        self.diverged_epoch = state["diverged_epoch"]
        self.train_seconds = state["train_seconds"]
        torch.set_rng_state(state["torch_rng_state"])
        if state.get("cuda_rng_states") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng_states"])
