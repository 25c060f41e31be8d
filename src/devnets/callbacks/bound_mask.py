"""BDNN-dsd's bound mask (Zhao, Zeng & Bai 2021, section 3): every weight is held in [-M, M] (eq. 3.3),
and each bound M grows or shrinks by R_d once its weight has exceeded it, or decayed, T_num times
(Algorithm 1).

As in ``torch.nn.utils.prune``, the state sits beside each bounded weight, as buffers of its module:
``weight_bound`` (M), ``weight_exceed_count`` (Num+), ``weight_decay_count`` (Num-),
``weight_previous_magnitude`` (|w(t-1)|: the weight after the previous clip) and, with
``cadence="epoch"``, ``weight_exceeded`` (1.0 where the weight left its bound this epoch). The counts
are whole numbers held as floats, like the weights. The buffers are in the model's state_dict, so
checkpoints carry them and ``trainer.fit(ckpt_path=...)`` restores them (``setup`` registers them
before Lightning restores a checkpoint, and keeps any a module already has); the per-epoch
statistics are the callback's own state_dict. The readings the paper leaves open are switches,
explained in docs/reproduction.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from devnets.callbacks.weight_histograms import add_histograms, is_due
from devnets.epoch_logging import log_epoch_metrics
from devnets.errors import is_number, is_whole, require

COUNTINGS = ("cumulative", "consecutive")
CADENCES = ("batch", "epoch")
LAYER_SETS = ("all", "hidden")
# Float sums of ±R_d can leave ~1e-8 where the exact bound is 0 (0.3 - 3 × 0.1 in float32): a bound
# within this fraction of R_d of 0 is 0.
ROUNDING = 1e-3
# Logged every epoch as bdnn/<name>; Fig. 5 plots the zero counts and their overlap with the previous epoch.
STATISTICS = (
    "mean_bound", "zero_bounds", "zero_weights", "zero_bound_overlap", "zero_weight_overlap", "clipped",
)


def is_name_list(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(name, str) for name in value)
    )


class BoundMask(Callback):
    """Algorithm 1 of BDNN-dsd on the weights of a model's ``nn.Linear`` modules (not their biases).

    Args:
        initial_bound: R_i, where every bound M starts.
        bound_step: R_d, how far a bound moves at a time.
        count_threshold: T_num, the count of exceedances (decays) that grows (shrinks) a bound.
        counting: ``cumulative`` (Algorithm 1: a count only resets when its bound moves) or
            ``consecutive`` (the text: a step without the event also resets it).
        reset_after_update: reset a count when its bound moves (Algorithm 1) or keep it (step 2).
        layers: ``all`` nn.Linear modules, the ``hidden`` one (the first: inputs -> hidden), or a
            list of module names.
        cadence: ``batch`` (Algorithm 1: t counts optimiser steps) or ``epoch`` (t counts epochs;
            weights are still clipped after every step).
        histogram_every_n_epochs: TensorBoard histograms of the bounds (the weights' are
            :class:`~devnets.callbacks.weight_histograms.WeightHistograms`'); 0: never.
    """

    def __init__(
        self,
        initial_bound: float = 0.45,
        bound_step: float = 0.06,
        count_threshold: int = 10,
        counting: str = "cumulative",
        reset_after_update: bool = True,
        layers: str | Sequence[str] = "all",
        cadence: str = "batch",
        histogram_every_n_epochs: int = 0,
    ):
        require(
            is_number(initial_bound) and initial_bound > 0, "initial_bound", initial_bound, "a number > 0"
        )
        require(is_number(bound_step) and bound_step >= 0, "bound_step", bound_step, "a number ≥ 0")
        require(
            is_whole(count_threshold, minimum=1),
            "count_threshold", count_threshold, "an integer ≥ 1",
        )
        require(counting in COUNTINGS, "counting", counting, f"one of {list(COUNTINGS)}")
        require(
            isinstance(reset_after_update, bool), "reset_after_update", reset_after_update, "true or false"
        )
        layers = list(layers) if is_name_list(layers) else layers
        require(
            layers in LAYER_SETS or is_name_list(layers),
            "layers", layers, f"one of {list(LAYER_SETS)} or a list of nn.Linear module names",
        )
        require(cadence in CADENCES, "cadence", cadence, f"one of {list(CADENCES)}")
        every = histogram_every_n_epochs
        require(is_whole(every), "histogram_every_n_epochs", every, "an integer ≥ 0 (0: never)")
        self.initial_bound, self.bound_step, self.count_threshold = initial_bound, bound_step, count_threshold
        self.counting, self.reset_after_update = counting, reset_after_update
        self.layers, self.cadence, self.histogram_every_n_epochs = layers, cadence, every
        self.bounded: dict[str, nn.Linear] = {}
        self.curves: dict[str, list] = {name: [] for name in STATISTICS}
        self.clipped = torch.zeros((), dtype=torch.float64)
        self.zero_bounds_before: torch.Tensor | None = None
        self.zero_weights_before: torch.Tensor | None = None

    def bounded_modules(self, model: nn.Module) -> dict[str, nn.Linear]:
        linears = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        require(bool(linears), "layers", self.layers, "a model with at least one nn.Linear")
        if self.layers == "all":
            return linears
        if self.layers == "hidden":
            return dict([next(iter(linears.items()))])
        allowed = f"names of nn.Linear modules: {list(linears)}"
        require(set(self.layers) <= set(linears), "layers", self.layers, allowed)
        return {name: linears[name] for name in self.layers}

    @torch.no_grad()
    def attach(self, module: nn.Linear) -> None:
        """Algorithm 1's "Given": M = R_i, Num+ = Num- = 0; kept if ``module`` already has them."""
        if hasattr(module, "weight_bound"):
            return
        weight = module.weight
        module.register_buffer("weight_bound", torch.full_like(weight, self.initial_bound))
        module.register_buffer("weight_exceed_count", torch.zeros_like(weight))
        module.register_buffer("weight_decay_count", torch.zeros_like(weight))
        module.register_buffer("weight_previous_magnitude", weight.abs())
        if self.cadence == "epoch":
            module.register_buffer("weight_exceeded", torch.zeros_like(weight))

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.bounded = self.bounded_modules(pl_module)
        for module in self.bounded.values():
            self.attach(module)

    def count(self, counter: torch.Tensor, happened: torch.Tensor) -> None:
        """Num = Num + 1 where the event happened; consecutive counting also sets Num = 0 where it did not."""
        if self.counting == "consecutive":
            torch.addcmul(happened, counter, happened, out=counter)  # Num = (Num + 1)·happened
        else:
            counter.add_(happened)

    def move(self, bound: torch.Tensor, counter: torch.Tensor, reached: torch.Tensor, by: float) -> None:
        """M = M + by where the count reached T_num, and (Algorithm 1) Num = 0 there."""
        bound.add_(reached, alpha=by)
        if self.reset_after_update:
            counter.addcmul_(counter, reached, value=-1)

    def clip(self, weight, bound, magnitude, outside, clipped_magnitude) -> torch.Tensor:
        """Eq. 3.3: w = M where w > M, -M where w < -M, written as w = sign(w)·min(|w|, M), which also
        leaves |w| after the clip in ``clipped_magnitude``. ``magnitude`` is |w| before the clip.
        Returns ``outside``, set to 1.0 where w was outside [-M, M]."""
        self.clipped += torch.gt(magnitude, bound, out=outside).sum()
        torch.copysign(torch.minimum(magnitude, bound, out=clipped_magnitude), weight, out=weight)
        return outside

    @torch.no_grad()
    def step(self, module: nn.Linear) -> None:
        """One time step t of Algorithm 1 on ``module.weight``, after backpropagation (eq. 3.2).

        Conditions are float masks (1.0 where they hold) written to one scratch tensor: on the CPU,
        PyTorch's float kernels run several times faster than its bool ones.
        """
        weight, bound, previous = module.weight, module.weight_bound, module.weight_previous_magnitude
        exceed_count, decay_count = module.weight_exceed_count, module.weight_decay_count
        magnitude = weight.abs()
        condition = torch.empty_like(magnitude)
        # if w > M or w < -M then Num+ = Num+ + 1 (with cadence epoch: at any step of the epoch)
        exceeded = torch.gt(magnitude, bound, out=condition)
        if self.cadence == "epoch":
            torch.maximum(exceeded, module.weight_exceeded, out=exceeded)
            module.weight_exceeded.zero_()
        self.count(exceed_count, exceeded)
        # if |w(t)| < |w(t-1)| then Num- = Num- + 1
        self.count(decay_count, torch.lt(magnitude, previous, out=condition))
        # if Num+ ≥ T_num then M = M + R_d; Num+ = 0
        self.move(bound, exceed_count, torch.ge(exceed_count, self.count_threshold, out=condition), self.bound_step)
        # if Num- ≥ T_num then M = M - R_d; Num- = 0
        self.move(bound, decay_count, torch.ge(decay_count, self.count_threshold, out=condition), -self.bound_step)
        # -M ≤ w ≤ M is empty for M < 0: M stops at 0
        F.threshold(bound, ROUNDING * self.bound_step, 0.0, inplace=True)
        # limit the weight to the bound mask (eq. 3.3); |w| after clipping is the next step's |w(t-1)|
        self.clip(weight, bound, magnitude, condition, clipped_magnitude=previous)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.clipped = torch.zeros((), dtype=torch.float64, device=pl_module.device)

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        for module in self.bounded.values():
            if self.cadence == "batch":
                self.step(module)
            else:
                weight, bound, exceeded = module.weight, module.weight_bound, module.weight_exceeded
                magnitude = weight.abs()
                outside = self.clip(weight, bound, magnitude, torch.empty_like(magnitude), magnitude)
                torch.maximum(exceeded, outside, out=exceeded)

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.cadence == "epoch":
            for module in self.bounded.values():
                self.step(module)
        bound = torch.cat([module.weight_bound.flatten() for module in self.bounded.values()])
        weight = torch.cat([module.weight.flatten() for module in self.bounded.values()])
        zero_bounds, zero_weights = bound == 0, weight == 0
        statistics = {
            "mean_bound": bound.mean().item(),
            "zero_bounds": int(zero_bounds.sum()),
            "zero_weights": int(zero_weights.sum()),
            # Fig. 5: the synapses at zero both in the previous epoch and in this one
            "zero_bound_overlap": overlap(zero_bounds, self.zero_bounds_before),
            "zero_weight_overlap": overlap(zero_weights, self.zero_weights_before),
            "clipped": int(self.clipped),
        }
        self.zero_bounds_before, self.zero_weights_before = zero_bounds, zero_weights
        for name, value in statistics.items():
            self.curves[name].append(value)
        log_epoch_metrics(trainer, {f"bdnn/{name}": value for name, value in statistics.items()})
        if is_due(trainer, self.histogram_every_n_epochs):
            bounds = {f"bounds/{name}.weight": module.weight_bound for name, module in self.bounded.items()}
            add_histograms(trainer, bounds)

    def summary(self) -> dict[str, Any]:
        """Final statistics for metrics.json: the last epoch's, the run's totals and the per-epoch curves."""
        curves = self.curves
        zero_bound_epochs = [epoch for epoch, n in enumerate(curves["zero_bounds"], start=1) if n > 0]
        return {
            "bounded_weights": sum(module.weight.numel() for module in self.bounded.values()),
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
    return 0 if before is None else int((now & before.to(now.device)).sum())
