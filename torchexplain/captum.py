"""A drop-in for ``captum.attr.IntegratedGradients`` running on torchexplain's engine.

Change one import::

    # from captum.attr import IntegratedGradients
    from torchexplain.captum import IntegratedGradients

Same constructor, same ``attribute(...)`` signature and return conventions
(a tensor or a tuple like the inputs; ``(attributions, delta)`` with
``return_convergence_delta=True``), and the attribution API Captum's own code
relies on, so it also works inside ``captum.attr.NoiseTunnel``. captum itself is
not imported by this module.

Targets are Captum's: an int, a one-element tensor, a ``(B,)`` tensor or list of
classes, a tuple of indices for outputs with more than two dimensions (``(1, 0, 0)``
on a ``(B, 2, 2, 2)`` output), a list of such tuples, and any target that leaves one
value per example (an int on a ``(B, 1, 1, 1)`` output).

Deliberate differences from Captum:

- ``riemann_trapezoid`` weights sum to 1 (Captum's sum to (n-1)/n, so its
  completeness is off by 1/n);
- quadrature points and weights are float64 for float64 models (Captum rounds
  them to float32), and the sum over steps is correctly rounded (float64
  accumulation), so a gradient constant along the path gives ``(x - b) * g``
  exactly, where Captum's float32 sum is exact only by luck;
- ``target=None`` on ``(B, classes)`` scores explains each example's predicted
  class (Captum refuses), and a bad target raises ``ValueError``/``TypeError``
  naming it (Captum raises ``AssertionError``).

``internal_batch_size=None`` means "size chunks to the device" here rather than
"one batch": the result is the same up to float rounding and it cannot run out
of memory where a smaller chunk would fit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from torchexplain._targets import resolve_target
from torchexplain.integrated_gradients import integrated_gradients

__all__ = ["IntegratedGradients"]


def _captum_entry_point(method: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``method`` a ``__wrapped__`` like Captum's logging decorator does.

    ``NoiseTunnel`` calls ``attribution_method.attribute.__wrapped__(self, ...)``
    to skip Captum's usage logging; there is no logging here, so the wrapper
    only forwards.
    """

    @functools.wraps(method)
    def entry(*args: Any, **kwargs: Any) -> Any:
        return method(*args, **kwargs)

    return entry


class IntegratedGradients:
    """Integrated Gradients with Captum's interface (Sundararajan et al., 2017).

    Args:
        forward_func: the model or any function returning its scores.
        multiply_by_inputs: as in Captum: multiply averaged gradients by
            ``inputs - baselines`` (global attribution) or not (local).

    Examples:
        >>> model = torch.nn.Linear(3, 2)
        >>> ig = IntegratedGradients(model)
        >>> attr, delta = ig.attribute(torch.rand(4, 3), target=0, return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([4, 3]), torch.Size([4]))
    """

    def __init__(self, forward_func: Callable[..., Any], multiply_by_inputs: bool = True) -> None:
        self.forward_func = forward_func
        self._multiply_by_inputs = multiply_by_inputs

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return True

    @classmethod
    def get_name(cls) -> str:
        """``"Integrated Gradients"``, spaced like Captum's names."""
        name = cls.__name__
        return "".join(c if c.islower() or i == 0 else " " + c for i, c in enumerate(name))

    @_captum_entry_point
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """Captum-compatible ``attribute``; see ``captum.attr.IntegratedGradients.attribute``.

        Returns:
            Attributions shaped like ``inputs`` (a tuple if ``inputs`` is one), and
            the per-example convergence delta ``(B,)`` when
            ``return_convergence_delta`` is True.
        """
        # Captum accepts a list of tensors as inputs too; it is treated as a tuple.
        if isinstance(inputs, list):
            inputs = tuple(inputs)
        explanation = integrated_gradients(
            self.forward_func,
            inputs,
            target=target,
            baselines=baselines,
            additional_forward_args=additional_forward_args,
            n_steps=n_steps,
            method=method,
            internal_batch_size="auto" if internal_batch_size is None else internal_batch_size,
            multiply_by_inputs=self._multiply_by_inputs,
            # Captum runs the model in whatever mode the caller left it.
            eval_mode=False,
        )
        attributions = explanation.attributions
        if return_convergence_delta:
            return attributions, explanation.convergence_delta
        return attributions

    def attribute_future(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("attribute_future is not implemented for IntegratedGradients")

    def compute_convergence_delta(
        self,
        attributions: torch.Tensor | tuple[torch.Tensor, ...],
        start_point: Any,
        end_point: torch.Tensor | tuple[torch.Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
    ) -> torch.Tensor:
        """``sum(attributions) - (F(end_point) - F(start_point))`` per example, as in Captum."""
        ends = end_point if isinstance(end_point, tuple) else (end_point,)
        attrs = attributions if isinstance(attributions, tuple) else (attributions,)
        starts = start_point if isinstance(start_point, tuple) else (start_point,) * len(ends)
        starts = tuple(
            torch.zeros_like(e)
            if s is None
            else torch.as_tensor(s, dtype=e.dtype, device=e.device).expand_as(e)
            for s, e in zip(starts, ends)
        )
        extra = additional_forward_args
        extra = () if extra is None else (extra if isinstance(extra, tuple) else (extra,))
        with torch.no_grad():
            start_out, end_out = (self.forward_func(*points, *extra) for points in (starts, ends))
        resolved = resolve_target(target, end_out)
        scores = (resolved.scores(start_out), resolved.scores(end_out))
        total = sum(a.reshape(a.shape[0], -1).sum(dim=1) for a in attrs)
        return total - (scores[1] - scores[0]).to(total.dtype)
