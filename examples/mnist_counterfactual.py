"""Counterfactuals for a few MNIST test digits: the smallest change that flips the CNN.

Writes ``counterfactuals.png`` (per digit: the original, its Wachter
counterfactual and the difference, red where ink was added and blue where it was
removed, then the prototype-guided counterfactual and its difference; classes,
probabilities and L1 in the caption) and ``counterfactuals.json`` into the output
folder. The code lives in ``torchexplain._demo_counterfactual`` so the installed
``torchexplain demo`` can run it; :func:`run` is re-exported here. Alone:

    python examples/mnist_counterfactual.py --out demo_out
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from torchexplain._demo_counterfactual import PROTO_SETTINGS, SETTINGS, pick_digits, run

__all__ = ["PROTO_SETTINGS", "SETTINGS", "pick_digits", "run"]

if __name__ == "__main__":
    from torchexplain.datasets import load_mnist
    from torchexplain.zoo import pretrained_mnist_cnn

    parser = argparse.ArgumentParser(description="MNIST counterfactuals demo")
    parser.add_argument("--out", default="demo_out", help="output folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    cnn, _ = pretrained_mnist_cnn()
    result = run(cnn.to(device), load_mnist("test"), Path(args.out), device)
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=None))
