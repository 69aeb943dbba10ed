"""Serving explainers beside a model.

- :class:`RemoteModel`: a model behind a v2 / KServe v1 / Seldon v1 endpoint, as a
  black-box explainer's predictor;
- :class:`ExplainerService`: a loaded explainer answering requests, whatever the
  protocol (checks, per-request settings, errors with HTTP statuses);
- :mod:`torchexplain.serving.runtime`: the MLServer runtimes (an explainer, a
  ``torch.export`` model); :mod:`torchexplain.serving.kserve`: the KServe explainer;
  :mod:`torchexplain.serving.deploy`: what ``torchexplain serve`` writes and starts.

Needs the ``serve`` extra (``pip install "torchexplain[serve]"``): urllib3 for the
HTTP client, MLServer for the servers. Importing this package needs neither.
"""

from torchexplain.models.remote import PROTOCOLS, RemoteModel, RemoteModelError
from torchexplain.serving.service import ExplainerService, ServiceError

__all__ = ["PROTOCOLS", "ExplainerService", "RemoteModel", "RemoteModelError", "ServiceError"]
