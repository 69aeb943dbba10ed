"""Bias evaluation beside the explanations: the data, the model per group, and which features
carry a gap (see the docs' "Fairness" page)."""

from torchexplain.fairness.groups import Groups, as_groups
from torchexplain.fairness.metrics import (
    METRICS,
    MetricFrame,
    UndefinedMetricWarning,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equal_opportunity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_negative_rate,
    false_positive_rate,
    mean_prediction,
    roc_curve_by_group,
    selection_rate,
    true_negative_rate,
    true_positive_rate,
)

__all__ = [
    "METRICS",
    "Groups",
    "MetricFrame",
    "UndefinedMetricWarning",
    "as_groups",
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
