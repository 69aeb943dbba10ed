"""torchexplain: fast, batched explanations for PyTorch models."""

from torchexplain._version import __version__
from torchexplain.base import Explainer
from torchexplain.explanation import Explanation
from torchexplain.integrated_gradients import IntegratedGradients, integrated_gradients
from torchexplain.monitor import ExplanationMonitor

__all__ = [
    "Explainer",
    "Explanation",
    "ExplanationMonitor",
    "IntegratedGradients",
    "__version__",
    "integrated_gradients",
]
