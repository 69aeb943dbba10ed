"""Serving explainers beside a model: remote models (more to come: the MLServer runtime, the KServe explainer).

Needs the ``serve`` extra (``pip install "torchexplain[serve]"``) for its HTTP client.
"""

from torchexplain.serving.remote import PROTOCOLS, RemoteModel, RemoteModelError

__all__ = ["PROTOCOLS", "RemoteModel", "RemoteModelError"]
