"""TreeShap: shap's TreeExplainer under torchexplain's contract, on scikit-learn forests and boosting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchexplain import Explanation, TreeShap, load_explainer, tree_shap

shap = pytest.importorskip("shap")
ensemble = pytest.importorskip("sklearn.ensemble")


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)  # noqa: NPY002 - local stream for test data
    X = rng.randn(600, 5)
    y = ((X[:, 0] + X[:, 1] * X[:, 2] + 0.3 * rng.randn(600)) > 0).astype(int)
    return X, y


@pytest.fixture(scope="module")
def models(data):
    X, y = data
    return {
        "forest": ensemble.RandomForestClassifier(20, max_depth=5, random_state=0).fit(X, y),
        "boosting": ensemble.GradientBoostingClassifier(
            n_estimators=20, max_depth=3, random_state=0
        ).fit(X, y),
        "regressor": ensemble.RandomForestRegressor(10, max_depth=4, random_state=0).fit(
            X, X[:, 0] - X[:, 3]
        ),
    }


def _per_class(values) -> np.ndarray:
    values = np.asarray(values)
    return values[:, None] if values.ndim == 2 else np.moveaxis(values, -1, 1)


@pytest.mark.parametrize("name", ["forest", "boosting", "regressor"])
@pytest.mark.parametrize("interventional", [False, True])
def test_equal_to_shaps_tree_explainer(models, data, name, interventional):
    X, _ = data
    model = models[name]
    rows, background = X[:40], X[100:400]
    if interventional:
        masker = shap.maskers.Independent(background, max_samples=len(background))
        reference = shap.TreeExplainer(model, masker, feature_perturbation="interventional")
    else:
        reference = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
    exp = TreeShap(model).fit(background if interventional else None).explain(rows)
    np.testing.assert_array_equal(exp.shap_values.numpy(), _per_class(reference.shap_values(rows)))
    np.testing.assert_array_equal(
        exp.expected_value.numpy(), np.atleast_1d(reference.expected_value)
    )
    assert exp.meta["feature_perturbation"] == (
        "interventional" if interventional else "tree_path_dependent"
    )
    assert exp.meta["n_background"] == (300 if interventional else 0)


def test_every_background_row_is_used_not_shaps_default_100(models, data):
    X, _ = data
    model, background = models["boosting"], X[100:400]
    exp = TreeShap(model).fit(background).explain(X[:10])
    capped = _per_class(
        shap.TreeExplainer(model, background, feature_perturbation="interventional").shap_values(
            X[:10]
        )
    )
    assert not np.allclose(exp.shap_values.numpy(), capped)  # shap's default subsampled to 100 rows
    kept = TreeShap(model).fit(background, summarise_background=True, n_background_samples=50)
    assert kept._fit["background"].shape == (50, 5)
    assert kept.explain(X[:2]).meta["n_background"] == 50


@pytest.mark.parametrize("name", ["forest", "boosting"])
def test_values_add_up_to_the_models_output(models, data, name):
    X, _ = data
    model = models[name]
    exp = TreeShap(model).fit().explain(X[:50])
    output = (
        model.predict_proba(X[:50])
        if name == "forest"
        else model.decision_function(X[:50])[:, None]
    )
    np.testing.assert_allclose(exp.predictions.numpy(), output, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        exp.shap_values.sum(-1).numpy() + exp.expected_value.numpy(), output, rtol=1e-6, atol=1e-6
    )  # shap's own additivity tolerance is looser
    probability = TreeShap(model, model_output="probability").fit(X[100:200]).explain(X[:20])
    want = model.predict_proba(X[:20])
    want = want if name == "forest" else want[:, 1:]
    np.testing.assert_allclose(
        probability.shap_values.sum(-1).numpy() + probability.expected_value.numpy(),
        want,
        rtol=1e-6,
        atol=1e-6,
    )


def test_interaction_values_sum_to_the_shap_values(models, data):
    X, _ = data
    exp = TreeShap(models["forest"]).fit().explain(X[:8], interactions=True)
    assert exp.interaction_values.shape == (8, 2, 5, 5)
    torch.testing.assert_close(
        exp.interaction_values.sum(-1), exp.shap_values, rtol=1e-6, atol=1e-8
    )
    with pytest.raises(ValueError, match="path-dependent"):
        TreeShap(models["forest"]).fit(X[:50]).explain(X[:2], interactions=True)


def test_pieces_batches_json_and_save_load_keep_the_explanation(models, data, tmp_path):
    X, _ = data
    model = models["forest"]
    explainer = TreeShap(model, feature_names=list("abcde")).fit(X[100:200])
    whole = explainer.explain(torch.from_numpy(X[:30]))
    pieces = explainer.explain(torch.from_numpy(X[:30]), internal_batch_size=7)
    for key in ("shap_values", "expected_value", "predictions", "target"):
        torch.testing.assert_close(pieces.data[key], whole.data[key], rtol=0, atol=0)
    alone = explainer.explain(X[3:4])
    torch.testing.assert_close(alone.shap_values, whole.shap_values[3:4], rtol=0, atol=0)
    assert whole.meta["feature_names"] == list("abcde") and whole.meta["name"] == "TreeShap"
    assert set(whole.meta["params"]) == set(TreeShap.settings_class.names())
    back = Explanation.from_json(whole.to_json())
    torch.testing.assert_close(back.shap_values, whole.shap_values, rtol=0, atol=0)
    explainer.save(tmp_path / "saved")
    assert not any(p.suffix in (".pkl", ".pickle") for p in (tmp_path / "saved").iterdir())
    loaded = load_explainer(tmp_path / "saved", model=model)
    torch.testing.assert_close(
        loaded.explain(X[:30]).shap_values, whole.shap_values, rtol=0, atol=0
    )
    by_function = tree_shap(model, X[:30], X[100:200], feature_names=list("abcde"))
    torch.testing.assert_close(by_function.shap_values, whole.shap_values, rtol=0, atol=0)
    maps = explainer.explanation_map(whole, X[:30])
    torch.testing.assert_close(maps, whole.shap_values[torch.arange(30), whole.target].float())


def test_bad_input_is_refused_with_the_argument_named(models, data):
    X, _ = data
    with pytest.raises(TypeError, match="tree model"):
        TreeShap(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="not fitted"):
        TreeShap(models["forest"]).explain(X[:2])
    with pytest.raises(ValueError, match="needs background data"):
        TreeShap(models["forest"], model_output="probability").fit()
    explainer = TreeShap(models["forest"]).fit()
    with pytest.raises(TypeError, match="inputs must be a torch.Tensor or a numpy array"):
        explainer.explain(X[:2].tolist())
    bad = X[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        explainer.explain(bad)
    with pytest.raises(ValueError, match="model_output must be one of"):
        TreeShap(models["forest"], model_output="margin")


@pytest.mark.parametrize("n_classes", [2, 3])
def test_xgboosts_own_tree_shap_equals_shaps_and_leaves_the_model_as_found(data, n_classes):
    xgboost = pytest.importorskip("xgboost")
    X, y = data
    y = y if n_classes == 2 else y + (X[:, 3] > 0.8)
    model = xgboost.XGBClassifier(n_estimators=15, max_depth=3, random_state=0).fit(X, y)
    config_before = model.get_booster().save_config()
    rows = X[:25]
    exp = TreeShap(model, device="cpu").fit().explain(rows, interactions=True)
    want = _per_class(
        shap.TreeExplainer(model, feature_perturbation="tree_path_dependent").shap_values(rows)
    )
    np.testing.assert_allclose(exp.shap_values.numpy(), want, rtol=1e-5, atol=1e-5)
    margin = model.predict(rows, output_margin=True).reshape(25, -1)
    np.testing.assert_allclose(exp.predictions.numpy(), margin, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        exp.shap_values.sum(-1).numpy() + exp.expected_value.numpy(), margin, rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        exp.interaction_values.sum(-1), exp.shap_values, rtol=1e-4, atol=1e-5
    )
    assert exp.meta["algorithm"] == "xgboost pred_contribs (cpu)"
    assert model.get_booster().save_config() == config_before
    with pytest.raises(ValueError, match="path-dependent"):
        TreeShap(model, device="cpu").fit(X[:20])


def test_a_device_needs_an_xgboost_model(models):
    with pytest.raises(ValueError, match="XGBoost's own Tree SHAP"):
        TreeShap(models["forest"], device="cpu").fit()
