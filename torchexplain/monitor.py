"""Explanations inside a training loop, without disturbing the training.

Call :meth:`ExplanationMonitor.step` from any training loop. Every
``every_n_steps`` steps it explains a fixed probe batch and records:

- a JSON-lines log (``monitor.jsonl``): mean |attribution|, the convergence delta
  when the method has one, and how much the maps moved since the last record:
  Spearman rank correlation of |attribution| over all features and over the union
  of both records' top pixels, and the overlap of the top pixels;
- a PNG grid (``monitor_grid.png``): one row per probe example, its heatmap at each
  recorded step side by side, so the maps can be watched sharpening.

The training run is left exactly as it was: every parameter's ``.grad`` (object and
values), ``requires_grad``, the train/eval mode of every submodule, buffers, and the
global RNG streams (torch CPU and CUDA, numpy, Python ``random``) are restored after
each record. The optimizer is never seen. Wrapped models are unwrapped first:
``DistributedDataParallel``/``DataParallel`` (``.module``) and ``torch.compile``
(``._orig_mod``, the same parameters without recompiling for the explainer's batch
shapes); under ``torch.distributed`` only rank 0 records by default.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchexplain import visualize
from torchexplain._model_state import preserved_model_state
from torchexplain.base import Explainer

#: Columns of heatmaps kept in the PNG grid; older records are thinned evenly.
MAX_GRID_COLUMNS = 8
#: Probe examples drawn in the PNG grid (all are explained and logged).
MAX_GRID_ROWS = 8


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module that holds the parameters, under DDP/DataParallel and ``torch.compile`` wrappers."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod  # torch._dynamo.eval_frame.OptimizedModule
    return model


def _is_rank_zero() -> bool:
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return True
    return dist.get_rank() == 0


@contextmanager
def preserved_training_state(model: nn.Module) -> Iterator[None]:
    """``preserved_model_state`` (modes, ``.grad`` objects, flags, buffers), plus what a
    training loop also needs untouched: the values inside the ``.grad`` tensors (an
    explainer is free to accumulate into them in place) and every global RNG stream.
    """
    grads = [(p.grad, p.grad.detach().clone()) for p in model.parameters() if p.grad is not None]
    cuda_devices = sorted(
        {
            t.device.index or 0
            for t in (*model.parameters(), *model.buffers())
            if t.device.type == "cuda"
        }
    )
    numpy_state = np.random.get_state()  # noqa: NPY002 - the user's legacy global stream is what must survive
    python_state = random.getstate()
    try:
        with (
            preserved_model_state(model, eval_mode=False),
            torch.random.fork_rng(devices=cuda_devices),
        ):
            yield
    finally:
        np.random.set_state(numpy_state)  # noqa: NPY002
        random.setstate(python_state)
        with torch.no_grad():
            for grad, values in grads:
                grad.copy_(values)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of each row of ``values`` ``(B, n)``, ties sharing their average rank (float64)."""
    values = values.detach().to("cpu", torch.float64)
    ranks = torch.empty_like(values)
    for row, out in zip(values, ranks, strict=True):
        sorted_values, order = torch.sort(row, stable=True)
        # Ties: every member of a run of equal values gets the mean of its positions.
        _, counts = torch.unique_consecutive(sorted_values, return_counts=True)
        ends = torch.cumsum(counts, 0).double()
        mean_rank = ends - (counts.double() - 1) / 2
        out[order] = torch.repeat_interleave(mean_rank, counts)
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row of ``a`` and ``b`` ``(B, n)`` -> ``(B,)`` float64.

    Pearson correlation of average ranks; NaN for a row where either side is constant.
    """
    ra, rb = average_ranks(a), average_ranks(b)
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    denominator = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return (ra * rb).sum(1) / denominator


def spearman_on_top(a: torch.Tensor, b: torch.Tensor, fraction: float) -> torch.Tensor:
    """Spearman correlation of each row of ``a`` and ``b`` ``(B, n)`` on the union of both rows' top ``fraction``.

    Image attributions are mostly exact zeros (IG gives 0 wherever the input equals
    the baseline, e.g. black MNIST pixels); over all pixels those ties pin the rank
    correlation near 1 whatever the strokes do. On the pixels either map ranks highest
    it follows how the important pixels are reordered.
    """
    k = max(1, round(fraction * a.shape[1]))
    a64, b64 = a.detach().cpu().double(), b.detach().cpu().double()
    out = torch.empty(a.shape[0], dtype=torch.float64)
    for i in range(a.shape[0]):
        union = torch.cat([torch.topk(a64[i], k).indices, torch.topk(b64[i], k).indices]).unique()
        out[i] = spearman(a64[i, union][None], b64[i, union][None])[0]
    return out


def top_overlap(a: torch.Tensor, b: torch.Tensor, fraction: float) -> torch.Tensor:
    """Share of the top ``fraction`` of features by value that ``a`` and ``b`` ``(B, n)`` have in common."""
    k = max(1, round(fraction * a.shape[1]))
    top_a = torch.topk(a.detach().cpu().double(), k, dim=1).indices
    top_b = torch.topk(b.detach().cpu().double(), k, dim=1).indices
    hits = torch.zeros(a.shape, dtype=torch.bool)
    hits.scatter_(1, top_a, True)
    return hits.gather(1, top_b).double().sum(1) / k


class ExplanationMonitor:
    """Explain a fixed probe batch every ``every_n_steps`` training steps.

    Args:
        explainer: an :class:`~torchexplain.base.Explainer` instance (its model is
            replaced by the model passed to :meth:`step`, its settings kept), or an
            Explainer class (built with default settings on that model).
        probe_inputs: ``(B, ...)`` the examples explained at every record.
        probe_targets: ``(B,)`` classes to explain; ``None`` explains the model's
            prediction at each record (the explained class is logged).
        every_n_steps: record when ``global_step % every_n_steps == 0``.
        out_dir: folder for ``monitor.jsonl`` and ``monitor_grid.png``; ``None``
            keeps records in memory only (``monitor.records``).
        rank_zero_only: under ``torch.distributed``, record on rank 0 only.
        top_fraction: share of features counted in the top-pixel overlap.

    Examples:
        >>> from torchexplain import IntegratedGradients
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> monitor = ExplanationMonitor(IntegratedGradients(model, n_steps=8),
        ...                              torch.rand(2, 1, 4, 4), every_n_steps=10)
        >>> record = monitor.step(model, global_step=0)
        >>> sorted(record)[:3]
        ['convergence_delta_max', 'convergence_delta_mean', 'global_step']
        >>> monitor.step(model, global_step=5) is None
        True
    """

    def __init__(
        self,
        explainer: Explainer | type[Explainer],
        probe_inputs: torch.Tensor,
        probe_targets: torch.Tensor | None = None,
        every_n_steps: int = 100,
        out_dir: str | Path | None = None,
        rank_zero_only: bool = True,
        top_fraction: float = 0.1,
    ) -> None:
        if not (
            isinstance(explainer, Explainer)
            or (isinstance(explainer, type) and issubclass(explainer, Explainer))
        ):
            raise TypeError(
                f"explainer must be a torchexplain Explainer instance or class, got {type(explainer).__name__}"
            )
        if not isinstance(probe_inputs, torch.Tensor) or probe_inputs.dim() < 2:
            raise TypeError(
                f"probe_inputs must be a (B, ...) tensor, got {_describe(probe_inputs)}"
            )
        if probe_targets is not None:
            probe_targets = torch.as_tensor(probe_targets)
            if probe_targets.shape != (probe_inputs.shape[0],):
                raise ValueError(
                    f"probe_targets must have shape ({probe_inputs.shape[0]},) to match probe_inputs, "
                    f"got {tuple(probe_targets.shape)}"
                )
        if probe_targets is not None and not explainer.accepts_target:
            raise ValueError(
                f"{_explainer_name(explainer)}.explain() takes no target, so probe_targets must be None "
                "(set the method's own target setting when building the explainer instead)"
            )
        if (
            isinstance(every_n_steps, bool)
            or not isinstance(every_n_steps, int)
            or every_n_steps < 1
        ):
            raise ValueError(f"every_n_steps must be a positive int, got {every_n_steps!r}")
        if not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        self.explainer = explainer
        self.probe_inputs = probe_inputs.detach().clone()
        self.probe_targets = probe_targets
        self.every_n_steps = every_n_steps
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.rank_zero_only = rank_zero_only
        self.top_fraction = top_fraction
        self.records: list[dict[str, Any]] = []
        self.maps: list[tuple[int, np.ndarray]] = []  # (global_step, (B, H, W) float maps)
        self._previous: torch.Tensor | None = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text("")

    @property
    def log_path(self) -> Path:
        if self.out_dir is None:
            raise ValueError("this monitor has no out_dir")
        return self.out_dir / "monitor.jsonl"

    @property
    def grid_path(self) -> Path:
        if self.out_dir is None:
            raise ValueError("this monitor has no out_dir")
        return self.out_dir / "monitor_grid.png"

    def _explainer_for(self, model: nn.Module) -> Explainer:
        if isinstance(self.explainer, type):
            return self.explainer(model)
        return self.explainer.with_model(
            model
        )  # settings shared, model swapped; the user's object untouched

    def step(self, model: nn.Module, global_step: int) -> dict[str, Any] | None:
        """Record if ``global_step`` is due; returns the record, or None when nothing was recorded."""
        if global_step % self.every_n_steps != 0:
            return None
        if self.rank_zero_only and not _is_rank_zero():
            return None
        return self.record(model, global_step)

    def record(self, model: nn.Module, global_step: int) -> dict[str, Any]:
        """Explain the probe batch now, whatever the step; log it and redraw the grid."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        module = unwrap_model(model)
        device = next((p.device for p in module.parameters()), self.probe_inputs.device)
        inputs = self.probe_inputs.to(device)
        targets = None if self.probe_targets is None else self.probe_targets.to(device)
        start = time.perf_counter()
        explainer = self._explainer_for(module)
        with preserved_training_state(module):
            if explainer.accepts_target:
                explanation = explainer.explain(inputs, target=targets)
            else:  # counterfactuals and anchors explain the model's own prediction
                explanation = explainer.explain(inputs)
        seconds = time.perf_counter() - start
        maps = explainer.explanation_map(explanation, inputs).detach().float().cpu()
        flat = maps.reshape(maps.shape[0], -1)
        record: dict[str, Any] = {
            "global_step": int(global_step),
            "method": explanation.meta.get("name"),
            "seconds": seconds,
            "mean_abs_attribution": float(flat.abs().mean()),
        }
        delta = explanation.data.get("convergence_delta")
        if isinstance(delta, torch.Tensor):
            record["convergence_delta_mean"] = float(delta.abs().mean())
            record["convergence_delta_max"] = float(delta.abs().max())
        target = explanation.data.get("target")  # every classifier explanation names its class so
        if isinstance(target, torch.Tensor):
            record["target"] = target.cpu().tolist()
        if self._previous is not None:
            importance, previous = flat.abs(), self._previous.abs()
            record["spearman_vs_previous"] = _nanmean(spearman(importance, previous))
            record["spearman_top_vs_previous"] = _nanmean(
                spearman_on_top(importance, previous, self.top_fraction)
            )
            record["top_overlap_vs_previous"] = float(
                top_overlap(importance, previous, self.top_fraction).mean()
            )
        self._previous = flat
        self.records.append(record)
        self.maps.append((int(global_step), _image_maps(maps)))
        if self.out_dir is not None:
            with self.log_path.open("a") as log:
                log.write(json.dumps(record) + "\n")
            self.save_grid()
        return record

    def save_grid(self, path: str | Path | None = None) -> Path:
        """Draw the PNG grid of heatmaps over time (default ``out_dir/monitor_grid.png``)."""
        if not self.maps:
            raise ValueError("nothing recorded yet: call step() at a due step first")
        target = Path(path) if path is not None else self.grid_path
        columns = _thin(self.maps, MAX_GRID_COLUMNS)
        n_rows = min(MAX_GRID_ROWS, self.probe_inputs.shape[0])
        # Image probes get their picture in the first column; other inputs only heatmaps.
        example = self.probe_inputs[0]
        is_image = example.dim() == 2 or (example.dim() == 3 and example.shape[0] in (1, 3))
        rows, captions = [], []
        for i in range(n_rows):
            image = [self.probe_inputs[i].cpu()] if is_image else []
            rows.append(image + [visualize.heatmap(maps[i]) for _, maps in columns])
            label = "" if self.probe_targets is None else f"class {int(self.probe_targets[i])}, "
            captions.append(f"probe {i}: {label}heatmaps left to right over training")
        titles = ["input"] * is_image + [f"step {s}" for s, _ in columns]
        return visualize.save_grid(rows, captions, target, titles=titles)


def _explainer_name(explainer: Explainer | type[Explainer]) -> str:
    return explainer.__name__ if isinstance(explainer, type) else type(explainer).__name__


def _image_maps(maps: torch.Tensor) -> np.ndarray:
    """``(B, H, W)`` maps for heatmaps: channels summed for image inputs, others kept flat as one row."""
    array = maps.double().numpy()
    if array.ndim == 4:
        return array.sum(axis=1)
    if array.ndim == 3:
        return array
    return array.reshape(array.shape[0], 1, -1)


def _thin(items: list, most: int) -> list:
    """At most ``most`` items, evenly spread, always keeping the first and the last."""
    if len(items) <= most:
        return list(items)
    picks = np.unique(np.round(np.linspace(0, len(items) - 1, most)).astype(int))
    return [items[i] for i in picks]


def _nanmean(values: torch.Tensor) -> float | None:
    finite = values[~torch.isnan(values)]
    return None if finite.numel() == 0 else float(finite.mean())


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def lightning_callback(monitor: ExplanationMonitor) -> Any:
    """A PyTorch Lightning ``Callback`` calling ``monitor.step`` after each training batch.

    Lightning is not a dependency of torchexplain; this needs ``lightning`` (or
    ``pytorch_lightning``) installed.

    Examples:
        >>> trainer = lightning.Trainer(callbacks=[lightning_callback(monitor)])  # doctest: +SKIP
    """
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError as err:
            raise ImportError(
                "lightning_callback needs PyTorch Lightning: pip install lightning"
            ) from err

    class ExplanationMonitorCallback(Callback):
        def __init__(self, monitor: ExplanationMonitor) -> None:
            self.monitor = monitor

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            # Lightning runs callbacks on every rank; the monitor itself keeps to rank 0.
            self.monitor.step(pl_module, trainer.global_step)

    return ExplanationMonitorCallback(monitor)


__all__ = [
    "ExplanationMonitor",
    "lightning_callback",
    "spearman",
    "spearman_on_top",
    "top_overlap",
    "unwrap_model",
]
