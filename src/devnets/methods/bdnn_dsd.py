"""BDNN-dsd's bound mask on tensors (Zhao, Zeng & Bai 2021, section 3): every weight is held in
[-M, M] (eq. 3.3), and each bound M grows or shrinks by R_d once its weight has exceeded it, or
decayed, T_num times (Algorithm 1).

The state sits beside each bounded weight as buffers of its module: ``weight_bdnn_bound`` (M),
``weight_bdnn_exceed_count`` (Num+), ``weight_bdnn_decay_count`` (Num-),
``weight_bdnn_previous_magnitude`` (|w(t-1)|: the weight after the previous clip) and, with
``cadence="epoch"``, ``weight_bdnn_exceeded`` (1.0 where the weight left its bound since the last
time step). Bounds and magnitudes have the weight's dtype; the counts, whole numbers, are floats of at
least float32. Conditions are float masks (1.0 where they hold): on the CPU, PyTorch's float kernels
run several times faster than its bool ones.

A time step is about ten elementwise passes over each weight, memory-bound. With ``compile=True`` it runs
as one ``torch.compile``d kernel per weight shape instead, with the same numbers bit for bit (every pass is
exact or rounds once, the same way; the eager path's shortcuts, which skip passes whose result is known, are
left out of the graph). That pays on long runs only: compiling takes 4-5 s a process (more the first time on a
machine), and saves a few nanoseconds a weight and step (BoundMask's ``compile="auto"`` decides by that).

In a plain PyTorch loop::

    bounds = BDNNDsd(initial_bound=0.45, bound_step=0.06, count_threshold=10)
    bounds.attach(select_weights(model))
    bounds.hook(optimizer)  # one time step t after every optimizer.step()
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from devnets.errors import is_number, is_whole, require
from devnets.methods.weights import EXACT_FLOAT_COUNT, Weight, WeightMethod, compiler_missing, counting_dtype, parameter

COUNTINGS = ("cumulative", "consecutive")
CADENCES = ("batch", "epoch")
# Float sums of ±R_d can leave ~1e-8 where the exact bound is 0 (0.3 - 3 × 0.1 in float32): a bound
# within this fraction of R_d of 0 is 0.
ROUNDING = 1e-3


class BDNNDsd(WeightMethod):
    """Algorithm 1 of BDNN-dsd on the weights it is attached to.

    Args:
        initial_bound: R_i, where every bound M starts.
        bound_step: R_d, how far a bound moves at a time.
        count_threshold: T_num, the count of exceedances (decays) that grows (shrinks) a bound.
        counting: ``cumulative`` (Algorithm 1: a count only resets when its bound moves) or
            ``consecutive`` (the text: a step without the event also resets it).
        reset_after_update: reset a count when its bound moves (Algorithm 1) or keep it (step 2).
        cadence: ``batch`` (Algorithm 1: t counts optimiser steps) or ``epoch`` (t counts epochs:
            call :meth:`update` after each; the weights are still clipped after every step).
        compile: run each time step as one ``torch.compile``d kernel per weight (the same numbers, faster
            on large weights once compiled; needs what ``torch.compile`` needs, a C++ compiler on the CPU).
    """

    count_buffers = ("bdnn_exceed_count", "bdnn_decay_count", "bdnn_exceeded")

    def __init__(
        self,
        initial_bound: float = 0.45,
        bound_step: float = 0.06,
        count_threshold: int = 10,
        counting: str = "cumulative",
        reset_after_update: bool = True,
        cadence: str = "batch",
        compile: bool = False,
    ):
        super().__init__()
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
        require(cadence in CADENCES, "cadence", cadence, f"one of {list(CADENCES)}")
        require(isinstance(compile, bool), "compile", compile, "true or false")
        self.initial_bound, self.bound_step, self.count_threshold = initial_bound, bound_step, count_threshold
        self.counting, self.reset_after_update, self.cadence = counting, reset_after_update, cadence
        # Algorithm 1's time step on a weight's tensors; compiled (compile_time_step), one kernel per weight shape.
        self._time_step, self.compiled = self.time_step, False
        if compile:
            self.compile_time_step()
        # Weights clipped since this was last set to 0 (an int on the CPU, else, or compiled, a float64 tensor).
        self.clipped: torch.Tensor | int = 0
        # The weights whose bounds a time step has rounded (below ROUNDING·R_d to 0): later steps round
        # only where a bound has moved.
        self._rounded: set[tuple[int, str]] = set()

    def compile_time_step(self) -> None:
        """From now on, run each time step as one ``torch.compile``d kernel per weight shape: the same numbers."""
        missing = compiler_missing()
        require(missing is None, "compile", True, f"false here: torch.compile cannot run ({missing})")
        self._time_step, self.compiled = torch.compile(self.time_step), True

    @torch.no_grad()
    def attach(self, weights: list[Weight]) -> None:
        """Algorithm 1's "Given": M = R_i, Num+ = Num- = 0; kept where a module already has them."""
        super().attach(weights)
        for module, name in self.weights:
            weight = parameter(module, name)
            counts = torch.zeros_like(weight, dtype=counting_dtype(weight))
            self.register(module, name, "bdnn_bound", torch.full_like(weight, self.initial_bound))
            self.register(module, name, "bdnn_exceed_count", counts.clone())
            self.register(module, name, "bdnn_decay_count", counts.clone())
            self.register(module, name, "bdnn_previous_magnitude", weight.abs())
            if self.cadence == "epoch":
                self.register(module, name, "bdnn_exceeded", counts.clone())

    def bounds(self) -> list[torch.Tensor]:
        return [self.state(module, name, "bdnn_bound") for module, name in self.weights]

    def after_step(self, weights: list[Weight]) -> None:
        """After an optimiser step: a time step t (cadence ``batch``), or the clip alone (``epoch``)."""
        if self.cadence == "batch":
            self.update(weights)
        else:
            self.clip(weights)

    def count(self, counter: torch.Tensor, happened: torch.Tensor) -> None:
        """Num = Num + 1 where the event happened; consecutive counting also sets Num = 0 where it did not."""
        if self.counting == "consecutive":
            torch.addcmul(happened, counter, happened, out=counter)  # Num = (Num + 1)·happened
        else:
            counter.add_(happened)

    def move(self, bound: torch.Tensor, counter: torch.Tensor, by: float, reached: torch.Tensor) -> bool:
        """M = M + by where the count reached T_num, and (Algorithm 1) Num = 0 there; ``reached`` is a work
        tensor shaped as the count. Returns False when no count reached T_num, which on the CPU is checked
        first (one reduction instead of three passes; not in a compiled graph, which has no branches on values)."""
        if (
            counter.device.type == "cpu" and not torch.compiler.is_compiling()
            and (counter.numel() == 0 or float(counter.amax()) < self.count_threshold)
        ):
            return False
        torch.ge(counter, self.count_threshold, out=reached)
        bound.add_(reached, alpha=by)
        if self.reset_after_update:
            counter.addcmul_(counter, reached, value=-1)
        return True

    def limit(self, weight, bound, magnitude, outside, clipped_magnitude) -> torch.Tensor | int:
        """Eq. 3.3: w = M where w > M, -M where w < -M, written as w = sign(w)·min(|w|, M), which also
        leaves |w| after the clip in ``clipped_magnitude``. ``magnitude`` is |w| before the clip and
        ``outside`` is 1.0 where it exceeds M, 0.0 elsewhere. Returns how many weights were clipped."""
        if outside.device.type == "cpu" and outside.numel() < EXACT_FLOAT_COUNT and not torch.compiler.is_compiling():
            clipped = int(outside.sum())  # a float32 sum of 0s and 1s, exact below 2^24 terms
        else:  # no sync with the device, no branch in a compiled graph; a float64 sum
            clipped = outside.sum(dtype=torch.float64)
        torch.minimum(magnitude, bound, out=clipped_magnitude)
        if not isinstance(clipped, int) or clipped != 0:  # else |w| ≤ M everywhere, and sign(w)·|w| is w
            torch.copysign(clipped_magnitude, weight, out=weight)
        return clipped

    def work(self, what: str, like: torch.Tensor) -> torch.Tensor:
        """A work tensor shaped and typed as ``like``, shared by the weights of that shape (a step is done with it)."""
        return self.scratch((what, like.shape, like.dtype), like)

    @torch.no_grad()
    def clip(self, weights: list[Weight] | None = None) -> None:
        """Eq. 3.3 alone, noting in ``weight_bdnn_exceeded`` which weights left their bound (cadence ``epoch``)."""
        for module, name in self.weights if weights is None else weights:
            weight, bound = parameter(module, name), self.state(module, name, "bdnn_bound")
            exceeded = self.state(module, name, "bdnn_exceeded")
            magnitude = torch.abs(weight, out=self.work("magnitude", weight))
            outside = torch.gt(magnitude, bound, out=self.work("outside", exceeded))
            self.clipped += self.limit(weight, bound, magnitude, outside, magnitude)
            torch.maximum(exceeded, outside, out=exceeded)

    def update_weight(self, module: nn.Module, name: str) -> torch.Tensor | int:
        """One time step of Algorithm 1 on one weight; returns how many weights it clipped."""
        state = [self.state(module, name, f"bdnn_{what}") for what in ("bound", "previous_magnitude",
                                                                       "exceed_count", "decay_count")]
        seen = self.state(module, name, "bdnn_exceeded") if self.cadence == "epoch" else None
        first = (id(module), name) not in self._rounded
        if first:
            self._rounded.add((id(module), name))
        return self._time_step(parameter(module, name), *state, seen, round_bounds=first)

    def time_step(self, weight, bound, previous, exceed_count, decay_count, seen, round_bounds: bool):
        """Algorithm 1's time step t on one weight's tensors (``seen``: its ``weight_bdnn_exceeded`` with
        cadence ``epoch``, else None); ``round_bounds`` rounds the bounds even if none moves."""
        magnitude = torch.abs(weight, out=self.work("magnitude", weight))
        # work tensor of 0/1 events, reused below
        event = self.work("event", exceed_count)
        # if w > M or w < -M then Num+ = Num+ + 1 (with cadence epoch: at any step since the last t)
        outside = torch.gt(magnitude, bound, out=self.work("outside", exceed_count))
        if seen is not None:
            self.count(exceed_count, torch.maximum(outside, seen, out=seen))
            seen.zero_()
        else:
            self.count(exceed_count, outside)
        # if |w(t)| < |w(t-1)| then Num- = Num- + 1
        self.count(decay_count, torch.lt(magnitude, previous, out=event))
        # if Num+ ≥ T_num then M = M + R_d; Num+ = 0. If Num- ≥ T_num then M = M - R_d; Num- = 0
        grown = self.move(bound, exceed_count, self.bound_step, reached=event)
        shrunk = self.move(bound, decay_count, -self.bound_step, reached=event)
        if grown or shrunk or round_bounds:
            # -M ≤ w ≤ M is empty for M < 0: M stops at 0
            F.threshold(bound, ROUNDING * self.bound_step, 0.0, inplace=True)
            torch.gt(magnitude, bound, out=outside)
        # limit the weight to the bound mask (eq. 3.3); |w| after clipping is the next step's |w(t-1)|
        return self.limit(weight, bound, magnitude, outside, clipped_magnitude=previous)

    @torch.no_grad()
    def update(self, weights: list[Weight] | None = None) -> None:
        """One time step t of Algorithm 1, after backpropagation (eq. 3.2), on each weight."""
        for module, name in self.weights if weights is None else weights:
            self.clipped += self.update_weight(module, name)
