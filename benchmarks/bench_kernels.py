"""IG's own memory traffic: building the path and reducing the gradients along it.

Three providers per op, on the same inputs in one run:

- ``torchexplain``: the dispatch in :mod:`torchexplain.kernels.ig` (the Triton
  kernels on CUDA; skipped on the CPU, where the dispatch is the reference).
- ``reference``: the eager-PyTorch reference (:mod:`torchexplain.kernels.ig.reference`).
- ``captum_style``: the same work done the way Captum's ``IntegratedGradients``
  does it (captum 0.7-0.9, ``_attribute``): the path as a Python loop of
  ``baseline + alpha * (input - baseline)`` joined by ``torch.cat`` (step-major), and
  the reduction as ``grads.view(S, -1) * step_sizes`` summed over steps, then
  multiplied by ``(input - baseline)``.

Achieved bandwidth counts the bytes the op must move at least once (path: read x and
the baseline, write the path; reduce: read the gradients, x and the baseline, write
the float32 result), the same count for every provider, and is set against the
device's copy bandwidth measured in the same run (a large device-to-device copy,
read + write). On CUDA timings come from ``triton.testing.do_bench`` (median).

Usage:
    python benchmarks/bench_kernels.py --device cuda            # GPU runner
    python benchmarks/bench_kernels.py --device cpu --quick     # CPU smoke run
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import metadata, peak_memory, print_table, time_providers, write_results  # noqa: E402
from torchexplain.kernels import ig  # noqa: E402
from torchexplain.kernels.ig import reference  # noqa: E402

#: (name, per-example shape, N on a GPU / full run, N with --quick)
SIZES = [
    ("mnist_1x28x28", (1, 28, 28), 1024, 32),
    ("cifar_3x32x32", (3, 32, 32), 256, 8),
    ("3x64x64", (3, 64, 64), 64, 2),
    ("imagenet_3x224x224", (3, 224, 224), 16, 1),
]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def gauss_legendre(n_steps: int) -> tuple[list[float], list[float]]:
    """Alphas and step weights on [0, 1] (Captum's default rule), as Python lists."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return list(0.5 * weights), list(0.5 * (nodes + 1))


def captum_style_path(x: torch.Tensor, b: torch.Tensor, alphas: list[float]) -> torch.Tensor:
    return torch.cat([b + alpha * (x - b) for alpha in alphas], dim=0)


def captum_style_reduce(
    grads: torch.Tensor, step_sizes: list[float], x: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    n_steps = len(step_sizes)
    scaled = grads.contiguous().view(n_steps, -1) * torch.tensor(step_sizes).float().view(
        n_steps, 1
    ).to(grads.device)
    total = torch.sum(scaled.reshape((n_steps, x.shape[0]) + tuple(x.shape[1:])), dim=0)
    return total * (x - b)


def time_all(
    providers: dict[str, Callable[[], object]], device: torch.device, quick: bool
) -> dict[str, dict[str, float]]:
    """Median seconds per provider: do_bench on CUDA, the shared interleaved timer on CPU."""
    if device.type == "cuda":
        import triton.testing

        timings = {}
        for name, fn in providers.items():
            ms = triton.testing.do_bench(fn, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])
            timings[name] = {"median_s": ms[0] / 1e3, "p20_s": ms[1] / 1e3, "p80_s": ms[2] / 1e3}
        return timings
    return time_providers(providers, device, repeats=3 if quick else 7, warmup=1)


def copy_bandwidth(device: torch.device, quick: bool) -> float:
    """GB/s of a large device-to-device copy (bytes read + bytes written)."""
    n_bytes = (64 if quick else 256) * 2**20 if device.type == "cpu" else 2**30
    src = torch.randn(n_bytes // 4, device=device)
    dst = torch.empty_like(src)
    seconds = time_all({"copy": lambda: dst.copy_(src)}, device, quick)["copy"]["median_s"]
    return 2 * n_bytes / seconds / 1e9


def bench_size(
    name: str,
    shape: tuple[int, ...],
    n_rows: int,
    n_steps: int,
    dtype: torch.dtype,
    device: torch.device,
    copy_gbps: float,
    quick: bool,
) -> list[dict]:
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn((n_rows, *shape), generator=g, device=device).to(dtype)
    b = (0.1 * torch.randn((1, *shape), generator=g, device=device)).to(dtype)
    step_sizes, alphas_list = gauss_legendre(n_steps)
    compute = ig.accumulation_dtype(dtype)
    alphas = torch.tensor(alphas_list, dtype=compute, device=device)
    weights = torch.tensor(step_sizes, dtype=compute, device=device)
    x_flat, b_flat = x.view(n_rows, -1), b.view(1, -1)
    n_features = x_flat.shape[1]
    grads = torch.randn((n_rows, n_steps, n_features), generator=g, device=device).to(dtype)
    # Captum's gradients arrive step-major, (S * N, *shape); same values, its layout.
    grads_captum = grads.transpose(0, 1).reshape(n_steps * n_rows, *shape).contiguous()
    run_triton = device.type == "cuda" and ig.TRITON_AVAILABLE

    itemsize = x.element_size()
    path_bytes = (n_rows + 1) * n_features * itemsize + n_rows * n_steps * n_features * itemsize
    reduce_bytes = (n_rows * n_steps + n_rows + 1) * n_features * itemsize + n_rows * n_features * 4
    ops = {
        "path": (
            path_bytes,
            {
                "torchexplain": lambda: ig.build_path(x_flat, b_flat, alphas),
                "reference": lambda: reference.build_path(x_flat, b_flat, alphas),
                "captum_style": lambda: captum_style_path(x, b, alphas_list),
            },
        ),
        "reduce": (
            reduce_bytes,
            {
                "torchexplain": lambda: ig.reduce_path(grads, weights, x_flat, b_flat),
                "reference": lambda: reference.reduce_path(grads, weights, x_flat, b_flat),
                "captum_style": lambda: captum_style_reduce(grads_captum, step_sizes, x, b),
            },
        ),
    }
    rows = []
    for op, (n_bytes, providers) in ops.items():
        if not run_triton:
            providers.pop("torchexplain")
        timings = time_all(providers, device, quick)
        captum_s = timings["captum_style"]["median_s"]
        for provider, timing in timings.items():
            seconds = timing["median_s"]
            gbps = n_bytes / seconds / 1e9
            rows.append(
                {
                    "size": name,
                    "op": op,
                    "provider": provider,
                    "dtype": str(dtype).removeprefix("torch."),
                    "N": n_rows,
                    "steps": n_steps,
                    "D": n_features,
                    "bytes": n_bytes,
                    "median_ms": seconds * 1e3,
                    "GB/s": gbps,
                    "of_copy_bw": gbps / copy_gbps,
                    "speedup_vs_captum": captum_s / seconds,
                    # CUDA only: on the CPU the reading retunes the host allocator,
                    # which would slow every timing taken after it.
                    "peak_mem_MB": _mb(peak_memory(providers[provider], device))
                    if device.type == "cuda"
                    else None,
                    **{k: v for k, v in timing.items() if k != "median_s"},
                }
            )
    return rows


def _mb(n_bytes: int | None) -> float | None:
    return None if n_bytes is None else n_bytes / 2**20


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--out", default=None, help="JSON file or folder (default benchmarks/results/)"
    )
    parser.add_argument("--quick", action="store_true", help="small batches, few repeats")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--dtypes", default="float32", help=f"comma list of {', '.join(DTYPES)}")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    dtypes = [DTYPES[name] for name in args.dtypes.split(",")]

    copy_gbps = copy_bandwidth(device, args.quick)
    print(f"device copy bandwidth: {copy_gbps:.1f} GB/s (read + write)")
    rows = []
    for dtype in dtypes:
        for name, shape, n_full, n_quick in SIZES:
            n_rows = n_quick if args.quick else n_full
            rows += bench_size(
                name, shape, n_rows, args.steps, dtype, device, copy_gbps, args.quick
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
    columns = [
        "size",
        "op",
        "dtype",
        "N",
        "provider",
        "median_ms",
        "GB/s",
        "of_copy_bw",
        "speedup_vs_captum",
        "peak_mem_MB",
    ]
    print_table(rows, columns)
    meta = metadata(
        device,
        steps=args.steps,
        quick=args.quick,
        copy_bandwidth_gbps=copy_gbps,
        timer="triton.testing.do_bench median"
        if device.type == "cuda"
        else "_common.time_providers median",
        bytes_counted="minimal traffic of the op, identical for every provider",
        triton_kernels_run=device.type == "cuda" and ig.TRITON_AVAILABLE,
    )
    suffix = "-quick" if args.quick else ""
    path = write_results(f"bench_kernels{suffix}", {"meta": meta, "rows": rows}, args.out)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
