"""Kernel SHAP (Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017), batched.

The estimator is shap's ``KernelExplainer`` (what Alibi's ``KernelShap`` wraps and
what users compare against), step for step:

- a feature (a column, a group of columns, a superpixel) whose values equal those of
  every background row (``np.allclose``) is dropped for that instance: it cannot move
  the output. One varying feature gets the whole difference;
- ``nsamples="auto"`` is ``2M + 2048``, capped at ``2**M - 2``; coalitions of whole
  subset sizes (with their complements) are enumerated while the budget allows under
  the Shapley kernel weights, the rest are drawn by size with paired complements, and
  a coalition drawn twice adds to its weight instead of being evaluated twice;
- the model is evaluated on every coalition x background row (kept features from the
  instance, the rest from the background row), the outputs averaged with the
  background weights, then the link applied;
- a weighted least-squares fit with efficiency enforced exactly (one variable
  eliminated), optionally after an L1 feature selection (``l1_reg``).

What is different is the batching. The coalition plan depends only on the number of
varying features, the budget and the seed, so it is built once per call for every
instance with that many features; the perturbed rows of many instances are built on
the device and sent to the predictor in memory-sized calls; and the regressions of
all instances are one linear solve with many right-hand sides. Because the plan of an
instance does not depend on the other instances, a batch gives what each instance
gives alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import secrets
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from torchexplain import _checks, _memory
from torchexplain._model_state import preserved_model_state
from torchexplain._progress import Progress
from torchexplain.base import Explainer, functional_twin, register_explainer
from torchexplain.explanation import Explanation
from torchexplain.models import Predictor, Rows, as_scores
from torchexplain.segmentation import superpixels
from torchexplain.settings import (
    PredictorSettings,
    ProgressSettings,
    SeedSettings,
    SegmentationSettings,
    TabularSettings,
    setting,
)

__all__ = ["KernelShap", "KernelShapSettings", "coalition_plan", "kernel_shap"]

_FORWARD_BYTES_FACTOR = _memory.FORWARD_BYTES_FACTOR
#: shap's cut-off below which a Shapley value is rounded to exactly 0
_ZERO_BELOW = 1e-10
#: ``l1_reg="auto"`` selects features when fewer than this share of all coalitions is evaluated
_AUTO_L1_FRACTION = 0.2
_NUM_FEATURES = re.compile(r"^num_features\((\d+)\)$")
#: keys of distinct rows are sums of integers in float64: exact below this
_EXACT_KEYS = 2.0**52
#: instances are explained in blocks of at most this many (coalition, background row)
#: pairs (at 2,072 coalitions x 100 background rows: 40 instances, 64 MiB of row keys)
_KEYS_PER_BLOCK = 1 << 23
#: background codes compare every pair of background rows: at most this many element pairs
_MAX_CODE_PAIRS = 1 << 26


@dataclasses.dataclass(frozen=True)
class KernelShapSettings(
    TabularSettings, SeedSettings, PredictorSettings, ProgressSettings, SegmentationSettings
):
    """The settings of :class:`KernelShap` (Alibi's names where they mean the same)."""

    link: str = setting(
        "identity",
        "'identity' or 'logit' (the values then explain log-odds; the predictor must return probabilities)",
        check=_checks.choice("identity", "logit"),
    )
    cache_predictions: bool = setting(
        True,
        "score each distinct perturbed row once and reuse its output wherever the same row recurs (most rows "
        "recur when background rows share values: 7% of the census rows are distinct); the predictor must be "
        "deterministic and score rows independently. The values are the same either way",
        check=_checks.boolean(),
    )
    logit_clip: float = setting(
        1e-7,
        "link='logit': probabilities are clipped to [logit_clip, 1 - logit_clip] before the log-odds, so a "
        "probability of exactly 0 or 1 gives large finite values instead of inf/NaN",
        check=_checks.number(0.0, 0.5, high_open=True),
    )
    nsamples: int | str = setting(
        "auto",
        "coalitions per instance: 'auto' (2M + 2048) or an int; capped at 2**M - 2",
        per_call=True,
        check=_checks.auto_or_integer(1),
    )
    l1_reg: str | float | bool = setting(
        "auto",
        "feature selection before the fit, as shap 0.43 (Alibi's default): 'auto' (AIC when fewer than 20% "
        "of the coalitions are evaluated, none otherwise), 'aic', 'bic', 'num_features(k)', a Lasso alpha, "
        "or False. shap >= 0.47 defaults to 'num_features(10)' instead",
        per_call=True,
        check=lambda name, value: _check_l1_reg(value),
    )


def _check_l1_reg(value: Any) -> str | float | bool:
    expected = "'auto', 'aic', 'bic', 'num_features(k)', a positive float or False"
    if value is False or (_checks.is_number(value) and float(value) == 0.0):
        return False
    if isinstance(value, str):
        match = _NUM_FEATURES.match(value)
        if value in ("auto", "aic", "bic") or (match and int(match.group(1)) >= 1):
            return value
        raise ValueError(f"l1_reg must be {expected}, got {value!r}")
    if _checks.is_number(value) and math.isfinite(float(value)) and float(value) > 0:
        return float(value)
    raise (ValueError if _checks.is_number(value) else TypeError)(
        f"l1_reg must be {expected}, got {value!r}"
    )


# ----------------------------------------------------------------------------- the coalition plan


@dataclasses.dataclass(frozen=True)
class CoalitionPlan:
    """The coalitions one instance with ``n_features`` varying features is evaluated on.

    ``masks`` ``(S, M)`` bool (True: the feature keeps the instance's value),
    ``weights`` ``(S,)`` float64 (the Shapley kernel's share of each coalition),
    ``nsamples`` the budget after the cap and ``max_samples`` every possible
    coalition (the two give shap's "fraction evaluated").
    """

    masks: np.ndarray
    weights: np.ndarray
    nsamples: int
    max_samples: int

    @property
    def fraction_evaluated(self) -> float:
        return self.nsamples / self.max_samples


def coalition_plan(
    n_features: int, nsamples: int | str = "auto", seed: int | None = 0
) -> CoalitionPlan:
    """shap's KernelExplainer coalitions for ``n_features >= 2`` varying features.

    Whole subset sizes are enumerated, smallest first with their complements, while
    the budget covers them under the kernel weights (:func:`_enumerated_sizes`); the
    remaining budget is drawn by size from a ``numpy.random.RandomState(seed)`` exactly
    as shap draws from the global stream (:func:`_drawn_coalitions`: one ``choice`` of
    sizes, one ``permutation`` per draw), so ``coalition_plan(M, n, s)`` is what shap
    evaluates after ``np.random.seed(s)``.

    Examples:
        >>> plan = coalition_plan(3)
        >>> plan.masks.astype(int).tolist(), plan.weights.round(3).tolist()
        ([[1, 0, 0], [0, 1, 1], [0, 1, 0], [1, 0, 1], [0, 0, 1], [1, 1, 0]], [0.167, 0.167, 0.167, 0.167, 0.167, 0.167])
    """
    m = int(n_features)
    if m < 2:
        raise ValueError(f"a coalition plan needs at least 2 varying features, got {m}")
    budget = 2 * m + 2**11 if nsamples == "auto" else int(nsamples)
    max_samples = 2**30
    if m <= 30:
        max_samples = 2**m - 2
        budget = min(budget, max_samples)
    sizes = _SubsetSizes.of(m)
    masks, weights, n_full = _enumerated_sizes(sizes, budget)
    if n_full != sizes.count and budget > len(masks):
        drawn_masks, drawn_weights = _drawn_coalitions(sizes, n_full, budget - len(masks), seed)
        masks += drawn_masks
        weights += drawn_weights
    return CoalitionPlan(
        np.stack(masks), np.asarray(weights, dtype=np.float64), budget, max_samples
    )


@dataclasses.dataclass(frozen=True)
class _SubsetSizes:
    """The Shapley kernel's weight of each coalition size ``1..count`` for ``m`` features (a size
    and its complement share one entry; sizes up to ``paired`` have a distinct complement)."""

    m: int
    count: int
    paired: int
    weights: np.ndarray

    @classmethod
    def of(cls, m: int) -> _SubsetSizes:
        count, paired = math.ceil((m - 1) / 2), (m - 1) // 2
        weights = np.array([(m - 1.0) / (i * (m - i)) for i in range(1, count + 1)])
        weights[:paired] *= 2
        return cls(m, count, paired, weights / weights.sum())


def _enumerated_sizes(
    sizes: _SubsetSizes, budget: int
) -> tuple[list[np.ndarray], list[float], int]:
    """Every coalition of the smallest sizes (and their complements) while the budget covers a size
    under its kernel weight; returns the masks, their weights and how many sizes were enumerated."""
    m = sizes.m
    masks: list[np.ndarray] = []
    weights: list[float] = []
    n_full = 0
    left = float(budget)
    remaining = sizes.weights.copy()
    for size in range(1, sizes.count + 1):
        paired = size <= sizes.paired
        n_subsets = math.comb(m, size) * (2 if paired else 1)
        if left * remaining[size - 1] / n_subsets < 1.0 - 1e-8:
            break
        n_full += 1
        left -= n_subsets
        if remaining[size - 1] < 1.0:
            remaining /= 1 - remaining[size - 1]
        weight = sizes.weights[size - 1] / math.comb(m, size) / (2.0 if paired else 1.0)
        for kept in itertools.combinations(range(m), size):
            mask = np.zeros(m, dtype=bool)
            mask[list(kept)] = True
            masks += [mask, ~mask] if paired else [mask]
            weights += [weight, weight] if paired else [weight]
    return masks, weights, n_full


def _drawn_coalitions(
    sizes: _SubsetSizes, n_full: int, samples_left: int, seed: int | None
) -> tuple[list[np.ndarray], list[float]]:
    """``samples_left`` coalitions of the sizes not enumerated, drawn as shap draws them: sizes by
    their kernel weights, members by a permutation, complements paired; a coalition drawn again
    adds to its weight. The weights are scaled to the sizes' share of the kernel."""
    m = sizes.m
    rng = _legacy_stream(0 if seed is None else seed)
    size_weights = sizes.weights.copy()
    size_weights[: sizes.paired] /= 2  # each draw below adds two coalitions
    size_weights = size_weights[n_full:]
    size_weights /= size_weights.sum()
    draws = rng.choice(len(size_weights), 4 * samples_left, p=size_weights)
    masks: list[np.ndarray] = []
    weights: list[float] = []
    seen: dict[bytes, int] = {}
    position = 0
    while samples_left > 0 and position < len(draws):
        size = int(draws[position]) + n_full + 1
        position += 1
        mask = np.zeros(m, dtype=bool)
        mask[rng.permutation(m)[:size]] = True
        key = mask.tobytes()
        new = key not in seen
        if new:
            seen[key] = len(masks)
            samples_left -= 1
            masks.append(mask)
            weights.append(1.0)
        else:
            weights[seen[key]] += 1.0
        if samples_left > 0 and size <= sizes.paired:
            if new:
                samples_left -= 1
                masks.append(~mask)
                weights.append(1.0)
            else:
                weights[seen[key] + 1] += 1.0
    drawn = np.asarray(weights)
    return masks, list(drawn * (sizes.weights[n_full:].sum() / drawn.sum()))


def _legacy_stream(seed: int) -> np.random.RandomState:
    """shap's stream after ``np.random.seed(seed)`` for seeds below 2**32 (all shap accepts); a
    larger seed (torchexplain's seeds go to 2**63) seeds the same generator with its two 32-bit words."""
    words = seed if seed < 2**32 else [seed & 0xFFFFFFFF, seed >> 32]
    return np.random.RandomState(words)  # noqa: NPY002 - shap's legacy stream, on purpose


# ----------------------------------------------------------------------------- the explainer


@register_explainer
class KernelShap(Explainer):
    """Kernel SHAP values of a black-box predictor, shap's ``KernelExplainer`` estimator, batched.

    ``predictor`` maps a batch of inputs ``(N, ...)`` to scores ``(N, K)`` (or ``(N,)``
    for one output). An ``nn.Module`` gets tensors on the device (eval mode, no grad,
    left as found); any other callable gets numpy arrays. ``fit(background)`` sets the
    distribution that "missing" features are drawn from. Features are the columns of
    tabular rows ``(B, D)`` (or the ``groups`` given to ``fit``, e.g. one-hot blocks),
    or, for any other tensor input, the ids of a ``feature_mask`` (superpixels of
    images are computed with :mod:`torchexplain.segmentation` when no mask is given).

    Examples:
        >>> background = np.zeros((1, 3))
        >>> predict = lambda x: x @ np.array([[1.0], [2.0], [-1.0]])
        >>> explainer = KernelShap(predict).fit(background)
        >>> explainer.explain(np.array([[1.0, 1.0, 1.0]])).shap_values.round(decimals=12).tolist()
        [[[1.0, 2.0, -1.0]]]
    """

    name = "KernelShap"
    explains_every_class = True
    cli_needs_images = True  # the command's background is a black image
    map_title = "SHAP per superpixel"
    explainer_type = "kernel_shap"
    peer = "shap.KernelExplainer; alibi.explainers.KernelShap"
    paper = 'Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017'
    cli_name = "kernel_shap"
    kind = "blackbox"
    settings_class = KernelShapSettings
    positional_settings = ("link", "feature_names", "categorical_names")
    _fit: dict[str, Any] | None = None

    # ----------------------------------------------------------------- fit

    def fit(
        self,
        background_data: Any,
        summarise_background: bool | str = False,
        n_background_samples: int = 300,
        groups: Sequence[Sequence[int]] | None = None,
        group_names: Sequence[str] | None = None,
        weights: Any = None,
    ) -> KernelShap:
        """Set the background that features absent from a coalition take their values from.

        Args:
            background_data: ``(N, ...)`` numpy array or tensor, shaped like one input.
            summarise_background: ``True`` summarises to ``n_background_samples`` rows
                (k-means centres snapped to real values and weighted by cluster size, as
                ``shap.kmeans``; a sample without replacement when there are categorical
                columns or groups, as Alibi does); ``"auto"`` only when there are more rows.
            n_background_samples: rows kept by the summary.
            groups: tabular only: lists of column indices masked as one feature (one-hot
                blocks); every column in exactly one group.
            group_names: a name per group (default ``feature_names`` when it has one
                name per group, else ``"group_i"``).
            weights: ``(N,)`` non-negative weights of the background rows (normalised).

        Returns:
            The explainer (fitted).
        """
        background = Rows.of(background_data, "background_data", integers=True).values
        n = background.shape[0]
        if weights is not None:
            weights = _as_weights(weights, n)
        if summarise_background not in (False, True, "auto"):
            raise ValueError(
                f"summarise_background must be True, False or 'auto', got {summarise_background!r}"
            )
        n_keep = _checks.check_int("n_background_samples", n_background_samples, minimum=1)
        if groups is not None and background.dim() != 2:
            raise ValueError(
                f"groups apply to tabular rows (N, D); background_data is {tuple(background.shape)}"
            )
        if summarise_background is True or (summarise_background == "auto" and n > n_keep):
            if n > n_keep:
                if weights is not None:
                    raise ValueError(
                        "weights cannot be combined with summarise_background: the summary sets its own"
                    )
                use_sampling = groups is not None or bool(self.settings.categorical_names)
                background, weights = (_sample_rows if use_sampling else _kmeans_rows)(
                    background, n_keep
                )
        if weights is None:
            weights = torch.full(
                (background.shape[0],), 1.0 / background.shape[0], dtype=torch.float64
            )
        d = background.shape[1] if background.dim() == 2 else None
        names = self.settings.feature_names
        if groups is not None:
            columns_of = _check_groups(groups, d)
            if group_names is not None:
                group_names = list(group_names)
                if len(group_names) != len(columns_of) or not all(
                    isinstance(g, str) for g in group_names
                ):
                    raise ValueError(
                        f"group_names must be {len(columns_of)} strings, one per group, got {group_names!r}"
                    )
            elif names is not None and len(names) == len(columns_of):
                group_names = list(names)
            else:
                group_names = [f"group_{i}" for i in range(len(columns_of))]
        else:
            columns_of = None
            if group_names is not None:
                raise ValueError("group_names were given without groups")
            if names is not None and d is not None and len(names) != d:
                raise ValueError(
                    f"feature_names has {len(names)} names but background_data has {d} columns"
                )
        self._set_fitted(background, weights, columns_of, group_names)
        return self

    def _set_fitted(self, background, weights, columns_of, group_names) -> None:
        feature_of = None
        if columns_of is not None:
            feature_of = torch.empty(background.shape[1], dtype=torch.int64)
            for g, columns in enumerate(columns_of):
                feature_of[columns] = g
        self._fit = {
            "background": background,
            "weights": weights,
            "groups": columns_of,
            "group_names": group_names,
            "feature_of": feature_of,
        }

    def input_shape(self) -> tuple[int, ...] | None:
        """One background row's shape once fitted (None before :meth:`fit`)."""
        return None if self._fit is None else tuple(self._fit["background"].shape[1:])

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        if self._fit is None:
            return {}, {}
        data = {"groups": self._fit["groups"], "group_names": self._fit["group_names"]}
        return data, {"background": self._fit["background"], "weights": self._fit["weights"]}

    def _restore_fitted_state(self, data: Any, tensors: Any) -> None:
        if not data and not tensors:
            return
        if set(data) != {"groups", "group_names"} or set(tensors) != {"background", "weights"}:
            raise ValueError(
                f"KernelShap: fitted state must hold groups, group_names and tensors background, weights; got "
                f"{sorted(data)} and {sorted(tensors)}"
            )
        background = Rows.of(tensors["background"], "background", integers=True).values
        _as_weights(tensors["weights"], background.shape[0])  # checked, not renormalised: a
        # second division by a sum that rounds to 1 - 1e-16 changed the last bit of the values
        weights = tensors["weights"].to(torch.float64)
        groups = data["groups"]
        columns_of = None if groups is None else _check_groups(groups, background.shape[1])
        self._set_fitted(background, weights, columns_of, data["group_names"])

    # ----------------------------------------------------------------- explain

    def explain(self, inputs: Any, feature_mask: Any = None, **settings: Any) -> Explanation:
        """SHAP values of every output for a batch.

        Args:
            inputs: ``(B, ...)`` numpy array or tensor shaped like the background rows.
            feature_mask: non-tabular inputs: integer feature ids broadcastable to
                ``inputs`` (``(B or 1, ...)``, as Captum's ``feature_mask``); elements with
                the same id are one feature. ``None``: columns (or the fitted groups) for
                rows ``(B, D)``, superpixels for images ``(B, C, H, W)``.
            **settings: per-call settings (``nsamples``, ``l1_reg``,
                ``internal_batch_size``, ``progress``).

        Returns:
            An :class:`Explanation` whose ``data`` holds ``shap_values`` ``(B, K, M)``
            float64 (class ``k``'s value of each of the M features, link space),
            ``expected_value`` ``(K,)`` (the link of the weighted background mean; for
            every row ``shap_values.sum(-1) + expected_value`` equals the link of the
            prediction), ``predictions`` (the predictor's output on the inputs),
            ``target`` ``(B,)`` (the predicted class, drawn by ``explanation_map``),
            ``varying`` ``(B, M)`` bool (features that differ from the background),
            ``feature_mask`` ``(B, ...)`` int64 (the feature id of each element),
            ``importances`` ``(K, M)`` (mean |value| over the batch, per class) and
            ``aggregated_importances`` ``(M,)`` (their sum over classes), Alibi's
            ranking. ``meta["feature_names"]`` names the M features.
        """
        config = self._settings_for_call(settings)
        if self._fit is None:
            raise ValueError("KernelShap is not fitted: call explainer.fit(background_data) first")
        if config.seed is None:
            config = dataclasses.replace(config, seed=secrets.randbits(32))
        data, meta = _KernelShapRun(self, config, inputs, feature_mask).explain()
        return self._explanation(config, data, meta.pop("device"), **meta)

    def default_fit(self, inputs: torch.Tensor) -> KernelShap:
        """A black image (zeros shaped like one input) as the background: "feature absent", as a
        zero baseline is for Integrated Gradients."""
        return self.fit(torch.zeros_like(inputs[:1]))

    def caption(self, explanation: Explanation, i: int) -> str:
        """The class drawn, the expected value and the sum of the values (efficiency: their sum is f(x))."""
        target = int(explanation.target[i])
        total = float(explanation.shap_values[i, target].sum())
        return f"#{i} pred {target}: base {float(explanation.expected_value[target]):.2f} + {total:+.2f}"

    def explanation_map(self, explanation: Explanation, inputs: Any) -> torch.Tensor:
        """Each element's feature value for the explained class, shaped like ``inputs``."""
        values = explanation.data["shap_values"]
        target = explanation.data["target"].to(values.device)
        chosen = values[torch.arange(values.shape[0], device=values.device), target]  # (B, M)
        mask = explanation.data["feature_mask"].to(values.device)
        flat = chosen.gather(1, mask.reshape(mask.shape[0], -1)).reshape(mask.shape)
        shape = tuple(inputs.shape)
        if flat.dim() < len(shape):  # (B, H, W) superpixels of (B, C, H, W) images
            flat = flat.unsqueeze(1)
        return flat.expand(shape).to(torch.float32)


class _KernelShapRun:
    """One ``explain`` call: features, varying sets, coalition plans, model calls, the solve."""

    def __init__(
        self, explainer: KernelShap, config: KernelShapSettings, inputs: Any, feature_mask: Any
    ) -> None:
        self.explainer = explainer
        self.config = config
        fit = explainer._fit
        rows = Rows.of(inputs, integers=True)
        background = fit["background"]
        if tuple(rows.shape[1:]) != tuple(background.shape[1:]):
            raise ValueError(
                f"inputs must be shaped (B, {', '.join(map(str, background.shape[1:]))}) like the background "
                f"rows, got {tuple(rows.shape)}"
            )
        self.input_device = rows.input_device
        self.device = rows.compute_device(config.device)
        self.x = rows.values.to(self.device, background.dtype)
        self.background = background.to(self.device)
        self.weights = fit["weights"].to(self.device)
        per_row = self.x[0].numel() * self.x.element_size() * _FORWARD_BYTES_FACTOR
        self.predictor = Predictor.wrap(
            explainer.model,
            takes=config.predictor_input,
            device=self.device,
            batch_size=config.internal_batch_size,
            auto_rows=lambda total: _memory.rows_per_chunk(per_row, self.device, total),
            pad_to_multiple=config.padding(),
        )
        self.rows_perturbed = 0  # (coalition, background row) pairs, as shap scores them
        self._codes_cache: dict[bytes, Any] = {}
        self.feature_mask, self.names = self._features(feature_mask)

    # ----------------------------------------------------------------- features

    def _features(self, feature_mask: Any) -> tuple[torch.Tensor, list[str]]:
        """``(B, ...)`` int64 feature ids (the mask's own shape, batch expanded) and the features' names."""
        b = self.x.shape[0]
        fit = self.explainer._fit
        names = self.config.feature_names
        if feature_mask is not None:
            mask = (
                torch.as_tensor(feature_mask)
                if not isinstance(feature_mask, torch.Tensor)
                else feature_mask
            )
            if mask.is_floating_point() or mask.is_complex() or mask.dtype == torch.bool:
                raise TypeError(
                    f"feature_mask must hold integer feature ids, got dtype {mask.dtype}"
                )
            if mask.dim() == 0 or mask.dim() > self.x.dim() or mask.shape[0] not in (1, b):
                raise ValueError(
                    f"feature_mask must be shaped (B or 1, ...) broadcastable to inputs {tuple(self.x.shape)}, "
                    f"got {tuple(mask.shape)}"
                )
            try:
                torch.broadcast_shapes(mask.shape, self.x.shape)
            except RuntimeError:
                raise ValueError(
                    f"feature_mask of shape {tuple(mask.shape)} does not broadcast to inputs {tuple(self.x.shape)}"
                ) from None
            if bool((mask < 0).any()):
                raise ValueError("feature_mask ids must be >= 0")
            mask = mask.to(self.device, torch.int64).expand(b, *mask.shape[1:]).contiguous()
            m = int(mask.max()) + 1
            return mask, (
                list(names)
                if names is not None and len(names) == m
                else [f"feature_{i}" for i in range(m)]
            )
        if self.x.dim() == 2:
            d = self.x.shape[1]
            if fit["feature_of"] is not None:
                mask = fit["feature_of"].to(self.device).expand(b, d).contiguous()
                return mask, list(fit["group_names"])
            mask = torch.arange(d, device=self.device).expand(b, d).contiguous()
            return mask, (list(names) if names is not None else [f"feature_{i}" for i in range(d)])
        if self.x.dim() == 4:
            mask = superpixels(
                self.x, self.config.segmentation_fn, self.config.segmentation_kwargs
            ).to(self.device)
            m = int(mask.max()) + 1
            return mask, [f"segment_{i}" for i in range(m)]
        raise ValueError(
            f"inputs of shape {tuple(self.x.shape)} need a feature_mask (the feature id of each element); only "
            "rows (B, D) and images (B, C, H, W) have default features"
        )

    def _element_features(self) -> torch.Tensor:
        """``(B, E)`` the feature id of each input element (the mask broadcast to the inputs)."""
        mask = self.feature_mask
        shape = self.x.shape
        if mask.dim() < len(shape):  # superpixels (B, H, W) of images (B, C, H, W)
            mask = mask.unsqueeze(1)
        return mask.expand(shape).reshape(shape[0], -1)

    def _varying(self, feature_of: torch.Tensor, n_features: int) -> torch.Tensor:
        """``(B, M)`` True where some element of the feature differs from some background row (allclose)."""
        b, e = feature_of.shape
        background = self.background.reshape(self.background.shape[0], -1)
        differs = torch.zeros(b, e, dtype=torch.bool, device=self.device)
        per_instance = max(1, (1 << 24) // max(1, background.numel()))
        for start in range(0, b, per_instance):
            x = self.x[start : start + per_instance].reshape(-1, 1, e)
            close = torch.isclose(x, background[None], rtol=1e-5, atol=1e-8, equal_nan=True)
            differs[start : start + per_instance] = ~close.all(dim=1)
        varying = torch.zeros(b, n_features, dtype=torch.int64, device=self.device)
        varying.scatter_reduce_(1, feature_of, differs.to(torch.int64), reduce="amax")
        return varying.bool()

    # ----------------------------------------------------------------- the predictor

    def predict(self, rows: torch.Tensor) -> torch.Tensor:
        """The predictor's scores on ``rows`` as ``(N, K)`` on the device (dtype kept)."""
        output = self.predict_as_given(rows)
        return output if output.dim() == 2 else output[:, None]

    def predict_as_given(self, rows: torch.Tensor) -> torch.Tensor:
        """The predictor's scores on ``rows``, ``(N, K)`` or ``(N,)`` as it answered, on the device."""
        return as_scores(self.predictor.outputs(rows), "KernelShap")

    def _scores(self, output: torch.Tensor) -> torch.Tensor:
        """A call's output as ``(n, K)`` float64 scores."""
        return as_scores(output, "KernelShap").reshape(output.shape[0], -1).to(torch.float64)

    def _background_mean(self, output: torch.Tensor) -> torch.Tensor:
        """``(u, K)``: the background-weighted mean of ``u`` whole (instance, coalition) pairs' outputs.

        An elementwise product and a sum over the background axis, not a matrix product: its rows
        (pairs) round the same whatever else is in the call (BLAS's do not).
        """
        scores = self._scores(output).view(
            -1, self.background.shape[0], output.shape[1] if output.dim() == 2 else 1
        )
        return (scores * self.weights[None, :, None]).sum(1)

    def expected_outputs(
        self,
        coalitions: torch.Tensor,
        instance: torch.Tensor,
        feature_of: torch.Tensor,
        bar: Progress,
    ) -> torch.Tensor:
        """``(P, K)`` float64: the background-weighted mean output of each (instance, coalition) pair.

        Args:
            coalitions: ``(P, M)`` bool, True where the feature keeps the instance's value.
            instance: ``(P,)`` the row of ``self.x`` each pair perturbs.
            feature_of: ``(B, E)`` feature id of each element.
        """
        n_bg = self.background.shape[0]
        background = self.background.reshape(n_bg, -1)
        x = self.x.reshape(self.x.shape[0], -1)

        def build(start: int, stop: int) -> torch.Tensor:
            row = torch.arange(start, stop, device=self.device)
            pair, from_background = row // n_bg, row % n_bg
            keep = coalitions[pair].gather(1, feature_of[instance[pair]])  # (rows, E)
            block = torch.where(keep, x[instance[pair]], background[from_background])
            return block.reshape(-1, *self.x.shape[1:])

        total = coalitions.shape[0]
        out = self.predictor.map(
            total * n_bg,
            build,
            unit=n_bg,
            reduce=self._background_mean,
            on_call=lambda start, stop: bar.advance(stop // n_bg - start // n_bg),
        )
        self.rows_perturbed += total * n_bg
        return out

    # ----------------------------------------------------------------- distinct rows only

    def _background_codes(self, element_features: torch.Tensor, n_features: int):
        """Per feature, which distinct background value each background row holds.

        Returns ``(codes (N, M) int64, n_distinct (M,) int64)``, or None when comparing every
        pair of background rows would take too much memory.
        """
        key = element_features.cpu().numpy().tobytes()
        cached = self._codes_cache.get(key)
        if cached is not None:
            return cached
        background = self.background.reshape(self.background.shape[0], -1)
        n, e = background.shape
        if n * n * e > _MAX_CODE_PAIRS:
            return None
        equal = (background[:, None, :] == background[None, :, :]).to(torch.int8)  # (N, N, E)
        same = torch.ones(n, n, n_features, dtype=torch.int8, device=self.device)
        same.scatter_reduce_(2, element_features.expand(n, n, e), equal, reduce="amin")
        first = same.to(torch.int64).argmax(
            dim=1
        )  # (N, M): the first background row holding the same values
        is_first = first == torch.arange(n, device=self.device)[:, None]
        rank = is_first.to(torch.int64).cumsum(0) - 1
        codes = rank.gather(0, first)
        result = (codes, is_first.sum(0))
        self._codes_cache[key] = result
        return result

    def distinct_expected_outputs(
        self, rows: torch.Tensor, full: torch.Tensor, feature_of: torch.Tensor, bar: Progress
    ) -> torch.Tensor | None:
        """``(n, S, K)``: as :meth:`expected_outputs`, scoring each distinct perturbed row once.

        Args:
            rows: ``(n,)`` the instances (rows of ``self.x``).
            full: ``(n, S, M)`` their coalitions.
            feature_of: ``(B, E)`` feature id of each element.

        Returns:
            The means, or None when a key would not be exact (see :meth:`_distinct_pairs`):
            every row is scored then.
        """
        n, s, _ = full.shape
        n_bg = self.background.shape[0]
        found = [self._distinct_pairs(int(rows[i]), full[i], feature_of) for i in range(n)]
        if any(pairs is None for pairs in found):
            return None
        firsts = [first for first, _ in found]
        instance = torch.cat([torch.full_like(first, i) for i, first in enumerate(firsts)])
        pair = torch.cat(firsts)
        coalition, from_background = pair // n_bg, pair % n_bg
        background = self.background.reshape(n_bg, -1)
        x = self.x.reshape(self.x.shape[0], -1)

        def build(start: int, stop: int) -> torch.Tensor:
            owner = rows[instance[start:stop]]
            keep = full[instance[start:stop], coalition[start:stop]].gather(1, feature_of[owner])
            block = torch.where(keep, x[owner], background[from_background[start:stop]])
            return block.reshape(-1, *self.x.shape[1:])

        total = pair.shape[0]
        advanced = [0]

        def progress(start: int, stop: int) -> None:
            done = stop * s * n // total  # the bar counts coalitions, as the other path does
            bar.advance(done - advanced[0])
            advanced[0] = done

        scores = self._scores(self.predictor.map(total, build, on_call=progress))
        self.rows_perturbed += n * s * n_bg
        out = torch.empty(n, s, scores.shape[1], dtype=torch.float64, device=self.device)
        start = 0
        for i, (first, inverse) in enumerate(found):
            mine = scores[start : start + first.shape[0]][inverse]
            out[i] = self._background_mean(mine)
            start += first.shape[0]
        return out

    def _distinct_pairs(
        self, b: int, coalitions: torch.Tensor, feature_of: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The distinct perturbed rows of instance ``b`` over its ``(S, M)`` coalitions.

        A perturbed row is fixed by, per feature, whether it holds the instance's value
        (kept, or a background value equal to it) or which distinct background value. Those
        codes in a mixed radix are an exact integer key per (coalition, background row), so
        ``torch.unique`` finds the distinct rows without comparing rows.

        Returns:
            ``first`` ``(u,)``: for each distinct row, its first (coalition * N + background
            row) pair; ``inverse`` ``(S * N,)``: the distinct row of every pair. None when a
            key would not be exact (too many features x distinct values).
        """
        s, m_total = coalitions.shape
        n_bg = self.background.shape[0]
        element_features = feature_of[b]
        codes = self._background_codes(element_features, m_total)
        if codes is None:
            return None
        rank, n_distinct = codes
        equal = torch.ones(n_bg, m_total, dtype=torch.int8, device=self.device)
        same_value = self.background.reshape(n_bg, -1) == self.x.reshape(self.x.shape[0], -1)[b]
        equal.scatter_reduce_(
            1, element_features.expand(n_bg, -1), same_value.to(torch.int8), reduce="amin"
        )
        differs = equal == 0  # (N, M): the background row's value is not the instance's
        base = torch.where(differs.any(0), n_distinct + 1, torch.ones_like(n_distinct)).to(
            torch.float64
        )
        if float(base.prod()) >= _EXACT_KEYS:
            return None
        radix = torch.cumprod(base, 0) / base
        digits = differs.to(torch.float64) * (rank + 1).to(torch.float64) * radix  # (N, M)
        # exact integers below 2**52, whatever order the product sums them in
        key = (
            ((~coalitions).to(torch.float64) @ digits.T).round().to(torch.int64).reshape(-1)
        )  # (S * N,)
        unique, inverse = torch.unique(key, return_inverse=True)
        first = torch.full((unique.shape[0],), s * n_bg, dtype=torch.int64, device=self.device)
        first.scatter_reduce_(0, inverse, torch.arange(s * n_bg, device=self.device), reduce="amin")
        return first, inverse

    # ----------------------------------------------------------------- the whole call

    def link(self, values: torch.Tensor) -> torch.Tensor:
        if self.config.link == "identity":
            return values
        if bool(((values < 0) | (values > 1)).any()):
            bad = values[(values < 0) | (values > 1)][0].item()
            raise ValueError(
                f"link='logit' needs probabilities in [0, 1], but the predictor returned {bad!r}; give a predictor "
                "that returns probabilities, or use link='identity' for scores"
            )
        eps = self.config.logit_clip
        p = values.clamp(eps, 1 - eps)
        return torch.log(p / (1 - p))

    def explain(self) -> tuple[dict[str, Any], dict[str, Any]]:
        config = self.config
        model = self.explainer.model
        b = self.x.shape[0]
        feature_of = self._element_features()
        m_total = len(self.names)
        varying = self._varying(feature_of, m_total)
        n_varying = varying.sum(1)
        with preserved_model_state(model), torch.no_grad():
            predictions = self.predict_as_given(self.x)
            fx = predictions if predictions.dim() == 2 else predictions[:, None]
            fx = fx.to(torch.float64)
            fnull = self._background_mean(self.predictor.outputs(self.background))[0]
            k = fx.shape[1]
            link_fx, link_null = self.link(fx), self.link(fnull)
            values = torch.zeros(b, k, m_total, dtype=torch.float64, device=self.device)
            one = n_varying == 1
            if bool(one.any()):
                column = varying[one].int().argmax(1)
                rows = one.nonzero()[:, 0]
                values[rows, :, column] = (link_fx[rows] - link_null).to(torch.float64)
            plans = {
                int(m): coalition_plan(int(m), config.nsamples, config.seed)
                for m in n_varying.unique()
                if m >= 2
            }
            work = sum(len(plans[int(m)].weights) * int((n_varying == m).sum()) for m in plans)
            with Progress(work, "KernelShap", enabled=config.progress) as bar:
                for m, plan in plans.items():
                    rows = (n_varying == m).nonzero()[:, 0]
                    values[rows] = self._solve_group(
                        rows, plan, varying, feature_of, link_fx, link_null, bar
                    )
        values = torch.where(values.abs() < _ZERO_BELOW, torch.zeros_like(values), values)
        out = self.input_device
        importances = values.abs().mean(0)
        data = {
            "shap_values": values.to(out),
            "expected_value": link_null.to(out),
            "predictions": predictions.to(out),
            "target": (
                fx.argmax(1) if k > 1 else torch.zeros(b, dtype=torch.int64, device=self.device)
            ).to(out),
            "varying": varying.to(out),
            "feature_mask": self.feature_mask.to(out),
            "importances": importances.to(out),
            "aggregated_importances": values.abs().sum(1).mean(0).to(out),
        }
        meta = {
            "device": out,
            "feature_names": list(self.names),
            "n_background": int(self.background.shape[0]),
            "coalitions": {str(m): len(plan.weights) for m, plan in sorted(plans.items())},
            "total_model_calls": self.predictor.calls,
            "total_rows_evaluated": self.predictor.rows_evaluated,
            "total_rows_perturbed": self.rows_perturbed,
        }
        return data, meta

    def _solve_group(
        self, rows, plan, varying, feature_of, link_fx, link_null, bar
    ) -> torch.Tensor:
        """``(n, K, M_total)`` values of the instances ``rows``, which share ``plan``.

        Instances go through in blocks of at most :data:`_KEYS_PER_BLOCK` (coalition,
        background row) pairs, so what is held besides the results does not grow with n.
        """
        per_block = max(1, _KEYS_PER_BLOCK // (len(plan.weights) * self.background.shape[0]))
        return torch.cat(
            [
                self._solve_block(
                    rows[start : start + per_block],
                    plan,
                    varying,
                    feature_of,
                    link_fx,
                    link_null,
                    bar,
                )
                for start in range(0, rows.shape[0], per_block)
            ]
        )

    def _solve_block(
        self, rows, plan, varying, feature_of, link_fx, link_null, bar
    ) -> torch.Tensor:
        n, m = rows.shape[0], plan.masks.shape[1]
        m_total = varying.shape[1]
        # the varying features of each instance, in column order (shap's np.nonzero)
        order = torch.sort((~varying[rows]).to(torch.int8), dim=1, stable=True).indices[
            :, :m
        ]  # (n, m)
        masks = torch.from_numpy(plan.masks).to(self.device)
        s = masks.shape[0]
        full = torch.zeros(n, s, m_total, dtype=torch.bool, device=self.device)
        full.scatter_(2, order[:, None, :].expand(n, s, m), masks[None].expand(n, s, m))
        ey = (
            self.distinct_expected_outputs(rows, full, feature_of, bar)
            if self.config.cache_predictions
            else None
        )
        if ey is None:
            instance = rows[:, None].expand(n, s).reshape(-1)
            ey = self.expected_outputs(full.reshape(n * s, m_total), instance, feature_of, bar)
            ey = ey.view(n, s, -1)
        k = ey.shape[2]
        adjusted = (self.link(ey) - link_null).permute(0, 2, 1)  # (n, K, S)
        total = link_fx[rows] - link_null  # (n, K)
        z = masks.to(torch.float64)
        w = torch.from_numpy(plan.weights).to(self.device)
        select = self.config.l1_reg not in ("auto", False) or (
            self.config.l1_reg == "auto" and plan.fraction_evaluated < _AUTO_L1_FRACTION
        )
        if select:
            phi = _solve_selected(
                z.cpu().numpy(),
                w.cpu().numpy(),
                adjusted.cpu().numpy(),
                total.cpu().numpy(),
                self.config.l1_reg,
            )
            phi = torch.from_numpy(phi).to(self.device)
        else:
            phi = _solve_all(z, w, adjusted, total)
        values = torch.zeros(n, k, m_total, dtype=torch.float64, device=self.device)
        values.scatter_(2, order[:, None, :].expand(n, k, m), phi)
        return values


def _solve_all(
    z: torch.Tensor, w: torch.Tensor, adjusted: torch.Tensor, total: torch.Tensor
) -> torch.Tensor:
    """The constrained weighted least squares of every instance and class at once.

    With the last feature eliminated by efficiency (``phi_M = total - sum(others)``),
    the design ``X = z[:, :-1] - z[:, -1:]`` and the weights are shared by every row of
    a plan, so one ``(M-1, M-1)`` system is factored once for all right-hand sides.
    Every step that touches a right-hand side is elementwise or a sum along it (no
    matrix product over the rows), so an instance's values do not depend on the other
    instances of the call: BLAS rounds a row of a product differently with the number
    of rows.

    Args:
        z: ``(S, M)`` coalitions; w: ``(S,)`` weights; adjusted: ``(n, K, S)`` link(E[f]) - link(f_null);
        total: ``(n, K)`` link(f(x)) - link(f_null).

    Returns:
        ``(n, K, M)`` float64.
    """
    design = z[:, :-1] - z[:, -1:]
    weighted = w[:, None] * design
    gram = design.T @ weighted  # shared by every right-hand side
    y = adjusted - z[:, -1] * total[..., None]  # (n, K, S)
    rhs = _products(y, weighted)  # (n, K, M-1)
    flat = rhs.reshape(-1, rhs.shape[-1])
    solved = _solve_rows(gram, flat)
    if solved is None:
        warnings.warn(
            "KernelShap: the regression is singular for this coalition plan; using least squares instead. "
            "Raise nsamples, or group features, to get a regular system.",
            stacklevel=4,
        )
        root = w.sqrt()
        pseudo_inverse = torch.linalg.pinv(root[:, None] * design)  # (M-1, S), shared
        solved = _products(root * y.reshape(-1, y.shape[-1]), pseudo_inverse.T)
    phi_rest = solved.reshape(rhs.shape)
    last = total - phi_rest.sum(-1)
    return torch.cat([phi_rest, last[..., None]], dim=-1)


def _products(rows: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``rows @ matrix`` for ``rows`` ``(..., S)`` and ``matrix`` ``(S, C)``, each output a sum along one
    row: the same bits for a row whatever the other rows are."""
    out = torch.empty(*rows.shape[:-1], matrix.shape[1], dtype=rows.dtype, device=rows.device)
    for column in range(matrix.shape[1]):
        out[..., column] = (rows * matrix[:, column]).sum(-1)
    return out


def _solve_rows(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor | None:
    """``x`` with ``gram @ x_r = rhs_r`` for every row ``r`` of ``rhs`` ``(R, m)``; None when ``gram`` is singular.

    One LU factorisation (partial pivoting), then forward and back substitution in LAPACK's
    column order (``getrs``: each solved unknown is taken out of the rows below, or above),
    one elementwise update of every row at a time, so a row's solution does not depend on
    the others.
    """
    lu, pivots, info = torch.linalg.lu_factor_ex(gram)
    if int(info) != 0:
        return None
    permutation, lower, upper = torch.lu_unpack(lu, pivots)
    x = rhs[:, permutation.argmax(dim=0)].clone()  # gram = P L U: solve L U x = P^T b
    m = gram.shape[0]
    for j in range(m - 1):
        x[:, j + 1 :] -= x[:, j : j + 1] * lower[j + 1 :, j]
    for j in range(m - 1, -1, -1):
        x[:, j] /= upper[j, j]
        x[:, :j] -= x[:, j : j + 1] * upper[:j, j]
    return x


def _solve_selected(
    z: np.ndarray, w: np.ndarray, adjusted: np.ndarray, total: np.ndarray, l1_reg: Any
) -> np.ndarray:
    """shap's L1 feature selection then the constrained fit on the selected features, per (instance, class).

    The selection (scikit-learn's LARS / LassoLarsIC / Lasso, as shap uses) runs on the
    CPU one regression at a time; the rest of KernelShap stays batched.
    """
    try:
        from sklearn.linear_model import Lasso, LassoLarsIC, lars_path
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:  # pragma: no cover - exercised only without the test extra
        raise ImportError(
            f"KernelShap l1_reg={l1_reg!r} selects features with scikit-learn: pip install scikit-learn "
            "(or pass l1_reg=False)"
        ) from None
    n, k, _ = adjusted.shape
    m = z.shape[1]
    kept = z.sum(1)
    root = np.sqrt(np.hstack((w * (m - kept), w * kept)))
    design_aug = root[:, None] * np.vstack((z, z - 1))
    phi = np.zeros((n, k, m))
    for i in range(n):
        for c in range(k):
            y = adjusted[i, c]
            y_aug = np.hstack((y, y - total[i, c])) * root
            if isinstance(l1_reg, str) and l1_reg.startswith("num_features("):
                selected = lars_path(
                    design_aug, y_aug, max_iter=int(l1_reg[len("num_features(") : -1])
                )[1]
            elif l1_reg in ("auto", "aic", "bic"):
                criterion = "aic" if l1_reg == "auto" else l1_reg
                model = make_pipeline(
                    StandardScaler(with_mean=False), LassoLarsIC(criterion=criterion)
                )
                selected = np.nonzero(model.fit(design_aug, y_aug)[1].coef_)[0]
            else:
                selected = np.nonzero(Lasso(alpha=l1_reg).fit(design_aug, y_aug).coef_)[0]
            selected = np.asarray(selected, dtype=np.int64)
            if len(selected) == 0:
                continue
            last = selected[-1]
            y2 = y - z[:, last] * total[i, c]
            design = z[:, selected[:-1]] - z[:, [last]]
            weighted = w[:, None] * design
            try:
                coef = np.linalg.solve(design.T @ weighted, weighted.T @ y2)
            except np.linalg.LinAlgError:
                root_w = np.sqrt(w)
                coef = np.linalg.lstsq(root_w[:, None] * design, root_w * y2, rcond=None)[0]
            phi[i, c, selected[:-1]] = coef
            phi[i, c, last] = total[i, c] - coef.sum()
    return phi


# ----------------------------------------------------------------------------- background


def _as_weights(weights: Any, n: int) -> torch.Tensor:
    w = torch.as_tensor(
        np.asarray(weights.cpu() if isinstance(weights, torch.Tensor) else weights),
        dtype=torch.float64,
    )
    if w.shape != (n,):
        raise ValueError(
            f"weights must be shaped ({n},), one per background row, got {tuple(w.shape)}"
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return w / w.sum()


def _check_groups(groups: Any, n_columns: int) -> list[list[int]]:
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence) or not groups:
        raise TypeError(
            f"groups must be a non-empty list of lists of column indices, got {groups!r}"
        )
    clean: list[list[int]] = []
    for g in groups:
        if (
            isinstance(g, (str, bytes))
            or not isinstance(g, Sequence)
            or not g
            or not all(_checks.is_int(c) for c in g)
        ):
            raise TypeError(f"each group must be a non-empty list of column indices, got {g!r}")
        clean.append([int(c) for c in g])
    flat = sorted(c for g in clean for c in g)
    if flat != list(range(n_columns)):
        missing = sorted(set(range(n_columns)) - set(flat))
        repeated = sorted({c for c in flat if flat.count(c) > 1})
        raise ValueError(
            f"groups must put each of the {n_columns} columns in exactly one group; missing {missing}, "
            f"repeated {repeated}, out of range {sorted(c for c in set(flat) if not 0 <= c < n_columns)}"
        )
    return clean


def _kmeans_rows(background: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``shap.kmeans``: k-means centres (scikit-learn, seed 0, 10 inits), each value snapped to the
    nearest value of its column, weighted by cluster size."""
    try:
        from sklearn.cluster import KMeans
    except ImportError:  # pragma: no cover - exercised only without the test extra
        raise ImportError(
            "summarise_background=True clusters the background with scikit-learn: pip install scikit-learn "
            "(or summarise it yourself and pass weights)"
        ) from None
    flat = background.reshape(background.shape[0], -1).cpu().numpy().astype(np.float64)
    fitted = KMeans(n_clusters=k, random_state=0, n_init=10).fit(flat)
    centres = fitted.cluster_centers_
    nearest = np.abs(flat[None, :, :] - centres[:, None, :]).argmin(axis=1)  # (k, E)
    snapped = np.take_along_axis(flat, nearest, axis=0)
    counts = np.bincount(fitted.labels_, minlength=k).astype(np.float64)
    rows = torch.from_numpy(snapped).to(background.dtype).reshape(k, *background.shape[1:])
    return rows, torch.from_numpy(counts / counts.sum())


def _sample_rows(background: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` rows drawn without replacement (a fixed seed, so fit is reproducible), equally weighted."""
    order = np.random.RandomState(0).permutation(background.shape[0])[:k]  # noqa: NPY002 - local, seeded
    return background[torch.from_numpy(np.sort(order))], torch.full(
        (k,), 1.0 / k, dtype=torch.float64
    )


@functional_twin(KernelShap)
def kernel_shap(
    predictor: Any,
    inputs: Any,
    background_data: Any,
    feature_mask: Any = None,
    summarise_background: bool | str = False,
    n_background_samples: int = 300,
    groups: Sequence[Sequence[int]] | None = None,
    group_names: Sequence[str] | None = None,
    weights: Any = None,
    **settings: Any,
) -> Explanation:
    """Functional form of :class:`KernelShap`: fit on ``background_data`` and explain ``inputs`` in one call.

    Examples:
        >>> predict = lambda x: x @ np.array([[1.0], [2.0], [-1.0]])
        >>> kernel_shap(predict, np.ones((1, 3)), np.zeros((1, 3))).shap_values.round(decimals=12).tolist()
        [[[1.0, 2.0, -1.0]]]
    """
    explainer = KernelShap(predictor, **settings).fit(
        background_data, summarise_background, n_background_samples, groups, group_names, weights
    )
    return explainer.explain(inputs, feature_mask=feature_mask)
