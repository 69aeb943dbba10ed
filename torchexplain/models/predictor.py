"""Predictor: the one place torchexplain calls a model on rows.

A :class:`Predictor` wraps any model once: an ``nn.Module``, a function on numpy
arrays (scikit-learn's ``predict_proba``, an Alibi user's lambda), an exported program,
or a model behind an endpoint (:class:`~torchexplain.models.remote.RemoteModel` is a
Predictor itself). It

- hands the model what it takes (tensors on the device, or numpy arrays) and brings
  the answer back as a tensor on the device;
- calls it in chunks: a method's ``internal_batch_size`` (an int, None for one call, or
  ``"auto"``: the method's measured rule, halving a call that runs out of memory and
  keeping the smaller size for the rest of the work);
- pads every call to a multiple of ``pad_to_multiple`` rows, so that a row's output does
  not depend on the other rows of its call (:mod:`torchexplain.models.calls` says why);
- builds rows lazily, chunk by chunk (:meth:`Predictor.map`), so that millions of
  perturbed rows never exist at once, and reduces whole units of rows (a KernelShap
  coalition's background rows) as soon as their outputs are in;
- counts its calls and the rows it evaluated.

What an output means is the method's to say, with the helpers below: class scores
``(N, K)`` or labels ``(N,)`` (:func:`as_labels`), float scores only (:func:`as_scores`),
probabilities from logits (:func:`as_probabilities`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from torchexplain import _checks
from torchexplain.models.calls import DEFAULT_PAD_TO_MULTIPLE, in_chunks, pad_rows, padded_size

__all__ = ["Predictor", "as_labels", "as_probabilities", "as_scores"]

#: ``takes``: what the model is handed (``"text"``: lists of strings, for models of text).
TAKES = ("auto", "numpy", "tensor", "text")


class Predictor:
    """A model called on batches of rows.

    Args:
        model: any callable from a batch ``(N, ...)`` to outputs with N rows first.
        takes: ``"tensor"`` (tensors on the device), ``"numpy"`` (numpy arrays), ``"text"``
            (lists of strings: the rows are texts), or ``"auto"``: tensors for an
            ``nn.Module``, numpy for any other callable.
        device: where outputs come back (and where tensors are handed to the model); None:
            where the rows are.
        batch_size: most rows per call: an int, None (every row of a request in one call)
            or ``"auto"`` (``auto_rows(total)``; a call that runs out of memory is retried
            with half the rows, and the smaller size is kept).
        auto_rows: the rule ``"auto"`` follows: rows per call for a request of ``total``
            rows (default: all of them).
        pad_to_multiple: every call carries a multiple of this many rows (the last row
            repeated; 1: no padding).
        prepare: applied to each tensor batch right before the call (a layout the model
            runs fastest in).

    Examples:
        >>> model = torch.nn.Linear(3, 2)
        >>> predictor = Predictor(model, batch_size=2)
        >>> predictor.outputs(torch.rand(5, 3)).shape, predictor.calls, predictor.rows_evaluated
        (torch.Size([5, 2]), 3, 5)
    """

    def __init__(
        self,
        model: Callable[[Any], Any],
        *,
        takes: str = "auto",
        device: torch.device | str | None = None,
        batch_size: int | str | None = "auto",
        auto_rows: Callable[[int], int] | None = None,
        pad_to_multiple: int = DEFAULT_PAD_TO_MULTIPLE,
        prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        _checks.check_callable("model", model)
        self.model = model
        self._set(
            takes=takes,
            device=device,
            batch_size=batch_size,
            auto_rows=auto_rows,
            pad_to_multiple=pad_to_multiple,
            prepare=prepare,
        )
        self._reset_counts()

    def _set(self, **options: Any) -> None:
        """Check and set options (the constructor's keywords)."""
        for name, value in options.items():
            if name == "takes":
                _checks.check_choice("takes", value, TAKES)
                self.takes = self._resolve_takes(value)
            elif name == "device":
                self.device = None if value is None else torch.device(value)
            elif name == "batch_size":
                self.call_rows = _checks.check_chunk_size("batch_size", value)
            elif name == "pad_to_multiple":
                self.pad_to_multiple = _checks.check_int("pad_to_multiple", value, minimum=1)
            elif name in ("auto_rows", "prepare"):
                setattr(self, name, value)
            else:
                raise TypeError(f"Predictor has no option {name!r}")

    def _resolve_takes(self, takes: str) -> str:
        if takes != "auto":
            return takes
        return "tensor" if isinstance(self.model, nn.Module) else "numpy"

    def _reset_counts(self) -> None:
        self.calls = 0
        self.rows_evaluated = 0
        self._halved: int | None = None  # rows per call after running out of memory

    @classmethod
    def wrap(cls, model: Any, **options: Any) -> Predictor:
        """``model`` as a Predictor with ``options``: a new one around a plain callable; for a model
        that is already a Predictor (a :class:`~torchexplain.models.remote.RemoteModel`), the same
        kind of object, configured (:meth:`configured`)."""
        if isinstance(model, Predictor):
            return model.configured(**options)
        return cls(model, **options)

    def configured(self, **options: Any) -> Predictor:
        """A copy with ``options`` changed and its own counts (connections and caches are shared)."""
        bound = copy.copy(self)
        bound._set(**options)
        bound._reset_counts()
        return bound

    # -- the user's view: called like the model ------------------------------------------

    def __call__(self, inputs: Any) -> Any:
        """The model's outputs on ``inputs``, in chunks: numpy in, numpy out; a tensor in, a tensor out;
        a list of texts in, numpy out."""
        if isinstance(inputs, list):
            return self.outputs(inputs, device="cpu").numpy()
        if isinstance(inputs, np.ndarray):
            return self.outputs(
                torch.from_numpy(np.ascontiguousarray(inputs)), device="cpu"
            ).numpy()
        if isinstance(inputs, torch.Tensor):
            return self.outputs(inputs)
        raise TypeError(
            f"{type(self).__name__} takes a numpy array or a tensor, got {type(inputs).__name__}"
        )

    # -- the explainers' view ---------------------------------------------------------------

    def outputs(
        self, rows: torch.Tensor | list[str], device: torch.device | str | None = None
    ) -> torch.Tensor:
        """The model's outputs on ``rows`` ``(N, ...)`` (or N texts), as a tensor on the device (or ``device``)."""
        return self.map(len(rows), lambda start, stop: rows[start:stop], device=device)

    def map(
        self,
        total: int,
        build: Callable[[int, int], torch.Tensor],
        *,
        unit: int = 1,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        on_call: Callable[[int, int], None] | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Outputs of ``total`` rows that ``build(start, stop)`` makes chunk by chunk.

        Args:
            total: rows to evaluate.
            build: the rows ``[start, stop)`` as a tensor (a list of texts for a model of
                text); called again for a chunk retried after running out of memory.
            unit: rows per unit: outputs are handed to ``reduce`` in whole units, so a unit
                split over two calls is reduced once, in one piece, whatever the chunking.
            reduce: ``(u * unit, ...) -> (u, ...)`` outputs of ``u`` whole units (default: the
                outputs as they are).
            on_call: ``on_call(start, stop)`` after each model call, with its rows.
            device: where outputs go (default: the predictor's device, else the rows').

        Returns:
            The reduced outputs of every unit, in order: ``(total // unit, ...)``.
        """
        if total % unit:
            raise ValueError(f"{total} rows do not make whole units of {unit}")
        if total == 0:
            raise ValueError("nothing to evaluate: 0 rows")
        results: list[torch.Tensor] = []
        pending: list[torch.Tensor] = []  # outputs of rows past the last whole unit

        def work(start: int, stop: int, size: int) -> None:
            output = self._call(build(start, stop), device)
            if on_call is not None:
                on_call(start, stop)
            if reduce is None:
                results.append(output)
                return
            pending.append(output)
            complete = stop - stop % unit  # rows up to here make whole units
            held = sum(p.shape[0] for p in pending)
            ready = held - (stop - complete)  # pending rows that belong to whole units
            if ready:
                rows = torch.cat(pending) if len(pending) > 1 else pending[0]
                results.append(reduce(rows[:ready]))
                pending[:] = [rows[ready:]] if ready < rows.shape[0] else []

        first = self.rows_per_call(total)

        def keep_smaller(stop: int, size: int) -> int:
            if size < first:  # a call ran out of memory: later work starts at the smaller size
                self._halved = size
            return size

        in_chunks(
            total,
            first,
            work,
            halve=self.call_rows == "auto",
            resize=keep_smaller,
            device=self.device,
        )
        return torch.cat(results) if len(results) > 1 else results[0]

    def rows_per_call(self, total: int) -> int:
        """Rows per call for a request of ``total`` rows: a multiple of ``pad_to_multiple`` when at
        least that many, so that only a request's last call is padded."""
        if self.call_rows is None:
            rows = total
        elif self.call_rows != "auto":
            rows = int(self.call_rows)
        else:
            rows = self.auto_rows(total) if self.auto_rows is not None else total
            if self._halved is not None:
                rows = min(rows, self._halved)
        if rows >= self.pad_to_multiple:
            rows -= rows % self.pad_to_multiple
        return max(1, rows)

    def _call(
        self, batch: torch.Tensor | list[str], device: torch.device | str | None
    ) -> torch.Tensor:
        """One call of the model on ``batch``, padded; outputs ``(n, ...)`` on the output device."""
        n = len(batch)
        rows = padded_size(n, self.pad_to_multiple)
        rows_device = torch.device("cpu") if isinstance(batch, list) else batch.device
        out_device = torch.device(device) if device is not None else (self.device or rows_device)
        if isinstance(batch, list):
            output = self._forward(batch + batch[-1:] * (rows - n))
        elif self.takes == "numpy":
            array = pad_rows(batch, rows).detach().cpu().numpy()
            output = self._forward(array)
        else:
            tensor = pad_rows(batch.to(self.device) if self.device is not None else batch, rows)
            output = self._forward(self.prepare(tensor) if self.prepare is not None else tensor)
        self.calls += 1
        self.rows_evaluated += n
        return _as_output_tensor(output, rows, out_device)[:n]

    def _forward(self, batch: Any) -> Any:
        """The model itself on one batch (what a subclass calling something else replaces)."""
        return self.model(batch)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.model!r}, takes={self.takes!r}, batch_size={self.call_rows!r}, "
            f"pad_to_multiple={self.pad_to_multiple})"
        )


def _as_output_tensor(output: Any, n: int, device: torch.device) -> torch.Tensor:
    if isinstance(output, np.ndarray):
        output = torch.from_numpy(np.ascontiguousarray(output))
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"the predictor must return a tensor or numpy array, got {type(output).__name__}"
        )
    if output.dim() == 0 or output.shape[0] != n:
        raise ValueError(
            f"the predictor returned shape {tuple(output.shape)} for a call of {n} rows; expected the rows first, ({n}, ...)"
        )
    return output.to(device) if output.device != device else output


# ----------------------------------------------------------------------------- what outputs mean


def as_labels(output: torch.Tensor) -> torch.Tensor:
    """The classes an output means: the argmax of scores ``(N, K)``, or integer labels ``(N,)``."""
    n = output.shape[0]
    if output.dim() == 2 and output.shape[1] >= 1:
        return output.argmax(dim=1).to(torch.int64)
    if output.dim() == 1:
        if output.is_floating_point() or output.is_complex():
            raise ValueError(
                f"predictor returned a 1-D float tensor of shape {tuple(output.shape)}; expected class "
                "scores (B, K) or integer labels (B,)"
            )
        return output.to(torch.int64)
    raise ValueError(
        f"predictor returned shape {tuple(output.shape)} for {n} inputs; expected class scores "
        f"({n}, K) or labels ({n},)"
    )


def as_scores(output: torch.Tensor, who: str) -> torch.Tensor:
    """Float scores ``(N, K)`` or ``(N,)`` as the predictor gave them; labels are refused."""
    n = output.shape[0]
    if not (output.is_floating_point() and output.dim() in (1, 2)):
        raise ValueError(
            f"predictor returned {output.dtype} of shape {tuple(output.shape)} for {n} rows; {who} needs "
            f"float scores ({n}, K) or ({n},), not labels"
        )
    return output


def as_probabilities(output: torch.Tensor, model_output: str) -> torch.Tensor:
    """Class probabilities from a model's ``(N, K)`` output: a softmax of ``"logits"``, or
    ``"probabilities"`` as they are. Differentiable."""
    if model_output != "logits":
        return output
    # Written out rather than torch.softmax: its CPU kernel opens a parallel region even for
    # a (B, 10) tensor, which costs milliseconds per call (forward and backward) on a busy machine.
    shifted = output - output.detach().amax(dim=1, keepdim=True)
    exp = shifted.exp()
    return exp / exp.sum(dim=1, keepdim=True)
