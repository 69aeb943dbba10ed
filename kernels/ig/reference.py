"""Integrated Gradients path and reduction in plain PyTorch.

These two ops are IG's own work beyond the model: building the straight-line path
from baseline to input, and reducing the gradients along it. They are the CPU
implementation and the oracle the Triton kernels are tested against.

Layout: the path is example-major, ``(N, S, D)``: row ``i * S + k`` of the
flattened ``(N * S, D)`` batch is example ``i`` at step ``k``.
"""

from __future__ import annotations

import torch


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (float32, float16, bfloat16) sums in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def build_path(
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    alphas: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Points ``baseline + alpha_k * (input - baseline)`` for every example and step.

    Args:
        inputs: (N, D).
        baselines: (N, D) or (1, D), same dtype as ``inputs``.
        alphas: (S,) step positions in [0, 1].
        out: optional (N, S, D) buffer, in ``inputs.dtype``, to write into.

    Returns:
        (N, S, D) in ``inputs.dtype``. Half-precision paths are computed in float32
        and rounded once.
    """
    compute = accumulation_dtype(inputs.dtype)
    x = inputs.to(compute).unsqueeze(1)
    b = baselines.to(compute).unsqueeze(1)
    a = alphas.to(compute).view(1, -1, 1)
    if out is not None and out.dtype == compute:
        # Written in place: one pass over the path, no temporary of its size.
        return torch.addcmul(b, a, x - b, out=out)
    path = torch.addcmul(b, a, x - b)
    if out is None:
        return path.to(inputs.dtype)
    out.copy_(path)
    return out


def reduce_path(
    grads: torch.Tensor,
    weights: torch.Tensor,
    inputs: torch.Tensor | None = None,
    baselines: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    accumulate: bool = False,
) -> torch.Tensor:
    """``(input - baseline) * sum_k weights_k * grads_k``, summed in float32 (or float64).

    Args:
        grads: (N, S, D) gradients of the target score at the path points.
        weights: (S,) quadrature weights of the steps.
        inputs, baselines: (N, D) and (N, D) or (1, D). Both None: the plain weighted
            gradient sum (IG without multiplying by inputs).
        out: optional (N, D) buffer in the accumulation dtype.
        accumulate: add into ``out`` instead of overwriting it, so a chunked IG can
            sum partial step ranges into one buffer.

    Returns:
        (N, D) in the accumulation dtype (float64 for float64 grads, else float32).
    """
    if (inputs is None) != (baselines is None):
        raise ValueError("pass both inputs and baselines, or neither")
    compute = accumulation_dtype(grads.dtype)
    # (S,) @ (N, S, D) -> (N, D): a batched vector-matrix product reads grads in place;
    # einsum("nsd,s->nd") copied all of grads first and ran ~13x slower on CPU.
    total = torch.matmul(weights.to(compute), grads.to(compute))
    if inputs is not None:
        total = total * (inputs.to(compute) - baselines.to(compute))
    if out is None:
        return total
    if accumulate:
        out.add_(total)
    else:
        out.copy_(total)
    return out
