"""Looking at the data before the model: group sizes, associations between columns, and a
split balanced per group.

- :func:`group_counts`: rows per group and per (group, label), flagging the small ones
  (``xai``'s ``imbalance_plot``, with the numbers returned).
- :func:`associations`: one matrix over all columns: Pearson's r for two numeric columns,
  Cramér's V for two categorical ones, the correlation ratio (eta) for a categorical and a
  numeric one; :func:`cluster_order` orders it by hierarchical clustering so that associated
  columns sit together (the proxies of a protected attribute show up as its block).
- :func:`balanced_train_test_split`: a seeded split with ``min_per_group`` and
  ``max_per_group`` rows per (group, label) and an explicit fallback for the small cells.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from torchexplain.fairness.groups import Groups, as_column, as_groups

__all__ = [
    "Associations",
    "BalancedSplit",
    "GroupCounts",
    "associations",
    "balanced_train_test_split",
    "cluster_order",
    "group_counts",
]


@dataclasses.dataclass(frozen=True)
class GroupCounts:
    """Rows per group (and per label).

    Attributes:
        groups: the groups counted.
        counts: ``(G,)`` rows per group.
        shares: ``(G,)`` each group's share of all rows.
        flagged: ``(G,)`` groups smaller than ``threshold`` times the largest.
        label_values: the labels, in order (empty without ``y``).
        label_counts: ``(G, L)`` rows per (group, label).
        label_flagged: ``(G, L)`` cells smaller than ``threshold`` times the largest cell.
        threshold: the share of the largest group (cell) below which one is flagged.
    """

    groups: Groups
    counts: torch.Tensor
    shares: torch.Tensor
    flagged: torch.Tensor
    label_values: list[Any]
    label_counts: torch.Tensor
    label_flagged: torch.Tensor
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "sensitive_features": self.groups.names,
            "groups": self.groups.label_strings(),
            "counts": self.counts.tolist(),
            "shares": self.shares.tolist(),
            "flagged": self.flagged.tolist(),
            "labels": [str(v) for v in self.label_values],
            "label_counts": self.label_counts.tolist(),
            "label_flagged": self.label_flagged.tolist(),
            "threshold": self.threshold,
        }


def group_counts(sensitive_features: Any, y: Any = None, *, threshold: float = 0.5) -> GroupCounts:
    """Rows per group and per (group, label), with the small ones flagged.

    Args:
        sensitive_features: one column or several (intersections).
        y: ``(N,)`` labels (optional).
        threshold: a group (a cell) is flagged when it has fewer rows than ``threshold``
            times the largest group (cell), as ``xai.imbalance_plot`` does.

    Examples:
        >>> counts = group_counts(["F", "M", "M", "M"], [1, 0, 1, 0])
        >>> counts.counts.tolist(), counts.flagged.tolist(), counts.label_counts.tolist()
        ([1, 3], [True, False], [[0, 1], [2, 1]])
    """
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    groups = as_groups(sensitive_features)
    n = groups.codes.numel()
    counts = groups.sizes()
    if y is None:
        values: list[Any] = []
        cells = torch.zeros(groups.n_groups, 0, dtype=torch.long)
    else:
        labels = as_column("y", y, n)
        if labels.dtype.kind == "f" and np.isnan(labels).any():
            raise ValueError("y has NaN values")
        unique, inverse = np.unique(labels, return_inverse=True)
        values = [v.item() if isinstance(v, np.generic) else v for v in unique]
        index = groups.codes * len(values) + torch.as_tensor(inverse.reshape(-1))
        cells = torch.bincount(index, minlength=groups.n_groups * len(values)).view(
            groups.n_groups, len(values)
        )
    return GroupCounts(
        groups=groups,
        counts=counts,
        shares=counts.double() / n,
        flagged=counts < threshold * counts.max(),
        label_values=values,
        label_counts=cells,
        label_flagged=cells < threshold * cells.max() if cells.numel() else cells.bool(),
        threshold=float(threshold),
    )


# ----------------------------------------------------------------------------- associations


@dataclasses.dataclass(frozen=True)
class Associations:
    """How strongly each pair of columns goes together.

    Attributes:
        values: ``(D, D)`` float64: Pearson's r (signed) for numeric pairs, Cramér's V (0..1)
            for categorical pairs, the correlation ratio eta (0..1) for mixed pairs; 1 on the
            diagonal; NaN where a column is constant.
        names: the column names.
        categorical: which columns were treated as categorical.
        kinds: ``(D, D)`` the measure of each pair (``"pearson"``, ``"cramers_v"``, ``"eta"``).
    """

    values: torch.Tensor
    names: list[str]
    categorical: list[bool]
    kinds: list[list[str]]

    def strength(self) -> torch.Tensor:
        """``(D, D)`` the values' magnitudes (|r| for Pearson), NaN as 0."""
        return torch.nan_to_num(self.values.abs(), nan=0.0)

    def associated_with(self, column: int, threshold: float = 0.3) -> list[int]:
        """The other columns whose association with ``column`` is at least ``threshold``."""
        row = self.strength()[column]
        return [j for j in range(len(self.names)) if j != column and float(row[j]) >= threshold]

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": self.names,
            "categorical": self.categorical,
            "values": [[None if v != v else v for v in row] for row in self.values.tolist()],
            "kinds": self.kinds,
        }


def _table(X: Any, feature_names: Sequence[str] | None) -> tuple[list[str], list[np.ndarray]]:
    """Columns of a 2-D array, tensor or DataFrame (names from the frame when it has them)."""
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):
        names = [str(c) for c in X.columns] if feature_names is None else list(feature_names)
        columns = [X[c].to_numpy() for c in X.columns]
    else:
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        array = np.asarray(X)
        if array.ndim != 2:
            raise ValueError(f"X must be 2-D (rows x columns), got shape {array.shape}")
        columns = [array[:, j] for j in range(array.shape[1])]
        names = (
            [f"x{j}" for j in range(array.shape[1])]
            if feature_names is None
            else list(feature_names)
        )
    if len(names) != len(columns):
        raise ValueError(f"feature_names has {len(names)} names for {len(columns)} columns")
    return names, columns


def _categorical_flags(columns: list[np.ndarray], categorical: Any) -> list[bool]:
    d = len(columns)
    if categorical is None:
        return [c.dtype.kind not in "biuf" for c in columns]
    if isinstance(categorical, dict):  # Alibi's category_map: column -> names
        categorical = list(categorical)
    flags = [False] * d
    for j in categorical:
        if not isinstance(j, (int, np.integer)) or not 0 <= j < d:
            raise ValueError(f"categorical must hold column indices in [0, {d}), got {j!r}")
        flags[int(j)] = True
    for j, c in enumerate(columns):
        if not flags[j] and c.dtype.kind not in "biuf":
            raise ValueError(f"column {j} is not numeric ({c.dtype}); list it in categorical")
    return flags


def _codes(column: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.unique(column, return_inverse=True)[1].reshape(-1))


def _cramers_v(a: torch.Tensor, b: torch.Tensor) -> float:
    ka, kb = int(a.max()) + 1, int(b.max()) + 1
    table = torch.bincount(a * kb + b, minlength=ka * kb).view(ka, kb).double()
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    r, k = table.shape
    if min(r, k) < 2:
        return float("nan")
    n = table.sum()
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / n
    chi2 = ((table - expected) ** 2 / expected).sum()
    return float(torch.sqrt(chi2 / (n * (min(r, k) - 1))))


def _eta(codes: torch.Tensor, values: torch.Tensor) -> float:
    k = int(codes.max()) + 1
    sizes = torch.bincount(codes, minlength=k).double()
    means = torch.zeros(k, dtype=torch.float64).scatter_add_(0, codes, values) / sizes.clamp_min(1)
    total = ((values - values.mean()) ** 2).sum()
    if total == 0:
        return float("nan")
    between = (sizes * (means - values.mean()) ** 2).sum()
    return float(torch.sqrt(between / total))


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    bottom = torch.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / bottom) if bottom > 0 else float("nan")


def associations(
    X: Any, *, categorical: Any = None, feature_names: Sequence[str] | None = None
) -> Associations:
    """The association of every pair of columns of ``X`` ``(N, D)``.

    Args:
        X: rows; a pandas DataFrame's non-numeric columns are categorical.
        categorical: the categorical columns' indices (or Alibi's ``category_map`` dict);
            default: the non-numeric ones.
        feature_names: column names (default the frame's, else ``x0, x1, ...``).

    Examples:
        >>> sex = np.array([0, 0, 1, 1] * 25)
        >>> hours = sex * 10.0 + np.arange(100) % 3
        >>> assoc = associations(np.stack([sex, hours], 1), categorical=[0])
        >>> round(float(assoc.values[0, 1]), 3), assoc.kinds[0][1]
        (0.987, 'eta')
    """
    names, columns = _table(X, feature_names)
    flags = _categorical_flags(columns, categorical)
    d = len(columns)
    coded = [
        _codes(c) if flag else torch.as_tensor(c.astype(np.float64))
        for c, flag in zip(columns, flags)
    ]
    values = torch.eye(d, dtype=torch.float64)
    kinds = [["self" if i == j else "" for j in range(d)] for i in range(d)]
    for i in range(d):
        for j in range(i + 1, d):
            if flags[i] and flags[j]:
                value, kind = _cramers_v(coded[i], coded[j]), "cramers_v"
            elif flags[i]:
                value, kind = _eta(coded[i], coded[j]), "eta"
            elif flags[j]:
                value, kind = _eta(coded[j], coded[i]), "eta"
            else:
                value, kind = _pearson(coded[i], coded[j]), "pearson"
            values[i, j] = values[j, i] = value
            kinds[i][j] = kinds[j][i] = kind
    return Associations(values=values, names=names, categorical=flags, kinds=kinds)


def cluster_order(assoc: Associations) -> tuple[list[int], Any]:
    """The columns in the leaf order of an average-linkage clustering on ``1 - strength``, and
    the linkage matrix (scipy's, for a dendrogram)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = (1 - assoc.strength()).clamp_min(0).numpy()
    np.fill_diagonal(distance, 0)
    if len(assoc.names) < 2:
        return list(range(len(assoc.names))), None
    links = linkage(squareform(distance, checks=False), method="average")
    return leaves_list(links).tolist(), links


# ----------------------------------------------------------------------------- split


@dataclasses.dataclass(frozen=True)
class BalancedSplit:
    """Row indices of a balanced split (``X[train_index]`` etc.; indices repeat where a cell
    was upsampled).

    Attributes:
        train_index, test_index: ``(n_train,)``, ``(n_test,)`` int64 row indices.
        cells: the (group, label) cells, in order.
        cell_rows: ``(C,)`` rows available per cell.
        cell_taken: ``(C,)`` rows taken per cell (train + test).
    """

    train_index: torch.Tensor
    test_index: torch.Tensor
    cells: list[Any]
    cell_rows: torch.Tensor
    cell_taken: torch.Tensor


def balanced_train_test_split(
    y: Any,
    sensitive_features: Any,
    *,
    min_per_group: int = 0,
    max_per_group: int | None = None,
    test_size: float = 0.2,
    fallback: str = "upsample",
    seed: int = 0,
) -> BalancedSplit:
    """A train/test split that takes between ``min_per_group`` and ``max_per_group`` rows from
    every (group, label) cell, as ``xai.balanced_train_test_split``.

    A cell with more than ``max_per_group`` rows gives a random ``max_per_group`` of them. A
    cell with fewer than ``min_per_group`` follows ``fallback``: ``"upsample"`` draws its rows
    again (with replacement) up to ``min_per_group``, ``"ignore"`` takes what it has,
    ``"error"`` raises. Each cell's rows then split ``test_size`` to test (at least one row in
    each side when the cell has two or more). Upsampled copies of a row stay on the side its
    first draw went to, so no row is in both.

    Args:
        y: ``(N,)`` labels.
        sensitive_features: one column or several.
        min_per_group: the fewest rows per cell (see ``fallback``).
        max_per_group: the most rows per cell (None: all).
        test_size: the share of each cell that goes to test, in (0, 1).
        fallback: ``"upsample"``, ``"ignore"`` or ``"error"``.
        seed: the random draws' seed (the same seed, the same split).

    Examples:
        >>> split = balanced_train_test_split([0, 1] * 50, ["F"] * 20 + ["M"] * 80,
        ...                                   max_per_group=10, test_size=0.2)
        >>> split.cell_taken.tolist(), len(split.train_index), len(split.test_index)
        ([10, 10, 10, 10], 32, 8)
    """
    labels = as_column("y", y)
    if labels.dtype.kind == "f" and np.isnan(labels).any():
        raise ValueError("y has NaN values")
    if fallback not in ("upsample", "ignore", "error"):
        raise ValueError(f"fallback must be 'upsample', 'ignore' or 'error', got {fallback!r}")
    if not isinstance(min_per_group, int) or min_per_group < 0:
        raise ValueError(f"min_per_group must be an int >= 0, got {min_per_group!r}")
    if max_per_group is not None and (
        not isinstance(max_per_group, int) or max_per_group < max(1, min_per_group)
    ):
        raise ValueError(
            f"max_per_group must be None or an int >= max(1, min_per_group), got {max_per_group!r}"
        )
    if not isinstance(test_size, float) or not 0 < test_size < 1:
        raise ValueError(f"test_size must be a float in (0, 1), got {test_size!r}")
    groups = as_groups(sensitive_features, len(labels))
    unique, inverse = np.unique(labels, return_inverse=True)
    cell_of = groups.codes.numpy() * len(unique) + inverse.reshape(-1)
    rng = np.random.default_rng(seed)
    train, test, cells, available, taken = [], [], [], [], []
    for cell in np.unique(cell_of):
        rows = rng.permutation(np.flatnonzero(cell_of == cell))
        label = groups.labels[cell // len(unique)], unique[cell % len(unique)].item()
        if max_per_group is not None:
            rows = rows[:max_per_group]
        test_rows = int(round(len(rows) * test_size))
        if len(rows) >= 2:
            test_rows = min(max(test_rows, 1), len(rows) - 1)
        side_test, side_train = rows[:test_rows], rows[test_rows:]
        if len(rows) < min_per_group:
            if fallback == "error":
                raise ValueError(
                    f"cell {label!r} (group, label) has {len(rows)} rows, fewer than "
                    f"min_per_group={min_per_group}; use fallback='upsample' or 'ignore'"
                )
            if fallback == "upsample":
                extra = rng.choice(rows, size=min_per_group - len(rows), replace=True)
                in_test = np.isin(extra, side_test)
                side_test = np.concatenate([side_test, extra[in_test]])
                side_train = np.concatenate([side_train, extra[~in_test]])
        cells.append(label)
        available.append(int((cell_of == cell).sum()))
        taken.append(len(side_test) + len(side_train))
        train.append(side_train)
        test.append(side_test)
    if any(count < min_per_group for count in taken) and fallback == "ignore":
        warnings.warn(
            "balanced_train_test_split: some cells have fewer than min_per_group rows "
            "(fallback='ignore')",
            stacklevel=2,
        )
    return BalancedSplit(
        train_index=torch.as_tensor(np.concatenate(train).astype(np.int64)),
        test_index=torch.as_tensor(np.concatenate(test).astype(np.int64)),
        cells=cells,
        cell_rows=torch.tensor(available),
        cell_taken=torch.tensor(taken),
    )
