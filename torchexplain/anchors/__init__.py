"""Anchors (Ribeiro et al., AAAI 2018): the shared KL-LUCB beam search and the image explainer."""

from torchexplain.anchors.image import AnchorImage, anchor_image, numpy_predictor

__all__ = ["AnchorImage", "anchor_image", "numpy_predictor"]
