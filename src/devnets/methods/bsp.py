"""BSP, brain-inspired synaptic pruning, on tensors (Zhao & Zeng 2021, section 3, eqs. 1–5 and Algorithm 1).

Each iteration the remaining synapses with the smallest |w| are candidates for pruning; a synapse
that has been a candidate more than p_c times in a row is pruned for good.

Masks sit beside the weights as buffers of their modules, as in ``torch.nn.utils.prune`` but under
names of their own: ``weight_bsp_mask`` (1 remaining, 0 pruned; the weight's dtype) and
``weight_bsp_candidate_count`` (step 8's count of consecutive candidacies, a whole number in a float
of at least float32). Rather than prune's forward pre-hook, which rebuilds ``weight = weight_orig *
mask`` through autograd in every forward pass (evaluation too), the weight stays a plain parameter and
is multiplied by its mask after every optimiser step: one in-place product per step, and the
optimiser, checkpoints and histograms see the usual ``weight``. A pruned weight is then 0 in every
forward pass whatever momentum, weight decay or Adam state add to it (eq. 4), for any optimiser that
updates each entry from its own gradient and state, as SGD and Adam do. Gradients are left as they
are: such an optimiser's update of a pruned entry is undone by the mask, and nothing else reads them
(gradient-norm clipping would count them; devnets does not clip).

In a plain PyTorch loop::

    pruning = BSP()
    pruning.attach(select_weights(model), n_neurons=100, n_samples=len(train_set))
    pruning.hook(optimizer)  # one iteration after every optimizer.step()
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import numpy as np
import torch
from torch import nn

from devnets.errors import is_number, is_whole, require
from devnets.methods.weights import Weight, WeightMethod, count_ones, counting_dtype, parameter

# The constants of eqs. (1) and (2), "carefully defined based on our experience" (section 3).
ALPHA, BETA, MU, A, B = 0.048, 50, 146, 1244, 60_000
RATE_FORMS = ("plus_one", "printed")
ITERATIONS = ("batch", "epoch")
CANDIDATES = ("global", "per_layer")
# The next iteration's cut is guessed at the last one's times this (see _kth_smallest): a guess too low
# costs one pass before the full selection, one too high a larger copy to select among.
CUT_SLACK = 1.25


def _log_samples_squared(n_samples: int, beta: float, sample_scale: float) -> float:
    """[ln(β·N_sam/B)]², the sample-size term of eqs. (1) and (2)."""
    return math.log(beta * n_samples / sample_scale) ** 2


def pruning_rate(
    n_neurons: int,
    n_samples: int,
    alpha: float = ALPHA,
    beta: float = BETA,
    sample_scale: float = B,
    rate_form: str = "plus_one",
) -> float:
    """Eq. (1): p_r = α·ln(N_neu) / ln(β·N_sam/B)², the fraction of remaining synapses that are candidates.

    ``printed`` is the equation as printed, whose denominator is 0 at β·N_sam/B = 1 (1200 samples with
    the paper's constants): refused. ``plus_one`` adds 1 to the denominator, as eq. (2) does.
    """
    denominator = _log_samples_squared(n_samples, beta, sample_scale) + (rate_form == "plus_one")
    require(
        denominator > 0, "rate_form", rate_form,
        f"plus_one at N_sam = {n_samples} (eq. 1 as printed divides by ln(β·N_sam/B)² = 0)",
    )
    return alpha * math.log(n_neurons) / denominator


def count_threshold(
    n_synapses: int,
    n_pruned: int,
    n_neurons: int,
    n_samples: int,
    threshold_scale: float = A,
    mu: float = MU,
    beta: float = BETA,
    sample_scale: float = B,
) -> float:
    """Eq. (2): p_c = 2^(N/(N−N_p)) · A/(N_neu+μ) · ([ln(β·N_sam/B)]² + 1), recomputed as N_p grows."""
    growth = 2 ** (n_synapses / (n_synapses - n_pruned))
    samples_term = _log_samples_squared(n_samples, beta, sample_scale) + 1
    return growth * threshold_scale / (n_neurons + mu) * samples_term


def _at_most(values: torch.Tensor, cut, out: torch.Tensor | None = None) -> torch.Tensor:
    """values ≤ cut, as 0/1 in the dtype of ``values`` (in ``out`` when given)."""
    return torch.le(values, cut, out=torch.empty_like(values) if out is None else out)


def _kth_smallest(
    values: torch.Tensor, k: int, work: torch.Tensor | None = None, guess: float | None = None
):
    """The k-th smallest of the 1-D float32/float64 ``values`` (k from 1): one selection, no sort.

    On the CPU NumPy's introselect, 2-4x faster there than ``torch.kthvalue`` (torch 2.14; about 1 ms an
    iteration at 784-100-10, as much as the training step), on a copy of ``values`` in ``work`` when given
    (a tensor of their shape and dtype): a fresh copy of a large weight costs as much as the selection;
    ``torch.kthvalue`` on other devices.

    ``guess``, a value likely a little above the answer (the previous iteration's answer, raised): when at
    least k values are ≤ it, the k smallest are all among those, and the selection runs on them alone,
    which gives the same value. |w| moves little from one step to the next, so at 3072 × 500 weights this
    selects among ~3% of them: 0.5 ms instead of 12.
    """
    if values.device.type != "cpu":
        return values.kthvalue(k).values
    if guess is not None:
        array = values.numpy()
        at_most_guess = array[array <= guess]  # a copy
        if at_most_guess.size >= k:
            at_most_guess.partition(k - 1)
            return float(at_most_guess[k - 1])
    if work is None:
        return float(np.partition(values.numpy(), k - 1)[k - 1])
    selected = work.copy_(values).numpy()
    selected.partition(k - 1)
    return float(selected[k - 1])


def remaining_magnitude(weight: torch.Tensor, weight_mask: torch.Tensor) -> torch.Tensor:
    """|w| of the remaining synapses, in float32 or float64; a pruned one gets the largest float, so that
    it is never a candidate."""
    dtype = counting_dtype(weight)
    return weight.abs().to(dtype).add_(1 - weight_mask, alpha=torch.finfo(dtype).max)


def smallest(
    magnitude: torch.Tensor,
    n: int,
    out: torch.Tensor | None = None,
    work: torch.Tensor | None = None,
    cut: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """0/1 marks of the ``n`` smallest entries of the 1-D ``magnitude``, in ``out`` when given (``work``, of
    the same shape and dtype, is where the selection may run; ``cut``, the n-th smallest, when known).

    Exactly ``n`` are marked: entries equal to the n-th smallest value fill the places left by the
    strictly smaller ones, lowest index first. ``n`` < 1 marks nothing.
    """
    if n < 1:
        return torch.zeros_like(magnitude) if out is None else out.zero_()
    if cut is None:
        cut = _kth_smallest(magnitude, n, work)
    chosen = _at_most(magnitude, cut, out)
    if int(chosen.sum()) > n:  # ties at the cut
        below = magnitude < cut
        at_cut = magnitude == cut
        chosen.copy_(below | (at_cut & (at_cut.cumsum(0) <= n - below.sum())))
    return chosen


def count_and_prune(
    candidate_count: torch.Tensor,
    weight_mask: torch.Tensor,
    is_candidate: torch.Tensor,
    threshold: float,
    work: torch.Tensor | None = None,
) -> bool:
    """Algorithm 1, steps 8–10, in place; returns whether any synapse was pruned (``work``, a tensor shaped and
    typed as the count, holds the survivors when given).

    A count grows by 1 while its synapse is a candidate and returns to 0 when it is not; a synapse whose
    count exceeds the threshold p_c leaves the mask (P_w = P_w ∪ {w_i}), and its count returns to 0.
    """
    torch.addcmul(is_candidate, candidate_count, is_candidate, out=candidate_count)  # step 8: (count + 1)·[candidate]
    if float(candidate_count.amax()) <= threshold:  # step 9
        return False
    survives = _at_most(candidate_count, threshold, work)
    weight_mask.mul_(survives)  # step 10
    candidate_count.mul_(survives)
    return True


class BSP(WeightMethod):
    """Algorithm 1 of BSP on the weights it is attached to.

    Args:
        alpha, beta, mu: α, β and μ of eqs. (1)–(2).
        threshold_scale, sample_scale: A and B of eqs. (1)–(2).
        rate_form: eq. (1)'s denominator: ``plus_one`` (ln(β·N_sam/B)² + 1, as in eq. 2) or ``printed``.
        iteration: one iteration of Algorithm 1 is a ``batch`` (every optimiser step) or an ``epoch``
            (call :meth:`iterate` after its last step; the masks still apply after every step).
        candidates: ``global``, the floor(N_s·p_r) smallest |w| of all the weights together, or
            ``per_layer``, each weight's own floor(N_s·p_r) smallest (p_c stays the network's).
    """

    count_buffers = ("bsp_candidate_count",)

    def __init__(
        self,
        alpha: float = ALPHA,
        beta: float = BETA,
        mu: float = MU,
        threshold_scale: float = A,
        sample_scale: float = B,
        rate_form: str = "plus_one",
        iteration: str = "batch",
        candidates: str = "global",
    ):
        super().__init__()
        positive = {"alpha": alpha, "beta": beta, "threshold_scale": threshold_scale, "sample_scale": sample_scale}
        for key, value in positive.items():
            require(is_number(value) and value > 0, key, value, "a finite number > 0")
        require(is_number(mu) and mu >= 0, "mu", mu, "a finite number ≥ 0")
        require(rate_form in RATE_FORMS, "rate_form", rate_form, f"one of {list(RATE_FORMS)}")
        require(iteration in ITERATIONS, "iteration", iteration, f"one of {list(ITERATIONS)}")
        require(candidates in CANDIDATES, "candidates", candidates, f"one of {list(CANDIDATES)}")
        self.alpha, self.beta, self.mu = alpha, beta, mu
        self.threshold_scale, self.sample_scale = threshold_scale, sample_scale
        self.rate_form, self.iteration, self.candidates = rate_form, iteration, candidates
        self.n_synapses = self.n_neurons = self.n_samples = self.n_pruned = 0
        self.rate = self.threshold = math.nan
        # Per weight, what its mask implies (see ``mask_facts``), with the mask and its version it was read from.
        self._facts: dict[tuple[int, str], tuple[torch.Tensor, int | None, int, torch.Tensor | None]] = {}
        # Per set of candidates (``global``, or a weight), the last iteration's cut: the next one's guess.
        self._cuts: dict[Hashable, float | torch.Tensor] = {}

    def pruning_rate(self, n_neurons: int | None, n_samples: int | None) -> float:
        """Eq. (1) at N_neu = ``n_neurons`` and N_sam = ``n_samples``, which must give p_r < 1."""
        require(is_whole(n_neurons, minimum=1), "n_neurons", n_neurons, "N_neu of eqs. (1)-(2), an integer ≥ 1")
        require(
            is_whole(n_samples, minimum=1),
            "n_samples", n_samples, "N_sam of eqs. (1)-(2), the number of training samples, an integer ≥ 1",
        )
        rate = pruning_rate(n_neurons, n_samples, self.alpha, self.beta, self.sample_scale, self.rate_form)
        require(
            rate < 1, "alpha", self.alpha,
            f"a value giving p_r < 1 (eq. 1: p_r = {rate:.4g} at N_neu = {n_neurons}, N_sam = {n_samples})",
        )
        return rate

    # Algorithm 1, steps 1–2: the masks beside the weights, N, N_neu, N_sam, p_r and p_c.

    @torch.no_grad()
    def attach(self, weights: list[Weight], *, n_neurons: int | None, n_samples: int | None) -> None:
        """Registers the masks and counts, kept where a module already has them; computes p_r and p_c."""
        self.rate = self.pruning_rate(n_neurons, n_samples)  # eq. (1)
        super().attach(weights)
        for module, name in self.weights:
            weight = parameter(module, name)
            self.register(module, name, "bsp_mask", torch.ones_like(weight))
            self.register(module, name, "bsp_candidate_count", torch.zeros_like(weight, dtype=counting_dtype(weight)))
        self.n_synapses = sum(weight.numel() for weight in self.parameters())  # N
        self.n_neurons, self.n_samples = n_neurons, n_samples  # N_neu, N_sam
        self.recount()

    def masks(self, weights: list[Weight] | None = None) -> list[torch.Tensor]:
        return [self.state(module, name, "bsp_mask") for module, name in (self.weights if weights is None else weights)]

    def candidate_counts(self, weights: list[Weight] | None = None) -> list[torch.Tensor]:
        weights = self.weights if weights is None else weights
        return [self.state(module, name, "bsp_candidate_count") for module, name in weights]

    def mask_facts(self, module: nn.Module, name: str) -> tuple[int, torch.Tensor | None]:
        """The synapses a weight's mask keeps, and the penalty (1 − mask)·max that makes a pruned synapse's
        |w| the largest float (None when none is pruned: the mask is all ones). Read again only when the
        mask has changed (its version counter moves with every in-place write: a prune, a load_state_dict)."""
        mask = self.state(module, name, "bsp_mask")
        key = (id(module), name)
        seen = self._facts.get(key)
        version = None if mask.is_inference() else mask._version  # an inference tensor has no version counter
        if seen is None or seen[0] is not mask or version is None or seen[1] != version:
            remaining = count_ones(mask)
            penalty = None
            if remaining < mask.numel():  # (1 − mask)·max, as max − mask·max: 0 or max exactly
                dtype = counting_dtype(mask)
                penalty = self.scratch((key, "penalty"), mask, shape=(mask.numel(),), dtype=dtype)
                penalty.copy_(mask.reshape(-1)).mul_(-torch.finfo(dtype).max).add_(torch.finfo(dtype).max)
            seen = self._facts[key] = (mask, version, remaining, penalty)
        return seen[2], seen[3]

    def recount(self) -> None:
        """N_p from the masks, and p_c from N_p (eq. 2)."""
        self.n_pruned = self.n_synapses - sum(self.mask_facts(module, name)[0] for module, name in self.weights)
        self.threshold = count_threshold(
            self.n_synapses, self.n_pruned, self.n_neurons, self.n_samples,
            self.threshold_scale, self.mu, self.beta, self.sample_scale,
        )

    # Every step: eqs. (3)–(5); once per iteration, Algorithm 1 steps 6–13.

    def after_step(self, weights: list[Weight]) -> None:
        """After an optimiser step: an iteration (``iteration="batch"``), or the masks alone (``epoch``)."""
        if self.iteration == "batch":
            self.iterate(weights)
        else:
            self.apply_masks(weights)

    @torch.no_grad()
    def apply_masks(self, weights: list[Weight] | None = None) -> None:
        """Eqs. (4)–(5): w = p(w)·(w − η·∂E/∂w), after the optimiser's update."""
        weights = self.weights if weights is None else weights
        for (module, name), weight, mask in zip(weights, self.parameters(weights), self.masks(weights), strict=True):
            if self.mask_facts(module, name)[1] is not None:  # else the mask is all ones and w·1 is w
                weight.mul_(mask)

    def smallest(self, key: Hashable, magnitude: torch.Tensor, n: int) -> torch.Tensor:
        """:func:`smallest` of the candidates ``key`` (``global``, or a weight), in work tensors of this method,
        guessing the cut from the last iteration's."""
        out = self.scratch((key, "candidates"), magnitude)
        if n < 1:
            return smallest(magnitude, n, out)
        last_cut = self._cuts.get(key)
        guess = None if last_cut is None else last_cut * CUT_SLACK
        cut = self._cuts[key] = _kth_smallest(magnitude, n, self.scratch((key, "selection"), magnitude), guess)
        return smallest(magnitude, n, out, cut=cut)

    @torch.no_grad()
    def iterate(self, weights: list[Weight] | None = None) -> None:
        """Algorithm 1, steps 6–13, on the weights the optimiser step left (all, or ``weights``)."""
        weights = self.weights if weights is None else weights
        masks = self.masks(weights)
        counts = self.candidate_counts(weights)
        facts = [self.mask_facts(module, name) for module, name in weights]
        remaining = [n_remaining for n_remaining, _ in facts]
        parameters = self.parameters(weights)
        # |w| of the remaining synapses (remaining_magnitude), each weight's in one flat tensor when they
        # share a dtype: the global candidates' concatenation without a copy
        dtypes = {counting_dtype(weight) for weight in parameters}
        flat = None
        if len(dtypes) == 1:
            total = sum(w.numel() for w in parameters)
            flat = self.scratch("magnitudes", parameters[0], shape=(total,), dtype=dtypes.pop())
        magnitudes, start = [], 0
        for weight, (_, penalty) in zip(parameters, facts, strict=True):
            if flat is None:
                magnitude = weight.abs().to(counting_dtype(weight)).reshape(-1)
            else:
                magnitude = flat[start : start + weight.numel()]
                if weight.dtype == magnitude.dtype:
                    torch.abs(weight.reshape(-1), out=magnitude)
                else:  # a half-precision weight: |w| is exact in float32 either way
                    magnitude.copy_(weight.reshape(-1)).abs_()
                start += weight.numel()
            magnitudes.append(magnitude if penalty is None else magnitude.add_(penalty))
        if self.candidates == "global":  # step 6: the N_c = floor(N_s·p_r) smallest remaining |w|
            every = flat if flat is not None else torch.cat(magnitudes)
            chosen = self.smallest("global", every, math.floor(sum(remaining) * self.rate))
            is_candidate = chosen.split([magnitude.numel() for magnitude in magnitudes])
        else:
            is_candidate = [
                self.smallest((id(module), name), magnitude, math.floor(n_remaining * self.rate))
                for (module, name), magnitude, n_remaining in zip(weights, magnitudes, remaining, strict=True)
            ]
        pruned = [  # steps 7–12
            count_and_prune(count, mask, chosen.reshape(count.shape), self.threshold,
                            work=self.scratch((id(module), name, "survives"), count))
            for (module, name), count, mask, chosen in zip(weights, counts, masks, is_candidate, strict=True)
        ]
        self.apply_masks(weights)  # step 13, and eq. (4) for the synapses pruned before
        if any(pruned):
            self.recount()
