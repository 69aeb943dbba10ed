"""The MNIST demo's counterfactual section: the smallest change that flips the CNN.

Writes ``counterfactuals.png`` (per digit: the original, its counterfactual and
the difference, red where ink was added and blue where it was removed; classes
and probabilities in the caption) and ``counterfactuals.json`` into the output
folder. Called by :mod:`torchexplain.demo` (``torchexplain demo``); alone:

    python examples/mnist_counterfactual.py --out demo_out
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from torchexplain import Counterfactual
from torchexplain.visualize import heatmap, save_grid

#: Test digits shown, chosen once so the picture is stable: a 0, a 7 and a 3.
N_DIGITS = 3
#: Fewer lambda rounds than the library default keep the demo near 10 s on a laptop CPU.
SETTINGS = dict(target_class="other", target_proba=1.0, tol=0.05, max_lam_steps=3)


def pick_digits(labels: torch.Tensor, classes: tuple[int, ...] = (0, 7, 3)) -> list[int]:
    """The first test index of each class in ``classes``."""
    return [int((labels == c).nonzero()[0]) for c in classes[:N_DIGITS]]


def run(model: torch.nn.Module, test_split: Any, out_dir: Path, device: torch.device) -> dict:
    """Search counterfactuals for a few test digits and write the grid and JSON into ``out_dir``.

    Args:
        model: an MNIST classifier returning ``(B, 10)`` logits (e.g. ``MnistCNN``).
        test_split: an ``MNISTSplit`` (``images`` ``(N, 1, 28, 28)``, ``labels``).
        out_dir: folder for ``counterfactuals.png`` and ``counterfactuals.json``.
        device: where the search runs.

    Returns:
        A small summary: digits, original and counterfactual classes, success, L1, seconds.
    """
    out_dir = Path(out_dir)
    indices = pick_digits(test_split.labels)
    x = test_split.images[indices].to(device)
    start = time.perf_counter()
    exp = Counterfactual(model, **SETTINGS).explain(x)
    seconds = time.perf_counter() - start

    orig_proba = torch.softmax(exp.predictions, dim=1).gather(1, exp.target[:, None])[:, 0]
    rows, captions = [], []
    for i in range(len(indices)):
        original, found = x[i].cpu(), exp.counterfactual[i].cpu()
        rows.append([original, found, heatmap(found - original)])
        if exp.success[i]:
            outcome = f"{int(exp.cf_class[i])} (p={exp.cf_proba[i].item():.2f})"
        else:
            outcome = f"none found; closest: {int(exp.cf_class[i])} (p={exp.cf_proba[i].item():.2f})"
        captions.append(
            f"{int(exp.target[i])} (p={orig_proba[i].item():.2f}) -> {outcome}, "
            f"L1 {exp.l1_distance[i].item():.1f}"
        )
    png = save_grid(rows, captions, out_dir / "counterfactuals.png",
                    titles=["original", "counterfactual", "difference"])
    summary = {
        "method": "Counterfactual (Wachter et al. 2017), batched",
        "test_indices": indices,
        "target": exp.target.tolist(),
        "cf_class": exp.cf_class.tolist(),
        "cf_proba": [round(p, 4) for p in exp.cf_proba.tolist()],
        "success": exp.success.tolist(),
        "l1_distance": [round(d, 3) for d in exp.l1_distance.tolist()],
        "n_iter": exp.n_iter.tolist(),
        "seconds": round(seconds, 2),
        "settings": SETTINGS,
        "png": str(png),
    }
    (out_dir / "counterfactuals.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
