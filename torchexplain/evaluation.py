"""Compare explanation methods on one model and one set of inputs: ``evaluate`` (and
``torchexplain evaluate``) runs the quality metrics of :mod:`torchexplain.metrics` over several
explainers and settings and writes a JSON table and a picture.

Every method is asked for one map per example shaped like the inputs, through the contract
(``explainer.explanation_map``), or is a function ``inputs -> maps``; each explains its own
default target, the model's prediction, which is also what the metrics follow. Include
:func:`random_attributions` as the control: a method that does not beat it says nothing about
the model.

| metric | what | better |
|---|---|---|
| ``infidelity`` | Captum's, ``normalize=True`` (scale-free), Gaussian noise of ``noise_std`` | lower |
| ``sensitivity_max`` | Captum's, uniform noise of ``sensitivity_radius`` | lower |
| ``deletion`` | area under the score as features go, most relevant first | lower |
| ``insertion`` | area under the score as features come back, most relevant first | higher |
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from torchexplain import _checks, metrics
from torchexplain._random import SeededGenerators
from torchexplain._targets import resolve_target
from torchexplain.base import Explainer

__all__ = ["METRICS", "Evaluation", "evaluate", "random_attributions"]

#: the metrics, and whether lower is better
METRICS = {"infidelity": True, "sensitivity_max": True, "deletion": True, "insertion": False}


def random_attributions(seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """The control: standard normal maps shaped like the inputs, a fresh draw per call, from a
    generator of its own."""
    generator = SeededGenerators(seed)

    def attribute(inputs: torch.Tensor) -> torch.Tensor:
        return torch.randn(inputs.shape, generator=generator(inputs.device), device=inputs.device)

    return attribute


def _attribution_function(name: str, method: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    options: dict[str, Any] = {}
    if isinstance(method, tuple) and len(method) == 2 and isinstance(method[1], dict):
        method, options = method
    if isinstance(method, Explainer):

        def attribute(inputs: torch.Tensor) -> torch.Tensor:
            explanation = method.explain(inputs, **options)
            return method.explanation_map(explanation, inputs).to(inputs.device)

        return attribute
    if options:
        raise TypeError(f"methods[{name!r}]: explain options go with an Explainer, not a function")
    if callable(method):
        return method
    raise TypeError(
        f"methods[{name!r}] must be an Explainer or a function inputs -> maps, got {type(method).__name__}"
    )


@dataclasses.dataclass
class Evaluation:
    """What :func:`evaluate` measured.

    Attributes:
        methods: the methods' names, in the order given.
        metrics: the metrics run.
        per_example: method -> metric -> ``(B,)`` values.
        curves: method -> ``"deletion"``/``"insertion"`` -> :class:`~torchexplain.metrics.PerturbationCurve`.
        seconds: method -> seconds spent (attributions and metrics).
    """

    methods: list[str]
    metrics: list[str]
    per_example: dict[str, dict[str, torch.Tensor]]
    curves: dict[str, dict[str, metrics.PerturbationCurve]]
    seconds: dict[str, float]

    def table(self) -> dict[str, dict[str, float]]:
        """method -> metric -> mean over the examples."""
        return {
            m: {k: float(v.double().mean()) for k, v in self.per_example[m].items()}
            for m in self.methods
        }

    def ranking(self) -> dict[str, list[str]]:
        """metric -> the methods, best first."""
        table = self.table()
        return {
            k: sorted(self.methods, key=lambda m: table[m][k] if METRICS[k] else -table[m][k])
            for k in self.metrics
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "methods": self.methods,
            "metrics": self.metrics,
            "lower_is_better": {k: METRICS[k] for k in self.metrics},
            "mean": self.table(),
            "ranking": self.ranking(),
            "per_example": {
                m: {k: v.tolist() for k, v in d.items()} for m, d in self.per_example.items()
            },
            "curves": {
                m: {
                    k: {"fractions": c.fractions.tolist(), "mean_scores": c.scores.mean(0).tolist()}
                    for k, c in d.items()
                }
                for m, d in self.curves.items()
            },
            "seconds": self.seconds,
        }

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write ``evaluation.json`` and ``evaluation.png`` (the mean deletion and insertion curves
        of every method, and a bar per metric) into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / "evaluation.json"
        json_path.write_text(json.dumps(self.to_dict(), indent=1))
        picture = out / "evaluation.png"
        picture.write_bytes(_picture(self))
        return {"json": json_path, "png": picture}


def _picture(evaluation: Evaluation) -> bytes:
    from torchexplain._plotting import COLOURS as _COLOURS
    from torchexplain._plotting import png as _png
    from torchexplain._plotting import pyplot as _pyplot

    plt = _pyplot()
    curve_kinds = [k for k in ("deletion", "insertion") if k in evaluation.metrics]
    columns = max(len(curve_kinds), len(evaluation.metrics))
    rows = 2 if curve_kinds else 1
    fig, grid = plt.subplots(rows, columns, figsize=(3.8 * columns, 3.4 * rows), squeeze=False)
    for axis in grid.flat:
        axis.set_visible(False)
    curve_axes, bar_axes = (
        list(grid[0][: len(curve_kinds)]),
        list(grid[rows - 1][: len(evaluation.metrics)]),
    )
    for axis in curve_axes + bar_axes:
        axis.set_visible(True)
    table = evaluation.table()
    for axis, kind in zip(curve_axes, curve_kinds):
        for i, method in enumerate(evaluation.methods):
            curve = evaluation.curves[method][kind]
            axis.plot(
                curve.fractions.numpy(),
                curve.scores.mean(0).numpy(),
                color=_COLOURS[i % 8],
                label=f"{method} (AUC {table[method][kind]:.3f})",
            )
        axis.set_xlabel(f"share of features {'removed' if kind == 'deletion' else 'inserted'}")
        axis.set_ylabel("score of the predicted class")
        axis.set_title(f"{kind} ({'lower' if METRICS[kind] else 'higher'} is better)")
        axis.legend(fontsize=7)
    for axis, metric in zip(bar_axes, evaluation.metrics):
        values = [table[m][metric] for m in evaluation.methods]
        axis.bar(range(len(values)), values, color=[_COLOURS[i % 8] for i in range(len(values))])
        axis.set_xticks(range(len(values)), evaluation.methods, rotation=30, ha="right", fontsize=8)
        axis.set_title(f"{metric} ({'lower' if METRICS[metric] else 'higher'} is better)")
    fig.tight_layout()
    return _png(fig)


def evaluate(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    methods: dict[str, Any],
    *,
    metrics_to_run: Sequence[str] = tuple(METRICS),
    baselines: float | torch.Tensor = 0.0,
    feature_mask: torch.Tensor | None = None,
    n_infidelity_samples: int = 100,
    n_sensitivity_samples: int = 10,
    noise_std: float = 0.1,
    sensitivity_radius: float = 0.02,
    n_steps: int = 20,
    model_output: str = "logits",
    seed: int = 0,
) -> Evaluation:
    """Run the quality metrics over several methods on the same inputs.

    Args:
        model: ``(N, ...) -> (N, K)`` class scores.
        inputs: ``(B, ...)``.
        methods: name -> an :class:`~torchexplain.base.Explainer` (fitted where it needs to be),
            an ``(explainer, explain_options)`` pair (``(ig, {"baselines": mean_digit})``), or a
            function ``inputs -> maps`` (e.g. :func:`random_attributions`).
        metrics_to_run: some of :data:`METRICS`.
        baselines: what deleted features become (deletion, insertion).
        feature_mask: features of the curves (default every element).
        n_infidelity_samples: noise draws per example for infidelity (forward passes only; with
            few, a random map fits the noise by chance: the least-squares scale of
            ``normalize=True`` has as many free choices as draws).
        n_sensitivity_samples: perturbations per example for sensitivity_max (each one an
            explanation).
        noise_std: infidelity's Gaussian noise.
        sensitivity_radius: sensitivity_max's uniform noise.
        n_steps: steps of the curves.
        model_output: ``"logits"`` (the curves follow the softmax) or ``"probabilities"``.
        seed: the perturbations' seed (the same for every method).

    Returns:
        An :class:`Evaluation` (``.save(out)`` writes the JSON and the picture).
    """
    if not methods:
        raise ValueError("methods is empty: give name -> explainer (or function)")
    unknown = [m for m in metrics_to_run if m not in METRICS]
    if unknown:
        raise ValueError(f"metrics_to_run: unknown {unknown}; the metrics are {list(METRICS)}")
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a tensor, got {type(inputs).__name__}")
    n_infidelity = _checks.check_int("n_infidelity_samples", n_infidelity_samples, minimum=1)
    n_sensitivity = _checks.check_int("n_sensitivity_samples", n_sensitivity_samples, minimum=1)
    with torch.no_grad():
        target = resolve_target(None, model(inputs)).per_example
    per_example: dict[str, dict[str, torch.Tensor]] = {}
    curves: dict[str, dict[str, metrics.PerturbationCurve]] = {}
    seconds: dict[str, float] = {}
    for name, method in methods.items():
        attribute = _attribution_function(name, method)
        start = time.perf_counter()
        maps = attribute(inputs)
        if not isinstance(maps, torch.Tensor) or maps.shape != inputs.shape:
            raise ValueError(
                f"methods[{name!r}] must give maps shaped like inputs {tuple(inputs.shape)}"
            )
        results: dict[str, torch.Tensor] = {}
        curves[name] = {}
        if "infidelity" in metrics_to_run:
            results["infidelity"] = metrics.infidelity(
                model,
                metrics.noise_perturbation(noise_std, seed),
                inputs,
                maps,
                target=target,
                n_perturb_samples=n_infidelity,
                normalize=True,
            ).cpu()
        if "sensitivity_max" in metrics_to_run:
            results["sensitivity_max"] = metrics.sensitivity_max(
                attribute,
                inputs,
                perturb_func=metrics.uniform_perturbation(sensitivity_radius, seed),
                n_perturb_samples=n_sensitivity,
            ).cpu()
        for kind in ("deletion", "insertion"):
            if kind in metrics_to_run:
                curve = metrics.deletion_curve(
                    model,
                    inputs,
                    maps,
                    target=target,
                    baselines=baselines,
                    feature_mask=feature_mask,
                    n_steps=n_steps,
                    model_output=model_output,
                    mode=kind,
                    predictor_input="tensor",
                )
                curves[name][kind] = curve
                results[kind] = curve.auc
        per_example[name] = results
        seconds[name] = round(time.perf_counter() - start, 3)
    return Evaluation(
        methods=list(methods),
        metrics=[m for m in METRICS if m in metrics_to_run],
        per_example=per_example,
        curves=curves,
        seconds=seconds,
    )
