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


@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool]
)
def test_tensor_round_trip_is_exact(dtype):
    values = torch.randn(3, 2, 4, dtype=torch.float64) * 1e3
    tensor = values.to(dtype)
    exp = Explanation(
        {"name": "t"}, {"x": tensor, "pair": (tensor[0], None), "nested": {"y": [tensor[1, 0]]}}
    )
    back = Explanation.from_json(exp.to_json())
    for got, want in [
        (back.x, tensor),
        (back.pair[0], tensor[0]),
        (back.nested["y"][0], tensor[1, 0]),
    ]:
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


def _payload(data) -> str:
    return json.dumps({"meta": {"name": "t"}, "data": data})


def _tensor(**fields) -> dict:
    return {"__tensor__": True, "dtype": "float32", "shape": [2], "data": [1.0, 2.0], **fields}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"x": _tensor(dtype="load")},
            r"data.x: tensor dtype 'load' is not one of",
        ),  # no getattr(torch, name)
        ({"x": _tensor(dtype="complex64")}, r"tensor dtype 'complex64' is not one of"),
        (
            {"x": _tensor(shape=[3])},
            r"data.x: data of shape \(2,\) does not match the recorded shape \(3,\)",
        ),
        ({"x": _tensor(shape=[0, 2])}, r"recorded shape \(0, 2\) is empty but data holds 2 values"),
        ({"x": _tensor(shape=[-2])}, r"shape must be a list of non-negative ints"),
        ({"x": _tensor(data=[[1.0], [2.0, 3.0]])}, r"data.x: data is not a rectangular array"),
        ({"x": _tensor(dtype="int64")}, r"data of kind 'f' cannot be read as 'int64'"),
        ({"x": _tensor(data=["a", "b"])}, r"kind 'U' cannot be read"),
        ({"x": _tensor(extra=1)}, r"needs exactly the keys"),
        ({"x": [_tensor(dtype="object")]}, r"data.x\[0\]: tensor dtype 'object'"),
        (
            {"x": {"__ndarray__": True, "dtype": "|O", "shape": [1], "data": [1]}},
            r"ndarray dtype '\|O' is not a boolean or numeric",
        ),
        ({"x": {"__ndarray__": True, "dtype": 3, "shape": [1], "data": [1]}}, r"ndarray dtype 3"),
        ({"x": {"__tuple__": 5}}, r"a tuple must be written as"),
    ],
)
def test_from_json_refuses_what_to_json_never_writes(data, message):
    with pytest.raises(ValueError, match=message):
        Explanation.from_json(_payload(data))


def test_from_json_refuses_malformed_payloads():
    with pytest.raises(ValueError, match="not valid JSON"):
        Explanation.from_json("{'meta': 1")
    with pytest.raises(ValueError, match="'data' must be a JSON object"):
        Explanation.from_json(json.dumps({"meta": {}, "data": [1]}))
    with pytest.raises(TypeError, match="JSON text"):
        Explanation.from_json({"meta": {}, "data": {}})
    # bytes (what a server receives) are fine
    back = Explanation.from_json(_payload({"x": _tensor()}).encode())
    assert torch.equal(back.x, torch.tensor([1.0, 2.0]))
