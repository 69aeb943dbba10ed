"""Explanation: attribute access and an exact JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from torchexplain import Explanation, integrated_gradients


def test_attribute_access_data_then_meta():
    exp = Explanation({"name": "m", "shared": 1}, {"scores": torch.ones(2), "shared": 2})
    assert exp.name == "m"
    assert exp.shared == 2 and exp["shared"] == 2
    assert isinstance(exp.scores, torch.Tensor)
    with pytest.raises(AttributeError, match="no field 'missing'"):
        _ = exp.missing
    with pytest.raises(AttributeError, match="read-only"):
        exp.scores = None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool])
def test_tensor_round_trip_is_exact(dtype):
    values = torch.randn(3, 2, 4, dtype=torch.float64) * 1e3
    tensor = values.to(dtype)
    exp = Explanation({"name": "t"}, {"x": tensor, "pair": (tensor[0], None), "nested": {"y": [tensor[1, 0]]}})
    back = Explanation.from_json(exp.to_json())
    for got, want in [(back.x, tensor), (back.pair[0], tensor[0]), (back.nested["y"][0], tensor[1, 0])]:
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got, want)
    assert back.pair[1] is None and isinstance(back.pair, tuple)


def test_json_records_dtype_and_shape():
    payload = json.loads(Explanation({"name": "t"}, {"x": torch.zeros(2, 3)}).to_json())
    assert payload["data"]["x"]["dtype"] == "float32"
    assert payload["data"]["x"]["shape"] == [2, 3]


def test_numpy_and_empty_tensors():
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    back = Explanation.from_json(Explanation({}, {"a": arr, "e": torch.zeros(0, 5)}).to_json())
    assert back.a.dtype == np.int16 and np.array_equal(back.a, arr)
    assert back.e.shape == (0, 5)


def test_ig_explanation_round_trip():
    model = torch.nn.Linear(4, 3)
    exp = integrated_gradients(model, torch.rand(2, 4), n_steps=4)
    back = Explanation.from_json(exp.to_json())
    assert back.meta == exp.meta
    for key in ("attributions", "convergence_delta", "target", "predictions"):
        assert torch.equal(back.data[key], exp.data[key])


def test_unserialisable_value_and_bad_json():
    with pytest.raises(TypeError, match="cannot serialise"):
        Explanation({}, {"f": object()}).to_json()
    with pytest.raises(ValueError, match="'meta' and 'data'"):
        Explanation.from_json("[1, 2]")
