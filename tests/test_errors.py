"""Bad input gets a clear ValueError/TypeError that names the problem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchexplain import IntegratedGradients, integrated_gradients

MODEL = nn.Linear(4, 3)
X = torch.rand(2, 4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"baselines": torch.zeros(3, 4)}, ValueError, "does not broadcast"),
        ({"baselines": torch.zeros(2, 5)}, ValueError, "does not broadcast"),
        ({"target": 3}, ValueError, "target class 3 is out of range"),
        ({"target": -1}, ValueError, "out of range"),
        ({"target": [0, 1, 2]}, ValueError, "3 entries but the batch has 2"),
        ({"target": torch.tensor([0.5, 1.0])}, TypeError, "integer class indices"),
        ({"n_steps": 0}, ValueError, "n_steps must be at least 1"),
        ({"n_steps": 2.5}, TypeError, "n_steps must be an int"),
        ({"method": "simpson"}, ValueError, "unknown method 'simpson'"),
        ({"method": "riemann_trapezoid", "n_steps": 1}, ValueError, "n_steps >= 2"),
        ({"internal_batch_size": 0}, ValueError, "internal_batch_size"),
        ({"target": lambda out: out}, ValueError, "callable target must map"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        integrated_gradients(MODEL, X, **kwargs)


def test_non_floating_inputs():
    with pytest.raises(TypeError, match="floating-point"):
        integrated_gradients(MODEL, torch.ones(2, 4, dtype=torch.long))


def test_model_output_not_batch_by_classes():
    model = lambda x: x.unsqueeze(1)  # noqa: E731 - (B, 1, 4) output
    with pytest.raises(
        ValueError, match=r"leaves 4 values of the output \(2, 1, 4\); use a tuple of 2 indices"
    ):
        integrated_gradients(model, X, target=0)
    with pytest.raises(
        ValueError, match=r"target=None needs \(B, classes\) scores or one value per example"
    ):
        integrated_gradients(model, X)


def test_mismatched_tuple_inputs():
    with pytest.raises(ValueError, match="batch size"):
        integrated_gradients(lambda a, b: a + b[:2], (torch.rand(2, 3), torch.rand(3, 3)), target=0)
    with pytest.raises(ValueError, match="2 inputs"):
        integrated_gradients(lambda a, b: a + b, (X, X), baselines=(0.0,), target=0)


def test_constructor_validates_early():
    with pytest.raises(ValueError, match="unknown method"):
        IntegratedGradients(MODEL, method="left")
    with pytest.raises(ValueError, match="at least 1"):
        IntegratedGradients(MODEL, n_steps=-3)
