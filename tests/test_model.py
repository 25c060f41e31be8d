"""The MLP's loss and initialisation readings (docs/reproduction.md, "Setup shared by both papers")."""

import math

import pytest
import torch

from devnets.model import MLPClassifier


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
