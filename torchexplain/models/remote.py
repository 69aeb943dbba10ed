"""A model behind an HTTP prediction endpoint, a :class:`~torchexplain.models.Predictor` like any other.

A black-box explainer (anchors, KernelShap) only needs a function from a batch to
the model's outputs. :class:`RemoteModel` is that function for a model served
elsewhere, and it is a Predictor itself: an explainer given one calls it through the
same layer as a local model (chunks, padding, counts). It encodes each batch for the
server's protocol, sends it in requests of ``batch_size`` rows over one pooled HTTP
connection per host, and decodes the outputs back into an array (or a tensor, when it
was given one).

Protocols:

- ``"v2"``: the Open Inference Protocol (KServe v2, MLServer, Triton, Seldon Core
  v2): ``POST {url}/v2/models/{name}/infer``; the input's name and datatype are read
  once from the model's metadata, ``GET {url}/v2/models/{name}``.
- ``"kserve_v1"``: KServe's and TF Serving's v1: ``POST {url}/v1/models/{name}:predict``
  with ``{"instances": [...]}``, answered by ``{"predictions": [...]}``.
- ``"seldon_v1"``: Seldon Core v1: ``POST {url}/api/v1.0/predictions`` with
  ``{"data": {"ndarray": [...]}}``, answered by ``{"data": {"ndarray": ...}}`` (or
  ``{"data": {"tensor": {"shape", "values"}}}``).

``url`` is the server's base address (``http://host:port``); a full endpoint
(``.../infer``, ``...:predict``, ``.../predictions``) is taken as it is.

A ``grpc://host:port`` address (MLServer's and Triton's gRPC port) speaks the v2
protocol over gRPC (:mod:`torchexplain.models.grpc_v2`): batches travel as raw
tensor bytes instead of JSON text, which is what most of a remote call's time went
to over HTTP.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from torchexplain import _checks
from torchexplain.models.predictor import Predictor

__all__ = ["PROTOCOLS", "V2_DATATYPES", "RemoteModel", "RemoteModelError"]

PROTOCOLS = ("v2", "kserve_v1", "seldon_v1")
#: the Open Inference Protocol datatype of each numpy dtype
V2_DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int8): "INT8",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.bool_): "BOOL",
}
_V2_NUMPY = {name: dtype for dtype, name in V2_DATATYPES.items()}
#: the Open Inference Protocol's datatypes of numbers (not BYTES, and not BOOL: a yes/no is no
#: quantity to explain, and taking it as 0/1 would answer a question nobody asked)
V2_NUMERIC_DATATYPES = frozenset(_V2_NUMPY) - {"BOOL"}
#: numbers per request with ``batch_size="auto"``: a few MB of JSON
_AUTO_VALUES = 2**18
#: texts per request with ``batch_size="auto"`` (review-length texts: about 1 MB of JSON)
_AUTO_TEXTS = 8192
# How much of a server's error body an exception quotes.
_MESSAGE_CHARS = 500


class RemoteModelError(RuntimeError):
    """The model endpoint could not be reached, answered with an HTTP error, or answered
    something that is not the protocol's response; ``url``, ``status`` (None when no
    answer came) and ``message`` say which."""

    def __init__(self, url: str, status: int | None, message: str, timed_out: bool = False) -> None:
        self.url, self.status, self.message, self.timed_out = url, status, message, timed_out
        where = (
            f"{url} answered HTTP {status}"
            if status is not None
            else f"{url} did not answer"
            if timed_out
            else f"{url} could not be reached"
        )
        super().__init__(f"{where}: {message}")


class RemoteModel(Predictor):
    """A predictor that calls a model served over HTTP.

    Args:
        url: the server's base address, ``http://host:port``, or the full endpoint.
        protocol: ``"v2"``, ``"kserve_v1"`` or ``"seldon_v1"`` (see the module docs).
        model_name: the served model's name (v2 and KServe v1; read from a full
            endpoint URL when it holds one).
        batch_size: most rows per request; larger batches go in several requests.
            ``"auto"`` (default): as many rows as hold about 262,144 numbers (21,845
            census rows, 334 MNIST images): on the census table, AnchorTabular over a
            served model took 1.94 s per 32 rows with 256-row requests and 1.29 s with
            4,096, and did not get faster above that.
        timeout: seconds to connect, and seconds to wait for each answer.
        retries: how often a request is sent again when the connection fails (never
            after the server has answered, so a prediction is never run twice).
        headers: extra HTTP headers (an auth token, a Seldon/KServe host header).
        output_name: v2 only: which output to return (default: the first).

    Calling it with an ``(N, ...)`` numpy array returns a numpy array; with a tensor,
    a tensor on the same device. Outputs keep the server's dtype (floats as float32
    or float64). Called directly it sends exactly the rows it is given; an explainer
    configures it like any Predictor (its rows per call, its padding).

    Examples:
        >>> model = RemoteModel("http://127.0.0.1:8080", protocol="v2", model_name="income")
        >>> model.endpoint
        'http://127.0.0.1:8080/v2/models/income/infer'
    """

    def __init__(
        self,
        url: str,
        protocol: str = "v2",
        model_name: str | None = None,
        batch_size: int | str = "auto",
        timeout: float = 30.0,
        retries: int = 2,
        headers: dict[str, str] | None = None,
        output_name: str | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "grpc://")):
            raise ValueError(f"url must be an http://, https:// or grpc:// address, got {url!r}")
        _checks.check_choice("protocol", protocol, PROTOCOLS)
        if url.startswith("grpc://") and protocol != "v2":
            raise ValueError(
                f"a grpc:// address speaks the v2 protocol (its gRPC form); got protocol={protocol!r}"
            )
        if batch_size != "auto":
            _checks.check_int("batch_size", batch_size, minimum=1)
        _checks.check_number("timeout", timeout, low=0.0, low_open=True)
        _checks.check_int("retries", retries, minimum=0)
        if headers is not None and (
            not isinstance(headers, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            raise TypeError(f"headers must be a dict of str to str, got {headers!r}")
        for name, value in (("model_name", model_name), ("output_name", output_name)):
            if value is not None and (not isinstance(value, str) or not value):
                raise TypeError(f"{name} must be a non-empty str or None, got {value!r}")
        self.url, self.protocol = url.rstrip("/"), protocol
        self.model_name, self.output_name = model_name, output_name
        self.batch_size, self.timeout, self.retries = batch_size, float(timeout), retries
        self.headers = dict(headers or {})
        self.endpoint = self._endpoint()
        # The connection pool and the v2 metadata, shared with the copies explainers configure.
        self._shared: dict[str, Any] = {"pool": None, "metadata": None, "grpc": None}
        # As a Predictor: numpy arrays, every row given in one call (split into requests by
        # _forward), no padding unless an explainer asks for it.
        super().__init__(self._forward, takes="numpy", batch_size=None, pad_to_multiple=1)

    #: the keys of :meth:`config`, which a saved explainer stores and :meth:`from_config` takes
    CONFIG_KEYS = (
        "url",
        "protocol",
        "model_name",
        "batch_size",
        "timeout",
        "retries",
        "output_name",
    )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RemoteModel:
        """Rebuild a RemoteModel from :meth:`config` (what a saved explainer stores: plain data only).

        Raises:
            ValueError: a key that is not one of :data:`CONFIG_KEYS`, or a value the constructor refuses.
        """
        unknown = sorted(set(config) - set(cls.CONFIG_KEYS))
        if unknown:
            raise ValueError(
                f"unknown remote model keys {unknown}; the keys are {list(cls.CONFIG_KEYS)}"
            )
        try:
            return cls(**config)
        except (TypeError, ValueError) as err:
            raise ValueError(f"the stored remote model is not valid: {err}") from err

    def _resolve_takes(self, takes: str) -> str:
        return "numpy"  # JSON is made from arrays

    # -- addresses ------------------------------------------------------------------

    @property
    def transport(self) -> str:
        """``"grpc"`` for a ``grpc://`` address (raw tensor bytes), else ``"http"`` (JSON)."""
        return "grpc" if self.url.startswith("grpc://") else "http"

    def _endpoint(self) -> str:
        url, name = self.url, self.model_name
        if self.protocol == "v2":
            if url.endswith("/infer"):
                if name is None:
                    self.model_name = url.removesuffix("/infer").rsplit("/", 1)[-1]
                return url
            if "/v2/models/" in url:
                base, self.model_name = url.split("/v2/models/", 1)
                self.model_name = self.model_name.split("/", 1)[0]
                self.url = base
                return f"{base}/v2/models/{self.model_name}/infer"
            if name is None:
                raise ValueError("protocol 'v2' needs model_name (or a .../v2/models/NAME url)")
            return f"{url}/v2/models/{name}/infer"
        if self.protocol == "kserve_v1":
            if url.endswith(":predict"):
                return url
            if name is None:
                raise ValueError("protocol 'kserve_v1' needs model_name (or a ...:predict url)")
            return f"{url}/v1/models/{name}:predict"
        return url if url.endswith("/predictions") else f"{url}/api/v1.0/predictions"

    def config(self) -> dict[str, Any]:
        """The constructor's arguments as plain data (what a saved explainer stores), headers excepted
        (they may hold credentials)."""
        return {key: getattr(self, key) for key in self.CONFIG_KEYS}

    def __repr__(self) -> str:
        return f"RemoteModel({self.endpoint!r}, protocol={self.protocol!r}, batch_size={self.batch_size})"

    # -- calling ----------------------------------------------------------------------

    def __call__(self, inputs: Any) -> Any:
        """The served model's outputs on ``inputs`` ``(N, ...)``: numpy in, numpy out; a tensor in, a tensor
        out; a list of texts (sent as v2 ``BYTES``, or JSON strings for v1) in, numpy out."""
        if isinstance(inputs, list):
            if inputs and all(isinstance(text, str) for text in inputs):
                return super().__call__(inputs)
            held = type(inputs[0]).__name__ if inputs else "nothing"
            raise TypeError(
                "RemoteModel takes a numpy array or a tensor, or a non-empty list of texts (str); "
                f"got a list holding {held}"
            )
        rows = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else inputs
        if isinstance(rows, np.ndarray):
            if rows.ndim < 1 or rows.shape[0] == 0:
                raise ValueError(
                    f"RemoteModel needs a batch (N, ...) with N >= 1, got shape {rows.shape}"
                )
            if rows.dtype.kind == "f" and not np.isfinite(rows).all():
                raise ValueError("RemoteModel inputs hold NaN or infinite values")
        return super().__call__(inputs)

    def _forward(self, rows: np.ndarray | list[str]) -> np.ndarray:
        """One call of the model: the rows in requests of ``batch_size`` rows, the answers joined."""
        step = self.rows_per_request(rows)
        pieces = [self._predict(rows[start : start + step]) for start in range(0, len(rows), step)]
        return np.concatenate(pieces, axis=0)

    def rows_per_request(self, rows: np.ndarray) -> int:
        """How many rows of ``rows`` one request carries (``batch_size``, or what ``"auto"`` picks)."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        if isinstance(rows, list):
            return _AUTO_TEXTS
        return max(1, _AUTO_VALUES // max(1, int(np.prod(rows.shape[1:]))))

    def _predict(self, rows: np.ndarray | list[str]) -> np.ndarray:
        if isinstance(rows, list):
            return self._predict_texts(rows)
        if self.transport == "grpc":
            name, datatype = self._v2_input(rows)
            outputs = self._grpc().infer(
                self.model_name,
                name,
                datatype,
                rows.astype(_V2_NUMPY[datatype], copy=False),
                self.output_name,
            )
            if outputs.shape[0] != rows.shape[0]:
                raise RemoteModelError(
                    self.endpoint,
                    200,
                    f"returned {outputs.shape[0]} rows for {rows.shape[0]} inputs",
                )
            return outputs
        if self.protocol == "v2":
            body = self._v2_request(rows)
        elif self.protocol == "kserve_v1":
            body = {"instances": rows.tolist()}
        else:
            body = {"data": {"ndarray": rows.tolist()}}
        answer = self._send("POST", self.endpoint, body)
        outputs = self._decode(answer)
        if outputs.shape[0] != rows.shape[0]:
            raise RemoteModelError(
                self.endpoint, 200, f"returned {outputs.shape[0]} rows for {rows.shape[0]} inputs"
            )
        return outputs

    def _predict_texts(self, texts: list[str]) -> np.ndarray:
        """One request of texts: a v2 ``BYTES`` tensor ``(N,)`` (over gRPC too), or v1 JSON strings."""
        if self.transport == "grpc":
            name = self._v2_text_input()
            outputs = self._grpc().infer_texts(self.model_name, name, texts, self.output_name)
        else:
            if self.protocol == "v2":
                body = {
                    "inputs": [
                        {
                            "name": self._v2_text_input(),
                            "shape": [len(texts)],
                            "datatype": "BYTES",
                            "data": texts,
                        }
                    ]
                }
            elif self.protocol == "kserve_v1":
                body = {"instances": texts}
            else:
                body = {"data": {"ndarray": texts}}
            outputs = self._decode(self._send("POST", self.endpoint, body))
        if outputs.shape[0] != len(texts):
            raise RemoteModelError(
                self.endpoint, 200, f"returned {outputs.shape[0]} rows for {len(texts)} texts"
            )
        return outputs

    def _v2_declared_input(self) -> dict[str, Any]:
        """The model's one input as its metadata declares it (``{}`` when it declares none)."""
        inputs = self.metadata().get("inputs") or [{}]
        if len(inputs) != 1:
            raise RemoteModelError(
                self.url,
                200,
                f"model {self.model_name!r} has {len(inputs)} inputs; RemoteModel sends one",
            )
        return inputs[0]

    def _v2_text_input(self) -> str:
        """The name of the model's one input, which must take ``BYTES`` when the metadata says."""
        declared = self._v2_declared_input()
        datatype = declared.get("datatype")
        if datatype not in (None, "BYTES"):
            raise ValueError(
                f"model {self.model_name!r} takes {datatype}, not texts (BYTES); explain it with a "
                "method of numbers, or serve a model that takes strings"
            )
        return declared.get("name", "input-0")

    def _v2_request(self, rows: np.ndarray) -> dict[str, Any]:
        name, datatype = self._v2_input(rows)
        data = rows.astype(_V2_NUMPY[datatype], copy=False)
        return {
            "inputs": [
                {
                    "name": name,
                    "shape": list(data.shape),
                    "datatype": datatype,
                    "data": data.reshape(-1).tolist(),
                }
            ]
        }

    def _v2_input(self, rows: np.ndarray) -> tuple[str, str]:
        """The v2 input's name and datatype: the model's metadata's, else ``input-0`` and the rows'."""
        declared = self._v2_declared_input()
        name = declared.get("name", "input-0")
        datatype = declared.get("datatype") or V2_DATATYPES.get(rows.dtype)
        if datatype not in _V2_NUMPY:
            raise ValueError(
                f"cannot send a batch of dtype {rows.dtype} as v2 datatype {datatype!r}"
            )
        return name, datatype

    def metadata(self) -> dict[str, Any]:
        """v2: the model's metadata (``GET /v2/models/{name}``), read once; ``{}`` otherwise."""
        if self.protocol != "v2":
            return {}
        if self._shared["metadata"] is None:
            url = self.endpoint.removesuffix("/infer")
            if self.transport == "grpc":
                meta = self._grpc().metadata(self.model_name)
            else:
                meta = self._send("GET", url, None)
            if not isinstance(meta, dict):
                raise RemoteModelError(
                    url, 200, f"metadata must be a JSON object, got {_short(meta)}"
                )
            self._shared["metadata"] = meta
        return self._shared["metadata"]

    def _decode(self, answer: Any) -> np.ndarray:
        try:
            if self.protocol == "v2":
                outputs = answer["outputs"]
                wanted = self.output_name
                chosen = next(o for o in outputs if wanted is None or o["name"] == wanted)
                dtype = _V2_NUMPY.get(chosen.get("datatype", "FP64"), np.float64)
                return np.asarray(chosen["data"], dtype=dtype).reshape(chosen["shape"])
            if self.protocol == "kserve_v1":
                return _as_array(answer["predictions"])
            data = answer["data"]
            if "ndarray" in data:
                return _as_array(data["ndarray"])
            tensor = data["tensor"]
            return np.asarray(tensor["values"], dtype=np.float64).reshape(tensor["shape"])
        except (KeyError, TypeError, ValueError, StopIteration) as err:
            reason = (
                f"no output named {self.output_name!r}"
                if isinstance(err, StopIteration)
                else repr(err)
            )
            raise RemoteModelError(
                self.endpoint, 200, f"not a {self.protocol} response ({reason}): {_short(answer)}"
            ) from None

    # -- HTTP -------------------------------------------------------------------------

    def _grpc(self) -> Any:
        if self._shared["grpc"] is None:
            from torchexplain.models.grpc_v2 import GrpcV2Client

            endpoint = self.endpoint

            def error(status: int | None, message: str, timed_out: bool) -> RemoteModelError:
                return RemoteModelError(endpoint, status, message, timed_out=timed_out)

            self._shared["grpc"] = GrpcV2Client(
                self.url.removeprefix("grpc://"), self.timeout, error
            )
        return self._shared["grpc"]

    def _connections(self) -> Any:
        if self._shared["pool"] is None:
            import urllib3

            self._shared["pool"] = urllib3.PoolManager(
                maxsize=8,
                timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout),
                # Only failed connections are retried: once a request reached the
                # server, sending it again could run the prediction twice.
                retries=urllib3.Retry(
                    total=self.retries,
                    connect=self.retries,
                    read=0,
                    status=0,
                    other=0,
                    redirect=0,
                    allowed_methods=None,
                    backoff_factor=0.1,
                ),
            )
        return self._shared["pool"]

    def _send(self, method: str, url: str, body: Any) -> Any:
        import urllib3

        headers = {"Content-Type": "application/json", **self.headers}
        payload = None if body is None else json.dumps(body).encode()
        try:
            response = self._connections().request(method, url, body=payload, headers=headers)
        except urllib3.exceptions.MaxRetryError as err:
            if isinstance(
                err.reason, urllib3.exceptions.ReadTimeoutError
            ):  # reached, but no answer in time
                raise RemoteModelError(
                    url, None, f"no answer within {self.timeout:g} s", timed_out=True
                ) from None
            raise RemoteModelError(
                url, None, f"{err.reason} (after {self.retries} retries)"
            ) from None
        except urllib3.exceptions.TimeoutError:
            raise RemoteModelError(
                url, None, f"no answer within {self.timeout:g} s", timed_out=True
            ) from None
        except urllib3.exceptions.HTTPError as err:
            raise RemoteModelError(url, None, str(err)) from None
        text = response.data.decode("utf-8", errors="replace")
        if response.status >= 400:
            raise RemoteModelError(url, response.status, _server_message(text))
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise RemoteModelError(
                url, response.status, f"the answer is not JSON: {text[:_MESSAGE_CHARS]!r}"
            ) from None

    def __copy__(self) -> RemoteModel:
        # A configured copy (Predictor.configured) shares the connections and the metadata.
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def __getstate__(self) -> dict[str, Any]:
        # Connection pools do not travel to other processes: a copy there opens its own.
        return {
            **self.__dict__,
            "_shared": {"pool": None, "metadata": self._shared["metadata"], "grpc": None},
        }


def _as_array(values: Any) -> np.ndarray:
    out = np.asarray(values)
    if out.dtype == object or out.dtype.kind not in "biuf":
        raise ValueError(f"outputs must be numbers, got dtype {out.dtype}")
    return out


def _server_message(text: str) -> str:
    """The server's own error message when it sent JSON with one, else its text."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return text[:_MESSAGE_CHARS] or "(empty answer)"
    if isinstance(parsed, dict):
        for key in ("error", "detail", "message"):
            if key in parsed:
                return str(parsed[key])[:_MESSAGE_CHARS]
    return text[:_MESSAGE_CHARS]


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 200 else text[:200] + "..."
