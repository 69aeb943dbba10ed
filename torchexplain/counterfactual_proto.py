"""Prototype-guided counterfactuals (Van Looveren & Klaise 2019), a whole batch at once.

A Wachter counterfactual is the closest input the model classifies differently,
which may be an input no one has ever seen (grey strokes scattered over a digit).
Prototypes keep it in the data's distribution: ``fit`` learns, per class, where
the training data lie (in an encoder's latent space, or as the training
instances themselves), and the search adds a pull towards the nearest
prototype of another class. Per instance ``x`` it minimises, over ``x'``
inside ``feature_range``,

    c * max(0, p_orig(x') - max_{j != orig} p_j(x') + kappa)     prediction hinge
    + ||x' - x||_2^2 + beta * ||x' - x||_1                        elastic-net distance
    + gamma * ||AE(x') - x'||_2^2                                  optional autoencoder term
    + theta * ||ENC(x') - proto||_2^2                              prototype term

with FISTA (Beck & Teboulle 2009): gradient steps on the smooth terms and a
shrinkage-thresholding step for the L1 term, and searches ``c`` per instance
by bisection. Every instance carries its own iterate, momentum step count,
``c`` bracket and best counterfactual; all advance together, one forward and
backward pass per iteration for the instances still searching, so a batch
gives what each instance would get alone.

Reference: Van Looveren, Klaise, "Interpretable Counterfactual Explanations
Guided by Prototypes", ECML PKDD 2021 (arXiv:1907.02584, 2019); the elastic-net
FISTA search follows Chen et al., "EAD: Elastic-Net Attacks to Deep Neural
Networks via Adversarial Examples", AAAI 2018.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from torchexplain import _checks
from torchexplain._model_state import preserved_model_state
from torchexplain.base import Explainer, functional_twin, register_explainer
from torchexplain.counterfactual import (
    CounterfactualResults,
    FeatureRange,
    ModelCalls,
    SearchSettings,
    TargetClass,
    _Best,
    _resolve_feature_range,
    _resolve_target_class,
    _top_class,
    check_feature_range,
    frozen_features,
    input_gradients_only,
    search_in_chunks,
    target_class_check,
)
from torchexplain.explanation import Explanation
from torchexplain.models import Rows, call_padded
from torchexplain.settings import setting

__all__ = ["CounterfactualProto", "CounterfactualProtoSettings", "counterfactual_proto", "shrink"]

_OPTIMIZERS = ("fista", "gradient")
_K_TYPES = ("mean", "point")
# Above this c upper bound the bracket is still open (Alibi's 1e10 start, tested < 1e9).
_C_OPEN = 1e9
# Rows of the training set compared with the instances at once when prototypes are chosen.
_DISTANCE_ELEMENTS = 1 << 24


def shrink(
    z: torch.Tensor, x: torch.Tensor, beta: float, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """The elastic-net shrinkage-thresholding step, projected into ``[low, high]``.

    Each coordinate of ``z`` more than ``beta`` above ``x`` moves ``beta`` back
    towards it, one more than ``beta`` below moves ``beta`` up, and one within
    ``beta`` of ``x`` is set to ``x``: the proximal map of ``beta * |z - x|_1``.

    Examples:
        >>> x = torch.zeros(4)
        >>> shrink(torch.tensor([0.5, 0.05, -0.3, 2.0]), x, 0.1, torch.tensor(-1.0), torch.tensor(1.0))
        tensor([ 0.4000,  0.0000, -0.2000,  1.0000])
    """
    d = z - x
    up = torch.minimum(z - beta, high)
    down = torch.maximum(z + beta, low)
    return torch.where(d > beta, up, torch.where(d < -beta, down, x))


_NON_NEGATIVE = _checks.number(low=0.0)


@dataclasses.dataclass(frozen=True)
class CounterfactualProtoSettings(SearchSettings):
    """The settings of :class:`CounterfactualProto` (Alibi's names and defaults where they mean the same)."""

    target_class: TargetClass = setting(
        "other",
        "the class to reach: 'other' (any class but the predicted one; the prototype is the nearest "
        "of the other classes), an int, or a (B,) integer tensor of per-instance classes",
        per_call=True,
        check=target_class_check("other"),
    )
    kappa: float = setting(
        0.0, "confidence margin of the prediction hinge, >= 0", check=_NON_NEGATIVE
    )
    beta: float = setting(
        0.1, "weight of the L1 term of the elastic-net distance, >= 0", check=_NON_NEGATIVE
    )
    gamma: float = setting(
        0.0,
        "weight of the autoencoder reconstruction term (needs ae_model), >= 0",
        check=_NON_NEGATIVE,
    )
    theta: float = setting(
        0.0,
        "weight of the prototype term (needs enc_model or use_kdtree, and fit), >= 0",
        check=_NON_NEGATIVE,
    )
    ae_model: Callable[[torch.Tensor], torch.Tensor] | None = setting(
        None,
        "autoencoder, (B, ...) -> (B, ...) reconstructions, for the gamma term",
        check=_checks.optional_callable(),
    )
    enc_model: Callable[[torch.Tensor], torch.Tensor] | None = setting(
        None,
        "encoder, (B, ...) -> (B, ...) latent codes; prototypes are class means of the encoded training data",
        check=_checks.optional_callable(),
    )
    use_kdtree: bool = setting(
        False,
        "without an encoder, prototypes are the training instances nearest to x of each class "
        "(Alibi's k-d trees; here an exact batched nearest-neighbour search)",
        check=_checks.boolean(),
    )
    c_init: float = setting(
        10.0, "first weight c of the prediction hinge, >= 0", check=_NON_NEGATIVE
    )
    c_steps: int = setting(
        10,
        "rounds of the search over c (bisection once bracketed, x10 before)",
        check=_checks.integer(1),
    )
    max_iterations: int = setting(
        1000, "optimisation steps per round of c", check=_checks.integer(1)
    )
    learning_rate_init: float = setting(
        1e-2,
        "initial step size, decaying to 0 over max_iterations like a square root",
        check=_checks.number(low=0.0, low_open=True),
    )
    feature_range: FeatureRange = setting(
        (-1e10, 1e10),
        "(low, high), each a number or a tensor broadcastable to one instance's shape",
        check=check_feature_range,
    )
    clip: tuple[float, float] = setting(
        (-1000.0, 1000.0),
        "(min, max) of each gradient coordinate",
        check=_checks.pair(_checks.number(), increasing=True),
    )
    k: int | None = setting(
        None,
        "nearest training instances per class that define the prototype: with an encoder, None "
        "uses the whole class (its mean encoding); with k-d trees, None means 1",
        per_call=True,
        check=_checks.integer(1, optional=True),
    )
    k_type: str = setting(
        "mean",
        "encoder prototypes from k instances: 'mean' (distance = mean of the k distances) or "
        "'point' (distance = the k-th)",
        per_call=True,
        check=_checks.choice(*_K_TYPES),
    )
    optimizer: str = setting(
        "fista",
        "'fista' (shrinkage-thresholding for the L1 term, with momentum) or 'gradient' "
        "(plain projected (sub)gradient steps on the whole loss)",
        check=_checks.choice(*_OPTIMIZERS),
    )
    early_stop: int | None = setting(
        None,
        "end a round of c after this many steps without a closer valid counterfactual in it; "
        "None runs every round for max_iterations steps (Alibi)",
        check=_checks.integer(1, optional=True),
    )

    def validate(self) -> dict[str, Any]:
        if self.gamma > 0 and self.ae_model is None:
            raise ValueError(f"gamma={self.gamma} weighs an autoencoder term, but ae_model is None")
        return {}


@register_explainer
class CounterfactualProto(CounterfactualResults, Explainer):
    """Prototype-guided counterfactuals (Van Looveren & Klaise 2019), as Alibi's ``CounterfactualProto``.

    ``fit(train_data)`` classifies the training data with the model and keeps,
    per predicted class, the encodings (``enc_model``) or the instances
    (``use_kdtree``) the prototypes come from. ``explain`` picks, per instance,
    the prototype of the target class (for ``"other"``, of the class whose
    prototype is nearest), then minimises the loss in the module docstring with
    FISTA, ``c_steps`` rounds of ``max_iterations`` steps, each round restarted
    at ``x`` with its own ``c``: lowered (bisection) after a round that found a
    counterfactual, raised (x10 until bracketed, then bisection) after one that
    did not. The step size falls from ``learning_rate_init`` to 0 as
    ``sqrt(1 - step / max_iterations)`` in every round.

    ``x'`` is valid when the model, with ``kappa`` added to the original class's
    probability, still prefers another class, and that class is the target (any
    other class for ``"other"``). The valid iterate with the smallest
    elastic-net distance ``||x' - x||_2^2 + beta ||x' - x||_1`` over all rounds is
    returned with ``success=True``; when none was valid, the iterate nearest to
    flipping (smallest ``p_orig + kappa - max_target p``) with ``success=False``.

    Supported: white-box models on continuous features (images, numerical
    tables). Not yet: Alibi's categorical variables (``cat_vars``, ``ohe``, the
    pairwise category distances), trust-score thresholds, and numerical
    gradients for black-box predictors.

    Examples:
        >>> model = torch.nn.Linear(4, 3)
        >>> explainer = CounterfactualProto(model, use_kdtree=True, theta=1.0, c_steps=2, max_iterations=50)
        >>> explainer = explainer.fit(torch.rand(30, 4))
        >>> explainer.explain(torch.rand(2, 4)).counterfactual.shape
        torch.Size([2, 4])
    """

    name = "CounterfactualProto"
    explainer_type = "counterfactual_proto"
    peer = "alibi.explainers.CounterfactualProto"
    paper = 'Van Looveren & Klaise, "Interpretable Counterfactual Explanations Guided by Prototypes", ECML PKDD 2021'
    kind = "whitebox"
    settings_class = CounterfactualProtoSettings

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], **settings: Any) -> None:
        super().__init__(model, **settings)
        self.points: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.space: str | None = None

    def fit(self, train_data: torch.Tensor, batch_size: int = 1024) -> CounterfactualProto:
        """Learn where each class lies: the model's classes of ``train_data`` ``(N, ...)`` and
        their encodings (``enc_model``) or the instances themselves (``use_kdtree``); returns ``self``.

        ``batch_size`` rows go through the model and the encoder at a time.
        """
        train = Rows.of(train_data, "train_data", numpy=False).values
        _checks.check_int("batch_size", batch_size, minimum=1)
        config = self.settings
        if config.enc_model is None and not config.use_kdtree:
            raise ValueError(
                "fit needs an encoder (enc_model) or use_kdtree=True to build prototypes; "
                "without either, theta must be 0 and fit is not needed"
            )
        calls = ModelCalls(self.model, config.model_output)
        with contextlib.ExitStack() as stack, torch.no_grad():
            for module in (self.model, config.enc_model):
                if module is not None:
                    stack.enter_context(preserved_model_state(module))
            labels, points = [], []
            for start in range(0, train.shape[0], batch_size):
                rows = train[start : start + batch_size]
                labels.append(calls.probabilities(rows).argmax(1))
                if config.enc_model is not None:
                    points.append(_encode(config.enc_model, rows))
        self.labels = torch.cat(labels)
        if config.enc_model is not None:
            self.points, self.space = torch.cat(points), "latent"
        else:
            self.points, self.space = train.flatten(1).clone(), "input"
        return self

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        if self.points is None:
            return {"space": None}, {}
        return {"space": self.space}, {"points": self.points, "labels": self.labels}

    def _restore_fitted_state(
        self, data: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
    ) -> None:
        if set(data) != {"space"} or data["space"] not in (None, "latent", "input"):
            raise ValueError(
                f"CounterfactualProto's fitted state must be {{'space': None|'latent'|'input'}}, got {dict(data)!r}"
            )
        expected = set() if data["space"] is None else {"points", "labels"}
        if set(tensors) != expected:
            raise ValueError(
                f"CounterfactualProto's fitted tensors must be {sorted(expected)}, got {sorted(tensors)}"
            )
        if expected:
            points, labels = tensors["points"], tensors["labels"]
            if points.ndim != 2 or labels.shape != (points.shape[0],) or labels.is_floating_point():
                raise ValueError(
                    "CounterfactualProto's stored points must be (N, D) with (N,) integer labels, got "
                    f"{tuple(points.shape)} and {tuple(labels.shape)} {labels.dtype}"
                )
            self.points, self.labels = points, labels.long()
        self.space = data["space"]

    def explain(self, inputs: torch.Tensor, **settings: Any) -> Explanation:
        """Prototype-guided counterfactuals of ``inputs`` ``(B, ...)``, inside ``feature_range``.

        Args:
            inputs: ``(B, ...)`` floating-point instances.
            **settings: per-call settings (``target_class``, ``k``, ``k_type``).

        Returns:
            An :class:`Explanation` with, per instance: ``counterfactual`` ``(B, ...)``;
            ``success`` ``(B,)``; ``cf_class``, ``cf_proba`` (the model's class of the
            counterfactual and its probability); ``target`` (the model's class at the
            input); ``target_class`` (the class aimed at: for ``"other"`` the class the
            result lies in when it succeeded, else the prototype's); ``proto_class``
            (the class of the prototype used; -1 without prototypes); ``distance``
            (``||d||_2^2 + beta ||d||_1``); ``l1_distance``, ``l2_distance`` (plain
            norms of ``d = x' - x``); ``c`` (the hinge weight of the round that gave the
            result); ``n_iter`` (steps over all rounds); ``predictions`` ``(B, C)``.
        """
        config = self._settings_for_call(settings)
        x = Rows.of(inputs, numpy=False, layout="(B, ...)").values
        low, high = _resolve_feature_range(config.feature_range, x)
        targets = _resolve_target_class(config.target_class, x.shape[0], x.device)
        uses_prototypes = config.theta > 0
        if uses_prototypes and config.enc_model is None and not config.use_kdtree:
            raise ValueError(
                f"theta={config.theta} weighs a prototype term, but there are no prototypes: "
                "pass enc_model, or use_kdtree=True"
            )
        if uses_prototypes and self.points is None:
            raise ValueError("theta > 0 needs prototypes: call fit(train_data) first")
        if uses_prototypes and self.space != (
            "latent" if config.enc_model is not None else "input"
        ):
            raise ValueError(
                f"the prototypes were fitted in the {self.space} space, but this explainer "
                f"{'has' if config.enc_model is not None else 'has no'} encoder; fit again"
            )

        modules = [m for m in (self.model, config.ae_model, config.enc_model) if m is not None]
        with input_gradients_only(*modules):
            search = _ProtoSearch(
                self.model, low, high, config, self.points if uses_prototypes else None, self.labels
            )
            search.frozen = frozen_features(config.immutable_features, x)
            data = search_in_chunks(search, x, targets, config.internal_batch_size)
        return self._explanation(
            config, data, x.device, prototypes=self.space if uses_prototypes else None
        )


@functional_twin(CounterfactualProto)
def counterfactual_proto(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    train_data: torch.Tensor | None = None,
    **settings: Any,
) -> Explanation:
    """Functional form of :class:`CounterfactualProto`: ``fit(train_data)`` (when given) and ``explain``.

    Examples:
        >>> model = torch.nn.Linear(4, 3)
        >>> exp = counterfactual_proto(model, torch.rand(2, 4), c_steps=2, max_iterations=50)
        >>> exp.success.shape
        torch.Size([2])
    """
    explainer = CounterfactualProto(model, **settings)
    if train_data is not None:
        explainer.fit(train_data)
    return explainer.explain(inputs)


# ----------------------------------------------------------------------------- search


def _encode(encoder: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    code = encoder(x)
    if not isinstance(code, torch.Tensor) or code.ndim < 2 or code.shape[0] != x.shape[0]:
        shape = tuple(code.shape) if isinstance(code, torch.Tensor) else type(code).__name__
        raise ValueError(
            f"enc_model must return a (B, ...) tensor; for a batch of {x.shape[0]} it returned {shape}"
        )
    return code.flatten(1)


class _ProtoSearch(ModelCalls):
    """The batched FISTA search with per-instance ``c`` over one chunk of instances."""

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        low: torch.Tensor,
        high: torch.Tensor,
        config: CounterfactualProtoSettings,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> None:
        super().__init__(model, config.model_output, config.padding())
        self.low, self.high = low, high
        self.config = config
        self.frozen: torch.Tensor | None = None  # immutable features: their gradient is 0
        self.points, self.labels = points, labels
        self.kappa, self.beta = float(config.kappa), float(config.beta)
        self.gamma, self.theta = float(config.gamma), float(config.theta)
        self.pad = config.padding()

    def _padded(
        self, function: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor
    ) -> torch.Tensor:
        """``function(rows)`` through the model-call layer's padding (the encoder, the autoencoder,
        the distance products): each row's result does not depend on the other rows."""
        return call_padded(function, [rows], self.pad)

    # -- prototypes ---------------------------------------------------------------

    def prototypes(
        self, x: torch.Tensor, allowed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per instance, the nearest allowed class's prototype ``(n, D)`` and that class ``(n,)``."""
        config = self.config
        points = self.points.to(x.device, x.dtype)
        labels = self.labels.to(x.device)
        encoded = config.enc_model is not None
        with torch.no_grad():
            query = (
                self._padded(lambda rows: _encode(config.enc_model, rows), x)
                if encoded
                else x.flatten(1)
            )
        if query.shape[1] != points.shape[1]:
            raise ValueError(
                f"the prototypes have {points.shape[1]} dimensions but the instances give {query.shape[1]}; "
                "fit on data shaped like the inputs"
            )
        n, n_classes = x.shape[0], allowed.shape[1]
        best_dist = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
        best_proto = torch.zeros_like(query)
        best_class = torch.full((n,), -1, dtype=torch.long, device=x.device)
        for c in range(n_classes):
            members = points[labels == c]
            if members.shape[0] == 0:
                continue
            if encoded and config.k is None:
                proto = members.mean(0).expand(n, -1)
                dist = (query - proto).norm(dim=1)
            else:
                k = min(config.k or 1, members.shape[0])
                dist, index = _nearest(query, members, k, self.pad)
                if encoded:
                    proto = members[index].mean(1)
                    dist = dist.mean(1) if config.k_type == "mean" else dist[:, -1]
                else:  # the k-th nearest instance, as Alibi's k-d tree query
                    proto = members[index[:, -1]]
                    dist = dist[:, -1]
            closer = allowed[:, c] & (dist < best_dist)
            best_dist = torch.where(closer, dist, best_dist)
            best_proto = torch.where(closer[:, None], proto, best_proto)
            best_class = torch.where(closer, c, best_class)
        return best_proto, best_class

    # -- the loss ------------------------------------------------------------------

    def smooth_loss(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        c: torch.Tensor,
        orig_class: torch.Tensor,
        proto: torch.Tensor | None,
        with_l1: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-instance loss at ``y`` (the L1 term only when ``with_l1``), and the probabilities."""
        probs = self.probabilities(y)
        loss = c * hinge(probs, orig_class, self.kappa)
        delta = (y - x).flatten(1)
        loss = loss + delta.square().sum(1)
        if with_l1:
            loss = loss + self.beta * delta.abs().sum(1)
        if self.gamma > 0:
            reconstruction = self._padded(self.config.ae_model, y)
            if not isinstance(reconstruction, torch.Tensor) or reconstruction.shape != y.shape:
                shape = (
                    tuple(reconstruction.shape)
                    if isinstance(reconstruction, torch.Tensor)
                    else type(reconstruction).__name__
                )
                raise ValueError(
                    f"ae_model must return reconstructions shaped like its input {tuple(y.shape)}, got {shape}"
                )
            loss = loss + self.gamma * (reconstruction - y).flatten(1).square().sum(1)
        if proto is not None and self.theta > 0:
            if self.config.enc_model is not None:
                code = self._padded(lambda rows: _encode(self.config.enc_model, rows), y)
            else:
                code = y.flatten(1)
            loss = loss + self.theta * (code - proto).square().sum(1)
        return loss, probs

    def is_valid(
        self, probs: torch.Tensor, orig_class: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        """The model (with kappa on the original class) prefers another class, and it is allowed."""
        boosted = probs.scatter_add(
            1, orig_class[:, None], torch.full_like(probs[:, :1], self.kappa)
        )
        top = probs.argmax(1)
        return (boosted.argmax(1) != orig_class) & allowed.gather(1, top[:, None]).squeeze(1)

    # -- the search ----------------------------------------------------------------

    def run(self, x: torch.Tensor, targets: Any) -> dict[str, torch.Tensor]:
        """Search counterfactuals of ``x`` ``(n, ...)``: FISTA steps of the instances still searching
        until each has run its ``c_steps`` rounds, then describe the best iterate of each."""
        predictions, orig_class, n_classes = self.start(x, targets)
        allowed = _allowed_classes(orig_class, n_classes, targets)
        if self.points is not None:
            proto, proto_class = self.prototypes(x, allowed)
        else:
            proto, proto_class = None, torch.full_like(orig_class, -1)
        state = _FistaState.start(x, float(self.config.c_init))
        best = _Best.start(x, state.c)
        while (active := (~state.done).nonzero().flatten()).numel():
            # the active instances' rows, gathered once a step
            x_a, c_a, class_a, allowed_a = (
                x.index_select(0, active),
                state.c[active],
                orig_class[active],
                allowed[active],
            )
            grad = self.gradient(x_a, active, state, c_a, class_a, proto)
            with torch.no_grad():
                new, steps = self.step(x_a, active, grad, state)
                probs = self.probabilities(new)
                valid = self.is_valid(probs, class_a, allowed_a)
                delta = (new - x_a).flatten(1)
                dist = delta.square().sum(1) + self.beta * delta.abs().sum(1)
                margin = (
                    probs.gather(1, class_a[:, None]).squeeze(1)
                    + self.kappa
                    - probs.masked_fill(~allowed_a, -math.inf).amax(1)
                )
                best.record(active, new, valid, dist, margin, c_a)
                self.end_rounds(active, valid, dist, steps, x, state)
        return self.result(x, best, state, orig_class, allowed, targets, proto_class, predictions)

    def gradient(
        self,
        x_a: torch.Tensor,
        active: torch.Tensor,
        state: _FistaState,
        c_a: torch.Tensor,
        class_a: torch.Tensor,
        proto: torch.Tensor | None,
    ) -> torch.Tensor:
        """The smooth loss's gradient at the active instances' momentum points, clipped
        (``x_a``, ``c_a``, ``class_a``: the active instances' inputs, c and classes)."""
        y = state.adv_s.index_select(0, active).requires_grad_(True)
        proto_a = None if proto is None else proto.index_select(0, active)
        with torch.enable_grad():
            loss, _ = self.smooth_loss(
                y, x_a, c_a, class_a, proto_a, with_l1=self.config.optimizer != "fista"
            )
            (grad,) = torch.autograd.grad(loss.sum(), y)
        if self.frozen is not None:
            # no step, no shrinkage away from x: those features keep x's values
            grad = grad.masked_fill(self.frozen, 0.0)
        return grad.clamp(*self.config.clip)

    def step(
        self, x_a: torch.Tensor, active: torch.Tensor, grad: torch.Tensor, state: _FistaState
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of each active instance (inputs ``x_a``): FISTA (a gradient step on the
        smooth terms, the L1 shrinkage, momentum) or a projected gradient step; the step size
        falls as sqrt(1 - t/T). Returns the new iterates and step counts."""
        dtype, trailing = x_a.dtype, (1,) * (x_a.ndim - 1)
        g = state.step[active]
        lr = (
            float(self.config.learning_rate_init)
            * (1 - g.to(dtype) / self.config.max_iterations).clamp_min(0).sqrt()
        )
        z = state.adv_s.index_select(0, active) - lr.view(-1, *trailing) * grad
        if self.config.optimizer == "fista":
            old = state.adv.index_select(0, active)
            new = shrink(z, x_a, self.beta, self.low, self.high)
            g = g + 1
            momentum = (g.to(dtype) / (g.to(dtype) + 3)).view(-1, *trailing)
            new_s = torch.maximum(torch.minimum(new + momentum * (new - old), self.high), self.low)
        else:
            new = torch.maximum(torch.minimum(z, self.high), self.low)
            g = g + 1
            new_s = new
        state.adv[active] = new
        state.adv_s[active] = new_s
        state.step[active] = g
        state.total[active] += 1
        return new, g

    def end_rounds(
        self,
        active: torch.Tensor,
        valid: torch.Tensor,
        dist: torch.Tensor,
        steps: torch.Tensor,
        x: torch.Tensor,
        state: _FistaState,
    ) -> None:
        """Track each round's closest valid iterate; end a round after max_iterations steps (or
        early_stop steps without a closer one) and start the next with a new c. ``steps``: the
        active instances' step counts."""
        improved = valid & (dist < state.round_best[active])
        state.round_best[active] = torch.where(improved, dist, state.round_best[active])
        stale = torch.where(improved, 0, state.stale[active] + 1)
        state.stale[active] = stale
        ended = steps >= self.config.max_iterations
        if self.config.early_stop is not None:
            ended |= stale >= self.config.early_stop
        if ended.any():
            self.next_round(active[ended], x, state)

    def next_round(self, rows: torch.Tensor, x: torch.Tensor, state: _FistaState) -> None:
        """Alibi's rule for c: found -> c_high = c, bisect; not found -> c_low = c, x10 until bracketed."""
        found = torch.isfinite(state.round_best[rows])
        cr, low, high = state.c[rows], state.c_low[rows], state.c_high[rows]
        high = torch.where(found, torch.minimum(high, cr), high)
        low = torch.where(found, low, torch.maximum(low, cr))
        bracketed = high < _C_OPEN
        state.c[rows] = torch.where(bracketed, (low + high) / 2, torch.where(found, cr, cr * 10))
        state.c_low[rows], state.c_high[rows] = low, high
        state.rounds[rows] += 1
        state.done[rows] = state.rounds[rows] >= self.config.c_steps
        state.adv[rows] = x[rows]
        state.adv_s[rows] = x[rows]
        state.step[rows] = 0
        state.stale[rows] = 0
        state.round_best[rows] = math.inf

    def result(
        self,
        x: torch.Tensor,
        best: _Best,
        state: _FistaState,
        orig_class: torch.Tensor,
        allowed: torch.Tensor,
        targets: Any,
        proto_class: torch.Tensor,
        predictions: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The best iterates, evaluated again so that every reported field describes them."""
        with torch.no_grad():
            probs = self.probabilities(best.iterate)
            cf_class, cf_proba = _top_class(probs)
            success = best.found & self.is_valid(probs, orig_class, allowed)
            delta = (best.iterate - x).flatten(1)
            target = (
                targets
                if isinstance(targets, torch.Tensor)
                else torch.where(success, cf_class, proto_class)
            )
        return {
            "counterfactual": best.iterate,
            "success": success,
            "cf_class": cf_class,
            "cf_proba": cf_proba,
            "target": orig_class,
            "target_class": target,
            "proto_class": proto_class,
            "distance": delta.square().sum(1) + self.beta * delta.abs().sum(1),
            "l1_distance": delta.abs().sum(1),
            "l2_distance": delta.square().sum(1).sqrt(),
            "c": best.knob,
            "n_iter": state.total,
            "predictions": predictions,
        }


def _allowed_classes(orig_class: torch.Tensor, n_classes: int, targets: Any) -> torch.Tensor:
    """``(n, K)`` bool: the classes each instance's counterfactual may lie in (never its own)."""
    n = orig_class.shape[0]
    if isinstance(targets, torch.Tensor):
        allowed = torch.nn.functional.one_hot(targets, n_classes).bool()
    else:  # "other"
        allowed = torch.ones(n, n_classes, dtype=torch.bool, device=orig_class.device)
    allowed[torch.arange(n, device=orig_class.device), orig_class] = False
    return allowed


@dataclasses.dataclass
class _FistaState:
    """Per-instance state of the search over c, each tensor indexed by instance."""

    adv: torch.Tensor  # FISTA's iterate x_k
    adv_s: torch.Tensor  # its momentum point y_k
    step: torch.Tensor  # steps in the current round
    total: torch.Tensor  # steps over all rounds
    rounds: torch.Tensor
    c: torch.Tensor
    c_low: torch.Tensor
    c_high: torch.Tensor
    round_best: torch.Tensor  # the round's closest valid distance (inf: none yet)
    stale: torch.Tensor  # steps since round_best last improved
    done: torch.Tensor

    @classmethod
    def start(cls, x: torch.Tensor, c_init: float) -> _FistaState:
        n, device, dtype = x.shape[0], x.device, x.dtype
        step = torch.zeros(n, dtype=torch.long, device=device)
        c = torch.full((n,), c_init, dtype=dtype, device=device)
        return cls(
            adv=x.clone(),
            adv_s=x.clone(),
            step=step,
            total=step.clone(),
            rounds=step.clone(),
            c=c,
            c_low=torch.zeros_like(c),
            c_high=torch.full_like(c, 1e10),
            round_best=torch.full_like(c, math.inf),
            stale=step.clone(),
            done=torch.zeros(n, dtype=torch.bool, device=device),
        )


def hinge(probs: torch.Tensor, orig_class: torch.Tensor, kappa: float) -> torch.Tensor:
    """``max(0, p_orig - max_{j != orig} p_j + kappa)`` per row: zero once another class leads by kappa."""
    p_orig = probs.gather(1, orig_class[:, None]).squeeze(1)
    others = probs.scatter(1, orig_class[:, None], -math.inf).amax(1)
    return (p_orig - others + kappa).clamp_min(0)


def _nearest(
    query: torch.Tensor, points: torch.Tensor, k: int, pad_to_multiple: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest Euclidean distances from each query row to ``points``, ascending, and their
    indices. ``cdist`` takes a matrix product for large inputs, so its query rows are padded like a
    model call's (:func:`~torchexplain.models.call_padded`)."""
    rows = max(1, _DISTANCE_ELEMENTS // max(1, points.shape[0]))
    dists, indices = [], []
    for start in range(0, query.shape[0], rows):
        d = call_padded(
            lambda q: torch.cdist(q, points), [query[start : start + rows]], pad_to_multiple
        )
        values, index = d.topk(k, dim=1, largest=False, sorted=True)
        dists.append(values)
        indices.append(index)
    return torch.cat(dists), torch.cat(indices)
