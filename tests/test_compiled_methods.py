"""``compile=True`` (``method.compile=true``): BDNN-dsd's time step and BSP's passes over each weight as
torch.compile'd kernels give the eager numbers bit for bit, in whole graphs, and are no part of a run's identity.
The hand-checked sequences of tests/test_bound_mask.py and tests/test_synaptic_pruning.py run compiled too."""

import pytest
import torch
from torch import nn

import devnets.train
from conftest import NEEDS_COMPILER, Crash
from devnets.errors import InvalidSetting
from devnets.methods.bdnn_dsd import BDNNDsd
from devnets.methods.bsp import BSP
from devnets.train import run_settings
from test_reliability import assert_same_run


def jittered_eager_and_compiled(make_method, jitter, steps: int, every_fifth=None):
    """Two copies of a two-layer network with the same initial weights, one with ``make_method(False, weights)``,
    the other with ``make_method(True, weights)``; ``steps`` times, the same ``jitter(weight, noise)`` on both and
    a step of each method (and ``every_fifth(method)`` every fifth step). Returns the layers and methods, after
    checking that the copies' weights and buffers are equal and that the compiled passes had no graph break."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    layers, methods = {}, {}
    for compiled in (False, True):
        torch.manual_seed(0)
        layers[compiled] = [nn.Linear(30, 20, bias=False), nn.Linear(20, 10, bias=False)]
        methods[compiled] = make_method(compiled, [(layer, "weight") for layer in layers[compiled]])
    noise = torch.Generator().manual_seed(1)
    for step in range(steps):
        noises = [torch.randn(layer.weight.shape, generator=noise) for layer in layers[False]]
        for compiled, method in methods.items():
            with torch.no_grad():
                for layer, layer_noise in zip(layers[compiled], noises, strict=True):
                    jitter(layer.weight, layer_noise)
            method.after_step(method.weights)
            if every_fifth is not None and step % 5 == 4:
                every_fifth(method)
    for eager, compiled in zip(layers[False], layers[True], strict=True):
        for name, tensor in eager.state_dict().items():
            assert torch.equal(tensor, compiled.state_dict()[name]), name
    counters = torch._dynamo.utils.counters
    assert not counters["graph_break"] and counters["stats"]["unique_graphs"] >= 1
    return layers, methods


@NEEDS_COMPILER
@pytest.mark.parametrize("reading", [{}, {"counting": "consecutive"}, {"reset_after_update": False},
                                     {"cadence": "epoch"}], ids=["defaults", "consecutive", "no_reset", "epoch"])
def test_bdnn_dsd_compiled_gives_the_eager_numbers_bit_for_bit(reading):
    """Weights that shrink and jitter at every step, on two layers of other shapes: bounds grow and shrink."""

    def make(compiled, weights):
        method = BDNNDsd(initial_bound=0.1, bound_step=0.05, count_threshold=2, compile=compiled, **reading)
        method.attach(weights)
        return method

    def update(method):
        method.update()

    def shrink_and_jitter(weight, noise):
        weight.mul_(0.8).add_(noise, alpha=0.05)

    layers, methods = jittered_eager_and_compiled(
        make, shrink_and_jitter, 40, update if reading.get("cadence") == "epoch" else None
    )
    clipped = [int(method.clipped) for method in methods.values()]
    assert clipped[0] == clipped[1] > 0
    bounds = torch.cat([layer.weight_bdnn_bound.flatten() for layer in layers[False]])
    assert (bounds < 0.1).any() and (bounds > 0.1).any()  # bounds both shrank and grew
    assert (bounds == 0).any() or reading.get("cadence") == "epoch"  # and reach 0 (8 time steps: not there)


@NEEDS_COMPILER
@pytest.mark.parametrize("reading", [{}, {"candidates": "per_layer"}, {"iteration": "epoch"}],
                         ids=["defaults", "per_layer", "epoch"])
def test_bsp_compiled_gives_the_eager_numbers_bit_for_bit(reading):
    """Weights that jitter at every step, two columns of each tied at 0.05, near the cut: synapses are pruned."""

    def make(compiled, weights):
        method = BSP(alpha=0.1, mu=0, threshold_scale=8, compile=compiled, **reading)
        method.attach(weights, n_neurons=20, n_samples=1200)
        return method

    def iterate(method):
        method.iterate()

    def jitter_and_tie(weight, noise):
        weight.add_(noise, alpha=0.01)
        weight[:, :2] = 0.05

    _, methods = jittered_eager_and_compiled(
        make, jitter_and_tie, 60, iterate if reading.get("iteration") == "epoch" else None
    )
    assert methods[True].n_pruned == methods[False].n_pruned > 0
    assert methods[True].threshold == methods[False].threshold


@NEEDS_COMPILER
@pytest.mark.parametrize(
    ("settings", "did_something"),
    [
        (("method=bdnn_dsd", "method.count_threshold=2", "method.bound_step=0.25"), "zero_bounds"),
        (("method=bsp", "method.threshold_scale=40"), "pruned"),
    ],
    ids=["bdnn_dsd", "bsp"],
)
def test_a_run_with_method_compile_is_the_run_without_it(
    settings, did_something, run, make_config, stop_at, tmp_path, monkeypatch
):
    torch._dynamo.reset()
    settings = (*settings, "trainer.max_epochs=3", "checkpoint_every_n_epochs=1")
    eager = run(*settings, run_dir=tmp_path / "eager")
    compiled = run(*settings, "method.compile=true", run_dir=tmp_path / "compiled")
    assert_same_run(compiled, eager, tmp_path / "compiled", tmp_path / "eager")
    assert eager["method_stats"][did_something] > 0
    # no part of the run's identity: a run stopped eager resumes compiled to the same result ...
    lift = stop_at(2)
    with pytest.raises(Crash):
        run(*settings, run_dir=tmp_path / "cut")
    lift()
    resumed = run(*settings, "method.compile=true", run_dir=tmp_path / "cut")
    assert_same_run(resumed, eager, tmp_path / "cut", tmp_path / "eager")
    # ... and the eager run's folder holds this run, complete
    assert run_settings(make_config(*settings, "method.compile=true")) == run_settings(make_config(*settings))
    monkeypatch.setattr(devnets.train, "make_trainer", None)  # any attempt to train would fail
    assert run(*settings, "method.compile=true", run_dir=tmp_path / "eager") == eager


@pytest.mark.parametrize("method", [BDNNDsd, BSP])
def test_compile_without_a_cpp_compiler_is_a_one_line_error(method):
    cpp_builder = pytest.importorskip("torch._inductor.cpp_builder")
    cpp_builder.cpp_compiler_search.cache_clear()  # it remembers the compiler it found
    try:
        with torch._inductor.config.patch({"cpp.cxx": ("no-such-c++-compiler",)}), pytest.raises(
            InvalidSetting, match=r"^compile=True is not allowed: false here: torch\.compile cannot run "
                                  r"\(no C\+\+ compiler for its CPU kernels: "
        ):
            method(compile=True)
    finally:
        cpp_builder.cpp_compiler_search.cache_clear()
