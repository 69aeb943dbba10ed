"""Integrated Gradients path building and gradient reduction.

``build_path`` and ``reduce_path`` are the dispatch points IG calls. Today both run
the plain-PyTorch reference on every device; a Triton implementation for CUDA
tensors plugs in here, and ``force_reference=True`` keeps the reference.
"""

from __future__ import annotations

import torch

from torchexplain.kernels.ig import reference
from torchexplain.kernels.ig.reference import accumulation_dtype

__all__ = ["accumulation_dtype", "build_path", "reduce_path"]


def build_path(
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    alphas: torch.Tensor,
    out: torch.Tensor | None = None,
    force_reference: bool = False,
) -> torch.Tensor:
    """(N, S, D) path points; see :func:`reference.build_path`."""
    return reference.build_path(inputs, baselines, alphas, out=out)


def reduce_path(
    grads: torch.Tensor,
    weights: torch.Tensor,
    inputs: torch.Tensor | None = None,
    baselines: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    accumulate: bool = False,
    force_reference: bool = False,
) -> torch.Tensor:
    """(N, D) weighted gradient sum times (input - baseline); see :func:`reference.reduce_path`."""
    return reference.reduce_path(
        grads, weights, inputs, baselines, out=out, accumulate=accumulate
    )
