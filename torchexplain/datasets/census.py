"""The census income ("loan") table, bundled: Adult (UCI), as tabular explainers are shown on it.

``load_census()`` reads the 32,561-row table shipped beside this file (see
``NOTICE.md``), codes each categorical column as integers 0..K-1 (categories in
sorted order, the source's leading spaces removed; "?" kept as its own category),
and splits it with a fixed seed. The layout is the one Alibi's ``AnchorTabular``
and ``KernelShap`` take: a numeric matrix plus ``categorical_names`` mapping a
column index to the names of its codes.
"""

from __future__ import annotations

import csv
import functools
import gzip
from importlib import resources
from typing import NamedTuple

import numpy as np

__all__ = ["CENSUS_FEATURES", "CensusData", "load_census"]

BUNDLED_FILE = "adult_census.csv.gz"
#: the features, in column order (the source's names, as Alibi's examples write them)
CENSUS_FEATURES = [
    "Age",
    "Workclass",
    "Education",
    "Education-Num",
    "Marital Status",
    "Occupation",
    "Relationship",
    "Race",
    "Sex",
    "Capital Gain",
    "Capital Loss",
    "Hours per week",
]
_SOURCE_COLUMNS = [
    "age",
    "workclass",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "ethnicity",
    "gender",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
]
_CATEGORICAL = {
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "ethnicity",
    "gender",
}
#: the target's classes, in code order
CENSUS_CLASSES = ["<=50K", ">50K"]


class CensusData(NamedTuple):
    """The coded table and its split.

    Attributes:
        X_train, X_test: ``(N, 12)`` float32 rows (categorical columns hold their codes).
        y_train, y_test: ``(N,)`` int64, 1 for income ``>50K``.
        feature_names: the 12 column names.
        categorical_names: column index -> names of its codes (Alibi's ``category_map``).
        class_names: ``["<=50K", ">50K"]``.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]
    categorical_names: dict[int, list[str]]
    class_names: list[str]


@functools.lru_cache(maxsize=1)
def _read_table() -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, tuple[str, ...]], ...]]:
    with resources.files("torchexplain.datasets").joinpath(BUNDLED_FILE).open("rb") as raw:
        with gzip.open(raw, "rt", newline="") as text:
            rows = list(csv.reader(text))
    header, body = rows[0], rows[1:]
    index = {name: i for i, name in enumerate(header)}
    columns, categories = [], []
    for position, name in enumerate(_SOURCE_COLUMNS):
        values = [row[index[name]].strip() for row in body]
        if name in _CATEGORICAL:
            names = sorted(set(values))
            code = {value: i for i, value in enumerate(names)}
            columns.append(np.array([code[v] for v in values], dtype=np.float32))
            categories.append((position, tuple(names)))
        else:
            columns.append(np.array([float(v) for v in values], dtype=np.float32))
    target = np.array([row[index["loan"]].strip() == ">50K" for row in body], dtype=np.int64)
    return np.stack(columns, axis=1), target, tuple(categories)


def load_census(test_size: int = 2561, seed: int = 0) -> CensusData:
    """The census table, coded and split (shuffled with ``seed``; ``test_size`` rows held out).

    Examples:
        >>> data = load_census()
        >>> data.X_train.shape, data.X_test.shape
        ((30000, 12), (2561, 12))
        >>> data.categorical_names[8]
        ['Female', 'Male']
    """
    X, y, categories = _read_table()
    if not isinstance(test_size, int) or not 0 < test_size < len(X):
        raise ValueError(f"test_size must be an int in (0, {len(X)}), got {test_size!r}")
    order = np.random.default_rng(seed).permutation(len(X))
    test, train = order[:test_size], order[test_size:]
    return CensusData(
        X_train=X[train].copy(),
        y_train=y[train].copy(),
        X_test=X[test].copy(),
        y_test=y[test].copy(),
        feature_names=list(CENSUS_FEATURES),
        categorical_names={c: list(names) for c, names in categories},
        class_names=list(CENSUS_CLASSES),
    )
