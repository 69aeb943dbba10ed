"""Argument checks shared by every explainer.

One rule everywhere: a value of the wrong *type* raises ``TypeError``, a value of
the right type that is out of range raises ``ValueError``; both name the argument,
say what was expected and show what was given.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from typing import Any

import torch


def _shown(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real Python or numpy number, not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_shown(value)}")
    return value


def check_int(
    name: str, value: Any, minimum: int | None = None, allow_none: bool = False
) -> int | None:
    """An integer ``>= minimum`` (or None when ``allow_none``)."""
    if value is None and allow_none:
        return None
    if not is_int(value):
        expected = "an int" + (" or None" if allow_none else "")
        raise TypeError(f"{name} must be {expected}, got {_shown(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number inside the given (open or closed) bounds."""
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {_shown(value)}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{name} must be a finite number in {span}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {list(choices)}, got {_shown(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_callable(name: str, value: Any) -> Any:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {_shown(value)}")
    return value


def check_chunk_size(name: str, value: Any) -> int | str | None:
    """``"auto"``, ``None`` (everything in one call) or a positive int."""
    if value is None or value == "auto":
        return value
    if isinstance(value, str):
        raise ValueError(f"{name} must be 'auto', None or an int >= 1, got {value!r}")
    if not is_int(value):
        raise TypeError(f"{name} must be 'auto', None or an int >= 1, got {_shown(value)}")
    if value < 1:
        raise ValueError(f"{name} must be 'auto', None or an int >= 1, got {value!r}")
    return int(value)


def check_seed(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not is_int(value):
        raise TypeError(f"{name} must be an int or None, got {_shown(value)}")
    if not 0 <= value < 2**63:
        raise ValueError(f"{name} must be in [0, 2**63), got {value!r}")
    return int(value)


def check_device(name: str, value: Any) -> str | None:
    """None, or a device name torch understands, normalised (``"cuda"`` stays ``"cuda"``)."""
    if value is None:
        return None
    if not isinstance(value, (str, torch.device)):
        raise TypeError(
            f"{name} must be None, a string or a torch.device, got {type(value).__name__}"
        )
    try:
        return str(torch.device(value))
    except RuntimeError as err:
        raise ValueError(f"{name} {value!r} is not a valid torch device: {err}") from None


def as_numeric_tensor(name: str, value: Any, layout: str) -> torch.Tensor:
    """A tensor (detached) or a numeric numpy array as a tensor, for black-box methods' rows.

    Shapes and dtypes beyond "holds numbers" are the caller's to check.
    """
    import numpy as np

    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise TypeError(
                f"{name} must hold numbers (categorical columns as integer codes), got dtype {value.dtype}"
            )
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(
        f"{name} must be a torch.Tensor or a numpy array shaped {layout}, got {type(value).__name__}"
    )


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Refuse NaN and infinite values, saying how many and where the first is."""
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        bad = (~finite).nonzero()
        first = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{name} contains {bad.shape[0]} non-finite value(s) (NaN or inf), the first at index "
            f"{first}; explanations of non-finite inputs are meaningless"
        )
    return value


# ----------------------------------------------------------------------------- field checks
#
# A setting's check is attached to its field (``setting(..., check=...)``): a callable
# ``(name, value) -> value`` that raises TypeError/ValueError naming the setting, or
# returns the value normalised (a numpy integer as an int, a list as a list). The
# factories below make the checks the settings share.

FieldCheck = Callable[[str, Any], Any]


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> FieldCheck:
    """A finite number in the given bounds, as a float."""
    return functools.partial(
        check_number, low=low, high=high, low_open=low_open, high_open=high_open
    )


def integer(minimum: int | None = None, *, optional: bool = False) -> FieldCheck:
    """An int ``>= minimum`` (or None when ``optional``)."""
    return functools.partial(check_int, minimum=minimum, allow_none=optional)


def auto_or_integer(minimum: int) -> FieldCheck:
    """``"auto"`` or an int ``>= minimum``."""

    def check(name: str, value: Any) -> int | str:
        if value == "auto":
            return value
        if isinstance(value, str) or not is_int(value):
            raise TypeError(f"{name} must be 'auto' or an int >= {minimum}, got {_shown(value)}")
        return check_int(name, value, minimum=minimum)

    return check


def choice(*choices: str) -> FieldCheck:
    """One of the given strings."""
    return functools.partial(check_choice, choices=choices)


def boolean(*, optional: bool = False) -> FieldCheck:
    """True or False (or None when ``optional``: "decide for me")."""

    def check(name: str, value: Any) -> bool | None:
        if value is None and optional:
            return None
        if not isinstance(value, bool):
            expected = "True, False or None" if optional else "True or False"
            raise TypeError(f"{name} must be {expected}, got {_shown(value)}")
        return value

    return check


def chunk_size() -> FieldCheck:
    """``"auto"``, None or a positive int (how much work goes through a model at once)."""
    return check_chunk_size


def seed() -> FieldCheck:
    """None or an int in ``[0, 2**63)``."""
    return check_seed


def device() -> FieldCheck:
    """None or a device name torch understands, normalised."""
    return check_device


def optional_callable() -> FieldCheck:
    """None or a callable."""

    def check(name: str, value: Any) -> Any:
        return None if value is None else check_callable(name, value)

    return check


def names() -> FieldCheck:
    """None or a non-empty list of distinct strings, as a list."""

    def check(name: str, value: Any) -> list[str] | None:
        if value is None:
            return None
        if (
            isinstance(value, str)
            or not isinstance(value, Sequence)
            or not value
            or not all(isinstance(n, str) for n in value)
        ):
            raise TypeError(f"{name} must be a non-empty list of strings, got {_shown(value)}")
        if len(set(value)) != len(value):
            raise ValueError(f"{name} must be distinct, got {list(value)}")
        return list(value)

    return check


def indices() -> FieldCheck:
    """None or a list of distinct ints >= 0, as a sorted list."""

    def check(name: str, value: Any) -> list[int] | None:
        if value is None:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(
                f"{name} must be None or a list of feature indices, got {_shown(value)}"
            )
        if not all(is_int(i) and i >= 0 for i in value):
            raise ValueError(f"{name} must hold ints >= 0 (feature indices), got {list(value)}")
        if len(set(value)) != len(value):
            raise ValueError(f"{name} must be distinct, got {list(value)}")
        return sorted(int(i) for i in value)

    return check


def category_names() -> FieldCheck:
    """None or a dict column index -> non-empty list of category names, sorted by column."""

    def check(name: str, value: Any) -> dict[int, list[str]] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise TypeError(f"{name} must be a dict (column -> names), got {type(value).__name__}")
        clean = {}
        for column, values in value.items():
            if not is_int(column) or int(column) < 0:
                raise ValueError(f"{name} key {column!r} is not a column index")
            if (
                isinstance(values, str)
                or not isinstance(values, Sequence)
                or not values
                or not all(isinstance(v, str) for v in values)
            ):
                raise TypeError(
                    f"{name}[{column}] must be a non-empty list of strings, got {_shown(values)}"
                )
            clean[int(column)] = list(values)
        return dict(sorted(clean.items()))

    return check


def pair(check_item: FieldCheck, *, increasing: bool = False) -> FieldCheck:
    """A pair ``(a, b)`` whose items pass ``check_item`` (and ``a < b`` when ``increasing``), as a tuple."""

    def check(name: str, value: Any) -> tuple[Any, Any]:
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"{name} must be a pair (min, max), got {_shown(value)}")
        items = (check_item(f"{name} min", value[0]), check_item(f"{name} max", value[1]))
        if increasing and not items[0] < items[1]:
            raise ValueError(f"{name} must have min < max, got {items}")
        return items

    return check
