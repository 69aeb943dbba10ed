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
    def from_json(cls, text: str | bytes) -> Explanation:
        """Rebuild an Explanation written by :meth:`to_json`.

        Only the payload :meth:`to_json` writes is accepted: tensors of the dtypes in
        :data:`TENSOR_DTYPES`, numpy arrays of boolean or numeric dtypes, tuples,
        lists, objects and JSON scalars. Anything else, and tensors whose data does
        not match their recorded shape, raise ``ValueError`` naming the field.
        """
        if not isinstance(text, (str, bytes, bytearray)):
            raise TypeError(
                f"from_json takes the JSON text (str or bytes), got {type(text).__name__}"
            )
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"not valid JSON: {err}") from None
        if not isinstance(payload, dict) or set(payload) != {"meta", "data"}:
            raise ValueError(
                "expected a JSON object with exactly the keys 'meta' and 'data' "
                "(as written by Explanation.to_json())"
            )
        for key in ("meta", "data"):
            if not isinstance(payload[key], dict):
                raise ValueError(
                    f"'{key}' must be a JSON object, got {type(payload[key]).__name__}"
                )
        return cls(_decode(payload["meta"], "meta"), _decode(payload["data"], "data"))


#: The tensor dtypes an Explanation's JSON may hold (an allow-list: names are never
#: looked up on the ``torch`` module).
TENSOR_DTYPES: dict[str, torch.dtype] = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}
#: numpy dtype kinds an ndarray in the JSON may have: bool, signed, unsigned, float.
_NDARRAY_KINDS = "biuf"


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
        return {
            _NDARRAY_KEY: True,
            "dtype": value.dtype.str,
            "shape": list(value.shape),
            "data": value.tolist(),
        }
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


def _decode(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if _TENSOR_KEY in value:
        return _decode_array(value, where, tensor=True)
    if _NDARRAY_KEY in value:
        return _decode_array(value, where, tensor=False)
    if _TUPLE_KEY in value:
        if len(value) != 1 or not isinstance(value[_TUPLE_KEY], list):
            raise ValueError(f"{where}: a tuple must be written as {{{_TUPLE_KEY!r}: [...]}} alone")
        return tuple(_decode(v, f"{where}[{i}]") for i, v in enumerate(value[_TUPLE_KEY]))
    return {k: _decode(v, f"{where}.{k}") for k, v in value.items()}


def _decode_array(value: dict[str, Any], where: str, tensor: bool) -> Any:
    marker = _TENSOR_KEY if tensor else _NDARRAY_KEY
    expected = {marker, "dtype", "shape", "data"}
    if value.get(marker) is not True or set(value) != expected:
        raise ValueError(
            f"{where}: an encoded array needs exactly the keys {sorted(expected)}, got {sorted(value)}"
        )
    shape = value["shape"]
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise ValueError(f"{where}: shape must be a list of non-negative ints, got {shape!r}")
    name = value["dtype"]
    if tensor:
        if name not in TENSOR_DTYPES:
            raise ValueError(
                f"{where}: tensor dtype {name!r} is not one of {sorted(TENSOR_DTYPES)}"
            )
        dtype: Any = TENSOR_DTYPES[name]
    else:
        try:
            dtype = np.dtype(name) if isinstance(name, str) else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in _NDARRAY_KINDS:
            raise ValueError(
                f"{where}: ndarray dtype {name!r} is not a boolean or numeric numpy dtype"
            )
    data = value["data"]
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise ValueError(f"{where}: data is not a rectangular array of numbers") from None
    target_kind = (
        ("f" if dtype.is_floating_point else "b" if dtype == torch.bool else "i")
        if tensor
        else dtype.kind
    )
    allowed = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}[target_kind]
    if int(np.prod(shape)) == 0:
        if array.size != 0:
            raise ValueError(
                f"{where}: the recorded shape {tuple(shape)} is empty but data holds {array.size} values"
            )
        return torch.empty(shape, dtype=dtype) if tensor else np.empty(shape, dtype=dtype)
    if tuple(array.shape) != tuple(shape):
        raise ValueError(
            f"{where}: data of shape {tuple(array.shape)} does not match the recorded shape {tuple(shape)}"
        )
    if array.dtype.kind not in allowed:
        raise ValueError(f"{where}: data of kind {array.dtype.kind!r} cannot be read as {name!r}")
    if not tensor:
        return array.astype(dtype)
    return torch.tensor(array.tolist() if array.dtype.kind != "f" else array, dtype=dtype).reshape(
        shape
    )
