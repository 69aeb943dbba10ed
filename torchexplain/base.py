"""The small base every explainer shares: configuration in, Explanation out."""

from __future__ import annotations

import abc
from typing import Any

from torchexplain._version import __version__
from torchexplain.explanation import Explanation


class Explainer(abc.ABC):
    """Base class of every torchexplain method.

    ``__init__`` holds the configuration (the model and the method's settings);
    ``explain(...)`` does the work and returns an :class:`Explanation`. Subclasses
    keep their settings in ``self.config`` so ``meta`` records them.

    Args:
        model: the model (or black-box predictor) to explain.
        **config: the method's settings, stored in ``self.config``.
    """

    #: the method's name as written to ``Explanation.meta["name"]``
    name: str = "Explainer"

    def __init__(self, model: Any, **config: Any) -> None:
        self.model = model
        self.config: dict[str, Any] = dict(config)

    @abc.abstractmethod
    def explain(self, *args: Any, **kwargs: Any) -> Explanation:
        """Explain the model's output on the given inputs."""

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({settings})"


def make_meta(name: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The ``meta`` of an Explanation: method name, its parameters, library version."""
    return {"name": name, "params": dict(params), "version": __version__, **extra}
