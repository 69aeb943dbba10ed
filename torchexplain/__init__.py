"""torchexplain: fast, batched explanations for PyTorch models."""

from torchexplain._version import __version__
from torchexplain.base import Explainer
from torchexplain.counterfactual import Counterfactual, counterfactual
from torchexplain.explanation import Explanation

__all__ = ["Counterfactual", "Explainer", "Explanation", "__version__", "counterfactual"]
