"""torchexplain: fast, batched explanations for PyTorch models."""

from torchexplain._version import __version__
from torchexplain.anchors import AnchorImage, AnchorTabular, anchor_image, anchor_tabular
from torchexplain.base import Explainer
from torchexplain.counterfactual import Counterfactual, counterfactual
from torchexplain.explanation import Explanation
from torchexplain.integrated_gradients import IntegratedGradients, integrated_gradients
from torchexplain.monitor import ExplanationMonitor
from torchexplain.saving import load_explainer

__all__ = [
    "AnchorImage",
    "AnchorTabular",
    "Counterfactual",
    "Explainer",
    "Explanation",
    "ExplanationMonitor",
    "IntegratedGradients",
    "__version__",
    "anchor_image",
    "anchor_tabular",
    "counterfactual",
    "integrated_gradients",
    "load_explainer",
]
