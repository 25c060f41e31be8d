"""BoundMask (BDNN-dsd, Algorithm 1): one rule a test on hand-written weight sequences, then whole runs.

The small tests set a 1×n weight to each row of a sequence (standing in for the optimiser's update)
and run one time step of Algorithm 1 after each, on each device (the conftest's ``device``). R_i = 0.5,
R_d = 0.25 and T_num = 2 unless a test says otherwise: every value is exact in float32, so bounds and
counters compare exactly. Each runs eager and compiled (``compile=True``, where torch.compile can run), which
must give the same values.
"""

import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import devnets.callbacks.bound_mask
import devnets.train
from conftest import Crash
from devnets.callbacks.bound_mask import BoundMask
from devnets.errors import InvalidSetting
from devnets.methods.bdnn_dsd import BDNNDsd
from devnets.methods.weights import compiler_missing, select_weights
from devnets.train import build, make_trainer, run_settings
from test_reliability import assert_same_run

NEEDS_COMPILER = pytest.mark.skipif(compiler_missing() is not None, reason=f"torch.compile: {compiler_missing()}")


@pytest.fixture(params=[False, pytest.param(True, marks=NEEDS_COMPILER)], ids=["eager", "compiled"])
def compiled(request) -> bool:
    """BDNN-dsd's time step as it runs by default, and compiled (``compile=True``)."""
    torch._dynamo.reset()  # dynamo stops compiling a function after 8 graphs: each test starts afresh
    return request.param


def bounded_layer(initial_weights, device="cpu", compiled=False, **settings):
    defaults = {"initial_bound": 0.5, "bound_step": 0.25, "count_threshold": 2, "compile": compiled}
    bounds = BDNNDsd(**{**defaults, **settings})
    layer = nn.Linear(len(initial_weights), 1, bias=False, device=device)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([initial_weights]))
    bounds.attach([(layer, "weight")])
    return bounds, layer


def drive(bound_mask, layer, steps):
    """One Algorithm 1 step per row of ``steps``; returns (bound, Num+, Num-, weight) after each."""
    states = []
    for weights in steps:
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([weights]))
        bound_mask.update()
        states.append(
            (
                layer.weight_bdnn_bound[0].tolist(),
                layer.weight_bdnn_exceed_count[0].tolist(),
                layer.weight_bdnn_decay_count[0].tolist(),
                layer.weight[0].tolist(),
            )
        )
    return states


def test_bound_grows_after_count_threshold_exceedances(device, compiled):
    bound_mask, layer = bounded_layer([0.25, 0.25], device, compiled)
    assert drive(bound_mask, layer, [[1.0, 0.25], [-1.0, 0.25], [1.0, 0.25]]) == [
        ([0.5, 0.5], [1, 0], [0, 0], [0.5, 0.25]),
        ([0.75, 0.5], [0, 0], [0, 0], [-0.75, 0.25]),  # Num+ = 2 ≥ T_num: M += R_d, Num+ = 0
        ([0.75, 0.5], [1, 0], [0, 0], [0.75, 0.25]),
    ]


def test_bound_shrinks_after_count_threshold_decays(device, compiled):
    bound_mask, layer = bounded_layer([0.5, 0.25], device, compiled)
    assert drive(bound_mask, layer, [[-0.375, 0.25], [0.25, 0.25], [0.125, 0.25]]) == [
        ([0.5, 0.5], [0, 0], [1, 0], [-0.375, 0.25]),
        ([0.25, 0.5], [0, 0], [0, 0], [0.25, 0.25]),  # Num- = 2 ≥ T_num: M -= R_d, Num- = 0
        ([0.25, 0.5], [0, 0], [1, 0], [0.125, 0.25]),
    ]


@pytest.mark.parametrize(
    "reset_after_update, expected",
    [
        # Algorithm 1: the count starts again after each move
        (True, [(0.5, 1), (0.75, 0), (0.75, 1), (1.0, 0)]),
        # the text's step 2: Num+ stays ≥ T_num, so the bound grows every step, even at step 4 where
        # w = 1.0 no longer exceeds M = 1.0
        (False, [(0.5, 1), (0.75, 2), (1.0, 3), (1.25, 3)]),
    ],
)
def test_reset_after_update_readings(reset_after_update, expected, device, compiled):
    bound_mask, layer = bounded_layer([0.25], device, compiled, reset_after_update=reset_after_update)
    states = drive(bound_mask, layer, [[1.0]] * 4)
    assert [(bound[0], exceed_count[0]) for bound, exceed_count, _, _ in states] == expected


@pytest.mark.parametrize(
    "counting, expected",
    [
        # Algorithm 1: the misses at step 2 keep the counts, so step 3 reaches T_num
        ("cumulative", [(0.5, 1, 0.5, 1), (0.5, 1, 0.5, 1), (0.75, 0, 0.25, 0)]),
        # the text: the misses at step 2 start the counts over
        ("consecutive", [(0.5, 1, 0.5, 1), (0.5, 0, 0.5, 0), (0.5, 1, 0.5, 1)]),
    ],
)
def test_counting_readings(counting, expected, device, compiled):
    # synapse 0 exceeds, misses, exceeds: (M, Num+); synapse 1 decays, holds, decays: (M, Num-)
    bound_mask, layer = bounded_layer([0.25, 0.5], device, compiled, counting=counting)
    states = drive(bound_mask, layer, [[1.0, 0.375], [0.5, 0.375], [1.0, 0.25]])
    assert [(bound[0], exceed[0], bound[1], decay[1]) for bound, exceed, decay, _ in states] == expected


def test_clip_limits_weights_to_the_bound(device, compiled):
    bound_mask, layer = bounded_layer([0.0, 0.0, 0.0, 0.0, 0.0], device, compiled, count_threshold=100)
    [(bound, _, _, weight)] = drive(bound_mask, layer, [[0.75, -0.75, 0.25, -0.25, 0.5]])
    assert weight == [0.5, -0.5, 0.25, -0.25, 0.5]  # eq. 3.3
    assert bound == [0.5] * 5
    assert int(bound_mask.clipped) == 2
    assert layer.weight_bdnn_previous_magnitude[0].tolist() == [0.5, 0.5, 0.25, 0.25, 0.5]  # |w| after the clip


def test_bound_stops_at_zero_and_zeroes_its_weight(device, compiled):
    bound_mask, layer = bounded_layer([0.5], device, compiled, bound_step=0.375, count_threshold=1)
    assert drive(bound_mask, layer, [[0.25], [0.0625], [0.0], [0.125]]) == [
        ([0.125], [0], [0], [0.125]),
        ([0.0], [0], [0], [0.0]),  # 0.125 - 0.375 < 0: M = 0, so w = 0
        ([0.0], [0], [0], [0.0]),  # no decay below 0: M stays 0
        ([0.375], [0], [0], [0.125]),  # |w| > 0 = M exceeds: M grows from 0
    ]


def test_bound_brought_to_zero_is_exactly_zero(device, compiled):
    # in float32, 0.3 - 0.1 - 0.1 - 0.1 = 1.5e-8, not 0
    bound_mask, layer = bounded_layer([0.3], device, compiled, initial_bound=0.3, bound_step=0.1, count_threshold=1)
    drive(bound_mask, layer, [[0.25], [0.15], [0.05]])
    assert layer.weight_bdnn_bound.item() == 0.0
    assert layer.weight.item() == 0.0


def test_epoch_cadence_clips_every_step_and_moves_bounds_at_epoch_end(device, compiled):
    bound_mask, layer = bounded_layer([0.25, 0.25], device, compiled, count_threshold=1, cadence="epoch")
    for weights in ([1.0, 0.25], [0.5, 0.125]):
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([weights]))
        bound_mask.after_step(bound_mask.weights)
    assert layer.weight[0].tolist() == [0.5, 0.125]  # clipped at the first step
    assert layer.weight_bdnn_bound[0].tolist() == [0.5, 0.5]
    assert layer.weight_bdnn_exceeded[0].tolist() == [True, False]
    bound_mask.update()  # the epoch's end: exceeded during the epoch; decayed since the run's start
    assert layer.weight_bdnn_bound[0].tolist() == [0.75, 0.25]
    assert layer.weight_bdnn_exceeded[0].tolist() == [False, False]
    assert layer.weight_bdnn_previous_magnitude[0].tolist() == [0.5, 0.125]


def test_epoch_statistics_count_zero_bounds_and_weights_and_their_overlap_with_the_epoch_before():
    layers = [nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False)]
    bound_mask = BoundMask()
    bound_mask.bounds.attach([(layer, "weight") for layer in layers])
    trainer = SimpleNamespace(callback_metrics={}, loggers=[], current_epoch=0, max_epochs=2)
    epochs = [  # (bounds, weights) of each layer at an epoch's end
        (([[0, 0.5, 0], [0.5, 0.5, 0.5]], [[0, 0.5]]), ([[0, 0.25, 0], [0.25, 0, 0.25]], [[0, 0.25]])),
        (([[0, 0.5, 0.5], [0.5, 0.5, 0]], [[0, 0]]), ([[0, 0, 0.25], [-0.25, 0, 0.25]], [[0.25, 0]])),
    ]
    for epoch, (bounds, weights) in enumerate(epochs):
        with torch.no_grad():
            for layer, bound, weight in zip(layers, bounds, weights, strict=True):
                layer.weight_bdnn_bound.copy_(torch.tensor(bound))
                layer.weight.copy_(torch.tensor(weight))
        bound_mask.bounds.clipped = 3 + epoch
        trainer.current_epoch = epoch
        bound_mask.on_train_epoch_end(trainer, None)
    assert bound_mask.curves == {
        "mean_bound": [2.5 / 8, 2 / 8],
        "zero_bounds": [3, 4],
        "zero_weights": [4, 4],
        "zero_bound_overlap": [0, 2],  # layer 0's (0, 0) and layer 1's (0, 0)
        "zero_weight_overlap": [0, 2],  # layer 0's (0, 0) and (1, 1)
        "clipped": [3, 4],
    }
    assert trainer.callback_metrics["bdnn/zero_bound_overlap"] == 2


@pytest.mark.parametrize("layers, expected", [("all", ["0", "2"]), ("hidden", ["0"]), (["2"], ["2"])])
def test_layers_choose_the_bounded_linears(layers, expected):
    model = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2))
    bound_mask = BoundMask(layers=layers)
    bound_mask.setup(None, model, "fit")
    assert bound_mask.names == [f"{name}.weight" for name in expected]
    assert [name for name, _ in model.named_buffers() if name.endswith("weight_bdnn_bound")] == [
        f"{name}.weight_bdnn_bound" for name in expected
    ]


def test_unknown_layer_name_is_refused():
    with pytest.raises(InvalidSetting, match=r"^layers=\['net.9'\] is not allowed: patterns that each match an nn"):
        BoundMask(layers=["net.9"]).setup(None, nn.Sequential(nn.Linear(4, 3)), "fit")


def test_setup_again_keeps_the_state():
    bound_mask, layer = bounded_layer([0.25])
    drive(bound_mask, layer, [[1.0], [1.0]])
    BoundMask().setup(None, nn.Sequential(layer), "validate")
    assert layer.weight_bdnn_bound.tolist() == [[0.75]]


@pytest.mark.parametrize(
    "override",
    [
        "method.initial_bound=0",
        "method.initial_bound=-1",
        "method.bound_step=-0.06",
        "method.count_threshold=0",
        "method.count_threshold=2.5",
        "method.counting=sometimes",
        "method.reset_after_update=maybe",
        "method.layers=output",
        "method.cadence=hourly",
        "method.compile=maybe",
        "method.compile=1",
    ],
)
def test_bad_settings_are_one_line_errors(make_config, override):
    key = override.split("=")[0]
    with pytest.raises(InvalidSetting) as error:
        build(make_config("method=bdnn_dsd", override))
    assert str(error.value).startswith(f"{key}=") and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "overrides, bounded_weights",
    [((), 784 * 16 + 16 * 10), (("method.cadence=epoch", "method.layers=hidden"), 784 * 16)],
)
def test_two_epochs_through_hydra(run, overrides, bounded_weights, device):
    metrics = run("method=bdnn_dsd", f"trainer.accelerator={device.type}", *overrides)
    assert metrics["status"] == "complete" and metrics["method"] == "bdnn_dsd"
    stats = metrics["method_stats"]
    assert stats["bounded_weights"] == bounded_weights
    # 4 steps an epoch, fewer than T_num = 10: no bound has moved yet
    assert stats["mean_bound"] == pytest.approx(0.45)
    assert (stats["zero_bounds"], stats["first_zero_bound_epoch"]) == (0, None)
    assert set(stats["per_epoch"]) == {
        "mean_bound", "zero_bounds", "zero_weights", "zero_bound_overlap", "zero_weight_overlap", "clipped",
    }
    assert all(len(curve) == 2 for curve in stats["per_epoch"].values())
    assert stats["clipped_total"] == sum(stats["per_epoch"]["clipped"])


# Fast-moving bounds, so that two epochs leave zero bounds and non-zero counters to restore.
FAST = ("method=bdnn_dsd", "method.count_threshold=2", "method.bound_step=0.25")


def fit(make_config, run_dir, epochs, resume=False):
    cfg = make_config(*FAST, f"trainer.max_epochs={epochs}", "checkpoint_every_n_epochs=1", run_dir=run_dir)
    data, model, callbacks = build(cfg)
    trainer = make_trainer(cfg, run_dir, callbacks)
    trainer.fit(model, datamodule=data, ckpt_path=run_dir / "last.ckpt" if resume else None)
    return trainer, model, callbacks[0]


def test_resumed_run_continues_as_an_uninterrupted_one(make_config, tmp_path):
    trainer, model, bound_mask = fit(make_config, tmp_path / "whole", epochs=4)
    fit(make_config, tmp_path / "parts", epochs=2)
    _, resumed_model, resumed_mask = fit(make_config, tmp_path / "parts", epochs=4, resume=True)

    state, resumed_state = model.state_dict(), resumed_model.state_dict()
    assert {"net.0.weight_bdnn_bound", "net.0.weight_bdnn_decay_count", "net.3.weight_bdnn_previous_magnitude"} <= set(
        state
    )
    assert state.keys() == resumed_state.keys()
    for name, tensor in state.items():
        assert torch.equal(tensor, resumed_state[name]), name
    assert resumed_mask.summary() == bound_mask.summary()

    stats = bound_mask.summary()
    assert stats["first_zero_bound_epoch"] is not None and stats["zero_weights"] >= stats["zero_bounds"] > 0
    assert stats["zero_bound_overlap"] <= stats["zero_bounds"]
    assert len(stats["per_epoch"]["zero_bounds"]) == 4
    assert trainer.callback_metrics["bdnn/zero_bounds"] == stats["zero_bounds"]
    weight, bound = model.net[0].weight, model.net[0].weight_bdnn_bound
    assert bool((weight.abs() <= bound).all())


@NEEDS_COMPILER
@pytest.mark.parametrize("reading", [{}, {"counting": "consecutive"}, {"reset_after_update": False},
                                     {"cadence": "epoch"}], ids=["defaults", "consecutive", "no_reset", "epoch"])
def test_the_compiled_time_step_gives_the_eager_numbers_bit_for_bit_in_one_graph(reading):
    """Weights that shrink and jitter at every step, on two layers of other shapes: bounds grow and shrink."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    layers, methods = {}, {}
    for compiled in (False, True):
        torch.manual_seed(0)
        layers[compiled] = [nn.Linear(30, 20, bias=False), nn.Linear(20, 10, bias=False)]
        methods[compiled] = BDNNDsd(initial_bound=0.1, bound_step=0.05, count_threshold=2, compile=compiled, **reading)
        methods[compiled].attach([(layer, "weight") for layer in layers[compiled]])
    noise = torch.Generator().manual_seed(1)
    for step in range(40):
        jitters = [0.05 * torch.randn(layer.weight.shape, generator=noise) for layer in layers[False]]
        for compiled, method in methods.items():
            with torch.no_grad():
                for layer, jitter in zip(layers[compiled], jitters, strict=True):
                    layer.weight.mul_(0.8).add_(jitter)
            method.after_step(method.weights)
            if reading.get("cadence") == "epoch" and step % 5 == 4:
                method.update()
        assert int(methods[True].clipped) == int(methods[False].clipped) > 0
        methods[True].clipped = methods[False].clipped = 0
    for eager, compiled in zip(layers[False], layers[True], strict=True):
        for name, tensor in eager.state_dict().items():
            assert torch.equal(tensor, compiled.state_dict()[name]), name
    bounds = torch.cat([layer.weight_bdnn_bound.flatten() for layer in layers[False]])
    assert (bounds < 0.1).any() and (bounds > 0.1).any()  # bounds both shrank and grew
    assert (bounds == 0).any() or reading.get("cadence") == "epoch"  # and reach 0 (8 time steps: not there)
    counters = torch._dynamo.utils.counters
    assert not counters["graph_break"] and counters["stats"]["unique_graphs"] >= 1


@NEEDS_COMPILER
def test_a_run_with_method_compile_is_the_run_without_it(run, make_config, stop_at, tmp_path, monkeypatch):
    torch._dynamo.reset()
    settings = (*FAST, "trainer.max_epochs=3", "checkpoint_every_n_epochs=1")
    eager = run(*settings, run_dir=tmp_path / "eager")
    compiled = run(*settings, "method.compile=true", run_dir=tmp_path / "compiled")
    assert_same_run(compiled, eager, tmp_path / "compiled", tmp_path / "eager")
    assert eager["method_stats"]["clipped_total"] > 0 and eager["method_stats"]["zero_bounds"] > 0
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


def auto_compiled(trainer, hidden, inputs=784, cadence="batch", device="cpu") -> bool:
    """Whether ``compile=auto`` compiles BDNN-dsd's time step on the papers' MLP (inputs-hidden-10) for ``trainer``."""
    bound_mask = BoundMask(cadence=cadence)
    mlp = nn.Sequential(nn.Linear(inputs, hidden), nn.Sigmoid(), nn.Linear(hidden, 10)).to(device)
    bound_mask.bounds.attach(select_weights(mlp))
    bound_mask.compile_if_it_pays(trainer)
    return bound_mask.bounds.compiled


def planned(steps_per_epoch, epochs=500, epochs_done=0):
    """What BoundMask reads of a Trainer about to train: the optimiser steps and epochs planned, and those done."""
    return SimpleNamespace(
        estimated_stepping_batches=steps_per_epoch * epochs, global_step=steps_per_epoch * epochs_done,
        max_epochs=epochs, current_epoch=epochs_done,
    )


@NEEDS_COMPILER
def test_compile_auto_compiles_where_the_weight_steps_left_pay_for_it():
    # 500 epochs of 60,000 samples (100 steps of 600): 50,000 steps x 397,000 weights at 500 hidden units = 2.0e10
    assert auto_compiled(planned(steps_per_epoch=100), hidden=500)
    assert auto_compiled(planned(steps_per_epoch=84), hidden=100, inputs=3072)  # CIFAR-10: 42,000 x 308,200 = 1.3e10
    assert not auto_compiled(planned(steps_per_epoch=100), hidden=100)  # 79,400 weights: 4.0e9
    assert not auto_compiled(planned(steps_per_epoch=2), hidden=500)  # 1200 samples: 1000 steps x 397,000 = 4.0e8
    assert not auto_compiled(planned(steps_per_epoch=100, epochs_done=490), hidden=500)  # resumed near its end
    assert not auto_compiled(planned(steps_per_epoch=100), hidden=500, cadence="epoch")  # 500 time steps


def test_compile_auto_stays_eager_off_the_cpu_and_for_a_run_of_unknown_length(caplog):
    with caplog.at_level(logging.INFO, logger="devnets.callbacks.bound_mask"):
        assert not auto_compiled(planned(steps_per_epoch=100), hidden=500, device="meta")
        assert not auto_compiled(SimpleNamespace(estimated_stepping_batches=-1, global_step=0), hidden=500)
    assert caplog.messages == [
        "BDNN-dsd's time step (method.compile=auto): eager, on meta: auto compiles on the CPU only, where it was "
        "measured",
        "BDNN-dsd's time step (method.compile=auto): eager, the run's length is unknown",
    ]


def test_compile_auto_stays_eager_where_torch_compile_cannot_run(monkeypatch, caplog):
    monkeypatch.setattr(devnets.callbacks.bound_mask, "compiler_missing", lambda: "no C++ compiler for its CPU kernels")
    with caplog.at_level(logging.INFO, logger="devnets.callbacks.bound_mask"):
        assert not auto_compiled(planned(steps_per_epoch=100), hidden=500)
    assert caplog.messages == ["BDNN-dsd's time step (method.compile=auto): eager, no C++ compiler for its CPU kernels"]


@NEEDS_COMPILER
@pytest.mark.parametrize("work, compiled", [(None, False), (0, True)], ids=["default", "always"])
def test_compile_auto_decides_as_training_starts_and_says_so(make_config, tmp_path, monkeypatch, caplog, work,
                                                             compiled):
    torch._dynamo.reset()
    if work is not None:
        monkeypatch.setattr(devnets.callbacks.bound_mask, "AUTO_COMPILE_WORK", work)
    with caplog.at_level(logging.INFO, logger="devnets.callbacks.bound_mask"):
        _, _, bound_mask = fit(make_config, tmp_path, epochs=1)
    assert bound_mask.bounds.compiled is compiled
    # the test config: 4 steps x (784 x 16 + 16 x 10) weights
    way = "compiled, 5.1e+04 weight-steps to go" if compiled else "eager, 5.1e+04 weight-steps to go, below 5e+09"
    assert f"BDNN-dsd's time step (method.compile=auto): {way}" in caplog.messages


def test_compile_without_a_cpp_compiler_is_a_one_line_error(monkeypatch):
    cpp_builder = pytest.importorskip("torch._inductor.cpp_builder")
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("no-such-c++-compiler",))
    cpp_builder.cpp_compiler_search.cache_clear()  # it remembers the compiler it found
    try:
        with pytest.raises(InvalidSetting, match=r"^compile=True is not allowed: false here: torch\.compile cannot run "
                                                 r"\(no C\+\+ compiler for its CPU kernels: "):
            BDNNDsd(compile=True)
    finally:
        cpp_builder.cpp_compiler_search.cache_clear()
