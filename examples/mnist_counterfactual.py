"""The MNIST demo's counterfactual section: the smallest change that flips the CNN.

Writes ``counterfactuals.png`` (per digit: the original, its Wachter counterfactual and
the difference, red where ink was added and blue where it was removed; then the
prototype-guided counterfactual (CounterfactualProto, prototypes from the nearest
training digits of the other classes) and its difference; classes, probabilities, L1
and the autoencoder's reconstruction error in the caption) and ``counterfactuals.json``
into the output folder. Part of ``examples/mnist_cnn.py``; alone:

    python examples/mnist_counterfactual.py --out demo_out
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from torchexplain import Counterfactual, CounterfactualProto
from torchexplain.visualize import heatmap, save_grid
from torchexplain.zoo import pretrained_mnist_autoencoder

#: Test digits shown, chosen once so the picture is stable: a 0, a 7 and a 3.
N_DIGITS = 3
#: Fewer lambda rounds than the library default keep the demo near 10 s on a laptop CPU.
SETTINGS = dict(target_class="other", target_proba=1.0, tol=0.05, max_lam_steps=3)
#: Alibi's MNIST k-d tree example (theta 10, k 2) with the benchmark's search over c
#: (c_init 10, 3 rounds, a round ended after 200 steps without a closer counterfactual).
PROTO_SETTINGS = dict(
    use_kdtree=True,
    theta=10.0,
    k=2,
    c_init=10.0,
    c_steps=3,
    early_stop=200,
    max_iterations=1000,
    beta=0.1,
    learning_rate_init=1e-2,
    feature_range=(0.0, 1.0),
)


def pick_digits(labels: torch.Tensor, classes: tuple[int, ...] = (0, 7, 3)) -> list[int]:
    """The first test index of each class in ``classes``."""
    return [int((labels == c).nonzero()[0]) for c in classes[:N_DIGITS]]


def run(
    model: torch.nn.Module,
    test_split: Any,
    out_dir: Path,
    device: torch.device,
    train_split: Any = None,
    data_root: Any = None,
    retrain: bool = False,
) -> dict:
    """Search counterfactuals for a few test digits and write the grid and JSON into ``out_dir``.

    Args:
        model: an MNIST classifier returning ``(B, 10)`` logits (e.g. ``MnistCNN``).
        test_split: an ``MNISTSplit`` (``images`` ``(N, 1, 28, 28)``, ``labels``).
        out_dir: folder for ``counterfactuals.png`` and ``counterfactuals.json``.
        device: where the search runs.
        train_split: the training digits the prototypes come from (``load_mnist("train")``
            when None).
        data_root: where ``load_mnist`` reads the training digits (bundled when None).
        retrain: retrain the autoencoder rather than load its cached checkpoint.

    Returns:
        A small summary: digits, original and counterfactual classes, success, L1, seconds.
    """
    out_dir = Path(out_dir)
    indices = pick_digits(test_split.labels)
    x = test_split.images[indices].to(device)
    start = time.perf_counter()
    exp = Counterfactual(model, **SETTINGS).explain(x)
    seconds = time.perf_counter() - start

    if train_split is None:
        from torchexplain.datasets import load_mnist

        train_split = load_mnist("train", root=data_root)
    start = time.perf_counter()
    proto_explainer = CounterfactualProto(model, **PROTO_SETTINGS)
    proto = proto_explainer.fit(train_split.images.to(device)).explain(x)
    proto_seconds = time.perf_counter() - start
    ae, _ = pretrained_mnist_autoencoder(data_root=data_root, retrain=retrain)
    ae = ae.to(device).eval()
    with torch.no_grad():
        ae_error = {
            name: (ae(e.counterfactual) - e.counterfactual).flatten(1).square().sum(1)
            for name, e in (("wachter", exp), ("proto", proto))
        }

    orig_proba = torch.softmax(exp.predictions, dim=1).gather(1, exp.target[:, None])[:, 0]
    rows, captions = [], []
    for i in range(len(indices)):
        original, found, guided = (
            x[i].cpu(),
            exp.counterfactual[i].cpu(),
            proto.counterfactual[i].cpu(),
        )
        rows.append(
            [original, found, heatmap(found - original), guided, heatmap(guided - original)]
        )
        captions.append(
            f"{int(exp.target[i])} (p={orig_proba[i].item():.2f}) | Wachter: {outcome(exp, i)} "
            f"AE {ae_error['wachter'][i].item():.1f} | prototype: {outcome(proto, i)} AE {ae_error['proto'][i].item():.1f}"
        )
    png = save_grid(
        rows,
        captions,
        out_dir / "counterfactuals.png",
        titles=["original", "Wachter", "difference", "prototype", "difference"],
    )
    summary = {
        "method": "Counterfactual (Wachter et al. 2017) and CounterfactualProto (Van Looveren & Klaise), batched",
        "test_indices": indices,
        "target": exp.target.tolist(),
        "cf_class": exp.cf_class.tolist(),
        "cf_proba": [round(p, 4) for p in exp.cf_proba.tolist()],
        "success": exp.success.tolist(),
        "l1_distance": [round(d, 3) for d in exp.l1_distance.tolist()],
        "n_iter": exp.n_iter.tolist(),
        "ae_error": [round(d, 3) for d in ae_error["wachter"].tolist()],
        "seconds": round(seconds, 2),
        "settings": SETTINGS,
        "proto": {
            "cf_class": proto.cf_class.tolist(),
            "cf_proba": [round(p, 4) for p in proto.cf_proba.tolist()],
            "success": proto.success.tolist(),
            "proto_class": proto.proto_class.tolist(),
            "l1_distance": [round(d, 3) for d in proto.l1_distance.tolist()],
            "n_iter": proto.n_iter.tolist(),
            "ae_error": [round(d, 3) for d in ae_error["proto"].tolist()],
            "seconds": round(proto_seconds, 2),
            "settings": {k: v for k, v in PROTO_SETTINGS.items()},
        },
        "png": str(png),
    }
    (out_dir / "counterfactuals.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def outcome(exp: Any, i: int) -> str:
    """``"6 p=0.99 L1 23.4"``, or what the closest attempt reached when none was found."""
    text = (
        f"{int(exp.cf_class[i])} p={exp.cf_proba[i].item():.2f} L1 {exp.l1_distance[i].item():.1f}"
    )
    return text if bool(exp.success[i]) else f"none ({text})"


if __name__ == "__main__":
    import argparse

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
