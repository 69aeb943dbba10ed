"""torchexplain: fast, batched explanations for PyTorch models."""

from torchexplain._version import __version__
from torchexplain.anchors import (
    AnchorImage,
    AnchorTabular,
    AnchorText,
    anchor_image,
    anchor_tabular,
    anchor_text,
)
from torchexplain.base import Explainer
from torchexplain.counterfactual import Counterfactual, counterfactual
from torchexplain.counterfactual_proto import CounterfactualProto, counterfactual_proto
from torchexplain.explanation import Explanation
from torchexplain.integrated_gradients import IntegratedGradients, integrated_gradients
from torchexplain.kernel_shap import KernelShap, kernel_shap
from torchexplain.monitor import ExplanationMonitor
from torchexplain.saving import load_explainer
from torchexplain.tree_shap import TreeShap, tree_shap
from torchexplain.trust import TrustScore

__all__ = [
    "AnchorImage",
    "AnchorTabular",
    "AnchorText",
    "Counterfactual",
    "CounterfactualProto",
    "Explainer",
    "Explanation",
    "ExplanationMonitor",
    "IntegratedGradients",
    "KernelShap",
    "TreeShap",
    "TrustScore",
    "__version__",
    "anchor_image",
    "anchor_tabular",
    "anchor_text",
    "counterfactual",
    "counterfactual_proto",
    "integrated_gradients",
    "kernel_shap",
    "load_explainer",
    "tree_shap",
]
