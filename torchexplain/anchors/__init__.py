"""Anchors (Ribeiro et al., AAAI 2018): the batched KL-LUCB engine and the image and tabular explainers."""

from torchexplain.anchors.image import AnchorImage, anchor_image, numpy_predictor
from torchexplain.anchors.tabular import AnchorTabular, anchor_tabular

__all__ = ["AnchorImage", "AnchorTabular", "anchor_image", "anchor_tabular", "numpy_predictor"]
