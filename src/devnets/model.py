"""The models: the papers' three-layer MLP and a LeNet-5-style CNN, trained by SGD on image classes.

Both take images shaped (channels, height, width); the MLP flattens them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

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
# none: pixels / 255 go straight to the first layer; sigmoid: the input neurons apply the sigmoid to them, as
# both papers' "the activation function for neurons in the input and hidden layers is the sigmoid" reads.
INPUT_ACTIVATIONS = ("none", "sigmoid")
# LeNet-5 reads 32×32 images; 28×28 ones are padded by 2 in its first convolution, as LeCun padded MNIST.
LENET_SIDES = (28, 32)


class ImageClassifier(L.LightningModule):
    """What both models share: the loss, the optimiser, the initialisation and the test curves.

    ``input_activation`` is applied to the pixels before the first layer (``sigmoid``: the papers' input
    neurons). ``l2`` is the coefficient λ of the penalty (λ/2)·Σw² on the weights of the layers (biases are not
    penalised); its gradient λw is applied through SGD's ``weight_decay`` on the weights' parameter
    group, which is the same update without building the penalty every step. ``training_step`` returns
    the batch's mean loss; after each validation epoch the module logs ``test/acc`` and ``test/loss``
    (``val/*`` for a second validation set), which :class:`~devnets.callbacks.run_record.RunRecord` records.
    """

    def __init__(
        self,
        num_classes: int = 10,
        lr: float = 0.1,
        momentum: float = 0.0,
        dropout: float = 0.0,
        l2: float = 0.0,
        loss: str = "cross_entropy",
        init: str = "torch",
        input_activation: str = "none",
    ):
        super().__init__()
        require(is_whole(num_classes, minimum=2), "num_classes", num_classes, "an integer ≥ 2")
        require(is_number(lr) and lr > 0, "lr", lr, "a finite number > 0")
        require(is_number(momentum) and 0 <= momentum < 1, "momentum", momentum, "a number in [0, 1)")
        require(is_number(dropout) and 0 <= dropout < 1, "dropout", dropout, "a number in [0, 1)")
        require(is_number(l2) and l2 >= 0, "l2", l2, "a finite number ≥ 0")
        require(loss in LOSSES, "loss", loss, f"one of {list(LOSSES)}")
        require(init in INITS, "init", init, f"one of {list(INITS)}")
        require(input_activation in INPUT_ACTIVATIONS, "input_activation", input_activation,
                f"one of {list(INPUT_ACTIVATIONS)}")
        self.save_hyperparameters()  # these and the subclass's own arguments
        self.input_activation = nn.Sigmoid() if input_activation == "sigmoid" else nn.Identity()
        self._eval_sums: dict[int, torch.Tensor] = {}

    def initialise(self) -> None:
        """``init=glorot``: Glorot-uniform weights and zero biases in every Linear and Conv2d, in order."""
        if self.hparams.init == "glorot":
            for layer in self.modules():
                if isinstance(layer, nn.Linear | nn.Conv2d):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)

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
        return self._losses(self(x), y).mean()

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
            log_epoch_metrics(self.trainer, {f"{split}/acc": accuracy, f"{split}/loss": loss})

    def configure_optimizers(self):
        weights = [p for p in self.parameters() if p.ndim > 1]
        others = [p for p in self.parameters() if p.ndim <= 1]
        return torch.optim.SGD(
            [{"params": weights, "weight_decay": self.hparams.l2}, {"params": others, "weight_decay": 0.0}],
            lr=self.hparams.lr,
            momentum=self.hparams.momentum,
        )


class MLPClassifier(ImageClassifier):
    """The papers' MLP: flattened inputs -> Linear -> sigmoid -> (dropout) -> Linear -> softmax.

    ``settings``: :class:`ImageClassifier`'s (``num_classes``, ``lr``, ``momentum``, ``dropout``, ``l2``,
    ``loss``, ``init``, ``input_activation``).
    """

    def __init__(self, input_dim: int = 784, hidden: int = 100, **settings: Any):
        super().__init__(**settings)
        require(is_whole(hidden, minimum=1), "hidden", hidden, "an integer ≥ 1")
        require(is_whole(input_dim, minimum=1), "input_dim", input_dim, "an integer ≥ 1")
        dropout = self.hparams.dropout
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden),
            nn.Sigmoid(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(hidden, self.hparams.num_classes),
        )
        self.initialise()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_activation(x.flatten(1)))


class LeNet(ImageClassifier):
    """LeNet-5-style: conv 5×5 (6 maps) -> ReLU -> max-pool 2 -> conv 5×5 (16) -> ReLU -> max-pool 2 ->
    Linear (``hidden``, 120 in LeNet-5) -> ReLU -> Linear (84) -> ReLU -> (dropout) -> Linear -> softmax.

    ``input_shape`` is (channels, side, side) with a side of 28 or 32; ``settings`` are
    :class:`ImageClassifier`'s, as for :class:`MLPClassifier`.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), hidden: int = 120, **settings: Any):
        super().__init__(**settings)
        shape = list(input_shape) if isinstance(input_shape, Sequence) and not isinstance(input_shape, str) else None
        require(
            shape is not None and len(shape) == 3 and is_whole(shape[0], minimum=1) and shape[1] == shape[2]
            and shape[1] in LENET_SIDES,
            "input_shape", input_shape, f"[channels, side, side] with a side in {list(LENET_SIDES)}",
        )
        require(is_whole(hidden, minimum=1), "hidden", hidden, "an integer ≥ 1")
        channels, side, dropout = shape[0], shape[1], self.hparams.dropout
        self.net = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=(32 - side) // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 84),
            nn.ReLU(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(84, self.hparams.num_classes),
        )
        self.initialise()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_activation(x))
