"""The MNIST demo's anchor section: the digit, its superpixels, and the anchor.

``run(model, test_split, out_dir, device)`` writes ``mnist_anchor.png`` (one row per
digit: the digit, its SLIC superpixels, the anchor kept over a dimmed rest) and
``mnist_anchor.json`` (anchors, precision, coverage, model queries) into ``out_dir`` and
returns a small summary. Part of ``examples/mnist_cnn.py``; alone:

    python examples/mnist_anchor.py [out_dir]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from torchexplain import AnchorImage
from torchexplain.visualize import ANCHOR_OUTLINE, mask_overlay, save_grid, to_rgb

#: the segmentation used on MNIST in Alibi's AnchorImage examples
SEGMENTATION_KWARGS = {"n_segments": 15, "compactness": 20, "sigma": 0.5}
N_DIGITS = 4
N_BACKGROUND = 50


def segments_picture(image: torch.Tensor, segments: torch.Tensor) -> np.ndarray:
    """Each superpixel in its own colour, shaded by the digit: (H, W, 3) uint8."""
    palette = np.random.default_rng(0).integers(60, 255, size=(int(segments.max()) + 1, 3))
    colours = palette[segments.numpy()].astype(np.float64)
    shade = 0.45 + 0.55 * image[0].numpy()[..., None]
    return np.round(colours * shade).clip(0, 255).astype(np.uint8)


def run(model: torch.nn.Module, test_split, out_dir: Path, device: torch.device) -> dict:
    """Explain the first ``N_DIGITS`` test digits; background: the last ``N_BACKGROUND`` test digits."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = test_split.images[:N_DIGITS]
    background = test_split.images[-N_BACKGROUND:]
    explainer = AnchorImage(
        model.to(device),
        segmentation_kwargs=SEGMENTATION_KWARGS,
        images_background=background,
        device=device,
        seed=0,
    )
    start = time.perf_counter()
    exp = explainer.explain(images, threshold=0.95)
    seconds = time.perf_counter() - start

    rows, captions = [], []
    for i in range(N_DIGITS):
        anchor = mask_overlay(images[i], exp.mask[i], outline=ANCHOR_OUTLINE)
        rows.append([to_rgb(images[i]), segments_picture(images[i], exp.segments[i]), anchor])
        status = "" if exp.success[i] else " (no valid anchor)"
        captions.append(
            f"pred {int(exp.target[i])}: precision {exp.precision[i]:.2f}, coverage {exp.coverage[i]:.2f}{status}"
        )
    png = save_grid(
        rows,
        captions,
        out_dir / "mnist_anchor.png",
        scale=4,
        titles=["digit", "superpixels", "anchor"],
    )
    summary = {
        "digits": N_DIGITS,
        "seconds": round(seconds, 3),
        "anchors": exp.anchor,
        "precision": [round(float(p), 4) for p in exp.precision],
        "coverage": [round(float(c), 4) for c in exp.coverage],
        "success": exp.success.tolist(),
        "model_calls": exp.meta["total_model_calls"],
        "images_evaluated": exp.n_images_evaluated.tolist(),
        "png": str(png),
    }
    (out_dir / "mnist_anchor.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    from torchexplain.datasets import load_mnist
    from torchexplain.zoo import pretrained_mnist_cnn

    cnn, _ = pretrained_mnist_cnn()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo_out")
    print(json.dumps(run(cnn, load_mnist("test"), target, device), indent=2))
