"""AnchorImage: known anchors on toy models, precision that holds on fresh samples, invariants, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from torchexplain import AnchorImage, Explanation, anchor_image
from torchexplain.anchors import numpy_predictor
from torchexplain.anchors.image import perturb
from torchexplain.segmentation import slic

SIZE, BLOCK = 12, 3  # 12x12 images cut into a 4x4 grid of 3x3 superpixels
N_BLOCKS = (SIZE // BLOCK) ** 2
GRID = (torch.arange(SIZE).view(-1, 1) // BLOCK) * (SIZE // BLOCK) + torch.arange(SIZE) // BLOCK


def grid_segments(image: np.ndarray) -> np.ndarray:
    """Alibi-style segmentation callable: (H, W, C) numpy -> (H, W) labels."""
    return GRID.numpy()


def block_means(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 16) mean brightness of each grid block."""
    pooled = nn.functional.avg_pool2d(x.mean(1, keepdim=True), BLOCK)
    return pooled.flatten(1)


class BlocksModel(nn.Module):
    """Class 1 iff every block in ``needed`` is bright (mean > 0.5); scores (N, 2)."""

    def __init__(self, needed: list[int]) -> None:
        super().__init__()
        self.needed = needed
        self.dropout = nn.Dropout(0.5)  # must be switched off (eval) during explanation
        self.norm = nn.BatchNorm1d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = (block_means(x)[:, self.needed] > 0.5).all(1).float()
        return torch.stack([1 - bright, bright], 1)


def bright_image(blocks: list[int] | None = None) -> torch.Tensor:
    image = torch.full((1, SIZE, SIZE), 0.9)
    if blocks is not None:
        image = torch.zeros(1, SIZE, SIZE)
        for b in blocks:
            image[0][GRID == b] = 0.9
    return image


DARK_BACKGROUND = torch.zeros(4, 1, SIZE, SIZE)
FAST = dict(coverage_samples=2000, batch_size=100)


@pytest.mark.parametrize("needed", [[5], [2, 7], [0, 10, 15]])
def test_finds_exactly_the_known_anchor(needed, device):
    # Every block is bright, but only `needed` matter: the anchor is those and nothing needless.
    exp = anchor_image(
        BlocksModel(needed),
        bright_image()[None],
        segmentation_fn=grid_segments,
        images_background=DARK_BACKGROUND,
        device=device,
        seed=0,
        **FAST,
    )
    assert sorted(exp.anchor[0]) == needed
    assert exp.success.tolist() == [True]
    assert exp.precision.item() == 1.0
    # Coverage is the chance that a sample keeps all anchor blocks: 0.5 ** |anchor|.
    assert exp.coverage.item() == pytest.approx(0.5 ** len(needed), abs=0.03)
    assert torch.equal(exp.mask[0], torch.isin(GRID, torch.tensor(needed)))


def test_empty_anchor_when_prediction_never_changes():
    constant = lambda x: torch.zeros(x.shape[0], dtype=torch.int64)  # noqa: E731
    exp = anchor_image(
        constant, bright_image()[None], segmentation_fn=grid_segments, seed=0, **FAST
    )
    assert exp.anchor == [[]] and exp.success.item() and exp.coverage.item() == 1.0
    assert not exp.mask.any()


def fresh_precision(
    predict, image, segments, anchor, label, background, p_sample, n, seed
) -> float:
    """Precision re-estimated with an independent, loop-based sampler (as Alibi builds samples)."""
    rng = np.random.default_rng(seed)
    n_seg = int(segments.max()) + 1
    samples = []
    for _ in range(n):
        sample = image.clone()
        which = background[rng.integers(len(background))]
        for s in range(n_seg):
            if s not in anchor and rng.random() < p_sample:
                sample[:, segments == s] = which[:, segments == s]
        samples.append(sample)
    return (predict(torch.stack(samples)).argmax(1) == label).double().mean().item()


def test_reported_precision_holds_on_fresh_samples():
    # A soft model: a weighted vote of blocks, so anchors need several blocks and are not exact.
    weights = torch.linspace(-1, 2, N_BLOCKS)[
        torch.randperm(N_BLOCKS, generator=torch.Generator().manual_seed(3))
    ]

    def predict(x: torch.Tensor) -> torch.Tensor:
        score = block_means(x) @ weights - 2.0
        return torch.stack([-score, score], 1)

    images = torch.stack(
        [bright_image(), bright_image(list(range(0, 16, 2))), bright_image(list(range(10)))]
    )
    background = torch.rand(6, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 0.3
    threshold = 0.9
    exp = anchor_image(
        predict,
        images,
        segmentation_fn=grid_segments,
        images_background=background,
        threshold=threshold,
        seed=0,
        **FAST,
    )
    assert exp.success.any()
    for i in range(len(images)):
        if not exp.success[i]:
            continue
        fresh = fresh_precision(
            predict,
            images[i],
            GRID,
            exp.anchor[i],
            int(exp.target[i]),
            background,
            0.5,
            400,
            seed=100 + i,
        )
        assert fresh >= threshold - 0.05, (i, exp.anchor[i], fresh)


def test_vectorised_perturbation_equals_a_python_loop():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 10, 10, generator=g)
    segments = slic(images, n_segments=6, backend="torch")
    m = int(segments.max()) + 1
    replacements = torch.rand(5, 3, 10, 10, generator=g)
    owner = torch.tensor([0, 1, 1, 0])
    present = torch.rand(4, m, generator=g) > 0.5
    which = torch.tensor([4, 0, 2, 2])
    fast = perturb(images, segments, replacements, owner, present, which)
    for n in range(4):
        expected = images[owner[n]].clone()
        for s in range(m):
            region = segments[owner[n]] == s
            if not present[n, s]:
                expected[:, region] = replacements[which[n]][:, region]
        assert torch.equal(fast[n], expected)


def test_batch_gives_the_same_anchors_as_each_image_alone():
    model = BlocksModel([1, 6])
    images = torch.stack([bright_image(), bright_image([1, 6, 9]), bright_image([2, 3])])
    kwargs = dict(segmentation_fn=grid_segments, images_background=DARK_BACKGROUND, seed=7, **FAST)
    batch = anchor_image(model, images, **kwargs)
    for i in range(len(images)):
        alone = anchor_image(model, images[i : i + 1], **kwargs)
        assert alone.anchor[0] == batch.anchor[i]
        assert alone.precision[0] == batch.precision[i]
        assert alone.coverage[0] == batch.coverage[i]
        assert alone.n_images_evaluated[0] == batch.n_images_evaluated[i]
    assert batch.meta["total_model_calls"] < sum(
        anchor_image(model, im[None], **kwargs).meta["total_model_calls"] for im in images
    )


def test_class_and_function_agree_and_are_deterministic():
    model = BlocksModel([3, 12])
    explainer = AnchorImage(
        model, segmentation_fn=grid_segments, images_background=DARK_BACKGROUND, seed=11
    )
    a = explainer.explain(bright_image()[None], **FAST)
    b = anchor_image(
        model,
        bright_image()[None],
        segmentation_fn=grid_segments,
        images_background=DARK_BACKGROUND,
        seed=11,
        **FAST,
    )
    c = explainer.explain(bright_image()[None], **FAST)
    for exp in (b, c):
        assert exp.anchor == a.anchor
        assert torch.equal(exp.precision, a.precision) and torch.equal(exp.coverage, a.coverage)
        assert torch.equal(exp.n_images_evaluated, a.n_images_evaluated)
        for x, y in zip(
            exp.covered_true + exp.covered_false, a.covered_true + a.covered_false, strict=True
        ):
            assert torch.equal(x, y)


def test_covered_examples_counts_and_json_round_trip():
    model = BlocksModel([5])
    exp = anchor_image(
        model,
        bright_image()[None],
        segmentation_fn=grid_segments,
        images_background=DARK_BACKGROUND,
        seed=0,
        n_covered_ex=4,
        **FAST,
    )
    image = bright_image()
    for sample in exp.covered_true[0]:
        assert sample.shape == image.shape
        assert torch.equal(sample[:, exp.mask[0]], image[:, exp.mask[0]])  # the anchor is kept
    assert 0 < len(exp.covered_true[0]) <= 4
    assert (model(exp.covered_true[0]).argmax(1) == exp.target[0]).all()
    if len(exp.covered_false[0]):
        assert (model(exp.covered_false[0]).argmax(1) != exp.target[0]).all()
    assert exp.n_images_evaluated.item() == exp.meta["total_images_evaluated"]
    assert exp.n_model_calls.item() == exp.meta["total_model_calls"]
    back = Explanation.from_json(exp.to_json())
    assert back.anchor == exp.anchor and torch.equal(back.mask, exp.mask)


def test_model_is_left_as_found():
    model = BlocksModel([5]).train()
    model.norm.weight.grad = torch.ones(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    anchor_image(
        model,
        bright_image()[None],
        segmentation_fn=grid_segments,
        images_background=DARK_BACKGROUND,
        seed=0,
        **FAST,
    )
    assert model.training and model.dropout.training
    assert torch.equal(model.norm.weight.grad, torch.ones(2))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_numpy_predictor_gives_the_same_anchor():
    model = BlocksModel([2, 7])

    def alibi_style(x: np.ndarray) -> np.ndarray:  # (N, H, W, C) -> (N, 2)
        assert x.ndim == 4 and x.shape[-1] == 1
        return model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()

    kwargs = dict(segmentation_fn=grid_segments, images_background=DARK_BACKGROUND, seed=0, **FAST)
    ours = anchor_image(model, bright_image()[None], **kwargs)
    theirs = anchor_image(numpy_predictor(alibi_style), bright_image()[None], **kwargs)
    assert ours.anchor == theirs.anchor and torch.equal(ours.precision, theirs.precision)


def test_cpu_fallback_segments_with_scikit_image():
    from skimage.segmentation import slic as sk_slic

    image = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    exp = anchor_image(
        lambda x: block_means(x[:, :, :12, :12])[:, :2],
        image[None],
        segmentation_kwargs={"n_segments": 6},
        seed=0,
        coverage_samples=500,
        batch_size=50,
    )
    # Grayscale is segmented as RGB (repeated channels), as Alibi does.
    ref = sk_slic(
        image.expand(3, -1, -1).permute(1, 2, 0).double().numpy(), n_segments=6, start_label=0
    )
    assert torch.equal(exp.segments[0], torch.from_numpy(ref).long())


BAD_CALLS = [
    (dict(inputs=torch.rand(SIZE, SIZE)), ValueError, r"inputs must be shaped \(B, C, H, W\)"),
    (dict(inputs=torch.rand(1, SIZE, SIZE)), ValueError, r"inputs must be shaped \(B, C, H, W\)"),
    (dict(inputs=torch.zeros(1, 1, SIZE, SIZE, dtype=torch.int64)), TypeError, "floating"),
    (dict(inputs=np.zeros((1, 1, SIZE, SIZE), dtype=np.float32)), TypeError, "torch.Tensor"),
    (dict(inputs=torch.full((1, 1, SIZE, SIZE), float("nan"))), ValueError, "non-finite"),
    (dict(threshold=1.0), ValueError, "threshold"),
    (dict(threshold=0), ValueError, "threshold"),
    (dict(p_sample=1.5), ValueError, "p_sample"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(segmentation_fn="watershed"), ValueError, "watershed"),
    (dict(images_background=torch.zeros(2, 1, 5, 5)), ValueError, "images_background"),
    (
        dict(predictor=lambda x: torch.zeros(x.shape[0] + 1, 2)),
        ValueError,
        "predictor returned shape",
    ),
    (dict(predictor=lambda x: torch.zeros(x.shape[0])), ValueError, "1-D float"),
    (dict(predictor="model"), TypeError, "callable"),
]


@pytest.mark.parametrize(("override", "error", "message"), BAD_CALLS)
def test_bad_inputs_raise_clear_errors(override, error, message):
    kwargs = dict(
        predictor=BlocksModel([5]),
        inputs=bright_image()[None],
        segmentation_fn=grid_segments,
        **FAST,
    )
    kwargs.update(override)
    with pytest.raises(error, match=message):
        anchor_image(kwargs.pop("predictor"), kwargs.pop("inputs"), **kwargs)


@pytest.mark.gpu
def test_cuda_gives_the_cpu_anchors():
    # Randomness is drawn on the CPU per image, so the device changes nothing for an exact model.
    model = BlocksModel([4, 9])
    images = torch.stack([bright_image(), bright_image([4, 9, 11])])
    kwargs = dict(segmentation_fn=grid_segments, images_background=DARK_BACKGROUND, seed=3, **FAST)
    cpu = anchor_image(model, images, device="cpu", **kwargs)
    cuda = anchor_image(model, images, device="cuda", **kwargs)
    assert cuda.anchor == cpu.anchor
    assert torch.equal(cuda.precision, cpu.precision) and torch.equal(cuda.coverage, cpu.coverage)


def test_predictor_returning_labels_gives_the_same_anchor_as_scores():
    model = BlocksModel([2, 7])
    kwargs = dict(segmentation_fn=grid_segments, images_background=DARK_BACKGROUND, seed=0, **FAST)
    scores = anchor_image(model, bright_image()[None], **kwargs)
    labels = anchor_image(lambda x: model(x).argmax(1).int(), bright_image()[None], **kwargs)
    assert labels.anchor == scores.anchor and torch.equal(labels.precision, scores.precision)


class _RecordingModel(nn.Module):
    """BlocksModel that records every image it is shown, as bytes."""

    def __init__(self, needed: list[int]) -> None:
        super().__init__()
        self.inner = BlocksModel(needed)
        self.seen: list[bytes] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.extend(row.numpy().tobytes() for row in x)
        return self.inner(x)


def quadrant_segments(image: np.ndarray) -> np.ndarray:
    """Four superpixels: the quadrants of the 12x12 image."""
    rows = np.arange(SIZE)[:, None] // (SIZE // 2)
    return rows * 2 + np.arange(SIZE)[None, :] // (SIZE // 2)


@pytest.mark.parametrize("with_background", [False, True], ids=["mean-colour", "background"])
def test_prediction_cache_queries_each_distinct_image_once_and_changes_nothing(with_background):
    # Four superpixels and four backgrounds (or mean colours): at most 16 x 4 distinct
    # perturbed images per digit while the search draws hundreds of samples. The oracle is
    # the uncached run, which shows every sample to the model. Blocks 0 and 5 (bright)
    # both lie in quadrant 0, whose mean colour is dark, so the anchor is quadrant 0.
    # Faint texture makes distinct samples distinct images, so they compare as bytes.
    # One image per call: two images' samples coincide when everything is replaced by
    # the same background, and the cache is per image (so a batch changes no count).
    g = torch.Generator().manual_seed(0)
    images = bright_image([0, 5, 15]).unsqueeze(0) + 0.04 * torch.rand(
        1, 1, SIZE, SIZE, generator=g
    )
    background = 0.04 * torch.rand(4, 1, SIZE, SIZE, generator=g) if with_background else None
    # pad_to_multiple=1: the model sees exactly the images asked for (padding repeats the last one)
    kwargs = dict(
        segmentation_fn=quadrant_segments,
        images_background=background,
        seed=3,
        pad_to_multiple=1,
        **FAST,
    )
    plain_model, cached_model = _RecordingModel([0, 5]), _RecordingModel([0, 5])
    plain = anchor_image(plain_model, images, cache_predictions=False, **kwargs)
    cached = anchor_image(cached_model, images, **kwargs)

    assert cached.anchor == plain.anchor == [[0]]
    for name in ("precision", "coverage", "success", "target", "predictions", "mask"):
        assert torch.equal(getattr(cached, name), getattr(plain, name)), name
    for x, y in zip(
        cached.covered_true + cached.covered_false,
        plain.covered_true + plain.covered_false,
        strict=True,
    ):
        assert torch.equal(x, y)
    # No image is shown twice (the explained images count as shown), and exactly the
    # distinct images the uncached run showed are shown.
    assert len(cached_model.seen) == len(set(cached_model.seen))
    assert set(cached_model.seen) == set(plain_model.seen)
    assert (
        len(plain_model.seen)
        == int(plain.meta["total_images_evaluated"])
        == int(plain.n_images_evaluated.sum())
    )
    assert (
        len(cached_model.seen)
        == int(cached.meta["total_images_evaluated"])
        == int(cached.n_images_evaluated.sum())
    )
    assert len(cached_model.seen) <= 1 + 16 * 4 < len(plain_model.seen)


def test_cache_predictions_must_be_a_bool():
    with pytest.raises(TypeError, match="cache_predictions"):
        anchor_image(
            BlocksModel([5]),
            bright_image()[None],
            segmentation_fn=grid_segments,
            cache_predictions="yes",
        )


def test_grey_images_reach_the_predictor_channels_last_with_the_same_values():
    from torchexplain.anchors.image import _grey_channels_last

    grey = torch.rand(5, 1, 7, 9)
    strided = _grey_channels_last(grey)
    assert strided.stride() == (63, 1, 9, 1) and strided.is_contiguous()
    assert strided.data_ptr() == grey.data_ptr() and torch.equal(strided, grey)
    assert torch.equal(strided.view(5, -1), grey.view(5, -1))  # views still work
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 2, 2))
    torch.testing.assert_close(conv(strided), conv(grey), rtol=1e-5, atol=1e-6)
    rgb = torch.rand(2, 3, 4, 4)
    assert _grey_channels_last(rgb) is rgb


def test_a_batch_too_large_for_memory_is_searched_in_parts_with_the_same_result(monkeypatch):
    import torchexplain.anchors._batches as batches

    model = BlocksModel([1, 6])
    images = torch.stack([bright_image(), bright_image([1, 6, 9]), bright_image([2, 3])])
    kwargs = dict(segmentation_fn=grid_segments, images_background=DARK_BACKGROUND, seed=7, **FAST)
    whole = anchor_image(model, images, **kwargs)
    monkeypatch.setattr(batches, "instances_per_search", lambda bytes_each, device, total: 2)
    split = anchor_image(model, images, **kwargs)
    assert split.meta["search_parts"] == 2 and whole.meta["search_parts"] == 1
    assert split.anchor == whole.anchor and torch.equal(split.mask, whole.mask)
    for name in ("precision", "coverage", "success", "target", "n_images_evaluated"):
        assert torch.equal(getattr(split, name), getattr(whole, name)), name
