"""Both methods beyond the papers' MLP: a Conv2d weight, gradient accumulation and manual optimisation,
a plain PyTorch loop, several optimisers, torch.nn.utils.prune, bfloat16/float16/float64 weights and bad input;
the tensor tests on each device (the conftest's ``device``).

Values are worked by hand. BDNN-dsd: R_i = 0.5, R_d = 0.25. BSP: N_neu = 2 and N_sam = 1200
(β·N_sam/B = 1), α = 0.6/ln 2 (p_r = 0.6: floor(4·0.6) = 2 candidates among 4 weights), μ = 0 and A = 2,
so p_c = 2^(N/(N−N_p)) is 2 at the start. Every value is exact in bfloat16.
"""

import math

import lightning as L
import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

from devnets.callbacks.bound_mask import BoundMask
from devnets.callbacks.synaptic_pruning import SynapticPruning
from devnets.errors import InvalidSetting
from devnets.methods.bdnn_dsd import BDNNDsd
from devnets.methods.bsp import BSP
from devnets.methods.weights import select_weights

BDNN = {"initial_bound": 0.5, "bound_step": 0.25}
BSP_SETTINGS = {"alpha": 0.6 / math.log(2), "mu": 0, "threshold_scale": 2}
BSP_SIZES = {"n_neurons": 2, "n_samples": 1200}
FOUR = [0.125, -0.25, 0.375, 0.5]  # BSP's candidates: the first two


def linear(weights, dtype=torch.float32, device="cpu") -> nn.Linear:
    layer = nn.Linear(len(weights), 1, bias=False, dtype=dtype, device=device)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weights]))
    return layer


def conv(weights, device="cpu") -> nn.Conv2d:
    layer = nn.Conv2d(1, 1, kernel_size=2, bias=False, device=device)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weights).view(1, 1, 2, 2))
    return layer


def push(optimizer, model, by, steps):
    """``steps`` SGD steps (lr 1) on the loss -by·Σw: each adds ``by`` to every weight."""
    for _ in range(steps):
        optimizer.zero_grad()
        (-by * sum(weight.sum() for weight in model.parameters())).backward()
        optimizer.step()


def test_bdnn_dsd_on_a_conv2d_weight(device):
    model = nn.Sequential(conv([0.25, 0.25, 0.25, 0.25], device))
    bounds = BDNNDsd(**BDNN, count_threshold=1)
    bounds.attach(select_weights(model))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -1.0, 0.125, 0.25]).view(1, 1, 2, 2))
    bounds.update()
    # |w| > 0.5 at 0 and 1: M + R_d; |w| < |w(t-1)| = 0.25 at 2: M - R_d; then the clip (eq. 3.3)
    assert model[0].weight_bdnn_bound.flatten().tolist() == [0.75, 0.75, 0.25, 0.5]
    assert model[0].weight.flatten().tolist() == [0.75, -0.75, 0.125, 0.25]


def test_bsp_on_a_conv2d_weight(device):
    model = nn.Sequential(conv([0.125, 0.375, -0.25, 0.5], device))
    pruning = BSP(**BSP_SETTINGS)
    pruning.attach(select_weights(model), **BSP_SIZES)
    counts = []
    for _ in range(3):
        pruning.iterate()
        counts.append(model[0].weight_bsp_candidate_count.flatten().tolist())
    assert counts == [[1, 0, 1, 0], [2, 0, 2, 0], [0, 0, 0, 0]]  # 3 > p_c = 2: pruned
    assert model[0].weight_bsp_mask.flatten().tolist() == [0, 1, 0, 1]
    assert model[0].weight.flatten().tolist() == [0, 0.375, 0, 0.5]
    assert (pruning.n_pruned, pruning.threshold) == (2, 4)  # p_c = 2^(4/2)


def test_bdnn_dsd_in_a_plain_loop_advances_per_optimizer_step_until_unhooked(device):
    model = nn.Sequential(linear([0.375, 0.0], device=device))
    bounds = BDNNDsd(**BDNN, count_threshold=2)
    bounds.attach(select_weights(model))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    bounds.hook(optimizer)
    push(optimizer, model, 0.25, steps=2)
    # step 1: w = [0.625, 0.25], Num+ = [1, 0], clipped to [0.5, 0.25]; step 2: w = [0.75, 0.5],
    # Num+ = [2, 0] ≥ T_num: M = [0.75, 0.5], and nothing left to clip
    assert model[0].weight_bdnn_bound.tolist() == [[0.75, 0.5]]
    assert model[0].weight.tolist() == [[0.75, 0.5]]
    bounds.unhook()
    push(optimizer, model, 0.25, steps=1)
    assert model[0].weight.tolist() == [[1.0, 0.75]]  # no longer bounded


def test_bsp_in_a_plain_loop_with_two_optimizers_advances_each_ones_weights(device):
    model = nn.Sequential(linear(FOUR, device=device), linear(FOUR, device=device))
    pruning = BSP(**BSP_SETTINGS)
    pruning.attach(select_weights(model), **BSP_SIZES)
    first = torch.optim.SGD(model[0].parameters(), lr=1.0)
    second = torch.optim.SGD(model[1].parameters(), lr=1.0)
    pruning.hook(first, second)
    push(first, model[0], 0.0, steps=2)
    push(second, model[1], 0.0, steps=1)
    # each step: the floor(4·0.6) = 2 smallest of the weights that optimiser updates
    assert model[0].weight_bsp_candidate_count.tolist() == [[2, 2, 0, 0]]
    assert model[1].weight_bsp_candidate_count.tolist() == [[1, 1, 0, 0]]
    push(first, model[0], 0.0, steps=1)  # 3 > p_c = 2^(8/8) = 2
    assert model[0].weight.tolist() == [[0, 0, 0.375, 0.5]]
    assert pruning.n_pruned == 2


class Pushed(L.LightningModule):
    """One Linear whose loss, -push·Σw, makes each SGD step (lr 1) add ``push`` to every weight."""

    def __init__(self, weights, push):
        super().__init__()
        self.layer, self.push = linear(weights), push

    def training_step(self, batch, batch_idx):
        return -self.push * self.layer.weight.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


class ManuallyStepped(Pushed):
    """Manual optimisation that steps the optimiser after every second batch."""

    def __init__(self, weights, push):
        super().__init__(weights, push)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        self.manual_backward(super().training_step(batch, batch_idx))
        if batch_idx % 2 == 1:
            optimizer.step()
            optimizer.zero_grad()


def fit_with_accumulation(model, callback, device, accumulate=2):
    """One epoch of 4 batches with accumulate_grad_batches=2 (or manual steps every second batch):
    2 optimiser steps."""
    trainer = L.Trainer(
        max_epochs=1, accumulate_grad_batches=accumulate, callbacks=[callback], accelerator=device.type, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=1))
    assert trainer.global_step == 2


def test_bdnn_dsd_under_gradient_accumulation_steps_once_per_optimizer_step(device):
    model = Pushed([0.375, 0.0], push=0.25)
    callback = BoundMask(**BDNN, count_threshold=2)
    fit_with_accumulation(model, callback, device)
    # as in the plain loop after 2 steps; 4 (one per batch) would give M = [1.0, 0.75]
    assert model.layer.weight_bdnn_bound.tolist() == [[0.75, 0.5]]
    assert model.layer.weight.tolist() == [[0.75, 0.5]]
    assert callback.bounds.hooks == []  # removed at teardown


@pytest.mark.parametrize(("module", "accumulate"), [(Pushed, 2), (ManuallyStepped, 1)], ids=["accumulate", "manual"])
def test_bsp_under_gradient_accumulation_iterates_once_per_optimizer_step(module, accumulate, device):
    model = module(FOUR, push=0.0)
    callback = SynapticPruning(**BSP_SETTINGS, **BSP_SIZES, histogram_every_n_epochs=0)
    fit_with_accumulation(model, callback, device, accumulate)
    # 2 iterations: counts 2, not above p_c = 2; 4 (one per batch) would have pruned at the third
    assert model.layer.weight_bsp_candidate_count.tolist() == [[2, 2, 0, 0]]
    assert model.layer.weight_bsp_mask.tolist() == [[1, 1, 1, 1]]
    assert callback.summary()["pruned"] == 0


def test_bsp_beside_torch_prune_acts_on_weight_orig(device):
    layer = linear(FOUR, device=device)
    prune.custom_from_mask(layer, "weight", torch.tensor([[1.0, 1, 1, 0]], device=device))
    pruning = BSP(**BSP_SETTINGS)
    pruning.attach([(layer, "weight")], **BSP_SIZES)
    for _ in range(3):
        pruning.iterate()
    assert layer.weight_bsp_mask.tolist() == [[0, 0, 1, 1]]
    assert layer.weight_orig.tolist() == [[0, 0, 0.375, 0.5]]
    layer(torch.zeros(1, 4, device=device))  # torch's forward pre-hook: weight = weight_orig · weight_mask
    assert layer.weight.tolist() == [[0, 0, 0.375, 0]]
    assert {"weight_orig", "weight_mask", "weight_bsp_mask", "weight_bsp_candidate_count"} == set(layer.state_dict())


def test_bdnn_dsd_keeps_working_when_torch_prunes_its_weight_later(device):
    layer = linear([0.25, 0.25], device=device)
    bounds = BDNNDsd(**BDNN, count_threshold=10)
    bounds.attach([(layer, "weight")])
    prune.custom_from_mask(layer, "weight", torch.tensor([[0.0, 1]], device=device))
    with torch.no_grad():
        layer.weight_orig.copy_(torch.tensor([[1.0, -1.0]]))
    bounds.update()
    assert layer.weight_orig.tolist() == [[0.5, -0.5]]  # clipped: the parameter the optimiser updates
    layer(torch.zeros(1, 2, device=device))
    assert layer.weight.tolist() == [[0, -0.5]]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_both_methods_on_other_float_dtypes(dtype, device):
    layer = linear([1.0, 0.125], dtype, device)
    bounds = BDNNDsd(**BDNN, count_threshold=1)
    bounds.attach([(layer, "weight")])
    bounds.update()  # exceeds at 0: M = 0.75, clipped to 0.75; 0.125 stays
    assert layer.weight.dtype == layer.weight_bdnn_bound.dtype == dtype
    assert layer.weight_bdnn_exceed_count.dtype == torch.promote_types(dtype, torch.float32)
    assert layer.weight_bdnn_bound.tolist() == [[0.75, 0.5]] and layer.weight.tolist() == [[0.75, 0.125]]

    layer = linear(FOUR, dtype, device)
    pruning = BSP(**BSP_SETTINGS)
    pruning.attach([(layer, "weight")], **BSP_SIZES)
    for _ in range(3):
        pruning.iterate()
    assert layer.weight_bsp_mask.dtype == dtype
    assert layer.weight_bsp_candidate_count.dtype == torch.promote_types(dtype, torch.float32)
    assert layer.weight.tolist() == [[0, 0, 0.375, 0.5]]


@pytest.mark.parametrize("method", [BDNNDsd(**BDNN), BSP(**BSP_SETTINGS)], ids=["bdnn_dsd", "bsp"])
def test_counts_cast_to_bfloat16_come_back_exact_from_the_saved_state(method):
    model = nn.Sequential(linear(FOUR))
    method.attach(select_weights(model), **({"n_neurons": 2, "n_samples": 1200} if isinstance(method, BSP) else {}))
    count = next(what for what in method.count_buffers if hasattr(model[0], f"weight_{what}"))
    getattr(model[0], f"weight_{count}").fill_(257)
    saved = {key: value.clone() for key, value in model.state_dict().items()}
    model.to(torch.bfloat16)  # what Lightning's bf16-true precision does after setup: 257 becomes 256
    assert getattr(model[0], f"weight_{count}").tolist() == [[256] * 4]
    method.keep_counts_exact(model, saved)
    assert getattr(model[0], f"weight_{count}").dtype == torch.float32
    assert getattr(model[0], f"weight_{count}").tolist() == [[257] * 4]
    assert model[0].weight.dtype == torch.bfloat16


def test_under_lightning_bf16_true_the_counts_stay_float32_and_bsp_still_prunes(device):
    model = Pushed(FOUR, push=0.0)
    bounds = BoundMask(**BDNN, count_threshold=10)
    pruning = SynapticPruning(**BSP_SETTINGS, **BSP_SIZES, histogram_every_n_epochs=0)
    trainer = L.Trainer(
        max_epochs=1, precision="bf16-true", callbacks=[bounds, pruning], accelerator=device.type, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(TensorDataset(torch.zeros(3, 1)), batch_size=1))
    layer = model.layer
    assert layer.weight.dtype == layer.weight_bdnn_bound.dtype == layer.weight_bsp_mask.dtype == torch.bfloat16
    assert layer.weight_bdnn_decay_count.dtype == layer.weight_bsp_candidate_count.dtype == torch.float32
    assert layer.weight.tolist() == [[0, 0, 0.375, 0.5]]  # 3 iterations: counts 3 > p_c = 2


def test_default_selection_takes_linear_and_conv_weights_only():
    model = nn.Sequential(conv(FOUR), nn.BatchNorm2d(1), nn.Flatten(), nn.LayerNorm(1), linear([0.5]))
    assert select_weights(model) == [(model[0], "weight"), (model[4], "weight")]
    assert select_weights(model, "hidden") == [(model[4], "weight")]
    assert select_weights(model, ["[0-9]"]) == [(model[0], "weight"), (model[4], "weight")]
    assert select_weights(model, ["4"]) == [(model[4], "weight")]
    assert select_weights(model, [(model[1], "bias")]) == [(model[1], "bias")]


def int_weight_model() -> nn.Module:
    layer = nn.Linear(2, 1)
    layer.weight = nn.Parameter(torch.zeros(1, 2, dtype=torch.int64), requires_grad=False)
    return nn.Sequential(layer)


@pytest.mark.parametrize(
    ("make_error", "message"),
    [
        (lambda: BDNNDsd().attach([]), "parameters=[] is not allowed: at least one (module, name) pair"),
        (
            lambda: select_weights(nn.Sequential(nn.ReLU(), nn.LayerNorm(3))),
            "layers='all' is not allowed: a model with an nn.Linear or nn.Conv1d/2d/3d; the model has "
            "0 (ReLU), 1 (LayerNorm)",
        ),
        (
            lambda: BoundMask(layers=["net.9"]).setup(None, nn.Sequential(nn.Linear(2, 1)), "fit"),
            "layers=['net.9'] is not allowed: patterns that each match an nn.Linear or nn.Conv1d/2d/3d; the model "
            "has 0 (Linear)",
        ),
        (
            lambda: BDNNDsd().attach(select_weights(int_weight_model())),
            "parameters='Linear.weight' is not allowed: a floating-point nn.Parameter (found torch.int64)",
        ),
        (
            lambda: SynapticPruning(n_neurons=2).attach(nn.Sequential(nn.Linear(2, 1)), n_samples=None),
            "n_samples=None is not allowed: N_sam of eqs. (1)-(2), the number of training samples",
        ),
        (
            lambda: SynapticPruning(n_samples=1200).attach(nn.Sequential(nn.Linear(2, 1)), n_samples=1200),
            "n_neurons=None is not allowed: N_neu of eqs. (1)-(2), an integer ≥ 1",
        ),
        (lambda: BoundMask(layers=[]), "layers=[] is not allowed: one of ['all', 'hidden'], a list of"),
    ],
    ids=["no-weights", "no-linear-or-conv", "missing-module", "int-weight", "no-n-samples", "no-n-neurons", "empty"],
)
def test_bad_input_is_a_one_line_error(make_error, message):
    with pytest.raises(InvalidSetting) as error:
        make_error()
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


FORMER_NAMES = {  # the buffers' names before they were set apart from torch.nn.utils.prune's
    "bdnn_dsd": {f"weight_bdnn_{what}": f"weight_{what}" for what in ("bound", "exceed_count", "decay_count")}
    | {"weight_bdnn_previous_magnitude": "weight_previous_magnitude"},
    "bsp": {"weight_bsp_mask": "weight_mask", "weight_bsp_candidate_count": "candidate_count"},
}


@pytest.mark.parametrize(
    ("method", "callback"),
    [("bdnn_dsd", lambda: BoundMask()), ("bsp", lambda: SynapticPruning(**BSP_SIZES))],
)
def test_a_checkpoint_with_the_former_buffer_names_loads_into_the_new_ones(method, callback):
    model = nn.Sequential(linear(FOUR))
    callback().setup(None, model, "fit")
    names = FORMER_NAMES[method]
    former = {f"0.{names.get(key[2:], key[2:])}": value + 1 for key, value in model.state_dict().items()}
    model.load_state_dict(former)
    for key, value in model.state_dict().items():
        assert torch.equal(value, former[f"0.{names.get(key[2:], key[2:])}"]), key


def test_a_mask_loaded_after_the_first_steps_is_applied_at_the_next(device):
    """BSP keeps what each mask implies until the mask changes: a load_state_dict changes it."""
    layer = linear(FOUR, device=device)
    pruning = BSP(**BSP_SETTINGS)
    pruning.attach([(layer, "weight")], **BSP_SIZES)
    pruning.apply_masks()  # every synapse remains: nothing to multiply
    state = layer.state_dict()
    state["weight_bsp_mask"] = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    layer.load_state_dict(state)
    pruning.apply_masks()
    assert layer.weight.tolist() == [[FOUR[0], 0, FOUR[2], 0]]
    pruning.recount()
    assert pruning.n_pruned == 2


def test_a_bound_below_the_rounding_is_zero_after_the_first_time_step(device):
    """Bounds are rounded to 0 below ROUNDING·R_d at the first step even when none moves (later steps
    round only where a bound has moved)."""
    layer = linear([0.0, 0.0], device=device)
    bounds = BDNNDsd(initial_bound=1e-5, bound_step=0.25)
    bounds.attach([(layer, "weight")])
    bounds.update()
    assert layer.weight_bdnn_bound.tolist() == [[0.0, 0.0]]
