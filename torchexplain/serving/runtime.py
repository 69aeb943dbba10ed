"""MLServer runtimes (MLServer 1.7): serve a saved explainer, and serve a ``torch.export`` model.

:class:`ExplainerRuntime` is the runtime Seldon Core v2 and plain MLServer run for a
torchexplain explainer. Its ``model-settings.json``::

    {
      "name": "income-explainer",
      "implementation": "torchexplain.serving.runtime.ExplainerRuntime",
      "parameters": {
        "uri": "./income-explainer",
        "extra": {
          "explainer_type": "anchor_tabular",
          "infer_uri": "http://127.0.0.1:8080/v2/models/income/infer",
          "rows": "all"
        }
      }
    }

``parameters.uri`` is the folder ``explainer.save(...)`` wrote (relative to the
settings file, as MLServer resolves it). ``parameters.extra`` holds Seldon Core v2's
keys and ours (:func:`torchexplain.serving.service.service_options` lists them all).

A request is an Open Inference Protocol (v2) request with one input, the rows to
explain; per-request settings go in the request's ``parameters.explain_parameters``,
as an object or a JSON string of one::

    {"inputs": [{"name": "rows", "shape": [1, 12], "datatype": "FP32", "data": [...]}],
     "parameters": {"explain_parameters": {"threshold": 0.9}}}

The answer has one BYTES output, ``explanation``, holding ``Explanation.to_json()``
(what Seldon's clients parse). A bad request is answered with a 4xx and
``{"error": "..."}``; the model endpoint failing with 502, or 504 when it did not
answer in time. Explanations run off MLServer's event loop: white-box ones and the
served model on one shared torch thread
(:func:`~torchexplain.serving.service.torch_thread` says why), black-box ones in a
pool of their own.

:class:`TorchModelRuntime` serves a ``torch.export`` archive (``.pt2``) as an MLServer
model: the model a black-box explainer queries, without pickled code (the archive is
checked as ``load_explainer`` checks a saved model).

Two pitfalls of MLServer 1.7.1, measured here, that ``torchexplain serve`` avoids:
with uvloop >= 0.22 MLServer's parallel inference workers crash at start ("There is
no current event loop"), so the settings it writes use ``"parallel_workers": 0``
(inference in the server process; our runtimes run their work in threads anyway);
and MLServer's pandas codec breaks on pandas 3 string columns, so these runtimes
decode requests with the numpy codec only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor, RequestInput
from mlserver.utils import get_model_uri

from torchexplain.models.remote import V2_DATATYPES, V2_NUMERIC_DATATYPES
from torchexplain.serving.service import (
    OUTPUT_NAME,
    ExplainerService,
    ServiceError,
    explanation_metadata,
    model_input_metadata,
    model_output_metadata,
    torch_thread,
)

__all__ = ["ExplainerRuntime", "TorchModelRuntime"]

_NUMPY_OF = {name: dtype for dtype, name in V2_DATATYPES.items()}


def _extend_grpc_status_codes() -> None:
    """Give MLServer's gRPC server a code for the HTTP statuses these runtimes answer with.

    MLServer 1.7 turns a runtime's ``MLServerError`` into a gRPC status through one table
    (``mlserver.grpc.utils.STATUS_CODE_MAPPING``: 400, 404, 422, 500) and sends
    ``UNKNOWN`` for any other status. The table is read at each error, so adding to it
    is how a runtime chooses: 413 (too many rows) and 507 (out of device memory) become
    ``RESOURCE_EXHAUSTED``, 502 (the model endpoint failed) ``UNAVAILABLE``, 504 (it did
    not answer in time) ``DEADLINE_EXCEEDED``. Existing entries are left as they are.
    """
    try:
        import grpc
        from mlserver.grpc import utils as grpc_utils
    except ImportError:  # pragma: no cover - MLServer without its gRPC server
        return
    table = getattr(grpc_utils, "STATUS_CODE_MAPPING", None)
    if not isinstance(table, dict):  # pragma: no cover - a later MLServer changed it
        return
    for status, code in (
        (413, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (502, grpc.StatusCode.UNAVAILABLE),
        (504, grpc.StatusCode.DEADLINE_EXCEEDED),
        (507, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ):
        table.setdefault(status, code)


_extend_grpc_status_codes()


class ExplainerRuntime(MLModel):
    """A saved torchexplain explainer as an MLServer model (see the module docs)."""

    async def load(self) -> bool:
        folder = await get_model_uri(self.settings)
        extra = dict(self.settings.parameters.extra or {}) if self.settings.parameters else {}
        try:
            # this thread only waits: the load runs where the explanations will (see ExplainerService.load)
            self.service = await asyncio.to_thread(ExplainerService.load, folder, **extra)
        except (TypeError, ValueError) as err:
            raise MLServerError(f"{self.name}: cannot load the explainer: {err}", 422) from None
        _declare(self, [self.service.input_metadata()], [explanation_metadata()])
        return True

    async def unload(self) -> bool:
        service = getattr(self, "service", None)
        if service is not None:
            service.close()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if self.service.explainer.takes_texts:
            rows: Any = _decode_texts(payload)
        else:
            rows = _decode_one_input(payload)
        # MLServer's Parameters keep unknown keys as attributes: explain_parameters is one.
        parameters = getattr(payload.parameters, "explain_parameters", None)
        try:
            texts = await asyncio.get_running_loop().run_in_executor(
                self.service.executor(), self.service.explain_texts, rows, parameters
            )
        except ServiceError as err:
            raise MLServerError(str(err), err.status) from None
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[StringCodec.encode_output(OUTPUT_NAME, texts)],
        )


class TorchModelRuntime(MLModel):
    """A ``torch.export`` archive as an MLServer model: one input ``(N, ...)``, one output ``output``.

    ``parameters.uri`` is the ``.pt2`` file (or a folder holding ``model.pt2``);
    ``parameters.extra`` may set ``"output": "probabilities"`` (softmax over the last
    dimension; default ``"raw"``: what the program returns) and ``"dtype"`` (what the
    rows are cast to before the call; default ``"float32"``).
    """

    async def load(self) -> bool:
        from torchexplain.models.exported import load_exported_model

        uri = await get_model_uri(self.settings, wellknown_filenames=["model.pt2"])
        extra = dict(self.settings.parameters.extra or {}) if self.settings.parameters else {}
        unknown = sorted(set(extra) - {"output", "dtype"})
        if unknown:
            raise MLServerError(
                f"{self.name}: unknown setting(s) {unknown}; the settings are ['dtype', 'output']",
                422,
            )
        self.output = extra.get("output", "raw")
        if self.output not in ("raw", "probabilities"):
            raise MLServerError(
                f"{self.name}: output must be 'raw' or 'probabilities', got {self.output!r}", 422
            )
        dtype = getattr(torch, str(extra.get("dtype", "float32")), None)
        if not isinstance(dtype, torch.dtype):
            raise MLServerError(
                f"{self.name}: dtype {extra.get('dtype')!r} is not a torch dtype", 422
            )
        self.dtype = dtype
        try:
            self.model = await asyncio.get_running_loop().run_in_executor(
                torch_thread(), load_exported_model, Path(uri)
            )
        except ValueError as err:
            raise MLServerError(f"{self.name}: {err}", 422) from None
        _declare(
            self,
            [model_input_metadata(self.model, self.dtype)],
            [model_output_metadata(self.model)],
        )
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = _decode_one_input(payload)
        if rows.dtype.kind == "f" and not np.isfinite(rows).all():
            raise MLServerError("the inputs hold NaN or infinite values", 400)
        try:
            # before the program runs: its own shape guards raise AssertionError, which would be a 500
            self.model.check_input(rows.shape, what=f"input {payload.inputs[0].name!r}")
        except ValueError as err:
            raise MLServerError(str(err), 400) from None
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(
                torch_thread(), self._run, rows
            )
        except (RuntimeError, ValueError, TypeError) as err:
            raise MLServerError(
                f"{self.name} could not run on inputs of shape {list(rows.shape)}: {_first_line(err)}",
                400,
            ) from None
        except (
            Exception
        ) as err:  # the model's fault, not the request's: a 500 that keeps the connection
            raise MLServerError(
                f"{self.name} failed on inputs of shape {list(rows.shape)}: "
                f"{type(err).__name__}: {_first_line(err)}",
                500,
            ) from None
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[NumpyCodec.encode_output("output", outputs)],
        )

    def _run(self, rows: np.ndarray) -> np.ndarray:
        # inference_mode, not no_grad: nothing here is ever differentiated, and it saves about a
        # fifth of the exported program's per-call cost (400 census rows: 0.68 -> 0.54 ms)
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(rows)).to(self.dtype))
            if self.output == "probabilities":
                out = out.softmax(-1)
        return out.numpy()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _declare(runtime: MLModel, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
    """Fill the model's metadata (``GET /v2/models/{name}``) where its settings declare none."""
    settings = runtime.settings
    if not settings.inputs:
        settings.inputs = [MetadataTensor(**spec) for spec in inputs]
    if not settings.outputs:
        settings.outputs = [MetadataTensor(**spec) for spec in outputs]


def _one_input(payload: InferenceRequest, what: str) -> RequestInput:
    """The request's only input; an MLServerError (HTTP 400) when it holds another number of them."""
    if len(payload.inputs) != 1:
        names = [i.name for i in payload.inputs]
        raise MLServerError(
            f"the request must hold exactly one input ({what}), got {len(names)}: {names}", 400
        )
    return payload.inputs[0]


def _decode_texts(payload: InferenceRequest) -> list[str]:
    """The request's one input as texts: a v2 ``BYTES`` tensor of strings (JSON strings, or binary
    data MLServer's codec reads); an MLServerError (HTTP 400) naming what is wrong otherwise."""
    request_input = _one_input(payload, "the texts")
    if request_input.datatype != "BYTES":
        raise MLServerError(
            f"input {request_input.name!r} has datatype {request_input.datatype}; this explainer "
            "explains texts: send them as BYTES",
            400,
        )
    try:
        texts = StringCodec.decode_input(request_input)
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise MLServerError(
            f"input {request_input.name!r} could not be decoded as texts: {err}", 400
        ) from None
    return list(texts)


def _decode_one_input(payload: InferenceRequest) -> np.ndarray:
    """The request's one input as a numpy array; an MLServerError (HTTP 400) naming what is wrong when it is not."""
    request_input = _one_input(payload, "the rows")
    if request_input.datatype not in V2_NUMERIC_DATATYPES:
        raise MLServerError(
            f"input {request_input.name!r} has datatype {request_input.datatype}; "
            f"expected numbers ({', '.join(sorted(V2_NUMERIC_DATATYPES))})",
            400,
        )
    shape = list(request_input.shape)
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise MLServerError(
            f"input {request_input.name!r} has shape {shape}; dimensions must be >= 0", 400
        )
    values = getattr(request_input.data, "root", request_input.data)
    if not isinstance(values, list):  # binary data: MLServer's codec reads it
        try:
            return np.asarray(NumpyCodec.decode_input(request_input))
        except (ValueError, TypeError) as err:
            raise MLServerError(
                f"input {request_input.name!r} (shape {shape}, {request_input.datatype}) could not "
                f"be decoded: {err}",
                400,
            ) from None
    # One conversion of the JSON list, which also shows what it holds: MLServer's codec would
    # read quoted numbers ("1.5") as numbers, and its list walk cost more than the model.
    try:
        array = np.asarray(values)
    except ValueError as err:  # ragged
        raise MLServerError(
            f"input {request_input.name!r}: its data is not a rectangular array ({err})", 400
        ) from None
    if array.dtype.kind in "USO":
        raise MLServerError(
            f"input {request_input.name!r} is declared {request_input.datatype} but its data holds "
            "strings; send numbers (JSON numbers, not quoted)",
            400,
        )
    try:
        with np.errstate(
            over="ignore", invalid="ignore"
        ):  # out-of-range values: inf, refused later
            rows = array.astype(_NUMPY_OF[request_input.datatype], copy=False).reshape(shape)
    except (ValueError, TypeError, OverflowError) as err:
        raise MLServerError(
            f"input {request_input.name!r} (shape {shape}, {request_input.datatype}) could not "
            f"be decoded: {err}",
            400,
        ) from None
    return np.asarray(rows)
