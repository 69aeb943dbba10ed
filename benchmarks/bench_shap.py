"""KernelShap and TreeShap on the census (loan) table: time per instance, rows per instance, additivity and
agreement with shap, against shap, Captum and the model floor.

Same model (``torchexplain.zoo.CensusMLP``: 12 coded columns, one-hot inside to 65
inputs, hidden 64-64, softmax probabilities explained), same 100 background rows
(the first training rows), same test rows, ``nsamples="auto"`` (2M + 2048 = 2072
coalitions for 12 features), in one run:

- ``torchexplain (batch N)``: N test rows in one ``explain`` call (N = 16, 128, 1024).
- ``shap <version>``: ``shap.KernelExplainer`` on the first rows, one call per row,
  ``l1_reg="auto"`` and ``np.random.seed(seed)`` before each row, so it evaluates the
  same coalitions as torchexplain and the values must agree. With ``--other-shap
  PYTHON``, the same measurement also runs in that interpreter (an environment with
  shap 0.43, the version Alibi pins) on the same rows, and is reported beside.
- ``captum``: ``captum.attr.KernelShap`` (a different estimator: one baseline, here the
  background mean, and one output per call) with the same budget, for its time.
- ``model only (floor)``: the model alone on one instance's perturbed rows (what shap
  scores: coalitions x background rows), in the best of several chunk sizes.
  torchexplain scores each distinct perturbed row once, so it can go below this floor;
  the model on torchexplain's own distinct rows is reported as well.
- TreeShap: a scikit-learn random forest on the same table, torchexplain's TreeShap
  against ``shap.TreeExplainer`` on 1,000 test rows, path-dependent and interventional.

Peak memory (CPU: resident high-water mark) of torchexplain at N=128 and N=1024 with
the same rows per predictor call shows that it is bounded by the call, not by N.

Usage: ``python benchmarks/bench_shap.py --device cpu|cuda [--quick] [--other-shap PYTHON] [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    metadata,
    peak_memory,
    print_table,
    steady_host_allocator,
    sync,
    time_providers,
    write_results,
)  # noqa: E402,I001

from torchexplain import KernelShap, TreeShap  # noqa: E402
from torchexplain.datasets import load_census  # noqa: E402
from torchexplain.zoo import Probabilities, pretrained_census_mlp  # noqa: E402

N_BACKGROUND = 100
SEED = 0
FLOOR_CHUNKS = (4096, 8192, 16384, 32768, 65536)


def numpy_predictor(model: torch.nn.Module):
    def predict(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.as_tensor(np.asarray(rows), dtype=torch.float32)).double().numpy()

    return predict


def shap_kernel(model, background: np.ndarray, rows: np.ndarray) -> dict:
    """shap's KernelExplainer, one row at a time, seeded like torchexplain: seconds per row and values."""
    import shap

    explainer = shap.KernelExplainer(numpy_predictor(model), background)
    values, times = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # l1_reg="auto" is deprecated in shap >= 0.47
        np.random.seed(SEED)  # noqa: NPY002 - shap draws from the global stream
        explainer.shap_values(rows[:1], silent=True, l1_reg="auto")  # warm-up
        for i in range(rows.shape[0]):
            np.random.seed(SEED)  # noqa: NPY002
            start = time.perf_counter()
            out = explainer.shap_values(rows[i : i + 1], silent=True, l1_reg="auto")
            times.append(time.perf_counter() - start)
            out = np.asarray(out)
            # shap 0.43: a list per class of (1, M); shap >= 0.45: (1, M, K)
            values.append(out[:, 0, :] if out.ndim == 3 and out.shape[0] != 1 else out[0].T)
    return {
        "version": shap.__version__,
        "s_per_instance": statistics.median(times),
        "mean_s_per_instance": float(np.mean(times)),
        "rows_per_instance": int(explainer.nsamples * background.shape[0]),
        "values": np.stack(values).tolist(),
        "expected_value": np.atleast_1d(explainer.expected_value).tolist(),
    }


def floor(model, rows_per_instance: torch.Tensor) -> dict:
    """The model alone on one instance's perturbed rows, best chunk size (median of 3 each)."""
    results = {}
    with torch.no_grad():
        for chunk in FLOOR_CHUNKS:
            times = []
            for _ in range(3):
                start = time.perf_counter()
                for s in range(0, rows_per_instance.shape[0], chunk):
                    model(rows_per_instance[s : s + chunk])
                times.append(time.perf_counter() - start)
            results[chunk] = statistics.median(times)
    best = min(results, key=results.get)
    return {
        "s_per_instance": results[best],
        "best_chunk": best,
        "by_chunk": {str(k): v for k, v in results.items()},
    }


def perturbed_rows(explainer: KernelShap, row: torch.Tensor) -> torch.Tensor:
    """Every (coalition, background row) of one instance, as shap builds them."""
    from torchexplain.kernel_shap import coalition_plan

    background = explainer._fit["background"]
    plan = coalition_plan(row.shape[0], "auto", SEED)
    masks = torch.from_numpy(plan.masks)
    return torch.where(masks[:, None, :], row[None, None], background[None]).reshape(
        -1, row.shape[0]
    )


def bench_trees(data, quick: bool) -> list[dict]:
    import shap
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(
        30 if quick else 100, max_depth=8, random_state=0, n_jobs=1
    ).fit(data.X_train, data.y_train)
    rows = data.X_test[: 50 if quick else 1000]
    background = data.X_train[:N_BACKGROUND]
    out = []
    for mode, bg in (("tree_path_dependent", None), ("interventional", background)):
        ours = TreeShap(forest).fit(bg)
        if bg is None:
            reference = shap.TreeExplainer(forest, feature_perturbation="tree_path_dependent")
        else:
            masker = shap.maskers.Independent(bg, max_samples=bg.shape[0])
            reference = shap.TreeExplainer(forest, masker, feature_perturbation="interventional")
        timed = time_providers(
            {
                "ours": lambda ours=ours: ours.explain(rows),
                "shap": lambda r=reference: r.shap_values(rows),
            },
            torch.device("cpu"),
            repeats=2 if quick else 5,
            warmup=1,
        )
        exp = ours.explain(rows)
        want = np.moveaxis(np.asarray(reference.shap_values(rows)), -1, 1)
        additivity = np.abs(
            exp.shap_values.sum(-1).numpy()
            + exp.expected_value.numpy()
            - forest.predict_proba(rows)
        ).max()
        out.append(
            {
                "mode": mode,
                "rows": rows.shape[0],
                "torchexplain_s": timed["ours"]["median_s"],
                "shap_s": timed["shap"]["median_s"],
                "ratio_to_shap": timed["ours"]["median_s"] / timed["shap"]["median_s"],
                "max_abs_diff": float(np.abs(exp.shap_values.numpy() - want).max()),
                "additivity_error": float(additivity),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--shap-rows", type=int, default=None, help="rows shap explains (default 8, 1 quick)"
    )
    parser.add_argument(
        "--other-shap", default=None, help="python of an environment with another shap (0.43)"
    )
    parser.add_argument("--peer-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    allocator = steady_host_allocator(device)
    data = load_census()
    model = Probabilities(pretrained_census_mlp()[0]).eval()
    background = data.X_train[:N_BACKGROUND]
    n_shap = args.shap_rows or (1 if args.quick else 8)

    if args.peer_only:  # run by --other-shap in the other environment: print shap's numbers as JSON
        print(json.dumps(shap_kernel(model, background, data.X_test[:n_shap])))
        return

    sizes = (
        (16, 32)
        if args.quick
        else ((16, 128, 1024) if device.type == "cpu" else (16, 128, 1024, 4096))
    )
    model = model.to(device)
    explainer = KernelShap(model, feature_names=data.feature_names, seed=SEED).fit(
        torch.from_numpy(background).to(device)
    )
    test = torch.from_numpy(data.X_test[: max(sizes)]).to(device)
    rows, results = [], {}

    # torchexplain, batched
    providers = {
        f"torchexplain (batch {n})": (lambda n=n: explainer.explain(test[:n])) for n in sizes
    }
    timed = time_providers(providers, device, repeats=2 if args.quick else 5, warmup=1)
    for n in sizes:
        exp = explainer.explain(test[:n])
        name = f"torchexplain (batch {n})"
        p = exp.predictions.double()
        additivity = (exp.shap_values.sum(-1) + exp.expected_value - p).abs().max().item()
        per = timed[name]["median_s"] / n
        rows.append(
            {
                "provider": name,
                "n": n,
                "s_per_instance": per,
                "instances_per_s": 1 / per,
                "rows_per_instance": exp.meta["total_rows_perturbed"] / n,
                "model_rows_per_instance": exp.meta["total_rows_evaluated"] / n,
                "additivity_error": additivity,
            }
        )
        results[n] = exp

    # shap, one row at a time, and the other shap in its own environment
    peers = []
    try:
        peers.append(shap_kernel(model.cpu(), background, data.X_test[:n_shap]))
    except ImportError:
        print("shap not importable: skipped", file=sys.stderr)
    model = model.to(device)
    if args.other_shap:
        command = [args.other_shap, __file__, "--peer-only", "--shap-rows", str(n_shap)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        peers.append(json.loads(done.stdout.strip().splitlines()[-1]))
    ours_first = results[sizes[0]].shap_values[:n_shap].cpu().numpy()
    for peer in peers:
        values = np.asarray(peer["values"])
        rows.append(
            {
                "provider": f"shap {peer['version']}",
                "n": n_shap,
                "s_per_instance": peer["s_per_instance"],
                "instances_per_s": 1 / peer["s_per_instance"],
                "rows_per_instance": peer["rows_per_instance"],
                "model_rows_per_instance": peer["rows_per_instance"],
                "max_abs_diff_vs_torchexplain": float(np.abs(values - ours_first).max()),
                "additivity_error": float(
                    np.abs(
                        values.sum(-1)
                        + np.asarray(peer["expected_value"])
                        - results[sizes[0]].predictions[:n_shap].double().cpu().numpy()
                    ).max()
                ),
            }
        )

    # Captum's KernelShap: one baseline (the background mean), the predicted class only
    try:
        from captum.attr import KernelShap as CaptumKernelShap

        captum = CaptumKernelShap(model)
        baseline = torch.from_numpy(background).to(device).mean(0, keepdim=True)
        few = test[:n_shap]
        target = results[sizes[0]].target[:n_shap].to(device)

        def run_captum():
            return torch.cat(
                [
                    captum.attribute(
                        few[i : i + 1],
                        baselines=baseline,
                        target=int(target[i]),
                        n_samples=2072,
                        perturbations_per_eval=2072,
                    )
                    for i in range(n_shap)
                ]
            )

        t = time_providers(
            {"captum": run_captum}, device, repeats=2 if args.quick else 3, warmup=1
        )["captum"]["median_s"]
        with torch.no_grad():
            attributions = run_captum()
            gap = (
                model(few).gather(1, target[:, None])[:, 0]
                - model(baseline).expand(n_shap, -1).gather(1, target[:, None])[:, 0]
            )
        rows.append(
            {
                "provider": "captum KernelShap (one class)",
                "n": n_shap,
                "s_per_instance": t / n_shap,
                "instances_per_s": n_shap / t,
                "rows_per_instance": 2072,
                "model_rows_per_instance": 2072,
                "additivity_error": float((attributions.sum(1) - gap).abs().max()),
                "max_abs_diff_vs_torchexplain": float(
                    (
                        attributions.double().cpu()
                        - torch.from_numpy(ours_first)[torch.arange(n_shap), target.cpu()]
                    )
                    .abs()
                    .max()
                ),
            }
        )
    except ImportError:
        print("captum not importable: skipped", file=sys.stderr)

    # the floor: the model on one instance's perturbed rows, and on our distinct rows
    one = perturbed_rows(explainer, test[0].cpu()).to(device)
    floor_all = floor(model, one)
    distinct = torch.unique(one, dim=0)
    floor_distinct = floor(model, distinct)
    rows.append(
        {
            "provider": "model only (floor: every perturbed row)",
            "n": 1,
            "s_per_instance": floor_all["s_per_instance"],
            "instances_per_s": 1 / floor_all["s_per_instance"],
            "rows_per_instance": one.shape[0],
            "model_rows_per_instance": one.shape[0],
            "best_chunk": floor_all["best_chunk"],
        }
    )
    rows.append(
        {
            "provider": "model only (on the distinct rows)",
            "n": 1,
            "s_per_instance": floor_distinct["s_per_instance"],
            "instances_per_s": 1 / floor_distinct["s_per_instance"],
            "rows_per_instance": distinct.shape[0],
            "model_rows_per_instance": distinct.shape[0],
            "best_chunk": floor_distinct["best_chunk"],
        }
    )

    # peak memory at two batch sizes, same rows per call
    memory = {}
    if device.type == "cpu" or torch.cuda.is_available():
        for n in (sizes[0],) if args.quick else (128, max(sizes)):
            memory[str(n)] = peak_memory(
                lambda n=n: explainer.explain(test[:n], internal_batch_size=8192), device
            )

    trees = bench_trees(data, args.quick)
    sync(device)
    print_table(
        rows,
        [
            "provider",
            "n",
            "s_per_instance",
            "instances_per_s",
            "rows_per_instance",
            "model_rows_per_instance",
            "additivity_error",
            "max_abs_diff_vs_torchexplain",
        ],
    )
    print_table(
        trees,
        [
            "mode",
            "rows",
            "torchexplain_s",
            "shap_s",
            "ratio_to_shap",
            "max_abs_diff",
            "additivity_error",
        ],
    )
    print("peak memory (bytes) by N:", memory)
    payload = {
        "meta": metadata(
            device,
            benchmark="bench_shap",
            model="CensusMLP 65-64-64-2 (softmax)",
            n_background=N_BACKGROUND,
            nsamples="auto (2072)",
            seed=SEED,
            allocator=allocator,
            shap_versions=[p["version"] for p in peers],
            floor_chunks=list(FLOOR_CHUNKS),
        ),
        "kernel_shap": rows,
        "tree_shap": trees,
        "peak_memory_bytes": memory,
        "floor": {"every_row": floor_all, "distinct_rows": floor_distinct},
    }
    path = write_results("bench_shap" + ("-quick" if args.quick else ""), payload, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
