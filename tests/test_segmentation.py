"""Segmentation: our torch SLIC held to scikit-image's quality, the scikit-image backends, the measures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.color import rgb2lab
from skimage.segmentation import felzenszwalb as sk_felzenszwalb
from skimage.segmentation import quickshift as sk_quickshift
from skimage.segmentation import slic as sk_slic

from torchexplain.segmentation import (
    boundary_recall,
    felzenszwalb,
    gaussian_blur,
    quickshift,
    relabel_consecutive,
    rgb_to_lab,
    segment,
    slic,
    undersegmentation_error,
)


def voronoi_images(n: int, channels: int, size: int, n_regions: int = 6, seed: int = 0):
    """Piecewise-constant images (Voronoi regions of random colours, plus noise) and their true regions."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, truths = [], []
    for _ in range(n):
        seeds = torch.rand(n_regions, 2, generator=g) * size
        dist = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
        truth = dist.argmin(0)
        colours = torch.rand(n_regions, channels, generator=g)
        image = colours[truth].permute(2, 0, 1) + 0.05 * torch.randn(
            channels, size, size, generator=g
        )
        images.append(image.clamp(0, 1))
        truths.append(truth)
    return torch.stack(images), torch.stack(truths)


def segment_counts(labels: torch.Tensor) -> torch.Tensor:
    return torch.tensor([int(lab.max()) + 1 for lab in labels], dtype=torch.float64)


def assert_quality_matches_skimage(
    ours: torch.Tensor, theirs: torch.Tensor, truth: torch.Tensor
) -> None:
    """The issue's bar: segment count within ±20 %, boundary recall and UE within 10 % of scikit-image's."""
    k_ours, k_ref = segment_counts(ours).mean(), segment_counts(theirs).mean()
    assert abs(k_ours - k_ref) <= 0.2 * k_ref, (k_ours, k_ref)
    br_ours, br_ref = boundary_recall(ours, truth).mean(), boundary_recall(theirs, truth).mean()
    assert br_ours >= 0.9 * br_ref, (br_ours, br_ref)
    ue_ours = undersegmentation_error(ours, truth).mean()
    ue_ref = undersegmentation_error(theirs, truth).mean()
    assert ue_ours <= 1.1 * ue_ref, (ue_ours, ue_ref)


def assert_each_segment_connected(labels: torch.Tensor) -> None:
    four = ndimage.generate_binary_structure(2, 1)
    for lab in labels.cpu().numpy():
        for value in np.unique(lab):
            _, n_parts = ndimage.label(lab == value, structure=four)
            assert n_parts == 1, f"segment {value} has {n_parts} parts"


@pytest.mark.parametrize(
    ("channels", "size", "n_segments"), [(3, 48, 30), (3, 64, 50), (1, 28, 15)]
)
def test_torch_slic_on_cpu_matches_skimage_quality(channels, size, n_segments):
    images, truth = voronoi_images(16, channels, size, seed=1)
    kwargs = dict(n_segments=n_segments, compactness=10.0, sigma=0.5)
    ours = slic(images, backend="torch", **kwargs)
    theirs = slic(images, backend="skimage", **kwargs)
    assert_quality_matches_skimage(ours, theirs, truth)
    assert_each_segment_connected(ours)


@pytest.mark.gpu
def test_gpu_slic_matches_skimage_quality():
    images, truth = voronoi_images(16, 3, 96, n_regions=10, seed=2)
    kwargs = dict(n_segments=100, compactness=10.0, sigma=1.0)
    ours = slic(images.cuda(), **kwargs)  # auto backend: torch on CUDA
    assert ours.is_cuda
    theirs = slic(images, backend="skimage", **kwargs)
    assert_quality_matches_skimage(ours.cpu(), theirs, truth)
    assert_each_segment_connected(ours)


def test_torch_slic_without_connectivity_equals_skimage_on_a_clean_image():
    # Two flat halves: both implementations must find the same partition exactly.
    image = torch.zeros(1, 3, 20, 20)
    image[:, :, :, 10:] = 1.0
    ours = slic(image, n_segments=2, compactness=1.0, backend="torch")
    theirs = slic(image, n_segments=2, compactness=1.0, backend="skimage")
    assert torch.equal(ours, theirs)


def test_labels_are_consecutive_and_start_label_shifts():
    images, _ = voronoi_images(3, 3, 32)
    for backend in ("torch", "skimage"):
        labels = slic(images, n_segments=20, backend=backend)
        for lab in labels:
            assert torch.equal(lab.unique(), torch.arange(int(lab.max()) + 1))
        assert torch.equal(slic(images, n_segments=20, backend=backend, start_label=1), labels + 1)


def test_skimage_backend_equals_skimage_per_image():
    images, _ = voronoi_images(4, 3, 32)
    ours = slic(images, n_segments=20, compactness=10.0, sigma=0.5, backend="skimage", n_workers=2)
    for image, lab in zip(images, ours, strict=True):
        ref = sk_slic(
            image.permute(1, 2, 0).numpy(),
            n_segments=20,
            compactness=10.0,
            sigma=0.5,
            start_label=0,
        )
        assert torch.equal(lab, torch.from_numpy(ref).long())


def test_felzenszwalb_and_quickshift_equal_skimage():
    images, _ = voronoi_images(2, 3, 24)
    fz = felzenszwalb(images, scale=50, min_size=10)
    qs = quickshift(images, kernel_size=3, max_dist=6)
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        ref_fz = sk_felzenszwalb(image, scale=50, min_size=10, channel_axis=-1)
        ref_qs = sk_quickshift(image, kernel_size=3, max_dist=6, channel_axis=-1)
        assert torch.equal(fz[i], relabel_consecutive(torch.from_numpy(ref_fz)[None].long())[0])
        assert torch.equal(qs[i], relabel_consecutive(torch.from_numpy(ref_qs)[None].long())[0])


def test_rgb_to_lab_and_blur_match_skimage_and_scipy():
    rgb = torch.rand(2, 3, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = np.stack([rgb2lab(im) for im in rgb.permute(0, 2, 3, 1).numpy()]).transpose(0, 3, 1, 2)
    torch.testing.assert_close(rgb_to_lab(rgb), torch.from_numpy(ref), rtol=1e-4, atol=1e-3)
    blurred = gaussian_blur(rgb, 1.3)
    ref = ndimage.gaussian_filter(rgb.numpy(), sigma=(0, 0, 1.3, 1.3), mode="reflect", truncate=4.0)
    torch.testing.assert_close(blurred, torch.from_numpy(ref), rtol=1e-10, atol=1e-12)


def test_user_callables_per_image_and_batched():
    images = torch.rand(2, 1, 8, 8)
    blocks = np.arange(64).reshape(8, 8) // 16 + 5  # labels 5..8 -> renumbered 0..3
    per_image = segment(images, lambda image: blocks)
    assert torch.equal(per_image, torch.from_numpy(blocks - 5).expand(2, 8, 8))
    batched = segment(images, lambda x: torch.from_numpy(blocks).expand(x.shape[0], 8, 8))
    assert torch.equal(batched, per_image)


def test_quality_measures_on_hand_counted_cases():
    truth = torch.zeros(1, 4, 4, dtype=torch.long)
    truth[:, :, 2:] = 1
    assert boundary_recall(truth, truth, tolerance=0).item() == 1.0
    one_segment = torch.zeros_like(truth)
    assert boundary_recall(one_segment, truth).item() == 0.0
    # One superpixel over both halves leaks min(8, 8) for each half: UE = 16 / 16.
    assert undersegmentation_error(one_segment, truth).item() == 1.0
    assert undersegmentation_error(truth, truth).item() == 0.0
    shifted = torch.zeros_like(truth)
    shifted[:, :, 3:] = 1  # column 2 is misassigned: 4 pixels leak into each true region's count
    assert undersegmentation_error(shifted, truth).item() == pytest.approx(8 / 16)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: slic(torch.rand(3, 8, 8)), ValueError),
        (lambda: slic(torch.rand(1, 3, 8, 8), n_segments=0), ValueError),
        (lambda: slic(torch.rand(1, 3, 8, 8), compactness=0), ValueError),
        (lambda: slic(torch.rand(1, 3, 8, 8), backend="cuda"), ValueError),
        (lambda: slic(torch.full((1, 3, 8, 8), float("nan"))), ValueError),
        (lambda: slic([[1.0]]), TypeError),
        (lambda: segment(torch.rand(1, 3, 8, 8), "watershed"), ValueError),
        (
            lambda: segment(torch.rand(1, 3, 8, 8), lambda im: np.zeros((3, 3), dtype=int)),
            ValueError,
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error):
    with pytest.raises(error):
        call()
