"""Group metrics with bootstrap intervals and permutation importance on the census test set:
torchexplain.fairness against fairlearn and scikit-learn, and the model floor, in one run.

Same model (``torchexplain.zoo.CensusMLP``, logits; predictions = argmax), same 2,561 test rows:

- ``metrics``: 8 label metrics (count, selection rate, accuracy, precision, recall, FPR,
  specificity, F1) by Sex x Race (10 groups) with ``n_boot`` bootstrap resamples and the
  2.5/97.5 % intervals: ``torchexplain.fairness.MetricFrame`` against ``fairlearn.metrics.
  MetricFrame`` (same ``random_state``: the very same resamples, so the intervals are checked
  equal). fairlearn takes minutes at 1,000 resamples, so it is timed once, after a warm-up with
  10 resamples (its cost is linear in the resamples); torchexplain is timed as a median. The
  floor is the model on the rows (the predictions the metrics need).
- ``permutation importance``: all 12 columns x ``n_repeats`` shuffles, accuracy:
  ``torchexplain.fairness.permutation_importance`` (with Sex groups) against
  ``sklearn.inspection.permutation_importance`` (a wrapped estimator, ``n_jobs=1``; the same
  permutations, so the numbers are checked equal), and the floor: the model alone on the
  same 12 x R x N shuffled rows, in one call and in chunks of 65,536 (the best counts).

Usage: ``python benchmarks/bench_fairness.py --device cpu|cuda [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import metadata, print_table, sync, time_providers, write_results  # noqa: E402

from torchexplain.datasets import load_census  # noqa: E402
from torchexplain.fairness import MetricFrame, permutation_importance, sklearn_permutations  # noqa: E402
from torchexplain.fairness.report import REPORT_METRICS  # noqa: E402
from torchexplain.zoo import pretrained_census_mlp  # noqa: E402

#: the report's metrics that are computed from labels (fairlearn takes AUC in a frame of its own)
LABEL_METRICS = tuple(m for m in REPORT_METRICS if m != "roc_auc")


def _fairlearn_metrics() -> dict:
    import fairlearn.metrics as fm
    from sklearn import metrics as skm

    return {
        "count": fm.count,
        "selection_rate": fm.selection_rate,
        "accuracy": skm.accuracy_score,
        "precision": skm.precision_score,
        "recall": skm.recall_score,
        "false_positive_rate": fm.false_positive_rate,
        "specificity": fm.true_negative_rate,
        "f1": skm.f1_score,
    }


def bench_metrics(model, X, y, sensitive, n_boot, repeats, device) -> dict:
    rows = torch.as_tensor(X, device=device)

    def predictions() -> np.ndarray:
        with torch.no_grad():
            return model(rows).argmax(1).cpu().numpy()

    pred = predictions()
    kwargs = dict(y_true=y, y_pred=pred, sensitive_features=sensitive, random_state=0)
    quantiles = [0.025, 0.975]

    def ours() -> MetricFrame:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return MetricFrame(
                metrics=list(LABEL_METRICS),
                n_boot=n_boot,
                ci_quantiles=quantiles,
                device=device,
                **kwargs,
            )

    timings = time_providers(
        {"torchexplain": ours, "floor": predictions}, device, repeats=repeats, warmup=1
    )
    entry = {
        "config": f"8 metrics by Sex x Race, n_boot={n_boot}, N={len(y)}",
        "providers": timings,
    }
    try:
        import fairlearn
        import fairlearn.metrics as fm
    except ImportError:
        entry["fairlearn"] = "not installed"
        return entry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm.MetricFrame(metrics=_fairlearn_metrics(), n_boot=10, ci_quantiles=quantiles, **kwargs)
        start = time.perf_counter()
        theirs = fm.MetricFrame(
            metrics=_fairlearn_metrics(), n_boot=n_boot, ci_quantiles=quantiles, **kwargs
        )
        seconds = time.perf_counter() - start
    timings["fairlearn"] = {"median_s": seconds, "min_s": seconds, "max_s": seconds, "repeats": 1}
    mine = ours()
    # where a resample leaves a group without positives (or predicted positives) scikit-learn's
    # precision/recall/F1 are 0.0 and ours NaN: compare the metrics defined in every resample
    always = [LABEL_METRICS.index(m) for m in ("count", "selection_rate", "accuracy")]
    difference = max(
        float(
            np.nanmax(
                np.abs(
                    mine.by_group_ci[q].cpu().numpy()[:, always]
                    - theirs.by_group_ci[q].to_numpy(float)[:, always]
                )
            )
        )
        for q in range(2)
    )
    entry["max_abs_difference_of_intervals"] = difference
    entry["by_group_max_abs_difference"] = float(
        np.nanmax(np.abs(mine.by_group.cpu().numpy() - theirs.by_group.to_numpy(float)))
    )
    entry["fairlearn_version"] = fairlearn.__version__
    entry["speedup_vs_fairlearn"] = seconds / timings["torchexplain"]["median_s"]
    return entry


def bench_importance(model, X, y, sex, n_repeats, repeats, device) -> dict:
    n, d = X.shape
    permutations = sklearn_permutations(n, n_repeats, 0)
    rows = torch.as_tensor(X, device=device)

    def ours():
        return permutation_importance(
            model, X, y, permutations=permutations, sensitive_features=sex, device=device
        )

    orders = permutations.to(device)
    shuffled = rows.repeat(d * n_repeats, 1)
    for f in range(d):
        for r in range(n_repeats):
            block = shuffled[(f * n_repeats + r) * n : (f * n_repeats + r + 1) * n]
            block[:, f] = rows[orders[r], f]

    def floor_once():
        with torch.no_grad():
            return model(shuffled)

    def floor_chunks():
        with torch.no_grad():
            return [model(chunk) for chunk in shuffled.split(65536)]

    providers = {
        "torchexplain": ours,
        "floor (one call)": floor_once,
        "floor (65,536-row calls)": floor_chunks,
    }
    timings = time_providers(providers, device, repeats=repeats, warmup=1)
    best = min(
        ("floor (one call)", "floor (65,536-row calls)"), key=lambda k: timings[k]["median_s"]
    )
    timings["floor"] = dict(timings[best], source=best)
    entry = {
        "config": f"12 features x {n_repeats} repeats, N={n}, Sex groups",
        "model_rows": int(shuffled.shape[0] + n),
        "providers": timings,
    }
    try:
        from sklearn.base import BaseEstimator, ClassifierMixin
        from sklearn.inspection import permutation_importance as sklearn_importance
    except ImportError:
        entry["sklearn"] = "not installed"
        return entry

    class Wrapped(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            return self

        def predict(self, X):
            with torch.no_grad():
                inputs = torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)
                return model(inputs).argmax(1).cpu().numpy()

    estimator = Wrapped()
    estimator.classes_ = np.array([0, 1])

    def theirs():
        return sklearn_importance(
            estimator, X, y, scoring="accuracy", n_repeats=n_repeats, random_state=0
        )

    timings.update(time_providers({"sklearn": theirs}, device, repeats=repeats, warmup=1))
    entry["max_abs_difference"] = float(
        np.abs(ours().importances.numpy() - theirs().importances).max()
    )
    entry["ratio_vs_floor"] = timings["torchexplain"]["median_s"] / timings["floor"]["median_s"]
    entry["speedup_vs_sklearn"] = (
        timings["sklearn"]["median_s"] / timings["torchexplain"]["median_s"]
    )
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--n-repeats", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true", help="100 resamples, 3 shuffles, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.n_boot, args.n_repeats, args.repeats = 100, 3, 2
    device = torch.device(args.device)
    data = load_census()
    model, _ = pretrained_census_mlp()
    model = model.to(device).eval()
    X, y = data.X_test, data.y_test
    sex = np.array(data.categorical_names[8])[X[:, 8].astype(int)]
    race = np.array(data.categorical_names[7])[X[:, 7].astype(int)]
    results = [
        bench_metrics(model, X, y, {"Sex": sex, "Race": race}, args.n_boot, args.repeats, device),
        bench_importance(model, X, y, sex, args.n_repeats, args.repeats, device),
    ]
    sync(device)
    payload = {
        "meta": metadata(device, rows=len(y), n_boot=args.n_boot, n_repeats=args.n_repeats),
        "results": results,
    }
    path = write_results("bench_fairness", payload, args.out)
    table = []
    for entry in results:
        for name, timing in entry["providers"].items():
            table.append(
                {"config": entry["config"], "provider": name, "median_s": timing["median_s"]}
            )
    print_table(table, ["config", "provider", "median_s"])
    print(path)


if __name__ == "__main__":
    main()
