"""Anchor explanations for images (Ribeiro et al., "Anchors: High-Precision Model-Agnostic Explanations", AAAI 2018).

An anchor is a small set of superpixels that, kept as they are, make the model repeat
its prediction with high probability (precision >= ``threshold``) whatever happens to
the rest of the image. Superpixels outside the anchor are perturbed with probability
``p_sample``: replaced by the superpixel's mean colour, or by the same region of a random
background image. This is Alibi's ``AnchorImage`` made batched and device-resident:

- perturbed images are built on the device with one gather and one ``where`` per chunk
  (no Python loop over samples or superpixels);
- the KL-LUCB beam searches of all images in a batch advance together
  (:func:`torchexplain.anchors.search.run_searches`), so each model call carries the
  samples of every image and every anchor under test;
- randomness comes from one local ``torch.Generator`` per image seeded with ``seed``,
  drawn on the CPU, so results do not depend on the batch or on the device.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from torchexplain._model_state import preserved_model_state
from torchexplain.anchors.search import AnchorResult, BeamSearch, SampleBatch, run_searches
from torchexplain.base import Explainer, make_meta
from torchexplain.explanation import Explanation
from torchexplain.segmentation import SEGMENTATION_METHODS, segment

__all__ = ["AnchorImage", "anchor_image", "numpy_predictor"]

#: segmentation settings used when none are given (Alibi's defaults)
DEFAULT_SEGMENTATION_KWARGS: dict[str, dict[str, Any]] = {
    "slic": {"n_segments": 10, "compactness": 10.0, "sigma": 0.5},
    "felzenszwalb": {},
    "quickshift": {},
}

#: at most this many input elements (images x C x H x W) go to the model in one call
_MAX_CALL_ELEMENTS = 1 << 26
#: ...and on the CPU at most this many images. Compute per image is flat from ~32 images
#: up, but larger calls can cost more: glibc hands big freed activations back to the OS
#: and the next call page-faults them in again (MNIST CNN, one thread: 0.51-0.55 ms per
#: image at 32-64, 0.72-0.85 at 100-128; 0.51-0.55 at every size with trimming off).
_CPU_MAX_CALL_IMAGES = 64


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


def _check_probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a number in the open interval (0, 1), got {value!r}")
    return float(value)


def _check_count(name: str, value: Any, minimum: int = 1, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_images(images: Any) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a torch.Tensor of shape (C, H, W) or (B, C, H, W), got {type(images).__name__}"
        )
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"images must have shape (C, H, W) or (B, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got dtype {images.dtype}")
    if images.numel() == 0:
        raise ValueError(f"images must be non-empty, got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    return images


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
        images.device.type != "cpu" or images.dim() != 4 or images.shape[1] != 1
        or not images.is_contiguous() or images.shape[0] == 0
    ):
        return images
    _, _, h, w = images.shape
    return images.as_strided(images.shape, (h * w, 1, w, 1))


class _CountingPredictor:
    """Calls the user's predictor in chunks, turns its output into labels, counts calls."""

    def __init__(self, predictor: Callable[[torch.Tensor], Any], chunk: int) -> None:
        self.predictor = predictor
        self.chunk = chunk
        self.calls = 0
        self.images = 0

    def labels(self, images: torch.Tensor) -> list[tuple[torch.Tensor, slice]]:
        out = []
        for start in range(0, images.shape[0], self.chunk):
            part = images[start : start + self.chunk]
            out.append((self._labels_one_call(part), slice(start, start + part.shape[0])))
        return out

    def _labels_one_call(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        scores = self.predictor(_grey_channels_last(images))
        self.calls += 1
        self.images += n
        if isinstance(scores, np.ndarray):
            scores = torch.from_numpy(scores)
        if not isinstance(scores, torch.Tensor):
            raise TypeError(f"predictor must return a tensor (or numpy array), got {type(scores).__name__}")
        # Labels live on the images' device whatever device the predictor answered on.
        if scores.dim() == 2 and scores.shape[0] == n and scores.shape[1] >= 1:
            return scores.argmax(dim=1).to(device=images.device, dtype=torch.int64)
        if scores.dim() == 1 and scores.shape[0] == n:
            if scores.is_floating_point() or scores.is_complex():
                raise ValueError(
                    f"predictor returned a 1-D float tensor of shape {tuple(scores.shape)}; expected class "
                    "scores (B, K) or integer labels (B,)"
                )
            return scores.to(device=images.device, dtype=torch.int64)
        raise ValueError(
            f"predictor returned shape {tuple(scores.shape)} for {n} images; expected class scores "
            f"({n}, K) or labels ({n},)"
        )


def _segment_means(images: torch.Tensor, segments: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Each pixel replaced by its superpixel's mean colour: ``(B, C, H, W)``."""
    b, c, h, w = images.shape
    index = segments.reshape(b, 1, h * w).expand(b, c, h * w)
    sums = torch.zeros(b, c, n_segments, dtype=images.dtype, device=images.device)
    sums.scatter_add_(2, index, images.reshape(b, c, h * w))
    counts = torch.zeros(b, 1, n_segments, dtype=images.dtype, device=images.device)
    counts.scatter_add_(2, segments.reshape(b, 1, h * w), torch.ones_like(images[:, :1].reshape(b, 1, h * w)))
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

    def agreement(self, keys: np.ndarray, evaluate: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
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


def anchor_image(
    predictor: Callable[[torch.Tensor], Any],
    images: torch.Tensor,
    segmentation_fn: str | Callable[..., Any] = "slic",
    segmentation_kwargs: dict[str, Any] | None = None,
    images_background: torch.Tensor | None = None,
    threshold: float = 0.95,
    p_sample: float = 0.5,
    delta: float = 0.1,
    tau: float = 0.15,
    batch_size: int = 100,
    coverage_samples: int = 10000,
    beam_size: int = 1,
    stop_on_first: bool = False,
    max_anchor_size: int | None = None,
    min_samples_start: int = 100,
    n_covered_ex: int = 10,
    device: torch.device | str | None = None,
    seed: int | None = None,
    max_images_per_call: int | None = None,
    cache_predictions: bool = True,
) -> Explanation:
    """Anchors for a batch of images (Ribeiro et al., AAAI 2018), as Alibi's ``AnchorImage``.

    Args:
        predictor: black-box model: a callable taking ``(N, C, H, W)`` tensors on
            ``device`` and returning class scores ``(N, K)`` or labels ``(N,)``
            (wrap numpy functions on ``(N, H, W, C)`` with :func:`numpy_predictor`). An
            ``nn.Module`` is run in eval mode under ``torch.no_grad`` and left as found.
        images: ``(C, H, W)`` or ``(B, C, H, W)`` floating-point images.
        segmentation_fn: ``"slic"``, ``"felzenszwalb"``, ``"quickshift"`` or a callable
            (see :func:`torchexplain.segmentation.segment`). Built-in methods see
            single-channel images repeated to RGB, as Alibi does.
        segmentation_kwargs: keyword arguments of the segmentation (default: Alibi's).
        images_background: ``(N_bg, C, H, W)`` images whose regions replace perturbed
            superpixels; None replaces them with the superpixel's mean colour.
        threshold: precision an anchor must reach.
        p_sample: probability that a superpixel outside the anchor is perturbed.
        delta: confidence budget of the precision bounds.
        tau: KL-LUCB tolerance (``epsilon`` of the search).
        batch_size: samples drawn per arm pull.
        coverage_samples: perturbation samples used to estimate coverage.
        beam_size: anchors kept per anchor size.
        stop_on_first: stop at the first valid anchor.
        max_anchor_size: largest anchor tried (None: all superpixels).
        min_samples_start: samples for the empty-anchor check.
        n_covered_ex: examples kept of each kind (prediction kept / changed).
        device: where images are perturbed and the predictor runs (default: the
            images' device).
        seed: seed of the per-image generators (None: fresh entropy).
        max_images_per_call: most images per predictor call (default: as many as fit
            in 2**26 input elements, and at most 64 on the CPU).
        cache_predictions: query the predictor once per distinct perturbed image and
            reuse its answer when the search draws the same image again (the predictor
            must be deterministic; with mean-colour replacement and ~10 superpixels
            most samples repeat). False queries it for every sample, as Alibi does.
            The search, and so the explanation, is the same either way.

    Returns:
        An :class:`Explanation` whose ``data`` holds, for B images:
        ``anchor`` (list of B lists of superpixel ids, in the order added), ``mask``
        ``(B, H, W)`` bool, ``segments`` ``(B, H, W)`` int64, ``label`` ``(B,)`` the
        explained prediction, ``precision`` and ``coverage`` ``(B,)`` float64,
        ``success`` ``(B,)`` bool, ``covered_true`` / ``covered_false`` (lists of B
        ``(k, C, H, W)`` tensors, ``k <= n_covered_ex``: perturbed samples with the
        anchor where the prediction held / changed), ``n_model_calls`` and
        ``n_images_evaluated`` ``(B,)`` int64 (the calls that carried the image's
        samples, and the images the model saw for it, the initial prediction included;
        samples answered from ``cache_predictions`` are not counted).

    Examples:
        >>> predict = lambda x: torch.stack([x[:, 0, :4].mean((1, 2)) - 0.5, 0.5 - x[:, 0, :4].mean((1, 2))], 1)
        >>> image = torch.zeros(1, 8, 8); image[:, :4] = 1.0
        >>> exp = anchor_image(predict, image, segmentation_fn=lambda im: np.arange(64).reshape(8, 8) // 32, seed=0)
        >>> exp.anchor
        [[0]]
    """
    images = _check_images(images)
    threshold = _check_probability("threshold", threshold)
    p_sample = _check_probability("p_sample", p_sample)
    delta = _check_probability("delta", delta)
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
        raise ValueError(f"tau must be a positive number, got {tau!r}")
    batch_size = _check_count("batch_size", batch_size)
    coverage_samples = _check_count("coverage_samples", coverage_samples)
    beam_size = _check_count("beam_size", beam_size)
    max_anchor_size = _check_count("max_anchor_size", max_anchor_size, allow_none=True)
    min_samples_start = _check_count("min_samples_start", min_samples_start)
    n_covered_ex = _check_count("n_covered_ex", n_covered_ex, minimum=0)
    if not isinstance(cache_predictions, bool):
        raise TypeError(f"cache_predictions must be a bool, got {cache_predictions!r}")
    if not callable(predictor):
        raise TypeError(f"predictor must be callable, got {type(predictor).__name__}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    if isinstance(segmentation_fn, str) and segmentation_fn not in SEGMENTATION_METHODS:
        raise ValueError(
            f"unknown segmentation_fn {segmentation_fn!r}; expected one of {SEGMENTATION_METHODS} or a callable"
        )
    if not isinstance(segmentation_fn, str) and not callable(segmentation_fn):
        raise TypeError(f"segmentation_fn must be a name or a callable, got {type(segmentation_fn).__name__}")

    device = torch.device(device) if device is not None else images.device
    images = images.to(device)
    b, c, h, w = images.shape
    if images_background is not None:
        if not isinstance(images_background, torch.Tensor):
            raise TypeError(f"images_background must be a torch.Tensor, got {type(images_background).__name__}")
        if images_background.dim() != 4 or tuple(images_background.shape[1:]) != (c, h, w) or not len(images_background):
            raise ValueError(
                f"images_background must have shape (N, {c}, {h}, {w}) with N >= 1, got {tuple(images_background.shape)}"
            )
        images_background = images_background.to(device=device, dtype=images.dtype)
    seed = int(seed) if seed is not None else secrets.randbits(62)
    if max_images_per_call is None:
        chunk = max(1, _MAX_CALL_ELEMENTS // (c * h * w))
        if device.type == "cpu":
            chunk = min(chunk, _CPU_MAX_CALL_IMAGES)
    else:
        chunk = max_images_per_call
    chunk = _check_count("max_images_per_call", chunk)

    # ---- segmentation
    if isinstance(segmentation_fn, str):
        kwargs = dict(DEFAULT_SEGMENTATION_KWARGS[segmentation_fn] if segmentation_kwargs is None else segmentation_kwargs)
        # Grey images are repeated to RGB before a built-in segmentation, as Alibi does.
        to_segment = images.expand(-1, 3, -1, -1) if c == 1 else images
    else:
        kwargs = dict(segmentation_kwargs or {})
        to_segment = images
    segments = segment(to_segment, segmentation_fn, **kwargs).to(device)
    n_features = [int(s.max()) + 1 for s in segments]
    m_max = max(n_features)

    model = predictor if isinstance(predictor, nn.Module) else None
    counter = _CountingPredictor(predictor, chunk)
    with preserved_model_state(model), torch.no_grad():
        target = torch.cat([lab for lab, _ in counter.labels(images)])
        if images_background is None:
            replacements = _segment_means(images, segments, m_max)
        else:
            replacements = images_background
        n_replacements = replacements.shape[0]

        generators = [torch.Generator().manual_seed(seed) for _ in range(b)]
        searches = []
        for i in range(b):
            coverage = torch.rand(coverage_samples, n_features[i], generator=generators[i]) >= p_sample
            search = BeamSearch(
                n_features[i], coverage.numpy(), threshold=threshold, delta=delta, epsilon=tau,
                batch_size=batch_size, beam_size=beam_size, min_samples_start=min_samples_start,
                max_anchor_size=max_anchor_size, stop_on_first=stop_on_first,
            )
            searches.append(search.run())
        calls_per_image = np.ones(b, dtype=np.int64)  # the call that found the explained labels
        images_per_image = np.ones(b, dtype=np.int64)
        use_cache = cache_predictions and _AgreementCache.fits(b, n_replacements, m_max)
        cache = _AgreementCache(n_replacements, n_features) if use_cache else None

        def draw(i: int, anchor: tuple[int, ...], n: int) -> tuple[torch.Tensor, torch.Tensor]:
            present = torch.rand(n, n_features[i], generator=generators[i]) >= p_sample
            present[:, list(anchor)] = True
            if images_background is None:
                which = torch.full((n,), i, dtype=torch.int64)
            else:
                which = torch.randint(n_replacements, (n,), generator=generators[i])
            return present, which

        def evaluate(owner: torch.Tensor, present: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
            """Agreement of the model with the explained label on each perturbed sample."""
            owner_dev, present_dev, which_dev = owner.to(device), present.to(device), which.to(device)
            agree = torch.empty(len(owner), dtype=torch.bool)
            for start in range(0, len(owner), chunk):
                part = slice(start, start + chunk)
                batch = perturb(images, segments, replacements, owner_dev[part], present_dev[part], which_dev[part])
                labels = counter._labels_one_call(batch)
                agree[part] = (labels == target[owner_dev[part]]).cpu()
                calls_per_image[torch.unique(owner[part]).numpy()] += 1
            images_per_image[:] += np.bincount(owner.numpy(), minlength=b)
            return agree

        def sample_fn(requests: list[tuple[int, tuple[int, ...], int]]) -> list[SampleBatch]:
            drawn = [draw(i, anchor, n) for i, anchor, n in requests]
            sizes = [n for _, _, n in requests]
            owner = torch.repeat_interleave(torch.tensor([i for i, _, _ in requests]), torch.tensor(sizes))
            present = torch.zeros(len(owner), m_max, dtype=torch.bool)
            row = 0
            for (p, _), n in zip(drawn, sizes, strict=True):
                present[row : row + n, : p.shape[1]] = p
                row += n
            which = torch.cat([wh for _, wh in drawn])
            if cache is None:
                agree = evaluate(owner, present, which).numpy()
            else:
                keys = cache.keys_of(owner.numpy(), present.numpy(), which.numpy())

                def evaluate_rows(rows: np.ndarray) -> np.ndarray:
                    index = torch.from_numpy(rows)
                    return evaluate(owner[index], present[index], which[index]).numpy()

                agree = cache.agreement(keys, evaluate_rows)
            answers, row = [], 0
            for (p, wh), n in zip(drawn, sizes, strict=True):
                answers.append(SampleBatch(p.numpy(), agree[row : row + n], wh.numpy()))
                row += n
            return answers

        results: list[AnchorResult] = run_searches(searches, sample_fn)

        # Covered examples come from the samples the precision estimate rests on (no new queries).
        covered_true, covered_false = [], []
        for i, result in enumerate(results):
            samples = result.samples
            for keep, store in ((samples.agree, covered_true), (~samples.agree, covered_false)):
                rows = np.flatnonzero(keep)[:n_covered_ex]
                padded = torch.zeros(rows.size, m_max, dtype=torch.bool)
                padded[:, : samples.present.shape[1]] = torch.from_numpy(samples.present[rows])
                owner = torch.full((rows.size,), i, dtype=torch.int64, device=device)
                which = torch.from_numpy(samples.payload[rows]).to(device)
                store.append(perturb(images, segments, replacements, owner, padded.to(device), which))

    anchors = [list(r.anchor) for r in results]
    mask = torch.zeros(b, h, w, dtype=torch.bool, device=device)
    for i, anchor in enumerate(anchors):
        if anchor:
            mask[i] = torch.isin(segments[i], torch.tensor(anchor, device=device))
    params = {
        "segmentation_fn": segmentation_fn if isinstance(segmentation_fn, str) else "custom",
        "segmentation_kwargs": kwargs, "threshold": threshold, "p_sample": p_sample, "delta": delta,
        "tau": tau, "batch_size": batch_size, "coverage_samples": coverage_samples, "beam_size": beam_size,
        "stop_on_first": stop_on_first, "max_anchor_size": max_anchor_size,
        "min_samples_start": min_samples_start, "n_covered_ex": n_covered_ex, "seed": seed,
        "cache_predictions": cache_predictions,
        "background": None if images_background is None else int(images_background.shape[0]),
    }
    meta = make_meta(
        "AnchorImage", params, device=str(device), total_model_calls=counter.calls,
        total_images_evaluated=counter.images,
    )
    data = {
        "anchor": anchors,
        "mask": mask.cpu(),
        "segments": segments.cpu(),
        "label": target.cpu(),
        "precision": torch.tensor([r.precision for r in results], dtype=torch.float64),
        "coverage": torch.tensor([r.coverage for r in results], dtype=torch.float64),
        "success": torch.tensor([r.success for r in results], dtype=torch.bool),
        "covered_true": [t.cpu() for t in covered_true],
        "covered_false": [t.cpu() for t in covered_false],
        "n_model_calls": torch.from_numpy(calls_per_image),
        "n_images_evaluated": torch.from_numpy(images_per_image),
    }
    return Explanation(meta, data)


class AnchorImage(Explainer):
    """Anchor explanations for images (Ribeiro et al., AAAI 2018); the class twin of :func:`anchor_image`.

    Args:
        predictor: callable ``(N, C, H, W)`` -> scores ``(N, K)`` or labels ``(N,)``
            (see :func:`numpy_predictor` for numpy ``(N, H, W, C)`` functions).
        segmentation_fn: ``"slic"``, ``"felzenszwalb"``, ``"quickshift"`` or a callable.
        segmentation_kwargs: keyword arguments of the segmentation (default: Alibi's).
        images_background: ``(N_bg, C, H, W)`` replacement images, or None for mean colours.
        device: where to perturb and predict (default: the images' device).
        seed: seed of the per-image generators (None: fresh entropy per call).

    Examples:
        >>> predict = lambda x: torch.stack([x[:, 0, :4].mean((1, 2)) - 0.5, 0.5 - x[:, 0, :4].mean((1, 2))], 1)
        >>> image = torch.zeros(1, 8, 8); image[:, :4] = 1.0
        >>> explainer = AnchorImage(predict, segmentation_fn=lambda im: np.arange(64).reshape(8, 8) // 32, seed=0)
        >>> explainer.explain(image).anchor
        [[0]]
    """

    name = "AnchorImage"

    def __init__(
        self,
        predictor: Callable[[torch.Tensor], Any],
        segmentation_fn: str | Callable[..., Any] = "slic",
        segmentation_kwargs: dict[str, Any] | None = None,
        images_background: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> None:
        if not callable(predictor):
            raise TypeError(f"predictor must be callable, got {type(predictor).__name__}")
        super().__init__(
            predictor, segmentation_fn=segmentation_fn, segmentation_kwargs=segmentation_kwargs,
            images_background=images_background, device=device, seed=seed,
        )

    def explain(
        self,
        images: torch.Tensor,
        threshold: float = 0.95,
        p_sample: float = 0.5,
        delta: float = 0.1,
        tau: float = 0.15,
        batch_size: int = 100,
        coverage_samples: int = 10000,
        beam_size: int = 1,
        stop_on_first: bool = False,
        max_anchor_size: int | None = None,
        min_samples_start: int = 100,
        n_covered_ex: int = 10,
        max_images_per_call: int | None = None,
        cache_predictions: bool = True,
    ) -> Explanation:
        """Explain ``(C, H, W)`` or ``(B, C, H, W)`` images; see :func:`anchor_image` for the arguments and fields."""
        return anchor_image(
            self.model, images, threshold=threshold, p_sample=p_sample, delta=delta, tau=tau,
            batch_size=batch_size, coverage_samples=coverage_samples, beam_size=beam_size,
            stop_on_first=stop_on_first, max_anchor_size=max_anchor_size,
            min_samples_start=min_samples_start, n_covered_ex=n_covered_ex,
            max_images_per_call=max_images_per_call, cache_predictions=cache_predictions, **self.config,
        )
