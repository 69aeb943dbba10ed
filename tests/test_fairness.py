"""torchexplain.fairness against fairlearn, scikit-learn, scipy and brute-force loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchexplain
from torchexplain import fairness
from torchexplain.explanation import Explanation
from torchexplain.fairness.data import associations, balanced_train_test_split, group_counts
from torchexplain.fairness.explanations import (
    anchors_by_group,
    attribute_flip,
    gap_by_feature,
    recourse_burden,
)
from torchexplain.fairness.importance import permutation_importance, sklearn_permutations
from torchexplain.fairness.metrics import bootstrap_indices

fm = pytest.importorskip("fairlearn.metrics")
skm = pytest.importorskip("sklearn.metrics")


@pytest.fixture(scope="module")
def labelled():
    """Labels, predictions and scores for 600 rows in two sensitive columns (one small group)."""
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    score = np.round(rng.random(n) * 0.7 + 0.3 * y, 2)  # rounded: ties for the AUC
    pred = (score > 0.5).astype(int)
    sex = rng.choice(["F", "M"], n, p=[0.35, 0.65])
    race = rng.choice(["A", "B", "C"], n, p=[0.8, 0.17, 0.03])
    weight = rng.random(n) + 0.5
    return {"y": y, "pred": pred, "score": score, "sex": sex, "race": race, "weight": weight}


FL_METRICS = {
    "acc": skm.accuracy_score,
    "prec": skm.precision_score,
    "rec": skm.recall_score,
    "f1": skm.f1_score,
    "sel": fm.selection_rate,
    "tpr": fm.true_positive_rate,
    "fpr": fm.false_positive_rate,
    "tnr": fm.true_negative_rate,
    "fnr": fm.false_negative_rate,
    "count": fm.count,
}


@pytest.mark.parametrize("columns", [["sex"], ["sex", "race"]])
def test_metric_frame_equals_fairlearn(labelled, columns, device):
    features = {c: labelled[c] for c in columns}
    kwargs = dict(y_true=labelled["y"], y_pred=labelled["pred"], sensitive_features=features)
    ours = fairness.MetricFrame(metrics=FL_METRICS, device=device, **kwargs)
    theirs = fm.MetricFrame(metrics=FL_METRICS, **kwargs)
    assert ours.by_group.device.type == device.type
    np.testing.assert_allclose(
        ours.by_group.cpu().numpy(), theirs.by_group.to_numpy(float), rtol=1e-12
    )
    np.testing.assert_allclose(
        ours.overall.cpu().numpy(), theirs.overall.to_numpy(float), rtol=1e-12
    )
    assert ours.groups.labels == list(theirs.by_group.index)
    for method in ("between_groups", "to_overall"):
        np.testing.assert_allclose(
            ours.difference(method).cpu().numpy(), theirs.difference(method=method).to_numpy(float)
        )
        np.testing.assert_allclose(
            ours.ratio(method).cpu().numpy(), theirs.ratio(method=method).to_numpy(float)
        )
    np.testing.assert_allclose(ours.group_min().cpu().numpy(), theirs.group_min().to_numpy(float))
    np.testing.assert_allclose(ours.group_max().cpu().numpy(), theirs.group_max().to_numpy(float))


def test_pandas_output_is_fairlearns_frame(labelled):
    import pandas as pd

    kwargs = dict(
        y_true=labelled["y"],
        y_pred=labelled["pred"],
        sensitive_features={"sex": labelled["sex"], "race": labelled["race"]},
    )
    ours = fairness.MetricFrame(metrics=FL_METRICS, device="cpu", output="pandas", **kwargs)
    theirs = fm.MetricFrame(metrics=FL_METRICS, **kwargs)
    pd.testing.assert_frame_equal(ours.by_group, theirs.by_group.astype(float))
    pd.testing.assert_series_equal(ours.overall, theirs.overall.astype(float))
    single = fairness.MetricFrame(
        metrics=fm.selection_rate, device="cpu", output="pandas", **kwargs
    )
    reference = fm.MetricFrame(metrics=fm.selection_rate, **kwargs)
    pd.testing.assert_series_equal(single.by_group, reference.by_group)
    assert single.overall == pytest.approx(reference.overall, abs=0)


def test_sample_weight_equals_fairlearn(labelled):
    w = labelled["weight"]
    metrics = {"acc": skm.accuracy_score, "sel": fm.selection_rate, "tpr": fm.true_positive_rate}
    kwargs = dict(y_true=labelled["y"], y_pred=labelled["pred"], sensitive_features=labelled["sex"])
    params = {k: {"sample_weight": w} for k in metrics}
    theirs = fm.MetricFrame(metrics=metrics, sample_params=params, **kwargs)
    ours = fairness.MetricFrame(metrics=metrics, sample_params=params, device="cpu", **kwargs)
    np.testing.assert_allclose(ours.by_group.numpy(), theirs.by_group.to_numpy(float), rtol=1e-12)


def test_bootstrap_intervals_equal_fairlearn(labelled):
    # metrics defined in every resample: where a resample leaves a group without positives,
    # scikit-learn's recall is 0.0 and ours NaN (skipped by the quantiles), by design
    metrics = {"acc": skm.accuracy_score, "sel": fm.selection_rate, "count": fm.count}
    features = {"sex": labelled["sex"], "race": labelled["race"]}
    kwargs = dict(
        y_true=labelled["y"],
        y_pred=labelled["pred"],
        sensitive_features=features,
        n_boot=25,
        ci_quantiles=[0.05, 0.5, 0.95],
        random_state=7,
    )
    theirs = fm.MetricFrame(metrics=metrics, **kwargs)
    ours = fairness.MetricFrame(metrics=metrics, device="cpu", **kwargs)
    for q in range(3):
        np.testing.assert_allclose(ours.overall_ci[q].numpy(), theirs.overall_ci[q].to_numpy(float))
        np.testing.assert_allclose(
            ours.by_group_ci[q].numpy(), theirs.by_group_ci[q].to_numpy(float), equal_nan=True
        )
        for method in ("between_groups", "to_overall"):
            np.testing.assert_allclose(
                ours.difference_ci(method)[q].numpy(),
                theirs.difference_ci(method=method)[q].to_numpy(float),
            )
            np.testing.assert_allclose(
                ours.ratio_ci(method)[q].numpy(), theirs.ratio_ci(method=method)[q].to_numpy(float)
            )
        np.testing.assert_allclose(
            ours.group_min_ci()[q].numpy(), theirs.group_min_ci()[q].to_numpy(float)
        )


def test_bootstrap_is_seeded(labelled):
    def interval(seed):
        return fairness.MetricFrame(
            metrics="accuracy",
            y_true=labelled["y"],
            y_pred=labelled["pred"],
            sensitive_features=labelled["sex"],
            n_boot=50,
            ci_quantiles=[0.025, 0.975],
            random_state=seed,
            device="cpu",
        ).by_group_ci

    assert torch.equal(interval(3), interval(3))
    assert not torch.equal(interval(3), interval(4))
    indices = bootstrap_indices(10, 4, 1)
    assert indices.shape == (4, 10) and indices.min() >= 0 and indices.max() < 10


def test_auc_is_rank_based_per_group_with_ties_and_weights(labelled):
    y, score, sex, w = labelled["y"], labelled["score"], labelled["sex"], labelled["weight"]
    frame = fairness.MetricFrame(
        metrics="roc_auc",
        y_true=y,
        y_pred=labelled["pred"],
        y_score=score,
        sensitive_features=sex,
        sample_weight=w,
        device="cpu",
    )
    for g, label in enumerate(frame.groups.labels):
        members = sex == label
        expected = skm.roc_auc_score(y[members], score[members], sample_weight=w[members])
        assert float(frame.by_group[g]) == pytest.approx(expected, abs=1e-12)
    assert float(frame.overall) == pytest.approx(
        skm.roc_auc_score(y, score, sample_weight=w), abs=1e-12
    )
    # fairlearn's way: the scores passed as y_pred to roc_auc_score
    theirs = fm.MetricFrame(
        metrics=skm.roc_auc_score, y_true=y, y_pred=score, sensitive_features=sex
    )
    ours = fairness.MetricFrame(
        metrics=skm.roc_auc_score, y_true=y, y_pred=score, sensitive_features=sex, device="cpu"
    )
    np.testing.assert_allclose(ours.by_group.numpy(), theirs.by_group.to_numpy(float), atol=1e-12)


def test_roc_curves_equal_sklearn(labelled):
    y, score, sex = labelled["y"], labelled["score"], labelled["sex"]
    groups, curves = fairness.roc_curve_by_group(y, score, sensitive_features=sex)
    for label, (fpr, tpr, thresholds) in zip(groups.labels, curves):
        members = sex == label
        ref = skm.roc_curve(y[members], score[members], drop_intermediate=False)
        for ours, theirs in zip((fpr, tpr, thresholds), ref):
            np.testing.assert_allclose(ours.numpy(), theirs)


def test_disparity_functions_equal_fairlearn(labelled):
    kwargs = dict(sensitive_features={"sex": labelled["sex"], "race": labelled["race"]})
    y, pred = labelled["y"], labelled["pred"]
    for name in (
        "demographic_parity_difference",
        "demographic_parity_ratio",
        "equal_opportunity_difference",
        "equal_opportunity_ratio",
    ):
        for method in ("between_groups", "to_overall"):
            ours = getattr(fairness, name)(y, pred, method=method, **kwargs)
            assert ours == pytest.approx(
                getattr(fm, name)(y, pred, method=method, **kwargs), abs=1e-12
            )
    for name in ("equalized_odds_difference", "equalized_odds_ratio"):
        for agg in ("worst_case", "mean"):
            ours = getattr(fairness, name)(y, pred, agg=agg, **kwargs)
            assert ours == pytest.approx(getattr(fm, name)(y, pred, agg=agg, **kwargs), abs=1e-12)
    w = labelled["weight"]
    assert fairness.selection_rate(y, pred, sample_weight=w) == pytest.approx(
        fm.selection_rate(y, pred, sample_weight=w), abs=1e-12
    )
    assert fairness.true_negative_rate(y, pred) == pytest.approx(fm.true_negative_rate(y, pred))
    assert fairness.mean_prediction(y, labelled["score"]) == pytest.approx(
        fm.mean_prediction(y, labelled["score"])
    )


def test_any_other_metric_function_runs_per_group_like_fairlearn(labelled):
    def balanced_error(y_true, y_pred):
        return 1 - skm.balanced_accuracy_score(y_true, y_pred)

    kwargs = dict(
        y_true=labelled["y"], y_pred=labelled["pred"], sensitive_features=labelled["race"]
    )
    ours = fairness.MetricFrame(metrics={"be": balanced_error}, device="cpu", **kwargs)
    theirs = fm.MetricFrame(metrics={"be": balanced_error}, **kwargs)
    np.testing.assert_allclose(ours.by_group.numpy()[:, 0], theirs.by_group["be"].to_numpy(float))


def test_undefined_metrics_are_nan_with_a_warning():
    y = np.array([0, 0, 1, 1, 0, 0])
    pred = np.array([0, 1, 1, 0, 0, 0])
    groups = ["a", "a", "a", "a", "b", "b"]  # b has no positives and predicts none
    with pytest.warns(fairness.UndefinedMetricWarning, match="recall for 'b'"):
        frame = fairness.MetricFrame(
            metrics=["recall", "precision", "accuracy"],
            y_true=y,
            y_pred=pred,
            sensitive_features=groups,
            device="cpu",
        )
    assert torch.isnan(frame.by_group[1, 0]) and torch.isnan(frame.by_group[1, 1])
    assert frame.by_group[1, 2] == 1.0
    # differences skip the undefined group, as pandas does in fairlearn
    assert float(frame.difference()[2]) == pytest.approx(0.5)
    assert torch.isnan(frame.difference()[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(y_true=[0, 1, 1], y_pred=[0, 1], sensitive_features=["a", "b", "a"]),
            "y_pred has 2 rows",
        ),
        (
            dict(y_true=[0, 1, 1], y_pred=[0, 1, 1], sensitive_features=["a", "b"]),
            "sensitive_features",
        ),
        (
            dict(y_true=[0.0, np.nan, 1.0], y_pred=[0, 1, 1], sensitive_features=["a", "b", "a"]),
            "y_true has NaN",
        ),
        (dict(y_true=[0, 1, 1], y_pred=[0, 1, 1], sensitive_features=["a", "a", "a"]), "1 group"),
        (
            dict(y_true=[0, 1, 2], y_pred=[0, 1, 1], sensitive_features=["a", "b", "a"]),
            "y_true must be binary",
        ),
        (dict(y_true=[0, 1, 1], y_pred=[0, 1, 1], sensitive_features=["a", None, "a"]), "None"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fairness.MetricFrame(metrics="accuracy", device="cpu", **kwargs)


def test_bad_metric_and_method_names():
    kwargs = dict(y_true=[0, 1, 1, 0], y_pred=[0, 1, 1, 1], sensitive_features=["a", "b", "a", "b"])
    with pytest.raises(ValueError, match="unknown metric 'accuracyy'"):
        fairness.MetricFrame(metrics="accuracyy", device="cpu", **kwargs)
    frame = fairness.MetricFrame(metrics="accuracy", device="cpu", **kwargs)
    with pytest.raises(ValueError, match="method must be one of"):
        frame.difference("largest")
    with pytest.raises(ValueError, match="no bootstrap"):
        frame.overall_ci  # noqa: B018
    with pytest.raises(ValueError, match="agg must be"):
        fairness.equalized_odds_difference([0, 1], [0, 1], sensitive_features=["a", "b"], agg="max")


# ----------------------------------------------------------------------------- data


def test_group_counts_equal_a_loop(labelled):
    sex, race, y = labelled["sex"], labelled["race"], labelled["y"]
    counts = group_counts({"sex": sex, "race": race}, y, threshold=0.2)
    largest_cell = max(
        np.sum((sex == s) & (race == r) & (y == v)) for s in "FM" for r in "ABC" for v in (0, 1)
    )
    for g, (s, r) in enumerate(counts.groups.labels):
        members = (sex == s) & (race == r)
        assert counts.counts[g] == members.sum()
        assert counts.label_counts[g].tolist() == [
            np.sum(members & (y == 0)),
            np.sum(members & (y == 1)),
        ]
        assert bool(counts.flagged[g]) == (members.sum() < 0.2 * counts.counts.max())
        for v in (0, 1):
            expected = np.sum(members & (y == v)) < 0.2 * largest_cell
            assert bool(counts.label_flagged[g, v]) == expected


def test_associations_equal_scipy_numpy_and_a_loop():
    from scipy.stats.contingency import association, crosstab

    rng = np.random.default_rng(1)
    n = 400
    a = rng.integers(0, 3, n)
    b = (a + rng.integers(0, 2, n)) % 4
    x = a * 2.0 + rng.normal(size=n)
    z = x * 0.5 + rng.normal(size=n)
    table = np.stack([a, b, x, z], 1)
    assoc = associations(table, categorical=[0, 1], feature_names=["a", "b", "x", "z"])
    assert float(assoc.values[0, 1]) == pytest.approx(
        association(crosstab(a, b)[1], method="cramer")
    )
    assert float(assoc.values[2, 3]) == pytest.approx(np.corrcoef(x, z)[0, 1])
    mean = x.mean()
    between = sum(np.sum(a == k) * (x[a == k].mean() - mean) ** 2 for k in range(3))
    assert float(assoc.values[0, 2]) == pytest.approx(np.sqrt(between / np.sum((x - mean) ** 2)))
    assert assoc.kinds[0][2] == "eta" and assoc.kinds[1][0] == "cramers_v"
    zm = z.mean()
    eta_z = np.sqrt(
        sum(np.sum(a == k) * (z[a == k].mean() - zm) ** 2 for k in range(3)) / np.sum((z - zm) ** 2)
    )
    assert float(assoc.values[0, 3]) == pytest.approx(eta_z)
    assert assoc.associated_with(0, 0.75) == [
        j for j, v in ((1, assoc.values[0, 1]), (2, assoc.values[0, 2]), (3, eta_z)) if v >= 0.75
    ]
    order, _ = fairness.data.cluster_order(assoc)
    assert sorted(order) == [0, 1, 2, 3]


def test_balanced_split_takes_the_bounds_per_cell():
    y = np.array([0, 1] * 150)
    groups = np.array(["F"] * 40 + ["M"] * 260)
    split = balanced_train_test_split(
        y, groups, min_per_group=30, max_per_group=100, test_size=0.25, seed=3
    )
    assert split.cell_rows.tolist() == [20, 20, 130, 130]
    assert split.cell_taken.tolist() == [30, 30, 100, 100]
    train, test = set(split.train_index.tolist()), set(split.test_index.tolist())
    assert not train & test  # upsampled copies stay on one side
    for index in (split.train_index, split.test_index):
        assert set(zip(y[index], groups[index])) == {(0, "F"), (1, "F"), (0, "M"), (1, "M")}
    again = balanced_train_test_split(
        y, groups, min_per_group=30, max_per_group=100, test_size=0.25, seed=3
    )
    assert torch.equal(again.train_index, split.train_index)
    with pytest.raises(ValueError, match="fewer than min_per_group=30"):
        balanced_train_test_split(y, groups, min_per_group=30, fallback="error")
    with pytest.raises(ValueError, match="fallback must be"):
        balanced_train_test_split(y, groups, fallback="drop")


# ----------------------------------------------------------------------------- importance


@pytest.fixture(scope="module")
def census_model():
    from torchexplain.datasets import load_census
    from torchexplain.zoo import pretrained_census_mlp

    data = load_census()
    model, _ = pretrained_census_mlp()
    return data, model.eval()


def test_permutation_importance_equals_sklearn(census_model):
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.inspection import permutation_importance as sklearn_importance

    data, model = census_model
    X, y = data.X_test[:700], data.y_test[:700]

    class Wrapped(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            return self

        def predict(self, X):
            with torch.no_grad():
                return model(torch.as_tensor(X, dtype=torch.float32)).argmax(1).numpy()

        def decision_function(self, X):
            with torch.no_grad():
                logits = model(torch.as_tensor(X, dtype=torch.float32)).double()
            return (logits[:, 1] - logits[:, 0]).numpy()

    estimator = Wrapped()
    estimator.classes_ = np.array([0, 1])
    reference = sklearn_importance(estimator, X, y, scoring="accuracy", n_repeats=4, random_state=5)
    ours = permutation_importance(
        model, X, y, permutations=sklearn_permutations(len(X), 4, 5), device="cpu"
    )
    np.testing.assert_allclose(ours.importances.numpy(), reference.importances, atol=1e-12)
    np.testing.assert_allclose(ours.importances_std.numpy(), reference.importances_std, atol=1e-12)

    def margin(rows):
        logits = model(torch.as_tensor(rows, dtype=torch.float32)).double()
        return logits[:, 1] - logits[:, 0]

    reference = sklearn_importance(estimator, X, y, scoring="roc_auc", n_repeats=2, random_state=5)
    ours = permutation_importance(
        margin,
        X,
        y,
        scoring="roc_auc",
        permutations=sklearn_permutations(len(X), 2, 5),
        device="cpu",
    )
    np.testing.assert_allclose(ours.importances.numpy(), reference.importances, atol=1e-12)


def test_permutation_importance_per_group_equals_a_loop(census_model, device):
    data, model = census_model
    X, y = data.X_test[:300], data.y_test[:300]
    sex = X[:, 8]
    result = permutation_importance(
        model.to(device),
        X,
        y,
        n_repeats=2,
        seed=3,
        sensitive_features=sex,
        features=[0, 8],
        device=device,
    )
    model.cpu()
    orders = torch.stack(
        [
            torch.randperm(300, generator=g)
            for g in [torch.Generator().manual_seed(3)]
            for _ in range(2)
        ]
    )
    with torch.no_grad():
        base = model(torch.as_tensor(X)).argmax(1).numpy() == y
        for f_index, column in enumerate([0, 8]):
            for r in range(2):
                shuffled = X.copy()
                shuffled[:, column] = X[orders[r].numpy(), column]
                correct = model(torch.as_tensor(shuffled)).argmax(1).numpy() == y
                for g, value in enumerate(result.groups.labels):
                    members = sex == value
                    expected = base[members].mean() - correct[members].mean()
                    assert float(result.importances_by_group[g, f_index, r]) == pytest.approx(
                        expected, abs=1e-12
                    )
                assert float(result.importances[f_index, r]) == pytest.approx(
                    base.mean() - correct.mean(), abs=1e-12
                )
    assert result.rows_evaluated == 300 * 5


def test_permutation_importance_bad_input(census_model):
    data, model = census_model
    X, y = data.X_test[:50], data.y_test[:50]
    with pytest.raises(ValueError, match="y has 49 rows"):
        permutation_importance(model, X, y[:49], device="cpu")
    with pytest.raises(ValueError, match="scoring must be one of"):
        permutation_importance(model, X, y, scoring="auc", device="cpu")
    with pytest.raises(ValueError, match="permutation of 0..N-1"):
        permutation_importance(model, X, y, permutations=np.zeros((2, 50), dtype=int), device="cpu")


# ----------------------------------------------------------------------------- explanations


def test_the_gap_splits_by_feature_exactly_with_shap(census_model):
    from torchexplain.zoo import Probabilities

    data, model = census_model
    rows = data.X_test[:80]
    probabilities = Probabilities(model).eval()
    explainer = torchexplain.KernelShap(probabilities, feature_names=data.feature_names, seed=0)
    explanation = explainer.fit(data.X_train[:20]).explain(rows)
    sex = np.array(data.categorical_names[8])[rows[:, 8].astype(int)]
    split = gap_by_feature(explanation, sex, reference="Male")
    with torch.no_grad():
        score = probabilities(torch.as_tensor(rows))[:, 1].double().numpy()
    gap = score[sex == "Female"].mean() - score[sex == "Male"].mean()
    female = split.groups.labels.index("Female")
    assert float(split.gap[female]) == pytest.approx(gap, abs=1e-7)  # the model's float32 outputs
    assert float(split.contributions[female].sum()) == pytest.approx(
        float(split.gap[female]), abs=1e-9
    )
    values = explanation.shap_values[:, 1].double().numpy()
    expected = values[sex == "Female"].mean(0) - values[sex == "Male"].mean(0)
    np.testing.assert_allclose(split.contributions[female].numpy(), expected, atol=1e-12)
    assert split.feature_names == data.feature_names


def test_the_gap_splits_with_ig_up_to_the_convergence_delta(census_model):
    data, model = census_model
    rows = torch.as_tensor(data.X_test[:40])
    baseline = torch.as_tensor(data.X_train[:200].mean(0, keepdims=True))
    explanation = torchexplain.IntegratedGradients(model).explain(
        rows, baselines=baseline, target=1
    )
    groups = rows[:, 8].numpy()
    split = gap_by_feature(explanation, groups)
    deltas = explanation.convergence_delta.double().numpy()
    ref = split.reference
    other = 1 - ref
    expected = (
        deltas[groups == split.groups.labels[ref]].mean()
        - deltas[groups == split.groups.labels[other]].mean()
    )
    assert float(split.residual[other]) == pytest.approx(expected, abs=1e-6)


def _anchor_explanation(features, precision, coverage, success):
    return Explanation(
        meta={"name": "AnchorTabular"},
        data={
            "feature": features,
            "precision": torch.tensor(precision, dtype=torch.float64),
            "coverage": torch.tensor(coverage, dtype=torch.float64),
            "success": torch.tensor(success),
        },
    )


def test_anchors_by_group_equals_a_loop():
    rng = np.random.default_rng(2)
    n = 40
    features = [sorted(rng.choice(5, rng.integers(0, 3), replace=False).tolist()) for _ in range(n)]
    precision, coverage = rng.random(n).tolist(), rng.random(n).tolist()
    success = (rng.random(n) > 0.3).tolist()
    groups = rng.choice(["x", "y"], n)
    table = rng.integers(0, 3, (200, 5)).astype(float)
    table[:, 3] = table[:, 0]  # column 3 is a proxy of column 0
    assoc = associations(table, categorical=[0, 1, 2, 3, 4])
    result = anchors_by_group(
        _anchor_explanation(features, precision, coverage, success),
        groups,
        protected=[0],
        associations=assoc,
    )
    assert result.proxies == [3]
    for g, label in enumerate(result.groups.labels):
        members = [i for i in range(n) if groups[i] == label]
        assert result.count[g] == len(members)
        assert float(result.precision[g]) == pytest.approx(np.mean([precision[i] for i in members]))
        assert float(result.coverage[g]) == pytest.approx(np.mean([coverage[i] for i in members]))
        assert float(result.success[g]) == pytest.approx(np.mean([success[i] for i in members]))
        assert float(result.uses_protected[g]) == pytest.approx(
            np.mean([0 in features[i] for i in members])
        )
        proxy_only = [3 in features[i] and 0 not in features[i] for i in members]
        assert float(result.uses_proxy[g]) == pytest.approx(np.mean(proxy_only))


def test_attribute_flip_equals_a_loop(census_model):
    data, model = census_model
    rows = data.X_test[:200]
    model.train()
    flip = attribute_flip(model, rows, 8)
    assert model.training  # left as found
    model.eval()
    with torch.no_grad():
        original = model(torch.as_tensor(rows)).argmax(1).numpy()
        for i, source in enumerate(flip.values):
            members = rows[:, 8] == source
            for j, value in enumerate(flip.values):
                changed = rows.copy()
                changed[:, 8] = value
                differs = model(torch.as_tensor(changed)).argmax(1).numpy() != original
                assert float(flip.flip_rate[i, j]) == pytest.approx(differs[members].mean())
    assert float(flip.flip_rate[0, 0]) == 0.0
    assert flip.flipped.sum() > 0
    with pytest.raises(ValueError, match="column must be a column index"):
        attribute_flip(model, rows, 12)


def test_recourse_never_changes_an_immutable_column(census_model):
    from torchexplain.zoo import Probabilities

    data, model = census_model
    train = torch.as_tensor(data.X_train[:2000])
    rows = torch.as_tensor(data.X_test[:40])
    immutable = [j for j in range(12) if j not in (3, 9, 10, 11)]
    explainer = torchexplain.Counterfactual(
        Probabilities(model),
        model_output="probabilities",
        target_class=1,
        target_proba=0.75,
        tol=0.25,
        max_iter=200,
        max_lam_steps=4,
        immutable_features=immutable,
        feature_range=(train.min(0).values, train.max(0).values),
    ).fit(train)
    sex = rows[:, 8].numpy()
    burden = recourse_burden(explainer, rows, sex, distance="l1_distance")
    with torch.no_grad():
        unfavourable = (model(rows).argmax(1) != 1).nonzero().flatten()
    assert torch.equal(burden.searched, unfavourable)
    explanation = explainer.explain(rows[unfavourable], target_class=1)
    assert torch.equal(explanation.counterfactual[:, immutable], rows[unfavourable][:, immutable])
    found = explanation.success.numpy()
    assert found.any()
    for g, value in enumerate(burden.groups.labels):
        members = sex[unfavourable.numpy()] == value
        assert burden.unfavourable[g] == members.sum()
        assert burden.found[g] == (members & found).sum()
        if (members & found).any():
            expected = explanation.l1_distance.double().numpy()[members & found].mean()
            assert float(burden.burden[g]) == pytest.approx(expected, rel=1e-6)
    assert (burden.failed == burden.unfavourable - burden.found).all()


@pytest.mark.parametrize("method", ["Counterfactual", "CounterfactualProto"])
def test_immutable_features_change_nothing_the_model_ignores(method):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))

    def model(x):  # never reads feature 3
        return net(x[:, :3])

    x = torch.rand(5, 4)
    options = (
        dict(max_iter=100, max_lam_steps=3, target_proba=0.6, tol=0.4)
        if method == "Counterfactual"
        else dict(max_iterations=100, c_steps=3)
    )
    cls = getattr(torchexplain, method)
    plain = cls(model, **options).explain(x)
    frozen = cls(model, immutable_features=[0, 3], **options).explain(x)
    assert torch.equal(frozen.counterfactual[:, [0, 3]], x[:, [0, 3]])
    free = cls(model, immutable_features=[3], **options).explain(x)
    assert torch.equal(free.counterfactual, plain.counterfactual)  # a zero gradient already
    with pytest.raises(ValueError, match="immutable_features"):
        cls(model, immutable_features=[4], **options).explain(x)
    with pytest.raises(ValueError, match="immutable_features must hold ints"):
        cls(model, immutable_features=[-1], **options)
