"""MNIST, offline by default.

``load_mnist`` reads the full MNIST from torchvision's folder layout when its files
are present (``<root>/MNIST/raw/*-idx?-ubyte[.gz]``), downloads it through
torchvision only when asked (``download=True``), and otherwise uses the 5,000-digit
subset bundled with torchexplain (see ``NOTICE.md`` beside this file). Nothing
waits on the network by default.
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

BUNDLED_FILE = "mnist_5k.csv.gz"
#: the bundled subset is shuffled with this seed and split 4,000 train / 1,000 test
BUNDLED_SPLIT_SEED = 0
BUNDLED_TEST_SIZE = 1000

_RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class MNISTSplit(NamedTuple):
    """Images ``(N, 1, 28, 28)`` float32 in [0, 1], labels ``(N,)`` int64, and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str


def load_mnist(
    split: str = "train", root: str | Path | None = None, download: bool = False
) -> MNISTSplit:
    """Load an MNIST split.

    Args:
        split: ``"train"`` or ``"test"``.
        root: a torchvision MNIST root (the folder holding ``MNIST/raw``). When its
            files are there the full 60k/10k MNIST is used.
        download: fetch MNIST into ``root`` through torchvision if it is missing.
            Off by default: without it nothing touches the network.

    Returns:
        An :class:`MNISTSplit`. ``source`` is ``"torchvision:<root>"`` or
        ``"bundled:mnist_5k"``.

    Examples:
        >>> train = load_mnist("train")
        >>> train.images.shape[1:]
        torch.Size([1, 28, 28])
    """
    if split not in _RAW_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if root is not None:
        raw = Path(root) / "MNIST" / "raw"
        if not _raw_files_present(raw, split) and download:
            _download_with_torchvision(Path(root))
        if _raw_files_present(raw, split):
            images, labels = _read_raw(raw, split)
            return MNISTSplit(images, labels, f"torchvision:{root}")
        if download:
            raise FileNotFoundError(f"MNIST download into {root} did not produce {raw}")
    elif download:
        raise ValueError("download=True needs a root folder to download MNIST into")
    images, labels = _bundled_split(split)
    return MNISTSplit(images.clone(), labels.clone(), "bundled:mnist_5k")


def _raw_files_present(raw: Path, split: str) -> bool:
    return all(_find_raw(raw, name) is not None for name in _RAW_FILES[split])


def _find_raw(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        content = f.read()
    # IDX header: two zero bytes, a type code (0x08 = unsigned byte), the number of
    # dimensions, then one big-endian int32 per dimension.
    if content[:2] != b"\x00\x00" or content[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = content[3]
    shape = tuple(int(d) for d in np.frombuffer(content, dtype=">i4", count=ndim, offset=4))
    return np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _read_raw(raw: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    image_file, label_file = (_find_raw(raw, name) for name in _RAW_FILES[split])
    images = _read_idx(image_file)
    labels = _read_idx(label_file)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise ValueError(
            f"MNIST files in {raw} disagree: images {images.shape}, labels {labels.shape}"
        )
    return _to_tensors(images, labels)


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


@functools.lru_cache(maxsize=1)
def _bundled_arrays() -> tuple[np.ndarray, np.ndarray]:
    data_file = resources.files("torchexplain.datasets").joinpath(BUNDLED_FILE)
    with data_file.open("rb") as raw_bytes, gzip.open(raw_bytes, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.uint8)
    # The file is sorted by label: shuffle once, with a fixed local generator.
    order = np.random.default_rng(BUNDLED_SPLIT_SEED).permutation(table.shape[0])
    table = table[order]
    return table[:, :784].reshape(-1, 28, 28), table[:, 784]


def _bundled_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _bundled_arrays()
    n_train = images.shape[0] - BUNDLED_TEST_SIZE
    part = slice(0, n_train) if split == "train" else slice(n_train, None)
    return _to_tensors(images[part], labels[part])


def _download_with_torchvision(root: Path) -> None:
    try:
        from torchvision.datasets import MNIST
    except Exception as err:  # torchvision missing, or built for another torch
        raise RuntimeError(
            "download=True uses torchvision.datasets.MNIST, which could not be imported "
            f"({err}). Install a torchvision that matches your torch, or place the MNIST "
            f"raw files in {root / 'MNIST' / 'raw'}."
        ) from err
    for train in (True, False):
        MNIST(str(root), train=train, download=True)
