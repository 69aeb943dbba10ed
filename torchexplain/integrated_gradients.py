"""Integrated Gradients, batched over examples and steps.

Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.

For an input ``x``, a baseline ``b`` and a target score ``F``::

    IG(x) = (x - b) * integral_0^1 dF(b + a (x - b)) / dx  da
          ~ (x - b) * sum_k w_k * grad F(b + alpha_k (x - b))

Every step of every example goes through the model as one large batch (or a few
chunks of it): the path is built by broadcasting, the gradient of all selected
scores comes from one backward call per chunk, and the reduction over steps is
accumulated in float32 (float64 for float64 models). Path building and reduction
are ``torchexplain.kernels.ig`` ops, so CUDA gets fused kernels where they exist.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from torchexplain import _checks, _memory
from torchexplain._model_state import preserved_model_state
from torchexplain._quadrature import METHODS, quadrature
from torchexplain._targets import ResolvedTarget, TargetType, resolve_target
from torchexplain.base import Explainer, functional_twin, register_explainer
from torchexplain.explanation import Explanation
from torchexplain.kernels import ig as ig_ops
from torchexplain.models import Rows, call_padded, in_chunks
from torchexplain.models.calls import pad_rows, padded_size, unpad
from torchexplain.settings import ModelCallSettings, setting

TensorOrTuple = torch.Tensor | tuple[torch.Tensor, ...]
BaselineType = None | int | float | torch.Tensor | tuple[int | float | torch.Tensor | None, ...]

#: Rows per forward when evaluating the model at the inputs and the baselines.
ENDPOINT_ROWS = 1024


def _check_mixed_precision(name: str, value: Any) -> torch.dtype | None:
    if value is not None and not isinstance(value, torch.dtype):
        raise TypeError(f"{name} must be None or a torch.dtype, got {value!r}")
    if value not in (None, torch.bfloat16, torch.float16):
        raise ValueError(f"{name} must be None, torch.bfloat16 or torch.float16, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class IntegratedGradientsSettings(ModelCallSettings):
    """The settings of :class:`IntegratedGradients` (one definition for every use)."""

    n_steps: int = setting(50, "points on the path from baseline to input", per_call=True)
    method: str = setting(
        "gausslegendre",
        "quadrature rule: riemann_left, riemann_right, riemann_middle, riemann_trapezoid or gausslegendre",
        per_call=True,
    )
    multiply_by_inputs: bool = setting(
        True,
        "multiply the path-averaged gradients by (x - baseline), IG proper; False gives the averaged gradients",
        check=_checks.boolean(),
    )
    eval_mode: bool = setting(
        True,
        "run the model in eval mode and restore the caller's modes afterwards; False keeps the caller's "
        "modes (buffers such as BatchNorm statistics are restored either way)",
        check=_checks.boolean(),
    )
    mixed_precision: torch.dtype | None = setting(
        None,
        "torch.bfloat16 or torch.float16 runs the model's forward and backward under torch.autocast in that "
        "dtype while the path and the reduction stay in the input dtype (float32 accumulation)",
        check=_check_mixed_precision,
    )

    def validate(self) -> dict[str, Any]:
        quadrature(self.method, self.n_steps)  # checks both (n_steps' range depends on the method)
        return {"n_steps": int(self.n_steps)}


@register_explainer
class IntegratedGradients(Explainer):
    """Integrated Gradients for PyTorch models (Sundararajan et al., 2017).

    White-box: ``model`` is a callable taking the input tensor(s) (and any additional
    forward args) and returning scores ``(B, ...)``: ``(B, classes)``, ``(B,)`` for
    one score per example, or more dimensions with a tuple or callable target.

    Examples:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x = torch.rand(2, 1, 2, 2)
        >>> exp = IntegratedGradients(model, n_steps=16).explain(x, target=1)
        >>> exp.attributions.shape
        torch.Size([2, 1, 2, 2])
        >>> bool(exp.convergence_delta.abs().max() < 1e-5)
        True
    """

    name = "IntegratedGradients"
    explainer_type = "integrated_gradients"
    peer = "captum.attr.IntegratedGradients; alibi.explainers.IntegratedGradients"
    paper = 'Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017'
    cli_name = "ig"
    kind = "whitebox"
    settings_class = IntegratedGradientsSettings
    accepts_target = True

    def explain(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        baselines: BaselineType = None,
        additional_forward_args: Any = None,
        **settings: Any,
    ) -> Explanation:
        """Attribute the target score of each example to its input features.

        Args:
            inputs: ``(B, ...)`` tensor, or a tuple of them for multi-input models.
            target: which score to explain per example (see :mod:`torchexplain._targets`):
                ``None`` (each example's predicted class), an int, a tuple of indices
                for outputs with more dimensions, a ``(B,)`` tensor or list of
                classes, a list of tuples, or a callable mapping the model output
                ``(R, ...)`` to one score per row ``(R,)``.
            baselines: ``None`` (zeros), a number, a tensor broadcastable to the
                input (e.g. shaped like it or with batch size 1), or a tuple of
                these matching ``inputs``.
            additional_forward_args: extra positional args for the model; tensors
                whose first dimension is ``B`` are expanded along the path, other
                values are passed unchanged.
            **settings: per-call settings (``n_steps``, ``method``,
                ``internal_batch_size``); the explainer's own otherwise.

        Returns:
            Explanation with ``attributions`` (shaped like ``inputs``, in their
            dtype; a tuple for tuple inputs), ``convergence_delta`` ``(B,)`` (sum of
            attributions minus ``F(x) - F(baseline)``), ``target`` (``(B,)`` classes,
            ``(B, k)`` index tuples, or None for a callable target or a one-score
            model) and ``predictions`` (the model output at the inputs).
        """
        config = self._settings_for_call(settings)
        alphas, weights = quadrature(config.method, config.n_steps)
        inputs_tuple = _check_inputs(inputs)
        baselines_tuple = _format_baselines(baselines, inputs_tuple)
        extra_args = _format_extra_args(additional_forward_args)

        with preserved_model_state(self.model, eval_mode=config.eval_mode):
            run = _PathIntegral(
                self.model,
                inputs_tuple,
                baselines_tuple,
                extra_args,
                alphas,
                weights,
                config.mixed_precision,
                config.padding(),
            )
            predictions, start_scores, end_scores, resolved = run.endpoints(target)
            totals = run.integrate(config.internal_batch_size, config.multiply_by_inputs)

        acc_dtype = totals[0].dtype
        attribution_sum = sum(t.sum(dim=1, dtype=acc_dtype) for t in totals)
        delta = attribution_sum - (end_scores.to(acc_dtype) - start_scores.to(acc_dtype))
        attributions = tuple(t.view_as(x).to(x.dtype) for t, x in zip(totals, inputs_tuple))
        data = {
            "attributions": attributions if isinstance(inputs, tuple) else attributions[0],
            "convergence_delta": delta,
            "target": resolved.per_example,
            "predictions": predictions,
        }
        return self._explanation(config, data, inputs_tuple[0].device)

    def caption(self, explanation: Explanation, i: int) -> str:
        """The class explained and the convergence delta (sum of attributions minus F(x) - F(b))."""
        delta = explanation.data.get("convergence_delta")
        return super().caption(explanation, i) + (
            f"  delta {float(delta[i]):+.1e}" if delta is not None else ""
        )


@functional_twin(IntegratedGradients)
def integrated_gradients(
    model: Callable[..., torch.Tensor],
    inputs: TensorOrTuple,
    target: TargetType = None,
    baselines: BaselineType = None,
    additional_forward_args: Any = None,
    **settings: Any,
) -> Explanation:
    """Functional form of :class:`IntegratedGradients`: the same settings, one call.

    Examples:
        >>> model = torch.nn.Linear(3, 2)
        >>> exp = integrated_gradients(model, torch.rand(4, 3), target=0)
        >>> exp.attributions.shape
        torch.Size([4, 3])
    """
    return IntegratedGradients(model, **settings).explain(
        inputs, target=target, baselines=baselines, additional_forward_args=additional_forward_args
    )


class _PathIntegral:
    """The state of one IG call: flattened inputs, baselines, targets, accumulators.

    Rows of work are (example, step) pairs in example-major order: row ``r`` is
    example ``r // S`` at step ``r % S``. A chunk is a contiguous range of rows,
    split into at most three rectangles of (examples x steps) so path building and
    reduction run as a few broadcast ops per chunk.
    """

    def __init__(
        self,
        model: Callable[..., torch.Tensor],
        inputs: tuple[torch.Tensor, ...],
        baselines: tuple[torch.Tensor, ...],
        extra_args: tuple[Any, ...],
        alphas: torch.Tensor,
        weights: torch.Tensor,
        mixed_precision: torch.dtype | None = None,
        pad_to_multiple: int = 1,
    ) -> None:
        self.model = model
        self.mixed_precision = mixed_precision
        self.pad_to_multiple = pad_to_multiple
        self.inputs = inputs
        self.n_examples = inputs[0].shape[0]
        self.device = inputs[0].device
        self.flat_inputs = [x.detach().reshape(self.n_examples, -1) for x in inputs]
        self.flat_baselines = [b.reshape(b.shape[0], -1) for b in baselines]
        self.baselines = baselines
        self.extra_args = extra_args
        self.per_example_arg = [
            isinstance(a, torch.Tensor) and a.dim() >= 1 and a.shape[0] == self.n_examples
            for a in extra_args
        ]
        self.acc_dtype = max(
            (ig_ops.accumulation_dtype(x.dtype) for x in inputs), key=lambda d: torch.finfo(d).bits
        )
        # Quadrature in each input's accumulation dtype, on the device, once.
        self.step_alphas = [
            alphas.to(self.device, ig_ops.accumulation_dtype(x.dtype)) for x in inputs
        ]
        # Weights stay float64 where the reduction sums in float64 (the reference), so
        # the sum over steps is rounded once; the Triton kernel casts them itself.
        self.step_weights = [
            weights.to(self.device, ig_ops.reduction_dtype(self.device)) for _ in inputs
        ]
        self.n_steps = alphas.numel()
        self.target: ResolvedTarget | None = None
        #: steps per piece of an example (None: examples whole); fixed by integrate()
        self.piece: int | None = None

    def _autocast(self):
        if self.mixed_precision is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.mixed_precision)

    def _call(self, inputs: Sequence[torch.Tensor], args: Sequence[Any]) -> Any:
        """The model on ``inputs`` (rows first) and its extra arguments, through the model-call
        layer's padding: a row's output does not depend on the other rows of the call."""
        flags = [True] * len(inputs) + [
            per and isinstance(a, torch.Tensor)
            for a, per in zip(args, self.per_example_arg, strict=True)
        ]
        return call_padded(self.model, [*inputs, *args], self.pad_to_multiple, flags)

    # -- endpoints -----------------------------------------------------------------

    def _forward_chunked(self, batches: Sequence[torch.Tensor]) -> torch.Tensor:
        outputs = []
        for start in range(0, self.n_examples, ENDPOINT_ROWS):
            stop = min(self.n_examples, start + ENDPOINT_ROWS)
            args = [
                a[start:stop] if per else a for a, per in zip(self.extra_args, self.per_example_arg)
            ]
            with self._autocast():
                outputs.append(self._call([b[start:stop] for b in batches], args))
        if not all(isinstance(o, torch.Tensor) for o in outputs):
            raise TypeError(f"the model must return a tensor, got {type(outputs[0]).__name__}")
        return torch.cat(outputs)

    def endpoints(self, target: TargetType):
        """Model outputs at the inputs and baselines; resolves the target."""
        n = self.n_examples
        with torch.no_grad():
            out_x = self._forward_chunked([x.detach() for x in self.inputs])
            expanded = [b.expand(n, *b.shape[1:]) for b in self.baselines]
            out_b = self._forward_chunked(expanded)
        if out_x.dim() == 0 or out_x.shape[0] != n:
            raise ValueError(
                f"the model returned shape {tuple(out_x.shape)} for {n} examples; expected the "
                "batch dimension first"
            )
        self.target = resolve_target(target, out_x)
        start = self.target.scores(out_b)
        end = self.target.scores(out_x)
        return out_x.detach(), start.detach(), end.detach(), self.target

    # -- path integral -------------------------------------------------------------

    def _rectangles(self, start: int, stop: int) -> list[tuple[int, int, int, int]]:
        steps = self.n_steps
        rects, row = [], start
        while row < stop:
            example, step = divmod(row, steps)
            if step == 0 and stop - row >= steps:
                n_full = (stop - row) // steps
                rects.append((example, example + n_full, 0, steps))
                row += n_full * steps
            else:
                step_end = min(steps, step + stop - row)
                rects.append((example, example + 1, step, step_end))
                row += step_end - step
        return rects

    def _baseline_rows(self, i: int, e0: int, e1: int) -> torch.Tensor:
        b = self.flat_baselines[i]
        return b if b.shape[0] == 1 else b[e0:e1]

    def _chunk_gradients(self, start: int, stop: int):
        """Forward and backward of rows ``[start, stop)``: the rectangles and the path gradients.

        The path is built with its padding rows already in place (copies of its last row, up
        to a multiple of ``pad_to_multiple``): the model sees what :func:`call_padded` would
        give it, without copying the whole path into a padded one and its gradient back
        (on a cheap model over large inputs that copy cost more than the padded rows).
        """
        rects = self._rectangles(start, stop)
        n_rows = stop - start
        rows = padded_size(n_rows, self.pad_to_multiple)
        paths = []
        for i, x in enumerate(self.inputs):
            path = torch.empty((rows, *x.shape[1:]), dtype=x.dtype, device=self.device)
            flat = path.view(rows, -1)
            offset = 0
            for e0, e1, s0, s1 in rects:
                block = flat[offset : offset + (e1 - e0) * (s1 - s0)].view(e1 - e0, s1 - s0, -1)
                ig_ops.build_path(
                    self.flat_inputs[i][e0:e1],
                    self._baseline_rows(i, e0, e1),
                    self.step_alphas[i][s0:s1],
                    out=block,
                )
                offset += (e1 - e0) * (s1 - s0)
            flat[n_rows:] = flat[n_rows - 1]  # the padding
            paths.append(path.requires_grad_())
        row_examples = torch.cat(
            [
                torch.arange(e0, e1, device=self.device).repeat_interleave(s1 - s0)
                for e0, e1, s0, s1 in rects
            ]
        )
        padded_examples = pad_rows(row_examples, rows)
        args = [
            a.index_select(0, padded_examples) if per else a
            for a, per in zip(self.extra_args, self.per_example_arg)
        ]
        with torch.enable_grad():
            with self._autocast():
                output = unpad(self.model(*paths, *args), n_rows)
            scores = self.target.scores(output, row_examples)
            # One scalar backward: rows are independent, so d(sum)/d(row) is each row's gradient.
            grads = torch.autograd.grad(scores.sum(), paths, allow_unused=True)
        return rects, [None if g is None else g[:n_rows] for g in grads]

    def _reduce_chunk(self, rects, grads, multiply: bool) -> list[list[tuple]]:
        """Per input, ``(e0, e1, sum)`` for each piece of the chunk: the weighted sum over that
        piece's steps ``(e1 - e0, D)`` (None where the model ignores the input)."""
        sums: list[list[tuple]] = []
        for i, grad in enumerate(grads):
            flat_grad = None if grad is None else grad.reshape(grad.shape[0], -1)
            offset, mine = 0, []
            for e0, e1, s0, s1 in rects:
                size = (e1 - e0) * (s1 - s0)
                for a, b in self._step_pieces(s0, s1):
                    if flat_grad is None:  # the model ignores this input: its attribution is zero
                        mine.append((e0, e1, None))
                        continue
                    block = flat_grad[offset : offset + size].view(e1 - e0, s1 - s0, -1)
                    part = ig_ops.reduce_path(
                        block[:, a - s0 : b - s0],
                        self.step_weights[i][a:b],
                        self.flat_inputs[i][e0:e1] if multiply else None,
                        self._baseline_rows(i, e0, e1) if multiply else None,
                    )
                    mine.append((e0, e1, part))
                offset += size
            sums.append(mine)
        return sums

    # -- chunking --------------------------------------------------------------------
    # An example's attribution is the sum of its pieces' sums, so it is the same bits
    # alone or in any batch only if its steps are cut into the same pieces wherever it
    # sits. So the cut is fixed before any work, from nothing that depends on the batch:
    # whole examples (``self.piece`` None) when the first chunk holds one, else pieces of
    # ``self.piece`` steps, and a chunk is then some whole pieces of one example. Only a
    # chunk halved after running out of memory cuts an example elsewhere.

    def _piece(self, rows: int) -> int:
        """Steps per piece when an example does not fit ``rows``: equal pieces, rounded to
        a multiple of ``pad_to_multiple`` within ``rows`` (50 steps in 32 rows: 28 + 22,
        padded to 28 + 24 rows, not 25 + 25 padded to 28 + 28)."""
        piece = _memory.even_split(self.n_steps, rows)
        multiple = self.pad_to_multiple
        if padded_size(piece, multiple) <= rows:
            return padded_size(piece, multiple)
        return piece - piece % multiple if piece >= multiple else piece

    def _step_pieces(self, s0: int, s1: int) -> list[tuple[int, int]]:
        """Steps ``[s0, s1)`` of an example, cut where its pieces end."""
        if self.piece is None:
            return [(s0, s1)]
        cuts = [s0, *range((s0 // self.piece + 1) * self.piece, s1, self.piece), s1]
        return list(zip(cuts[:-1], cuts[1:]))

    def _chunk_end(self, start: int, size: int) -> int:
        """Where a chunk of about ``size`` rows from ``start`` stops: whole examples, or whole
        pieces of one example (see above)."""
        steps = self.n_steps
        example_end = (start // steps + 1) * steps
        if self.piece is None:
            if start % steps == 0 and size >= steps:
                return start + (size // steps) * steps
            return min(start + size, example_end)  # halved after running out of memory
        end = min(start + size, example_end)
        if end < example_end and size >= self.piece:
            base = (start // steps) * steps
            end = max(base + (end - base) // self.piece * self.piece, start + self.piece)
        return min(end, example_end)

    def _chunk_rows(self, bytes_per_row: float, rows_left: int) -> int:
        """Rows per chunk for the rest of the path, from the measured bytes per row: whole
        examples spread evenly over the examples left (at least one: the first chunk held
        one), or as many pieces of one example as fit (at least one)."""
        most = _memory.max_rows(bytes_per_row, self.device)
        steps = self.n_steps
        if self.piece is None:
            examples_left = max(1, -(-rows_left // steps))
            return _memory.even_split(examples_left, max(1, most // steps)) * steps
        return max(self.piece, most)

    def integrate(
        self, internal_batch_size: int | str | None, multiply: bool
    ) -> list[torch.Tensor]:
        """Per-input ``(N, D)`` attributions in the accumulation dtype.

        With ``"auto"`` the first chunk (whole examples, or the first piece of one, at most
        :data:`_memory.PROBE_ROWS` rows) measures what autograd keeps per row; the other
        chunks are sized from it, and a chunk that runs out of memory is retried with half
        the rows.
        """
        total_rows = self.n_examples * self.n_steps
        totals = [
            torch.zeros((self.n_examples, fx.shape[1]), dtype=self.acc_dtype, device=self.device)
            for fx in self.flat_inputs
        ]
        auto = internal_batch_size == "auto"
        # path + its gradient, per row, across all inputs
        io_bytes_per_row = sum(2 * fx.shape[1] * fx.element_size() for fx in self.flat_inputs)
        if auto:
            first_guess = _memory.PROBE_ACTIVATION_FACTOR * io_bytes_per_row
            size = min(_memory.PROBE_ROWS, _memory.max_rows(first_guess, self.device))
        else:
            size = total_rows if internal_batch_size is None else int(internal_batch_size)
        self.piece = None if size >= self.n_steps else (self._piece(size) if auto else size)
        if self.piece is not None:
            size = self.piece
        # The first chunk measures what a row keeps (bytes, 0: not yet); the next chunks are sized by it.
        per_row = {"measure": auto, "bytes": 0.0}

        def chunk(start: int, stop: int, size: int) -> None:
            counter = _memory.SavedBytesCounter() if per_row["measure"] else None
            with counter.recording() if counter is not None else contextlib.nullcontext():
                rects, grads = self._chunk_gradients(start, stop)
            sums = self._reduce_chunk(rects, grads, multiply)
            del grads
            # added once the chunk has succeeded (a chunk retried smaller is not counted
            # twice), piece after piece in step order
            for i, pieces in enumerate(sums):
                for e0, e1, part in pieces:
                    if part is not None:
                        totals[i][e0:e1] += part
            if counter is not None:
                per_row["measure"] = False
                per_row["bytes"] = counter.total / (stop - start) + io_bytes_per_row

        def resize(stop: int, size: int) -> int:
            if per_row["bytes"]:
                size, per_row["bytes"] = self._chunk_rows(per_row["bytes"], total_rows - stop), 0.0
            return size

        in_chunks(
            total_rows,
            size,
            chunk,
            halve=auto,
            end=self._chunk_end,
            resize=resize,
            device=self.device,
        )
        return totals


def _check_inputs(inputs: TensorOrTuple | Rows) -> tuple[torch.Tensor, ...]:
    if isinstance(inputs, Rows):  # already checked (a served request's rows)
        return (inputs.values,)
    is_tuple = isinstance(inputs, tuple)
    items = inputs if is_tuple else (inputs,)
    if not items:
        raise ValueError("inputs is an empty tuple; pass at least one tensor")
    names = [f"inputs[{i}]" if is_tuple else "inputs" for i in range(len(items))]
    for name, x in zip(names, items):
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor (or a tuple of them), got {type(x).__name__}"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"{name} has dtype {x.dtype}; Integrated Gradients needs floating-point "
                "inputs (convert with .float())"
            )
        if x.dim() == 0:
            raise ValueError(f"{name} is a scalar; inputs need a batch dimension (B, ...)")
    n = items[0].shape[0]
    for name, x in zip(names, items):
        if x.shape[0] != n:
            raise ValueError(f"{name} has batch size {x.shape[0]} but inputs[0] has {n}")
        if x.device != items[0].device:
            raise ValueError(f"{name} is on {x.device} but inputs[0] is on {items[0].device}")
    if n == 0:
        raise ValueError("inputs have batch size 0; nothing to explain")
    for name, x in zip(names, items):
        _checks.check_finite(name, x)
    return tuple(items)


def _format_baselines(
    baselines: BaselineType, inputs: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    """Each baseline as a contiguous ``(1, *D)`` or ``(N, *D)`` tensor in its input's dtype."""
    if isinstance(baselines, (tuple, list)):
        if len(baselines) != len(inputs):
            raise ValueError(f"got {len(baselines)} baselines for {len(inputs)} inputs")
        items = tuple(baselines)
    elif isinstance(baselines, torch.Tensor) and len(inputs) > 1:
        raise ValueError(
            "inputs is a tuple, so baselines must be a tuple of the same length (or a number)"
        )
    else:
        items = (baselines,) * len(inputs)
    formatted = []
    for i, (b, x) in enumerate(zip(items, inputs)):
        row_shape = (1, *x.shape[1:])
        if b is None:
            formatted.append(torch.zeros(row_shape, dtype=x.dtype, device=x.device))
            continue
        if _checks.is_number(b):
            _checks.check_number(f"baselines[{i}]", b)
            formatted.append(torch.full(row_shape, float(b), dtype=x.dtype, device=x.device))
            continue
        if not isinstance(b, torch.Tensor):
            raise TypeError(
                f"baselines[{i}] must be None, a number or a tensor, got {type(b).__name__}"
            )
        b = b.detach().to(device=x.device, dtype=x.dtype)
        try:
            broadcast = torch.broadcast_shapes(b.shape, x.shape)
        except RuntimeError:
            broadcast = None
        if broadcast != x.shape:
            raise ValueError(
                f"baselines[{i}] has shape {tuple(b.shape)}, which does not broadcast to the "
                f"input's shape {tuple(x.shape)}; use a tensor shaped like the input or with batch size 1"
            )
        _checks.check_finite(f"baselines[{i}]", b)
        aligned = b.reshape((1,) * (x.dim() - b.dim()) + tuple(b.shape))
        per_example = aligned.shape[0] == x.shape[0] and x.shape[0] != 1
        shape = tuple(x.shape) if per_example else row_shape
        formatted.append(torch.broadcast_to(aligned, shape).contiguous())
    return tuple(formatted)


def _format_extra_args(args: Any) -> tuple[Any, ...]:
    if args is None:
        return ()
    return tuple(args) if isinstance(args, tuple) else (args,)


__all__ = ["METHODS", "IntegratedGradients", "IntegratedGradientsSettings", "integrated_gradients"]
