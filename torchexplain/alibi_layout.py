"""Explanations in Alibi's layout, for the code Seldon users already run on an explainer's answer.

Seldon's dashboards and its users' scripts parse an explainer's answer with
``alibi.api.interfaces.Explanation.from_json`` and read ``exp.anchor``,
``exp.precision``, ``exp.shap_values``, ``exp.attributions``... That parser keeps
JSON as it is (lists stay lists), so the answer must be Alibi's own layout: ``meta``
with Alibi's keys (``name``, ``type``, ``explanations``, ``params``, ``version``, and
``task`` for the SHAP methods) and ``data`` with Alibi's field names holding plain
numbers and lists. torchexplain's own JSON (:meth:`Explanation.to_json`) keeps
dtypes and shapes exactly instead, and stays the default.

Alibi explains one instance per call with anchors and counterfactuals, and a batch
with SHAP and Integrated Gradients. :func:`to_alibi` follows it: one Alibi
explanation per row for the first kind, one for the whole batch for the second.

Where the layouts differ (each also in the docs' serving page):

- anchors: ``raw["precision"]``, ``raw["coverage"]`` and ``raw["mean"]`` hold the
  final anchor's value only (Alibi lists one per partial anchor; the batched search
  does not keep them), and ``raw["examples"]`` holds one entry, the final anchor's
  covered examples (``uncovered_*`` empty, as Alibi's are). Images keep the layout
  they were given in (``(C, H, W)`` for a torch model; Alibi's models take ``(H, W, C)``).
- counterfactuals: ``all`` (every iterate Alibi logs) is ``{}``, and ``cf["loss"]``
  and the gradient fields are None.
- Integrated Gradients: ``baselines`` are the explanation's when it records them,
  else zeros (the default baseline).
- ``meta["version"]`` is torchexplain's version; ``params`` holds Alibi's keys (None
  where torchexplain has no such setting, e.g. ``binary_cache_size``), then
  torchexplain's other settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from torchexplain._version import __version__
from torchexplain.explanation import Explanation

__all__ = ["ALIBI_METHODS", "to_alibi", "to_alibi_json"]


def plain(value: Any) -> Any:
    """``value`` as JSON-ready Python: tensors and arrays as nested lists, numpy scalars as numbers."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


#: the keys of Alibi 0.9.6's ``meta["params"]`` per method (``alibi.api.defaults`` and the explainers'
#: constructors); ours fill them where torchexplain has the setting, None where it has no equivalent
_ALIBI_PARAMS = {
    "AnchorTabular": (
        "seed", "disc_perc", "threshold", "delta", "tau", "batch_size", "coverage_samples",
        "beam_size", "stop_on_first", "max_anchor_size", "min_samples_start", "n_covered_ex",
        "binary_cache_size", "cache_margin", "verbose", "verbose_every", "kwargs",
    ),
    "AnchorText": ("seed", "sample_proba", "top_n", "temperature", "use_proba"),
    "KernelShap": (
        "link", "group_names", "grouped", "groups", "weights", "summarise_background",
        "summarise_result", "transpose", "kwargs",
    ),
    "TreeShap": (
        "model_output", "summarise_background", "summarise_result", "approximate",
        "interactions", "explain_loss", "algorithm", "kwargs",
    ),
}  # fmt: skip


def _meta(
    explanation: Explanation,
    name: str,
    kind: str,
    explanations: list[str],
    params: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    ours = dict(explanation.meta.get("params") or {}) if params is None else dict(params)
    alibi = {
        key: ours.pop(key, {} if key == "kwargs" else None) for key in _ALIBI_PARAMS.get(name, ())
    }
    meta = {"name": name, "type": [kind], "explanations": explanations}
    meta.update(extra)
    # Alibi's keys first, then torchexplain's other settings
    meta["params"] = plain({**alibi, **ours})
    meta["version"] = __version__
    return meta


def _rows(explanation: Explanation, field: str = "target") -> int:
    return int(explanation.data[field].shape[0])


def _anchor_tabular(explanation: Explanation, inputs: Any) -> list[dict[str, Any]]:
    data = explanation.data
    instances = None if inputs is None else plain(torch.as_tensor(inputs))
    params = dict(explanation.meta.get("params") or {})
    if "disc_perc" in explanation.meta:
        params["disc_perc"] = explanation.meta["disc_perc"]
    answers = []
    for i in range(_rows(explanation)):
        precision, coverage = float(data["precision"][i]), float(data["coverage"][i])
        names = list(data["anchor"][i])
        raw = _anchor_raw(data, i, data["feature"][i], data["n_samples"][i], instances, names)
        meta = _meta(explanation, "AnchorTabular", "blackbox", ["local"], params=params)
        answers.append(
            {
                "meta": meta,
                "data": {
                    "anchor": list(data["anchor"][i]),
                    "precision": precision,
                    "coverage": coverage,
                    "raw": raw,
                },
            }
        )
    return answers


def _anchor_raw(
    data: dict[str, Any],
    i: int,
    feature: Any,
    samples: Any,
    instances: list | None,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Alibi's ``raw`` of row ``i``'s anchor (the per-partial-anchor lists hold the final anchor's value)."""
    precision, coverage = float(data["precision"][i]), float(data["coverage"][i])
    examples = {
        "covered_true": plain(data["covered_true"][i]),
        "covered_false": plain(data["covered_false"][i]),
        "uncovered_true": [],
        "uncovered_false": [],
    }
    return {
        "feature": plain(feature),
        "mean": [precision],
        "precision": [precision],
        "coverage": [coverage],
        "examples": [examples],
        "all_precision": 0,
        "num_preds": None if samples is None else int(samples),
        "success": bool(data["success"][i]),
        **({} if names is None else {"names": names}),  # tabular and text, as in Alibi
        "prediction": [int(data["target"][i])],
        "instance": None if instances is None else instances[i],
        "instances": None if instances is None else [instances[i]],
    }


def _anchor_text(explanation: Explanation, inputs: Any) -> list[dict[str, Any]]:
    data = explanation.data
    texts = None if inputs is None else ([inputs] if isinstance(inputs, str) else list(inputs))
    answers = []
    for i in range(_rows(explanation)):
        raw = _anchor_raw(data, i, data["feature"][i], data["n_samples"][i], texts)
        raw["names"] = list(data["anchor"][i])
        raw["positions"] = list(data["positions"][i])
        answers.append(
            {
                "meta": _meta(explanation, "AnchorText", "blackbox", ["local"]),
                "data": {
                    "anchor": list(data["anchor"][i]),
                    "precision": float(data["precision"][i]),
                    "coverage": float(data["coverage"][i]),
                    "raw": raw,
                },
            }
        )
    return answers


def _anchor_image(explanation: Explanation, inputs: Any) -> list[dict[str, Any]]:
    data = explanation.data
    images = None if inputs is None else torch.as_tensor(inputs)
    answers = []
    for i in range(_rows(explanation)):
        segments = data["segments"][i]
        precision, coverage = float(data["precision"][i]), float(data["coverage"][i])
        # Alibi's "anchor" is the image with every segment outside the anchor set to 0
        anchor_image = None
        if images is not None:
            mask = data["mask"][i].to(images.device).bool()
            if mask.dim() < images[i].dim():  # (H, W) mask over (C, H, W) or (H, W, C) images
                channel_first = images[i].shape[-2:] == mask.shape
                mask = mask.unsqueeze(0) if channel_first else mask.unsqueeze(-1)
            anchor_image = plain(images[i] * mask)
        samples = data.get("n_images_evaluated")
        instances = None if images is None else plain(images)
        raw = _anchor_raw(
            data, i, data["anchor"][i], None if samples is None else samples[i], instances
        )
        answers.append(
            {
                "meta": _meta(explanation, "AnchorImage", "blackbox", ["local"]),
                "data": {
                    "anchor": anchor_image,
                    "segments": plain(segments),
                    "precision": precision,
                    "coverage": coverage,
                    "raw": raw,
                },
            }
        )
    return answers


def _ranked(per_output: list[np.ndarray], names: list[str]) -> dict[str, Any]:
    """Alibi's ``raw["importances"]``: per output, mean |SHAP value| over the instances, ranked; and
    ``aggregated``, the same of the SHAP values summed over the outputs."""

    def rank(values: np.ndarray) -> dict[str, Any]:
        effect = np.abs(values).mean(0)
        order = np.argsort(-effect, kind="stable")
        return {"ranked_effect": effect[order].tolist(), "names": [names[j] for j in order]}

    ranked = {str(k): rank(values) for k, values in enumerate(per_output)}
    ranked["aggregated"] = rank(np.sum(per_output, axis=0))
    return ranked


def _shap(explanation: Explanation, inputs: Any, name: str, kind: str) -> list[dict[str, Any]]:
    data = explanation.data
    values = data["shap_values"]
    values = (
        values.detach().cpu().double().numpy()
        if isinstance(values, torch.Tensor)
        else np.asarray(values, np.float64)
    )
    if values.ndim == 2:  # (N, M): one output
        values = values[:, None]
    n, outputs = values.shape[0], values.shape[1]
    per_output = [values[:, k].reshape(n, -1) for k in range(outputs)]
    names = explanation.meta.get("feature_names") or data.get("feature_names")
    names = list(names) if names else [f"feature_{j}" for j in range(per_output[0].shape[1])]
    raw_prediction = plain(data["predictions"]) if "predictions" in data else None
    prediction = None
    if "predictions" in data:
        predicted = torch.as_tensor(data["predictions"])
        prediction = (
            plain(predicted.argmax(-1))
            if predicted.dim() == 2 and predicted.shape[1] > 1
            else plain(predicted)
        )
    raw: dict[str, Any] = {
        "raw_prediction": raw_prediction,
        "prediction": prediction,
        "instances": None if inputs is None else plain(torch.as_tensor(inputs)),
        "importances": _ranked(per_output, names),
    }
    expected = plain(data["expected_value"])
    expected = expected if isinstance(expected, list) else [expected]
    data_out: dict[str, Any] = {
        "shap_values": [v.tolist() for v in per_output],
        "expected_value": expected,
        "categorical_names": {},
        "feature_names": names,
        "raw": raw,
    }
    if name == "TreeShap":
        data_out["shap_interaction_values"] = []
        raw["loss"] = None
        raw["labels"] = None
    task = "classification" if outputs > 1 else "regression"
    meta = _meta(explanation, name, kind, ["local", "global"], task=task)
    return [{"meta": meta, "data": data_out}]


def _integrated_gradients(explanation: Explanation, inputs: Any) -> list[dict[str, Any]]:
    data = explanation.data
    attributions = data["attributions"]
    attributions = list(attributions) if isinstance(attributions, (list, tuple)) else [attributions]
    x = None if inputs is None else torch.as_tensor(inputs)
    baselines = data.get("baselines")
    if baselines is None and x is not None:
        baselines = [torch.zeros_like(x)]
    return [
        {
            "meta": _meta(explanation, "IntegratedGradients", "whitebox", ["local"]),
            "data": {
                "attributions": plain(attributions),
                "X": None if x is None else plain(x),
                "forward_kwargs": {},
                "baselines": plain(baselines),
                "predictions": plain(data.get("predictions")),
                "deltas": plain(data.get("convergence_delta")),
                "target": plain(data.get("target")),
            },
        }
    ]


def _counterfactual(explanation: Explanation, inputs: Any, name: str) -> list[dict[str, Any]]:
    data = explanation.data
    answers = []
    for i in range(_rows(explanation)):
        predictions = data["predictions"][i]
        orig_class = int(predictions.argmax())
        found = bool(data["success"][i])
        cf = None
        if found:
            cf = {
                "X": plain(data["counterfactual"][i : i + 1]),
                "class": int(data["cf_class"][i]),
                "proba": plain(data["cf_proba"][i : i + 1])
                if data["cf_proba"].dim() > 1
                else [[float(data["cf_proba"][i])]],
            }
            if name == "Counterfactual":
                cf.update(
                    distance=float(data["distance"][i]),
                    **{"lambda": float(data["lam"][i])},
                    index=int(data["n_iter"][i]),
                    loss=None,
                )
            else:
                cf.update(grads_graph=None, grads_num=None)
        out = {"cf": cf, "all": {}, "orig_class": orig_class}
        if name == "Counterfactual":
            out["orig_proba"] = float(predictions.max())
            out["success"] = found
        else:
            out["orig_proba"] = plain(predictions[None])
            out["id_proto"] = int(data["proto_class"][i]) if "proto_class" in data else None
        kind = "blackbox"  # Alibi's meta says ["blackbox", "tensorflow", "keras"]
        meta = _meta(explanation, name, kind, ["local"])
        meta["type"] = ["blackbox", "tensorflow", "keras"]
        answers.append({"meta": meta, "data": out})
    return answers


#: torchexplain's explainers that Alibi has, and how each is laid out as Alibi's
ALIBI_METHODS: dict[str, Callable[[Explanation, Any], list[dict[str, Any]]]] = {
    "AnchorTabular": _anchor_tabular,
    "AnchorImage": _anchor_image,
    "AnchorText": _anchor_text,
    "KernelShap": lambda e, x: _shap(e, x, "KernelShap", "blackbox"),
    "TreeShap": lambda e, x: _shap(e, x, "TreeShap", "whitebox"),
    "IntegratedGradients": _integrated_gradients,
    "Counterfactual": lambda e, x: _counterfactual(e, x, "Counterfactual"),
    "CounterfactualProto": lambda e, x: _counterfactual(e, x, "CounterfactualProto"),
}


def to_alibi(explanation: Explanation, inputs: Any = None) -> list[dict[str, Any]]:
    """``explanation`` as Alibi's ``{"meta", "data"}`` dicts of plain lists and numbers: one per
    row for anchors and counterfactuals (Alibi explains one instance a call), one for the batch
    for SHAP and Integrated Gradients.

    Args:
        explanation: what one of :data:`ALIBI_METHODS` returned.
        inputs: the rows explained ``(N, ...)``: Alibi's answers carry them (``raw["instances"]``,
            IG's ``X``, the anchor image); None leaves those fields None.

    Raises:
        ValueError: the explanation is of a method Alibi does not have.
    """
    name = explanation.meta.get("name")
    layout = ALIBI_METHODS.get(name)
    if layout is None:
        raise ValueError(
            f"{name!r} has no Alibi layout; Alibi's explainers here are {sorted(ALIBI_METHODS)}"
        )
    return layout(explanation, inputs)


def to_alibi_json(explanation: Explanation, inputs: Any = None) -> list[str]:
    """:func:`to_alibi` as JSON texts, each one what ``alibi.api.interfaces.Explanation.from_json`` parses."""
    return [json.dumps(answer) for answer in to_alibi(explanation, inputs)]
