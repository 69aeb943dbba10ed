"""matplotlib, where pictures need it (``pip install "torchexplain[plots]"``): imported on first
use, drawn off-screen, returned as PNG bytes."""

from __future__ import annotations

import io
from typing import Any

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


class _Figures:
    """The two pyplot calls the pictures use, on ``matplotlib.figure.Figure`` objects: no pyplot
    state, no backend switched in the user's process (a notebook keeps its own)."""

    def __init__(self) -> None:
        from matplotlib.figure import Figure

        self._figure = Figure

    def figure(self, figsize: tuple[float, float]) -> Any:
        return self._figure(figsize=figsize)

    def subplots(
        self, nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], squeeze: bool = True
    ):
        fig = self._figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def pyplot() -> _Figures:
    """What draws the figures (named after pyplot, whose calls it takes)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError(
            'the pictures are drawn with matplotlib: pip install "torchexplain[plots]"'
        ) from err
    return _Figures()


def png(fig: Any) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()
