"""One result type for every explainer.

An :class:`Explanation` holds ``meta`` (which method, with which parameters, from
which version of torchexplain) and ``data`` (the results). Fields of either are
readable as attributes (``exp.attributions``), tensors stay tensors, and
``to_json()`` / ``Explanation.from_json()`` round-trip the whole object: tensors
are written as nested lists with their dtype and shape recorded, and come back as
tensors of that dtype and shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

_TENSOR_KEY = "__tensor__"
_NDARRAY_KEY = "__ndarray__"
_TUPLE_KEY = "__tuple__"


class Explanation:
    """The result of ``Explainer.explain``.

    Args:
        meta: what produced the result: ``name`` (the method), ``params`` (its
            settings) and ``version`` (of torchexplain), plus anything a method adds.
        data: the results, e.g. ``attributions``, ``convergence_delta``.

    Fields of ``data`` and then ``meta`` are readable as attributes; ``data`` wins
    when both have a key.

    Examples:
        >>> exp = Explanation({"name": "demo"}, {"scores": torch.ones(2)})
        >>> exp.scores
        tensor([1., 1.])
        >>> Explanation.from_json(exp.to_json()).scores
        tensor([1., 1.])
    """

    __slots__ = ("meta", "data")

    def __init__(self, meta: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "meta", dict(meta))
        object.__setattr__(self, "data", dict(data))

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, so `meta`/`data` never recurse here.
        for store in (self.data, self.meta):
            if name in store:
                return store[name]
        raise AttributeError(
            f"Explanation has no field {name!r}; data fields: {sorted(self.data)}, "
            f"meta fields: {sorted(self.meta)}"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Explanation fields are read-only; build a new Explanation instead")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.data) | set(self.meta))

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={_describe(v)}" for k, v in self.data.items())
        return f"Explanation(name={self.meta.get('name')!r}, {fields})"

    def to_json(self, **dumps_kwargs: Any) -> str:
        """Serialise ``meta`` and ``data`` to a JSON string (tensors as nested lists)."""
        payload = {"meta": _encode(self.meta), "data": _encode(self.data)}
        return json.dumps(payload, **dumps_kwargs)

    @classmethod
    def from_json(cls, text: str) -> Explanation:
        """Rebuild an Explanation written by :meth:`to_json`."""
        payload = json.loads(text)
        if not isinstance(payload, dict) or set(payload) != {"meta", "data"}:
            raise ValueError(
                "expected a JSON object with exactly the keys 'meta' and 'data' "
                "(as written by Explanation.to_json())"
            )
        return cls(_decode(payload["meta"]), _decode(payload["data"]))


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)}:{str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_describe(v) for v in value) + ")"
    return repr(value)


def _encode(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        # bfloat16/float16 have no Python scalar type; float32 holds them exactly.
        listed = tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor
        return {
            _TENSOR_KEY: True,
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "shape": list(tensor.shape),
            "data": listed.tolist(),
        }
    if isinstance(value, np.ndarray):
        return {_NDARRAY_KEY: True, "dtype": value.dtype.str, "shape": list(value.shape), "data": value.tolist()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {_TUPLE_KEY: [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, torch.dtype):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot serialise a value of type {type(value).__name__} to JSON: {value!r}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get(_TENSOR_KEY) is True:
        dtype = getattr(torch, value["dtype"])
        return torch.tensor(value["data"], dtype=dtype).reshape(value["shape"])
    if value.get(_NDARRAY_KEY) is True:
        return np.asarray(value["data"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
    if _TUPLE_KEY in value and len(value) == 1:
        return tuple(_decode(v) for v in value[_TUPLE_KEY])
    return {k: _decode(v) for k, v in value.items()}
