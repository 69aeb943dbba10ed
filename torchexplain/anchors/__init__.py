"""Anchors (Ribeiro et al., AAAI 2018): the batched KL-LUCB engine and the image, tabular and text explainers."""

from torchexplain.anchors.image import AnchorImage, anchor_image, numpy_predictor
from torchexplain.anchors.tabular import AnchorTabular, anchor_tabular
from torchexplain.anchors.text import AnchorText, anchor_text

__all__ = [
    "AnchorImage",
    "AnchorTabular",
    "AnchorText",
    "anchor_image",
    "anchor_tabular",
    "anchor_text",
    "numpy_predictor",
]
