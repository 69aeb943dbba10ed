"""Which explanation of the MNIST CNN is best? IG with two baselines, KernelShap on superpixels and
a random control, scored by infidelity, sensitivity, deletion and insertion.

Loads (or trains and caches) the small MNIST CNN, and runs ``torchexplain.evaluation.evaluate``
on the first test digits with:

- ``IG (black)``: Integrated Gradients from an all-black image (32 steps);
- ``IG (mean digit)``: the same from the mean of 1,000 training digits;
- ``KernelShap (superpixels)``: SLIC superpixels, a black background;
- ``random``: normal noise, a fresh draw per call: the control every method must beat.

Writes ``evaluation.json`` (means, per-digit values, rankings, mean curves) and
``evaluation.png`` (the mean deletion and insertion curves of each method on one plot each,
and a bar chart per metric) into the output folder, and prints the table.

Run: ``python examples/mnist_quality.py [out_dir] [--digits 32]`` (offline; CPU unless CUDA;
the picture needs matplotlib: ``pip install -e ".[plots]"``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import torchexplain
from torchexplain.datasets import load_mnist
from torchexplain.evaluation import evaluate, random_attributions
from torchexplain.zoo import pretrained_mnist_cnn


def run(
    out_dir: str | Path = "demo_out", n_digits: int = 32, device: str | None = None, seed: int = 0
) -> dict:
    """Evaluate the four methods on ``n_digits`` test digits; write the JSON and the picture."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = pretrained_mnist_cnn()
    model = model.to(device).eval()
    digits = load_mnist("test").images[:n_digits].to(device)
    mean_digit = load_mnist("train").images[:1000].mean(0, keepdim=True).to(device)
    ig = torchexplain.IntegratedGradients(model, n_steps=32)
    methods = {
        "IG (black)": ig,
        "IG (mean digit)": (ig, {"baselines": mean_digit}),
        "KernelShap (superpixels)": torchexplain.KernelShap(model, seed=seed).fit(
            torch.zeros(1, 1, 28, 28, device=device)
        ),
        "random": random_attributions(seed),
    }
    evaluation = evaluate(model, digits, methods, n_sensitivity_samples=5, seed=seed)
    paths = evaluation.save(out_dir)
    return {
        "mean": evaluation.table(),
        "ranking": evaluation.ranking(),
        "seconds": evaluation.seconds,
        "files": [str(paths["json"]), str(paths["png"])],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="demo_out")
    parser.add_argument("--digits", type=int, default=32)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    print(json.dumps(run(args.out_dir, args.digits, args.device), indent=2))


if __name__ == "__main__":
    main()
