"""Heatmaps, overlays and captioned PNG grids for explanations.

Everything returns or accepts ``uint8`` RGB arrays ``(H, W, 3)`` so pictures can be
composed freely; tensors are accepted wherever an image or a map is expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ImageLike = np.ndarray | torch.Tensor

_NEGATIVE = np.array([33, 102, 172], dtype=np.float64)  # blue
_ZERO = np.array([255, 255, 255], dtype=np.float64)  # white
_POSITIVE = np.array([178, 24, 43], dtype=np.float64)  # red


def _to_numpy(x: ImageLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def attribution_map(attributions: ImageLike) -> np.ndarray:
    """Collapse ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)`` attributions to one ``(H, W)`` map (sum over channels)."""
    a = _to_numpy(attributions).astype(np.float64)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        a = a.sum(axis=0)
    if a.ndim != 2:
        raise ValueError(
            f"expected attributions shaped (H, W), (C, H, W) or (1, C, H, W), got {a.shape}"
        )
    return a


def heatmap(attributions: ImageLike, percentile: float = 99.0) -> np.ndarray:
    """Diverging colour map: negative blue, zero white, positive red.

    The colour scale is symmetric, saturating at the ``percentile`` of ``|a|`` so a
    few extreme pixels do not wash the rest out.

    Args:
        attributions: ``(H, W)`` or ``(C, H, W)`` (channels are summed).
        percentile: in (0, 100].

    Returns:
        ``(H, W, 3)`` uint8.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    a = attribution_map(attributions)
    scale = np.percentile(np.abs(a), percentile)
    t = np.clip(a / scale, -1.0, 1.0) if scale > 0 else np.zeros_like(a)
    t = t[..., None]
    rgb = np.where(t >= 0, _ZERO + t * (_POSITIVE - _ZERO), _ZERO - t * (_NEGATIVE - _ZERO))
    return np.round(rgb).astype(np.uint8)


def to_rgb(image: ImageLike) -> np.ndarray:
    """An image ``(H, W)``, ``(1|3, H, W)`` or ``(H, W, 1|3)`` with values in [0, 1] (float) or [0, 255] (uint8) as ``(H, W, 3)`` uint8."""
    img = _to_numpy(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"expected a grey or RGB image, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.round(np.clip(img.astype(np.float64), 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def overlay(image: ImageLike, attributions: ImageLike, alpha: float = 0.6) -> np.ndarray:
    """The heatmap of ``attributions`` blended over a greyed ``image``; ``(H, W, 3)`` uint8."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base = to_rgb(image).astype(np.float64).mean(axis=-1, keepdims=True)
    heat = heatmap(attributions).astype(np.float64)
    if heat.shape[:2] != base.shape[:2]:
        raise ValueError(f"image is {base.shape[:2]} but attributions are {heat.shape[:2]}")
    return np.round((1 - alpha) * base + alpha * heat).astype(np.uint8)


#: the colour the demo and the CLI outline anchors with
ANCHOR_OUTLINE = (255, 190, 0)


def mask_overlay(
    image: ImageLike,
    mask: ImageLike,
    dim: float = 0.25,
    outline: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """The pixels inside ``mask`` as they are, the rest dimmed to ``dim``; ``(H, W, 3)`` uint8.

    Used to draw an anchor: what the anchor keeps, against what it lets change.
    ``outline`` (an RGB colour) paints the mask's edge, its pixels with a 4-neighbour
    outside it, so a mask over a dark region (an MNIST background) still shows.
    """
    if not 0.0 <= dim <= 1.0:
        raise ValueError(f"dim must be in [0, 1], got {dim}")
    rgb = to_rgb(image)
    keep = _to_numpy(mask).astype(bool)
    if keep.shape != rgb.shape[:2]:
        raise ValueError(f"image is {rgb.shape[:2]} but mask is {keep.shape}")
    out = np.where(keep[..., None], rgb, np.round(rgb * dim)).astype(np.uint8)
    if outline is not None:
        inside = np.pad(keep, 1, mode="edge")
        interior = inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
        out[keep & ~interior] = np.asarray(outline, dtype=np.uint8)
    return out


def save_grid(
    rows: Sequence[Sequence[ImageLike]],
    captions: Sequence[str],
    path: str | Path,
    scale: int = 4,
    titles: Sequence[str] | None = None,
) -> Path:
    """Write a PNG grid: one row per example, its images side by side, a caption under each row.

    Args:
        rows: each row a list of images (anything :func:`to_rgb` accepts); all images
            in the grid share one size.
        captions: one line of text per row.
        path: the PNG to write (parent folders are created).
        scale: nearest-neighbour upscaling, so 28×28 digits are readable.
        titles: optional column headings.
    """
    if len(rows) != len(captions):
        raise ValueError(f"got {len(rows)} rows but {len(captions)} captions")
    if not rows:
        raise ValueError("save_grid needs at least one row")
    tiles = [[to_rgb(img) for img in row] for row in rows]
    h, w = tiles[0][0].shape[:2]
    if any(t.shape[:2] != (h, w) for row in tiles for t in row):
        raise ValueError("every image in the grid must have the same height and width")
    n_cols = max(len(row) for row in tiles)
    font = ImageFont.load_default()
    pad, text_h = 4, 14
    tile_w, tile_h = w * scale, h * scale
    header = text_h + pad if titles else 0
    char_w = 6  # the default bitmap font is about 6 px per character
    width = max(n_cols * (tile_w + pad) + pad, char_w * max(len(c) for c in captions) + 2 * pad)
    height = header + len(tiles) * (tile_h + text_h + 2 * pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if titles:
        for col, title in enumerate(titles):
            draw.text((pad + col * (tile_w + pad), pad // 2), title, fill="black", font=font)
    for r, (row, caption) in enumerate(zip(tiles, captions)):
        top = header + pad + r * (tile_h + text_h + 2 * pad)
        for col, tile in enumerate(row):
            picture = Image.fromarray(tile).resize((tile_w, tile_h), Image.NEAREST)
            canvas.paste(picture, (pad + col * (tile_w + pad), top))
        draw.text((pad, top + tile_h + 2), caption, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def save_bar_chart(
    sections: Sequence[tuple[str, Sequence[tuple[str, Sequence[float]]]]],
    path: str | Path,
    bar_labels: Sequence[str] = ("",),
    bar_width: int = 220,
) -> Path:
    """Write a PNG of labelled horizontal bars in [0, 1], in titled sections.

    For results a person reads faster as lengths than as numbers: anchors with their
    precision and coverage, how often each predicate appears across many anchors.

    Args:
        sections: ``(title, rows)``; each row is ``(label, values)`` with one value in
            [0, 1] per bar (several bars of one row are drawn side by side).
        path: the PNG to write (parent folders are created).
        bar_labels: a heading per bar column (e.g. ``("precision", "coverage")``).
        bar_width: pixels of a bar at value 1.
    """
    if not sections or not any(rows for _, rows in sections):
        raise ValueError("save_bar_chart needs at least one row")
    n_bars = len(bar_labels)
    for title, rows in sections:
        for label, values in rows:
            if len(values) != n_bars:
                raise ValueError(
                    f"row {label!r} in {title!r} has {len(values)} values, expected {n_bars}"
                )
            if any(not 0.0 <= float(v) <= 1.0 for v in values):
                raise ValueError(
                    f"row {label!r} in {title!r}: values must be in [0, 1], got {list(values)}"
                )
    font = ImageFont.load_default()
    char_w, line_h, pad = 6, 16, 6
    label_w = char_w * max(len(label) for _, rows in sections for label, _ in rows) + 2 * pad
    column_w = bar_width + 7 * char_w + pad
    width = max(
        label_w + n_bars * column_w + pad, char_w * max(len(t) for t, _ in sections) + 2 * pad
    )
    height = pad + sum(2 * line_h + len(rows) * line_h for _, rows in sections) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    colours = [(52, 101, 164), (115, 210, 22), (245, 121, 0), (117, 80, 123)]
    top = pad
    for title, rows in sections:
        draw.text((pad, top), title, fill="black", font=font)
        top += line_h
        for b, heading in enumerate(bar_labels):
            draw.text((label_w + b * column_w, top), heading, fill=(90, 90, 90), font=font)
        top += line_h
        for label, values in rows:
            draw.text((pad, top + 2), label, fill="black", font=font)
            for b, value in enumerate(values):
                left = label_w + b * column_w
                draw.rectangle(
                    [left, top + 3, left + bar_width, top + line_h - 3], outline=(200, 200, 200)
                )
                draw.rectangle(
                    [left, top + 3, left + round(float(value) * bar_width), top + line_h - 3],
                    fill=colours[b % len(colours)],
                )
                draw.text(
                    (left + bar_width + pad, top + 2),
                    f"{float(value):.2f}",
                    fill="black",
                    font=font,
                )
            top += line_h
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def save_signed_bars(
    sections: Sequence[tuple[str, Sequence[tuple[str, float]]]],
    path: str | Path,
    bar_width: int = 160,
    unit: str = "",
) -> Path:
    """Write a PNG of signed horizontal bars around a zero line, in titled sections.

    For contributions that push a prediction up or down (SHAP values per feature):
    positive values are drawn to the right in red, negative to the left in blue, all
    sections on one scale (the largest magnitude fills ``bar_width``), each bar
    labelled with its value.

    Args:
        sections: ``(title, rows)``; each row is ``(label, value)``.
        path: the PNG to write (parent folders are created).
        bar_width: pixels from the zero line to the end of the longest bar.
        unit: appended to each printed value (e.g. ``" log-odds"``).
    """
    if not sections or not any(rows for _, rows in sections):
        raise ValueError("save_signed_bars needs at least one row")
    values = [float(v) for _, rows in sections for _, v in rows]
    if not all(np.isfinite(values)):
        raise ValueError(f"save_signed_bars: values must be finite, got {values}")
    scale = max(max(abs(v) for v in values), 1e-12)
    font = ImageFont.load_default()
    char_w, line_h, pad = 6, 16, 6
    label_w = char_w * max(len(label) for _, rows in sections for label, _ in rows) + 2 * pad
    text_w = char_w * (10 + len(unit))
    zero = label_w + text_w + bar_width
    width = max(
        zero + bar_width + text_w + pad, char_w * max(len(t) for t, _ in sections) + 2 * pad
    )
    height = pad + sum(line_h + len(rows) * line_h + pad for _, rows in sections) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    top = pad
    for title, rows in sections:
        draw.text((pad, top), title, fill="black", font=font)
        top += line_h
        first = top
        for label, value in rows:
            value = float(value)
            draw.text((pad, top + 2), label, fill="black", font=font)
            length = round(abs(value) / scale * bar_width)
            text = f"{value:+.3f}{unit}"
            if value >= 0:
                draw.rectangle([zero, top + 3, zero + length, top + line_h - 3], fill=(204, 51, 51))
                draw.text((zero + length + pad, top + 2), text, fill="black", font=font)
            else:
                draw.rectangle(
                    [zero - length, top + 3, zero, top + line_h - 3], fill=(51, 102, 204)
                )
                draw.text(
                    (zero - length - pad - char_w * len(text), top + 2),
                    text,
                    fill="black",
                    font=font,
                )
            top += line_h
        draw.line([zero, first, zero, top], fill=(120, 120, 120))
        top += pad
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


#: the background of an anchor's words in :func:`save_text_anchors`
ANCHOR_HIGHLIGHT = (255, 214, 102)


def save_text_anchors(explanation: Any, path: str | Path, width: int = 720) -> Path:
    """Write a PNG of text anchors: per text, its words wrapped to ``width`` pixels with the
    anchor's words on a highlight, under a line giving the predicted class, precision and coverage.

    Args:
        explanation: an :class:`~torchexplain.AnchorText` explanation (``words``, ``feature``,
            ``target``, ``precision``, ``coverage``, ``success``).
        path: the PNG to write (parent folders are created).
        width: the picture's width in pixels.
    """
    data = explanation.data
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    space = max(measure.textlength(" ", font=font), 5.0)  # the bitmap font's space is narrow
    line_h, pad = 15, 8
    layout: list[tuple[int, list[list[tuple[str, bool, float]]]]] = []
    height = pad
    for i, words in enumerate(data["words"]):
        anchor = set(data["feature"][i])
        lines: list[list[tuple[str, bool, float]]] = [[]]
        left = 0.0
        for j, word in enumerate(words):
            # no space before punctuation that closes a phrase
            gap = 0.0 if not lines[-1] or word in ",.;:!?)'" else space
            size = measure.textlength(word, font=font)
            if left + gap + size > width - 2 * pad and lines[-1]:
                lines.append([])
                left, gap = 0.0, 0.0
            lines[-1].append((word, j in anchor, left + gap))
            left += gap + size
        layout.append((i, lines))
        height += line_h * (len(lines) + 1) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    top = pad
    for i, lines in layout:
        status = "" if bool(data["success"][i]) else " (no valid anchor)"
        caption = (
            f"#{i} pred {int(data['target'][i])}: precision {float(data['precision'][i]):.2f}, "
            f"coverage {float(data['coverage'][i]):.2f}{status}"
        )
        draw.text((pad, top), caption, fill=(90, 90, 90), font=font)
        top += line_h
        for line in lines:
            for word, highlighted, x in line:
                left = pad + x
                if highlighted:
                    right = left + measure.textlength(word, font=font)
                    draw.rectangle(
                        [left - 2, top - 1, right + 1, top + line_h - 3], fill=ANCHOR_HIGHLIGHT
                    )
                draw.text((left, top), word, fill="black", font=font)
            top += line_h
        top += pad
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
