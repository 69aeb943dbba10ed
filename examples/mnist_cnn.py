"""The MNIST demo, the main job: train (or reuse) a small CNN, then explain its test predictions.

    python examples/mnist_cnn.py [--out outputs/mnist] [--device cpu|cuda]
    torchexplain demo [...]          (the same script, from a source checkout)

Integrated Gradients for 16 test digits, Wachter and prototype-guided counterfactuals
(``mnist_counterfactual.py``) and anchors (``mnist_anchor.py``). Runs offline: the data
is the MNIST subset bundled with torchexplain unless ``--data-root`` points at
torchvision's MNIST files (``--download`` fetches them). Writes PNG grids, the
explanations as JSON and ``summary.json`` to ``--out``; uses CUDA when there is one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import mnist_anchor  # the demo's other sections, beside this file
import mnist_counterfactual
import torch

import torchexplain
from torchexplain import IntegratedGradients, visualize
from torchexplain.datasets import load_mnist
from torchexplain.zoo import pretrained_mnist_cnn


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The demo's flags."""
    parser.add_argument("--out", type=Path, default=Path("outputs/mnist"), help="output folder")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--n-explain", type=int, default=16, help="test digits to explain")
    parser.add_argument("--n-steps", type=int, default=50, help="IG steps")
    parser.add_argument(
        "--data-root", type=Path, default=None, help="torchvision MNIST root (optional)"
    )
    parser.add_argument(
        "--download", action="store_true", help="download MNIST into --data-root first"
    )
    parser.add_argument("--retrain", action="store_true", help="ignore the cached checkpoint")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    # run by `torchexplain demo`, the usage line says so
    prog = os.environ.get("TORCHEXPLAIN_PROG")
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    return add_arguments(parser).parse_args(argv)


def explain_with_ig(
    model, test, out_dir: Path, device: torch.device, n_explain: int, n_steps: int
) -> dict:
    images = test.images[:n_explain].to(device)
    explainer = IntegratedGradients(model, n_steps=n_steps)
    explainer.explain(images[:2])  # warm-up, so the time below is steady-state
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    explanation = explainer.explain(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    attributions = explanation.attributions.cpu()
    rows, captions = [], []
    for i in range(n_explain):
        rows.append(
            [
                images[i].cpu(),
                visualize.heatmap(attributions[i]),
                visualize.overlay(images[i].cpu(), attributions[i]),
            ]
        )
        captions.append(
            f"pred {int(explanation.target[i])} (true {int(test.labels[i])})  "
            f"delta {float(explanation.convergence_delta[i]):+.1e}"
        )
    grid = visualize.save_grid(
        rows, captions, out_dir / "integrated_gradients.png", titles=["digit", "IG", "overlay"]
    )
    (out_dir / "integrated_gradients.json").write_text(explanation.to_json())
    return {
        "grid": str(grid),
        "mean_abs_delta": float(explanation.convergence_delta.abs().mean()),
        "seconds": seconds,
        "per_second": n_explain / seconds,
    }


def main(argv=None) -> int:
    return run(parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed flags; returns the exit status."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    if args.download and args.data_root is None:
        print("error: --download needs --data-root", file=sys.stderr)
        return 2
    if args.download:
        load_mnist("train", root=args.data_root, download=True)
    model, cached = pretrained_mnist_cnn(data_root=args.data_root, retrain=args.retrain)
    print(
        f"model: MnistCNN ({'cached checkpoint' if cached else 'trained now'}, "
        f"{time.perf_counter() - start:.1f} s)"
    )
    model = model.to(device)
    test = load_mnist("test", root=args.data_root)
    with torch.no_grad():
        predicted = torch.cat(
            [model(batch.to(device)).argmax(1).cpu() for batch in test.images.split(500)]
        )
    accuracy = float((predicted == test.labels).float().mean())
    print(f"data: {test.source}, {len(test.labels)} test digits; test accuracy {accuracy:.3f}")

    summary = {
        "device": str(device),
        "accuracy": accuracy,
        "torchexplain": torchexplain.__version__,
    }
    ig = explain_with_ig(model, test, args.out, device, args.n_explain, args.n_steps)
    summary["integrated_gradients"] = ig
    print(
        f"integrated gradients: {args.n_explain} digits x {args.n_steps} steps in {ig['seconds']:.3f} s "
        f"({ig['per_second']:.0f} explanations/s) on {device}; mean |delta| {ig['mean_abs_delta']:.2e}"
    )
    print(f"  wrote {ig['grid']}")

    cf = mnist_counterfactual.run(
        model, test, args.out, device, data_root=args.data_root, retrain=args.retrain
    )
    summary["counterfactual"] = cf
    changes = ", ".join(
        f"{o}->{c}" + ("" if ok else " (not found)")
        for o, c, ok in zip(cf["target"], cf["cf_class"], cf["success"])
    )
    print(f"counterfactuals: {changes} in {cf['seconds']:.1f} s; L1 {cf['l1_distance']}")
    proto = cf["proto"]
    guided = ", ".join(
        f"{o}->{c}" + ("" if ok else " (not found)")
        for o, c, ok in zip(cf["target"], proto["cf_class"], proto["success"])
    )
    print(
        f"prototype-guided counterfactuals: {guided} in {proto['seconds']:.1f} s; L1 {proto['l1_distance']}"
    )
    print(f"  wrote {cf['png']}")
    anchors = mnist_anchor.run(model, test, args.out, device)
    summary["anchor"] = anchors
    print(
        f"anchors: {len(anchors['precision'])} digits in {anchors['seconds']:.1f} s; precision "
        f"{', '.join(f'{p:.2f}' for p in anchors['precision'])}; coverage "
        f"{', '.join(f'{c:.2f}' for c in anchors['coverage'])}"
    )
    print(f"  wrote {anchors['png']}")

    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {args.out / 'summary.json'}; total {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
