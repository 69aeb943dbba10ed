"""Anchor explanations for images (Ribeiro et al., "Anchors: High-Precision Model-Agnostic Explanations", AAAI 2018).

An anchor is a small set of superpixels that, kept as they are, make the model repeat
its prediction with high probability (precision >= ``threshold``) whatever happens to
the rest of the image. Superpixels outside the anchor are perturbed with probability
``p_sample``: replaced by the superpixel's mean colour, or by the same region of a random
background image. This is Alibi's ``AnchorImage`` made batched and device-resident:

- perturbed images are built on the device with one gather and one ``where`` per chunk
  (no Python loop over samples or superpixels);
- the KL-LUCB beam searches of all images in a batch advance together, as tensors on
  the device (:mod:`torchexplain.anchors.engine`), so each model call carries the
  samples of every image and every anchor under test;
- randomness is counter-based (:mod:`torchexplain._random`), keyed by ``seed`` and each
  sample's number in its image's own stream, so results do not depend on the batch or
  on the device.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchexplain import _checks, _random
from torchexplain._model_state import preserved_model_state
from torchexplain.anchors._batches import merge_parts, parts
from torchexplain.anchors._settings import AnchorSearchSettings
from torchexplain.anchors.engine import EngineResult, pack_rows, run_engine
from torchexplain.base import Explainer, functional_twin, register_explainer
from torchexplain.explanation import Explanation
from torchexplain.models import Predictor, Rows, as_labels
from torchexplain.segmentation import (
    DEFAULT_SEGMENTATION_KWARGS,
    superpixels,
)
from torchexplain.settings import (
    DeviceSettings,
    ModelCallSettings,
    SeedSettings,
    SegmentationSettings,
    setting,
)

__all__ = ["AnchorImage", "AnchorImageSettings", "anchor_image", "numpy_predictor"]


#: at most this many input elements (images x C x H x W) go to the model in one call
_MAX_CALL_ELEMENTS = 1 << 26
#: ...and on the CPU at most this many images. Compute per image is flat from ~32 images
#: up, but larger calls can cost more: glibc hands big freed activations back to the OS
#: and the next call page-faults them in again (MNIST CNN, one thread: 0.51-0.55 ms per
#: image at 32-64, 0.72-0.85 at 100-128; 0.51-0.55 at every size with trimming off).
_CPU_MAX_CALL_IMAGES = 64

# Names of the random streams (any distinct numbers).
_COVERAGE_STREAM, _SAMPLE_STREAM, _BACKGROUND_STREAM = 1, 2, 3


def numpy_predictor(
    predict_fn: Callable[[np.ndarray], Any], channels_last: bool = True, dtype: Any = np.float32
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Adapt an Alibi-style numpy predict function to the ``(B, C, H, W)`` tensor interface.

    Args:
        predict_fn: takes a ``(B, H, W, C)`` numpy array (``(B, C, H, W)`` when
            ``channels_last=False``) and returns class scores ``(B, K)`` or labels ``(B,)``.
        channels_last: whether ``predict_fn`` expects the channel axis last.
        dtype: numpy dtype of the arrays handed to ``predict_fn``.

    Returns:
        A callable ``(B, C, H, W)`` tensor -> ``(B, K)`` or ``(B,)`` tensor on the input's device.

    Examples:
        >>> predict = numpy_predictor(lambda x: x.reshape(len(x), -1).sum(1, keepdims=True))
        >>> predict(torch.ones(2, 1, 2, 2)).shape
        torch.Size([2, 1])
    """
    if not callable(predict_fn):
        raise TypeError(f"predict_fn must be callable, got {type(predict_fn).__name__}")

    def predict(images: torch.Tensor) -> torch.Tensor:
        array = images.detach().cpu()
        if channels_last:
            array = array.permute(0, 2, 3, 1)
        out = predict_fn(np.ascontiguousarray(array.numpy(), dtype=dtype))
        return torch.as_tensor(np.asarray(out)).to(images.device)

    predict.__wrapped__ = predict_fn  # type: ignore[attr-defined]
    return predict


def _grey_channels_last(images: torch.Tensor) -> torch.Tensor:
    """The same grey ``(N, 1, H, W)`` images, strided so PyTorch reads them as channels-last.

    With one channel both layouts hold the same bytes and the tensor stays contiguous, so
    nothing a model can do with it changes; but a channel stride of 1 makes convolutions
    on the CPU pick their channels-last kernels and keep every activation in that layout,
    which runs the MNIST CNN about 1.5x faster per image (0.35 against 0.52 ms, one
    thread). Alibi's numpy ``(N, H, W, 1)`` images reach a PyTorch model this way.
    CUDA tensors are left as they are: that layout has not been measured there.
    """
    if (
        images.device.type != "cpu"
        or images.dim() != 4
        or images.shape[1] != 1
        or not images.is_contiguous()
        or images.shape[0] == 0
    ):
        return images
    _, _, h, w = images.shape
    return images.as_strided(images.shape, (h * w, 1, w, 1))


def _segment_means(images: torch.Tensor, segments: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Each pixel replaced by its superpixel's mean colour: ``(B, C, H, W)``."""
    b, c, h, w = images.shape
    index = segments.reshape(b, 1, h * w).expand(b, c, h * w)
    sums = torch.zeros(b, c, n_segments, dtype=images.dtype, device=images.device)
    sums.scatter_add_(2, index, images.reshape(b, c, h * w))
    counts = torch.zeros(b, 1, n_segments, dtype=images.dtype, device=images.device)
    counts.scatter_add_(
        2, segments.reshape(b, 1, h * w), torch.ones_like(images[:, :1].reshape(b, 1, h * w))
    )
    means = sums / counts.clamp_min(1)
    return means.gather(2, index).reshape(b, c, h, w)


class _AgreementCache:
    """Model agreement of every distinct perturbed image already evaluated in one ``explain`` call.

    A perturbed image is fixed by (image, kept superpixels, replacement image), so it is
    keyed by one int64: the superpixel bits below the (image, replacement) pair's index.
    With mean-colour replacement and ~10 superpixels only 2**10 perturbed images of a
    digit exist while the search draws thousands of samples: each distinct one goes to
    the predictor once. Keys are kept sorted for vectorised lookup.
    """

    def __init__(self, n_replacements: int, n_features: list[int]) -> None:
        self.stride = n_replacements
        self.n_bits = max(n_features)
        self.n_features = np.asarray(n_features, dtype=np.int64)
        self.weights = 1 << np.arange(self.n_bits, dtype=np.int64)
        # The unperturbed images were already shown to the model: they agree by definition.
        n = len(n_features)
        kept = np.arange(self.n_bits) < self.n_features[:, None]
        self.keys = np.sort(self.keys_of(np.arange(n), kept, np.zeros(n)))
        self.values = np.ones(n, dtype=bool)

    @staticmethod
    def fits(n_images: int, n_replacements: int, n_bits: int) -> bool:
        """Whether keys fit in 63 bits (with hundreds of superpixels repeats are too rare to matter)."""
        return n_bits + max(1, (n_images * n_replacements - 1).bit_length()) <= 62

    def keys_of(self, owner: np.ndarray, present: np.ndarray, which: np.ndarray) -> np.ndarray:
        owner = owner.astype(np.int64)
        bits = present.astype(np.int64) @ self.weights
        # With every superpixel kept the replacement image is unused: one key for all.
        which = np.where(bits == (1 << self.n_features[owner]) - 1, 0, which.astype(np.int64))
        return ((owner * self.stride + which) << self.n_bits) | bits

    def agreement(
        self, keys: np.ndarray, evaluate: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """Agreement for every key; ``evaluate(rows)`` is called once, on one row per unseen key."""
        pos = np.searchsorted(self.keys, keys)
        hit = pos < self.keys.size
        hit[hit] = self.keys[pos[hit]] == keys[hit]
        agree = np.zeros(keys.size, dtype=bool)
        agree[hit] = self.values[pos[hit]]
        miss = np.flatnonzero(~hit)
        if miss.size:
            new_keys, first, inverse = np.unique(keys[miss], return_index=True, return_inverse=True)
            fresh = evaluate(miss[first])
            agree[miss] = fresh[inverse.reshape(-1)]
            at = np.searchsorted(self.keys, new_keys)
            self.keys = np.insert(self.keys, at, new_keys)
            self.values = np.insert(self.values, at, fresh)
        return agree


def perturb(
    images: torch.Tensor,
    segments: torch.Tensor,
    replacements: torch.Tensor,
    image_index: torch.Tensor,
    present: torch.Tensor,
    replacement_index: torch.Tensor,
) -> torch.Tensor:
    """Perturbed images, built in one vectorised step.

    Args:
        images: ``(B, C, H, W)`` images being explained.
        segments: ``(B, H, W)`` superpixel labels.
        replacements: ``(R, C, H, W)`` images to take perturbed pixels from (the mean-colour
            images, or the backgrounds).
        image_index: ``(N,)`` which image each sample perturbs.
        present: ``(N, M)`` bool, superpixel kept (True) or replaced.
        replacement_index: ``(N,)`` which replacement image each sample uses.

    Returns:
        ``(N, C, H, W)`` perturbed images.
    """
    n = image_index.shape[0]
    _, _, h, w = images.shape
    keep = present.gather(1, segments[image_index].reshape(n, h * w)).view(n, 1, h, w)
    return torch.where(keep, images[image_index], replacements[replacement_index])


def _check_background(name: str, value: Any) -> torch.Tensor | None:
    if value is None:
        return None
    return Rows.of(value, name, numpy=False, exact_dim=4, layout="(N, C, H, W)").values


@dataclasses.dataclass(frozen=True)
class AnchorImageSettings(
    AnchorSearchSettings, SegmentationSettings, SeedSettings, DeviceSettings, ModelCallSettings
):
    """The settings of :class:`AnchorImage` (Alibi's names; one definition for every use)."""

    images_background: torch.Tensor | None = setting(
        None,
        "(N_bg, C, H, W) images whose regions replace perturbed superpixels; None replaces them with "
        "the superpixel's mean colour",
        check=_check_background,
    )
    cache_predictions: bool = setting(
        True,
        "query the predictor once per distinct perturbed image and reuse its answer when the search draws "
        "the same image again (the predictor must be deterministic); False queries it for every sample, "
        "as Alibi does. The explanation is the same either way",
        check=_checks.boolean(),
    )
    p_sample: float = setting(
        0.5,
        "probability that a superpixel outside the anchor is perturbed, in (0, 1)",
        per_call=True,
        check=_checks.number(0.0, 1.0, low_open=True, high_open=True),
    )


@register_explainer
class AnchorImage(Explainer):
    """Anchor explanations for images (Ribeiro et al., AAAI 2018), as Alibi's ``AnchorImage``.

    Black-box: ``predictor`` is any callable taking ``(N, C, H, W)`` tensors on the
    explainer's device and returning class scores ``(N, K)`` or labels ``(N,)`` (wrap a
    numpy function on ``(N, H, W, C)`` arrays with :func:`numpy_predictor`). An
    ``nn.Module`` is run in eval mode under ``torch.no_grad`` and left as found.

    Examples:
        >>> # class 0 when the top half is bright; superpixels: the top half (0) and the bottom (1)
        >>> predict = lambda x: torch.stack([x[:, 0, :4].mean((1, 2)) - 0.5, 0.5 - x[:, 0, :4].mean((1, 2))], 1)
        >>> image = torch.zeros(1, 1, 8, 8); image[:, :, :4] = 1.0
        >>> halves = lambda im: np.arange(64).reshape(8, 8) // 32
        >>> explainer = AnchorImage(predict, segmentation_fn=halves, images_background=torch.zeros(1, 1, 8, 8), seed=0)
        >>> explainer.explain(image).anchor
        [[0]]
    """

    name = "AnchorImage"
    cli_needs_images = True
    explainer_type = "anchor_image"
    peer = "alibi.explainers.AnchorImage"
    paper = 'Ribeiro, Singh & Guestrin, "Anchors: High-Precision Model-Agnostic Explanations", AAAI 2018'
    cli_name = "anchor"
    kind = "blackbox"
    settings_class = AnchorImageSettings

    def explain(self, inputs: torch.Tensor, **settings: Any) -> Explanation:
        """Anchors for a batch of images ``(B, C, H, W)``.

        Args:
            inputs: ``(B, C, H, W)`` floating-point images (one image: ``image[None]``).
            **settings: per-call settings (``threshold``, ``p_sample``, ``delta``, ``tau``,
                ``batch_size``, ``coverage_samples``, ``beam_size``, ``stop_on_first``,
                ``max_anchor_size``, ``min_samples_start``, ``n_covered_ex``,
                ``internal_batch_size``), as Alibi's ``explain`` takes them.

        Returns:
            An :class:`Explanation` whose ``data`` holds, for B images, on the inputs'
            device: ``anchor`` (list of B lists of superpixel ids, in the order added),
            ``mask`` ``(B, H, W)`` bool, ``segments`` ``(B, H, W)`` int64, ``target``
            ``(B,)`` the explained class (the predictor's label for each image),
            ``predictions`` (the predictor's output on the images: ``(B, K)`` scores or
            ``(B,)`` labels), ``precision`` and ``coverage`` ``(B,)`` float64,
            ``success`` ``(B,)`` bool, ``covered_true`` / ``covered_false`` (lists of B
            ``(k, C, H, W)`` tensors, ``k <= n_covered_ex``: perturbed samples with the
            anchor where the prediction held / changed), ``n_model_calls`` and
            ``n_images_evaluated`` ``(B,)`` int64 (the calls that carried the image's
            samples, and the images the predictor saw for it, the first prediction
            included; samples answered from ``cache_predictions`` are not counted).
        """
        config = self._settings_for_call(settings)
        images = Rows.of(inputs, numpy=False, exact_dim=4, layout="(B, C, H, W)")
        # What this call really uses goes into meta["params"]: the drawn seed, the
        # segmentation's default settings.
        if config.seed is None:
            config = dataclasses.replace(config, seed=secrets.randbits(62))
        if config.segmentation_kwargs is None and isinstance(config.segmentation_fn, str):
            defaults = dict(DEFAULT_SEGMENTATION_KWARGS[config.segmentation_fn])
            config = dataclasses.replace(config, segmentation_kwargs=defaults)
        device = images.compute_device(config.device)
        # a stored sample: up to 256 superpixels kept or not, its replacement image, 41 bytes of bookkeeping
        datas, totals = [], []
        for part in parts(len(images), 256 + 8 + 41, device):
            data, total = _AnchorRun(self.model, images[part], config).explain()
            datas.append(data)
            totals.append(total)
        data, total = merge_parts(datas, totals)
        return self._explanation(config, data, device, **total)

    def explanation_map(self, explanation: Explanation, inputs: torch.Tensor) -> torch.Tensor:
        """The anchor's pixels as 1.0 (0.0 elsewhere), in every channel: ``(B, C, H, W)``."""
        mask = explanation.data["mask"].to(inputs.device)
        return mask[:, None].expand(-1, inputs.shape[1], -1, -1).to(inputs.dtype)

    def draw(self, inputs: torch.Tensor, explanation: Explanation, path: str | Path) -> Path | None:
        """Per image: the image, and its anchor kept over a dimmed rest, outlined; captioned with the
        class, precision and coverage."""
        from torchexplain import visualize

        rows, captions = [], []
        for i, image in enumerate(inputs.detach().cpu()):
            anchor = visualize.mask_overlay(
                image, explanation.mask[i], outline=visualize.ANCHOR_OUTLINE
            )
            rows.append([image, anchor])
            status = "" if bool(explanation.success[i]) else " (no valid anchor)"
            captions.append(
                f"#{i} pred {int(explanation.target[i])}: precision {float(explanation.precision[i]):.2f}, "
                f"coverage {float(explanation.coverage[i]):.2f}{status}"
            )
        return visualize.save_grid(rows, captions, path, titles=["input", "anchor"])


class _AnchorRun:
    """One ``explain`` call: segmentation, the batched searches, and the results."""

    def __init__(
        self, model: Callable[[torch.Tensor], Any], images: Rows, config: AnchorImageSettings
    ):
        self.model = model
        self.config = config
        self.input_device = images.input_device
        self.device = images.compute_device(config.device)
        self.images = images.values.to(self.device)
        b, c, h, w = self.images.shape
        background = config.images_background
        if background is not None:
            if tuple(background.shape[1:]) != (c, h, w):
                raise ValueError(
                    f"images_background must have shape (N, {c}, {h}, {w}) to match the inputs, "
                    f"got {tuple(background.shape)}"
                )
            background = background.to(device=self.device, dtype=self.images.dtype)
        self.background = background
        auto = max(1, _MAX_CALL_ELEMENTS // (c * h * w))
        if self.device.type == "cpu":
            auto = min(auto, _CPU_MAX_CALL_IMAGES)
        self.predictor = Predictor.wrap(
            model,
            takes="tensor",
            device=self.device,
            batch_size=config.internal_batch_size,
            auto_rows=lambda total: auto,
            pad_to_multiple=config.padding(),
            prepare=_grey_channels_last,
        )

    def segment(self) -> torch.Tensor:
        """``(B, H, W)`` superpixel labels on the compute device."""
        return superpixels(
            self.images, self.config.segmentation_fn, self.config.segmentation_kwargs
        ).to(self.device)

    def explain(self) -> tuple[dict[str, Any], dict[str, int]]:
        config, images, device = self.config, self.images, self.device
        b, _, h, w = images.shape
        self.segments = self.segment()
        self.n_features = (
            torch.stack([s.max() + 1 for s in self.segments])
            if b
            else torch.zeros(0, dtype=torch.int64)
        )
        self.n_features = self.n_features.to(device=device, dtype=torch.int64)
        self.n_features_list = self.n_features.tolist()
        self.m_max = max(self.n_features_list, default=1)
        self.feature_valid = torch.arange(self.m_max, device=device) < self.n_features[:, None]

        model = self.model if isinstance(self.model, nn.Module) else None
        with preserved_model_state(model), torch.no_grad():
            predictions = self.predictor.outputs(images)
            self.target = as_labels(predictions)
            if self.background is None:
                self.replacements = _segment_means(images, self.segments, self.m_max)
            else:
                self.replacements = self.background
            n_replacements = self.replacements.shape[0]
            # Counter-based streams keyed by (seed, stream, sample number, slot): the same
            # numbers for an image whether it is explained alone or in a batch, on any device.
            self.sample_key = _random.stream_key(config.seed, _SAMPLE_STREAM, device)
            self.background_key = _random.stream_key(config.seed, _BACKGROUND_STREAM, device)
            coverage_key = _random.stream_key(config.seed, _COVERAGE_STREAM, device)
            rows = torch.arange(config.coverage_samples, device=device)
            coverage = _random.uniform(coverage_key, rows, self.m_max) >= config.p_sample
            self.calls_per_image = np.ones(
                b, dtype=np.int64
            )  # the call that found the explained labels
            self.images_per_image = np.ones(b, dtype=np.int64)
            use_cache = config.cache_predictions and _AgreementCache.fits(
                b, n_replacements, self.m_max
            )
            self.cache = (
                _AgreementCache(n_replacements, self.n_features_list) if use_cache else None
            )
            result = run_engine(
                self.sample,
                self.n_features,
                pack_rows(coverage)[None],
                config.coverage_samples,
                **config.engine_options(),
            )
            covered_true, covered_false = self.covered_examples(result)

        anchors = result.anchors
        mask = torch.zeros(b, h, w, dtype=torch.bool, device=device)
        for i, anchor in enumerate(anchors):
            if anchor:
                mask[i] = torch.isin(self.segments[i], torch.tensor(anchor, device=device))
        out = self.input_device
        data = {
            "anchor": anchors,
            "mask": mask.to(out),
            "segments": self.segments.to(out),
            "target": self.target.to(out),
            "predictions": predictions.to(out),
            "precision": result.precision.to(out),
            "coverage": result.coverage.to(out),
            "success": result.success.to(out),
            "covered_true": [t.to(out) for t in covered_true],
            "covered_false": [t.to(out) for t in covered_false],
            "n_model_calls": torch.from_numpy(self.calls_per_image).to(out),
            "n_images_evaluated": torch.from_numpy(self.images_per_image).to(out),
        }
        totals = {
            "total_model_calls": self.predictor.calls,
            "total_images_evaluated": self.predictor.rows_evaluated,
            "search_rounds": result.n_rounds,
            "host_syncs": result.n_syncs,
        }
        return data, totals

    def evaluate(
        self, owner: torch.Tensor, present: torch.Tensor, which: torch.Tensor
    ) -> torch.Tensor:
        """Agreement of the predictor with the explained label on each perturbed sample (on the device)."""

        def build(start: int, stop: int) -> torch.Tensor:
            part = slice(start, stop)
            return perturb(
                self.images,
                self.segments,
                self.replacements,
                owner[part],
                present[part],
                which[part],
            )

        def count(start: int, stop: int) -> None:
            self.calls_per_image[torch.unique(owner[start:stop]).cpu().numpy()] += 1

        labels = as_labels(self.predictor.map(len(owner), build, on_call=count))
        self.images_per_image += np.bincount(
            owner.cpu().numpy(), minlength=len(self.images_per_image)
        )
        return labels == self.target[owner]

    needs_order = False  # the engine's sampler protocol: superpixels do not care in which order they were added

    def sample(
        self,
        owner: torch.Tensor,
        features: torch.Tensor,
        order: torch.Tensor | None,
        stream: torch.Tensor,
        group: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One round of samples for every image: superpixels kept, agreement, replacement image used."""
        present = (
            _random.uniform(self.sample_key, stream, self.m_max) >= self.config.p_sample
        ) | features
        present &= self.feature_valid[owner]
        if self.background is None:
            which = owner
        else:
            which = _random.integers(self.background_key, stream, 1, self.replacements.shape[0])[
                :, 0
            ]
        if self.cache is None:
            agree = self.evaluate(owner, present, which)
        else:
            keys = self.cache.keys_of(
                owner.cpu().numpy(), present.cpu().numpy(), which.cpu().numpy()
            )

            def evaluate_rows(rows: np.ndarray) -> np.ndarray:
                index = torch.from_numpy(rows).to(self.device)
                return self.evaluate(owner[index], present[index], which[index]).cpu().numpy()

            agree = torch.from_numpy(self.cache.agreement(keys, evaluate_rows)).to(self.device)
        return present, agree, which

    def covered_examples(
        self, result: EngineResult
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Examples with the anchor, from the samples the precision estimate rests on (no new queries)."""
        store = result.store
        owner = store.view("owner")
        agree = store.view("agree")
        covered_true, covered_false = [], []
        for i in range(self.images.shape[0]):
            mine = result.members & (owner == i)
            for keep, kept in ((agree, covered_true), (~agree, covered_false)):
                rows = torch.nonzero(mine & keep).flatten()[: self.config.n_covered_ex]
                kept.append(
                    perturb(
                        self.images,
                        self.segments,
                        self.replacements,
                        owner[rows],
                        store.present[rows],
                        store.payload[rows],
                    )
                )
        return covered_true, covered_false


@functional_twin(AnchorImage)
def anchor_image(
    predictor: Callable[[torch.Tensor], Any], inputs: torch.Tensor, **settings: Any
) -> Explanation:
    """Functional form of :class:`AnchorImage`: the same settings, one call.

    Examples:
        >>> predict = lambda x: torch.stack([x[:, 0, :4].mean((1, 2)) - 0.5, 0.5 - x[:, 0, :4].mean((1, 2))], 1)
        >>> image = torch.zeros(1, 1, 8, 8); image[:, :, :4] = 1.0
        >>> halves = lambda im: np.arange(64).reshape(8, 8) // 32
        >>> exp = anchor_image(predict, image, segmentation_fn=halves, images_background=torch.zeros(1, 1, 8, 8), seed=0)
        >>> exp.anchor
        [[0]]
    """
    return AnchorImage(predictor, **settings).explain(inputs)
