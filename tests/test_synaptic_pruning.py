"""BSP (devnets.methods.bsp, and its callback devnets.callbacks.synaptic_pruning): eqs. (1)-(2) by hand,
Algorithm 1 on hand-made |w| on each device (the conftest's ``device``), and runs."""

import math

import pytest
import torch
from torch import nn

from devnets.callbacks.synaptic_pruning import SynapticPruning
from devnets.errors import InvalidSetting
from devnets.methods.bsp import count_and_prune, count_threshold, pruning_rate, remaining_magnitude, smallest
from devnets.train import build, make_trainer, run_record

ALPHA, BETA, MU, A, B = 0.048, 50, 146, 1244, 60_000
MLP_SYNAPSES = {10: 784 * 10 + 10 * 10, 100: 784 * 100 + 100 * 10, 500: 784 * 500 + 500 * 10}


@pytest.mark.parametrize(
    ("n_neurons", "n_samples", "pruned_fraction"),
    [(10, 1200, 0), (100, 1200, 0), (100, 60000, 0), (500, 60000, 0), (100, 1200, 0.5), (500, 60000, 0.75)],
)
def test_eq1_and_eq2_match_the_hand_computation(n_neurons, n_samples, pruned_fraction):
    n_synapses = MLP_SYNAPSES[n_neurons]
    n_pruned = int(n_synapses * pruned_fraction)
    log_squared = math.log(BETA * n_samples / B) ** 2
    assert pruning_rate(n_neurons, n_samples) == pytest.approx(ALPHA * math.log(n_neurons) / (log_squared + 1))
    threshold = 2 ** (n_synapses / (n_synapses - n_pruned)) * A / (n_neurons + MU) * (log_squared + 1)
    assert count_threshold(n_synapses, n_pruned, n_neurons, n_samples) == pytest.approx(threshold)
    if n_samples == 60000:
        printed = pruning_rate(n_neurons, n_samples, rate_form="printed")
        assert printed == pytest.approx(ALPHA * math.log(n_neurons) / log_squared)


def test_the_quoted_values():
    """The issue's "p_c ≈ 165 at the start" (60,000 samples, 100 hidden); 1200 samples: ln(1)² = 0."""
    assert count_threshold(79400, 0, 100, 60000) == pytest.approx(164.9, abs=0.05)
    assert count_threshold(79400, 0, 100, 1200) == pytest.approx(2 * 1244 / 246)
    assert pruning_rate(100, 1200) == pytest.approx(0.048 * math.log(100))
    with pytest.raises(InvalidSetting, match=r"^rate_form='printed' is not allowed: plus_one at N_sam = 1200 \(eq"):
        pruning_rate(100, 1200, rate_form="printed")


def test_smallest_marks_exactly_n_and_breaks_ties_by_lowest_index(device):
    magnitude = torch.tensor([0.3, 0.1, 0.2, 0.1, 0.5, 0.1], device=device)
    assert smallest(magnitude, 2).tolist() == [0, 1, 0, 1, 0, 0]  # three tied at the cut: the first two
    assert smallest(magnitude, 3).tolist() == [0, 1, 0, 1, 0, 1]
    assert smallest(magnitude, 4).tolist() == [0, 1, 1, 1, 0, 1]
    assert smallest(magnitude, 0).tolist() == [0] * 6  # N_c < 1: no candidate
    assert smallest(torch.full((5,), 0.7, device=device), 2).tolist() == [1, 1, 0, 0, 0]


def test_smallest_in_work_tensors_marks_the_same_and_leaves_magnitude_as_it_was(device):
    """BSP's iterations reuse ``out`` and ``work`` from one to the next: ties, n < 1 and a second input alike."""
    out, work = torch.full((6,), 9.0, device=device), torch.full((6,), 9.0, device=device)
    first = torch.tensor([0.3, 0.1, 0.2, 0.1, 0.5, 0.1], device=device)
    second = torch.tensor([0.4, 0.0, 0.4, 0.2, 0.0, 0.4], device=device)
    for magnitude in (first, second):
        before = magnitude.clone()
        for n in (0, 1, 2, 3, 4, 6):
            expected = smallest(magnitude, n).tolist()
            assert smallest(magnitude, n, out=out, work=work) is out
            assert out.tolist() == expected, (magnitude.tolist(), n)
        assert torch.equal(magnitude, before)
    assert smallest(second, 3, out=out, work=work).tolist() == [0, 1, 0, 1, 1, 0]  # a 0.4 tie would be 4th


def test_pruned_synapses_are_never_candidates(device):
    weight = torch.tensor([[0.0, -0.4, 0.2], [0.9, 0.0, -0.1]], device=device)
    mask = torch.tensor([[0.0, 1, 1], [1, 0, 1]], device=device)
    magnitude = remaining_magnitude(weight, mask).view(-1)
    assert smallest(magnitude, 2).tolist() == [0, 0, 1, 0, 0, 1]
    assert smallest(magnitude, 4).tolist() == [0, 1, 1, 1, 0, 1]


def test_counting_resets_and_prunes_on_a_hand_made_sequence(device):
    """Two candidates an iteration among four synapses; p_c = 2.5, so a third consecutive time prunes."""
    count, mask = torch.zeros(4, device=device), torch.ones(4, device=device)
    expected = [  # |w| this iteration -> counts, mask after it
        ([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], [1, 1, 1, 1]),
        ([0.1, 0.5, 0.2, 0.4], [2, 0, 1, 0], [1, 1, 1, 1]),  # synapse 1 is no candidate: back to 0
        ([0.1, 0.5, 0.2, 0.4], [0, 0, 2, 0], [0, 1, 1, 1]),  # synapse 0: 3 > 2.5, pruned
        ([0.9, 0.5, 0.2, 0.1], [0, 0, 0, 1], [0, 1, 0, 1]),  # pruned 0 is skipped despite |w|; 2 pruned
        ([0.9, 0.5, 0.2, 0.1], [0, 1, 0, 2], [0, 1, 0, 1]),  # the remaining two are the candidates
    ]
    for step, (weights, counts, masks) in enumerate(expected, start=1):
        is_candidate = smallest(remaining_magnitude(torch.tensor(weights, device=device), mask), 2)
        count_and_prune(count, mask, is_candidate, threshold=2.5)
        assert (count.tolist(), mask.tolist()) == (counts, masks), f"iteration {step}"


def test_pruning_fires_exactly_when_the_count_exceeds_p_c(device):
    """Figure 2: "the threshold is 3, so pruning starts on the fourth epoch"."""
    count, mask, always = torch.zeros(1, device=device), torch.ones(1, device=device), torch.ones(1, device=device)
    for iteration in range(1, 5):
        assert count_and_prune(count, mask, always, threshold=3.0) is (iteration == 4)
        assert mask.item() == (iteration < 4)


def linear_model(in_features=2, hidden=2, out_features=None, device="cpu") -> nn.Sequential:
    layers = [nn.Linear(in_features, hidden)] + ([nn.Linear(hidden, out_features)] if out_features else [])
    return nn.Sequential(*layers).to(device)  # built on the CPU: the same random weights on every device


def test_an_iteration_selects_floor_ns_pr_and_recomputes_p_c_as_n_p_grows(device):
    """N = 4, N_neu = 2, β·N_sam/B = 1: p_r = α·ln 2 = 0.6 and p_c = 2^(4/(4−N_p)) with A = N_neu, μ = 0."""
    model = linear_model(device=device)
    callback = SynapticPruning(alpha=0.6 / math.log(2), mu=0, threshold_scale=2, n_neurons=2)
    callback.attach(model, n_samples=1200)
    weight = model[0].weight
    with torch.no_grad():
        weight.copy_(torch.tensor([[0.1, -0.2], [0.3, 0.4]]))
    expected = [  # counts, mask after each iteration; p_c then
        ([[1, 1], [0, 0]], [[1, 1], [1, 1]], 2),  # N_c = floor(4·0.6) = 2
        ([[2, 2], [0, 0]], [[1, 1], [1, 1]], 2),
        ([[0, 0], [0, 0]], [[0, 0], [1, 1]], 4),  # 3 > 2: both pruned, N_p = 2
        ([[0, 0], [1, 0]], [[0, 0], [1, 1]], 4),  # N_c = floor(2·0.6) = 1
        ([[0, 0], [2, 0]], [[0, 0], [1, 1]], 4),
        ([[0, 0], [3, 0]], [[0, 0], [1, 1]], 4),
        ([[0, 0], [4, 0]], [[0, 0], [1, 1]], 4),
        ([[0, 0], [0, 0]], [[0, 0], [0, 1]], 16),  # 5 > 4: pruned, N_p = 3
        ([[0, 0], [0, 0]], [[0, 0], [0, 1]], 16),  # N_c = floor(1·0.6) = 0 < 1: no candidate, ever
    ]
    for step, (counts, masks, threshold) in enumerate(expected, start=1):
        callback.pruning.iterate()
        assert model[0].weight_bsp_candidate_count.tolist() == counts, f"iteration {step}"
        assert model[0].weight_bsp_mask.tolist() == masks, f"iteration {step}"
        assert callback.pruning.threshold == pytest.approx(threshold), f"iteration {step}"
    assert weight.tolist() == [[0, 0], [0, 0.4000000059604645]]
    assert callback.pruning.n_pruned == 3
    summary = callback.summary()
    assert (summary["compression"], summary["pruned"], summary["pruned_fraction"]) == (0.75, 3, {"0": 0.75})


@pytest.mark.parametrize("candidates", ["global", "per_layer"])
def test_guessing_the_cut_from_the_last_iteration_never_changes_the_candidates(monkeypatch, candidates):
    """The selection runs among the |w| at or below the last cut × CUT_SLACK when enough are (devnets.methods.bsp):
    a slack of 0 (never enough: every selection over all weights), 1.25 and 1e30 (all of them) give the same
    counts and masks over 60 noisy iterations with ties and pruning."""
    from devnets.methods import bsp

    def run(slack):
        monkeypatch.setattr(bsp, "CUT_SLACK", slack)
        torch.manual_seed(0)
        model = linear_model(20, 30, 5)
        pruning = bsp.BSP(alpha=0.1, mu=0, threshold_scale=8, candidates=candidates)
        pruning.attach([(model[0], "weight"), (model[1], "weight")], n_neurons=30, n_samples=1200)
        history = []
        for _ in range(60):
            with torch.no_grad():
                for layer in model:
                    layer.weight.add_(torch.randn_like(layer.weight), alpha=0.01)
                    layer.weight[:, :2] = 0.05  # ties at the cut
            pruning.iterate()
            history.append([t.clone() for t in pruning.candidate_counts() + pruning.masks()])
        return history, pruning.n_pruned

    full, n_pruned = run(0.0)
    assert n_pruned > 0
    for slack in (1.25, 1e30):
        guessed, _ = run(slack)
        assert all(torch.equal(a, b) for step_a, step_b in zip(full, guessed, strict=True)
                   for a, b in zip(step_a, step_b, strict=True))


def test_per_layer_candidates_and_hidden_only(device):
    model = linear_model(4, 3, 2, device)
    per_layer = SynapticPruning(
        alpha=0.55 / math.log(3), mu=0, threshold_scale=1e6, candidates="per_layer", n_neurons=3
    )
    per_layer.attach(model, n_samples=1200)  # p_r = 0.55: floor(12·0.55) = 6 and floor(6·0.55) = 3 candidates
    per_layer.pruning.iterate()
    count_0, count_1 = model[0].weight_bsp_candidate_count, model[1].weight_bsp_candidate_count
    assert count_0.sum().item() == 6 and count_1.sum().item() == 3
    hidden_only = SynapticPruning(alpha=0.5 / math.log(3), layers="hidden", n_neurons=3)
    model = linear_model(4, 3, 2)
    hidden_only.attach(model, n_samples=1200)
    assert hasattr(model[0], "weight_bsp_mask") and not hasattr(model[1], "weight_bsp_mask")
    assert hidden_only.pruning.n_synapses == 12


def test_attaching_twice_keeps_the_masks():
    model = linear_model()
    callback = SynapticPruning(alpha=0.6 / math.log(2), mu=0, threshold_scale=2, n_neurons=2)
    callback.attach(model, n_samples=1200)
    for _ in range(3):
        callback.pruning.iterate()
    callback.attach(model, n_samples=1200)
    assert callback.pruning.n_pruned == 2 and model[0].weight_bsp_mask.sum().item() == 2


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda params: torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=0.01),
        lambda params: torch.optim.Adam(params, lr=0.05, weight_decay=0.01),
        lambda params: torch.optim.AdamW(params, lr=0.05, weight_decay=0.1),
    ],
    ids=["sgd-momentum-l2", "adam-l2", "adamw"],
)
def test_pruned_weights_stay_exactly_zero_under_any_optimizer_state(make_optimizer, device):
    torch.manual_seed(0)
    model = linear_model(8, 6, 3, device)
    callback = SynapticPruning(alpha=0.3 / math.log(6), mu=0, threshold_scale=0.3, n_neurons=6)
    callback.attach(model, n_samples=1200)  # p_r = 0.3, p_c starts at 2^1·0.3/6 = 0.1: one candidacy prunes
    optimizer = make_optimizer(model.parameters())
    x, y = torch.randn(32, 8).to(device), torch.randint(0, 3, (32,)).to(device)
    for step in range(40):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if step < 5:
            callback.pruning.iterate()
        else:  # then only eq. (4), while the optimizers' state still pushes the pruned weights
            callback.pruning.apply_masks()
        for layer in model:
            assert torch.all(layer.weight[layer.weight_bsp_mask == 0] == 0)
    assert callback.pruning.n_pruned > 0
    assert callback.compression() == callback.pruning.n_pruned / 66


def test_a_two_epoch_run_with_method_bsp(run, tmp_path):
    metrics = run("method=bsp")
    stats = metrics["method_stats"]
    assert metrics["status"] == "complete" and metrics["epochs"] == 2
    assert stats["pruning_rate"] == pytest.approx(pruning_rate(16, 200))
    assert stats["count_threshold"] == pytest.approx(count_threshold(784 * 16 + 160, 0, 16, 200))
    assert (stats["pruned"], stats["first_pruning_epoch"], stats["compression"]) == (0, None, 0.0)
    assert set(stats["pruned_fraction"]) == {"net.0", "net.3"}


def test_a_pruning_run_keeps_pruned_weights_zero_with_momentum_and_l2(run, tmp_path, device):
    overrides = ("model.momentum=0.9", "method.l2=0.01", "method.threshold_scale=40")
    metrics = run("method=bsp", f"trainer.accelerator={device.type}", *overrides)
    stats = metrics["method_stats"]
    assert stats["first_pruning_epoch"] == 1 and stats["pruned"] > 0
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)["state_dict"]
    zeros = 0
    for layer in ("net.0", "net.3"):
        weight, mask = state[f"{layer}.weight"], state[f"{layer}.weight_bsp_mask"]
        assert torch.all(weight[mask == 0] == 0)
        assert stats["pruned_fraction"][layer] == pytest.approx(1 - mask.mean().item())
        zeros += int((weight == 0).sum())
    assert stats["compression"] == stats["compression_pruned_layers"] == zeros / (784 * 16 + 160)


def test_a_resumed_run_is_identical(make_config, tmp_path):
    overrides = ("method=bsp", "method.threshold_scale=40", "model.momentum=0.9", "~logger")

    def fit(max_epochs, run_dir, ckpt_path=None):
        cfg = make_config(*overrides, f"trainer.max_epochs={max_epochs}", run_dir=run_dir)
        data, model, callbacks = build(cfg)
        trainer = make_trainer(cfg, run_dir, callbacks)
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        return trainer, model, callbacks[0]

    straight_trainer, straight, straight_pruning = fit(4, tmp_path / "straight")
    first_half, _, _ = fit(2, tmp_path / "resumed")
    first_half.save_checkpoint(tmp_path / "half.ckpt")
    resumed_trainer, resumed, resumed_pruning = fit(4, tmp_path / "resumed", ckpt_path=tmp_path / "half.ckpt")
    assert straight.state_dict().keys() == resumed.state_dict().keys()
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert "net.0.weight_bsp_mask" in straight.state_dict() and straight_pruning.pruning.n_pruned > 0
    assert resumed_pruning.summary() == straight_pruning.summary()
    assert run_record(resumed_trainer).history == run_record(straight_trainer).history


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.rate_form=printed", "method.rate_form='printed' is not allowed: plus_one at N_sam = 1200 (eq. 1"),
        ("method.rate_form=linear", "method.rate_form='linear' is not allowed: one of ['plus_one', 'printed']"),
        ("method.iteration=step", "method.iteration='step' is not allowed: one of ['batch', 'epoch']"),
        ("method.candidates=local", "method.candidates='local' is not allowed: one of ['global', 'per_layer']"),
        ("method.layers=output", "method.layers='output' is not allowed: one of ['all', 'hidden']"),
        ("method.alpha=-1", "method.alpha=-1 is not allowed: a finite number > 0"),
        ("method.alpha=0.5", "method.alpha=0.5 is not allowed: a value giving p_r < 1 (eq. 1: p_r = 1.386 at"),
        ("method.mu=-146", "method.mu=-146 is not allowed: a finite number ≥ 0"),
        ("method.sample_scale=0", "method.sample_scale=0 is not allowed: a finite number > 0"),
    ],
)
def test_bad_settings_get_one_line_errors(make_config, override, message):
    with pytest.raises(InvalidSetting) as error:
        build(make_config("method=bsp", "data.n_train=1200", override))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
