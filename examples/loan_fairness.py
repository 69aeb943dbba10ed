"""Bias evaluation of the loan model by Sex and Race: the data, the model per group, and which
features carry the gap, in one report.

Loads (or trains and caches) the small loan classifier (``torchexplain.zoo.CensusMLP``) and runs
``torchexplain.fairness.fairness_report`` on the 2,561 held-out rows of the bundled census table:

1. the data: rows per group and label (small groups flagged), associations between all columns
   (the proxies of Sex: Relationship, Marital Status, Occupation);
2. the model per group and per intersection: selection rate, accuracy, precision, recall, FPR,
   specificity, F1 and AUC with 95% bootstrap intervals (1,000 resamples), the demographic
   parity / equalized odds / equal opportunity disparities, ROC curves, permutation importance;
3. explanations per group: the gap in P(>50K) between women and men split by feature with
   KernelShap on one shared background, anchors by group, recourse (counterfactuals that may
   change only education years, capital gain/loss and hours) and the attribute-flip probe.

Writes ``fairness.json`` and ``fairness.html`` (pictures inside) to the output folder and
prints the headline numbers.

Run: ``python examples/loan_fairness.py [out_dir] [--n-boot 1000]`` (offline; CPU unless CUDA;
the pictures need matplotlib: ``pip install -e ".[fairness]"``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from torchexplain.datasets import load_census
from torchexplain.fairness import fairness_report
from torchexplain.zoo import pretrained_census_mlp

#: the columns a person could change for recourse (education years, capital gain/loss, hours)
MUTABLE = ["Education-Num", "Capital Gain", "Capital Loss", "Hours per week"]


def run(
    out_dir: str | Path = "demo_out",
    n_boot: int = 1000,
    device: str | None = None,
    seed: int = 0,
    **options,
) -> dict:
    """Write the report for the census MLP by Sex and Race; return its headline numbers."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    data = load_census()
    model, _ = pretrained_census_mlp()
    start = time.perf_counter()
    result = fairness_report(
        model.to(device).eval(),
        data.X_test,
        data.y_test,
        out_dir,
        train_data=data.X_train,
        sensitive=["Sex", "Race"],
        feature_names=data.feature_names,
        categorical_names=data.categorical_names,
        mutable_features=[data.feature_names.index(name) for name in MUTABLE],
        n_boot=n_boot,
        seed=seed,
        device=device,
        title="Loan model (census MLP): bias evaluation by Sex and Race",
        **options,
    )
    seconds = time.perf_counter() - start
    sex = result["model"]["Sex"]
    split = result["gap"]["by"]["Sex"] if "gap" in result else None
    top = []
    if split is not None:
        female = split["groups"].index("Female")
        parts = sorted(
            zip(split["feature_names"], split["contributions"][female]), key=lambda p: p[1]
        )
        top = [(name, round(value, 4)) for name, value in parts[:3]]
    return {
        "seconds": round(seconds, 1),
        "device": device,
        "selection_rate_by_sex": dict(
            zip(
                sex["groups"],
                [row[sex["metrics"].index("selection_rate")] for row in sex["by_group"]],
            )
        ),
        "disparities_by_sex": sex["disparities"],
        "gap_female_minus_male": None if split is None else split["gap"][female],
        "largest_parts_of_the_gap": top,
        "files": [result["paths"]["html"], result["paths"]["json"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="demo_out")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    print(json.dumps(run(args.out_dir, args.n_boot, args.device), indent=2))


if __name__ == "__main__":
    main()
