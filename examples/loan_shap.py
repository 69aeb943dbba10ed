"""SHAP values for loan decisions: KernelShap on the census MLP and TreeShap on a random forest, 1,000 rows.

Loads (or trains and caches) the small loan classifier (``torchexplain.zoo.CensusMLP``),
explains the probability of each class for 1,000 test rows of the bundled census
table in one KernelShap call (100 training rows as background, ``nsamples="auto"``),
then does the same for a scikit-learn random forest with TreeShap (path-dependent).
Writes into the output folder:

- ``loan_shap_importance.png``: mean |SHAP value| per feature for "> 50K" (the global
  ranking), both models;
- ``loan_shap_instances.png``: three applicants' values per feature, both models, with
  the base value and the prediction they add up to;
- ``loan_kernel_shap.json`` and ``loan_tree_shap.json``: every explanation.

Run: ``python examples/loan_shap.py [out_dir] [--rows N]`` (offline; CPU unless CUDA;
needs scikit-learn and shap for the forest: ``pip install -e ".[shap]"``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import torchexplain
from torchexplain.datasets import load_census
from torchexplain.visualize import save_signed_bars
from torchexplain.zoo import Probabilities, pretrained_census_mlp

N_BACKGROUND = 100
SHOWN = 3


def _value_names(data, row: np.ndarray) -> list[str]:
    names = []
    for column, name in enumerate(data.feature_names):
        categories = data.categorical_names.get(column)
        value = categories[int(row[column])] if categories else f"{row[column]:g}"
        names.append(f"{name} = {value}")
    return names


def _instance_rows(
    data, explanation, row: np.ndarray, i: int, top: int = 6
) -> list[tuple[str, float]]:
    values = explanation.shap_values[i, -1].cpu().numpy()  # the "> 50K" output
    order = np.argsort(-np.abs(values))[:top]
    labels = _value_names(data, row)
    return [(labels[c], float(values[c])) for c in order]


def run(
    out_dir: str | Path = "demo_out", n_rows: int = 1000, device: str | None = None, seed: int = 0
) -> dict:
    """Explain ``n_rows`` test rows with both explainers; write the pictures and JSON; return a summary."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_census()
    model, cached = pretrained_census_mlp()
    probabilities = Probabilities(model).to(device).eval()
    rows = data.X_test[:n_rows]
    explainer = torchexplain.KernelShap(
        probabilities,
        feature_names=data.feature_names,
        categorical_names=data.categorical_names,
        seed=seed,
    )
    explainer.fit(torch.from_numpy(data.X_train[:N_BACKGROUND]).to(device))
    start = time.perf_counter()
    kernel = explainer.explain(torch.from_numpy(rows).to(device))
    kernel_seconds = time.perf_counter() - start
    (out / "loan_kernel_shap.json").write_text(kernel.to_json())

    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(50, max_depth=8, random_state=seed, n_jobs=1).fit(
        data.X_train, data.y_train
    )
    trees = torchexplain.TreeShap(forest, feature_names=data.feature_names).fit()
    start = time.perf_counter()
    tree = trees.explain(rows)
    tree_seconds = time.perf_counter() - start
    (out / "loan_tree_shap.json").write_text(tree.to_json())

    names = data.feature_names
    importance_sections = []
    for title, exp in (("census MLP, KernelShap", kernel), ("random forest, TreeShap", tree)):
        ranking = exp.importances[-1].cpu().numpy()
        order = np.argsort(-ranking)
        importance_sections.append(
            (
                f"{title}: mean |SHAP| of P(> 50K) over {n_rows} applicants",
                [(names[c], float(ranking[c])) for c in order],
            )
        )
    save_signed_bars(importance_sections, out / "loan_shap_importance.png")

    instance_sections = []
    for i in range(SHOWN):
        for title, exp in (("MLP", kernel), ("forest", tree)):
            base = float(exp.expected_value[-1])
            prediction = float(exp.predictions[i, -1])
            instance_sections.append(
                (
                    f"applicant {i}, {title}: P(> 50K) = {prediction:.3f} = base {base:.3f} + all values (largest 6 shown)",
                    _instance_rows(data, exp, rows[i], i),
                )
            )
    save_signed_bars(instance_sections, out / "loan_shap_instances.png")

    additivity = float(
        (kernel.shap_values.sum(-1) + kernel.expected_value - kernel.predictions.double())
        .abs()
        .max()
    )
    return {
        "device": device,
        "model_from_cache": cached,
        "rows_explained": n_rows,
        "kernel_shap_seconds": round(kernel_seconds, 3),
        "kernel_shap_ms_per_row": round(1000 * kernel_seconds / n_rows, 3),
        "kernel_shap_model_rows_per_row": round(kernel.meta["total_rows_evaluated"] / n_rows, 1),
        "kernel_shap_perturbed_rows_per_row": round(
            kernel.meta["total_rows_perturbed"] / n_rows, 1
        ),
        "kernel_shap_additivity_error": additivity,
        "tree_shap_seconds": round(tree_seconds, 3),
        "top_features_mlp": [
            names[c] for c in np.argsort(-kernel.importances[-1].cpu().numpy())[:5]
        ],
        "top_features_forest": [names[c] for c in np.argsort(-tree.importances[-1].numpy())[:5]],
        "files": [
            str(out / name)
            for name in (
                "loan_shap_importance.png",
                "loan_shap_instances.png",
                "loan_kernel_shap.json",
                "loan_tree_shap.json",
            )
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="demo_out")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    print(json.dumps(run(args.out_dir, args.rows, args.device), indent=2))


if __name__ == "__main__":
    main()
