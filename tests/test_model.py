"""The MLP's loss and initialisation readings (docs/reproduction.md, "Setup shared by both papers")."""

import math

import pytest
import torch

from conftest import compose_config
from devnets.model import MLPClassifier
from devnets.train import identity, run_settings


def test_mse_is_the_squared_error_of_the_softmax_against_one_hot():
    model = MLPClassifier(input_dim=2, hidden=3, num_classes=2, loss="mse")
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # softmax: (1/2, 1/2) and (3/4, 1/4)
    losses = model._losses(logits, torch.tensor([0, 1]))
    assert losses.tolist() == pytest.approx([0.25 + 0.25, 0.75**2 + 0.75**2])


def test_cross_entropy_is_minus_the_log_softmax_of_the_label():
    model = MLPClassifier(input_dim=2, hidden=3, num_classes=2)
    losses = model._losses(torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([1]))
    assert losses.tolist() == pytest.approx([math.log(4.0)])


def weight_limits(model: MLPClassifier) -> list[float]:
    return [layer.weight.abs().max().item() for layer in (model.net[0], model.net[3])]


def test_glorot_init_spans_keras_range_with_zero_biases():
    torch.manual_seed(0)
    model = MLPClassifier(input_dim=784, hidden=100, init="glorot")
    glorot = [math.sqrt(6 / (784 + 100)), math.sqrt(6 / (100 + 10))]
    for largest, limit in zip(weight_limits(model), glorot, strict=True):
        assert 0.95 * limit < largest <= limit
    assert model.net[0].bias.abs().sum() == model.net[3].bias.abs().sum() == 0


def test_torch_init_is_nn_linear_default():
    torch.manual_seed(0)
    model = MLPClassifier(input_dim=784, hidden=100)
    for largest, limit in zip(weight_limits(model), [1 / math.sqrt(784), 1 / math.sqrt(100)], strict=True):
        assert 0.95 * limit < largest <= limit
    assert model.net[0].bias.abs().max() > 0


def test_sigmoid_input_neurons_squash_the_pixels_before_the_first_layer():
    torch.manual_seed(0)
    plain = MLPClassifier(input_dim=2, hidden=3, num_classes=2)
    squashing = MLPClassifier(input_dim=2, hidden=3, num_classes=2, input_activation="sigmoid")
    squashing.load_state_dict(plain.state_dict())  # the same weights: no buffer or parameter is added
    pixels = torch.tensor([[0.0, 1.0]])
    assert torch.equal(squashing(pixels), plain(torch.tensor([[0.5, 1 / (1 + math.exp(-1))]])))
    assert not torch.equal(squashing(pixels), plain(pixels))


def test_a_run_recorded_before_input_activation_existed_keeps_its_identity():
    settings = run_settings(compose_config())
    recorded = {**settings, "model": {k: v for k, v in settings["model"].items() if k != "input_activation"}}
    assert identity(recorded) == settings
    assert identity(recorded) != run_settings(compose_config("model.input_activation=sigmoid"))
