"""AnchorTabular on the census (loan) table: time per row, rows asked, and the anchors' quality, against Alibi and the floor.

Same model (``torchexplain.zoo.CensusMLP``: 12 coded columns, one-hot inside to 65
inputs, hidden 64-64), same training rows, discretiser (quartiles) and test rows,
threshold 0.95, in one run:

- ``torchexplain (batch N)``: N test rows in one ``explain`` call (N = 16, 256, 1024), with
  the default ``precision_samples="reuse"`` (Alibi's rule); ``torchexplain fresh (batch N)``:
  the same with ``precision_samples="fresh"`` (N = 256 and the largest), with its time
  against the default (``time_vs_reuse``). Each records the search's host syncs per round.
- ``torchexplain (one by one)``: the first rows explained one call each, as Alibi works.
- ``alibi``: ``alibi.explainers.AnchorTabular`` (0.9.6) on the same rows one at a time,
  with a numpy predict function over the same model, when ``alibi`` is importable
  (it pins numpy<2: run this script in an environment of its own, see the README).
- ``model only (floor)``: the model alone on as many rows as the N=256 search asked
  for, in the same chunk size; no implementation of the search can be faster.

Per provider: mean seconds per row (total / rows; for the batched runs that is the
only per-row time there is) and, one by one, the median; rows asked per explained row;
success rate; mean coverage and anchor length; and precision re-estimated on 1,000
fresh samples per successful anchor (our sampler, another seed, in requests of 100 as the search draws; Alibi's anchors are
mapped back to predicates through their names, which also checks that both name the
same rules the same way). Coverage and success are also averaged over several seeds
for both libraries on the same rows, since one search's coverage swings with its draws.
Repeats are interleaved and the median kept.

Usage: ``python benchmarks/bench_anchor_tabular.py --device cpu|cuda [--out PATH] [--quick]``
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import metadata, print_table, sync, write_results  # noqa: E402

from torchexplain import AnchorTabular  # noqa: E402
from torchexplain.anchors.fresh import TabularRules as Rules  # noqa: E402
from torchexplain.anchors.tabular import _AUTO_ROWS  # noqa: E402
from torchexplain.datasets import load_census  # noqa: E402
from torchexplain.zoo import pretrained_census_mlp  # noqa: E402

THRESHOLD = 0.95
FRESH_SAMPLES = 1000


def quality(
    rules: Rules, anchors: list[list[str]], success: list[bool], coverage: list[float]
) -> dict:
    fresh, unmapped = [], 0
    for i, (names, ok) in enumerate(zip(anchors, success)):
        if not ok:
            continue
        predicates = rules.predicates_of(i, names)
        if predicates is None:
            unmapped += 1
            continue
        fresh.append(rules.precision(i, predicates, FRESH_SAMPLES))
    return {
        "success_rate": float(np.mean(success)),
        "coverage_mean": float(np.mean(coverage)),
        "anchor_length_mean": float(np.mean([len(a) for a in anchors])),
        "fresh_precision_mean": float(np.mean(fresh)) if fresh else None,
        "fresh_precision_min": float(np.min(fresh)) if fresh else None,
        "fresh_precision_below_threshold_minus_0.05": int(sum(f < THRESHOLD - 0.05 for f in fresh)),
        "anchors_whose_names_we_could_not_map": unmapped,
    }


def bench_alibi(model, data, rows: np.ndarray, ours: dict) -> dict:
    import alibi
    from alibi.explainers import AnchorTabular as AlibiAnchorTabular

    counts = {"calls": 0, "rows": 0}

    def predict(x: np.ndarray) -> np.ndarray:
        counts["calls"] += 1
        counts["rows"] += x.shape[0]
        with torch.no_grad():
            return torch.softmax(
                model(torch.from_numpy(np.asarray(x, dtype=np.float32))), 1
            ).numpy()

    explainer = AlibiAnchorTabular(
        predict, data.feature_names, categorical_names=data.categorical_names, seed=0
    )
    explainer.fit(data.X_train, disc_perc=(25, 50, 75))
    explainer.explain(rows[0], threshold=THRESHOLD)  # warm-up
    per_row, asked, anchors, success, coverage = [], [], [], [], []
    for row in rows:
        counts.update(calls=0, rows=0)
        start = time.perf_counter()
        exp = explainer.explain(row, threshold=THRESHOLD)
        per_row.append(time.perf_counter() - start)
        asked.append(counts["rows"])
        anchors.append(list(exp.anchor))
        success.append(
            bool(exp.raw["success"]) if "success" in exp.raw else bool(exp.precision >= THRESHOLD)
        )
        coverage.append(float(exp.coverage))
    return {
        "installed": True,
        "version": alibi.__version__,
        "rows": len(rows),
        "s_per_row": float(np.mean(per_row)),
        "median_s_per_row": float(np.median(per_row)),
        "rows_asked_per_row": float(np.mean(asked)),
        "anchors": anchors,
        "_success": success,
        "_coverage": coverage,
    }


def seed_spread(
    model, data, explainer: AnchorTabular, rows: np.ndarray, seeds: int, with_alibi: bool
) -> dict:
    """Mean coverage and success over several seeds, ours and Alibi's, on the same rows.

    One search's coverage swings with its random draws (a borderline anchor is kept or
    extended), so the two libraries are compared on the average over seeds too.
    """
    out: dict = {"seeds": seeds, "rows": len(rows), "torchexplain": [], "alibi": []}
    cpu_model = copy.deepcopy(explainer.model).to("cpu")

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(
                cpu_model(torch.from_numpy(np.asarray(x, dtype=np.float32))), 1
            ).numpy()

    for seed in range(seeds):
        ours = AnchorTabular(explainer.model, data.feature_names, data.categorical_names, seed=seed)
        ours._fit = explainer._fit
        exp = ours.explain(torch.from_numpy(rows).to(next(explainer.model.parameters()).device))
        out["torchexplain"].append(
            {
                "coverage_mean": float(exp.coverage.mean()),
                "success_rate": float(exp.success.float().mean()),
            }
        )
        if with_alibi:
            from alibi.explainers import AnchorTabular as AlibiAnchorTabular

            peer = AlibiAnchorTabular(
                predict, data.feature_names, categorical_names=data.categorical_names, seed=seed
            )
            peer.fit(data.X_train, disc_perc=(25, 50, 75))
            found = [peer.explain(row, threshold=THRESHOLD) for row in rows]
            out["alibi"].append(
                {
                    "coverage_mean": float(np.mean([float(e.coverage) for e in found])),
                    "success_rate": float(
                        np.mean([bool(e.raw.get("success", True)) for e in found])
                    ),
                }
            )
    for name in ("torchexplain", "alibi"):
        if out[name]:
            out[f"{name}_coverage_mean_over_seeds"] = float(
                np.mean([r["coverage_mean"] for r in out[name]])
            )
            out[f"{name}_success_rate_over_seeds"] = float(
                np.mean([r["success_rate"] for r in out[name]])
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds for the coverage comparison (default 4, 1 quick)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    data = load_census()
    model, _ = pretrained_census_mlp()
    model = model.to(device).eval()
    explainer = AnchorTabular(model, data.feature_names, data.categorical_names, seed=0).fit(
        data.X_train
    )
    if device.type == "cuda":
        sizes, repeats, one_by_one, n_alibi = (
            ([100, 1000] if args.quick else [16, 256, 1024, 4096]),
            3,
            20,
            0,
        )
    else:
        sizes, repeats, one_by_one, n_alibi = (
            ([16, 64] if args.quick else [16, 256, 1024]),
            (1 if args.quick else 3),
            (8 if args.quick else 50),
            (8 if args.quick else 50),
        )
    test = torch.from_numpy(data.X_test).to(device)
    results: dict[str, dict] = {}
    explanations = {}
    explainer.explain(test[:16])  # warm-up
    # The floor: the model alone on as many rows as the reference batch asks for, same chunks,
    # timed right after each repeat of that batch (this machine's speed drifts between runs).
    reference_n = 256 if 256 in sizes else sizes[-1]
    n_rows = int(explainer.explain(test[:reference_n]).meta["total_rows_evaluated"])
    pool = torch.from_numpy(data.X_train).to(device)
    floor_rows = pool[
        torch.randint(0, pool.shape[0], (n_rows,), generator=torch.Generator().manual_seed(0))
    ]

    def time_floor() -> float:
        sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            for s in range(0, n_rows, _AUTO_ROWS):
                model(floor_rows[s : s + _AUTO_ROWS]).argmax(1)
        sync(device)
        return time.perf_counter() - start

    time_floor()  # warm-up
    floor_times: list[float] = []
    fresh_sizes = [reference_n, sizes[-1]]
    runs = [(n, "reuse") for n in sizes] + [(n, "fresh") for n in dict.fromkeys(fresh_sizes)]
    for n, mode in runs:
        times = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            exp = explainer.explain(test[:n], precision_samples=mode)
            sync(device)
            times.append(time.perf_counter() - start)
            if n == reference_n:
                floor_times.append(time_floor())
        explanations[n, mode] = exp
        seconds = statistics.median(times)
        name = f"torchexplain (batch {n})" if mode == "reuse" else f"torchexplain fresh (batch {n})"
        results[name] = {
            "rows": n,
            "precision_samples": mode,
            "s_per_row": seconds / n,
            "rows_per_s": n / seconds,
            "seconds_median": seconds,
            "rows_asked_per_row": exp.meta["total_rows_evaluated"] / n,
            "model_calls": exp.meta["total_model_calls"],
            "search_rounds": exp.meta["search_rounds"],
            "host_syncs_per_round": exp.meta["host_syncs"] / max(exp.meta["search_rounds"], 1),
        }
        if mode == "fresh":
            reuse = results[f"torchexplain (batch {n})"]
            results[name]["time_vs_reuse"] = seconds / reuse["seconds_median"]
    per_row, asked = [], []
    for i in range(one_by_one):
        sync(device)
        start = time.perf_counter()
        exp = explainer.explain(test[i : i + 1])
        sync(device)
        per_row.append(time.perf_counter() - start)
        asked.append(exp.meta["total_rows_evaluated"])
    results["torchexplain (one by one)"] = {
        "rows": one_by_one,
        "s_per_row": float(np.mean(per_row)),
        "median_s_per_row": float(np.median(per_row)),
        "rows_asked_per_row": float(np.mean(asked)),
    }
    floor = statistics.median(floor_times)
    results["model only (floor)"] = {
        "rows": reference_n,
        "s_per_row": floor / reference_n,
        "rows_scored": n_rows,
        "note": f"the model on the rows the batch-{reference_n} search asked for, chunks of "
        f"{_AUTO_ROWS}, timed after each repeat of that batch",
    }
    # Quality of the anchors, ours (largest batch) and Alibi's, on the same rows.
    rules = Rules(explainer, data.X_test[: sizes[-1]])
    for mode, name in (("reuse", "torchexplain"), ("fresh", "torchexplain fresh")):
        largest = explanations[sizes[-1], mode]
        results[f"{name} (batch {sizes[-1]})"].update(
            quality(rules, largest.anchor, largest.success.tolist(), largest.coverage.tolist())
        )
    floor_s = results["model only (floor)"]["s_per_row"]
    for row in results.values():
        if "precision_samples" in row and row["rows"] == reference_n:
            row["vs_floor"] = row["s_per_row"] / floor_s
    try:
        import alibi  # noqa: F401
    except ImportError:
        results["alibi"] = {
            "installed": False,
            "reference": {
                "s_per_row": 0.27,
                "median_s_per_row": 0.12,
                "rows_asked_per_row": 4900,
                "source": "issue 11: Alibi 0.9.6 AnchorTabular on this table and model, 50 test rows, another run",
            },
        }
    else:
        if n_alibi:
            cpu_model = model.to("cpu")
            peer = bench_alibi(cpu_model, data, data.X_test[:n_alibi], results)
            model.to(device)
            alibi_rules = Rules(explainer, data.X_test[:n_alibi])
            peer.update(
                quality(alibi_rules, peer["anchors"], peer.pop("_success"), peer.pop("_coverage"))
            )
            same_rows = min(n_alibi, sizes[-1])
            for mode, key in (("fresh", "ours_fresh_same_rows"), ("reuse", "ours_same_rows")):
                ours = explanations[sizes[-1], mode]
                peer[key] = quality(
                    alibi_rules,
                    ours.anchor[:same_rows],
                    ours.success[:same_rows].tolist(),
                    ours.coverage[:same_rows].tolist(),
                )
            peer["same_anchor_as_ours"] = float(
                np.mean(
                    [
                        sorted(a) == sorted(b)
                        for a, b in zip(peer["anchors"], ours.anchor[:same_rows])
                    ]
                )
            )
            results["alibi"] = peer
            for name, row in results.items():
                if name.startswith("torchexplain"):
                    row["speedup_vs_alibi"] = peer["s_per_row"] / row["s_per_row"]
    if n_alibi:
        try:
            import alibi  # noqa: F401

            with_alibi = True
        except ImportError:
            with_alibi = False
        seeds = args.seeds if args.seeds is not None else (1 if args.quick else 4)
        results["coverage_over_seeds"] = seed_spread(
            model, data, explainer, data.X_test[:n_alibi], seeds, with_alibi
        )
    payload = {
        "meta": metadata(
            device,
            benchmark="bench_anchor_tabular",
            threshold=THRESHOLD,
            model="CensusMLP 65-64-64-2",
            train_rows=int(len(data.X_train)),
            sizes=sizes,
            repeats=repeats,
        ),
        "results": results,
    }
    path = write_results(
        "bench_anchor_tabular" + ("-quick" if args.quick else ""), payload, args.out
    )
    rows = [
        {"provider": k, **{c: v for c, v in r.items() if not isinstance(v, (list, dict))}}
        for k, r in results.items()
        if k != "coverage_over_seeds"
    ]
    print_table(
        rows,
        [
            "provider",
            "rows",
            "s_per_row",
            "median_s_per_row",
            "rows_asked_per_row",
            "host_syncs_per_round",
            "vs_floor",
            "speedup_vs_alibi",
            "success_rate",
            "coverage_mean",
            "fresh_precision_mean",
            "fresh_precision_min",
        ],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
