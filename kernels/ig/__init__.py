"""Integrated Gradients path building and gradient reduction.

``build_path`` and ``reduce_path`` are the dispatch points IG calls. Each makes one
explicit choice: the Triton kernels (:mod:`.triton`) for CUDA tensors when Triton is
importable, otherwise the plain-PyTorch reference (:mod:`.reference`).
``force_reference=True`` is the user's way to keep the reference; there is no
environment-variable switch. Triton is optional: without it this package imports and
everything runs on the reference.

Under autograd (grad mode on and an argument requiring grad) ``build_path`` runs
the path kernel as a ``torch.autograd.Function`` whose backward is the reduce kernel;
``reduce_path``, and ``build_path`` into an ``out`` buffer, take the reference there.
IG builds the path and reduces gradients outside autograd, so it never needs either.
"""

from __future__ import annotations

import torch
from torchexplain.kernels.ig import reference
from torchexplain.kernels.ig.reference import accumulation_dtype, reduction_dtype

try:
    from torchexplain.kernels.ig import triton as triton_ops
except ImportError:  # Triton is an optional dependency.
    triton_ops = None

__all__ = [
    "TRITON_AVAILABLE",
    "accumulation_dtype",
    "build_path",
    "reduce_path",
    "reduction_dtype",
    "uses_triton",
]

#: True when the Triton kernels could be imported (they still only run on CUDA tensors).
TRITON_AVAILABLE = triton_ops is not None


def uses_triton(*tensors: torch.Tensor | None, force_reference: bool = False) -> bool:
    """Whether the Triton kernels can take ``tensors`` (CUDA, supported dtypes, Triton present)."""
    present = [t for t in tensors if t is not None]
    if force_reference or triton_ops is None:
        return False
    if not all(t.is_cuda for t in present):
        return False
    return all(t.dtype in triton_ops.SUPPORTED_DTYPES for t in present)


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _check_rows(name: str, t: torch.Tensor, n_rows: int, n_features: int) -> None:
    if t.dim() != 2 or t.shape[1] != n_features or t.shape[0] not in (1, n_rows):
        raise ValueError(
            f"{name} must have shape ({n_rows}, {n_features}) or (1, {n_features}), "
            f"got {tuple(t.shape)}"
        )


def _check_float_on_device(name: str, t: torch.Tensor, like: torch.Tensor, like_name: str) -> None:
    # Mixed floating dtypes are fine: every operand is cast to the compute dtype.
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {t.dtype}")
    if t.device != like.device:
        raise ValueError(
            f"{name} must be on the device of {like_name} ({like.device}), got {t.device}"
        )


def _check_steps(name: str, t: torch.Tensor, n_steps: int | None = None) -> None:
    if t.dim() != 1 or (n_steps is not None and t.shape[0] != n_steps):
        expected = "(S,)" if n_steps is None else f"({n_steps},)"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)}")


def _check_out(
    t: torch.Tensor,
    shape: tuple[int, ...],
    dtypes: tuple[torch.dtype, ...],
    device: torch.device,
) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"out must have shape {shape}, got {tuple(t.shape)}")
    if t.dtype not in dtypes:
        expected = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"out must have dtype {expected}, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"out must be on {device}, got {t.device}")


def build_path(
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    alphas: torch.Tensor,
    out: torch.Tensor | None = None,
    force_reference: bool = False,
) -> torch.Tensor:
    """Points ``baseline + alpha_k * (input - baseline)``, example-major.

    Args:
        inputs: (N, D) floating point.
        baselines: (N, D) or (1, D) on the device of ``inputs`` (cast to its compute dtype).
        alphas: (S,) step positions (moved to the device and compute dtype if needed).
        out: optional (N, S, D) buffer in ``inputs.dtype`` to write into.
        force_reference: run the plain-PyTorch reference even on CUDA.

    Returns:
        (N, S, D) in ``inputs.dtype``; row ``i * S + k`` of its ``(N * S, D)`` view is
        example ``i`` at step ``k``. Half precision is computed in float32 and rounded once.

    Examples:
        >>> x, b = torch.ones(2, 3), torch.zeros(1, 3)
        >>> build_path(x, b, torch.tensor([0.25, 1.0]))[1, 0]
        tensor([0.2500, 0.2500, 0.2500])
    """
    if inputs.dim() != 2:
        raise ValueError(f"inputs must have shape (N, D), got {tuple(inputs.shape)}")
    n_rows, n_features = inputs.shape
    _check_rows("baselines", baselines, n_rows, n_features)
    _check_float_on_device("inputs", inputs, inputs, "inputs")
    _check_float_on_device("baselines", baselines, inputs, "inputs")
    _check_steps("alphas", alphas)
    if out is not None:
        _check_out(out, (n_rows, alphas.shape[0], n_features), (inputs.dtype,), inputs.device)
    if uses_triton(inputs, baselines, out, force_reference=force_reference):
        if not _needs_grad(inputs, baselines, alphas, out):
            return triton_ops.build_path(inputs, baselines, alphas, out=out)
        if out is None and not alphas.requires_grad:
            return triton_ops.build_path_differentiable(inputs, baselines, alphas)
    return reference.build_path(inputs, baselines, alphas.to(inputs.device), out=out)


def reduce_path(
    grads: torch.Tensor,
    weights: torch.Tensor,
    inputs: torch.Tensor | None = None,
    baselines: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    accumulate: bool = False,
    force_reference: bool = False,
) -> torch.Tensor:
    """``(input - baseline) * sum_k weights_k * grads_k`` in one pass over ``grads``.

    Args:
        grads: (N, S, D) gradients at the path points (any strides).
        weights: (S,) quadrature weights of the steps.
        inputs, baselines: (N, D) and (N, D) or (1, D) on the device of ``grads``;
            both None gives the plain weighted gradient sum.
        out: optional (N, D) float32 or float64 buffer (normally the accumulation
            dtype: float64 for float64 grads, float32 otherwise); a wider ``out`` is
            added to in its own precision.
        accumulate: add into ``out`` instead of overwriting it, so chunks of steps or
            examples sum into one buffer with no temporaries.
        force_reference: run the plain-PyTorch reference even on CUDA.

    Returns:
        (N, D) in the accumulation dtype, or ``out`` when given.

    Examples:
        >>> grads = torch.ones(1, 4, 2)
        >>> reduce_path(grads, torch.full((4,), 0.25), torch.full((1, 2), 3.0), torch.zeros(1, 2))
        tensor([[3., 3.]])
    """
    if (inputs is None) != (baselines is None):
        raise ValueError("pass both inputs and baselines, or neither")
    if grads.dim() != 3:
        raise ValueError(f"grads must have shape (N, S, D), got {tuple(grads.shape)}")
    n_rows, n_steps, n_features = grads.shape
    _check_steps("weights", weights, n_steps)
    if inputs is not None:
        if tuple(inputs.shape) != (n_rows, n_features):
            raise ValueError(
                f"inputs must have shape ({n_rows}, {n_features}) to match grads, got {tuple(inputs.shape)}"
            )
        _check_rows("baselines", baselines, n_rows, n_features)
        _check_float_on_device("inputs", inputs, grads, "grads")
        _check_float_on_device("baselines", baselines, grads, "grads")
    if out is not None:
        # A float64 buffer may collect float32 chunks (IG over inputs of mixed dtypes).
        _check_out(out, (n_rows, n_features), (torch.float32, torch.float64), grads.device)
    if uses_triton(
        grads, inputs, baselines, out, force_reference=force_reference
    ) and not _needs_grad(grads, weights, inputs, baselines, out):
        return triton_ops.reduce_path(
            grads, weights, inputs, baselines, out=out, accumulate=accumulate
        )
    return reference.reduce_path(
        grads, weights.to(grads.device), inputs, baselines, out=out, accumulate=accumulate
    )
