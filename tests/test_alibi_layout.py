"""Alibi's layout of our explanations, checked in this process against the explanations themselves and
closed forms (tests/test_serving_clients.py parses the same layouts with Alibi 0.9.6 itself)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import torchexplain as te
from torchexplain.alibi_layout import ALIBI_METHODS, to_alibi, to_alibi_json
from torchexplain.registry import registered_explainers

W = np.array([[1.0, -2.0], [0.5, 0.3], [-0.7, 0.2]])


def predict(rows: np.ndarray) -> np.ndarray:
    logits = np.asarray(rows, dtype=np.float64) @ W
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


TRAIN = np.random.default_rng(0).uniform(-1, 1, (300, 3))
ROWS = np.random.default_rng(1).uniform(-1, 1, (3, 3))


def test_every_alibi_method_is_a_registered_explainer():
    assert set(ALIBI_METHODS) <= set(registered_explainers())


def test_anchors_give_one_alibi_explanation_per_row_with_our_numbers():
    explanation = te.AnchorTabular(predict, ["a", "b", "c"], seed=0).fit(TRAIN).explain(ROWS)
    answers = to_alibi(explanation, ROWS)
    assert len(answers) == 3
    for i, answer in enumerate(answers):
        data = answer["data"]
        assert data["anchor"] == explanation.anchor[i]
        assert data["precision"] == float(explanation.precision[i])
        assert data["coverage"] == float(explanation.coverage[i])
        assert data["raw"]["feature"] == explanation.feature[i]
        assert data["raw"]["prediction"] == [int(predict(ROWS[i : i + 1]).argmax())]
        assert data["raw"]["instance"] == ROWS[i].tolist()
        assert data["raw"]["num_preds"] == int(explanation.n_samples[i])
        assert answer["meta"]["name"] == "AnchorTabular"
        assert answer["meta"]["params"]["threshold"] == 0.95
        assert answer["meta"]["params"]["binary_cache_size"] is None  # Alibi's, not ours
    texts = to_alibi_json(explanation, ROWS)
    assert [json.loads(t) for t in texts] == answers  # plain JSON: nothing tagged, nothing lost


def test_kernel_shap_is_one_explanation_with_alibis_per_output_lists_and_ranked_importances():
    explainer = te.KernelShap(predict, feature_names=["a", "b", "c"], seed=0).fit(TRAIN[:20])
    explanation = explainer.explain(ROWS)
    (answer,) = to_alibi(explanation, ROWS)
    values = explanation.shap_values.numpy()  # (N, K, M)
    shap_values = answer["data"]["shap_values"]
    assert len(shap_values) == 2
    for k in range(2):
        np.testing.assert_array_equal(np.asarray(shap_values[k]), values[:, k])
    raw = answer["data"]["raw"]
    assert raw["prediction"] == predict(ROWS).argmax(1).tolist()
    # Alibi's importances: mean |value| over the instances per output, ranked; "aggregated" ranks the
    # SHAP values summed over the outputs (brute force here)
    for key, per_feature in [
        ("0", np.abs(values[:, 0]).mean(0)),
        ("1", np.abs(values[:, 1]).mean(0)),
        ("aggregated", np.abs(values.sum(1)).mean(0)),
    ]:
        order = sorted(range(3), key=lambda j: -per_feature[j])
        assert raw["importances"][key]["names"] == [["a", "b", "c"][j] for j in order]
        np.testing.assert_allclose(raw["importances"][key]["ranked_effect"], per_feature[order])
    assert answer["meta"]["task"] == "classification"
    assert list(answer["meta"]["params"])[:9] == [
        "link",
        "group_names",
        "grouped",
        "groups",
        "weights",
        "summarise_background",
        "summarise_result",
        "transpose",
        "kwargs",
    ]


def test_integrated_gradients_keeps_alibis_list_of_inputs():
    model = torch.nn.Linear(3, 2).double()
    x = torch.from_numpy(ROWS)
    explanation = te.IntegratedGradients(model, n_steps=8).explain(x, target=[0, 1, 0])
    (answer,) = to_alibi(explanation, x)
    data = answer["data"]
    np.testing.assert_array_equal(np.asarray(data["attributions"][0]), explanation.attributions)
    assert data["X"] == ROWS.tolist() and data["baselines"] == [np.zeros((3, 3)).tolist()]
    assert data["target"] == [0, 1, 0]
    np.testing.assert_array_equal(data["deltas"], explanation.convergence_delta)


def test_a_method_alibi_does_not_have_is_refused_by_name():
    explanation = te.Explanation({"name": "ExplanationMonitor"}, {})
    with pytest.raises(ValueError, match="'ExplanationMonitor' has no Alibi layout"):
        to_alibi(explanation)


def test_text_anchors_carry_alibis_names_positions_and_examples():
    def predict(texts):
        return np.array([[0.0, 1.0] if "good" in t.split() else [1.0, 0.0] for t in texts])

    texts = ["a good film", "so good , so good"]
    explanation = te.AnchorText(predict, seed=0).explain(texts)
    answers = to_alibi(explanation, texts)
    assert [a["data"]["anchor"] for a in answers] == [["good"], ["good"]]
    raw = answers[0]["data"]["raw"]
    assert raw["names"] == ["good"] and raw["positions"] == [2] and raw["feature"] == [1]
    assert raw["instance"] == "a good film" and raw["instances"] == ["a good film"]
    assert raw["prediction"] == [1]
    assert raw["examples"][0]["covered_true"] == explanation.covered_true[0]
    assert list(answers[0]["meta"]["params"])[:5] == [
        "seed",
        "sample_proba",
        "top_n",
        "temperature",
        "use_proba",
    ]
    assert [json.loads(t) for t in to_alibi_json(explanation, texts)] == answers
