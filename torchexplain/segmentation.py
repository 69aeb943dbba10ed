"""Superpixel segmentation for batches of images: our batched SLIC in PyTorch and scikit-image.

``slic`` runs our own batched SLIC (Achanta et al., "SLIC Superpixels Compared to
State-of-the-Art Superpixel Methods", TPAMI 2012) on CUDA tensors and scikit-image's
``slic`` (run over the batch in a thread pool) on the CPU. ``felzenszwalb`` and
``quickshift`` always go through scikit-image. ``segment`` dispatches by name or calls a
user function. Every function takes ``(B, C, H, W)`` images and returns ``(B, H, W)``
int64 labels numbered ``0..K_b-1`` for each image ``b``.

The torch SLIC follows scikit-image's algorithm step for step (min-max rescale to
[0, 1], Lab for 3 channels, Gaussian smoothing, a regular seed grid with zero initial
colours, distance ``|colour|^2 / compactness^2 + |yx|^2 / step^2``, the same
connectivity rule with ``min_size = 0.5 * segment_size``), so the two agree in
segment count and quality. It is written device-agnostically: the same code runs on the
CPU, which is how the tests hold it to scikit-image's quality without a GPU.

``boundary_recall`` and ``undersegmentation_error`` are the usual superpixel quality
measures against a ground-truth labelling.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "boundary_recall",
    "felzenszwalb",
    "quickshift",
    "relabel_consecutive",
    "segment",
    "slic",
    "superpixels",
    "undersegmentation_error",
]

#: names accepted by :func:`segment`
SEGMENTATION_METHODS = ("slic", "felzenszwalb", "quickshift")
#: settings of the built-in methods when an explainer is given none (Alibi's AnchorImage defaults)
DEFAULT_SEGMENTATION_KWARGS: dict[str, dict[str, Any]] = {
    "slic": {"n_segments": 10, "compactness": 10.0, "sigma": 0.5},
    "felzenszwalb": {},
    "quickshift": {},
}

# sRGB (D65) -> XYZ, and the D65 white point: the constants scikit-image's rgb2lab uses.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)

# Neighbour offsets of the 3x3 block of seed-grid cells a pixel may join (as gSLIC does:
# SLIC's 2S x 2S search window around each centre reaches these cells).
_GRID_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _check_images(images: Any, name: str = "images") -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}"
        )
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(images.shape)}")
    if images.dtype == torch.bool or images.is_complex():
        raise TypeError(f"{name} must be real-valued (float or integer), got dtype {images.dtype}")
    if images.is_floating_point() and not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return images


# --------------------------------------------------------------------------- scikit-image


def _numpy_images(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) tensor -> (B, H, W, C) float64 numpy, as scikit-image expects."""
    return images.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()


def _map_images(
    fn: Callable[[np.ndarray], np.ndarray], images: torch.Tensor, n_workers: int | None
) -> torch.Tensor:
    """Run a per-image (H, W, C) -> (H, W) segmentation over the batch in a thread pool.

    scikit-image's segmentations release the GIL in their Cython loops, so threads give
    real parallelism without the cost of pickling images to processes.
    """
    arrays = _numpy_images(images)
    workers = n_workers or min(len(arrays), os.cpu_count() or 1)
    if workers <= 1 or len(arrays) == 1:
        labels = [fn(a) for a in arrays]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            labels = list(pool.map(fn, arrays))
    out = []
    for i, lab in enumerate(labels):
        lab = np.asarray(lab)
        if lab.shape != arrays.shape[1:3]:
            raise ValueError(
                f"segmentation function returned labels of shape {lab.shape} for image {i}; "
                f"expected (H, W) = {arrays.shape[1:3]}"
            )
        if not np.issubdtype(lab.dtype, np.integer):
            raise TypeError(
                f"segmentation function must return integer labels, got dtype {lab.dtype}"
            )
        out.append(torch.from_numpy(lab.astype(np.int64)))
    return relabel_consecutive(torch.stack(out)).to(images.device)


def _skimage_slic(images: torch.Tensor, n_workers: int | None, **kwargs: Any) -> torch.Tensor:
    from skimage.segmentation import slic as sk_slic

    channel_axis = None if images.shape[1] == 1 else -1

    def one(image: np.ndarray) -> np.ndarray:
        return sk_slic(
            image[..., 0] if channel_axis is None else image, channel_axis=channel_axis, **kwargs
        )

    return _map_images(one, images, n_workers)


def felzenszwalb(
    images: torch.Tensor,
    scale: float = 1.0,
    sigma: float = 0.8,
    min_size: int = 20,
    n_workers: int | None = None,
) -> torch.Tensor:
    """Felzenszwalb-Huttenlocher graph segmentation (IJCV 2004) via scikit-image, per image in a thread pool.

    Args:
        images: ``(B, C, H, W)`` images.
        scale, sigma, min_size: as in ``skimage.segmentation.felzenszwalb``.
        n_workers: threads (default: one per CPU core, at most B).

    Returns:
        ``(B, H, W)`` int64 labels, ``0..K_b-1`` per image, on ``images.device``.

    Examples:
        >>> felzenszwalb(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 16, 16])
    """
    from skimage.segmentation import felzenszwalb as sk_felzenszwalb

    images = _check_images(images)
    channel_axis = None if images.shape[1] == 1 else -1

    def one(image: np.ndarray) -> np.ndarray:
        image = image[..., 0] if channel_axis is None else image
        return sk_felzenszwalb(
            image, scale=scale, sigma=sigma, min_size=min_size, channel_axis=channel_axis
        )

    return _map_images(one, images, n_workers)


def quickshift(
    images: torch.Tensor,
    ratio: float = 1.0,
    kernel_size: float = 5,
    max_dist: float = 10,
    sigma: float = 0,
    convert2lab: bool = True,
    n_workers: int | None = None,
) -> torch.Tensor:
    """Quickshift mode seeking (Vedaldi & Soatto, ECCV 2008) via scikit-image, per image in a thread pool.

    Single-channel images are repeated to three channels (scikit-image's quickshift
    needs colour images).

    Args:
        images: ``(B, C, H, W)`` images with C = 1 or 3.
        ratio, kernel_size, max_dist, sigma, convert2lab: as in ``skimage.segmentation.quickshift``.
        n_workers: threads (default: one per CPU core, at most B).

    Returns:
        ``(B, H, W)`` int64 labels, ``0..K_b-1`` per image, on ``images.device``.

    Examples:
        >>> quickshift(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 16, 16])
    """
    from skimage.segmentation import quickshift as sk_quickshift

    images = _check_images(images)
    if images.shape[1] not in (1, 3):
        raise ValueError(f"quickshift needs 1 or 3 channels, got C={images.shape[1]}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)

    def one(image: np.ndarray) -> np.ndarray:
        return sk_quickshift(
            image,
            ratio=ratio,
            kernel_size=kernel_size,
            max_dist=max_dist,
            sigma=sigma,
            convert2lab=convert2lab,
            channel_axis=-1,
        )

    return _map_images(one, images, n_workers)


# --------------------------------------------------------------------------- torch SLIC


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) of sRGB images in [0, 1], as ``skimage.color.rgb2lab``: ``(B, 3, H, W) -> (B, 3, H, W)``."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).pow(2.4), rgb / 12.92)
    matrix = torch.tensor(_XYZ_FROM_RGB, dtype=rgb.dtype, device=rgb.device)
    white = torch.tensor(_WHITE_D65, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear) / white
    f = torch.where(xyz > 0.008856, xyz.clamp_min(0).pow(1 / 3), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(1)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=1)


def _symmetric_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-n axis padded by ``radius`` with scipy's 'reflect' (edge repeated) rule."""
    idx = torch.arange(-radius, n + radius, device=device)
    period = 2 * n
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - 1 - idx, idx)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur as ``scipy.ndimage.gaussian_filter(mode='reflect', truncate=4)``: ``(B, C, H, W)``."""
    if sigma <= 0:
        return images
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    b, c, h, w = images.shape
    flat = images.reshape(b * c, 1, h, w)
    flat = flat.index_select(2, _symmetric_index(h, radius, images.device))
    flat = F.conv2d(flat, kernel.view(1, 1, -1, 1))
    flat = flat.index_select(3, _symmetric_index(w, radius, images.device))
    flat = F.conv2d(flat, kernel.view(1, 1, 1, -1))
    return flat.reshape(b, c, h, w)


def _seed_grid(height: int, width: int, n_segments: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Seed rows, seed columns and the grid step, exactly as scikit-image places them."""
    from skimage.util import regular_grid

    slices = regular_grid((1, height, width), n_segments)
    steps = [float(s.step) if s.step is not None else 1.0 for s in slices]
    rows = np.arange(height)[slices[1]]
    cols = np.arange(width)[slices[2]]
    return rows, cols, max(steps)


def _connected_components(labels: torch.Tensor) -> torch.Tensor:
    """4-connected components of equal labels: ``(B, H, W)`` -> global component ids ``(B, H, W)``.

    Min-label propagation with pointer jumping: every pixel starts as its own root
    (its global flat index), takes the smallest root among equal-labelled neighbours, then
    follows roots of roots. Labels only decrease and stay inside the component, so the
    loop ends with one id per component, in O(log diameter) sweeps in practice.
    """
    b, h, w = labels.shape
    ids = torch.arange(b * h * w, device=labels.device).view(b, h, w)
    big = torch.iinfo(torch.int64).max
    same_down = labels[:, 1:, :] == labels[:, :-1, :]
    same_right = labels[:, :, 1:] == labels[:, :, :-1]
    while True:
        best = ids.clone()
        best[:, :-1, :] = torch.minimum(best[:, :-1, :], torch.where(same_down, ids[:, 1:, :], big))
        best[:, 1:, :] = torch.minimum(best[:, 1:, :], torch.where(same_down, ids[:, :-1, :], big))
        best[:, :, :-1] = torch.minimum(
            best[:, :, :-1], torch.where(same_right, ids[:, :, 1:], big)
        )
        best[:, :, 1:] = torch.minimum(best[:, :, 1:], torch.where(same_right, ids[:, :, :-1], big))
        flat = best.view(-1)
        for _ in range(4):
            flat = flat[flat]
        best = flat.view(b, h, w)
        if torch.equal(best, ids):
            return ids
        ids = best


def _merge_small_components(components: torch.Tensor, min_size: int) -> torch.Tensor:
    """Merge every component smaller than ``min_size`` pixels into a neighbouring one.

    As scikit-image's connectivity step does; the neighbour chosen is the largest
    adjacent component (ties by id). A component only merges into a strictly larger
    (size, id), so the merge graph has no cycles and pointer jumping resolves chains.
    """
    b, h, w = components.shape
    n = b * h * w
    flat = components.reshape(-1)
    for _ in range(h * w):
        sizes = torch.bincount(flat, minlength=n)
        key = sizes * n + torch.arange(n, device=flat.device)  # (size, id) packed into one int64
        comp = flat.view(b, h, w)
        pairs = []
        for a, c in (
            (comp[:, 1:, :], comp[:, :-1, :]),
            (comp[:, :, 1:], comp[:, :, :-1]),
        ):
            pairs.append((a.reshape(-1), c.reshape(-1)))
            pairs.append((c.reshape(-1), a.reshape(-1)))
        src = torch.cat([p[0] for p in pairs])
        dst = torch.cat([p[1] for p in pairs])
        boundary = src != dst
        src, dst = src[boundary], dst[boundary]
        best_key = torch.full((n,), -1, dtype=torch.int64, device=flat.device)
        best_key.scatter_reduce_(0, src, key[dst], reduce="amax")
        parent = torch.arange(n, device=flat.device)
        small = (sizes > 0) & (sizes < min_size) & (best_key > key)
        if not bool(small.any()):
            return flat.view(b, h, w)
        parent[small] = best_key[small] % n
        for _ in range(64):
            jumped = parent[parent]
            if torch.equal(jumped, parent):
                break
            parent = jumped
        flat = parent[flat]
    return flat.view(b, h, w)


def relabel_consecutive(labels: torch.Tensor) -> torch.Tensor:
    """Renumber each image's labels to ``0..K_b-1`` in order of first appearance value: ``(B, H, W)``."""
    b = labels.shape[0]
    flat = labels.reshape(b, -1).to(torch.int64)
    flat = flat - flat.min(dim=1, keepdim=True).values
    span = int(flat.max()) + 1
    shifted = flat + torch.arange(b, device=labels.device).unsqueeze(1) * span
    uniques, inverse = torch.unique(shifted, return_inverse=True)
    first = torch.searchsorted(uniques, torch.arange(b, device=labels.device) * span)
    return (inverse - first.unsqueeze(1)).view(labels.shape)


def _torch_slic(
    images: torch.Tensor,
    n_segments: int,
    compactness: float,
    sigma: float,
    max_num_iter: int,
    enforce_connectivity: bool,
    convert2lab: bool | None,
    min_size_factor: float,
) -> torch.Tensor:
    b, c, h, w = images.shape
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    x = images.to(dtype)
    # scikit-image rescales each image by its own min and max (over all channels).
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    if c == 3 and convert2lab is not False:
        x = rgb_to_lab(x)
    elif convert2lab:
        raise ValueError(f"convert2lab=True needs 3 channels, got C={c}")
    x = gaussian_blur(x, sigma) / compactness

    rows, cols, step = _seed_grid(h, w, n_segments)
    gy, gx = len(rows), len(cols)
    k = gy * gx
    device = x.device
    yy = torch.arange(h, device=device, dtype=dtype).view(h, 1).expand(h, w)
    xx = torch.arange(w, device=device, dtype=dtype).view(1, w).expand(h, w)
    # Per pixel, the 3x3 block of seed-grid cells around its nearest seed.
    rows_t = torch.as_tensor(rows, device=device, dtype=dtype)
    cols_t = torch.as_tensor(cols, device=device, dtype=dtype)
    near_row = (yy[:, :1] - rows_t).abs().argmin(dim=1)  # (h,)
    near_col = (xx[:1, :] - cols_t.view(-1, 1)).abs().argmin(dim=0)  # (w,)
    cand_index, cand_valid = [], []
    for dy, dx in _GRID_OFFSETS:
        r = (near_row + dy).view(h, 1).expand(h, w)
        cc = (near_col + dx).view(1, w).expand(h, w)
        valid = (r >= 0) & (r < gy) & (cc >= 0) & (cc < gx)
        cand_index.append(torch.where(valid, r * gx + cc, 0).reshape(-1))
        cand_valid.append(valid.reshape(-1))
    n_cand = len(_GRID_OFFSETS)
    cand_index = torch.stack(cand_index)  # (9, hw): seed ids each pixel may join
    cand_valid = torch.stack(cand_valid)
    features = torch.cat(
        [yy.expand(b, h, w).unsqueeze(1), xx.expand(b, h, w).unsqueeze(1), x], dim=1
    )
    features = features.reshape(b, 2 + c, h * w).transpose(1, 2).contiguous()  # (b, hw, 2+c)
    seed_y = rows_t.view(gy, 1).expand(gy, gx).reshape(-1)
    seed_x = cols_t.view(1, gx).expand(gy, gx).reshape(-1)
    # Centres start at the seeds with zero colour, as scikit-image initialises them.
    centres = torch.zeros(b, k, 2 + c, device=device, dtype=dtype)
    centres[:, :, 0] = seed_y
    centres[:, :, 1] = seed_x
    weights = torch.ones(2 + c, device=device, dtype=dtype)
    weights[:2] = 1.0 / step**2
    window = 2.0 * step
    inf = torch.tensor(float("inf"), device=device, dtype=dtype)
    labels = torch.full((b, h * w), -1, dtype=torch.int64, device=device)
    ones = torch.ones(b, h * w, 1, device=device, dtype=dtype)
    for _ in range(max_num_iter):
        # All 9 candidates at once: a few large ops instead of many small ones.
        centre = centres[:, cand_index.reshape(-1)].view(b, n_cand, h * w, 2 + c)
        diff = features.unsqueeze(1) - centre
        dist = (diff * diff * weights).sum(-1)  # (b, 9, hw)
        # scikit-image's window: a centre only claims pixels within 2*step on each axis.
        inside = cand_valid & (diff[..., 0].abs() <= window) & (diff[..., 1].abs() <= window)
        dist = torch.where(inside, dist, inf)
        # argmin keeps the first minimum: ties go to the lower grid offset, deterministically.
        choice = dist.argmin(dim=1, keepdim=True)  # (b, 1, hw)
        new_labels = cand_index.expand(b, -1, -1).gather(1, choice).squeeze(1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
        sums = torch.zeros(b, k, 2 + c, device=device, dtype=dtype)
        sums.scatter_add_(1, labels.unsqueeze(-1).expand(-1, -1, 2 + c), features)
        counts = torch.zeros(b, k, 1, device=device, dtype=dtype)
        counts.scatter_add_(1, labels.unsqueeze(-1), ones)
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    labels = labels.view(b, h, w)
    if enforce_connectivity:
        min_size = int(min_size_factor * (h * w) / k)
        components = _connected_components(labels)
        labels = _merge_small_components(components, min_size)
    return relabel_consecutive(labels)


def slic(
    images: torch.Tensor,
    n_segments: int = 100,
    compactness: float = 10.0,
    sigma: float = 0.0,
    max_num_iter: int = 10,
    enforce_connectivity: bool = True,
    start_label: int = 0,
    convert2lab: bool | None = None,
    min_size_factor: float = 0.5,
    backend: str = "auto",
    n_workers: int | None = None,
    max_batch_pixels: int = 1 << 24,
) -> torch.Tensor:
    """SLIC superpixels (Achanta et al., TPAMI 2012) for a batch of images.

    ``backend="auto"`` runs our batched torch SLIC for CUDA tensors and scikit-image's
    ``slic`` (threads over the batch) for CPU tensors; ``"torch"`` or ``"skimage"`` force
    one. Three-channel images are clustered in CIE Lab unless ``convert2lab=False``.

    Args:
        images: ``(B, C, H, W)`` images (any real dtype; each image is rescaled to [0, 1]).
        n_segments: approximate number of superpixels per image.
        compactness: balance of colour against space; higher gives squarer segments.
        sigma: width of the Gaussian smoothing applied first (pixels).
        max_num_iter: k-means iterations.
        enforce_connectivity: make every segment one 4-connected region, merging
            fragments smaller than ``min_size_factor * H * W / n_seeds`` into a neighbour.
        start_label: 0 or 1, the first label.
        convert2lab: Lab conversion for 3-channel images (None: when C == 3).
        min_size_factor: see ``enforce_connectivity``.
        backend: ``"auto"``, ``"torch"`` or ``"skimage"``.
        n_workers: threads for the scikit-image backend.
        max_batch_pixels: the torch backend processes at most this many pixels x seeds
            candidates at once (chunks the batch so it fits in memory).

    Returns:
        ``(B, H, W)`` int64 labels, numbered ``start_label..start_label+K_b-1`` per image,
        on ``images.device``.

    Examples:
        >>> labels = slic(torch.rand(2, 3, 32, 32), n_segments=16, backend="torch")
        >>> labels.shape, int(labels.min())
        (torch.Size([2, 32, 32]), 0)
    """
    images = _check_images(images)
    if not isinstance(n_segments, (int, np.integer)) or n_segments < 1:
        raise ValueError(f"n_segments must be a positive integer, got {n_segments!r}")
    if not compactness > 0:
        raise ValueError(f"compactness must be > 0, got {compactness!r}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    if start_label not in (0, 1):
        raise ValueError(f"start_label must be 0 or 1, got {start_label!r}")
    if backend not in ("auto", "torch", "skimage"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'skimage', got {backend!r}")
    if backend == "auto":
        backend = "torch" if images.is_cuda else "skimage"
    if backend == "skimage":
        labels = _skimage_slic(
            images,
            n_workers,
            n_segments=int(n_segments),
            compactness=compactness,
            sigma=sigma,
            max_num_iter=max_num_iter,
            enforce_connectivity=enforce_connectivity,
            start_label=0,
            convert2lab=convert2lab,
            min_size_factor=min_size_factor,
        )
    else:
        b, _, h, w = images.shape
        per_image = h * w * len(_GRID_OFFSETS) * (2 + images.shape[1])
        chunk = max(1, min(b, max_batch_pixels // per_image))
        labels = torch.cat(
            [
                _torch_slic(
                    images[i : i + chunk],
                    int(n_segments),
                    float(compactness),
                    float(sigma),
                    max_num_iter,
                    enforce_connectivity,
                    convert2lab,
                    min_size_factor,
                )
                for i in range(0, b, chunk)
            ]
        )
    return labels + start_label


def segment(
    images: torch.Tensor,
    method: str | Callable[..., Any] = "slic",
    **kwargs: Any,
) -> torch.Tensor:
    """Segment a batch with a named method or a user function.

    Args:
        images: ``(B, C, H, W)`` images.
        method: ``"slic"``, ``"felzenszwalb"``, ``"quickshift"``, or a callable. A callable
            is first called with the whole ``(B, C, H, W)`` tensor; if that does not return
            a ``(B, H, W)`` tensor it is called per image with an ``(H, W, C)`` numpy array
            (scikit-image / Alibi style) and must return ``(H, W)`` integer labels.
        **kwargs: passed to the method.

    Returns:
        ``(B, H, W)`` int64 labels, ``0..K_b-1`` per image.

    Examples:
        >>> segment(torch.rand(1, 1, 8, 8), lambda im: (np.arange(64).reshape(8, 8) // 16)).unique()
        tensor([0, 1, 2, 3])
    """
    images = _check_images(images)
    if isinstance(method, str):
        functions = {"slic": slic, "felzenszwalb": felzenszwalb, "quickshift": quickshift}
        if method not in functions:
            raise ValueError(
                f"unknown segmentation method {method!r}; expected one of {SEGMENTATION_METHODS} or a callable"
            )
        return functions[method](images, **kwargs)
    if not callable(method):
        raise TypeError(f"method must be a name or a callable, got {type(method).__name__}")
    b, _, h, w = images.shape
    try:
        labels = method(images, **kwargs)
    except Exception:
        labels = None
    if isinstance(labels, torch.Tensor) and tuple(labels.shape) == (b, h, w):
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(
                f"segmentation function must return integer labels, got dtype {labels.dtype}"
            )
        return relabel_consecutive(labels.to(images.device))
    return _map_images(lambda image: np.asarray(method(image, **kwargs)), images, n_workers=1)


def check_segmentation_settings(method: Any, kwargs: Any) -> None:
    """Refuse an explainer's ``segmentation_fn`` / ``segmentation_kwargs`` that :func:`superpixels` cannot use."""
    if isinstance(method, str):
        if method not in SEGMENTATION_METHODS:
            raise ValueError(
                f"unknown segmentation_fn {method!r}; expected one of {SEGMENTATION_METHODS} or a callable"
            )
    elif not callable(method):
        raise TypeError(
            f"segmentation_fn must be a name or a callable, got {type(method).__name__}"
        )
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"segmentation_kwargs must be a dict or None, got {type(kwargs).__name__}")


def superpixels(
    images: torch.Tensor,
    method: str | Callable[..., Any] = "slic",
    kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Superpixels as the explainers cut images: ``(B, H, W)`` int64 labels.

    A built-in method gets :data:`DEFAULT_SEGMENTATION_KWARGS` when ``kwargs`` is None,
    and grey images repeated to RGB, as Alibi does.
    """
    if kwargs is None and isinstance(method, str):
        kwargs = DEFAULT_SEGMENTATION_KWARGS.get(method, {})
    if isinstance(method, str) and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return segment(images, method, **dict(kwargs or {}))


# --------------------------------------------------------------------------- quality measures


def _boundaries(labels: torch.Tensor) -> torch.Tensor:
    """Pixels whose right or lower neighbour has another label: ``(B, H, W)`` bool."""
    edge = torch.zeros_like(labels, dtype=torch.bool)
    down = labels[:, 1:, :] != labels[:, :-1, :]
    right = labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, :-1, :] |= down
    edge[:, 1:, :] |= down
    edge[:, :, :-1] |= right
    edge[:, :, 1:] |= right
    return edge


def boundary_recall(labels: torch.Tensor, truth: torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """Fraction of ground-truth boundary pixels within ``tolerance`` pixels of a segment boundary.

    Args:
        labels: ``(B, H, W)`` superpixel labels.
        truth: ``(B, H, W)`` ground-truth region labels.
        tolerance: Chebyshev distance (pixels) at which a boundary counts as recovered.

    Returns:
        ``(B,)`` float64 recall (1 where the truth has no boundary).
    """
    found = _boundaries(labels).unsqueeze(1).double()
    if tolerance > 0:
        found = F.max_pool2d(found, 2 * tolerance + 1, stride=1, padding=tolerance)
    wanted = _boundaries(truth)
    hit = (found.squeeze(1) > 0) & wanted
    n_wanted = wanted.flatten(1).sum(1)
    return torch.where(n_wanted > 0, hit.flatten(1).sum(1) / n_wanted.clamp_min(1), 1.0).double()


def undersegmentation_error(labels: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Under-segmentation error (Neubert & Protzel 2012): leak of superpixels across true regions.

    ``UE = (1/N) * sum_G sum_{S ∩ G ≠ ∅} min(|S ∩ G|, |S \\ G|)`` over ground-truth regions G
    and superpixels S.

    Args:
        labels: ``(B, H, W)`` superpixel labels.
        truth: ``(B, H, W)`` ground-truth region labels.

    Returns:
        ``(B,)`` float64 errors in [0, 1].
    """
    b = labels.shape[0]
    out = torch.empty(b, dtype=torch.float64)
    for i in range(b):
        s = relabel_consecutive(labels[i : i + 1]).reshape(-1).cpu()
        g = relabel_consecutive(truth[i : i + 1]).reshape(-1).cpu()
        ns, ng = int(s.max()) + 1, int(g.max()) + 1
        overlap = torch.bincount(s * ng + g, minlength=ns * ng).view(ns, ng).double()
        size_s = overlap.sum(1, keepdim=True)
        leak = torch.minimum(overlap, size_s - overlap)
        out[i] = leak[overlap > 0].sum() / s.numel()
    return out
