"""How torchexplain calls models: the one layer between the explainers and a model.

- :class:`Rows`: a batch of inputs converted and checked once;
- :class:`Predictor`: a model (module, function, exported program, endpoint) called on
  rows in device-sized chunks, padded for batch invariance, counted;
- :class:`RemoteModel`: a model behind a v2 / KServe v1 / Seldon v1 endpoint, itself a
  Predictor;
- :func:`load_exported_model`: the one loader of ``torch.export`` archives, checked
  before anything in them is read.

Nothing above this layer calls a model directly; the white-box searches share its
chunk-and-halve loop and its padding (:mod:`torchexplain.models.calls`).
"""

from torchexplain.models.calls import DEFAULT_PAD_TO_MULTIPLE, call_padded, in_chunks
from torchexplain.models.exported import ExportedModel, load_exported_model
from torchexplain.models.predictor import Predictor, as_labels, as_probabilities, as_scores
from torchexplain.models.remote import RemoteModel, RemoteModelError
from torchexplain.models.rows import Rows

__all__ = [
    "DEFAULT_PAD_TO_MULTIPLE",
    "ExportedModel",
    "Predictor",
    "RemoteModel",
    "RemoteModelError",
    "Rows",
    "as_labels",
    "as_probabilities",
    "as_scores",
    "call_padded",
    "in_chunks",
    "load_exported_model",
]
