"""The models: the papers' three-layer MLP and a LeNet-5-style CNN, trained by SGD on image classes.

Both take images shaped (channels, height, width); the MLP flattens them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from devnets.epoch_logging import log_epoch_metrics
from devnets.errors import InvalidSetting, is_number, is_whole, require

LOSSES = ("cross_entropy", "mse")
# torch: nn.Linear's own, U(±1/√fan_in) for weights and biases; glorot: Keras' Dense default,
# U(±√(6/(fan_in + fan_out))) weights and zero biases. The papers do not say (docs/reproduction.md).
INITS = ("torch", "glorot")
# none: pixels / 255 go straight to the first layer; sigmoid: the input neurons apply the sigmoid to them, as
# both papers' "the activation function for neurons in the input and hidden layers is the sigmoid" reads.
INPUT_ACTIVATIONS = ("none", "sigmoid")
# LeNet-5 reads 32×32 images; 28×28 ones are padded by 2 in its first convolution, as LeCun padded MNIST.
LENET_SIDES = (28, 32)
# With steps_per_batch > 1 the module takes Lightning's (experimental) dataloader_iter; and a ModelCheckpoint
# every_n_train_steps under manual optimisation saves the weights after the step, as automatic optimisation does.
warnings.filterwarnings("ignore", "Found `dataloader_iter` argument in the `training_step`")
warnings.filterwarnings("ignore", "You are using the `dataloader_iter` step flavor")
warnings.filterwarnings("ignore", "Using ModelCheckpoint with manual optimization and every_n_train_steps")


class ImageClassifier(L.LightningModule):
    """What both models share: the loss, the optimiser, the initialisation and the test curves.

    ``input_activation`` is applied to the pixels before the first layer (``sigmoid``: the papers' input
    neurons). ``l2`` is the coefficient λ of the penalty (λ/2)·Σw² on the weights of the layers (biases are not
    penalised); its gradient λw is applied through SGD's ``weight_decay`` on the weights' parameter
    group, which is the same update without building the penalty every step. ``training_step`` returns
    the batch's mean loss; after each validation epoch the module logs ``test/acc`` and ``test/loss``
    (``val/*`` for a second validation set), which :class:`~devnets.callbacks.run_record.RunRecord` records.

    ``steps_per_batch`` > 1 makes that many optimiser steps in each call from Lightning
    (:meth:`training_steps`, under manual optimisation), with the same results as one step a batch.
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
        steps_per_batch: int = 1,
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
        require(is_whole(steps_per_batch, minimum=1), "steps_per_batch", steps_per_batch, "an integer ≥ 1")
        self.save_hyperparameters()  # these and the subclass's own arguments
        self.input_activation = nn.Sigmoid() if input_activation == "sigmoid" else nn.Identity()
        self._eval_sums: dict[int, torch.Tensor] = {}
        self.steps_per_batch = steps_per_batch
        if steps_per_batch > 1:  # Lightning hands training_steps the batches' iterator; it steps the optimiser
            self.automatic_optimization = False
            self.training_step = self.training_steps

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

    def training_steps(self, dataloader_iter: Iterator) -> dict[str, Any]:
        """``training_step`` with ``steps_per_batch`` > 1: that many optimiser steps, each on the next batch of
        the epoch, in one call from Lightning, so that its per-batch cost is paid once per K steps.

        Each step is the automatic one (forward, loss, zero_grad, backward, ``optimizer.step()``), on the same
        batches in the same order: the weights, the curves and the RNG draws (dropout) are those of
        ``steps_per_batch=1``. A call takes fewer steps at the epoch's end, at ``max_steps``, and before a
        ModelCheckpoint's ``every_n_train_steps``, so that ``global_step`` (optimiser steps) lands on each
        one. Returns the steps' mean loss as ``loss``, and each step's loss and batch size as
        ``step_losses`` and ``step_sizes`` (:class:`~devnets.callbacks.run_record.RunRecord` reads them).
        """
        step, transfer = self._step_function(), self._transfer_function()
        losses, sizes = [], []
        for _ in range(self._steps_due()):
            try:
                batch, batch_idx, _ = next(dataloader_iter)
            except StopIteration:
                break
            x, y = transfer(batch)
            loss = self._losses(self(x), y).mean()
            step(loss, batch_idx)
            losses.append(loss.detach())
            sizes.append(len(y))
        if not losses:  # an iterable of unknown length ran out
            return {"step_losses": [], "step_sizes": []}
        total = torch.stack(losses).mul(torch.tensor(sizes, device=losses[0].device)).sum() / sum(sizes)
        return {"loss": total, "step_losses": losses, "step_sizes": sizes}

    def _steps_due(self) -> int:
        """Steps in this call: ``steps_per_batch``, or fewer to stop at ``max_steps`` or at a checkpoint's step."""
        trainer, steps = self.trainer, self.steps_per_batch
        done = trainer.global_step
        if trainer.max_steps >= 0:
            steps = min(steps, trainer.max_steps - done)
        for checkpoint in trainer.checkpoint_callbacks:
            every = getattr(checkpoint, "_every_n_train_steps", 0) or 0
            if every > 0:
                steps = min(steps, every - done % every)
        return max(steps, 1)

    def _transfer_function(self):
        """What Lightning does to each batch before ``training_step`` (the precision plugin's conversion, the
        batch-transfer hooks, the move to the device), which dataloader_iter leaves to the step; skipped for a
        batch of tensors already on the device when none of it would change them."""
        trainer = self.trainer
        device = trainer.strategy.root_device

        def transfer(batch: Any) -> Any:
            batch = trainer.precision_plugin.convert_input(batch)
            return trainer.strategy.batch_to_device(self._on_before_batch_transfer(batch, 0), dataloader_idx=0)

        if not _plain_transfer(trainer, self):
            return transfer

        def on_device(batch: Any) -> Any:
            tensors = isinstance(batch, tuple | list) and all(isinstance(t, torch.Tensor) for t in batch)
            if tensors and all(t.device == device for t in batch):
                return batch
            return transfer(batch)

        return on_device

    def _step_function(self):
        """One optimiser step on a loss: Lightning's manual optimisation (``manual_backward`` and the
        LightningOptimizer, with their hooks and precision plugin), or, when no hook or plugin would see
        the difference, the plain torch calls, counted in ``global_step`` all the same."""
        trainer = self.trainer
        optimizer = trainer.optimizers[0]
        if not _plain_steps(trainer, self):
            from lightning.pytorch.trainer import call

            lightning_optimizer = self.optimizers()

            def lightning_step(loss: torch.Tensor, batch_idx: int) -> None:
                # the zero_grad hooks of automatic optimisation, which manual optimisation leaves out
                call._call_callback_hooks(trainer, "on_before_zero_grad", optimizer)
                call._call_lightning_module_hook(trainer, "on_before_zero_grad", optimizer)
                call._call_lightning_module_hook(trainer, "optimizer_zero_grad", trainer.current_epoch, batch_idx,
                                                 optimizer)
                self.manual_backward(loss)
                lightning_optimizer.step()

            return lightning_step
        progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress

        def plain_step(loss: torch.Tensor, batch_idx: int) -> None:
            optimizer.zero_grad()
            loss.backward()
            progress.increment_ready()
            optimizer.step()
            progress.increment_completed()

        return plain_step

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """``global_step`` counts optimiser steps in automatic optimisation's counter (``steps_per_batch=1``)
        or in manual optimisation's (> 1): both are set to the steps taken, so a checkpoint written under
        either resumes under the other (``steps_per_batch`` never changes a run's results)."""
        loop = checkpoint.get("loops", {}).get("fit_loop", {})
        automatic = loop.get("epoch_loop.automatic_optimization.optim_progress", {}).get("optimizer", {}).get("step")
        manual = loop.get("epoch_loop.manual_optimization.optim_step_progress")
        if automatic is None or manual is None:
            return
        for scope in ("total", "current"):
            for count in ("ready", "completed"):
                automatic[scope][count] = manual[scope][count] = max(automatic[scope][count], manual[scope][count])

    def on_fit_start(self) -> None:
        """Refuse, with ``steps_per_batch`` > 1, what counts Lightning batches where it should count steps."""
        if self.steps_per_batch == 1:
            return
        trainer = self.trainer
        refusals = {
            "several optimisers": len(trainer.optimizers) != 1,
            "a learning-rate scheduler (not stepped under manual optimisation)": bool(trainer.lr_scheduler_configs),
            f"val_check_interval={trainer.val_check_interval} (it counts Lightning batches)":
                trainer.val_check_interval != 1.0,
        }
        for what, refused in refusals.items():
            if refused:
                raise InvalidSetting("steps_per_batch", self.steps_per_batch, f"1 with {what}")

    def on_validation_epoch_start(self) -> None:
        self._eval_sums = {}

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, y = batch
        logits = self(x)
        sums = torch.stack(
            [self._losses(logits, y).sum(), (logits.argmax(dim=1) == y).sum(), torch.tensor(len(y), device=y.device)]
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


# Per-step hooks that the plain torch calls of ``training_steps`` would skip: any override takes Lightning's path.
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad")
MODULE_STEP_HOOKS = (*STEP_HOOKS, "backward", "optimizer_zero_grad")


def _plain_steps(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """True when Lightning's manual step would do nothing but torch's: one device, full or half precision
    without a scaler, and no callback or module hook on the step."""
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.plugins.precision import DoublePrecision, HalfPrecision, Precision
    from lightning.pytorch.strategies import SingleDeviceStrategy

    return (
        type(trainer.strategy) is SingleDeviceStrategy
        and type(trainer.precision_plugin) in (Precision, DoublePrecision, HalfPrecision)
        and not any(_overrides(callback, Callback, hook) for callback in trainer.callbacks for hook in STEP_HOOKS)
        and not any(_overrides(module, L.LightningModule, hook) for hook in MODULE_STEP_HOOKS)
    )


TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def _overrides(obj: Any, base: type, hook: str) -> bool:
    return getattr(type(obj), hook, None) is not getattr(base, hook, None)


def _plain_transfer(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """True when Lightning's batch transfer leaves a batch already on the device as it is: a precision plugin
    that converts no inputs, and no batch-transfer hook in the module or datamodule."""
    from lightning.pytorch.plugins.precision import Precision

    datamodule = trainer.datamodule
    return (
        type(trainer.precision_plugin) is Precision
        and not any(_overrides(module, L.LightningModule, hook) for hook in TRANSFER_HOOKS)
        and not (datamodule is not None and any(_overrides(datamodule, L.LightningDataModule, hook)
                                                for hook in TRANSFER_HOOKS))
    )


class MLPClassifier(ImageClassifier):
    """The papers' MLP: flattened inputs -> Linear -> sigmoid -> (dropout) -> Linear -> softmax.

    ``settings``: :class:`ImageClassifier`'s (``num_classes``, ``lr``, ``momentum``, ``dropout``, ``l2``,
    ``loss``, ``init``, ``input_activation``, ``steps_per_batch``).
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
