"""Explanations per group: which features carry a gap, anchors by group, recourse burden and
the attribute-flip probe.

- :func:`gap_by_feature`: SHAP values (or IG attributions) on one shared background (baseline)
  add up to each row's output minus one constant, so the difference of two groups' mean
  attributions adds up to the difference of their mean outputs: the demographic-parity gap in
  score space, split by feature.
- :func:`anchors_by_group`: anchors' precision and coverage per group, and how often an anchor
  rests on a protected column or on a column associated with one (a proxy).
- :func:`recourse_burden`: for each group's members with the unfavourable prediction, how often
  a counterfactual search finds a way out and how far it is (CERTIFAI's burden, Sharma et al.
  2019, arXiv 1905.07857), with the protected columns immutable.
- :func:`attribute_flip`: change only the protected column and count the predictions that
  change. A probe of the model's direct use of the column, not counterfactual fairness (which
  needs a causal model of how the column affects the others).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from torchexplain._model_state import preserved_model_state
from torchexplain.explanation import Explanation
from torchexplain.fairness.data import Associations
from torchexplain.fairness.groups import Groups, as_groups, plain
from torchexplain.models.predictor import Predictor, as_labels
from torchexplain.models.rows import Rows

__all__ = [
    "AnchorsByGroup",
    "AttributeFlip",
    "GapSplit",
    "RecourseBurden",
    "anchors_by_group",
    "attribute_flip",
    "gap_by_feature",
    "recourse_burden",
]


# ----------------------------------------------------------------------------- the gap split


@dataclasses.dataclass(frozen=True)
class GapSplit:
    """The gap in mean output between each group and a reference group, split by feature.

    Attributes:
        groups: the groups.
        reference: the index of the reference group.
        mean_output: ``(G,)`` each group's mean output (the explained output, in the
            explainer's link space).
        mean_attribution: ``(G, D)`` each group's mean attribution per feature.
        gap: ``(G,)`` ``mean_output - mean_output[reference]``.
        contributions: ``(G, D)`` ``mean_attribution - mean_attribution[reference]``: what
            each feature carries of the gap.
        residual: ``(G,)`` ``gap - contributions.sum(1)``: 0 to float precision for SHAP
            values; for IG, the groups' difference in mean convergence delta.
        feature_names: the features' names.
        output: the output column explained.
    """

    groups: Groups
    reference: int
    mean_output: torch.Tensor
    mean_attribution: torch.Tensor
    gap: torch.Tensor
    contributions: torch.Tensor
    residual: torch.Tensor
    feature_names: list[str]
    output: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": self.groups.label_strings(),
            "reference": self.groups.label_strings()[self.reference],
            "output": self.output,
            "feature_names": self.feature_names,
            "mean_output": plain(self.mean_output),
            "gap": plain(self.gap),
            "contributions": plain(self.contributions),
            "residual": plain(self.residual),
        }


def _attributions(explanation: Explanation, output: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(B, D)`` attributions and ``(B,)`` outputs they account for, and the method's kind."""
    data = explanation.data
    if "shap_values" in data:
        values = data["shap_values"].double()
        if values.dim() != 3:
            raise ValueError("gap_by_feature needs tabular SHAP values (B, K, D)")
        k = values.shape[1]
        column = output % k
        predictions = data["predictions"].double()
        outputs = predictions[:, column] if predictions.dim() == 2 else predictions
        params = explanation.meta.get("params") or {}
        if params.get("link") == "logit":  # the values add up in log-odds
            eps = float(params.get("logit_clip", 1e-7))
            p = outputs.clamp(eps, 1 - eps)
            outputs = torch.log(p / (1 - p))
        return values[:, column], outputs, "shap"
    if "attributions" in data:
        attributions = data["attributions"]
        if not isinstance(attributions, torch.Tensor) or attributions.dim() != 2:
            raise ValueError("gap_by_feature needs tabular attributions (B, D)")
        predictions = data["predictions"].double()
        if predictions.dim() == 2:
            target = data.get("target")
            if target is not None and target.dim() == 1:
                if not bool((target == target[0]).all()):
                    raise ValueError(
                        "gap_by_feature needs one explained output for every row: explain with "
                        "one int target"
                    )
                outputs = predictions[:, int(target[0])]
            else:
                outputs = predictions[:, output]
        else:
            outputs = predictions
        return attributions.double(), outputs, "ig"
    raise ValueError(
        "gap_by_feature needs a KernelShap/TreeShap explanation (shap_values) or an "
        f"IntegratedGradients one (attributions); got fields {sorted(data)}"
    )


def gap_by_feature(
    explanation: Explanation,
    sensitive_features: Any,
    *,
    output: int = -1,
    reference: Any = None,
    model_outputs: Any = None,
) -> GapSplit:
    """Split each group's gap in mean output, to a reference group, by feature.

    With SHAP values on one shared background, row ``i``'s values add up to
    ``f(x_i) - E[f(background)]`` (efficiency), so two groups' mean values differ, feature by
    feature, by parts that add up to exactly the difference of their mean outputs. The same
    holds for IG with one shared baseline, up to each row's convergence delta (reported as the
    residual). Give the explanation of the rows whose groups are in ``sensitive_features``.

    Args:
        explanation: KernelShap/TreeShap (``shap_values (B, K, D)``, with ``output`` the
            class column) or IntegratedGradients (``attributions (B, D)`` with one target,
            the same baseline for every row) explanation of B rows.
        sensitive_features: the rows' groups.
        output: the class column of SHAP values (default the last: the positive class).
        reference: the reference group's label (default: the largest group).
        model_outputs: ``(B,)`` the explained output as the model gives it, to take the gap
            from (default: what the explanation says; for IG, its ``predictions``).

    Examples:
        >>> import torchexplain
        >>> predict = lambda x: x @ np.array([[1.0], [2.0]])
        >>> rows = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> exp = torchexplain.KernelShap(predict).fit(np.zeros((1, 2))).explain(rows)
        >>> split = gap_by_feature(exp, ["a", "b", "b"], reference="a")
        >>> split.gap.tolist(), split.contributions.tolist()
        ([0.0, 1.5], [[0.0, 0.0], [-0.5, 2.0]])
    """
    values, outputs, kind = _attributions(explanation, output)
    b = values.shape[0]
    if model_outputs is not None:
        outputs = torch.as_tensor(np.asarray(model_outputs), dtype=torch.float64).reshape(-1)
        if outputs.numel() != b:
            raise ValueError(f"model_outputs has {outputs.numel()} values, expected {b}")
    groups = as_groups(sensitive_features, b, min_groups=2)
    codes = groups.codes.to(values.device)
    outputs = outputs.to(values.device)
    sizes = torch.bincount(codes, minlength=groups.n_groups).double()
    mean_out = torch.zeros(groups.n_groups, dtype=torch.float64, device=values.device)
    mean_out = mean_out.scatter_add_(0, codes, outputs) / sizes
    mean_attr = torch.zeros(
        groups.n_groups, values.shape[1], dtype=torch.float64, device=values.device
    )
    mean_attr = mean_attr.index_add_(0, codes, values) / sizes[:, None]
    if reference is None:
        ref = int(sizes.argmax())
    elif reference in groups.labels:
        ref = groups.labels.index(reference)
    else:
        raise ValueError(
            f"reference must be one of the groups {groups.labels!r}, got {reference!r}"
        )
    gap = mean_out - mean_out[ref]
    contributions = mean_attr - mean_attr[ref]
    names = explanation.meta.get("feature_names") or [f"x{j}" for j in range(values.shape[1])]
    return GapSplit(
        groups=groups,
        reference=ref,
        mean_output=mean_out.cpu(),
        mean_attribution=mean_attr.cpu(),
        gap=gap.cpu(),
        contributions=contributions.cpu(),
        residual=(gap - contributions.sum(1)).cpu(),
        feature_names=list(names),
        output=output,
    )


# ----------------------------------------------------------------------------- anchors


@dataclasses.dataclass(frozen=True)
class AnchorsByGroup:
    """Anchors summarised per group.

    Attributes:
        groups: the groups.
        count: ``(G,)`` anchors per group.
        precision, coverage: ``(G,)`` their mean precision and coverage.
        success: ``(G,)`` the share that reached the precision threshold.
        uses_protected: ``(G,)`` the share whose anchor uses a protected column.
        uses_proxy: ``(G,)`` the share whose anchor uses a column associated with a protected
            one (at least ``threshold``) and no protected column.
        protected, proxies: the columns counted as each.
        feature_use: ``(G, D)`` the share of each group's anchors that use each column.
    """

    groups: Groups
    count: torch.Tensor
    precision: torch.Tensor
    coverage: torch.Tensor
    success: torch.Tensor
    uses_protected: torch.Tensor
    uses_proxy: torch.Tensor
    protected: list[int]
    proxies: list[int]
    feature_use: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": self.groups.label_strings(),
            "count": self.count.tolist(),
            "precision": plain(self.precision),
            "coverage": plain(self.coverage),
            "success": plain(self.success),
            "uses_protected": plain(self.uses_protected),
            "uses_proxy": plain(self.uses_proxy),
            "protected": self.protected,
            "proxies": self.proxies,
        }


def anchors_by_group(
    explanation: Explanation,
    sensitive_features: Any,
    *,
    protected: Sequence[int],
    associations: Associations | None = None,
    threshold: float = 0.3,
) -> AnchorsByGroup:
    """Precision, coverage and the use of protected columns (and their proxies) by group.

    Args:
        explanation: an AnchorTabular explanation of B rows.
        sensitive_features: the rows' groups.
        protected: the protected columns' indices.
        associations: the columns' associations (:func:`~torchexplain.fairness.associations`)
            to find proxies: columns whose association with a protected column is at least
            ``threshold``.
        threshold: the association that makes a proxy.
    """
    data = explanation.data
    if "feature" not in data or "precision" not in data:
        raise ValueError("anchors_by_group needs an AnchorTabular explanation (feature, precision)")
    features = data["feature"]
    b = len(features)
    groups = as_groups(sensitive_features, b)
    protected = sorted({int(c) for c in protected})
    proxies: list[int] = []
    if associations is not None:
        d = len(associations.names)
        if any(not 0 <= c < d for c in protected):
            raise ValueError(f"protected must be column indices in [0, {d}), got {protected}")
        proxies = sorted(
            {j for c in protected for j in associations.associated_with(c, threshold)}
            - set(protected)
        )
        n_columns = d
    else:
        n_columns = max([max(f, default=-1) for f in features] + protected) + 1
    used = torch.zeros(b, n_columns, dtype=torch.float64)
    for i, columns in enumerate(features):
        used[i, list(columns)] = 1.0
    protected_use = used[:, protected].amax(1) if protected else torch.zeros(b, dtype=torch.float64)
    proxy_use = used[:, proxies].amax(1) if proxies else torch.zeros(b, dtype=torch.float64)
    proxy_use = proxy_use * (1 - protected_use)
    codes = groups.codes
    sizes = torch.bincount(codes, minlength=groups.n_groups).double()

    def mean(values: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(groups.n_groups, *values.shape[1:], dtype=torch.float64)
        return total.index_add_(0, codes, values.double().cpu()) / sizes.view(
            -1, *[1] * (values.dim() - 1)
        )

    return AnchorsByGroup(
        groups=groups,
        count=sizes.long(),
        precision=mean(data["precision"]),
        coverage=mean(data["coverage"]),
        success=mean(data["success"]),
        uses_protected=mean(protected_use),
        uses_proxy=mean(proxy_use),
        protected=protected,
        proxies=proxies,
        feature_use=mean(used),
    )


# ----------------------------------------------------------------------------- recourse


@dataclasses.dataclass(frozen=True)
class RecourseBurden:
    """Counterfactual recourse for the rows with the unfavourable prediction, per group.

    Attributes:
        groups: the groups (of all rows given).
        unfavourable: ``(G,)`` rows predicted unfavourably.
        found: ``(G,)`` of those, rows where the search found a counterfactual.
        success_rate: ``(G,)`` ``found / unfavourable`` (NaN without unfavourable rows).
        burden: ``(G,)`` the mean distance of the counterfactuals found (CERTIFAI's burden;
            NaN where none was found).
        distances: ``(U,)`` every searched row's distance (NaN where not found), in row order.
        searched: ``(U,)`` the searched rows' indices.
        distance: the explanation field the distances are (``l1_distance`` by default).
    """

    groups: Groups
    unfavourable: torch.Tensor
    found: torch.Tensor
    success_rate: torch.Tensor
    burden: torch.Tensor
    distances: torch.Tensor
    searched: torch.Tensor
    distance: str

    @property
    def failed(self) -> torch.Tensor:
        """``(G,)`` unfavourable rows with no counterfactual found."""
        return self.unfavourable - self.found

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": self.groups.label_strings(),
            "unfavourable": self.unfavourable.tolist(),
            "found": self.found.tolist(),
            "failed": self.failed.tolist(),
            "success_rate": plain(self.success_rate),
            "burden": plain(self.burden),
            "distance": self.distance,
        }


def recourse_burden(
    explainer: Any,
    inputs: Any,
    sensitive_features: Any,
    *,
    favourable_class: int = 1,
    distance: str = "l1_distance",
) -> RecourseBurden:
    """Search counterfactuals towards ``favourable_class`` for every row the model does not put
    there, and summarise success and distance per group.

    Make the protected columns immutable in the explainer (``immutable_features=[...]``), so
    that no recourse consists of changing them; the distances are in the units of the inputs
    (``l1_distance``) or the search's own (``distance``: MAD-scaled after ``Counterfactual.fit``).

    Args:
        explainer: a :class:`~torchexplain.Counterfactual` or
            :class:`~torchexplain.CounterfactualProto` (fitted where it needs to be).
        inputs: ``(N, D)`` rows.
        sensitive_features: their groups.
        favourable_class: the class that is the favourable outcome.
        distance: the explanation field averaged: ``"l1_distance"`` or ``"distance"``.
    """
    if distance not in ("l1_distance", "distance"):
        raise ValueError(f"distance must be 'l1_distance' or 'distance', got {distance!r}")
    model = getattr(explainer, "model", None)
    if model is None or not hasattr(explainer, "explain"):
        raise TypeError("recourse_burden needs a Counterfactual or CounterfactualProto explainer")
    rows = Rows.of(inputs, "inputs", numpy=False, exact_dim=2, layout="(N, D)").values
    groups = as_groups(sensitive_features, rows.shape[0])
    with preserved_model_state(model), torch.no_grad():
        predicted = as_labels(Predictor.wrap(model, batch_size=None).outputs(rows)).cpu()
    searched = (predicted != favourable_class).nonzero().flatten()
    distances = torch.full((searched.numel(),), torch.nan, dtype=torch.float64)
    if searched.numel():
        explanation = explainer.explain(
            rows[searched.to(rows.device)], target_class=favourable_class
        )
        success = explanation.success.cpu().bool()
        found_distance = explanation.data[distance].detach().cpu().double()
        distances = torch.where(success, found_distance, torch.nan)
    codes = groups.codes[searched]
    g = groups.n_groups
    unfavourable = torch.bincount(codes, minlength=g)
    found_mask = ~torch.isnan(distances)
    found = torch.bincount(codes[found_mask], minlength=g)
    total = torch.zeros(g, dtype=torch.float64).index_add_(
        0, codes[found_mask], distances[found_mask]
    )
    return RecourseBurden(
        groups=groups,
        unfavourable=unfavourable,
        found=found,
        success_rate=torch.where(unfavourable > 0, found / unfavourable.clamp_min(1), torch.nan),
        burden=torch.where(found > 0, total / found.clamp_min(1), torch.nan),
        distances=distances,
        searched=searched,
        distance=distance,
    )


# ----------------------------------------------------------------------------- attribute flip


@dataclasses.dataclass(frozen=True)
class AttributeFlip:
    """Predictions that change when only the protected column changes.

    Attributes:
        column: the column changed.
        values: the values it was set to (the distinct values seen in it).
        count: ``(V,)`` rows with each original value.
        flip_rate: ``(V, V)`` among rows with value ``i``, the share whose prediction changes
            when the column is set to value ``j`` (0 on the diagonal).
        any_flip_rate: ``(V,)`` the share whose prediction changes for some other value.
        flipped: ``(N,)`` rows whose prediction changes for some other value.
    """

    column: int
    values: list[float]
    count: torch.Tensor
    flip_rate: torch.Tensor
    any_flip_rate: torch.Tensor
    flipped: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "values": self.values,
            "count": self.count.tolist(),
            "flip_rate": plain(self.flip_rate),
            "any_flip_rate": plain(self.any_flip_rate),
        }


def attribute_flip(
    model: Any,
    inputs: Any,
    column: int,
    *,
    values: Sequence[float] | None = None,
    batch_size: int | str | None = "auto",
) -> AttributeFlip:
    """Set ``column`` to each of its values in every row and count the changed predictions.

    A probe, not a test of counterfactual fairness: it holds every other column fixed, while a
    person of another sex or race would often differ in other columns too (the columns the
    associations flag). It measures the model's direct use of the column.

    Args:
        model: rows ``(N, D)`` -> class scores ``(N, K)`` (or labels).
        inputs: ``(N, D)`` rows.
        column: the protected column's index.
        values: the values to set (default: the distinct values of the column in ``inputs``).
        batch_size: rows per model call.

    Examples:
        >>> predict = lambda x: np.stack([x[:, 0], 1 - x[:, 0]], 1)
        >>> flip = attribute_flip(predict, np.array([[0.0, 3.0], [1.0, 4.0]]), 0)
        >>> flip.any_flip_rate.tolist()
        [1.0, 1.0]
    """
    rows = Rows.of(inputs, "inputs", integers=True, exact_dim=2, layout="(N, D)").values
    n, d = rows.shape
    if not isinstance(column, (int, np.integer)) or not 0 <= column < d:
        raise ValueError(f"column must be a column index in [0, {d}), got {column!r}")
    observed = torch.unique(rows[:, column]).cpu()
    levels = observed if values is None else torch.as_tensor(list(values), dtype=rows.dtype)
    if levels.numel() < 2:
        raise ValueError(
            f"column {column} needs at least two values to flip, got {levels.tolist()}"
        )
    v = levels.numel()
    levels_d = levels.to(rows.device, rows.dtype)

    def build(start: int, stop: int) -> torch.Tensor:
        k = torch.arange(start, stop, device=rows.device)
        batch = rows[k % n].clone()
        batch[:, column] = levels_d[k // n]
        return batch

    predictor = Predictor.wrap(model, batch_size=batch_size)
    with preserved_model_state(model), torch.no_grad():
        original = as_labels(predictor.outputs(rows)).cpu()
        changed = as_labels(predictor.map(v * n, build)).cpu().view(v, n)
    differs = changed != original  # (V_to, N)
    origin = (rows[:, column].cpu()[None, :] == levels[:, None]).double()  # (V_from, N)
    count = origin.sum(1)
    flip_rate = (origin @ differs.double().T) / count.clamp_min(1)[:, None]
    others = differs & ~(rows[:, column].cpu()[None, :] == levels[:, None])
    flipped = others.any(0)
    any_rate = (origin @ flipped.double()) / count.clamp_min(1)
    nan = torch.tensor(torch.nan, dtype=torch.float64)
    return AttributeFlip(
        column=int(column),
        values=levels.tolist(),
        count=count.long(),
        flip_rate=torch.where(count[:, None] > 0, flip_rate, nan),
        any_flip_rate=torch.where(count > 0, any_rate, nan),
        flipped=flipped,
    )
