"""Anchors for a few MNIST test digits: the digit, its superpixels, and the anchor.

``run(model, test_split, out_dir, device)`` writes ``mnist_anchor.png`` (one row per
digit: the digit, its SLIC superpixels, the anchor kept over a dimmed rest) and
``mnist_anchor.json`` (anchors, precision, coverage, model queries) into ``out_dir`` and
returns a small summary. The code lives in ``torchexplain._demo_anchor`` so the
installed ``torchexplain demo`` can run it. Run alone: ``python examples/mnist_anchor.py [out_dir]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from torchexplain._demo_anchor import SEGMENTATION_KWARGS, run, segments_picture

__all__ = ["SEGMENTATION_KWARGS", "run", "segments_picture"]

if __name__ == "__main__":
    from torchexplain.datasets import load_mnist
    from torchexplain.zoo import pretrained_mnist_cnn

    model, _ = pretrained_mnist_cnn()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo_out")
    print(json.dumps(run(model, load_mnist("test"), target, device), indent=2))
