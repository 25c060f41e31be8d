"""BDNN-dsd's bound mask while a LightningModule trains: an adapter over
:class:`devnets.methods.bdnn_dsd.BDNNDsd`, which holds the state and does Algorithm 1 on tensors.

The state is buffers beside each bounded weight (``weight_bdnn_bound``, ``weight_bdnn_exceed_count``,
...), in the model's state_dict, so checkpoints carry them and ``trainer.fit(ckpt_path=...)`` restores
them (``setup`` registers them before Lightning restores a checkpoint, and keeps any a module already
has); the per-epoch statistics are the callback's own state_dict. A time step follows every optimiser
step (a hook on each optimiser), so gradient accumulation and manual optimisation count steps, not
batches. The readings the paper leaves open are switches, explained in docs/reproduction.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from devnets.callbacks.weight_histograms import add_histograms, is_due
from devnets.epoch_logging import log_epoch_metrics
from devnets.errors import is_whole, require
from devnets.methods.bdnn_dsd import BDNNDsd
from devnets.methods.weights import (
    check_layers,
    compiler_missing,
    count_ones,
    load_renamed,
    select_weights,
    weight_names,
)

log = logging.getLogger(__name__)

# The buffers' names before they took the "bdnn_" that sets them apart from torch.nn.utils.prune's.
LEGACY_NAMES = ("bound", "exceed_count", "decay_count", "previous_magnitude", "exceeded")
# Logged every epoch as bdnn/<name>; Fig. 5 plots the zero counts and their overlap with the previous epoch.
STATISTICS = (
    "mean_bound", "zero_bounds", "zero_weights", "zero_bound_overlap", "zero_weight_overlap", "clipped",
)
# compile=auto compiles the time step when a run has this many weight-steps left (time steps × bounded weights).
# On session 21's CPU compiling cost 4-5 s a run (28 s the first time on the machine, as torch fills its cache)
# and saved 3 ns a weight-step at 79,400 weights and 7 at 397,000 (whole 500-epoch runs on MNIST's 60,000
# samples: 100 hidden units, 4·10^9 weight-steps, 2.5% sooner; 500 hidden, 2·10^10, 16% sooner). From here
# it saves 15-35 s a run, more than compiling costs but the first time; 1200 samples (4·10^8) stay eager.
AUTO_COMPILE_WORK = 5e9


class BoundMask(Callback):
    """Algorithm 1 of BDNN-dsd on a model's weights (by default every nn.Linear and nn.Conv1d/2d/3d
    weight, not biases or norms).

    Args:
        layers: ``all``, ``hidden`` (the first nn.Linear: inputs -> hidden), module-name patterns or
            ``(module, "weight")`` pairs (:func:`~devnets.methods.weights.select_weights`).
        histogram_every_n_epochs: TensorBoard histograms of the bounds (the weights' are
            :class:`~devnets.callbacks.weight_histograms.WeightHistograms`'); 0: never.
        compile: True: each time step as one ``torch.compile``d kernel per weight shape (the same numbers
            bit for bit); ``auto``: so where the run is long enough for compiling to pay and torch.compile can
            run here (``AUTO_COMPILE_WORK``), decided and logged when training starts; False: never.
        settings: :class:`~devnets.methods.bdnn_dsd.BDNNDsd`'s (``initial_bound``, ``bound_step``,
            ``count_threshold``, ``counting``, ``reset_after_update``, ``cadence``). With
            ``cadence="epoch"`` the time step is taken at each epoch's end.
    """

    tensor_core = BDNNDsd  # where ``settings`` go: its arguments are this callback's too

    def __init__(
        self,
        layers: str | Sequence = "all",
        histogram_every_n_epochs: int = 0,
        compile: bool | str = "auto",
        **settings: Any,
    ):
        require(compile == "auto" or isinstance(compile, bool), "compile", compile, "auto, true or false")
        self.compile = compile
        self.bounds = self.tensor_core(compile=compile is True, **settings)
        self.layers = check_layers(layers)
        every = histogram_every_n_epochs
        require(is_whole(every), "histogram_every_n_epochs", every, "an integer ≥ 0 (0: never)")
        self.histogram_every_n_epochs = every
        self.names: list[str] = []
        self.curves: dict[str, list] = {name: [] for name in STATISTICS}
        self.zero_bounds_before: torch.Tensor | None = None
        self.zero_weights_before: torch.Tensor | None = None
        self.loaded_state: dict[str, torch.Tensor] | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.bounds.attach(select_weights(pl_module, self.layers))
        self.names = weight_names(pl_module, self.bounds.weights)
        for module, name in self.bounds.weights:  # checkpoints written before the buffers were renamed
            renames = {f"{name}_{what}": f"{name}_bdnn_{what}" for what in LEGACY_NAMES}
            self.bounds.hooks.append(load_renamed(module, name, renames))

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self.loaded_state = checkpoint["state_dict"]  # the counts as saved, for on_fit_start

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after Lightning's precision cast (bf16-true: every float buffer to bfloat16)
        self.bounds.keep_counts_exact(pl_module, self.loaded_state)
        self.loaded_state = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.compile == "auto" and not self.bounds.compiled:
            self.compile_if_it_pays(trainer)
        self.bounds.unhook()
        self.bounds.hook(*trainer.optimizers)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.bounds.unhook()

    def compile_if_it_pays(self, trainer: Trainer) -> None:
        """``compile=auto``: compile the time step where the weight-steps left reach ``AUTO_COMPILE_WORK``, on
        the CPU (where that was measured), if torch.compile can run; say which in the run's log."""
        weights = self.bounds.parameters()
        if self.bounds.cadence == "batch":  # -1 for an iterable of unknown length without max_steps
            time_steps = trainer.estimated_stepping_batches - trainer.global_step
        else:
            time_steps = math.inf if trainer.max_epochs in (None, -1) else trainer.max_epochs - trainer.current_epoch
        work = time_steps * sum(weight.numel() for weight in weights)
        if time_steps < 0:
            eager_because = "the run's length is unknown"
        elif work < AUTO_COMPILE_WORK:
            eager_because = f"{work:.1e} weight-steps to go, below {AUTO_COMPILE_WORK:.0e}"
        elif weights[0].device.type != "cpu":
            eager_because = f"on {weights[0].device.type}: auto compiles on the CPU only, where it was measured"
        else:
            eager_because = compiler_missing()
        if eager_because is None:
            self.bounds.compile_time_step()
        way = f"eager, {eager_because}" if eager_because else f"compiled, {work:.1e} weight-steps to go"
        log.info("BDNN-dsd's time step (method.compile=auto): %s", way)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.bounds.clipped = 0

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.bounds.cadence == "epoch":
            self.bounds.update()
        bound = torch.cat([bound.flatten() for bound in self.bounds.bounds()])
        zero_bounds = bound == 0
        # compared weight by weight and joined: a bool is a quarter of a float32 to copy
        zero_weights = torch.cat([weight.flatten() == 0 for weight in self.bounds.parameters()])
        statistics = {
            "mean_bound": bound.mean().item(),
            "zero_bounds": count_ones(zero_bounds),
            "zero_weights": count_ones(zero_weights),
            # Fig. 5: the synapses at zero both in the previous epoch and in this one
            "zero_bound_overlap": overlap(zero_bounds, self.zero_bounds_before),
            "zero_weight_overlap": overlap(zero_weights, self.zero_weights_before),
            "clipped": int(self.bounds.clipped),
        }
        self.zero_bounds_before, self.zero_weights_before = zero_bounds, zero_weights
        for name, value in statistics.items():
            self.curves[name].append(value)
        log_epoch_metrics(trainer, {f"bdnn/{name}": value for name, value in statistics.items()})
        if is_due(trainer, self.histogram_every_n_epochs):
            bounds = {f"bounds/{name}": bound for name, bound in zip(self.names, self.bounds.bounds(), strict=True)}
            add_histograms(trainer, bounds)

    def summary(self) -> dict[str, Any]:
        """Final statistics for metrics.json: the last epoch's, the run's totals and the per-epoch curves."""
        curves = self.curves
        zero_bound_epochs = [epoch for epoch, n in enumerate(curves["zero_bounds"], start=1) if n > 0]
        return {
            "bounded_weights": sum(weight.numel() for weight in self.bounds.parameters()),
            **{name: curve[-1] if curve else None for name, curve in curves.items() if name != "clipped"},
            "clipped_total": sum(curves["clipped"]),
            "first_zero_bound_epoch": zero_bound_epochs[0] if zero_bound_epochs else None,
            "per_epoch": {name: list(curve) for name, curve in curves.items()},
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "curves": self.curves,
            "zero_bounds_before": self.zero_bounds_before,
            "zero_weights_before": self.zero_weights_before,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.curves = {name: list(values) for name, values in state_dict["curves"].items()}
        self.zero_bounds_before = state_dict["zero_bounds_before"]
        self.zero_weights_before = state_dict["zero_weights_before"]


def overlap(now: torch.Tensor, before: torch.Tensor | None) -> int:
    """How many entries are set both in ``now`` and in ``before`` (none before the first epoch)."""
    return 0 if before is None else count_ones(now & before.to(now.device))
