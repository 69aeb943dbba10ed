"""What a black-box predictor's answer means: class scores ``(N, K)`` or labels ``(N,)``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["scores_and_labels"]


def scores_and_labels(
    output: Any, n: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The predictor's output on ``n`` inputs as a tensor on ``device``, and the labels it means.

    Scores ``(n, K)`` give their argmax; integer labels ``(n,)`` are taken as they are.
    Anything else is refused with the shape that was expected.
    """
    if isinstance(output, np.ndarray):
        output = torch.from_numpy(np.ascontiguousarray(output))
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"predictor must return a tensor (or numpy array), got {type(output).__name__}"
        )
    # Outputs and labels live on the inputs' device whatever device the predictor answered on.
    output = output.detach().to(device)
    if output.dim() == 2 and output.shape[0] == n and output.shape[1] >= 1:
        return output, output.argmax(dim=1).to(torch.int64)
    if output.dim() == 1 and output.shape[0] == n:
        if output.is_floating_point() or output.is_complex():
            raise ValueError(
                f"predictor returned a 1-D float tensor of shape {tuple(output.shape)}; expected class "
                "scores (B, K) or integer labels (B,)"
            )
        return output, output.to(torch.int64)
    raise ValueError(
        f"predictor returned shape {tuple(output.shape)} for {n} inputs; expected class scores "
        f"({n}, K) or labels ({n},)"
    )
