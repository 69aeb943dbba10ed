"""torchexplain: fast, batched explanations for PyTorch models."""

from torchexplain._version import __version__
from torchexplain.base import Explainer
from torchexplain.explanation import Explanation

__all__ = ["Explainer", "Explanation", "__version__"]
