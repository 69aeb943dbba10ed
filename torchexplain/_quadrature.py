"""Quadrature rules for path integrals over alpha in [0, 1].

Points and weights are computed in float64 and only cast to the model's dtype at
the point of use, so float64 models get float64-exact rules. Every rule's weights
sum to 1 (the trapezoid rule included), so completeness holds for a linear model.
"""

from __future__ import annotations

import numpy as np
import torch

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(method: str, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alphas`` and weights for ``n_steps`` evaluations on [0, 1].

    Args:
        method: one of :data:`METHODS`.
        n_steps: number of points, at least 1 (at least 2 for ``riemann_trapezoid``).

    Returns:
        ``(alphas, weights)``, each ``(n_steps,)`` float64 on the CPU.
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)):
        raise TypeError(f"n_steps must be an int, got {type(n_steps).__name__} {n_steps!r}")
    n = int(n_steps)
    if n < 1:
        raise ValueError(f"n_steps must be at least 1, got {n}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    k = np.arange(n, dtype=np.float64)
    if method == "gausslegendre":
        nodes, node_weights = np.polynomial.legendre.leggauss(n)
        alphas, weights = 0.5 * (nodes + 1.0), 0.5 * node_weights
    elif method == "riemann_trapezoid":
        if n < 2:
            raise ValueError("riemann_trapezoid needs n_steps >= 2 (it evaluates both ends)")
        alphas = k / (n - 1)
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] = 0.5 / (n - 1)
    else:
        offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
        alphas = (k + offset) / n
        weights = np.full(n, 1.0 / n)
    return torch.from_numpy(alphas.copy()), torch.from_numpy(weights.copy())
