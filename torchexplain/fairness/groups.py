"""Groups of rows from one or more sensitive columns (and their intersections).

Every fairness function takes ``sensitive_features`` the way fairlearn does: one column
(a list, numpy array, tensor or pandas Series) or several (a 2-D array, a DataFrame, or a
dict of name -> column). Several columns make intersectional groups: one group per
combination of values *seen in the data*, in sorted order (fairlearn's ``groupby``
order), labelled by the tuple of values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

__all__ = ["Groups", "as_column", "as_groups", "plain"]


@dataclasses.dataclass(frozen=True)
class Groups:
    """Which group each row is in.

    Attributes:
        codes: ``(N,)`` int64, the group of each row, ``0 .. n_groups - 1``.
        labels: one label per group: the column's value, or a tuple of values when there
            are several sensitive columns.
        names: the sensitive columns' names (fairlearn's ``sensitive_feature_0``... when the
            input carries none).
    """

    codes: torch.Tensor
    labels: list[Any]
    names: list[str]

    @property
    def n_groups(self) -> int:
        return len(self.labels)

    def label_strings(self) -> list[str]:
        """A printable name per group (``"Female"``, ``"Female, White"``)."""
        return [
            ", ".join(str(v) for v in label) if isinstance(label, tuple) else str(label)
            for label in self.labels
        ]

    def sizes(self) -> torch.Tensor:
        """``(G,)`` rows per group."""
        return torch.bincount(self.codes, minlength=self.n_groups)


def plain(values: torch.Tensor) -> Any:
    """A tensor as nested lists of Python numbers for JSON, NaN as None."""

    def clean(v: Any) -> Any:
        if isinstance(v, list):
            return [clean(x) for x in v]
        return None if isinstance(v, float) and v != v else v

    return clean(values.tolist())


def _python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def as_column(name: str, value: Any, n_rows: int | None = None) -> np.ndarray:
    """A 1-D numpy column from a list, array, tensor or pandas Series (checked length)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    elif hasattr(value, "to_numpy") and not isinstance(value, np.ndarray):
        value = value.to_numpy()
    try:
        column = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a 1-D array-like, got {type(value).__name__}") from err
    if column.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per row), got shape {column.shape}")
    if n_rows is not None and len(column) != n_rows:
        raise ValueError(f"{name} has {len(column)} rows, expected {n_rows} (as y_true)")
    return column


def _columns(sensitive_features: Any) -> tuple[list[np.ndarray], list[str]]:
    value = sensitive_features
    if isinstance(value, dict):
        names = [str(k) for k in value]
        return [as_column(f"sensitive_features[{k!r}]", v) for k, v in value.items()], names
    if hasattr(value, "columns") and hasattr(value, "to_numpy"):  # a pandas DataFrame
        names = [str(c) for c in value.columns]
        return [value[c].to_numpy() for c in value.columns], names
    if hasattr(value, "to_numpy") and hasattr(value, "name"):  # a pandas Series
        name = value.name if value.name is not None else "sensitive_feature_0"
        return [value.to_numpy()], [str(name)]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(
            "sensitive_features must be a column (list, array, tensor, Series) or several "
            f"(2-D array, DataFrame, dict), got {type(value).__name__}"
        )
    array = np.asarray(value, dtype=object if _ragged(value) else None)
    if array.ndim == 1:
        return [array], ["sensitive_feature_0"]
    if array.ndim == 2:
        return [array[:, j] for j in range(array.shape[1])], [
            f"sensitive_feature_{j}" for j in range(array.shape[1])
        ]
    raise ValueError(
        f"sensitive_features must be 1-D or 2-D (rows x columns), got shape {array.shape}"
    )


def _ragged(value: Any) -> bool:
    try:
        np.asarray(value)
    except ValueError:
        return True
    return False


def _codes(name: str, column: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    if column.dtype.kind == "f" and np.isnan(column).any():
        raise ValueError(f"{name} has NaN values; give missing values a group of their own")
    if column.dtype.kind == "O" and any(v is None for v in column):
        raise ValueError(f"{name} has None values; give missing values a group of their own")
    try:
        values, inverse = np.unique(column, return_inverse=True)
    except TypeError as err:
        raise TypeError(f"{name} mixes values that cannot be sorted together: {err}") from err
    return inverse.reshape(-1), [_python(v) for v in values]


def as_groups(
    sensitive_features: Any,
    n_rows: int | None = None,
    *,
    min_groups: int = 1,
    device: torch.device | str | None = None,
) -> Groups:
    """The groups of ``sensitive_features`` (intersections when there are several columns).

    Args:
        sensitive_features: one column or several (see the module's docstring).
        n_rows: the number of rows expected (the length of ``y_true``).
        min_groups: fewer groups than this is a ``ValueError`` (a disparity needs two).
        device: where ``codes`` live.

    Examples:
        >>> groups = as_groups({"sex": ["F", "M", "F"], "race": [0, 0, 1]})
        >>> groups.codes.tolist(), groups.labels
        ([0, 2, 1], [('F', 0), ('F', 1), ('M', 0)])
    """
    columns, names = _columns(sensitive_features)
    if not columns:
        raise ValueError("sensitive_features has no columns")
    n = len(columns[0]) if n_rows is None else n_rows
    for name, column in zip(names, columns):
        if len(column) != n:
            raise ValueError(
                f"sensitive_features column {name!r} has {len(column)} rows, expected {n}"
            )
    if n == 0:
        raise ValueError("sensitive_features has no rows")
    coded = [_codes(f"sensitive_features column {nm!r}", c) for nm, c in zip(names, columns)]
    combined = np.zeros(n, dtype=np.int64)
    for inverse, values in coded:
        combined = combined * len(values) + inverse
    seen, codes = np.unique(combined, return_inverse=True)
    labels: list[Any] = []
    for key in seen.tolist():
        parts = []
        for _, values in reversed(coded):
            key, position = divmod(key, len(values))
            parts.append(values[position])
        parts.reverse()
        labels.append(parts[0] if len(parts) == 1 else tuple(parts))
    if len(labels) < min_groups:
        raise ValueError(
            f"sensitive_features has {len(labels)} group(s) ({labels!r}); at least "
            f"{min_groups} are needed to compare groups"
        )
    return Groups(
        codes=torch.as_tensor(codes.reshape(-1), dtype=torch.int64, device=device),
        labels=labels,
        names=names,
    )
