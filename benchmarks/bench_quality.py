"""Explanation-quality metrics and TrustScore against their peers and floors, in one run.

- ``infidelity``: 64 MNIST test digits, IG attributions (50 steps), 10 Gaussian perturbations
  per digit (std 0.1, the global generator seeded before each provider, so all draw the same
  noise): ``torchexplain.metrics.infidelity`` against ``captum.metrics.infidelity``; the floor is
  the model alone on the 640 perturbed digits.
- ``sensitivity_max``: the same digits, IG with 16 steps as the explanation function, 10 uniform
  perturbations (radius 0.02): ours against Captum's; the floor is the explanation function's
  own calls (the digits and their 640 perturbations).
- ``deletion``: the deletion curve and its area for the 64 digits, 28 steps of 28 pixels: ours (one
  batched pass) against a plain loop (one model call per digit and step, as a reference
  implementation on numpy would make) and Quantus 0.6's ``PixelFlipping`` (28 pixels a step,
  given ``--quantus-python``: an interpreter with quantus; the docs say how it was made); the
  floor is the model alone on the same 1,856 rows, in the best of one call, 32-row and 128-row
  calls.
- ``trust_score``: fit + score on the census table (30,000 training rows, 2,561 test rows,
  12 columns), no filter and ``distance_knn`` (alpha 0.1): ours against Alibi 0.9.6's
  ``TrustScore`` in its own environment (``tests/_venvs.py``), the same data, the values checked
  equal.

Usage: ``python benchmarks/bench_quality.py --device cpu|cuda [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import metadata, print_table, sync, time_providers, write_results  # noqa: E402

import torchexplain  # noqa: E402
from torchexplain import metrics  # noqa: E402
from torchexplain.datasets import load_census, load_mnist  # noqa: E402
from torchexplain.trust import TrustScore  # noqa: E402
from torchexplain.zoo import pretrained_mnist_cnn  # noqa: E402

N_PERTURB = 10


def _noise(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    noise = torch.randn_like(inputs) * 0.1
    return noise, inputs - noise


def _seeded(fn, seed: int = 0):
    def run():
        torch.manual_seed(seed)
        return fn()

    return run


def bench_infidelity(model, digits, repeats, device) -> dict:
    import captum.metrics

    target = model(digits).argmax(1)
    attributions = (
        torchexplain.IntegratedGradients(model).explain(digits, target=target).attributions
    )
    torch.manual_seed(0)
    perturbed = torch.cat([_noise(digits.repeat_interleave(N_PERTURB, 0))[1]])

    def floor():
        with torch.no_grad():
            return model(perturbed)

    providers = {
        "torchexplain": _seeded(
            lambda: metrics.infidelity(model, _noise, digits, attributions, target=target)
        ),
        "captum": _seeded(
            lambda: captum.metrics.infidelity(model, _noise, digits, attributions, target=target)
        ),
        "floor": floor,
    }
    timings = time_providers(providers, device, repeats=repeats)
    ours, theirs = providers["torchexplain"](), providers["captum"]()
    return {
        "method": "infidelity",
        "config": f"{len(digits)} MNIST digits x {N_PERTURB} perturbations, IG attributions",
        "providers": timings,
        "max_abs_difference": float((ours - theirs).abs().max()),
        "ratio_vs_floor": timings["torchexplain"]["median_s"] / timings["floor"]["median_s"],
    }


def bench_sensitivity(model, digits, repeats, device) -> dict:
    import captum.attr
    import captum.metrics
    from captum.metrics._core.sensitivity import default_perturb_func

    target = model(digits).argmax(1)
    ig = captum.attr.IntegratedGradients(model)

    def explain(inputs, target=None):
        return ig.attribute(inputs, target=target, n_steps=16)

    torch.manual_seed(0)
    perturbed = default_perturb_func(digits.repeat_interleave(N_PERTURB, 0), 0.02)[0]
    expanded_target = target.repeat_interleave(N_PERTURB)

    def floor():
        explain(digits, target=target)
        return explain(perturbed, target=expanded_target)

    kwargs = dict(perturb_func=default_perturb_func, target=target, n_perturb_samples=N_PERTURB)
    providers = {
        "torchexplain": _seeded(lambda: metrics.sensitivity_max(explain, digits, **kwargs)),
        "captum": _seeded(lambda: captum.metrics.sensitivity_max(explain, digits, **kwargs)),
        "floor": floor,
    }
    timings = time_providers(providers, device, repeats=repeats)
    ours, theirs = providers["torchexplain"](), providers["captum"]()
    return {
        "method": "sensitivity_max",
        "config": f"{len(digits)} MNIST digits x {N_PERTURB} perturbations, IG (16 steps)",
        "providers": timings,
        "max_abs_difference": float((ours - theirs).abs().max()),
        "ratio_vs_floor": timings["torchexplain"]["median_s"] / timings["floor"]["median_s"],
    }


def _quantus(python: str | None, digits, attributions, target, repeats: int, step: int) -> dict:
    """Quantus' PixelFlipping on the same digits and attributions, in the interpreter given."""
    if not python:
        return {"quantus": "not measured: give --quantus-python (an environment with quantus 0.6)"}
    folder = Path(tempfile.mkdtemp())
    np.save(folder / "x.npy", digits.cpu().numpy())
    np.save(folder / "a.npy", attributions.detach().cpu().numpy())
    np.save(folder / "y.npy", target.cpu().numpy())
    result = subprocess.run(
        [python, "-c", QUANTUS_DELETION, str(folder), str(repeats), str(step)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        return {"quantus": f"failed: {result.stderr[-400:]}"}
    return json.loads(result.stdout.splitlines()[-1])


def bench_deletion(model, digits, repeats, device, n_steps: int = 28, quantus_python=None) -> dict:
    attributions = torchexplain.IntegratedGradients(model).explain(digits).attributions
    curve = metrics.deletion_curve(
        model, digits, attributions, n_steps=n_steps, model_output="logits"
    )
    b, steps = curve.scores.shape
    flat = attributions.reshape(b, -1)
    order = torch.argsort(flat.double(), dim=1, descending=True, stable=True)
    counts = (curve.fractions * flat.shape[1]).round().long().tolist()
    target = model(digits).argmax(1)

    def loop():
        areas = []
        with torch.no_grad():
            for i in range(b):
                scores = []
                for count in counts:
                    image = digits[i].clone().reshape(-1)
                    image[order[i, :count]] = 0.0
                    probabilities = torch.softmax(model(image.view(1, *digits.shape[1:])), 1)
                    scores.append(float(probabilities[0, target[i]]))
                areas.append(float(np.trapezoid(scores, curve.fractions.numpy())))
        return torch.tensor(areas, dtype=torch.float64)

    rows = digits.repeat(steps, 1, 1, 1)

    def floor_in(chunk: int):
        def run():
            with torch.no_grad():
                return [model(part) for part in rows.split(chunk)]

        return run

    providers = {
        "torchexplain": lambda: (
            metrics.deletion_curve(
                model, digits, attributions, n_steps=n_steps, model_output="logits"
            ).auc
        ),
        "plain loop": loop,
        # this CNN runs fastest per row in small calls on the CPU (cache): the floor is the best
        "floor (one call)": floor_in(len(rows)),
        "floor (32-row calls)": floor_in(32),
        "floor (128-row calls)": floor_in(128),
    }
    timings = time_providers(providers, device, repeats=repeats)
    best = min((k for k in timings if k.startswith("floor")), key=lambda k: timings[k]["median_s"])
    timings["floor"] = dict(timings[best], source=best)
    entry = {
        "method": "deletion",
        "config": f"{b} MNIST digits x {steps} steps of pixels",
        "providers": timings,
        "max_abs_difference": float((providers["torchexplain"]() - loop()).abs().max()),
        "ratio_vs_floor": timings["torchexplain"]["median_s"] / timings["floor"]["median_s"],
    }
    # Quantus flips 784 / 28 = 28 pixels a step (it needs a step that divides the pixels)
    step = flat.shape[1] // n_steps
    peer = _quantus(quantus_python, digits, attributions, target, repeats, step)
    if "median_s" in peer:
        timings["quantus"] = {
            "median_s": peer["median_s"],
            "min_s": peer["median_s"],
            "max_s": peer["median_s"],
            "repeats": repeats,
        }
        entry["quantus_version"] = peer["quantus"]
        entry["speedup_vs_quantus"] = peer["median_s"] / timings["torchexplain"]["median_s"]
        theirs = torch.tensor(peer["curves"], dtype=torch.float64)  # (B, 28): after each step
        ours = metrics.deletion_curve(
            model, digits, attributions, n_steps=n_steps, model_output="logits"
        )
        entry["max_abs_difference_of_curves_vs_quantus"] = float(
            (ours.scores[:, 1:] - theirs).abs().max()
        )
        entry["quantus_note"] = (
            "PixelFlipping with 28 pixels a step: the same ranking and baseline; it returns the "
            "scores after each step (ours also has the unperturbed point first)"
        )
    else:
        entry.update(peer)
    return entry


QUANTUS_DELETION = r"""
import json, sys, time
import numpy as np
import quantus, torch
from torchexplain.datasets import load_mnist
from torchexplain.zoo import pretrained_mnist_cnn
folder, repeats, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model, _ = pretrained_mnist_cnn()
model.eval()
x = np.load(f"{folder}/x.npy"); a = np.load(f"{folder}/a.npy"); y = np.load(f"{folder}/y.npy")
# its AUC calls np.trapz, gone in numpy 2.4: take the curves and integrate them here
metric = quantus.PixelFlipping(features_in_step=step, perturb_baseline="black", disable_warnings=True)
times = []
for _ in range(repeats + 1):
    start = time.perf_counter()
    curves = metric(model=model, x_batch=x, y_batch=y, a_batch=a, device="cpu", softmax=True, batch_size=len(x))
    times.append(time.perf_counter() - start)
curves = np.asarray(curves)
print(json.dumps({"median_s": sorted(times[1:])[len(times[1:]) // 2], "quantus": quantus.__version__,
                  "curves": curves.tolist()}))
"""

ALIBI_TRUST = r"""
import json, sys, time
import numpy as np
from alibi.confidence import TrustScore
folder = sys.argv[1]
X, y, Xt, pred = (np.load(f"{folder}/{n}.npy") for n in ("X", "y", "Xt", "pred"))
out = {}
for name, options in json.loads(sys.argv[2]).items():
    times = []
    for _ in range(int(sys.argv[3])):
        start = time.perf_counter()
        ts = TrustScore(**options)
        ts.fit(X, y, classes=2)
        score, closest = ts.score(Xt, pred, k=2)
        times.append(time.perf_counter() - start)
    np.save(f"{folder}/{name}.npy", score)
    out[name] = sorted(times)[len(times) // 2]
print(json.dumps(out))
"""


def bench_trust(repeats, device) -> list[dict]:
    data = load_census()
    X, y, Xt = data.X_train.astype(np.float64), data.y_train, data.X_test.astype(np.float64)
    pred = (Xt[:, 9] > 0).astype(np.int64)  # any predicted classes will do; these are fixed
    settings = {"no_filter": {}, "distance_knn": {"filter_type": "distance_knn", "alpha": 0.1}}
    rows = []
    peer = {}
    folder = Path(tempfile.mkdtemp())
    try:
        sys.path.insert(0, str(Path(__file__).parents[1]))  # the checkout, for tests/_venvs.py
        from tests import _venvs

        python = _venvs.ready("alibi")
    except Exception as err:  # noqa: BLE001 - any failure means: no peer in this run
        python = f"{type(err).__name__}: {err}"
    if not isinstance(python, str):
        for name, array in (("X", X), ("y", y), ("Xt", Xt), ("pred", pred)):
            np.save(folder / f"{name}.npy", array)
        result = subprocess.run(
            [str(python), "-c", ALIBI_TRUST, str(folder), json.dumps(settings), str(repeats)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode == 0:
            peer = json.loads(result.stdout.splitlines()[-1])
        else:
            python = result.stderr[-400:]
    for name, options in settings.items():

        def ours(options=options):
            ts = TrustScore(device=device, **options).fit(X, y, classes=2)
            return ts.score(Xt, pred, k=2).score

        timings = time_providers({"torchexplain": ours}, device, repeats=repeats, warmup=1)
        entry = {
            "method": "trust_score",
            "config": f"census fit+score, {name}",
            "providers": timings,
        }
        if name in peer:
            seconds = peer[name]
            timings["alibi"] = {
                "median_s": seconds,
                "min_s": seconds,
                "max_s": seconds,
                "repeats": repeats,
            }
            theirs = np.load(folder / f"{name}.npy")
            entry["max_rel_difference"] = float(
                np.nanmax(np.abs(ours().numpy() - theirs) / np.maximum(np.abs(theirs), 1e-300))
            )
            entry["speedup_vs_alibi"] = seconds / timings["torchexplain"]["median_s"]
        else:
            entry["alibi"] = python if isinstance(python, str) else "not measured"
        rows.append(entry)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--digits", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true", help="16 digits, 2 repeats")
    parser.add_argument(
        "--quantus-python",
        default=None,
        help="an interpreter with quantus 0.6 (and torch, torchexplain) for the deletion peer",
    )
    args = parser.parse_args()
    if args.quick:
        args.digits, args.repeats = 16, 2
    device = torch.device(args.device)
    model, _ = pretrained_mnist_cnn()
    model = model.to(device).eval()
    digits = load_mnist("test").images[: args.digits].to(device)
    results = [
        bench_infidelity(model, digits, args.repeats, device),
        bench_sensitivity(model, digits, args.repeats, device),
        bench_deletion(model, digits, args.repeats, device, quantus_python=args.quantus_python),
        *bench_trust(args.repeats, device),
    ]
    sync(device)
    payload = {
        "meta": metadata(device, digits=args.digits, n_perturb_samples=N_PERTURB),
        "results": results,
    }
    path = write_results("bench_quality", payload, args.out)
    table = [
        {"config": e["config"], "provider": name, "median_s": t["median_s"]}
        for e in results
        for name, t in e["providers"].items()
    ]
    print_table(table, ["config", "provider", "median_s"])
    print(path)


if __name__ == "__main__":
    main()
