"""A/B of two checkouts on the touched paths: two worker processes, one per checkout, called in turn.

On a shared machine the speed of the same call drifts by tens of per cent from one minute
to the next (a 2-core VM here: the same IG call took 47 ms, then 100 ms, then 47 ms), so
two whole benchmark runs one after the other compare the machine as much as the code.
Here both versions stay loaded, each in its own process with its own copy of
torchexplain, and each workload is called old, new, new, old, ... one call at a time,
a moment apart: a pair of calls meets the same machine. Per workload the median of the
per-pair ratios new/old is reported with its interquartile range; a range that spans 0
is noise at this machine's resolution.

Usage::

    git worktree add /tmp/before <commit>           # the previous version
    python benchmarks/ab.py --old /tmp/before --new . [--pairs 20] [--only ig,kernel_shap]

The workloads use the public API only, so both versions must run them. Both import
``torchexplain.kernels`` from the installed package (an editable install maps it to this
checkout's ``kernels/``): this compares the Python package, not the kernels. Each worker
sets glibc to keep freed memory (as the benchmarks do), so page faults of a fresh
allocation do not land on one side only. Writes ``benchmarks/results/ab/ab-<device>.json``
(a comparison of two versions, not a benchmark result: ``torchexplain bench`` does not read it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: glibc: keep freed blocks (the same setting benchmarks/_common.steady_host_allocator makes)
STEADY_MALLOC = {"MALLOC_TRIM_THRESHOLD_": "1073741824", "MALLOC_MMAP_THRESHOLD_": "33554432"}
#: pause before each call, so the other worker's OpenMP threads have stopped spinning
SETTLE_S = 0.05


def workloads() -> dict[str, Callable[[], Any]]:
    """Each touched path, built once: name -> a call (CPU, the bundled models and data)."""
    import torch
    from sklearn.ensemble import RandomForestClassifier

    from torchexplain import (
        AnchorImage,
        AnchorTabular,
        Counterfactual,
        CounterfactualProto,
        IntegratedGradients,
        KernelShap,
        TreeShap,
    )
    from torchexplain.datasets import load_census, load_mnist
    from torchexplain.zoo import Probabilities, pretrained_census_mlp, pretrained_mnist_cnn

    sys.path.insert(0, str(HERE))
    from _models import GapLinear

    cnn = pretrained_mnist_cnn()[0].eval()
    test = load_mnist("test")
    digits, background = test.images[:8], test.images[-50:]
    census = load_census()
    mlp = Probabilities(pretrained_census_mlp()[0]).eval()
    rows = torch.as_tensor(census.X_test[:16], dtype=torch.float32)
    train = torch.as_tensor(census.X_train, dtype=torch.float32)
    torch.manual_seed(0)
    gap = GapLinear().eval()
    large = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ig = IntegratedGradients(cnn, n_steps=50)
    ig_large = IntegratedGradients(gap, n_steps=50)
    kernel_shap = KernelShap(mlp, feature_names=census.feature_names, seed=0).fit(train[:100])
    tabular = AnchorTabular(mlp, census.feature_names, census.categorical_names, seed=0)
    tabular.fit(train)
    image = AnchorImage(
        cnn,
        segmentation_kwargs={"n_segments": 15, "compactness": 20, "sigma": 0.5},
        images_background=background,
        seed=0,
    )
    wachter = Counterfactual(cnn, max_lam_steps=1, max_iter=100, tol=0.05)
    proto = CounterfactualProto(
        cnn,
        use_kdtree=True,
        theta=10.0,
        k=2,
        c_init=10.0,
        c_steps=1,
        max_iterations=100,
        feature_range=(0.0, 1.0),
    ).fit(background)
    forest = RandomForestClassifier(30, max_depth=8, random_state=0, n_jobs=1)
    tree_shap = TreeShap(forest.fit(census.X_train, census.y_train)).fit(census.X_train[:100])
    return {
        "ig_mnist_8": lambda: ig.explain(digits),
        "ig_mnist_1": lambda: ig.explain(digits[:1]),
        "ig_224px_4": lambda: ig_large.explain(large, target=0),
        "kernel_shap_16": lambda: kernel_shap.explain(rows),
        "anchor_tabular_16": lambda: tabular.explain(rows),
        "anchor_image_2": lambda: image.explain(digits[:2]),
        "counterfactual_8": lambda: wachter.explain(digits),
        "counterfactual_1": lambda: wachter.explain(digits[:1]),
        "counterfactual_proto_8": lambda: proto.explain(digits),
        "tree_shap_interventional_100": lambda: tree_shap.explain(census.X_test[:100]),
    }


def serve() -> None:
    """Worker: build the workloads, warm each, then time one call per name read on stdin."""
    table = workloads()
    for call in table.values():
        call()
    print(json.dumps(sorted(table)), flush=True)
    for line in sys.stdin:
        name = line.strip()
        start = time.perf_counter()
        table[name]()
        print(time.perf_counter() - start, flush=True)


class Worker:
    """One checkout's worker process."""

    def __init__(self, checkout: Path) -> None:
        env = {**os.environ, **STEADY_MALLOC, "PYTHONPATH": str(checkout)}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(checkout),
        )
        ready = self.process.stdout.readline()
        if not ready:
            raise RuntimeError(f"the worker for {checkout} exited before it was ready")
        self.names = json.loads(ready)

    def time(self, name: str) -> float:
        time.sleep(SETTLE_S)
        self.process.stdin.write(name + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the worker died running {name}")
        return float(answer)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def compare(old: Worker, new: Worker, name: str, pairs: int) -> dict[str, Any]:
    """``pairs`` paired calls, the order flipped every pair (old-new, new-old, ...)."""
    old_s, new_s = [], []
    for i in range(pairs):
        if i % 2 == 0:
            old_s.append(old.time(name))
            new_s.append(new.time(name))
        else:
            new_s.append(new.time(name))
            old_s.append(old.time(name))
    ratios = [b / a for a, b in zip(old_s, new_s)]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return {
        "old_median_s": statistics.median(old_s),
        "new_median_s": statistics.median(new_s),
        "change": statistics.median(ratios) - 1,
        "change_q1": q1 - 1,
        "change_q3": q3 - 1,
        "pairs": pairs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, help="checkout of the previous version")
    parser.add_argument(
        "--new", type=Path, default=HERE.parent, help="checkout (default: this one)"
    )
    parser.add_argument("--pairs", type=int, default=20, help="paired calls per workload")
    parser.add_argument("--only", default=None, help="comma-separated workload names")
    parser.add_argument("--out", default=None, help="JSON file (default results/ab/ab-cpu.json)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    if args.old is None:
        parser.error("--old is required (a checkout of the previous version)")
    if args.pairs < 2:
        parser.error(f"--pairs must be at least 2, got {args.pairs}")
    for side in (args.old, args.new):
        if not (side / "torchexplain" / "__init__.py").is_file():
            parser.error(f"{side}: not a torchexplain checkout (no torchexplain/__init__.py)")
    old, new = Worker(args.old.resolve()), Worker(args.new.resolve())
    names = args.only.split(",") if args.only else old.names
    unknown = sorted(set(names) - set(old.names))
    if unknown:
        parser.error(f"--only {','.join(unknown)}: no such workload; known: {', '.join(old.names)}")
    results = {}
    try:
        for name in names:
            r = results[name] = compare(old, new, name, args.pairs)
            print(
                f"{name:30s} old {r['old_median_s'] * 1e3:8.1f} ms  new {r['new_median_s'] * 1e3:8.1f} ms"
                f"  {r['change']:+6.1%} (IQR {r['change_q1']:+.1%} .. {r['change_q3']:+.1%})",
                flush=True,
            )
    finally:
        old.close()
        new.close()
    sys.path.insert(0, str(HERE))
    import torch
    from _common import git_commit, metadata, write_results

    meta = metadata(torch.device("cpu"), benchmark="ab", old=str(args.old), new=str(args.new))
    meta["old_commit"] = _commit_of(args.old)
    meta["new_commit"] = _commit_of(args.new) if args.new != HERE.parent else git_commit()
    out = args.out or HERE / "results" / "ab"
    print(f"wrote {write_results('ab', {'meta': meta, 'results': results}, out)}")
    return 0


def _commit_of(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
