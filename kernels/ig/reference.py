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


#: Bytes of float64 gradients widened at once by :func:`reduce_path`: a block stays
#: cache-sized instead of doubling the chunk's memory. Widening a whole 224x224x3 image
#: x 50 steps at once ran 23x slower than the float32 sum; in contiguous blocks copied
#: into one reused buffer, 3-6x (MNIST rows: 0.49 against 0.09 ms for 32 digits x 50 steps).
REDUCE_BLOCK_BYTES = 2 * 2**20


def reduction_dtype(device: torch.device) -> torch.dtype:
    """Where the weighted sum over steps is accumulated: float64 (one rounding at the
    end), except on devices without float64 (MPS), which sum in float32."""
    return torch.float32 if device.type == "mps" else torch.float64


def reduce_path(
    grads: torch.Tensor,
    weights: torch.Tensor,
    inputs: torch.Tensor | None = None,
    baselines: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    accumulate: bool = False,
) -> torch.Tensor:
    """``(input - baseline) * sum_k weights_k * grads_k``, correctly rounded.

    The products and their sum over steps, and the multiplication by ``input -
    baseline``, are computed in float64 and rounded once to the result dtype. A
    float32 sum (BLAS's or a pairwise one) is off by about an ulp in three results of
    four, so a gradient that is constant along the path (a piecewise-linear model
    between its kinks) did not give back ``(x - b) * g`` exactly; in float64 it does.

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
    result_dtype = accumulation_dtype(grads.dtype)
    wide = reduction_dtype(grads.device)
    total = _weighted_step_sum(grads, weights.to(device=grads.device, dtype=wide), wide)
    if inputs is not None:
        total *= inputs.to(wide) - baselines.to(wide)
    if out is None:
        return total.to(result_dtype)
    if accumulate:
        out.add_(total)
    else:
        out.copy_(total)
    return out


def _weighted_step_sum(
    grads: torch.Tensor, weights: torch.Tensor, wide: torch.dtype
) -> torch.Tensor:
    """``sum_k weights_k * grads[:, k]`` in ``wide``, widening cache-sized blocks.

    Blocks are whole examples where one fits the budget (one batched product per
    block), else a few steps of one example (a matrix-vector product added in).
    """
    n, s, d = grads.shape
    total = torch.empty((n, d), dtype=wide, device=grads.device)
    if grads.dtype == wide:
        # Nothing to widen: (S,) @ (N, S, D) reads grads in place (einsum copied all of
        # grads first and ran ~13x slower on CPU).
        return torch.matmul(weights, grads, out=total) if n else total
    size = torch.empty((), dtype=wide).element_size()
    per_example = s * d * size
    if per_example <= REDUCE_BLOCK_BYTES:
        rows = max(1, REDUCE_BLOCK_BYTES // max(per_example, 1))
        buffer = torch.empty((min(rows, n), s, d), dtype=wide, device=grads.device)
        row_weights = weights.view(1, 1, s)
        for e0 in range(0, n, rows):
            e1 = min(n, e0 + rows)
            block = buffer[: e1 - e0]
            block.copy_(grads[e0:e1])
            torch.matmul(
                row_weights.expand(e1 - e0, 1, s), block, out=total[e0:e1].view(e1 - e0, 1, d)
            )
        return total
    steps = max(1, REDUCE_BLOCK_BYTES // (d * size))
    buffer = torch.empty((min(steps, s), d), dtype=wide, device=grads.device)
    for e in range(n):
        row = total[e].zero_()
        for s0 in range(0, s, steps):
            s1 = min(s, s0 + steps)
            block = buffer[: s1 - s0]
            block.copy_(grads[e, s0:s1])
            row.addmv_(block.t(), weights[s0:s1])
    return total
