"""Counterfactuals by gradient search, a whole batch at once.

A counterfactual answers "what is the smallest change to this input that makes
the model predict something else?". Following Wachter et al. (2017), for each
instance ``x`` we minimise

    (f_t(x') - target_proba)^2 + lam * ||x' - x||_1      (L1 optionally MAD-scaled)

over ``x'`` inside ``feature_range``, and search ``lam`` per instance: the largest
``lam`` (the strongest pull towards ``x``) whose search still ends on a valid
counterfactual gives the closest one.

Alibi's ``Counterfactual`` runs this one instance at a time. Here every instance
of a batch carries its own state (``lam``, its bracket, the round it is in, its
own Adam moments and step count, its best counterfactual so far), and all of
them advance together: one forward and one backward pass per iteration for the
instances still searching. An instance whose round ends starts its next round
at once while the others carry on; an instance that has finished drops out of
the batch. Nothing couples instances, so a batch gives the result each instance
would get alone.

Reference: Wachter, Mittelstadt, Russell, "Counterfactual Explanations without
Opening the Black Box", Harvard Journal of Law & Technology, 2017.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from torchexplain import _checks
from torchexplain._model_state import preserved_model_state
from torchexplain.base import Explainer, functional_twin, is_image_batch, register_explainer
from torchexplain.explanation import Explanation
from torchexplain.models import Rows, as_probabilities, call_padded, in_chunks
from torchexplain.settings import ModelCallSettings, setting

__all__ = [
    "Counterfactual",
    "CounterfactualSettings",
    "counterfactual",
    "median_absolute_deviation",
]

_MODEL_OUTPUTS = ("logits", "probabilities")
_ADAM_BETA1, _ADAM_BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
# Phases of an instance's lambda search.
_SWEEP, _BISECT, _DONE = 0, 1, 2
# The first sweep covers this many orders of magnitude of lam, max_iter // 10 steps each.
_SWEEP_ORDERS = 10
# A bisection round "finds" when at least this many of its iterates were valid (Alibi's 5).
_MIN_VALID_PER_ROUND = 5
# Instances searched together on the CPU when internal_batch_size is "auto". On
# MnistCNN (2 cores, quiet) a forward + input-gradient backward cost 0.49-0.51 ms per
# image at 64, 0.55-0.75 at 32, 0.72-0.77 at 256 and ~2 ms at 1; large chunks also
# lose to glibc returning their freed activations to the OS between steps.
_CPU_CHUNK = 64

TargetClass = str | int | torch.Tensor
FeatureRange = tuple[float | torch.Tensor, float | torch.Tensor]


def median_absolute_deviation(train_data: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """Per-feature median absolute deviation of training data, floored at ``eps``.

    Dividing each feature's L1 change by its MAD makes a change of one "typical
    spread" cost the same on every feature (Wachter et al. 2017, eq. 5). Features
    that never vary (MAD 0) get ``eps`` so they stay finite but expensive.

    Args:
        train_data: ``(N, ...)`` training inputs, ``N >= 1``.
        eps: floor for the MAD, ``> 0``.

    Returns:
        ``train_data.shape[1:]``, the MAD of each feature.

    Examples:
        >>> median_absolute_deviation(torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]))
        tensor([1.0000, 0.0100])
    """
    train_data = Rows.of(train_data, "train_data", numpy=False).values
    _checks.check_number("eps", eps, low=0.0, low_open=True)
    median = train_data.median(dim=0).values
    mad = (train_data - median).abs().median(dim=0).values
    return mad.clamp_min(eps)


def target_class_check(*names: str) -> _checks.FieldCheck:
    """``target_class``: one of ``names``, an int >= 0 (as an int) or a ``(B,)`` integer tensor."""
    choices = ", ".join(repr(n) for n in names)

    def check(name: str, target_class: Any) -> Any:
        if isinstance(target_class, str):
            if target_class not in names:
                raise ValueError(
                    f"{name} must be {choices}, an int or a (B,) tensor, got {target_class!r}"
                )
        elif isinstance(target_class, torch.Tensor):
            if (
                target_class.is_floating_point()
                or target_class.is_complex()
                or target_class.dtype == torch.bool
            ):
                raise TypeError(f"a {name} tensor must hold integers, got {target_class.dtype}")
            if target_class.dim() != 1:
                raise ValueError(
                    f"a {name} tensor must be shaped (B,), got {tuple(target_class.shape)}"
                )
            if bool((target_class < 0).any()):
                raise ValueError(f"{name} must be >= 0, got {int(target_class.min())}")
        elif _checks.is_int(target_class):
            return _checks.check_int(name, target_class, minimum=0)
        else:
            raise TypeError(
                f"{name} must be {choices}, an int or a (B,) integer tensor, got {type(target_class).__name__}"
            )
        return target_class

    return check


def check_feature_range(name: str, feature_range: Any) -> FeatureRange:
    """A ``(low, high)`` pair of finite numbers or real tensors, as a tuple."""
    if not isinstance(feature_range, (tuple, list)):
        raise TypeError(f"{name} must be a pair (low, high), got {type(feature_range).__name__}")
    if len(feature_range) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {len(feature_range)} values")
    for end, bound in zip(("low", "high"), feature_range):
        if _checks.is_number(bound):
            _checks.check_number(f"{name} {end}", bound)
        elif isinstance(bound, torch.Tensor):
            if bound.dtype == torch.bool or bound.is_complex():
                raise TypeError(f"{name} {end} must be a real-valued tensor, got {bound.dtype}")
            _checks.check_finite(f"{name} {end}", bound)
        else:
            raise TypeError(
                f"{name} {end} must be a number or a tensor, got {type(bound).__name__}"
            )
    return tuple(feature_range)


@dataclasses.dataclass(frozen=True)
class SearchSettings(ModelCallSettings):
    """What both counterfactual searches take: how the model's output is read."""

    # A step carries the instances still searching, often a handful: padding a lone instance's
    # step to 4 rows costs 2.2x on the CPU (MNIST CNN, bench_padding.py), so exactness is asked for.
    auto_padding: ClassVar[int] = 1

    model_output: str = setting(
        "logits",
        "'logits' (a softmax is applied) or 'probabilities'",
        check=_checks.choice(*_MODEL_OUTPUTS),
    )
    immutable_features: list[int] | None = setting(
        None,
        "indices into one instance's flattened features that the search never changes (protected "
        "attributes, say): their gradient is zero, so they keep the input's values",
        check=_checks.indices(),
    )


@dataclasses.dataclass(frozen=True)
class CounterfactualSettings(SearchSettings):
    """The settings of :class:`Counterfactual` (one definition for every use)."""

    target_class: TargetClass = setting(
        "other",
        "the class to reach: 'other' (any class but the predicted one; the loss follows the most "
        "probable other class), 'same', an int, or a (B,) integer tensor of per-instance classes",
        per_call=True,
        check=target_class_check("other", "same"),
    )
    target_proba: float = setting(
        1.0,
        "the probability of the target class to reach, in [0, 1]",
        check=_checks.number(0.0, 1.0),
    )
    tol: float = setting(
        0.05,
        "how far from target_proba a valid counterfactual may be, >= 0",
        check=_checks.number(low=0.0),
    )
    lam_init: float = setting(
        0.1,
        "the first (largest) lam of the sweep, > 0",
        check=_checks.number(low=0.0, low_open=True),
    )
    max_lam_steps: int = setting(
        10,
        "rounds of bisection of lam, after the sweep over 10 orders of magnitude",
        check=_checks.integer(1),
    )
    max_iter: int = setting(1000, "most Adam steps per round", check=_checks.integer(1))
    learning_rate_init: float = setting(
        0.1,
        "Adam's initial learning rate in every round",
        check=_checks.number(low=0.0, low_open=True),
    )
    decay: bool = setting(
        True,
        "decay the learning rate linearly to 0 over max_iter steps in every round",
        check=_checks.boolean(),
    )
    feature_range: FeatureRange = setting(
        (0.0, 1.0),
        "(low, high), each a number or a tensor broadcastable to one instance's shape",
        check=check_feature_range,
    )
    early_stop: int = setting(
        50,
        "a bisection round ends after this many consecutive valid, or consecutive invalid, iterates",
        check=_checks.integer(1),
    )


class CounterfactualResults:
    """What both counterfactual explainers give: maps and pictures of the change each made."""

    def explanation_map(self, explanation: Explanation, inputs: torch.Tensor) -> torch.Tensor:
        """The change the counterfactual makes to each input, ``(B, ...)``."""
        return explanation.data["counterfactual"].to(inputs.device, inputs.dtype) - inputs

    def draw(self, inputs: torch.Tensor, explanation: Explanation, path: str | Path) -> Path | None:
        return draw_counterfactuals(inputs, explanation, path)


@register_explainer
class Counterfactual(CounterfactualResults, Explainer):
    """Batched counterfactual search (Wachter et al. 2017), as Alibi's ``Counterfactual``.

    Per instance, ``(f_t(x') - target_proba)^2 + lam * sum(|x' - x| / mad)`` is
    minimised with Adam, ``x'`` projected into ``feature_range`` after every step.
    The schedule of ``lam`` is Alibi's: a sweep over 10 orders of magnitude,
    ``lam_init / 10**i``, ``max_iter // 10`` steps each, the iterate carried from
    one ``lam`` to the next; then ``max_lam_steps`` rounds of bisection, restarted
    at ``x``, between the second order at which the sweep saw a valid iterate and
    the last order above it at which it saw none. A bisection round lasts up to
    ``max_iter`` steps, ends early after ``early_stop`` consecutive valid (or
    invalid) iterates, and counts as finding when at least 5 iterates were valid.
    Every round starts with fresh Adam moments and, with ``decay`` (the default),
    a learning rate falling linearly from ``learning_rate_init`` to 0 over
    ``max_iter`` steps. ``fit(train_data)`` switches the distance to the L1 scaled
    per feature by the training data's median absolute deviation (``mad`` 1
    otherwise).

    Where it differs from Alibi 0.9.6: every evaluated iterate is a candidate,
    the sweep's included (Alibi keeps only the bisection's); an instance whose
    sweep saw a valid iterate at one order only, or at none, is still bisected
    (between that order and the one above, or downwards from the smallest
    ``lam``) where Alibi gives up; and a valid iterate must also be classified as
    the target, not only have ``|p_t - target_proba| <= tol``. All instances of a
    batch advance together, each with its own schedule.

    ``x'`` is valid when the model's predicted class is the target (for
    ``"other"``: any class but the original) and ``|f_t(x') - target_proba| <=
    tol``. The closest valid iterate over all rounds is returned with
    ``success=True``; when no iterate was valid, the iterate that came closest to
    the target probability is returned with ``success=False``.

    White-box: ``model`` maps ``(B, ...)`` to ``(B, C)`` logits (or probabilities,
    see ``model_output``) and is differentiable in its input.

    Wachter, Mittelstadt, Russell, "Counterfactual Explanations without Opening
    the Black Box", Harv. J. Law & Tech. 2017.

    Examples:
        >>> model = torch.nn.Linear(4, 3)
        >>> explainer = Counterfactual(model, target_proba=0.6, tol=0.1, max_lam_steps=3)
        >>> exp = explainer.explain(torch.rand(2, 4))
        >>> exp.distance.shape
        torch.Size([2])
    """

    name = "Counterfactual"
    explainer_type = "counterfactual"
    peer = "alibi.explainers.Counterfactual"
    paper = 'Wachter, Mittelstadt & Russell, "Counterfactual Explanations without Opening the Black Box", Harv. J. Law & Tech. 2017'
    cli_name = "counterfactual"
    kind = "whitebox"
    settings_class = CounterfactualSettings

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], **settings: Any) -> None:
        super().__init__(model, **settings)
        self.mad: torch.Tensor | None = None

    def fit(self, train_data: torch.Tensor, eps: float = 1e-2) -> Counterfactual:
        """Scale the L1 distance by the per-feature MAD of ``train_data`` ``(N, ...)``, floored
        at ``eps``; returns ``self``."""
        self.mad = median_absolute_deviation(train_data, eps=eps)
        return self

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return ({"fitted": self.mad is not None}, {} if self.mad is None else {"mad": self.mad})

    def _restore_fitted_state(
        self, data: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
    ) -> None:
        if set(data) != {"fitted"} or not isinstance(data["fitted"], bool):
            raise ValueError(
                f"Counterfactual's fitted state must be {{'fitted': bool}}, got {dict(data)!r}"
            )
        expected = {"mad"} if data["fitted"] else set()
        if set(tensors) != expected:
            raise ValueError(
                f"Counterfactual's fitted tensors must be {sorted(expected)}, got {sorted(tensors)}"
            )
        self.mad = tensors.get("mad")
        if self.mad is not None and not bool((self.mad > 0).all()):
            raise ValueError("Counterfactual's stored mad must be > 0 for every feature")

    def explain(self, inputs: torch.Tensor, **settings: Any) -> Explanation:
        """Counterfactuals of ``inputs`` ``(B, ...)``, inside ``feature_range``.

        Args:
            inputs: ``(B, ...)`` floating-point instances.
            **settings: per-call settings (``target_class``); the explainer's own otherwise.

        Returns:
            An :class:`Explanation` with, per instance: ``counterfactual``
            ``(B, ...)``; ``success`` ``(B,)`` bool; ``cf_class`` and ``cf_proba``
            ``(B,)`` (predicted class of the counterfactual and its probability);
            ``target`` ``(B,)`` (the class explained: the model's prediction at the
            input); ``target_class`` ``(B,)`` (the class aimed at; for ``"other"`` the
            class the result lies in); ``distance`` ``(B,)`` (the L1 distance the loss
            used, MAD-scaled after ``fit``); ``l1_distance`` ``(B,)`` (plain L1);
            ``lam`` ``(B,)`` (the ``lam`` of the round that produced the result);
            ``n_iter`` ``(B,)`` (Adam steps over all rounds); ``predictions``
            ``(B, C)`` (the model's output at the input, as it returns it).
        """
        config = self._settings_for_call(settings)
        x = Rows.of(inputs, numpy=False, layout="(B, ...)").values
        low, high = _resolve_feature_range(config.feature_range, x)
        frozen = frozen_features(config.immutable_features, x)
        weights = _resolve_mad(self.mad, x)
        targets = _resolve_target_class(config.target_class, x.shape[0], x.device)

        model = self.model
        with input_gradients_only(model):
            search = _Search(model, low, high, weights, config, frozen)
            data = search_in_chunks(search, x, targets, config.internal_batch_size)
        return self._explanation(config, data, x.device, mad_scaled=self.mad is not None)


@functional_twin(Counterfactual)
def counterfactual(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    train_data: torch.Tensor | None = None,
    **settings: Any,
) -> Explanation:
    """Functional form of :class:`Counterfactual`: the same settings, one call.

    ``train_data`` (optional) is what :meth:`Counterfactual.fit` would learn the MAD
    scaling from.

    Examples:
        >>> model = torch.nn.Linear(4, 3)
        >>> x = torch.rand(2, 4)
        >>> exp = counterfactual(model, x, target_proba=0.6, tol=0.1, max_lam_steps=3)
        >>> exp.counterfactual.shape, exp.success.shape
        (torch.Size([2, 4]), torch.Size([2]))
    """
    explainer = Counterfactual(model, **settings)
    if train_data is not None:
        explainer.fit(train_data)
    return explainer.explain(inputs)


def draw_counterfactuals(
    inputs: torch.Tensor, explanation: Explanation, path: str | Path
) -> Path | None:
    """Per image: the input, its counterfactual and the difference (red: ink added, blue: removed),
    captioned with the classes, the counterfactual's probability and the L1 distance. None when
    the inputs are not images."""
    if not is_image_batch(inputs):
        return None
    from torchexplain import visualize

    found = explanation.counterfactual.detach().cpu()
    rows, captions = [], []
    for i, original in enumerate(inputs.detach().cpu()):
        rows.append([original, found[i], visualize.heatmap(found[i] - original)])
        outcome = "" if bool(explanation.success[i]) else " (not found; closest)"
        captions.append(
            f"#{i} {int(explanation.target[i])} -> {int(explanation.cf_class[i])}{outcome}  "
            f"p {float(explanation.cf_proba[i]):.2f}  L1 {float(explanation.l1_distance[i]):.1f}"
        )
    return visualize.save_grid(
        rows, captions, path, titles=["input", "counterfactual", "difference"]
    )


# ----------------------------------------------------------------------------- checks


def _resolve_feature_range(
    feature_range: FeatureRange, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    bounds = []
    for name, bound in zip(("low", "high"), feature_range, strict=True):
        if _checks.is_number(bound):
            bound = torch.tensor(float(bound))
        bound = bound.detach().to(device=x.device, dtype=x.dtype)
        try:
            bound = bound.expand(x.shape[1:])
        except RuntimeError as err:
            raise ValueError(
                f"feature_range {name} of shape {tuple(bound.shape)} does not broadcast to the "
                f"feature shape {tuple(x.shape[1:])}"
            ) from err
        bounds.append(bound)
    low, high = bounds
    if (low > high).any():
        raise ValueError("feature_range low must be <= high for every feature")
    outside = (x < low) | (x > high)
    if outside.any():
        rows = outside.flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(
            f"feature_range {feature_range!r} excludes the input: instances {rows[:10]} have "
            f"features outside it (values span [{x.min().item():.4g}, {x.max().item():.4g}])"
        )
    return low, high


def frozen_features(indices: list[int] | None, x: torch.Tensor) -> torch.Tensor | None:
    """A bool mask shaped like one instance, True at the ``immutable_features``."""
    if not indices:
        return None
    size = x[0].numel()
    if indices[-1] >= size:
        raise ValueError(
            f"immutable_features {indices} must index one instance's {size} features, "
            f"got {indices[-1]}"
        )
    frozen = torch.zeros(size, dtype=torch.bool, device=x.device)
    frozen[indices] = True
    return frozen.view(x.shape[1:])


def _resolve_mad(mad: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    if mad is None:
        return None
    if not isinstance(mad, torch.Tensor):
        raise TypeError(f"mad must be a tensor shaped like one instance, got {type(mad).__name__}")
    if tuple(mad.shape) != tuple(x.shape[1:]):
        raise ValueError(
            f"mad must have the feature shape {tuple(x.shape[1:])}, got {tuple(mad.shape)}"
        )
    if not (mad > 0).all():
        raise ValueError("mad must be > 0 for every feature (median_absolute_deviation floors it)")
    return 1.0 / mad.detach().to(device=x.device, dtype=x.dtype)


def _resolve_target_class(target_class: TargetClass, batch: int, device: torch.device) -> Any:
    """``"other"``/``"same"`` stay strings; ints and tensors become a ``(B,)`` long tensor."""
    if isinstance(target_class, str):
        return target_class
    if isinstance(target_class, int):
        return torch.full((batch,), target_class, dtype=torch.long, device=device)
    if tuple(target_class.shape) != (batch,):
        raise ValueError(
            f"a target_class tensor must be shaped (B,) = ({batch},), got {tuple(target_class.shape)}"
        )
    return target_class.to(device=device, dtype=torch.long)


# ----------------------------------------------------------------------------- search


@contextlib.contextmanager
def input_gradients_only(*models: Any) -> Iterator[None]:
    """Run a block with each model preserved (``preserved_model_state``) and its parameters
    not requiring gradients: the searches need only the input's gradient, and skipping the
    weights' saves their gradient buffers and backward work. Everything is restored on exit."""
    with contextlib.ExitStack() as stack:
        for model in models:
            stack.enter_context(preserved_model_state(model))
            if isinstance(model, torch.nn.Module):
                for parameter in model.parameters():
                    parameter.requires_grad_(False)
        yield


def search_in_chunks(
    search: Any, x: torch.Tensor, targets: Any, internal_batch_size: int | str | None
) -> dict[str, torch.Tensor]:
    """``search.run`` over chunks of instances, the results joined: ``"auto"`` is every instance at
    once on CUDA (halving a chunk that runs out of memory) and :data:`_CPU_CHUNK` on the CPU, None
    every instance, an int that many. Instances are independent, so the chunking changes nothing
    but speed."""
    if internal_batch_size == "auto":
        size = x.shape[0] if x.device.type == "cuda" else _CPU_CHUNK
    else:
        size = x.shape[0] if internal_batch_size is None else int(internal_batch_size)

    def run(start: int, stop: int, size: int) -> dict[str, torch.Tensor]:
        return search.run(
            x[start:stop], targets if isinstance(targets, str) else targets[start:stop]
        )

    parts = in_chunks(x.shape[0], size, run, halve=internal_batch_size == "auto", device=x.device)
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def _top_class(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # argmax + gather rather than max(dim=1): the latter's CPU kernel opens a
    # parallel region even for tiny inputs, milliseconds on a busy machine.
    top = probs.argmax(1)
    return top, probs.gather(1, top[:, None]).squeeze(1)


class ModelCalls:
    """The model's outputs as probabilities, checked, padded by the model-call layer
    (:func:`~torchexplain.models.call_padded`); shared by the counterfactual searches."""

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        model_output: str,
        pad_to_multiple: int = 1,
    ) -> None:
        self.model = model
        self.model_output = model_output
        self.pad_to_multiple = pad_to_multiple

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return as_probabilities(self.outputs(x), self.model_output)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output on ``x``, checked to be ``(B, classes)``."""
        # the instances still searching, in one call (search_in_chunks chunks the instances)
        out = call_padded(self.model, [x], self.pad_to_multiple)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the model must return a (B, classes) tensor; for an input of batch {x.shape[0]} "
                f"it returned {shape}"
            )
        if out.shape[1] < 2:
            raise ValueError(f"the model must return at least 2 classes, got {out.shape[1]}")
        return out

    def check_probabilities(self, probs: torch.Tensor) -> None:
        if self.model_output == "logits":
            return
        sums = probs.detach().sum(1)
        if (
            (probs < 0).any()
            or (probs > 1).any()
            or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3)
        ):
            raise ValueError(
                "model_output='probabilities' but the model's outputs are not probabilities "
                f"(row sums span [{sums.min().item():.4g}, {sums.max().item():.4g}]); "
                "use model_output='logits'"
            )

    def start(
        self, x: torch.Tensor, targets: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What both searches begin with: the model's output at ``x`` (checked), its class, and
        the number of classes; a ``(n,)`` tensor of target classes is checked against it."""
        with torch.no_grad():
            predictions = self.outputs(x)
            orig_probs = as_probabilities(predictions, self.model_output)
        self.check_probabilities(orig_probs)
        n_classes = orig_probs.shape[1]
        if isinstance(targets, torch.Tensor) and (targets >= n_classes).any():
            raise ValueError(
                f"target_class {targets.max().item()} is out of range for a model with "
                f"{n_classes} classes (expected 0..{n_classes - 1})"
            )
        return predictions, orig_probs.argmax(1), n_classes


@dataclasses.dataclass
class _Best:
    """Per instance, the best iterate so far: the closest valid one, or, until one is valid,
    the one nearest to becoming valid (smallest ``miss``); ``knob`` is the search's weight
    (lam, c) of the round that produced it."""

    iterate: torch.Tensor
    found: torch.Tensor
    distance: torch.Tensor
    miss: torch.Tensor
    knob: torch.Tensor

    @classmethod
    def start(cls, x: torch.Tensor, knob: torch.Tensor) -> _Best:
        inf = torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device)
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        return cls(x.clone(), found, inf, inf.clone(), knob.clone())

    def record(
        self,
        rows: torch.Tensor,
        iterate: torch.Tensor,
        valid: torch.Tensor,
        distance: torch.Tensor,
        miss: torch.Tensor,
        knob: torch.Tensor,
    ) -> None:
        """Consider the iterates of instances ``rows``."""
        found = self.found[rows]
        closer = valid & (~found | (distance < self.distance[rows]))
        nearer = ~valid & ~found & (miss < self.miss[rows])
        keep = closer | nearer
        if keep.any():
            kept = rows[keep]
            self.iterate[kept] = iterate[keep]
            self.distance[kept] = torch.where(valid[keep], distance[keep], math.inf)
            self.miss[kept] = torch.minimum(self.miss[kept], miss[keep])
            self.knob[kept] = knob[keep]
            self.found[kept] = found[keep] | valid[keep]


class _Search(ModelCalls):
    """The batched lambda search and Adam loop over one chunk of instances."""

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        low: torch.Tensor,
        high: torch.Tensor,
        weights: torch.Tensor | None,
        config: CounterfactualSettings,
        frozen: torch.Tensor | None = None,
    ) -> None:
        super().__init__(model, config.model_output, config.padding())
        self.low, self.high, self.weights = low, high, weights
        self.frozen = frozen
        self.target_proba = float(config.target_proba)
        self.tol = float(config.tol)
        self.lam_init = float(config.lam_init)
        self.max_lam_steps = config.max_lam_steps
        self.max_iter = config.max_iter
        self.lr_init = float(config.learning_rate_init)
        self.early_stop = config.early_stop
        self.decay = bool(config.decay)
        self.sweep_orders = _SWEEP_ORDERS
        self.sweep_steps = config.max_iter // _SWEEP_ORDERS

    def target_terms(
        self, probs: torch.Tensor, orig_class: torch.Tensor, targets: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The probability the loss drives (``(n,)``) and the class it belongs to (``(n,)``)."""
        if isinstance(targets, str) and targets == "other":
            others = probs.scatter(1, orig_class[:, None], -1.0)
            target = others.argmax(1)
            return probs.gather(1, target[:, None]).squeeze(1), target
        return probs.gather(1, targets[:, None]).squeeze(1), targets

    def is_valid(
        self, probs: torch.Tensor, p_target: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        close = (p_target - self.target_proba).abs() <= self.tol
        return close & (probs.argmax(1) == target)

    def distance(self, delta: torch.Tensor) -> torch.Tensor:
        scaled = delta.abs() if self.weights is None else delta.abs() * self.weights
        return scaled.flatten(1).sum(1)

    # -- the search -------------------------------------------------------------

    def run(self, x: torch.Tensor, targets: Any) -> dict[str, torch.Tensor]:
        """Search counterfactuals of ``x`` ``(n, ...)``: step the instances still searching until
        every schedule is done, then describe the best iterate of each."""
        predictions, orig_class, _ = self.start(x, targets)
        if isinstance(targets, str) and targets == "same":
            targets = orig_class.clone()
        state = _State.start(x, self.lam_init, self.sweep_orders)
        if self.sweep_steps == 0:  # max_iter < 10: no sweep, bisection from lam_init
            self.start_bisection(
                torch.arange(x.shape[0], device=x.device), x, state, skip_sweep=True
            )
        best = _Best.start(x, state.lam)
        while (active := (state.phase != _DONE).nonzero().flatten()).numel():
            xa, lam, probs, p_target, target, distance, grad = self.evaluate(
                x, active, state, orig_class, targets
            )
            with torch.no_grad():
                valid = self.is_valid(probs, p_target, target)
                miss = (p_target - self.target_proba).abs()
                best.record(active, xa, valid, distance, miss, lam)
                runs = self.count_valid(active, valid, state)
                steps = self.adam_step(active, xa, grad, state)
                self.advance_schedule(active, x, state, steps, runs)
        return self.result(x, best, state, orig_class, targets, predictions)

    def evaluate(
        self,
        x: torch.Tensor,
        active: torch.Tensor,
        state: _State,
        orig_class: torch.Tensor,
        targets: Any,
    ) -> tuple[torch.Tensor, ...]:
        """The active instances' iterates and lambdas, and the iterates through the model:
        probabilities, the target's probability and class, the distance, and the loss's
        gradient (all detached)."""
        xa = state.x_cf.index_select(0, active).requires_grad_(True)
        lam = state.lam[active]
        with torch.enable_grad():
            probs = self.probabilities(xa)
            p_target, target = self.target_terms(
                probs, orig_class[active], targets if isinstance(targets, str) else targets[active]
            )
            distance = self.distance(xa - x.index_select(0, active))
            loss = ((p_target - self.target_proba) ** 2 + lam * distance).sum()
            (grad,) = torch.autograd.grad(loss, xa)
        if self.frozen is not None:
            # Adam's step is 0 where the gradient always is: those features keep x's values
            grad = grad.masked_fill(self.frozen, 0.0)
        detached = (probs.detach(), p_target.detach(), target, distance.detach(), grad)
        return (xa.detach(), lam, *detached)

    @staticmethod
    def count_valid(
        active: torch.Tensor, valid: torch.Tensor, state: _State
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Valid iterates of the round, and the runs of consecutive valid / invalid ones (returned
        for the active instances)."""
        state.round_valid[active] += valid.long()
        run_valid = torch.where(valid, state.run_valid[active] + 1, 0)
        run_invalid = torch.where(valid, 0, state.run_invalid[active] + 1)
        state.run_valid[active], state.run_invalid[active] = run_valid, run_invalid
        return run_valid, run_invalid

    def adam_step(
        self, active: torch.Tensor, xa: torch.Tensor, grad: torch.Tensor, state: _State
    ) -> torch.Tensor:
        """One Adam step of each active instance (iterates ``xa``), with its own step count (the
        new counts are returned); the learning rate decays linearly to 0 over max_iter steps
        (Alibi's decay=True); the iterate is projected into the feature range."""
        dtype = state.x_cf.dtype
        trailing = (1,) * (state.x_cf.ndim - 1)
        t = state.step[active] + 1
        m = state.adam_m[active].mul_(_ADAM_BETA1).add_(grad, alpha=1 - _ADAM_BETA1)
        v = state.adam_v[active].mul_(_ADAM_BETA2).addcmul_(grad, grad, value=1 - _ADAM_BETA2)
        tf = t.to(dtype)
        if self.decay:
            lr = self.lr_init * (1 - (tf - 1) / self.max_iter).clamp_min(0)
        else:
            lr = torch.full_like(tf, self.lr_init)
        m_hat = m / (1 - _ADAM_BETA1**tf).view(-1, *trailing)
        v_hat = v / (1 - _ADAM_BETA2**tf).view(-1, *trailing)
        xa = xa - lr.view(-1, *trailing) * m_hat / (v_hat.sqrt() + _ADAM_EPS)
        state.x_cf[active] = torch.maximum(torch.minimum(xa, self.high), self.low)
        state.adam_m[active] = m
        state.adam_v[active] = v
        state.step[active] = t
        state.total_steps[active] += 1
        return t

    def advance_schedule(
        self,
        active: torch.Tensor,
        x: torch.Tensor,
        state: _State,
        t: torch.Tensor,
        runs: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        """End the rounds that are over: a sweep round after max_iter // 10 steps; a bisection
        round after max_iter steps or early_stop consecutive valid (or invalid) iterates.
        ``t`` and ``runs`` are the active instances' step counts and valid/invalid runs."""
        in_sweep = state.phase[active] == _SWEEP
        run_valid, run_invalid = runs
        settled = ~in_sweep & ((run_valid >= self.early_stop) | (run_invalid >= self.early_stop))
        ended = settled | (t >= torch.where(in_sweep, self.sweep_steps, self.max_iter))
        if ended.any():
            rows = active[ended]
            sweeping = in_sweep[ended]
            if sweeping.any():
                self.next_sweep_round(rows[sweeping], x, state)
            if (~sweeping).any():
                self.next_bisection_round(rows[~sweeping], state)

    def result(
        self,
        x: torch.Tensor,
        best: _Best,
        state: _State,
        orig_class: torch.Tensor,
        targets: Any,
        predictions: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The best iterates, evaluated again so that every reported field describes them."""
        with torch.no_grad():
            probs = self.probabilities(best.iterate)
            cf_class, cf_proba = _top_class(probs)
            # For "other", the target is the class the result lies in.
            p_target, target = self.target_terms(probs, orig_class, targets)
            success = best.found & self.is_valid(probs, p_target, target)
            delta = best.iterate - x
        return {
            "counterfactual": best.iterate,
            "success": success,
            "cf_class": cf_class,
            "cf_proba": cf_proba,
            "target": orig_class,
            "target_class": target,
            "distance": self.distance(delta),
            "l1_distance": delta.abs().flatten(1).sum(1),
            "lam": best.knob,
            "n_iter": state.total_steps,
            "predictions": predictions,
        }

    # -- the lambda schedule ------------------------------------------------------

    @staticmethod
    def new_round(rows: torch.Tensor, state: _State) -> None:
        """Fresh Adam moments, step count and validity counters; the iterate carries over."""
        state.adam_m[rows] = 0
        state.adam_v[rows] = 0
        state.step[rows] = 0
        state.round_valid[rows] = 0
        state.run_valid[rows] = 0
        state.run_invalid[rows] = 0

    def next_sweep_round(self, rows: torch.Tensor, x: torch.Tensor, state: _State) -> None:
        """Sweep: the next order of magnitude, continuing from the current iterate."""
        index = state.round_index[rows]
        state.sweep_valid[rows, index] = state.round_valid[rows]
        index = index + 1
        more = index < self.sweep_orders
        state.round_index[rows] = index
        going_on = rows[more]
        if going_on.numel():
            state.lam[going_on] = self.lam_init / 10.0 ** index[more].to(state.lam.dtype)
            self.new_round(going_on, state)
        if (~more).any():
            self.start_bisection(rows[~more], x, state)

    def start_bisection(
        self, rows: torch.Tensor, x: torch.Tensor, state: _State, skip_sweep: bool = False
    ) -> None:
        """The bracket from the sweep's counts, then bisection from its middle, from ``x``.

        The lower bound is the second order of magnitude (from the top) at which
        the sweep saw a valid iterate, one order below the first, so bisection
        starts from a ``lam`` known to reach the target with room to spare; the
        upper bound is the smallest ``lam`` above it at which none was seen.
        """
        dtype = state.lam.dtype
        if skip_sweep:
            low = torch.zeros(rows.numel(), dtype=dtype, device=rows.device)
            high = torch.full_like(low, self.lam_init)
            lam = high.clone()
        else:
            counts = state.sweep_valid[rows]
            orders = torch.arange(self.sweep_orders, device=rows.device)
            lams = self.lam_init / 10.0 ** orders.to(dtype)
            seen = counts > 0
            rank = seen.long().cumsum(1)
            n_seen = rank[:, -1]
            # Index of the second order with valid iterates, else of the only one
            # (Alibi gives up there); the k-th seen order has k-1 seen before it.
            lb_index = torch.where(
                n_seen >= 2, (rank < 2).long().sum(1), (rank < 1).long().sum(1)
            ).clamp_max(self.sweep_orders - 1)
            # The last order above the lower bound with none valid.
            unseen_above = ~seen & (orders[None, :] < lb_index[:, None])
            last_unseen = torch.where(unseen_above, orders[None, :], -1).amax(1)
            high = torch.where(
                last_unseen >= 0,
                lams[last_unseen.clamp_min(0)],
                torch.where(lb_index > 0, lams[0], lams[0] * 10),
            )
            low = torch.where(n_seen > 0, lams[lb_index], torch.zeros_like(high))
            # Nothing valid at any order: keep going down from the smallest lam tried.
            high = torch.where(n_seen > 0, high, lams[-1])
            lam = (low + high) / 2
        state.lam_low[rows] = low
        state.lam_high[rows] = high
        state.lam[rows] = lam
        state.phase[rows] = _BISECT
        state.round_index[rows] = 0
        state.x_cf[rows] = x[rows]
        self.new_round(rows, state)

    def next_bisection_round(self, rows: torch.Tensor, state: _State) -> None:
        """Bisection: raise ``lam`` after a round that found enough valid iterates, lower it otherwise."""
        found = state.round_valid[rows] >= _MIN_VALID_PER_ROUND
        lam, low, high = state.lam[rows], state.lam_low[rows], state.lam_high[rows]
        low = torch.where(found, torch.maximum(low, lam), low)
        high = torch.where(found, high, torch.minimum(high, lam))
        # Below the floor there is no known success yet: a factor of 10 down.
        lam = torch.where(found | (low > 0), (low + high) / 2, lam / 10)
        state.lam_low[rows] = low
        state.lam_high[rows] = high
        state.lam[rows] = lam
        index = state.round_index[rows] + 1
        state.round_index[rows] = index
        state.phase[rows] = torch.where(index >= self.max_lam_steps, _DONE, _BISECT)
        self.new_round(rows, state)


@dataclasses.dataclass
class _State:
    """Per-instance search state of one chunk, each tensor indexed by instance."""

    x_cf: torch.Tensor  # the current iterate
    adam_m: torch.Tensor
    adam_v: torch.Tensor
    step: torch.Tensor  # Adam steps in the current round
    total_steps: torch.Tensor
    round_valid: torch.Tensor  # valid iterates in the current round
    run_valid: torch.Tensor  # consecutive valid iterates (early stopping)
    run_invalid: torch.Tensor  # consecutive invalid iterates
    sweep_valid: torch.Tensor  # (n, orders): valid iterates seen at each order of the sweep
    phase: torch.Tensor  # _SWEEP, _BISECT or _DONE
    round_index: torch.Tensor
    lam: torch.Tensor
    lam_low: torch.Tensor  # largest lam known to find counterfactuals (0: none yet)
    lam_high: torch.Tensor  # smallest lam known not to

    @classmethod
    def start(cls, x: torch.Tensor, lam_init: float, sweep_orders: int) -> _State:
        """Every instance at the start of the sweep: the iterate at ``x``, ``lam = lam_init``."""
        n, device, dtype = x.shape[0], x.device, x.dtype

        def zeros(kind: torch.dtype = torch.long) -> torch.Tensor:
            return torch.zeros(n, dtype=kind, device=device)

        return cls(
            x_cf=x.clone(),
            adam_m=torch.zeros_like(x),
            adam_v=torch.zeros_like(x),
            step=zeros(),
            total_steps=zeros(),
            round_valid=zeros(),
            run_valid=zeros(),
            run_invalid=zeros(),
            sweep_valid=torch.zeros(n, sweep_orders, dtype=torch.long, device=device),
            phase=zeros(),
            round_index=zeros(),
            lam=torch.full((n,), lam_init, dtype=dtype, device=device),
            lam_low=zeros(dtype),
            lam_high=zeros(dtype),
        )
