"""Integrated Gradients path and reduction as Triton kernels.

Both ops are memory-bound streams over the ``(N, S, D)`` path, so each kernel makes
exactly one pass over it:

- ``_ig_path_kernel`` reads every input and baseline element once and writes every
  path element once: ``path[n, k, d] = b[n, d] + alphas[k] * (x[n, d] - b[n, d])``.
- ``_ig_reduce_kernel`` reads every gradient once and writes (or adds into) the
  ``(N, D)`` result: ``out[n, d] (+)= (x[n, d] - b[n, d]) * sum_k weights[k] * g[n, k, d]``.

Each program owns one example ``n`` and a block of ``BLOCK_D`` features, and walks the
steps in tiles of ``BLOCK_S`` so several loads are in flight per thread. The number of
tiles is a compile-time constant (one compile per distinct ``ceil(S / BLOCK_S)``, in
practice one per IG configuration): a loop bounded by a runtime scalar breaks Triton's
CPU interpreter under numpy >= 2.4 (triton-lang/triton#9171), and a constant trip
count lets the compiler unroll. Arithmetic
and accumulation run in float32 for float32/float16/bfloat16 and in float64 for
float64, matching :mod:`torchexplain.kernels.ig.reference`. Tensors are addressed by
their strides (a baseline of one row is a row stride of 0), so non-contiguous inputs
cost no copy; Triton specialises unit strides, so the contiguous case is vectorised.

The launchers here run whatever device the tensors live on; choosing between Triton
and the reference is the job of :mod:`torchexplain.kernels.ig` alone.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl

#: dtypes the kernels take (inputs, baselines, grads, path).
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# Launch settings, all in one place.
MAX_BLOCK_D = 1024  # features per program (power of two)
MIN_BLOCK_D = 64  # never split rows finer than this
MAX_BLOCK_S = 16  # steps per tile (power of two)
TILE_ELEMENTS = 4096  # BLOCK_S * BLOCK_D target: enough loads in flight per thread
PROGRAMS_PER_SM = 4  # shrink BLOCK_D until the grid fills the GPU this many times over


@triton.jit
def _ig_path_kernel(
    x_ptr,
    b_ptr,
    alpha_ptr,
    out_ptr,
    S,
    D,
    stride_xn,
    stride_xd,
    stride_bn,
    stride_bd,
    stride_on,
    stride_os,
    stride_od,
    COMPUTE: tl.constexpr,
    STEP_TILES: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    col_mask = cols < D
    x = tl.load(x_ptr + row * stride_xn + cols * stride_xd, mask=col_mask, other=0.0)
    b = tl.load(b_ptr + row * stride_bn + cols * stride_bd, mask=col_mask, other=0.0)
    x = x.to(COMPUTE)
    b = b.to(COMPUTE)
    diff = x - b
    steps = tl.arange(0, BLOCK_S)
    # Pointers advance by whole tiles so step offsets stay small whatever the strides.
    out_tile = out_ptr + row * stride_on + steps[:, None] * stride_os + cols[None, :] * stride_od
    alpha_tile = alpha_ptr + steps
    for tile in range(STEP_TILES):
        step_mask = (tile * BLOCK_S + steps) < S
        alphas = tl.load(alpha_tile, mask=step_mask, other=0.0).to(COMPUTE)
        path = b[None, :] + alphas[:, None] * diff[None, :]
        tl.store(
            out_tile,
            path.to(out_ptr.dtype.element_ty),
            mask=step_mask[:, None] & col_mask[None, :],
        )
        out_tile += BLOCK_S * stride_os
        alpha_tile += BLOCK_S


@triton.jit
def _ig_reduce_kernel(
    g_ptr,
    w_ptr,
    x_ptr,
    b_ptr,
    out_ptr,
    S,
    D,
    stride_gn,
    stride_gs,
    stride_gd,
    stride_xn,
    stride_xd,
    stride_bn,
    stride_bd,
    stride_on,
    stride_od,
    HAS_DIFF: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    COMPUTE: tl.constexpr,
    OUT_COMPUTE: tl.constexpr,
    STEP_TILES: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    col_mask = cols < D
    steps = tl.arange(0, BLOCK_S)
    g_tile = g_ptr + row * stride_gn + steps[:, None] * stride_gs + cols[None, :] * stride_gd
    w_tile = w_ptr + steps
    acc = tl.zeros([BLOCK_D], dtype=COMPUTE)
    for tile in range(STEP_TILES):
        step_mask = (tile * BLOCK_S + steps) < S
        weights = tl.load(w_tile, mask=step_mask, other=0.0).to(COMPUTE)
        # Gradients are read exactly once: tell the cache not to keep them.
        grads = tl.load(
            g_tile,
            mask=step_mask[:, None] & col_mask[None, :],
            other=0.0,
            eviction_policy="evict_first",
        ).to(COMPUTE)
        acc += tl.sum(grads * weights[:, None], axis=0)
        g_tile += BLOCK_S * stride_gs
        w_tile += BLOCK_S
    if HAS_DIFF:
        x = tl.load(x_ptr + row * stride_xn + cols * stride_xd, mask=col_mask, other=0.0)
        b = tl.load(b_ptr + row * stride_bn + cols * stride_bd, mask=col_mask, other=0.0)
        acc = acc * (x.to(COMPUTE) - b.to(COMPUTE))
    out_ptrs = out_ptr + row * stride_on + cols * stride_od
    if ACCUMULATE:
        # Add in the wider of the two precisions (a float64 buffer may collect float32 chunks).
        acc = acc.to(OUT_COMPUTE) + tl.load(out_ptrs, mask=col_mask, other=0.0).to(OUT_COMPUTE)
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=col_mask)


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def launch_config(n_rows: int, n_steps: int, n_features: int, device: torch.device) -> dict:
    """Block sizes and warps for a (n_rows, n_steps, n_features) stream.

    ``BLOCK_D`` starts at the features rounded up to a power of two (capped), then
    halves while the grid would leave SMs idle (few examples, e.g. one 224x224 image);
    ``BLOCK_S`` fills the tile up to ``TILE_ELEMENTS``; warps follow the tile size at
    about 16 elements per thread; ``STEP_TILES`` covers the steps.
    """
    block_d = min(triton.next_power_of_2(max(n_features, 1)), MAX_BLOCK_D)
    if device.type == "cuda":
        target_programs = PROGRAMS_PER_SM * _sm_count(device.index or 0)
        while block_d > MIN_BLOCK_D and n_rows * triton.cdiv(n_features, block_d) < target_programs:
            block_d //= 2
    block_s = min(
        triton.next_power_of_2(max(n_steps, 1)), MAX_BLOCK_S, max(TILE_ELEMENTS // block_d, 1)
    )
    num_warps = min(max(block_s * block_d // 512, 1), 8)
    return {
        "STEP_TILES": triton.cdiv(n_steps, block_s),
        "BLOCK_S": block_s,
        "BLOCK_D": block_d,
        "num_warps": num_warps,
    }


def _compute_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _row_strides(t: torch.Tensor) -> tuple[int, int]:
    """(row, feature) strides of an (R, D) tensor; a single row broadcasts (stride 0)."""
    return (0 if t.shape[0] == 1 else t.stride(0)), t.stride(1)


def build_path(
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    alphas: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the path kernel; arguments and result as :func:`reference.build_path`.

    Shapes are assumed checked by the dispatch: inputs (N, D), baselines (N, D) or
    (1, D) of the same dtype and device, alphas (S,), out (N, S, D) in inputs.dtype.
    """
    n_rows, n_features = inputs.shape
    n_steps = alphas.shape[0]
    if out is None:
        out = torch.empty((n_rows, n_steps, n_features), dtype=inputs.dtype, device=inputs.device)
    if out.numel() == 0:
        return out
    compute = torch.float64 if inputs.dtype == torch.float64 else torch.float32
    alphas = alphas.to(device=inputs.device, dtype=compute).contiguous()
    config = launch_config(n_rows, n_steps, n_features, inputs.device)
    grid = (n_rows, triton.cdiv(n_features, config["BLOCK_D"]))
    with torch.cuda.device(inputs.device) if inputs.is_cuda else contextlib.nullcontext():
        _ig_path_kernel[grid](
            inputs,
            baselines,
            alphas,
            out,
            n_steps,
            n_features,
            *inputs.stride(),
            *_row_strides(baselines),
            *out.stride(),
            COMPUTE=_compute_dtype(inputs.dtype),
            **config,
        )
    return out


def reduce_path(
    grads: torch.Tensor,
    weights: torch.Tensor,
    inputs: torch.Tensor | None = None,
    baselines: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    accumulate: bool = False,
) -> torch.Tensor:
    """Launch the reduce kernel; arguments and result as :func:`reference.reduce_path`.

    Shapes are assumed checked by the dispatch: grads (N, S, D), weights (S,), inputs
    (N, D) and baselines (N, D) or (1, D) (both or neither), out (N, D) float32 or
    float64 (allocated in the accumulation dtype when None).
    """
    n_rows, n_steps, n_features = grads.shape
    compute = torch.float64 if grads.dtype == torch.float64 else torch.float32
    if out is None:
        out = torch.empty((n_rows, n_features), dtype=compute, device=grads.device)
        accumulate = False
    if out.numel() == 0:
        return out
    if n_steps == 0 and not accumulate:
        return out.zero_()
    weights = weights.to(device=grads.device, dtype=compute).contiguous()
    has_diff = inputs is not None
    if has_diff:
        x, b = inputs, baselines
        x_strides, b_strides = inputs.stride(), _row_strides(baselines)
    else:
        # Never read (HAS_DIFF is a compile-time False); any valid pointer will do.
        x, b = grads, grads
        x_strides, b_strides = (0, 0), (0, 0)
    config = launch_config(n_rows, n_steps, n_features, grads.device)
    grid = (n_rows, triton.cdiv(n_features, config["BLOCK_D"]))
    with torch.cuda.device(grads.device) if grads.is_cuda else contextlib.nullcontext():
        _ig_reduce_kernel[grid](
            grads,
            weights,
            x,
            b,
            out,
            n_steps,
            n_features,
            *grads.stride(),
            *x_strides,
            *b_strides,
            *out.stride(),
            HAS_DIFF=has_diff,
            ACCUMULATE=bool(accumulate),
            COMPUTE=_compute_dtype(grads.dtype),
            OUT_COMPUTE=tl.float64 if torch.float64 in (grads.dtype, out.dtype) else tl.float32,
            **config,
        )
    return out


class BuildPath(torch.autograd.Function):
    """The path kernel with its backward, which is the reduce kernel.

    ``d path[n, k, d] / d x[n, d] = alphas[k]`` and ``/ d b[n, d] = 1 - alphas[k]``, so
    the input gradient is ``sum_k alphas_k * grad[n, k, d]`` and the baseline gradient
    ``sum_k (1 - alphas_k) * grad[n, k, d]`` (summed over examples for a shared
    baseline): one pass each over the incoming gradient. ``alphas`` gets no gradient.
    """

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, baselines: torch.Tensor, alphas: torch.Tensor):
        ctx.save_for_backward(alphas)
        ctx.shared_baseline = baselines.shape[0] == 1
        ctx.dtypes = (inputs.dtype, baselines.dtype)
        return build_path(inputs, baselines, alphas)

    @staticmethod
    def backward(ctx, grad_path: torch.Tensor):
        (alphas,) = ctx.saved_tensors
        grad_inputs = grad_baselines = None
        if ctx.needs_input_grad[0]:
            grad_inputs = reduce_path(grad_path, alphas).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            grad_baselines = reduce_path(grad_path, 1 - alphas)
            if ctx.shared_baseline:
                grad_baselines = grad_baselines.sum(0, keepdim=True)
            grad_baselines = grad_baselines.to(ctx.dtypes[1])
        return grad_inputs, grad_baselines, None


def build_path_differentiable(
    inputs: torch.Tensor, baselines: torch.Tensor, alphas: torch.Tensor
) -> torch.Tensor:
    """:func:`build_path` recorded by autograd (gradients to inputs and baselines)."""
    return BuildPath.apply(inputs, baselines, alphas)
