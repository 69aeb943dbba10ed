"""A model's metrics per group, their disparities and bootstrap intervals, batched.

The names and call shapes are fairlearn's (``MetricFrame``, ``selection_rate``,
``demographic_parity_difference``, ...), so a fairlearn user switches by changing an import.
Every metric of a binary classifier comes from one weighted count of (group, y_true, y_pred)
cells, and the bootstrap computes those counts for all resamples at once: a resample is a
row of multiplicities, and the counts of ``B`` resamples are one scatter-add. AUC is
rank-based (the probability that a positive outscores a negative, ties counting a half), from
scores, never from thresholded labels.

Where fairlearn (through scikit-learn) returns 0.0 for an undefined metric (precision with no
predicted positive, say) this module returns NaN with a :class:`UndefinedMetricWarning`: a
rate with no denominator is not 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from torchexplain.fairness.groups import Groups, as_column, as_groups, plain

__all__ = [
    "METRICS",
    "MetricFrame",
    "UndefinedMetricWarning",
    "count",
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equal_opportunity_difference",
    "equal_opportunity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "false_negative_rate",
    "false_positive_rate",
    "mean_prediction",
    "roc_curve_by_group",
    "selection_rate",
    "true_negative_rate",
    "true_positive_rate",
]


class UndefinedMetricWarning(RuntimeWarning):
    """A metric has no denominator for some group (no positives, no predicted positives, one
    class only); its value there is NaN."""


#: the metrics computed on the device, by name (``specificity`` is the true negative rate)
METRICS = (
    "count",
    "selection_rate",
    "mean_prediction",
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "true_positive_rate",
    "false_positive_rate",
    "true_negative_rate",
    "specificity",
    "false_negative_rate",
    "f1",
    "roc_auc",
)
#: scikit-learn's and fairlearn's functions, by ``__name__``, and the metric each one is
_ALIASES = {
    "accuracy_score": "accuracy",
    "balanced_accuracy_score": "balanced_accuracy",
    "precision_score": "precision",
    "recall_score": "recall",
    "f1_score": "f1",
    "roc_auc_score": "roc_auc",
    "tpr": "true_positive_rate",
    "fpr": "false_positive_rate",
    "tnr": "true_negative_rate",
    "fnr": "false_negative_rate",
}
_COMPARE_METHODS = ("between_groups", "to_overall")
_CELLS = 4  # (y_true, y_pred) in {0, 1}^2: TN, FP, FN, TP


# ----------------------------------------------------------------------------- inputs


def _binary(name: str, column: np.ndarray, pos_label: Any) -> np.ndarray:
    if column.dtype.kind == "f" and np.isnan(column).any():
        raise ValueError(f"{name} has NaN values; labels must be known for every row")
    values = np.unique(column)
    if len(values) > 2 or (len(values) == 2 and pos_label not in values.tolist()):
        raise ValueError(
            f"{name} must be binary with pos_label={pos_label!r} one of its values, got values "
            f"{values[:10].tolist()}; this metric is defined for binary labels"
        )
    return (column == pos_label).astype(np.float64)


def _scores(name: str, column: np.ndarray) -> np.ndarray:
    if column.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric scores, got dtype {column.dtype}")
    scores = column.astype(np.float64)
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return scores


def _metric_name(metric: Any) -> str | None:
    """The device metric a name or a function stands for (None: a function run per group)."""
    if isinstance(metric, str):
        name = _ALIASES.get(metric, metric)
        if name not in METRICS:
            raise ValueError(f"metrics: unknown metric {metric!r}; the names are {list(METRICS)}")
        return name
    if not callable(metric):
        raise TypeError(f"metrics must be names or functions, got {type(metric).__name__}")
    name = getattr(metric, "__name__", "")
    name = _ALIASES.get(name, name)
    return name if name in METRICS else None


def _metrics_dict(metrics: Any) -> tuple[dict[str, Any], bool]:
    """The metrics as an ordered name -> metric dict, and whether one metric was given bare."""
    if isinstance(metrics, dict):
        if not metrics:
            raise ValueError("metrics is an empty dict")
        return {str(k): v for k, v in metrics.items()}, False
    if isinstance(metrics, (list, tuple)):
        if not metrics:
            raise ValueError("metrics is empty")
        named = {}
        for m in metrics:
            named[m if isinstance(m, str) else getattr(m, "__name__", repr(m))] = m
        return named, False
    key = metrics if isinstance(metrics, str) else getattr(metrics, "__name__", "metric")
    return {key: metrics}, True


def _sample_weight(sample_params: Any, sample_weight: Any, n: int) -> np.ndarray | None:
    if sample_params:
        if not isinstance(sample_params, dict):
            raise TypeError(f"sample_params must be a dict, got {type(sample_params).__name__}")
        weights = []
        for key, value in sample_params.items():
            if isinstance(value, dict):  # per metric: {metric: {"sample_weight": w}}
                unknown = set(value) - {"sample_weight"}
                weights.append(value.get("sample_weight"))
            else:
                unknown = {key} - {"sample_weight"}
                weights.append(value)
            if unknown:
                raise ValueError(
                    f"sample_params: only 'sample_weight' is supported, got {sorted(unknown)}"
                )
        weights = [w for w in weights if w is not None]
        if weights:
            first = as_column("sample_params sample_weight", weights[0], n)
            if any(not np.array_equal(as_column("sample_weight", w, n), first) for w in weights):
                raise ValueError("sample_params: every metric must share one sample_weight")
            sample_weight = first if sample_weight is None else sample_weight
    if sample_weight is None:
        return None
    weight = as_column("sample_weight", sample_weight, n).astype(np.float64)
    if not np.isfinite(weight).all() or (weight < 0).any():
        raise ValueError("sample_weight must be finite and >= 0 for every row")
    return weight


# ----------------------------------------------------------------------------- the counts


def _cell_counts(
    weights: torch.Tensor, cells: torch.Tensor, codes: torch.Tensor, n_groups: int
) -> torch.Tensor:
    """``(B, G, 4)`` weighted counts of (y_true, y_pred) cells per group, for ``B`` weightings
    ``(B, N)`` of the rows."""
    index = (codes * _CELLS + cells).expand_as(weights)
    out = weights.new_zeros(weights.shape[0], n_groups * _CELLS)
    return out.scatter_add_(1, index, weights).view(-1, n_groups, _CELLS)


def _grouped_sum(weights: torch.Tensor, values: torch.Tensor, codes: torch.Tensor, g: int):
    out = weights.new_zeros(weights.shape[0], g)
    return out.scatter_add_(1, codes.expand_as(weights), weights * values)


def _divide(top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    return torch.where(bottom > 0, top / bottom.clamp_min(1e-300), torch.nan)


class _AucOrder:
    """The sort of rows by (group, score) that every weighting's AUC reuses."""

    def __init__(self, scores: torch.Tensor, y: torch.Tensor, codes: torch.Tensor, g: int):
        by_score = torch.argsort(scores, stable=True)
        order = by_score[torch.argsort(codes[by_score], stable=True)]
        s, grp = scores[order], codes[order]
        new_block = torch.ones_like(grp, dtype=torch.bool)
        new_block[1:] = (s[1:] != s[:-1]) | (grp[1:] != grp[:-1])
        self.order, self.y = order, y[order]
        self.block = torch.cumsum(new_block.long(), 0) - 1
        self.n_blocks = int(self.block[-1]) + 1
        self.block_group = torch.zeros(self.n_blocks, dtype=torch.long, device=codes.device)
        self.block_group[self.block] = grp
        self.g = g

    def auc(self, weights: torch.Tensor) -> torch.Tensor:
        """``(B, G)`` AUC of each group under each weighting ``(B, N)``."""
        w = weights[:, self.order]
        pos, neg = w * self.y, w * (1 - self.y)
        index = self.block.expand_as(w)
        block_pos = w.new_zeros(w.shape[0], self.n_blocks).scatter_add_(1, index, pos)
        block_neg = w.new_zeros(w.shape[0], self.n_blocks).scatter_add_(1, index, neg)
        group_index = self.block_group.expand_as(block_neg)
        group_pos = w.new_zeros(w.shape[0], self.g).scatter_add_(1, group_index, block_pos)
        group_neg = w.new_zeros(w.shape[0], self.g).scatter_add_(1, group_index, block_neg)
        neg_before_group = torch.cumsum(group_neg, 1) - group_neg
        neg_below = torch.cumsum(block_neg, 1) - block_neg - neg_before_group[:, self.block_group]
        wins = block_pos * (neg_below + 0.5 * block_neg)
        total = w.new_zeros(w.shape[0], self.g).scatter_add_(1, group_index, wins)
        return _divide(total, group_pos * group_neg)


def _metric_values(
    name: str, cells: torch.Tensor, present: torch.Tensor, extra: dict[str, torch.Tensor]
) -> torch.Tensor:
    """One metric ``(B, G)`` from the cell counts ``(B, G, 4)``."""
    tn, fp, fn, tp = cells.unbind(-1)
    n = tn + fp + fn + tp
    if name == "count":
        return torch.where(present > 0, present, torch.nan)
    if name == "selection_rate":
        return _divide(fp + tp, n)
    if name == "mean_prediction":
        return _divide(extra["prediction_sum"], n)
    if name == "accuracy":
        return _divide(tn + tp, n)
    if name in ("recall", "true_positive_rate"):
        return _divide(tp, tp + fn)
    if name == "false_positive_rate":
        return _divide(fp, fp + tn)
    if name in ("true_negative_rate", "specificity"):
        return _divide(tn, tn + fp)
    if name == "false_negative_rate":
        return _divide(fn, tp + fn)
    if name == "precision":
        return _divide(tp, tp + fp)
    if name == "f1":
        return _divide(2 * tp, 2 * tp + fp + fn)
    if name == "balanced_accuracy":
        return (_divide(tp, tp + fn) + _divide(tn, tn + fp)) / 2
    if name == "roc_auc":
        return extra["roc_auc"]
    raise AssertionError(name)


# ----------------------------------------------------------------------------- MetricFrame


class MetricFrame:
    """Metrics overall and per group, as fairlearn's ``MetricFrame``, computed on the device.

    Args:
        metrics: a metric or a list/dict of them: names from :data:`METRICS`, or functions
            ``f(y_true, y_pred)``. scikit-learn's and fairlearn's functions (``accuracy_score``,
            ``recall_score``, ``selection_rate``, ``true_positive_rate``, ...) are recognised by
            name and computed batched; any other function runs per group on numpy arrays.
        y_true: ``(N,)`` labels.
        y_pred: ``(N,)`` predicted labels (scores for ``roc_auc`` and ``mean_prediction``
            when ``y_score`` is not given, as fairlearn passes them).
        sensitive_features: one column or several (intersections); see
            :func:`~torchexplain.fairness.groups.as_groups`.
        y_score: ``(N,)`` scores of the positive class for ``roc_auc`` (an extension: one
            frame holds label metrics and AUC).
        sample_params: fairlearn's ``{"sample_weight": w}`` or ``{metric: {"sample_weight": w}}``
            (one weight for every metric).
        sample_weight: ``(N,)`` row weights (the same as ``sample_params``).
        pos_label: the positive label of ``y_true`` and ``y_pred``.
        n_boot: bootstrap resamples of all rows with replacement (with ``ci_quantiles``).
        ci_quantiles: the quantiles of the resampled values the ``*_ci`` results give.
        random_state: the resamples' seed: an int draws the very resamples fairlearn draws
            for it, so the intervals equal fairlearn's.
        device: where the counts are computed (default: CUDA when available).
        output: ``"tensor"`` (default) or ``"pandas"`` (fairlearn's Series and DataFrames).

    Examples:
        >>> frame = MetricFrame(
        ...     metrics=["selection_rate", "accuracy"],
        ...     y_true=[1, 0, 1, 0],
        ...     y_pred=[1, 1, 0, 0],
        ...     sensitive_features=["a", "a", "b", "b"],
        ...     device="cpu",
        ... )
        >>> frame.by_group.tolist(), frame.difference().tolist()
        ([[1.0, 0.5], [0.0, 0.5]], [1.0, 0.0])
    """

    def __init__(
        self,
        *,
        metrics: Any,
        y_true: Any,
        y_pred: Any,
        sensitive_features: Any,
        y_score: Any = None,
        sample_params: dict | None = None,
        sample_weight: Any = None,
        pos_label: Any = 1,
        n_boot: int | None = None,
        ci_quantiles: Sequence[float] | None = None,
        random_state: Any = None,
        device: torch.device | str | None = None,
        output: str = "tensor",
        control_features: Any = None,
    ) -> None:
        if control_features is not None:
            raise NotImplementedError("control_features are not supported; split the rows first")
        if output not in ("tensor", "pandas"):
            raise ValueError(f"output must be 'tensor' or 'pandas', got {output!r}")
        self.output = output
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._metrics, self._single = _metrics_dict(metrics)
        self.metric_names = list(self._metrics)
        self._device_names = {k: _metric_name(m) for k, m in self._metrics.items()}
        true = as_column("y_true", y_true)
        n = len(true)
        if n == 0:
            raise ValueError("y_true has no rows")
        pred = as_column("y_pred", y_pred, n)
        self.groups = as_groups(sensitive_features, n, min_groups=2, device=self.device)
        weight = _sample_weight(sample_params, sample_weight, n)
        self._data = self._prepare(true, pred, y_score, weight, pos_label)
        self._raw = (true, pred, None if y_score is None else as_column("y_score", y_score, n))
        self._weight = weight
        ones = torch.ones(1, n, dtype=torch.float64, device=self.device)
        self._overall, self._by_group = self._compute(ones)
        self.ci_quantiles = None if ci_quantiles is None else [float(q) for q in ci_quantiles]
        self.n_boot = n_boot
        self._boot: tuple[torch.Tensor, torch.Tensor] | None = None
        if (n_boot is None) != (ci_quantiles is None):
            raise ValueError("n_boot and ci_quantiles must be given together")
        if n_boot is not None:
            if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 1:
                raise ValueError(f"n_boot must be an int >= 1, got {n_boot!r}")
            if not self.ci_quantiles or not all(0 <= q <= 1 for q in self.ci_quantiles):
                raise ValueError(f"ci_quantiles must be numbers in [0, 1], got {ci_quantiles!r}")
            self._boot = self._bootstrap(bootstrap_indices(n, n_boot, random_state))

    # ------------------------------------------------------------------ computation

    def _prepare(self, true, pred, y_score, weight, pos_label) -> dict[str, torch.Tensor]:
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float64, device=self.device)  # noqa: E731
        names = set(self._device_names.values())
        data: dict[str, torch.Tensor] = {}
        labels_needed = names - {"count", "mean_prediction", "roc_auc", None}
        if labels_needed:
            y = _binary("y_true", true, pos_label)
            p = _binary("y_pred", pred, pos_label)
            data["cells"] = torch.as_tensor(2 * y + p, dtype=torch.long, device=self.device)
        else:
            data["cells"] = torch.zeros(len(true), dtype=torch.long, device=self.device)
        if "mean_prediction" in names:
            data["prediction"] = as_tensor(_scores("y_pred", pred))
        if "roc_auc" in names:
            score = _scores(
                "y_score" if y_score is not None else "y_pred",
                as_column("y_score", y_score, len(true)) if y_score is not None else pred,
            )
            y = as_tensor(_binary("y_true", true, pos_label))
            data["auc"] = _AucOrder(as_tensor(score), y, self.groups.codes, self.groups.n_groups)
            overall_codes = torch.zeros_like(self.groups.codes)
            data["auc_overall"] = _AucOrder(as_tensor(score), y, overall_codes, 1)
        data["weight"] = None if weight is None else as_tensor(weight)
        return data

    def _values(self, multiplicity: torch.Tensor, codes: torch.Tensor, g: int, auc_key: str):
        data = self._data
        weights = multiplicity if data["weight"] is None else multiplicity * data["weight"]
        cells = _cell_counts(weights, data["cells"], codes, g)
        present = _grouped_sum(multiplicity, torch.ones_like(multiplicity[0]), codes, g)
        extra = {}
        if "prediction" in data:
            extra["prediction_sum"] = _grouped_sum(weights, data["prediction"], codes, g)
        if auc_key in data:
            extra["roc_auc"] = data[auc_key].auc(weights)
        columns = []
        for key, metric in self._metrics.items():
            name = self._device_names[key]
            if name is None:
                columns.append(self._by_function(metric, multiplicity, codes, g))
            else:
                columns.append(_metric_values(name, cells, present, extra))
        values = torch.stack(columns, -1)  # (B, G, M)
        # a group with no rows in a resample is absent from it, as in fairlearn
        return torch.where(present[..., None] > 0, values, torch.nan)

    def _by_function(self, metric: Callable, multiplicity, codes, g) -> torch.Tensor:
        """A function fairlearn would call: run per group (and resample) on numpy arrays."""
        true, pred, _ = self._raw
        codes_np = codes.cpu().numpy()
        counts = multiplicity.round().long().cpu().numpy()
        out = np.full((len(counts), g), np.nan)
        for b, row_counts in enumerate(counts):
            rows = np.repeat(np.arange(len(true)), row_counts)
            for group in range(g):
                members = rows[codes_np[rows] == group]
                if len(members):
                    kwargs = {}
                    if self._weight is not None:
                        kwargs["sample_weight"] = self._weight[members]
                    out[b, group] = float(metric(true[members], pred[members], **kwargs))
        return torch.as_tensor(out, device=self.device)

    def _compute(self, multiplicity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, M)`` overall and ``(B, G, M)`` per-group values under ``B`` weightings."""
        codes = self.groups.codes
        by_group = self._values(multiplicity, codes, self.groups.n_groups, "auc")
        overall = self._values(multiplicity, torch.zeros_like(codes), 1, "auc_overall")[:, 0]
        self._warn_undefined(by_group, overall)
        return overall, by_group

    def _warn_undefined(self, by_group: torch.Tensor, overall: torch.Tensor) -> None:
        if by_group.shape[0] != 1:
            return
        undefined = torch.isnan(by_group[0]).nonzero().tolist()
        if undefined or torch.isnan(overall[0]).any():
            labels = self.groups.label_strings()
            where = [f"{self.metric_names[m]} for {labels[g]!r}" for g, m in undefined[:8]]
            where += [
                f"{self.metric_names[m]} overall"
                for m in torch.isnan(overall[0]).nonzero().flatten().tolist()
            ]
            warnings.warn(
                "undefined (NaN: no denominator, e.g. no positives or a single class): "
                + "; ".join(where),
                UndefinedMetricWarning,
                stacklevel=4,
            )

    def _bootstrap(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        n_boot, n = indices.shape
        per_chunk = max(1, (1 << 22) // n)
        overall, by_group = [], []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            for start in range(0, n_boot, per_chunk):
                rows = torch.as_tensor(indices[start : start + per_chunk], device=self.device)
                multiplicity = torch.zeros(
                    rows.shape[0], n, dtype=torch.float64, device=self.device
                )
                multiplicity.scatter_add_(1, rows, torch.ones_like(multiplicity))
                o, g = self._compute(multiplicity)
                overall.append(o)
                by_group.append(g)
        return torch.cat(overall), torch.cat(by_group)

    # ------------------------------------------------------------------ results

    def _shaped(self, values: torch.Tensor, kind: str) -> Any:
        """``values``: ``(M,)`` (kind "metrics") or ``(G, M)`` (kind "groups")."""
        if self.output == "pandas":
            return self._pandas(values, kind)
        return values[..., 0] if self._single else values

    def _pandas(self, values: torch.Tensor, kind: str) -> Any:
        import pandas as pd

        array = values.cpu().numpy()
        if kind == "metrics":
            if self._single:
                return float(array[0])
            return pd.Series(array, index=self.metric_names)
        if len(self.groups.names) == 1:
            index = pd.Index(self.groups.labels, name=self.groups.names[0])
        else:
            index = pd.MultiIndex.from_tuples(self.groups.labels, names=self.groups.names)
        if self._single:
            return pd.Series(array[:, 0], index=index, name=self.metric_names[0])
        return pd.DataFrame(array, index=index, columns=self.metric_names)

    @property
    def overall(self) -> Any:
        """Each metric on all rows: ``(M,)`` (a scalar tensor for one bare metric)."""
        return self._shaped(self._overall[0], "metrics")

    @property
    def by_group(self) -> Any:
        """Each metric per group: ``(G, M)`` (``(G,)`` for one bare metric); rows follow
        ``groups.labels``."""
        return self._shaped(self._by_group[0], "groups")

    @property
    def sensitive_levels(self) -> list[str]:
        return list(self.groups.names)

    def group_min(self) -> Any:
        return self._shaped(_nan_reduce(self._by_group, "min")[0], "metrics")

    def group_max(self) -> Any:
        return self._shaped(_nan_reduce(self._by_group, "max")[0], "metrics")

    def difference(self, method: str = "between_groups", errors: str = "coerce") -> Any:
        """The largest gap per metric: ``group_max - group_min`` (``between_groups``) or the
        largest ``|group - overall|`` (``to_overall``); NaN groups are skipped, and a gap
        between groups with fewer than two defined is NaN (fairlearn: 0)."""
        return self._shaped(_difference(self._by_group, self._overall, method)[0], "metrics")

    def ratio(self, method: str = "between_groups", errors: str = "coerce") -> Any:
        """The smallest ratio per metric, below 1: ``group_min / group_max`` or the smallest
        ``min(group / overall, overall / group)``."""
        return self._shaped(_ratio(self._by_group, self._overall, method)[0], "metrics")

    # ------------------------------------------------------------------ intervals

    def _quantiles(self, samples: torch.Tensor, nan_skipping: bool) -> torch.Tensor:
        if self._boot is None:
            raise ValueError("no bootstrap: construct the MetricFrame with n_boot and ci_quantiles")
        q = torch.tensor(self.ci_quantiles, dtype=samples.dtype, device=samples.device)
        return (torch.nanquantile if nan_skipping else torch.quantile)(samples, q, dim=0)

    def _intervals(self, samples: torch.Tensor, kind: str, nan_skipping: bool) -> Any:
        quantiles = self._quantiles(samples, nan_skipping)
        if self.output == "pandas":
            return [self._pandas(v, kind) for v in quantiles]
        return quantiles[..., 0] if self._single else quantiles

    @property
    def overall_ci(self) -> Any:
        """The ``ci_quantiles`` of ``overall`` over the resamples: ``(Q, M)``."""
        return self._intervals(self._boot_part(0), "metrics", False)

    @property
    def by_group_ci(self) -> Any:
        """The ``ci_quantiles`` of ``by_group``: ``(Q, G, M)`` (resamples missing a group skipped)."""
        return self._intervals(self._boot_part(1), "groups", True)

    def group_min_ci(self) -> Any:
        return self._intervals(_nan_reduce(self._boot_part(1), "min"), "metrics", False)

    def group_max_ci(self) -> Any:
        return self._intervals(_nan_reduce(self._boot_part(1), "max"), "metrics", False)

    def difference_ci(self, method: str = "between_groups") -> Any:
        samples = _difference(self._boot_part(1), self._boot_part(0), method)
        return self._intervals(samples, "metrics", False)

    def ratio_ci(self, method: str = "between_groups") -> Any:
        samples = _ratio(self._boot_part(1), self._boot_part(0), method)
        return self._intervals(samples, "metrics", False)

    def _boot_part(self, part: int) -> torch.Tensor:
        if self._boot is None:
            raise ValueError("no bootstrap: construct the MetricFrame with n_boot and ci_quantiles")
        return self._boot[part]

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for JSON: groups, overall, by group, differences and ratios (and the
        intervals when bootstrapped); NaN becomes None."""
        result: dict[str, Any] = {
            "metrics": self.metric_names,
            "sensitive_features": self.groups.names,
            "groups": self.groups.label_strings(),
            "overall": plain(self._overall[0]),
            "by_group": plain(self._by_group[0]),
        }
        for method in _COMPARE_METHODS:
            result[f"difference_{method}"] = plain(
                _difference(self._by_group, self._overall, method)[0]
            )
            result[f"ratio_{method}"] = plain(_ratio(self._by_group, self._overall, method)[0])
        if self._boot is not None:
            result["ci_quantiles"] = self.ci_quantiles
            result["n_boot"] = self.n_boot
            result["overall_ci"] = plain(self._quantiles(self._boot[0], False))
            result["by_group_ci"] = plain(self._quantiles(self._boot[1], True))
            result["difference_ci"] = plain(
                self._quantiles(_difference(self._boot[1], self._boot[0], "between_groups"), False)
            )
        return result


def _nan_reduce(values: torch.Tensor, how: str) -> torch.Tensor:
    """Min or max over groups (dim 1 of ``(B, G, M)``), skipping NaN (all NaN: NaN)."""
    fill = torch.inf if how == "min" else -torch.inf
    filled = torch.where(torch.isnan(values), fill, values)
    out = filled.amin(1) if how == "min" else filled.amax(1)
    return torch.where(torch.isinf(out) & (out == fill), torch.nan, out)


def _check_method(method: str) -> None:
    if method not in _COMPARE_METHODS:
        raise ValueError(f"method must be one of {list(_COMPARE_METHODS)}, got {method!r}")


def _two_defined(by_group: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """NaN where fewer than two groups have a value: a gap between groups needs two (fairlearn
    returns 0 there, from the one group left)."""
    defined = (~torch.isnan(by_group)).sum(1)
    return torch.where(defined >= 2, values, torch.nan)


def _difference(by_group: torch.Tensor, overall: torch.Tensor, method: str) -> torch.Tensor:
    _check_method(method)
    if method == "between_groups":
        return _two_defined(by_group, _nan_reduce(by_group, "max") - _nan_reduce(by_group, "min"))
    return _nan_reduce((by_group - overall[:, None]).abs(), "max")


def _ratio(by_group: torch.Tensor, overall: torch.Tensor, method: str) -> torch.Tensor:
    _check_method(method)
    if method == "between_groups":
        return _two_defined(by_group, _nan_reduce(by_group, "min") / _nan_reduce(by_group, "max"))
    ratios = by_group / overall[:, None]
    ratios = torch.where(ratios > 1, 1 / ratios, ratios)
    return _nan_reduce(ratios, "min")


def bootstrap_indices(n: int, n_boot: int, random_state: Any) -> np.ndarray:
    """``(n_boot, n)`` row indices of the resamples fairlearn draws for ``random_state``: a
    seed per resample from ``default_rng(random_state)``, then pandas' ``sample(frac=1,
    replace=True)`` with it (``RandomState(seed).randint(0, n, n)``)."""
    top = np.iinfo(np.uint32).max
    if random_state is None:
        seeds = np.random.default_rng().integers(0, top, size=n_boot, dtype=np.uint32)
    elif isinstance(random_state, np.random.RandomState):
        seeds = random_state.randint(0, top, size=n_boot, dtype=np.uint32)
    elif isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        seeds = np.random.default_rng(int(random_state)).integers(
            0, top, size=n_boot, dtype=np.uint32
        )
    else:
        raise TypeError(
            f"random_state must be None, an int or a numpy RandomState, got {type(random_state).__name__}"
        )
    return np.stack([np.random.RandomState(s).randint(0, n, size=n) for s in seeds])


# ----------------------------------------------------------------------------- functions


def _one(metric: str, y_true, y_pred, sample_weight=None, pos_label=1) -> float:
    """One metric on all rows: the counts of a single group."""
    true = as_column("y_true", y_true)
    pred = as_column("y_pred", y_pred, len(true))
    weight = _sample_weight(None, sample_weight, len(true))
    if metric in ("count", "mean_prediction"):
        cells = torch.zeros(len(true), dtype=torch.long)
    else:
        labels = 2 * _binary("y_true", true, pos_label) + _binary("y_pred", pred, pos_label)
        cells = torch.as_tensor(labels, dtype=torch.long)
    ones = torch.ones(1, len(true), dtype=torch.float64)
    w = ones if weight is None else ones * torch.as_tensor(weight)
    codes = torch.zeros(len(true), dtype=torch.long)
    extra = {}
    if metric == "mean_prediction":
        prediction = torch.as_tensor(_scores("y_pred", pred))
        extra["prediction_sum"] = _grouped_sum(w, prediction, codes, 1)
    counts = _cell_counts(w, cells, codes, 1)
    return float(_metric_values(metric, counts, ones.sum(1, keepdim=True), extra)[0, 0])


def selection_rate(y_true, y_pred, *, pos_label: Any = 1, sample_weight=None) -> float:
    """The share of rows predicted ``pos_label`` (fairlearn's ``selection_rate``)."""
    return _one("selection_rate", y_true, y_pred, sample_weight, pos_label)


def true_positive_rate(y_true, y_pred, sample_weight=None, pos_label: Any = 1) -> float:
    """Recall: predicted positive among the positives (NaN without positives)."""
    return _one("true_positive_rate", y_true, y_pred, sample_weight, pos_label)


def false_positive_rate(y_true, y_pred, sample_weight=None, pos_label: Any = 1) -> float:
    """Predicted positive among the negatives (NaN without negatives)."""
    return _one("false_positive_rate", y_true, y_pred, sample_weight, pos_label)


def true_negative_rate(y_true, y_pred, sample_weight=None, pos_label: Any = 1) -> float:
    """Specificity: predicted negative among the negatives."""
    return _one("true_negative_rate", y_true, y_pred, sample_weight, pos_label)


def false_negative_rate(y_true, y_pred, sample_weight=None, pos_label: Any = 1) -> float:
    """Predicted negative among the positives."""
    return _one("false_negative_rate", y_true, y_pred, sample_weight, pos_label)


def mean_prediction(y_true, y_pred, sample_weight=None) -> float:
    """The (weighted) mean of ``y_pred``: a selection rate in score space."""
    return _one("mean_prediction", y_true, y_pred, sample_weight)


def count(y_true, y_pred) -> int:
    """The number of rows."""
    return len(as_column("y_true", y_true))


def _disparity(metrics, how, y_true, y_pred, sensitive_features, method, sample_weight):
    """``(M,)`` the difference or ratio of each metric across the groups."""
    frame = MetricFrame(
        metrics=metrics,
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=sensitive_features,
        sample_weight=sample_weight,
    )
    return frame.difference(method) if how == "difference" else frame.ratio(method)


def _one_disparity(metric, how, y_true, y_pred, sensitive_features, method, sample_weight) -> float:
    values = _disparity([metric], how, y_true, y_pred, sensitive_features, method, sample_weight)
    return float(values[0])


def demographic_parity_difference(
    y_true, y_pred, *, sensitive_features, method: str = "between_groups", sample_weight=None
) -> float:
    """The spread of selection rates across groups (0: parity)."""
    return _one_disparity(
        "selection_rate", "difference", y_true, y_pred, sensitive_features, method, sample_weight
    )


def demographic_parity_ratio(
    y_true, y_pred, *, sensitive_features, method: str = "between_groups", sample_weight=None
) -> float:
    """The smallest ratio of selection rates across groups (1: parity)."""
    return _one_disparity(
        "selection_rate", "ratio", y_true, y_pred, sensitive_features, method, sample_weight
    )


def _check_agg(agg: str) -> None:
    if agg not in ("worst_case", "mean"):
        raise ValueError(f"agg must be one of 'worst_case' or 'mean', got {agg!r}")


def equalized_odds_difference(
    y_true,
    y_pred,
    *,
    sensitive_features,
    method: str = "between_groups",
    sample_weight=None,
    agg: str = "worst_case",
) -> float:
    """The larger (``agg="worst_case"``) or the mean of the TPR and FPR differences."""
    _check_agg(agg)
    values = _disparity(
        ["true_positive_rate", "false_positive_rate"],
        "difference",
        y_true,
        y_pred,
        sensitive_features,
        method,
        sample_weight,
    )
    return float(values.max() if agg == "worst_case" else values.mean())


def equalized_odds_ratio(
    y_true,
    y_pred,
    *,
    sensitive_features,
    method: str = "between_groups",
    sample_weight=None,
    agg: str = "worst_case",
) -> float:
    """The smaller (``agg="worst_case"``) or the mean of the TPR and FPR ratios."""
    _check_agg(agg)
    values = _disparity(
        ["true_positive_rate", "false_positive_rate"],
        "ratio",
        y_true,
        y_pred,
        sensitive_features,
        method,
        sample_weight,
    )
    return float(values.min() if agg == "worst_case" else values.mean())


def equal_opportunity_difference(
    y_true, y_pred, *, sensitive_features, method: str = "between_groups", sample_weight=None
) -> float:
    """The spread of true positive rates across groups."""
    return _one_disparity(
        "true_positive_rate",
        "difference",
        y_true,
        y_pred,
        sensitive_features,
        method,
        sample_weight,
    )


def equal_opportunity_ratio(
    y_true, y_pred, *, sensitive_features, method: str = "between_groups", sample_weight=None
) -> float:
    """The smallest ratio of true positive rates across groups."""
    return _one_disparity(
        "true_positive_rate", "ratio", y_true, y_pred, sensitive_features, method, sample_weight
    )


def roc_curve_by_group(
    y_true: Any, y_score: Any, *, sensitive_features: Any, pos_label: Any = 1
) -> tuple[Groups, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Each group's ROC curve ``(fpr, tpr, thresholds)``, at every distinct score (scikit-learn's
    ``roc_curve(..., drop_intermediate=False)``: the first point is ``(0, 0)`` at ``inf``).

    Returns:
        The groups and, per group, the curve (NaN rates where the group lacks a class).
    """
    true = _binary("y_true", as_column("y_true", y_true), pos_label)
    score = _scores("y_score", as_column("y_score", y_score, len(true)))
    groups = as_groups(sensitive_features, len(true), device="cpu")
    curves = []
    for g in range(groups.n_groups):
        members = (groups.codes == g).numpy()
        s = torch.as_tensor(score[members])
        y = torch.as_tensor(true[members])
        order = torch.argsort(s, descending=True, stable=True)
        s, y = s[order], y[order]
        last = torch.ones_like(s, dtype=torch.bool)
        last[:-1] = s[1:] != s[:-1]
        tps = torch.cumsum(y, 0)[last]
        fps = torch.cumsum(1 - y, 0)[last]
        tps = torch.cat([tps.new_zeros(1), tps])
        fps = torch.cat([fps.new_zeros(1), fps])
        thresholds = torch.cat([torch.tensor([torch.inf], dtype=s.dtype), s[last]])
        curves.append((_divide(fps, fps[-1:]), _divide(tps, tps[-1:]), thresholds))
    return groups, curves
