"""The offline MNIST loader, the demo CNN, and the heatmap helpers."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from torchexplain import visualize
from torchexplain.datasets import load_mnist


def test_bundled_split_is_disjoint_balanced_and_deterministic():
    train, test = load_mnist("train"), load_mnist("test")
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.float32
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    counts = torch.bincount(test.labels, minlength=10)
    assert int(counts.min()) > 60  # shuffled, not sorted by label
    train_rows = {
        row.tobytes()
        for row in (train.images.numpy() * 255).round().astype(np.uint8).reshape(4000, -1)
    }
    test_rows = [
        row.tobytes()
        for row in (test.images.numpy() * 255).round().astype(np.uint8).reshape(1000, -1)
    ]
    assert sum(r in train_rows for r in test_rows) < 5  # MNIST itself has a few duplicates
    assert torch.equal(load_mnist("test").labels, test.labels)


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_reads_torchvision_layout_when_present(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28))
    labels = np.arange(7) % 10
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels)
    split = load_mnist("test", root=tmp_path)
    assert split.source.startswith("torchvision:")
    np.testing.assert_allclose(split.images[:, 0].numpy(), images / 255.0, rtol=1e-6)
    assert split.labels.tolist() == labels.tolist()
    # the train files are absent: the bundled subset is used, nothing is downloaded
    assert load_mnist("train", root=tmp_path).source == "bundled:mnist_5k"


def test_bad_split():
    with pytest.raises(ValueError, match="split must be"):
        load_mnist("validation")


def test_heatmap_colours():
    a = torch.tensor([[-1.0, 0.0, 1.0]])
    rgb = visualize.heatmap(a, percentile=100)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 3, 3)
    assert rgb[0, 1].tolist() == [255, 255, 255]  # zero is white
    assert rgb[0, 2, 0] > rgb[0, 2, 2]  # positive is red
    assert rgb[0, 0, 2] > rgb[0, 0, 0]  # negative is blue
    assert visualize.heatmap(torch.zeros(4, 4)).min() == 255


def test_grid_png(tmp_path):
    img = torch.rand(1, 28, 28)
    path = visualize.save_grid(
        [[img, visualize.heatmap(img), visualize.overlay(img, img)]] * 2,
        ["one", "two"],
        tmp_path / "g.png",
        scale=2,
    )
    with Image.open(path) as im:
        assert im.size[0] >= 3 * 56 and im.size[1] >= 2 * 56
    with pytest.raises(ValueError, match="captions"):
        visualize.save_grid([[img]], [], tmp_path / "bad.png")


def test_mask_overlay_keeps_the_mask_and_dims_the_rest():
    image = torch.full((1, 2, 2), 0.8)
    mask = torch.tensor([[True, False], [False, True]])
    out = visualize.mask_overlay(image, mask, dim=0.5)
    assert out[0, 0].tolist() == [204, 204, 204] and out[1, 1].tolist() == [204, 204, 204]
    assert out[0, 1].tolist() == [102, 102, 102]
    with pytest.raises(ValueError, match="mask"):
        visualize.mask_overlay(image, torch.ones(3, 3, dtype=torch.bool))


def test_mask_overlay_outline_paints_exactly_the_mask_edge():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 9, 11, generator=g)
    mask = torch.zeros(9, 11, dtype=torch.bool)
    mask[2:7, 3:9] = True
    mask[0, :] = True  # touches the border: the image's edge is not the mask's edge
    plain = visualize.mask_overlay(image, mask)
    drawn = visualize.mask_overlay(image, mask, outline=(255, 190, 0))
    for y in range(9):
        for x in range(11):
            neighbours = [(y + dy, x + dx) for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))]
            edge = bool(mask[y, x]) and any(
                0 <= ny < 9 and 0 <= nx < 11 and not mask[ny, nx] for ny, nx in neighbours
            )
            expected = [255, 190, 0] if edge else plain[y, x].tolist()
            assert drawn[y, x].tolist() == expected, (y, x)
