"""BSP, brain-inspired synaptic pruning, while a LightningModule trains: an adapter over
:class:`devnets.methods.bsp.BSP`, which holds the masks and does Algorithm 1 on tensors.

The masks and counts are buffers beside the weights (``weight_bsp_mask``, ``weight_bsp_candidate_count``),
so a run resumed with ``trainer.fit(ckpt_path=...)`` gets them back. An iteration follows every
optimiser step (a hook on each optimiser), so gradient accumulation and manual optimisation count
steps, not batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from devnets.callbacks.weight_histograms import add_histograms, is_due
from devnets.epoch_logging import log_epoch_metrics
from devnets.errors import is_whole, require
from devnets.methods.bsp import BSP
from devnets.methods.weights import check_layers, counting_dtype, load_renamed, select_weights, weight_names


class SynapticPruning(Callback):
    """Prunes a model's weights (by default every nn.Linear and nn.Conv1d/2d/3d weight) by BSP while it trains.

    Args:
        layers: ``all``, ``hidden`` (the first nn.Linear: inputs -> hidden), module-name patterns or
            ``(module, "weight")`` pairs (:func:`~devnets.methods.weights.select_weights`). N and N_p
            count the synapses of these weights.
        n_neurons: N_neu; None: the model's ``hidden`` hyperparameter (devnets' MLP), else an error.
        n_samples: N_sam; None: the datamodule's ``n_train``, else an error.
        histogram_every_n_epochs: TensorBoard histograms of the remaining weights and of their counts.
        settings: :class:`~devnets.methods.bsp.BSP`'s (``alpha``, ``beta``, ``mu``, ``threshold_scale``,
            ``sample_scale``, ``rate_form``, ``iteration``, ``candidates``). With ``iteration="epoch"``
            the iteration follows each epoch's last optimiser step.
    """

    tensor_core = BSP  # where ``settings`` go: its arguments are this callback's too

    def __init__(
        self,
        layers: str | Sequence = "all",
        n_neurons: int | None = None,
        n_samples: int | None = None,
        histogram_every_n_epochs: int = 25,
        **settings: Any,
    ):
        self.pruning = self.tensor_core(**settings)
        self.layers = check_layers(layers)
        for key, value in (("n_neurons", n_neurons), ("n_samples", n_samples)):
            require(value is None or is_whole(value, minimum=1), key, value, "null or an integer ≥ 1")
        require(
            is_whole(histogram_every_n_epochs),
            "histogram_every_n_epochs", histogram_every_n_epochs, "an integer ≥ 0 (0: never)",
        )
        if n_neurons is not None and n_samples is not None:  # refuse a bad eq. (1) before any data is read
            self.pruning.pruning_rate(n_neurons, n_samples)
        self.n_neurons, self.n_samples = n_neurons, n_samples
        self.histogram_every_n_epochs = histogram_every_n_epochs
        self.model: nn.Module | None = None
        self.names: list[str] = []
        self.first_pruning_epoch: int | None = None
        self.loaded_state: dict[str, torch.Tensor] | None = None

    # Algorithm 1, steps 1–2, on the weights selected; N_neu and N_sam where the model and data tell them.

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.attach(pl_module, self.n_samples or getattr(trainer.datamodule, "n_train", None))

    def attach(self, model: nn.Module, n_samples: int | None) -> None:
        n_neurons = self.n_neurons or getattr(model, "hparams", {}).get("hidden")
        self.pruning.attach(select_weights(model, self.layers), n_neurons=n_neurons, n_samples=n_samples)
        self.model = model
        # metrics.json keys each weight by its module's name (net.0)
        self.names = [name.removesuffix(".weight") for name in weight_names(model, self.pruning.weights)]
        for module, name in self.pruning.weights:  # checkpoints written before the buffers were renamed
            renames = {f"{name}_mask": f"{name}_bsp_mask", "candidate_count": f"{name}_bsp_candidate_count"}
            self.pruning.hooks.append(load_renamed(module, name, renames))

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self.loaded_state = checkpoint["state_dict"]  # the counts as saved, for on_fit_start

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after Lightning's precision cast (bf16-true: every float buffer to bfloat16)
        self.pruning.keep_counts_exact(pl_module, self.loaded_state)
        self.loaded_state = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.pruning.recount()  # the masks a resumed run restored after setup
        self.pruning.unhook()
        self.pruning.hook(*trainer.optimizers)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.pruning.unhook()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self.pruning.iteration == "epoch" and batch_idx + 1 == trainer.num_training_batches:
            self.pruning.iterate()
        if self.first_pruning_epoch is None and self.pruning.n_pruned > 0:
            self.first_pruning_epoch = trainer.current_epoch + 1

    # Reporting: per epoch to the loggers, at the end to metrics.json.

    def pruned_fractions(self) -> dict[str, float]:
        masks = zip(self.names, self.pruning.masks(), strict=True)
        return {name: 1 - mask.to(counting_dtype(mask)).mean().item() for name, mask in masks}

    def compression(self, whole_network: bool = True) -> float:
        """Section 4's network compression: the fraction of zero weights among all connections.

        ``whole_network``: of every weight matrix of the model, as the paper counts; else of the pruned layers.
        """
        if whole_network:
            weights = [parameter for parameter in self.model.parameters() if parameter.ndim > 1]
        else:
            weights = self.pruning.parameters()
        zeros = sum(int((weight == 0).sum()) for weight in weights)
        return zeros / sum(weight.numel() for weight in weights)

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        statistics = {
            "bsp/pruning_rate": self.pruning.rate,
            "bsp/count_threshold": self.pruning.threshold,
            "bsp/pruned": self.pruning.n_pruned,
            "bsp/compression": self.compression(),
        }
        fractions = {f"bsp/pruned_fraction/{name}": value for name, value in self.pruned_fractions().items()}
        log_epoch_metrics(trainer, statistics | fractions)
        if is_due(trainer, self.histogram_every_n_epochs):
            histograms = {}
            pruning = self.pruning
            states = zip(self.names, pruning.parameters(), pruning.masks(), pruning.candidate_counts(), strict=True)
            for name, weight, mask, count in states:
                remaining = mask.bool()
                histograms[f"bsp/remaining_weights/{name}"] = weight[remaining]
                histograms[f"bsp/candidate_count/{name}"] = count[remaining]
            add_histograms(trainer, histograms)

    def summary(self) -> dict:
        """What metrics.json records under ``method_stats``.

        ``compression`` is the paper's, over every weight matrix of the model; ``compression_pruned_layers``
        is over the layers BSP prunes (the same unless ``layers`` is hidden).
        """
        return {
            "compression": self.compression(),
            "compression_pruned_layers": self.compression(whole_network=False),
            "synapses": self.pruning.n_synapses,
            "pruned": self.pruning.n_pruned,
            "pruning_rate": self.pruning.rate,
            "count_threshold": self.pruning.threshold,
            "first_pruning_epoch": self.first_pruning_epoch,
            "pruned_fraction": self.pruned_fractions(),
        }

    # Checkpoints: the masks and counts are the model's buffers; this is the rest.

    def state_dict(self) -> dict:
        return {"first_pruning_epoch": self.first_pruning_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.first_pruning_epoch = state_dict["first_pruning_epoch"]
