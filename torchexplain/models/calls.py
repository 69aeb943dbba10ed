"""Many rows through a model: chunks that fit the device, and calls padded for batch invariance.

Two pieces every model call of torchexplain shares, black-box or white-box:

- :func:`in_chunks` runs work over ``[0, total)`` in chunks, halving a chunk that
  runs out of memory and retrying it (the work of a chunk must be repeatable: rows are
  built from their index, nothing is accumulated before a chunk succeeds);
- :func:`call_padded` calls a model on a batch padded to a multiple of
  ``pad_to_multiple`` rows (the last row repeated, detached), so that what the model
  gives a row does not depend on how many other rows share its call.

Why padding: on the CPU, BLAS computes the rows of a matrix product in tiles, and
rows left over at the end (the batch size modulo the tile) take another path whose
sums round differently. Measured on the CI machine's MKL (2-core AVX-512 EPYC,
torch 2.13): ``nn.Linear`` gives every row bitwise the same output at any batch size
that is a multiple of 4, at any position in the batch, in float32 and float64 with 1
to 4 threads; batch sizes 1-3 (and 5-7, 9-11 with 2 threads) round differently, by
about 1e-7 relative, which the counterfactual searches' thresholds amplify into
different results. Convolutions (oneDNN) were invariant at every size measured. The
padding costs the padded rows' compute: nothing for the anchors' and KernelShap's
calls (thousands of rows), up to 3 rows of a search's step.

What padding does not cover, measured on the same machine:

- position: a product ``A @ B`` whose ``B`` is stored row-major with a few columns
  (float32: 5-7 and 9-11 columns; float64: 3, 7, 9, ... columns, depending on the inner
  size) rounds a row by its position in the call. ``nn.Linear``'s forward is not such a
  product, but its backward (the input gradient) is, with as many columns as the layer
  has inputs: a gradient search over a model whose first layer takes 5 float64
  features differs between a batch and each instance alone by about 1e-12 relative
  (the contract tests' toy counterfactual model). The MNIST CNN and the census MLP
  (12 inputs) have no such layer.
- threads: float64 ``nn.Linear`` with 9216 inputs on 8 or more threads rounds
  differently below 64 rows than above (two regimes of MKL's threading);
  ``pad_to_multiple=64`` removes that, at the price of 64-row calls.
- CUDA (cuBLAS picks kernels by shape) has not been measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from torchexplain._memory import is_out_of_memory

__all__ = ["DEFAULT_PAD_TO_MULTIPLE", "call_padded", "in_chunks", "pad_rows", "padded_size"]

#: Each model call carries a multiple of this many rows (see the module docs).
DEFAULT_PAD_TO_MULTIPLE = 4

_T = TypeVar("_T")


def in_chunks(
    total: int,
    size: int,
    work: Callable[[int, int, int], _T],
    *,
    halve: bool,
    end: Callable[[int, int], int] | None = None,
    resize: Callable[[int, int], int] | None = None,
    device: torch.device | None = None,
) -> list[_T]:
    """``work(start, stop, size)`` over ``[0, total)``, chunk by chunk; the results in order.

    Args:
        total: items to cover.
        size: the chunk size (in the unit ``work`` understands, e.g. rows per call).
        work: runs one chunk; must be repeatable (it may be called again with a smaller size).
        halve: a chunk that runs out of memory is retried with half the size (down to 1);
            without it the error propagates.
        end: where a chunk of ``size`` starting at ``start`` stops, ``end(start, size)``
            (default: ``start + size``): work whose chunks must not cross some boundaries
            (Integrated Gradients keeps an example's steps together).
        resize: called after each successful chunk as ``resize(stop, size)``; returns the
            size of the next chunks (a first chunk that measured the memory per row).
        device: freed cached CUDA memory after an out-of-memory error on this device.
    """
    results: list[_T] = []
    start = 0
    while start < total:
        stop = min(total, end(start, size) if end is not None else start + size)
        try:
            results.append(work(start, stop, size))
        except Exception as err:
            if not (halve and size > 1 and is_out_of_memory(err)):
                raise
            del err
            size = max(1, size // 2)
            if device is not None and device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        if resize is not None:
            size = resize(stop, size)
        start = stop
    return results


def padded_size(rows: int, multiple: int) -> int:
    """``rows`` rounded up to a multiple of ``multiple``."""
    return -(-rows // multiple) * multiple


def pad_rows(batch: torch.Tensor, rows: int) -> torch.Tensor:
    """``batch`` ``(n, ...)`` followed by copies of its last row (detached) up to ``rows`` rows."""
    extra = rows - batch.shape[0]
    if extra <= 0:
        return batch
    last = batch[-1:].detach()
    return torch.cat([batch, last.expand(extra, *batch.shape[1:])])


def call_padded(
    model: Callable[..., Any],
    args: Sequence[Any],
    multiple: int,
    padded: Sequence[bool] | None = None,
) -> Any:
    """``model(*args)`` on rows padded to a multiple of ``multiple``, the padding dropped again.

    Args:
        model: the callable; its output (a tensor, or a tuple/list of them) has the rows first.
        args: its positional arguments; the first is an ``(n, ...)`` tensor of rows.
        multiple: pad to this many rows (1: no padding).
        padded: which arguments are ``(n, ...)`` tensors padded with their last row (default:
            all of them); the others are passed as they are.
    """
    n = args[0].shape[0]
    rows = padded_size(n, multiple)
    if rows == n:
        return model(*args)
    flags = [True] * len(args) if padded is None else list(padded)
    return unpad(
        model(*(pad_rows(a, rows) if flag else a for a, flag in zip(args, flags, strict=True))), n
    )


def unpad(output: Any, n: int) -> Any:
    """The first ``n`` rows of a model's output (tensors, and tuples or lists of them)."""
    if isinstance(output, torch.Tensor):
        return output[:n] if output.dim() > 0 else output
    if isinstance(output, (tuple, list)):
        return type(output)(unpad(item, n) for item in output)
    if hasattr(output, "shape") and hasattr(output, "__getitem__"):  # numpy
        return output[:n]
    return output
