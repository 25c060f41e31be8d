"""BSP: brain-inspired synaptic pruning (Zhao & Zeng 2021, section 3, eqs. 1–5 and Algorithm 1).

Each iteration the remaining synapses with the smallest |w| are candidates for pruning; a synapse
that has been a candidate more than p_c times in a row is pruned for good.

Masks sit beside the weights as buffers, in the spirit of ``torch.nn.utils.prune``: every pruned
``nn.Linear`` gets ``weight_mask`` (1 remaining, 0 pruned) and ``candidate_count`` (step 8's count of
consecutive candidacies). As buffers they travel in the model's state_dict, so a run resumed with
``trainer.fit(ckpt_path=...)`` gets them back. Rather than prune's forward pre-hook, which rebuilds
``weight = weight_orig * mask`` through autograd in every forward pass (evaluation too), the weight stays
a plain parameter and is multiplied by its mask after every optimizer step: one in-place product per
step, and the optimizer, checkpoints and histograms see the usual ``weight``. A pruned weight is then 0
in every forward pass whatever momentum, weight decay or Adam state add to it (eq. 4), for any optimizer
that updates each entry from its own gradient and state, as SGD and Adam do. Gradients are left as they
are: such an optimizer's update of a pruned entry is undone by the mask, and nothing else reads them
(gradient-norm clipping would count them; devnets does not clip).

Masks, counts and candidate marks are 0/1 or whole numbers in the weight's dtype (counts are exact up
to 2^24 iterations in float32): they multiply the weights directly, and on the CPU a comparison that
writes floats (``_at_most``) is several times faster than one that writes bools.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from devnets.callbacks.weight_histograms import add_histograms, is_due
from devnets.epoch_logging import log_epoch_metrics
from devnets.errors import is_number, is_whole, require

# The constants of eqs. (1) and (2), "carefully defined based on our experience" (section 3).
ALPHA, BETA, MU, A, B = 0.048, 50, 146, 1244, 60_000
RATE_FORMS = ("plus_one", "printed")
ITERATIONS = ("batch", "epoch")
CANDIDATES = ("global", "per_layer")
LAYERS = ("all", "hidden")


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


def _at_most(values: torch.Tensor, cut) -> torch.Tensor:
    """values ≤ cut, as 0/1 in the dtype of ``values``."""
    return torch.le(values, cut, out=torch.empty_like(values))


def _kth_smallest(values: torch.Tensor, k: int):
    """The k-th smallest of the 1-D ``values`` (k from 1): one selection, no sort.

    On the CPU NumPy's introselect, several times faster there than ``torch.kthvalue`` (torch 2.14).
    """
    if values.device.type == "cpu":
        return float(np.partition(values.numpy(), k - 1)[k - 1])
    return values.kthvalue(k).values


def remaining_magnitude(weight: torch.Tensor, weight_mask: torch.Tensor) -> torch.Tensor:
    """|w| of the remaining synapses; a pruned one gets the largest float, so that it is never a candidate."""
    return weight.abs().add_(1 - weight_mask, alpha=torch.finfo(weight.dtype).max)


def smallest(magnitude: torch.Tensor, n: int) -> torch.Tensor:
    """0/1 marks of the ``n`` smallest entries of the 1-D ``magnitude``.

    Exactly ``n`` are marked: entries equal to the n-th smallest value fill the places left by the
    strictly smaller ones, lowest index first. ``n`` < 1 marks nothing.
    """
    if n < 1:
        return torch.zeros_like(magnitude)
    cut = _kth_smallest(magnitude, n)
    chosen = _at_most(magnitude, cut)
    if int(chosen.sum()) > n:  # ties at the cut
        below = magnitude < cut
        at_cut = magnitude == cut
        chosen = (below | (at_cut & (at_cut.cumsum(0) <= n - below.sum()))).to(magnitude.dtype)
    return chosen


def count_and_prune(
    candidate_count: torch.Tensor, weight_mask: torch.Tensor, is_candidate: torch.Tensor, threshold: float
) -> bool:
    """Algorithm 1, steps 8–10, in place; returns whether any synapse was pruned.

    A count grows by 1 while its synapse is a candidate and returns to 0 when it is not; a synapse whose
    count exceeds the threshold p_c leaves the mask (P_w = P_w ∪ {w_i}), and its count returns to 0.
    """
    torch.addcmul(is_candidate, candidate_count, is_candidate, out=candidate_count)  # step 8: (count + 1)·[candidate]
    if float(candidate_count.amax()) <= threshold:  # step 9
        return False
    survives = _at_most(candidate_count, threshold)
    weight_mask.mul_(survives)  # step 10
    candidate_count.mul_(survives)
    return True


class SynapticPruning(Callback):
    """Prunes the weights of a model's ``nn.Linear`` layers by BSP while it trains.

    Args:
        alpha, beta, mu: α, β and μ of eqs. (1)–(2).
        threshold_scale, sample_scale: A and B of eqs. (1)–(2).
        rate_form: eq. (1)'s denominator: ``plus_one`` (ln(β·N_sam/B)² + 1, as in eq. 2) or ``printed``.
        iteration: one iteration of Algorithm 1 is a ``batch`` (every optimizer step) or an ``epoch``
            (after its last step).
        candidates: ``global``, the floor(N_s·p_r) smallest |w| of all pruned layers together, or
            ``per_layer``, each layer's own floor(N_s·p_r) smallest (p_c stays the network's).
        layers: ``all`` the ``nn.Linear`` layers, or ``hidden``: the first one (input -> hidden) only.
            N and N_p count the synapses of these layers.
        n_neurons: N_neu; None: the first ``nn.Linear``'s ``out_features``.
        n_samples: N_sam; None: the datamodule's ``n_train``.
        histogram_every_n_epochs: TensorBoard histograms of the remaining weights and of their counts.
    """

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
        layers: str = "all",
        n_neurons: int | None = None,
        n_samples: int | None = None,
        histogram_every_n_epochs: int = 25,
    ):
        positive = {"alpha": alpha, "beta": beta, "threshold_scale": threshold_scale, "sample_scale": sample_scale}
        for key, value in positive.items():
            require(is_number(value) and value > 0, key, value, "a finite number > 0")
        require(is_number(mu) and mu >= 0, "mu", mu, "a finite number ≥ 0")
        require(rate_form in RATE_FORMS, "rate_form", rate_form, f"one of {list(RATE_FORMS)}")
        require(iteration in ITERATIONS, "iteration", iteration, f"one of {list(ITERATIONS)}")
        require(candidates in CANDIDATES, "candidates", candidates, f"one of {list(CANDIDATES)}")
        require(layers in LAYERS, "layers", layers, f"one of {list(LAYERS)}")
        for key, value in (("n_neurons", n_neurons), ("n_samples", n_samples)):
            require(value is None or is_whole(value, minimum=1), key, value, "null or an integer ≥ 1")
        require(
            is_whole(histogram_every_n_epochs),
            "histogram_every_n_epochs", histogram_every_n_epochs, "an integer ≥ 0 (0: never)",
        )
        self.alpha, self.beta, self.mu = alpha, beta, mu
        self.threshold_scale, self.sample_scale = threshold_scale, sample_scale
        self.rate_form, self.iteration = rate_form, iteration
        self.candidates, self.layers = candidates, layers
        self._n_neurons, self._n_samples = n_neurons, n_samples
        self.histogram_every_n_epochs = histogram_every_n_epochs
        if n_neurons is not None and n_samples is not None:  # refuse a bad eq. (1) before any data is read
            self._pruning_rate(n_neurons, n_samples)
        self.model: nn.Module | None = None
        self.pruned_layers: dict[str, nn.Linear] = {}
        self.n_synapses = self.n_neurons = self.n_samples = self.n_pruned = 0
        self.rate = self.threshold = math.nan
        self.first_pruning_epoch: int | None = None

    def _pruning_rate(self, n_neurons: int, n_samples: int) -> float:
        rate = pruning_rate(n_neurons, n_samples, self.alpha, self.beta, self.sample_scale, self.rate_form)
        require(
            rate < 1, "alpha", self.alpha,
            f"a value giving p_r < 1 (eq. 1: p_r = {rate:.4g} at N_neu = {n_neurons}, N_sam = {n_samples})",
        )
        return rate

    # Algorithm 1, steps 1–2: the masks beside the weights, N, N_neu, N_sam, p_r and p_c.

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        n_samples = self._n_samples or getattr(trainer.datamodule, "n_train", None)
        require(n_samples is not None, "n_samples", n_samples, "the number of training samples")
        self.attach(pl_module, n_samples)

    def attach(self, model: nn.Module, n_samples: int) -> None:
        """Registers ``weight_mask`` and ``candidate_count`` on the layers to prune, once; computes p_r, p_c."""
        linears = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        require(bool(linears), "layers", self.layers, "a model with at least one nn.Linear to prune")
        names = list(linears) if self.layers == "all" else list(linears)[:1]
        self.model = model
        self.pruned_layers = {name: linears[name] for name in names}
        for layer in self.pruned_layers.values():
            if not hasattr(layer, "weight_mask"):  # a second fit keeps the pruning done so far
                layer.register_buffer("weight_mask", torch.ones_like(layer.weight))
                layer.register_buffer("candidate_count", torch.zeros_like(layer.weight))
        self.n_synapses = sum(layer.weight.numel() for layer in self.pruned_layers.values())  # N
        self.n_neurons = self._n_neurons or next(iter(linears.values())).out_features  # N_neu
        self.n_samples = n_samples  # N_sam
        self.rate = self._pruning_rate(self.n_neurons, n_samples)  # eq. (1)
        self._count_pruned()

    def _count_pruned(self) -> None:
        """N_p from the masks, and p_c from N_p (eq. 2)."""
        self.n_pruned = self.n_synapses - sum(int(layer.weight_mask.sum()) for layer in self.pruned_layers.values())
        self.threshold = count_threshold(
            self.n_synapses, self.n_pruned, self.n_neurons, self.n_samples,
            self.threshold_scale, self.mu, self.beta, self.sample_scale,
        )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._count_pruned()  # the masks a resumed run restored after setup

    # Every step: eqs. (3)–(5); once per iteration, Algorithm 1 steps 6–13.

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self.iteration == "batch" or batch_idx + 1 == trainer.num_training_batches:
            self.prune_iteration()
            if self.first_pruning_epoch is None and self.n_pruned > 0:
                self.first_pruning_epoch = trainer.current_epoch + 1
        else:
            self.apply_masks()

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Eqs. (4)–(5): w = p(w)·(w − η·∂E/∂w), after the optimizer's update."""
        for layer in self.pruned_layers.values():
            layer.weight.mul_(layer.weight_mask)

    @torch.no_grad()
    def prune_iteration(self) -> None:
        """Algorithm 1, steps 6–13, on the weights the optimizer step left."""
        layers = self.pruned_layers.values()
        magnitudes = [remaining_magnitude(layer.weight, layer.weight_mask).view(-1) for layer in layers]
        if self.candidates == "global":  # step 6: the N_c = floor(N_s·p_r) smallest remaining |w|
            n_candidates = math.floor((self.n_synapses - self.n_pruned) * self.rate)
            chosen = smallest(torch.cat(magnitudes), n_candidates)
            is_candidate = chosen.split([magnitude.numel() for magnitude in magnitudes])
        else:
            is_candidate = [
                smallest(magnitude, math.floor(int(layer.weight_mask.sum()) * self.rate))
                for layer, magnitude in zip(layers, magnitudes, strict=True)
            ]
        pruned = [  # steps 7–12
            count_and_prune(layer.candidate_count, layer.weight_mask, chosen.view_as(layer.weight), self.threshold)
            for layer, chosen in zip(layers, is_candidate, strict=True)
        ]
        self.apply_masks()  # step 13, and eq. (4) for the synapses pruned before
        if any(pruned):
            self._count_pruned()

    # Reporting: per epoch to the loggers, at the end to metrics.json.

    def pruned_fractions(self) -> dict[str, float]:
        layers = self.pruned_layers.items()
        return {name: 1 - layer.weight_mask.mean().item() for name, layer in layers}

    def compression(self, whole_network: bool = True) -> float:
        """Section 4's network compression: the fraction of zero weights among all connections.

        ``whole_network``: of every weight matrix of the model, as the paper counts; else of the pruned layers.
        """
        if whole_network:
            weights = [parameter for parameter in self.model.parameters() if parameter.ndim > 1]
        else:
            weights = [layer.weight for layer in self.pruned_layers.values()]
        zeros = sum(int((weight == 0).sum()) for weight in weights)
        return zeros / sum(weight.numel() for weight in weights)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        statistics = {
            "bsp/pruning_rate": self.rate,
            "bsp/count_threshold": self.threshold,
            "bsp/pruned": self.n_pruned,
            "bsp/compression": self.compression(),
        }
        fractions = {f"bsp/pruned_fraction/{name}": value for name, value in self.pruned_fractions().items()}
        log_epoch_metrics(trainer, statistics | fractions)
        if is_due(trainer, self.histogram_every_n_epochs):
            histograms = {}
            for name, layer in self.pruned_layers.items():
                remaining = layer.weight_mask.bool()
                histograms[f"bsp/remaining_weights/{name}"] = layer.weight[remaining]
                histograms[f"bsp/candidate_count/{name}"] = layer.candidate_count[remaining]
            add_histograms(trainer, histograms)

    def summary(self) -> dict:
        """What metrics.json records under ``method_stats``.

        ``compression`` is the paper's, over every weight matrix of the model; ``compression_pruned_layers``
        is over the layers BSP prunes (the same unless ``layers`` is hidden).
        """
        return {
            "compression": self.compression(),
            "compression_pruned_layers": self.compression(whole_network=False),
            "synapses": self.n_synapses,
            "pruned": self.n_pruned,
            "pruning_rate": self.rate,
            "count_threshold": self.threshold,
            "first_pruning_epoch": self.first_pruning_epoch,
            "pruned_fraction": self.pruned_fractions(),
        }

    # Checkpoints: the masks and counts are the model's buffers; this is the rest.

    def state_dict(self) -> dict:
        return {"first_pruning_epoch": self.first_pruning_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.first_pruning_epoch = state_dict["first_pruning_epoch"]
