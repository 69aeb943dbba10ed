"""Permutation importance, batched: every feature and repeat through the model in few calls,
overall and per group.

A feature's importance is how much the score drops when its column is shuffled (Breiman 2001;
scikit-learn's ``permutation_importance``). Here the ``F x R`` shuffled copies of the rows are
built chunk by chunk and scored by the model-call layer in calls as large as the device takes,
and every group's score comes from the same model outputs (a group's importance: its rows'
score drop when the column is shuffled over all rows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from torchexplain import _checks, _memory
from torchexplain._model_state import preserved_model_state
from torchexplain.fairness.groups import Groups, as_column, as_groups
from torchexplain.fairness.metrics import _AucOrder
from torchexplain.models.predictor import Predictor
from torchexplain.models.rows import Rows

__all__ = ["PermutationImportance", "permutation_importance", "sklearn_permutations"]

SCORINGS = ("accuracy", "roc_auc", "neg_mean_squared_error", "r2")


@dataclasses.dataclass(frozen=True)
class PermutationImportance:
    """What :func:`permutation_importance` found (scikit-learn's Bunch fields, plus groups).

    Attributes:
        importances: ``(F, R)`` the score drop per feature and repeat.
        importances_mean, importances_std: ``(F,)`` over repeats (``std`` with ``ddof=0``).
        baseline_score: the score on the rows as given.
        features: the column index of each feature.
        feature_names: their names.
        groups: the groups (None without ``sensitive_features``).
        importances_by_group: ``(G, F, R)`` the drop of each group's score.
        baseline_by_group: ``(G,)``.
        rows_evaluated: rows through the model (``N * (F * R + 1)``).
    """

    importances: torch.Tensor
    importances_mean: torch.Tensor
    importances_std: torch.Tensor
    baseline_score: float
    features: list[int]
    feature_names: list[str]
    groups: Groups | None
    importances_by_group: torch.Tensor | None
    baseline_by_group: torch.Tensor | None
    rows_evaluated: int

    def to_dict(self) -> dict[str, Any]:
        result = {
            "feature_names": self.feature_names,
            "baseline_score": self.baseline_score,
            "importances_mean": self.importances_mean.tolist(),
            "importances_std": self.importances_std.tolist(),
        }
        if self.groups is not None:
            result["groups"] = self.groups.label_strings()
            result["baseline_by_group"] = self.baseline_by_group.tolist()
            result["importances_mean_by_group"] = self.importances_by_group.mean(-1).tolist()
        return result


def sklearn_permutations(n_rows: int, n_repeats: int, random_state: int) -> torch.Tensor:
    """``(R, N)`` the row orders scikit-learn's ``permutation_importance(..., random_state=)``
    gives each column, as permutations of the original column (scikit-learn shuffles the
    already-shuffled column again at every repeat; these are the compositions)."""
    seed = np.random.RandomState(random_state).randint(np.iinfo(np.int32).max + 1)
    rng = np.random.RandomState(seed)
    shuffling = np.arange(n_rows)
    effective = np.arange(n_rows)
    orders = []
    for _ in range(n_repeats):
        rng.shuffle(shuffling)
        effective = effective[shuffling]
        orders.append(effective.copy())
    return torch.as_tensor(np.stack(orders))


def _scores(
    scoring: str | Callable,
    outputs: torch.Tensor,
    y: torch.Tensor,
    codes: torch.Tensor,
    n_groups: int,
) -> torch.Tensor:
    """``(S, G + 1)`` scores of ``S`` slices of outputs ``(S, N, ...)``: per group, then overall."""
    s = outputs.shape[0]
    all_codes = torch.cat([codes, torch.full_like(codes, n_groups)])
    if callable(scoring):
        out = torch.empty(s, n_groups + 1, dtype=torch.float64)
        for g in range(n_groups + 1):
            members = torch.ones_like(codes, dtype=torch.bool) if g == n_groups else codes == g
            for i in range(s):
                out[i, g] = float(scoring(y[members], outputs[i][members]))
        return out.to(outputs.device)
    if scoring == "roc_auc":
        score = outputs[..., -1] - outputs[..., 0] if outputs.dim() == 3 else outputs
        out = []
        for i in range(s):
            ones = torch.ones(1, y.numel(), dtype=torch.float64, device=y.device)
            overall = _AucOrder(score[i].double(), y.double(), torch.zeros_like(codes), 1)
            parts = [overall.auc(ones)[0]]
            if n_groups:
                order = _AucOrder(score[i].double(), y.double(), codes, n_groups)
                parts.insert(0, order.auc(ones)[0])
            out.append(torch.cat(parts))
        return torch.stack(out)
    if scoring == "accuracy":
        predicted = outputs.argmax(-1) if outputs.dim() == 3 else outputs
        per_row = (predicted == y).double()
    else:
        values = outputs.reshape(s, y.numel()).double()
        per_row = -((values - y.double()) ** 2)
    index = all_codes.expand(s, -1)
    doubled = torch.cat([per_row, per_row], 1)
    sums = per_row.new_zeros(s, n_groups + 1).scatter_add_(1, index, doubled)
    sizes = torch.bincount(all_codes, minlength=n_groups + 1).double()
    means = sums / sizes
    if scoring != "r2":
        return means
    target = y.double()
    centred = torch.cat([target, target])
    group_means = (
        torch.zeros(n_groups + 1, dtype=torch.float64, device=y.device).scatter_add_(
            0, all_codes, centred
        )
        / sizes
    )
    total = (
        torch.zeros(n_groups + 1, dtype=torch.float64, device=y.device).scatter_add_(
            0, all_codes, (centred - group_means[all_codes]) ** 2
        )
        / sizes
    )
    return 1 + means / total


def permutation_importance(
    model: Any,
    X: Any,
    y: Any,
    *,
    scoring: str | Callable = "accuracy",
    n_repeats: int = 5,
    seed: int | None = 0,
    permutations: Any = None,
    features: Sequence[int] | None = None,
    feature_names: Sequence[str] | None = None,
    sensitive_features: Any = None,
    batch_size: int | str | None = "auto",
    device: str | torch.device | None = None,
) -> PermutationImportance:
    """Permutation importance of each feature (column), overall and per group.

    Args:
        model: an ``nn.Module``, a function on numpy arrays, or a Predictor/RemoteModel:
            rows ``(N, D)`` -> class scores ``(N, K)`` or values ``(N,)``.
        X: ``(N, D)`` rows.
        y: ``(N,)`` labels (or regression targets).
        scoring: ``"accuracy"`` (argmax of class scores, or the outputs as labels),
            ``"roc_auc"`` (last minus first class score: the ranking of the positive class's
            probability or logit margin), ``"neg_mean_squared_error"``, ``"r2"``, or a function
            ``score(y_true, outputs) -> float`` on tensors, greater is better.
        n_repeats: shuffles per feature.
        seed: the shuffles' seed (ignored when ``permutations`` is given).
        permutations: ``(R, N)`` row orders to apply to each column (e.g.
            :func:`sklearn_permutations` to reproduce scikit-learn's numbers).
        features: the columns to permute (default all).
        feature_names: names of all D columns.
        sensitive_features: groups to score separately (one column or several).
        batch_size: rows per model call (``"auto"``: sized to the device's memory).
        device: where rows and outputs live (default: CUDA when available).

    Returns:
        A :class:`PermutationImportance`.

    Examples:
        >>> predict = lambda rows: rows[:, :1] * np.array([[-1.0, 1.0]])
        >>> X = np.array([[-1.0, 5.0], [1.0, 5.0], [-2.0, 0.0], [2.0, 1.0]])
        >>> result = permutation_importance(predict, X, [0, 1, 0, 1], n_repeats=3, device="cpu")
        >>> result.baseline_score, result.importances_mean[1].item()
        (1.0, 0.0)
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = Rows.of(X, "X", integers=True, exact_dim=2, layout="(N, D)").values.to(device)
    n, d = rows.shape
    target = as_column("y", y, n)
    if target.dtype.kind == "f" and np.isnan(target).any():
        raise ValueError("y has NaN values")
    if target.dtype.kind not in "biuf":
        raise TypeError(f"y must be numeric labels or values, got dtype {target.dtype}")
    y_t = torch.as_tensor(target, device=device)
    if not callable(scoring):
        _checks.check_choice("scoring", scoring, SCORINGS)
    if scoring == "roc_auc" and len(np.unique(target)) != 2:
        raise ValueError("scoring='roc_auc' needs binary y with both classes present")
    n_repeats = _checks.check_int("n_repeats", n_repeats, minimum=1)
    features = list(range(d)) if features is None else [int(f) for f in features]
    if not features or any(not 0 <= f < d for f in features):
        raise ValueError(f"features must be column indices in [0, {d}), got {features!r}")
    if feature_names is not None and len(feature_names) != d:
        raise ValueError(f"feature_names has {len(feature_names)} names for {d} columns")
    names = [str(feature_names[f]) if feature_names else f"x{f}" for f in features]
    orders = _orders(permutations, n, n_repeats, seed).to(device)
    r = orders.shape[0]
    groups = None if sensitive_features is None else as_groups(sensitive_features, n, device=device)
    codes = groups.codes if groups is not None else torch.zeros(n, dtype=torch.long, device=device)
    n_groups = groups.n_groups if groups is not None else 0
    columns = torch.as_tensor(features, device=device)

    def build(start: int, stop: int) -> torch.Tensor:
        k = torch.arange(start, stop, device=device)
        slot, i = k // n, k % n
        feature, repeat = columns[slot // r], slot % r
        batch = rows[i].clone()
        batch[torch.arange(stop - start, device=device), feature] = rows[orders[repeat, i], feature]
        return batch

    bytes_per_row = rows.element_size() * d * _memory.FORWARD_BYTES_FACTOR
    predictor = Predictor.wrap(
        model,
        device=device,
        batch_size=batch_size,
        auto_rows=lambda total: _memory.rows_per_chunk(bytes_per_row, device, total),
    )
    with preserved_model_state(model):
        with torch.no_grad():
            baseline_out = predictor.outputs(rows)
            permuted = predictor.map(len(features) * r * n, build)
    baseline = _scores(scoring, baseline_out[None], y_t, codes, n_groups)[0]
    scores = _scores(
        scoring, permuted.view(len(features) * r, n, *permuted.shape[1:]), y_t, codes, n_groups
    )
    drops = (baseline - scores).view(len(features), r, n_groups + 1).cpu()
    overall = drops[..., -1]
    by_group = drops[..., :-1].permute(2, 0, 1) if groups is not None else None
    return PermutationImportance(
        importances=overall,
        importances_mean=overall.mean(1),
        importances_std=overall.std(1, unbiased=False),
        baseline_score=float(baseline[-1]),
        features=features,
        feature_names=names,
        groups=groups,
        importances_by_group=by_group,
        baseline_by_group=baseline[:-1].cpu() if groups is not None else None,
        rows_evaluated=n * (len(features) * r + 1),
    )


def _orders(permutations: Any, n: int, n_repeats: int, seed: int | None) -> torch.Tensor:
    if permutations is None:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        return torch.stack([torch.randperm(n, generator=generator) for _ in range(n_repeats)])
    orders = torch.as_tensor(
        np.asarray(permutations) if not isinstance(permutations, torch.Tensor) else permutations
    )
    if orders.dim() != 2 or orders.shape[1] != n:
        raise ValueError(
            f"permutations must be (n_repeats, {n}) row orders, got shape {tuple(orders.shape)}"
        )
    if not torch.equal(orders.sort(1).values.cpu(), torch.arange(n).expand_as(orders)):
        raise ValueError("permutations: every row must be a permutation of 0..N-1")
    return orders.long()
