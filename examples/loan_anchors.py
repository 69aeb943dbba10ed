"""Anchors for loan decisions: AnchorTabular on the census income table, 1,000 rows in one call.

Trains the small loan classifier (``torchexplain.zoo.CensusMLP``: 12 coded columns,
one-hot inside, 64-64 hidden) on the bundled census table, or loads it from the cache,
explains 1,000 test rows at once, prints a few anchors with their precision and
coverage and the time per row, and writes ``loan_anchors.json`` (every explanation)
and ``loan_anchors.png`` (the printed anchors as precision/coverage bars, and how
often each predicate appears across all anchors) into the output folder.

Run: ``python examples/loan_anchors.py [out_dir] [--rows N]`` (offline; CPU unless CUDA).
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import torch

import torchexplain
from torchexplain.datasets import load_census
from torchexplain.visualize import save_bar_chart
from torchexplain.zoo import pretrained_census_mlp


def run(
    out_dir: str | Path = "demo_out", n_rows: int = 1000, device: str | None = None, seed: int = 0
) -> dict:
    """Explain ``n_rows`` test rows; write the JSON and the picture; return a summary."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out_dir)
    data = load_census()
    model, cached = pretrained_census_mlp()
    model = model.to(device)
    rows = torch.from_numpy(data.X_test[:n_rows]).to(device)
    with torch.no_grad():
        accuracy = (
            model(torch.from_numpy(data.X_test).to(device)).argmax(1).cpu().numpy() == data.y_test
        ).mean()
    explainer = torchexplain.AnchorTabular(
        model, data.feature_names, data.categorical_names, seed=seed
    )
    explainer.fit(data.X_train)
    start = time.perf_counter()
    explanation = explainer.explain(rows)
    seconds = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    (out / "loan_anchors.json").write_text(explanation.to_json())
    classes = data.class_names
    # a few of each decision: the first three rows predicted each way
    targets = explanation.target.tolist()
    shown = sorted(
        [i for i, t in enumerate(targets) if t == 1][:3]
        + [i for i, t in enumerate(targets) if t == 0][:3]
    )
    anchors = [
        (
            f"{classes[int(explanation.target[i])]:>5} IF {' AND '.join(explanation.anchor[i]) or '(anything)'}",
            (float(explanation.precision[i]), float(explanation.coverage[i])),
        )
        for i in shown
    ]
    counts = collections.Counter(name for anchor in explanation.anchor for name in set(anchor))
    frequent = [(name, (count / n_rows,)) for name, count in counts.most_common(12)]
    save_bar_chart(
        [(f"Anchors of {len(shown)} loan decisions (prediction IF rule)", anchors)],
        out / "loan_anchors.png",
        bar_labels=("precision", "coverage"),
    )
    save_bar_chart(
        [(f"Predicates in the anchors of {n_rows} rows: share of anchors using each", frequent)],
        out / "loan_predicates.png",
        bar_labels=("share of anchors",),
    )
    success = explanation.success.float()
    return {
        "device": device,
        "model_from_cache": cached,
        "test_accuracy": round(float(accuracy), 4),
        "rows_explained": n_rows,
        "seconds": round(seconds, 3),
        "ms_per_row": round(1000 * seconds / n_rows, 3),
        "success_rate": round(float(success.mean()), 4),
        "mean_precision": round(float(explanation.precision.mean()), 4),
        "mean_coverage": round(float(explanation.coverage.mean()), 4),
        "mean_anchor_length": round(sum(map(len, explanation.anchor)) / n_rows, 3),
        "rows_asked_per_explained_row": round(explanation.meta["total_rows_evaluated"] / n_rows, 1),
        "examples": [
            {
                "prediction": label.split(" IF ")[0].strip(),
                "anchor": explanation.anchor[i],
                "precision": round(p, 3),
                "coverage": round(c, 3),
            }
            for i, (label, (p, c)) in zip(shown, anchors)
        ],
        "files": [
            str(out / name)
            for name in ("loan_anchors.json", "loan_anchors.png", "loan_predicates.png")
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="demo_out")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    summary = run(args.out_dir, args.rows, args.device)
    for example in summary["examples"]:
        print(
            f"{example['prediction']:>5} IF {' AND '.join(example['anchor']) or '(anything)'}"
            f"  (precision {example['precision']:.2f}, coverage {example['coverage']:.2f})"
        )
    print(json.dumps({k: v for k, v in summary.items() if k != "examples"}, indent=2))


if __name__ == "__main__":
    main()
