"""Which score of the model's output a white-box method explains: one place for targets.

A target picks one score per example from the model's output ``(B, ...)``:

- ``None``: the model's own prediction. A ``(B, classes)`` output gives each row's
  top class; an output with one value per example (``(B,)``, ``(B, 1, 1)``, ...)
  is that value.
- an int ``k``: ``output[:, k]``, for every example.
- a tuple of ints ``(i, j, ...)``: ``output[:, i, j, ...]``, for every example
  (Captum's tuple target for outputs with more than two dimensions).
- a per-example sequence: a list or ``(B,)`` tensor of ints, a list of tuples, or a
  ``(B, k)`` integer tensor of index tuples (the form ``Explanation.target`` records,
  so a recorded target can be passed back).
- a callable mapping the output ``(R, ...)`` to one score per row ``(R,)``.

After indexing, each example must be left with exactly one value (as in Captum,
where ``output[:, 0]`` of a ``(B, 1, 1, 1)`` output is fine); anything else is
refused with a message that says how to pick one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from torchexplain._checks import is_int

__all__ = ["ResolvedTarget", "TargetType", "resolve_target"]

TargetType = (
    None
    | int
    | tuple[int, ...]
    | Sequence[int]
    | Sequence[tuple[int, ...]]
    | torch.Tensor
    | Callable[[torch.Tensor], torch.Tensor]
)


@dataclass(frozen=True)
class ResolvedTarget:
    """A target fixed against the model's output at the inputs.

    Attributes:
        index: ``(B, k)`` int64 indices into ``output[b]`` (``k`` = 0 for a one-value
            output without a target), or None for a callable target.
        function: the callable target, if any.
    """

    index: torch.Tensor | None
    function: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def per_example(self) -> torch.Tensor | None:
        """What an Explanation records as ``target``: ``(B,)`` classes, ``(B, k)`` index
        tuples, or None (callable target, or a one-value output explained as it is)."""
        if self.index is None or self.index.shape[1] == 0:
            return None
        return self.index[:, 0] if self.index.shape[1] == 1 else self.index

    def scores(self, output: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """One score per row of ``output`` ``(R, ...)``; ``rows`` ``(R,)`` says which
        example each row belongs to (None: row ``r`` is example ``r``)."""
        if self.function is not None:
            return self.function(output)
        index = self.index if rows is None else self.index[rows]
        n = output.shape[0]
        if index.shape[1]:
            positions = torch.arange(n, device=output.device)
            output = output[(positions, *index.to(output.device).unbind(1))]
        return output.reshape(n)


def resolve_target(target: TargetType, output: torch.Tensor) -> ResolvedTarget:
    """Check ``target`` against the model's ``output`` ``(B, ...)`` at the inputs."""
    if not isinstance(output, torch.Tensor) or output.dim() == 0:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"the model must return a (B, ...) tensor with the batch first, got {got}")
    n = output.shape[0]
    if callable(target) and not isinstance(target, torch.Tensor):
        scores = target(output)
        if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (n,):
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(
                f"a callable target must map the model output to shape ({n},), got {got}"
            )
        return ResolvedTarget(None, target)
    per_row = output[0].numel() if n else 0
    if target is None:
        if output.dim() == 2 and output.shape[1] > 1:
            index = output.argmax(dim=1, keepdim=True)
        elif per_row == 1:
            index = torch.zeros((n, 0), dtype=torch.long, device=output.device)
        else:
            raise ValueError(
                f"target=None needs (B, classes) scores or one value per example, but the model "
                f"returned shape {tuple(output.shape)}; pass an int, a tuple of indices such as "
                f"{(0,) * (output.dim() - 1)}, or a callable target"
            )
        return ResolvedTarget(index.long())
    index = _as_index(target, n, output.device)
    _check_index(index, output)
    return ResolvedTarget(index)


def _as_index(target: Any, n: int, device: torch.device) -> torch.Tensor:
    """Any non-callable target as a ``(B, k)`` int64 tensor."""
    expected = (
        "target must be None, an int, a tuple of ints, a list or tensor of per-example classes, "
        "a list of tuples, or a callable"
    )
    if isinstance(target, bool):
        raise TypeError(f"{expected}; got {target!r}")
    if is_int(target):
        return torch.full((n, 1), int(target), dtype=torch.long, device=device)
    if isinstance(target, tuple):
        if not target or not all(is_int(t) for t in target):
            raise TypeError(
                f"a tuple target must hold ints, one per output dimension after the batch; got {target!r}"
            )
        return torch.tensor([list(target)] * n, dtype=torch.long, device=device).reshape(
            n, len(target)
        )
    if isinstance(target, list) and target and all(isinstance(t, tuple) for t in target):
        lengths = {len(t) for t in target}
        if len(lengths) != 1 or not all(is_int(i) for t in target for i in t):
            raise TypeError(
                f"a list of tuple targets needs tuples of ints, all of one length; got {target!r}"
            )
        index = torch.tensor([list(t) for t in target], dtype=torch.long, device=device)
    elif isinstance(target, (list, torch.Tensor)):
        if isinstance(target, list) and not all(
            is_int(t) and not isinstance(t, bool) for t in target
        ):
            raise TypeError(
                f"{expected}; a list target must hold ints or tuples of ints, got {target!r}"
            )
        index = torch.as_tensor(target, device=device)
        if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
            raise TypeError(f"target must hold integer class indices, got dtype {index.dtype}")
        index = index.long()
        if index.dim() <= 1:
            index = index.reshape(-1, 1)
        elif index.dim() != 2:
            raise ValueError(
                f"a target tensor must be (B,) classes or (B, k) index tuples, got shape {tuple(index.shape)}"
            )
    else:
        raise TypeError(f"{expected}; got {type(target).__name__}")
    if index.shape[0] == 1 and n != 1:
        index = index.expand(n, -1)
    if index.shape[0] != n:
        raise ValueError(f"target has {index.shape[0]} entries but the batch has {n} examples")
    return index.contiguous()


def _check_index(index: torch.Tensor, output: torch.Tensor) -> None:
    k = index.shape[1]
    dims = tuple(output.shape[1:])
    if k > len(dims):
        raise ValueError(
            f"target indexes {k} output dimension(s) but the model's output {tuple(output.shape)} has "
            f"{len(dims)} after the batch"
        )
    for axis in range(k):
        column = index[:, axis]
        bad = (column < 0) | (column >= dims[axis])
        if bool(bad.any()):
            value = int(column[bad][0])
            what = f"target class {value}" if k == 1 else f"target index {value} (position {axis})"
            raise ValueError(
                f"{what} is out of range for a model with output shape {tuple(output.shape)}"
            )
    left = 1
    for size in dims[k:]:
        left *= size
    if left != 1:
        shape = tuple(output.shape)
        raise ValueError(
            f"a target must pick one value per example, but {_describe(index)} leaves {left} values of "
            f"the output {shape}; use a tuple of {len(dims)} indices, e.g. {(0,) * len(dims)}, or a "
            "callable target"
        )


def _describe(index: torch.Tensor) -> str:
    return "this class target" if index.shape[1] == 1 else f"this {index.shape[1]}-index target"
