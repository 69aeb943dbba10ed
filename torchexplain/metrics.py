"""Explanation quality: is an attribution faithful to the model, stable, and about the model?

- :func:`infidelity` and :func:`sensitivity_max`: Captum's signatures and numbers (Yeh et al.,
  "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019); the inputs' own forward
  pass is run once, not once per batch of perturbations.
- :func:`deletion_curve` / :func:`insertion_curve`: remove (or insert) features most relevant
  first and follow the model's score; the area under the curve (Petsiuk et al., "RISE",
  BMVC 2018). Every step of every example is one batch of rows through the model-call layer.
- :func:`randomisation_check`: explain again after re-initialising the model's layers from the
  top down, and compare with the original attributions (Adebayo et al., "Sanity Checks for
  Saliency Maps", NeurIPS 2018). It randomises a copy: the user's model is not touched.
- :func:`additivity_error`: how far SHAP values are from adding up to the prediction.
- :func:`anchor_precision`: anchors' precision re-estimated on fresh samples.

Perturbation functions are seeded (:func:`noise_perturbation`, :func:`uniform_perturbation`):
they draw from their own generator and leave the global random state as it was. Captum's own
perturbation functions (which draw from the global generator) work too, and give Captum's
numbers under the same seed.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from torchexplain import _checks, _memory
from torchexplain._model_state import preserved_random_state
from torchexplain._random import SeededGenerators
from torchexplain._targets import resolve_target
from torchexplain.anchors.fresh import fresh_precision as anchor_precision
from torchexplain.models.predictor import Predictor, as_probabilities

__all__ = [
    "PerturbationCurve",
    "anchor_precision",
    "RandomisationCheck",
    "additivity_error",
    "deletion_curve",
    "infidelity",
    "insertion_curve",
    "noise_perturbation",
    "randomisation_check",
    "sensitivity_max",
    "spearman",
    "uniform_perturbation",
]


# ----------------------------------------------------------------------------- helpers


def _as_tuple(name: str, value: Any) -> tuple[torch.Tensor, ...]:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if not isinstance(v, torch.Tensor):
            raise TypeError(
                f"{name} must be a tensor or a tuple of tensors, got {type(v).__name__}"
            )
    return values


def _expand(value: Any, n: int, bsz: int) -> Any:
    """Repeat each example's tensor ``n`` times (``repeat_interleave``), as Captum expands
    targets, baselines and extra arguments; anything else is kept."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == bsz and bsz > 0:
        return value.repeat_interleave(n, dim=0)
    if isinstance(value, list) and len(value) == bsz:
        return [v for v in value for _ in range(n)]
    if isinstance(value, tuple):
        return tuple(_expand(v, n, bsz) for v in value)
    return value


def _batches(n_perturb_samples: int, bsz: int, max_examples_per_batch: int | None) -> list[int]:
    """Perturbations per example in each batch, in Captum's order (so a perturbation function
    drawing from a generator draws the same numbers)."""
    step = n_perturb_samples
    if max_examples_per_batch is not None:
        step = min(max(max_examples_per_batch // bsz, 1), n_perturb_samples)
    sizes, done = [], 0
    while done < n_perturb_samples:
        sizes.append(min(step, n_perturb_samples - done))
        done += sizes[-1]
    return sizes


def _forward(forward_func: Callable, inputs: tuple, additional: Any) -> torch.Tensor:
    extra = (
        ()
        if additional is None
        else (additional if isinstance(additional, tuple) else (additional,))
    )
    return forward_func(*inputs, *extra)


def _check_count(name: str, value: Any) -> int:
    return _checks.check_int(name, value, minimum=1)


# ----------------------------------------------------------------------------- perturbations


def noise_perturbation(std: float = 0.1, seed: int = 0) -> Callable:
    """An infidelity perturbation: Gaussian noise ``I`` of ``std``, returned as ``(I, x - I)``
    (Captum's convention), from a generator of its own (seeded once; each call draws anew)."""
    std = _checks.check_number("std", std, low=0.0, low_open=True)
    generator = SeededGenerators(seed)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(
            inputs.shape,
            generator=generator(inputs.device),
            device=inputs.device,
            dtype=inputs.dtype,
        )
        noise = noise * std
        return noise, inputs - noise

    return perturb


def uniform_perturbation(radius: float = 0.02, seed: int = 0) -> Callable:
    """A sensitivity perturbation: ``x + U(-radius, radius)`` (Captum's default, seeded)."""
    radius = _checks.check_number("radius", radius, low=0.0, low_open=True)
    generator = SeededGenerators(seed)

    def perturb(inputs: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(
            inputs.shape,
            generator=generator(inputs.device),
            device=inputs.device,
            dtype=inputs.dtype,
        )
        return inputs + (noise * 2 - 1) * radius

    return perturb


# ----------------------------------------------------------------------------- infidelity


def infidelity(
    forward_func: Callable[..., torch.Tensor],
    perturb_func: Callable,
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
    attributions: torch.Tensor | tuple[torch.Tensor, ...],
    baselines: Any = None,
    additional_forward_args: Any = None,
    target: Any = None,
    n_perturb_samples: int = 10,
    max_examples_per_batch: int | None = None,
    normalize: bool = False,
) -> torch.Tensor:
    """Infidelity of attributions: ``E[(I . a - (f(x) - f(x - I)))^2]`` over perturbations ``I``.

    Captum's ``captum.metrics.infidelity``, same arguments and numbers: ``perturb_func(inputs)``
    (or ``perturb_func(inputs, baselines)``) gets each example repeated
    ``n_perturb_samples`` times (in batches of ``max_examples_per_batch`` rows) and returns
    ``(perturbations, perturbed_inputs)``; ``normalize=True`` scales the attributions by the
    least-squares factor first. The model's output at the inputs is computed once.

    Args:
        forward_func: the model: inputs (and ``additional_forward_args``) -> ``(B, ...)``.
        perturb_func: see above (e.g. :func:`noise_perturbation`).
        inputs: ``(B, ...)`` or a tuple of such tensors.
        attributions: shaped like ``inputs``.
        baselines: passed to ``perturb_func`` (expanded like the inputs when per example).
        additional_forward_args: extra model arguments (tensors per example expanded).
        target: the output explained (see :mod:`torchexplain._targets`; None: the prediction).
        n_perturb_samples: perturbations per example.
        max_examples_per_batch: most rows per batch of perturbations.
        normalize: scale attributions by ``beta = E[(I.a)(df)] / E[(I.a)^2]`` first.

    Returns:
        ``(B,)`` infidelity per example.
    """
    inputs_t = _as_tuple("inputs", inputs)
    attributions_t = _as_tuple("attributions", attributions)
    if len(inputs_t) != len(attributions_t) or any(
        a.shape != x.shape for a, x in zip(attributions_t, inputs_t)
    ):
        raise ValueError(
            "attributions must be shaped like inputs: "
            f"{[tuple(a.shape) for a in attributions_t]} vs {[tuple(x.shape) for x in inputs_t]}"
        )
    n = _check_count("n_perturb_samples", n_perturb_samples)
    bsz = inputs_t[0].shape[0]
    baselines_t = (
        None if baselines is None else (baselines if isinstance(baselines, tuple) else (baselines,))
    )
    takes_baselines = baselines is not None
    with torch.no_grad():
        output = _forward(forward_func, inputs_t, additional_forward_args)
        resolved = resolve_target(target, output)
        at_inputs = resolved.scores(output).double()
        sums = torch.zeros(3, bsz, dtype=torch.float64, device=at_inputs.device)
        for size in _batches(n, bsz, max_examples_per_batch):
            expanded = tuple(x.repeat_interleave(size, dim=0) for x in inputs_t)
            call_inputs = expanded[0] if len(expanded) == 1 else expanded
            if takes_baselines:
                expanded_b = tuple(
                    b.repeat_interleave(size, dim=0)
                    if isinstance(b, torch.Tensor) and b.dim() and b.shape[0] == bsz and bsz > 1
                    else b
                    for b in baselines_t
                )
                result = perturb_func(
                    call_inputs, expanded_b[0] if len(expanded_b) == 1 else expanded_b
                )
            else:
                result = perturb_func(call_inputs)
            perturbations, perturbed = (_as_tuple("perturbations", r) for r in result)
            if len(perturbations) != len(inputs_t) or any(
                p.shape != x.shape for p, x in zip(perturbations, expanded)
            ):
                raise ValueError(
                    "perturb_func must return perturbations shaped like the expanded inputs"
                )
            outputs = _forward(forward_func, perturbed, _expand(additional_forward_args, size, bsz))
            rows = torch.arange(bsz, device=outputs.device).repeat_interleave(size)
            differences = (
                at_inputs.repeat_interleave(size) - resolved.scores(outputs, rows).double()
            ).view(bsz, size)
            # a . I per row in the inputs' dtype (as Captum), without repeating the attributions
            products = sum(
                (a.unsqueeze(1) * p.view(bsz, size, *p.shape[1:])).reshape(bsz, size, -1).sum(-1)
                for a, p in zip(attributions_t, perturbations)
            ).double()
            sums[0] += (
                (products * products).sum(1)
                if normalize
                else ((products - differences) ** 2).sum(1)
            )
            sums[1] += (products * differences).sum(1)
            sums[2] += (differences * differences).sum(1)
    if normalize:
        beta = torch.where(
            sums[0] != 0, sums[1] / sums[0].clamp_min(1e-300), torch.zeros_like(sums[1])
        )
        values = beta * beta * sums[0] - 2 * beta * sums[1] + sums[2]
    else:
        values = sums[0]
    return (values / n).to(inputs_t[0].dtype)


# ----------------------------------------------------------------------------- sensitivity


def sensitivity_max(
    explanation_func: Callable[..., Any],
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
    perturb_func: Callable | None = None,
    perturb_radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: str | float = "fro",
    max_examples_per_batch: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """The largest relative change of an explanation under small input perturbations.

    Captum's ``captum.metrics.sensitivity_max``, same arguments and numbers:
    ``max_j ||e(x + d_j) - e(x)|| / ||e(x)||`` over ``n_perturb_samples`` perturbations
    ``perturb_func(x)`` (or ``perturb_func(x, perturb_radius)``); ``kwargs`` go to the explanation
    function, with ``target``, ``baselines`` and ``additional_forward_args`` expanded per
    perturbation as Captum does.

    Args:
        explanation_func: ``(inputs, **kwargs) -> attributions`` (e.g. an IG explainer's
            ``lambda x, **kw: ig.explain(x, **kw).attributions``).
        inputs: ``(B, ...)`` or a tuple.
        perturb_func: default :func:`uniform_perturbation` of ``perturb_radius`` (seeded).
        perturb_radius: its radius.
        n_perturb_samples: perturbations per example.
        norm_ord: the norm (``"fro"``: Euclidean over all attributions of an example).
        max_examples_per_batch: most rows per explanation call.
        **kwargs: passed to ``explanation_func``.

    Returns:
        ``(B,)`` the largest sensitivity per example.
    """
    inputs_t = _as_tuple("inputs", inputs)
    n = _check_count("n_perturb_samples", n_perturb_samples)
    bsz = inputs_t[0].shape[0]
    if perturb_func is None:
        perturb_func = uniform_perturbation(perturb_radius)
    takes_radius = len(inspect.signature(perturb_func).parameters) > 1
    with torch.no_grad():
        original = _as_tuple("explanation_func's result", explanation_func(inputs, **kwargs))
        flat = torch.cat([e.reshape(bsz, -1) for e in original], 1)
        scale = torch.linalg.vector_norm(flat, ord=2 if norm_ord == "fro" else norm_ord, dim=1)
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        best = None
        for size in _batches(n, bsz, max_examples_per_batch):
            expanded = tuple(x.repeat_interleave(size, dim=0) for x in inputs_t)
            call_inputs = expanded[0] if len(expanded) == 1 else expanded
            perturbed = (
                perturb_func(call_inputs, perturb_radius)
                if takes_radius
                else perturb_func(call_inputs)
            )
            call_kwargs = {
                key: _expand(value, size, bsz)
                if key in ("target", "baselines", "additional_forward_args")
                else value
                for key, value in kwargs.items()
            }
            if (
                "baselines" in kwargs
                and isinstance(kwargs["baselines"], torch.Tensor)
                and kwargs["baselines"].shape != inputs_t[0].shape
            ):
                call_kwargs["baselines"] = kwargs["baselines"]
            changed = _as_tuple(
                "explanation_func's result", explanation_func(perturbed, **call_kwargs)
            )
            difference = torch.cat(
                [
                    (o.repeat_interleave(size, dim=0) - c).reshape(bsz * size, -1)
                    for o, c in zip(original, changed)
                ],
                1,
            )
            norms = torch.linalg.vector_norm(
                difference, ord=2 if norm_ord == "fro" else norm_ord, dim=1
            )
            values = (norms / scale.repeat_interleave(size)).view(bsz, size).amax(1)
            best = values if best is None else torch.maximum(best, values)
    return best


# ----------------------------------------------------------------------------- deletion / insertion


@dataclasses.dataclass(frozen=True)
class PerturbationCurve:
    """The model's score as features are removed (deletion) or inserted (insertion).

    Attributes:
        fractions: ``(S + 1,)`` the share of features removed / inserted at each step.
        scores: ``(B, S + 1)`` the explained score at each step.
        auc: ``(B,)`` the trapezoidal area under each curve, over fractions 0..1 (deletion:
            lower is better, insertion: higher is better).
        mode: ``"deletion"`` or ``"insertion"``.
        order: ``"most_relevant_first"`` or ``"least_relevant_first"``.
    """

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor
    mode: str
    order: str


def _feature_ids(inputs: torch.Tensor, feature_mask: Any) -> tuple[torch.Tensor, int]:
    """``(B, ...)`` int64 feature ids per element (0..F-1 for each example) and F."""
    if feature_mask is None:
        ids = torch.arange(inputs[0].numel(), device=inputs.device).view(inputs.shape[1:])
        return ids.expand(inputs.shape).contiguous(), inputs[0].numel()
    if not isinstance(feature_mask, torch.Tensor) or feature_mask.is_floating_point():
        raise TypeError("feature_mask must be an integer tensor of feature ids")
    mask = feature_mask.to(inputs.device).long()
    try:
        mask = mask.expand(inputs.shape)
    except RuntimeError as err:
        raise ValueError(
            f"feature_mask of shape {tuple(feature_mask.shape)} does not broadcast to the inputs {tuple(inputs.shape)}"
        ) from err
    if bool((mask < 0).any()):
        raise ValueError("feature_mask ids must be >= 0")
    # relabel each example's ids to 0..F_b-1 in order
    flat = mask.reshape(inputs.shape[0], -1)
    relabelled = torch.empty_like(flat)
    counts = []
    for b in range(flat.shape[0]):
        unique, inverse = torch.unique(flat[b], return_inverse=True)
        relabelled[b] = inverse
        counts.append(unique.numel())
    if len(set(counts)) != 1:
        raise ValueError("feature_mask must give every example the same number of features")
    return relabelled.view(inputs.shape), counts[0]


def deletion_curve(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    *,
    target: Any = None,
    baselines: float | torch.Tensor = 0.0,
    feature_mask: torch.Tensor | None = None,
    n_steps: int = 20,
    order: str = "most_relevant_first",
    model_output: str = "probabilities",
    mode: str = "deletion",
    batch_size: int | str | None = "auto",
    predictor_input: str = "auto",
) -> PerturbationCurve:
    """Replace features with the baseline, most relevant first, and follow the model's score.

    A feature's relevance is the sum of its elements' attributions (a superpixel's, a column's).
    Step ``s`` of ``n_steps`` has replaced the ``round(s * F / n_steps)`` most relevant features
    (every count when ``F <= n_steps``); ties in relevance go by feature id.

    Args:
        model: ``(N, ...) -> (N, ...)`` outputs.
        inputs: ``(B, ...)``.
        attributions: shaped like ``inputs``.
        target: the output followed (None: the prediction at the input).
        baselines: what a removed feature becomes: a number or a tensor broadcastable to the
            inputs.
        feature_mask: integer ids of the features (superpixels, column groups), broadcastable
            to the inputs; default: every element is a feature.
        n_steps: steps from none to all features.
        order: ``"most_relevant_first"`` (MoRF) or ``"least_relevant_first"`` (LeRF).
        model_output: ``"probabilities"`` (the outputs as they are) or ``"logits"`` (softmax).
        mode: ``"deletion"`` or ``"insertion"`` (start from the baseline, insert features).
        batch_size: rows per model call.
        predictor_input: what the model is handed: ``"tensor"``, ``"numpy"`` or ``"auto"``
            (tensors for an ``nn.Module``, numpy arrays for any other callable).

    Returns:
        A :class:`PerturbationCurve`.
    """
    _checks.check_choice("order", order, ("most_relevant_first", "least_relevant_first"))
    _checks.check_choice("model_output", model_output, ("probabilities", "logits"))
    _checks.check_choice("mode", mode, ("deletion", "insertion"))
    n_steps = _check_count("n_steps", n_steps)
    if not isinstance(inputs, torch.Tensor) or not isinstance(attributions, torch.Tensor):
        raise TypeError("inputs and attributions must be tensors")
    if attributions.shape != inputs.shape:
        raise ValueError(
            f"attributions must be shaped like inputs {tuple(inputs.shape)}, got {tuple(attributions.shape)}"
        )
    ids, n_features = _feature_ids(inputs, feature_mask)
    b = inputs.shape[0]
    relevance = torch.zeros(b, n_features, dtype=torch.float64, device=inputs.device)
    relevance.scatter_add_(
        1, ids.reshape(b, -1), attributions.detach().double().reshape(b, -1).to(inputs.device)
    )
    ranked = torch.argsort(relevance, dim=1, descending=order == "most_relevant_first", stable=True)
    rank = torch.empty_like(ranked).scatter_(
        1, ranked, torch.arange(n_features, device=inputs.device).expand(b, -1)
    )
    element_rank = rank.gather(1, ids.reshape(b, -1)).view(inputs.shape)
    counts = (
        torch.arange(n_features + 1)
        if n_features <= n_steps
        else torch.round(
            torch.arange(n_steps + 1, dtype=torch.float64) * n_features / n_steps
        ).long()
    ).to(inputs.device)
    steps = counts.numel()
    baseline = torch.as_tensor(baselines, dtype=inputs.dtype, device=inputs.device).expand(
        inputs.shape
    )

    def build(start: int, stop: int) -> torch.Tensor:
        k = torch.arange(start, stop, device=inputs.device)
        example, step = k // steps, k % steps
        changed = element_rank[example] < counts[step].view(-1, *[1] * (inputs.dim() - 1))
        if mode == "insertion":
            changed = ~changed
        return torch.where(changed, baseline[example], inputs[example])

    bytes_per_row = inputs[0].numel() * inputs.element_size() * _memory.FORWARD_BYTES_FACTOR
    predictor = Predictor.wrap(
        model,
        takes=predictor_input,
        device=inputs.device,
        batch_size=batch_size,
        auto_rows=lambda total: _memory.rows_per_chunk(bytes_per_row, inputs.device, total),
    )
    with preserved_random_state(), torch.no_grad():
        at_inputs = predictor.outputs(inputs)
        if model_output == "logits":
            at_inputs = as_probabilities(at_inputs, "logits")
        resolved = resolve_target(target, at_inputs)
        outputs = predictor.map(b * steps, build)
        if model_output == "logits":
            outputs = as_probabilities(outputs, "logits")
        rows = torch.arange(b, device=outputs.device).repeat_interleave(steps)
        scores = resolved.scores(outputs, rows).double().view(b, steps).cpu()
    fractions = counts.double().cpu() / n_features
    auc = torch.trapezoid(scores, fractions, dim=1)
    return PerturbationCurve(fractions=fractions, scores=scores, auc=auc, mode=mode, order=order)


def insertion_curve(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    **options: Any,
) -> PerturbationCurve:
    """:func:`deletion_curve` with ``mode="insertion"``: start from the baseline and insert the
    features, most relevant first (higher area is better)."""
    return deletion_curve(model, inputs, attributions, mode="insertion", **options)


# ----------------------------------------------------------------------------- randomisation


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of each row of ``a`` and ``b`` ``(B, N)`` (ties: mean ranks)."""

    def ranks(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        order = x.argsort(dim=1, stable=True)
        sorted_x = x.gather(1, order)
        out = torch.empty_like(x)
        for row in range(x.shape[0]):
            values, inverse, counts = torch.unique_consecutive(
                sorted_x[row], return_inverse=True, return_counts=True
            )
            ends = torch.cumsum(counts, 0).double()
            mean_rank = ends - (counts.double() - 1) / 2
            out[row, order[row]] = mean_rank[inverse]
        return out

    ra, rb = ranks(a), ranks(b)
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    bottom = torch.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    return torch.where(bottom > 0, (ra * rb).sum(1) / bottom.clamp_min(1e-300), torch.nan)


def _ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM (scikit-image) of each example's |attribution| map summed over channels, each scaled
    to [0, 1] by its largest value; NaN for inputs that are not images ``(B, C, H, W)``."""
    if a.dim() != 4 or min(a.shape[-2:]) < 7:
        return torch.full((a.shape[0],), torch.nan, dtype=torch.float64)
    from skimage.metrics import structural_similarity

    def maps(x: torch.Tensor) -> np.ndarray:
        m = x.detach().abs().sum(1).double().cpu()
        top = m.flatten(1).amax(1).clamp_min(1e-300).view(-1, 1, 1)
        return (m / top).numpy()

    ma, mb = maps(a), maps(b)
    return torch.tensor(
        [structural_similarity(x, y, data_range=1.0) for x, y in zip(ma, mb)], dtype=torch.float64
    )


@dataclasses.dataclass(frozen=True)
class RandomisationCheck:
    """Attributions after cascading randomisation, compared with the model's own.

    Attributes:
        layers: the layers re-initialised, in order (top first; step ``i`` has randomised
            ``layers[: i + 1]``).
        spearman: ``(L, B)`` rank correlation of the attributions with the original ones.
        spearman_abs: ``(L, B)`` the same on absolute values.
        ssim: ``(L, B)`` structural similarity of the |attribution| maps (NaN for non-images).
    """

    layers: list[str]
    spearman: torch.Tensor
    spearman_abs: torch.Tensor
    ssim: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "spearman_mean": self.spearman.mean(1).tolist(),
            "spearman_abs_mean": self.spearman_abs.mean(1).tolist(),
            "ssim_mean": self.ssim.mean(1).tolist(),
        }


def randomisation_check(
    explain: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
) -> RandomisationCheck:
    """Adebayo et al.'s model-parameter randomisation test, cascading from the top layer.

    A copy of ``model`` has its layers re-initialised one after another (each layer's
    ``reset_parameters()`` under ``seed + i``), and ``explain(copy, inputs)`` runs after each;
    attributions that stay similar to the original ones do not depend on what the model learnt.

    Args:
        explain: ``(model, inputs) -> attributions`` shaped like ``inputs``.
        model: the trained model (left as it is).
        inputs: ``(B, ...)``.
        layers: names of the modules to randomise, top first (default: every module with
            parameters of its own and ``reset_parameters``, in reverse order of definition).
        seed: the re-initialisations' seed.

    Returns:
        A :class:`RandomisationCheck`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"randomisation_check needs an nn.Module (its parameters are re-initialised), got {type(model).__name__}"
        )
    copy_of_model = copy.deepcopy(model)
    modules = dict(copy_of_model.named_modules())
    if layers is None:
        layers = [
            name
            for name, module in reversed(list(modules.items()))
            if hasattr(module, "reset_parameters")
            and any(True for _ in module.parameters(recurse=False))
        ]
    unknown = [
        name
        for name in layers
        if name not in modules or not hasattr(modules[name], "reset_parameters")
    ]
    if unknown or not layers:
        raise ValueError(
            f"layers must name modules with reset_parameters(); not usable: {unknown or 'none given'}"
        )
    original = explain(copy_of_model, inputs).detach()
    if original.shape != inputs.shape:
        raise ValueError(
            f"explain must return attributions shaped like inputs {tuple(inputs.shape)}, got {tuple(original.shape)}"
        )
    b = inputs.shape[0]
    rho, rho_abs, ssim = [], [], []
    for i, name in enumerate(layers):
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed + i)
            modules[name].reset_parameters()
        changed = explain(copy_of_model, inputs).detach()
        rho.append(spearman(original.reshape(b, -1), changed.reshape(b, -1)))
        rho_abs.append(spearman(original.reshape(b, -1).abs(), changed.reshape(b, -1).abs()))
        ssim.append(_ssim(original, changed))
    return RandomisationCheck(
        layers=list(layers),
        spearman=torch.stack(rho).cpu(),
        spearman_abs=torch.stack(rho_abs).cpu(),
        ssim=torch.stack(ssim),
    )


# ----------------------------------------------------------------------------- SHAP


def additivity_error(explanation: Any) -> torch.Tensor:
    """``(B, K)`` ``|expected_value + sum(shap_values) - f(x)|`` of a SHAP explanation (in the
    explainer's link space: log-odds for ``link="logit"``)."""
    data = explanation.data
    if "shap_values" not in data or "expected_value" not in data:
        raise ValueError("additivity_error needs a SHAP explanation (shap_values, expected_value)")
    values = data["shap_values"].double()
    predictions = data["predictions"].double()
    predictions = predictions if predictions.dim() == 2 else predictions[:, None]
    params = explanation.meta.get("params") or {}
    if params.get("link") == "logit":
        eps = float(params.get("logit_clip", 1e-7))
        p = predictions.clamp(eps, 1 - eps)
        predictions = torch.log(p / (1 - p))
    total = (
        values.reshape(values.shape[0], values.shape[1], -1).sum(-1)
        + data["expected_value"].double()
    )
    return (total - predictions.to(total.device)).abs()
