"""What exact batch invariance costs: each method with its calls padded to a multiple of 4 rows
(``pad_to_multiple=4``) against the same method unpadded (``pad_to_multiple=1``), in one run.

    python benchmarks/bench_padding.py [--device cpu|cuda] [--quick] [--out PATH]

The padded run is "torchexplain", the unpadded one its "peer": ``ratio_vs_peer - 1`` is the
cost of padding. A method's ``pad_to_multiple="auto"`` pads where this costs under 10% (the
counterfactual searches do not: a lone instance's steps carry one row). Each configuration
is timed after a warm-up, repeats interleaved, medians reported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _common import metadata, print_table, steady_host_allocator, time_providers, write_results  # noqa: E402

from torchexplain import (  # noqa: E402
    AnchorImage,
    AnchorTabular,
    Counterfactual,
    CounterfactualProto,
    IntegratedGradients,
    KernelShap,
)
from torchexplain.datasets import load_census, load_mnist  # noqa: E402
from torchexplain.zoo import Probabilities, pretrained_census_mlp, pretrained_mnist_cnn  # noqa: E402


def methods(
    device: torch.device,
) -> dict[str, Callable[[int, torch.Tensor | None], Callable[[int], object]]]:
    """Per method: (pad, n) -> a call explaining n instances with that padding."""
    cnn, _ = pretrained_mnist_cnn()
    cnn = cnn.to(device)
    test = load_mnist("test")
    digits = test.images[:64].to(device)
    background = test.images[-50:].to(device)
    census = load_census()
    mlp, _ = pretrained_census_mlp()
    mlp = Probabilities(mlp.to(device))
    rows = torch.as_tensor(census.X_test[:64], dtype=torch.float32, device=device)
    train = torch.as_tensor(census.X_train, dtype=torch.float32)

    def ig(pad: int, n: int):
        explainer = IntegratedGradients(cnn, n_steps=50, pad_to_multiple=pad)
        return lambda: explainer.explain(digits[:n])

    def cf(pad: int, n: int):
        explainer = Counterfactual(
            cnn, max_lam_steps=1, max_iter=100, tol=0.05, pad_to_multiple=pad
        )
        return lambda: explainer.explain(digits[:n])

    def proto(pad: int, n: int):
        explainer = CounterfactualProto(
            cnn,
            use_kdtree=True,
            theta=10.0,
            k=2,
            c_init=10.0,
            c_steps=1,
            max_iterations=100,
            feature_range=(0.0, 1.0),
            pad_to_multiple=pad,
        ).fit(background)
        return lambda: explainer.explain(digits[:n])

    def anchor_image(pad: int, n: int):
        explainer = AnchorImage(
            cnn,
            segmentation_kwargs={"n_segments": 15, "compactness": 20, "sigma": 0.5},
            images_background=background,
            seed=0,
            device=device,
            pad_to_multiple=pad,
        )
        return lambda: explainer.explain(digits[:n])

    def anchor_tabular(pad: int, n: int):
        explainer = AnchorTabular(
            mlp, census.feature_names, census.categorical_names, seed=0, pad_to_multiple=pad
        ).fit(train)
        return lambda: explainer.explain(rows[:n])

    def kernel_shap(pad: int, n: int):
        explainer = KernelShap(mlp, feature_names=census.feature_names, seed=0, pad_to_multiple=pad)
        explainer.fit(train[:100])
        return lambda: explainer.explain(rows[:n])

    return {
        "integrated_gradients": ig,
        "counterfactual": cf,
        "counterfactual_proto": proto,
        "anchor_image": anchor_image,
        "anchor_tabular": anchor_tabular,
        "kernel_shap": kernel_shap,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    allocator = steady_host_allocator(device)
    sizes = {"counterfactual": (1, 8), "counterfactual_proto": (1, 8), "anchor_image": (1, 4)}
    # --quick: the lone-instance cost of a search and of IG, and two black-box batches
    quick = {
        "counterfactual": (1,),
        "integrated_gradients": (1,),
        "anchor_tabular": (4,),
        "kernel_shap": (8,),
    }
    repeats = 3 if args.quick else 7
    results = []
    for method, make in methods(device).items():
        for n in quick.get(method, ()) if args.quick else sizes.get(method, (1, 16)):
            timing = time_providers(
                {"torchexplain": make(4, n), "unpadded": make(1, n)},
                device,
                repeats=repeats,
                warmup=1,
            )
            results.append(
                {"method": method, "config": f"N={n} (padded to 4 vs not)", "providers": timing}
            )
            cost = timing["torchexplain"]["median_s"] / timing["unpadded"]["median_s"] - 1
            print(
                f"{method:22s} N={n:<3d} padded {timing['torchexplain']['median_s']:.4f} s, "
                f"unpadded {timing['unpadded']['median_s']:.4f} s: {cost:+.1%}",
                flush=True,
            )
    payload = {
        "meta": metadata(
            device, benchmark="bench_padding", quick=args.quick, host_allocator=allocator
        ),
        "results": results,
    }
    table = []
    for r in results:
        padded, unpadded = (
            r["providers"]["torchexplain"]["median_s"],
            r["providers"]["unpadded"]["median_s"],
        )
        cost = f"{padded / unpadded - 1:+.1%}"
        table.append(
            {
                "method": r["method"],
                "config": r["config"],
                "padded_s": padded,
                "unpadded_s": unpadded,
                "cost": cost,
            }
        )
    print_table(table, ["method", "config", "padded_s", "unpadded_s", "cost"])
    print(f"wrote {write_results('bench_padding', payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
