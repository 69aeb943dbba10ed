"""Batched counterfactual search against the same search run one instance at a time.

Alibi's ``Counterfactual`` (TensorFlow 1) cannot be installed beside this
torch, so the peer is Alibi's way of running the method: our own search called
on one instance at a time, with the same settings, on the same MNIST CNN
(``torchexplain.zoo.pretrained_mnist_cnn``) and the same test digits. The search
is deterministic, so both providers must agree instance by instance; the
benchmark reports that agreement beside the times.

For each N: seconds per instance, validity rate, mean L1 distance and mean
Adam steps per instance, for the batched search on the first N test digits and
for the one-at-a-time peer on the first ``min(N, --peer-max)`` of them (a
subset when the peer would take too long; the JSON says which). Distance and
validity are compared on the instances both providers ran.

    python benchmarks/bench_counterfactual.py --device cpu --quick
    python benchmarks/bench_counterfactual.py --device cuda          # N = 16, 256, 1024
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import metadata, print_table, steady_host_allocator, sync, write_results  # noqa: E402

from torchexplain import counterfactual  # noqa: E402
from torchexplain.counterfactual import _CPU_CHUNK as CPU_CHUNK  # noqa: E402
from torchexplain.datasets import load_mnist  # noqa: E402
from torchexplain.zoo import pretrained_mnist_cnn  # noqa: E402


def timed(fn: Any, device: torch.device) -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def one_at_a_time(
    model: Any, images: torch.Tensor, indices: range, settings: dict, device: torch.device
) -> tuple[list[Any], float]:
    """The peer: the same search called on one instance at a time; results and total seconds."""
    results, total = [], 0.0
    for i in indices:
        single, seconds = timed(lambda i=i: counterfactual(model, images[i : i + 1], **settings), device)
        results.append(single)
        total += seconds
    return results, total


def step_cost(model: Any, images: torch.Tensor, rows: int, device: torch.device, repeats: int = 7) -> float:
    """Seconds per image of the floor step: one forward and one input-gradient backward.

    The search's every Adam step on an instance costs at least this (the model's
    part of the loss gradient), so ``mean n_iter x step_cost`` bounds any search
    doing the same steps, batched or not.
    """
    x = images[:rows].repeat(-(-rows // images.shape[0]), 1, 1, 1)[:rows].clone()

    def once() -> None:
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xr).softmax(1).amax(1).sum(), xr)

    for _ in range(2):
        once()
    times = []
    for _ in range(repeats):
        _, seconds = timed(once, device)
        times.append(seconds)
    return statistics.median(times) / rows


def summary(exp: Any) -> dict[str, float]:
    return {
        "validity": exp.success.float().mean().item(),
        "mean_l1": exp.l1_distance.mean().item(),
        "mean_iter": exp.n_iter.float().mean().item(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="JSON file or folder (default benchmarks/results/)")
    parser.add_argument("--quick", action="store_true",
                        help="CPU-sized run: N = 16 and 256, max_lam_steps=3, peer on 8 instances")
    parser.add_argument("--sizes", default=None, help="comma-separated N (default 16,256 and 1024 on CUDA)")
    parser.add_argument("--peer-max", type=int, default=None,
                        help="most instances the one-at-a-time peer runs per N (default 32, 8 with --quick); "
                             "its cost per instance does not depend on N")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of the batched search (median)")
    parser.add_argument("--max-lam-steps", type=int, default=None)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    host_allocator = steady_host_allocator(device)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [16, 256] if args.quick or device.type == "cpu" else [16, 256, 1024]
    )
    peer_max = args.peer_max if args.peer_max is not None else (8 if args.quick else 32)
    repeats = args.repeats or (1 if args.quick else 3)
    settings = {  # the library's defaults, with fewer lambda rounds for a CPU run
        "target_class": "other", "target_proba": 1.0, "tol": 0.05, "lam_init": 0.1,
        "max_lam_steps": args.max_lam_steps or (3 if args.quick else 10), "max_iter": 1000,
        "learning_rate_init": 0.1, "feature_range": (0.0, 1.0), "early_stop": 50,
    }

    model, _ = pretrained_mnist_cnn()
    model = model.to(device).eval()
    test = load_mnist("test")
    images = test.images[: max(sizes)].to(device)

    # Warm-up: kernels, allocator, thread pools.
    counterfactual(model, images[:2], **{**settings, "max_lam_steps": 1, "max_iter": 60})
    counterfactual(model, images[:1], **{**settings, "max_lam_steps": 1, "max_iter": 60})

    rows = []
    for n in sizes:
        x = images[:n]
        n_peer = min(n, peer_max)
        # The peer runs half its instances before the batched search and half
        # after, so a change in machine load during the run hits both alike.
        first_half, first_s = one_at_a_time(model, images, range(0, n_peer // 2), settings, device)
        batched_times = []
        for _ in range(repeats):
            exp, seconds = timed(lambda x=x: counterfactual(model, x, **settings), device)
            batched_times.append(seconds)
        batched_s = statistics.median(batched_times)
        second_half, second_s = one_at_a_time(model, images, range(n_peer // 2, n_peer), settings, device)
        singles, peer_s = first_half + second_half, first_s + second_s

        on_common = {key: exp.data[key][:n_peer] for key in ("success", "l1_distance", "n_iter")}
        peer_l1 = torch.cat([s.l1_distance for s in singles])
        peer_success = torch.cat([s.success for s in singles])
        peer_iter = torch.cat([s.n_iter for s in singles])
        batched_common_l1 = on_common["l1_distance"].mean().item()
        row = {
            "N": n,
            "batched_s_per_instance": batched_s / n,
            "batched_total_s": batched_s,
            "batched_repeats_s": batched_times,
            **{f"batched_{k}": v for k, v in summary(exp).items()},
            "peer_instances": n_peer,
            "peer_s_per_instance": peer_s / n_peer,
            "peer_total_s": peer_s,
            "peer_validity": peer_success.float().mean().item(),
            "peer_mean_l1": peer_l1.mean().item(),
            "peer_mean_iter": peer_iter.float().mean().item(),
            "batched_validity_on_peer_instances": on_common["success"].float().mean().item(),
            "batched_mean_l1_on_peer_instances": batched_common_l1,
            "l1_ratio_batched_over_peer": batched_common_l1 / peer_l1.mean().item(),
            "same_success_as_peer": bool((on_common["success"].cpu() == peer_success.cpu()).all()),
            "max_abs_l1_diff_vs_peer": (on_common["l1_distance"].cpu() - peer_l1.cpu()).abs().max().item(),
            "speedup_per_instance": (peer_s / n_peer) / (batched_s / n),
        }
        # The floor: the model's forward+backward for every Adam step the search took,
        # at the batched search's chunk size (and at 1 image, the peer's).
        chunk = n if device.type == "cuda" else min(n, CPU_CHUNK)
        floor_batched = summary(exp)["mean_iter"] * step_cost(model, images, chunk, device)
        floor_single = peer_iter.float().mean().item() * step_cost(model, images, 1, device)
        row.update({
            "floor_s_per_instance": floor_batched,
            "floor_one_image_s_per_instance": floor_single,
            "batched_over_floor": (batched_s / n) / floor_batched,
            "most_possible_speedup": (peer_s / n_peer) / floor_batched,
        })
        rows.append(row)
        print_table([row], ["N", "batched_s_per_instance", "peer_s_per_instance", "floor_s_per_instance",
                            "speedup_per_instance", "most_possible_speedup",
                            "batched_validity", "peer_validity", "batched_mean_l1", "peer_mean_l1",
                            "l1_ratio_batched_over_peer", "batched_mean_iter", "peer_mean_iter"])
        sys.stdout.flush()

    payload = {
        "meta": metadata(
            device, benchmark="counterfactual", model="torchexplain.zoo.MnistCNN (pretrained_mnist_cnn)",
            data=f"first N digits of load_mnist('test') ({test.source})", settings=settings,
            quick=args.quick, repeats_batched=repeats, repeats_peer=1, host_allocator=host_allocator,
            floor="mean Adam steps per instance x (forward + input-gradient backward of the model per "
                  "image, at the batched chunk size); most_possible_speedup = peer time / that floor",
            peer="the same search called on one instance at a time (Alibi's way; Alibi itself is "
                 "TensorFlow 1 and not installable here)",
            peer_subset_note=(
                f"the peer ran on the first min(N, {peer_max}) instances of each N; its time per "
                "instance, validity and distance are over those, and the batched search's "
                "*_on_peer_instances fields are over the same instances. Half the peer's instances "
                "run just before the batched search and half just after, against load drift."
            ),
        ),
        "results": rows,
    }
    path = write_results("counterfactual", payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
