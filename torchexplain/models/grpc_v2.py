"""The Open Inference Protocol (v2) over gRPC, for :class:`~torchexplain.models.RemoteModel`.

Over HTTP every number of a batch travels as JSON text, written by one side and parsed
by the other. Over gRPC a batch travels as its raw bytes (``raw_input_contents``),
which MLServer, Triton and KServe's servers read directly: for the census rows that
anchors send by the thousand, the encoding was most of a remote call's time.

The messages are the v2 protocol's (``inference.GRPCInferenceService``), taken from
a generated module that is already installed: MLServer's (``mlserver.grpc.dataplane_pb2``,
the ``serve`` extra) or tritonclient's (``tritonclient.grpc.service_pb2``). Both
register the same message names with protobuf, so they cannot both be imported
into one process; whichever is already imported is used.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import numpy as np

__all__ = ["GrpcV2Client", "grpc_messages"]

_MODULES = ("mlserver.grpc.dataplane_pb2", "tritonclient.grpc.service_pb2")
_SERVICE = "/inference.GRPCInferenceService"
# gRPC status -> the HTTP status RemoteModelError reports (None: no answer came)
_HTTP_OF = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 422,
    "RESOURCE_EXHAUSTED": 413,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNKNOWN": 500,
}
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def grpc_messages() -> Any:
    """The v2 protocol's generated message module (see the module docs).

    Raises:
        ImportError: neither grpcio nor one of the modules is installed (naming the fix).
    """
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise ImportError(
            'a grpc:// model endpoint needs grpcio and the v2 messages: pip install "torchexplain[serve]"'
        ) from None
    for name in _MODULES:
        if name in sys.modules:
            return sys.modules[name]
    errors = []
    for name in _MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as err:
            errors.append(f"{name}: {err}")
    raise ImportError(
        "a grpc:// model endpoint needs the v2 protocol's messages from MLServer or tritonclient "
        f'(pip install "torchexplain[serve]"); none imports: {"; ".join(errors)}'
    )


class GrpcV2Client:
    """One gRPC channel to a v2 server (``host:port``): model metadata and inference, raw tensors.

    Failures raise ``error(status, message, timed_out)`` (the caller's exception type).
    """

    def __init__(self, target: str, timeout: float, error: Any) -> None:
        import grpc

        self.target, self.timeout, self._error = target, timeout, error
        self.pb = grpc_messages()
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self.channel = grpc.insecure_channel(target, options=options)
        self._metadata = self.channel.unary_unary(
            f"{_SERVICE}/ModelMetadata",
            request_serializer=self.pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=self.pb.ModelMetadataResponse.FromString,
        )
        self._infer = self.channel.unary_unary(
            f"{_SERVICE}/ModelInfer",
            request_serializer=self.pb.ModelInferRequest.SerializeToString,
            response_deserializer=self.pb.ModelInferResponse.FromString,
        )

    def close(self) -> None:
        self.channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            code = err.code()
            details = err.details() or code.name
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise self._error(None, f"no answer within {self.timeout:g} s", True) from None
            if code == grpc.StatusCode.UNAVAILABLE:
                raise self._error(None, f"unavailable: {details}", False) from None
            raise self._error(
                _HTTP_OF.get(code.name, 500), f"{code.name}: {details}", False
            ) from None

    def metadata(self, model: str) -> dict[str, Any]:
        """The model's metadata as the HTTP route answers it: ``{"name", "inputs", "outputs"}``."""
        answer = self._call(self._metadata, self.pb.ModelMetadataRequest(name=model))

        def tensors(items: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

        return {
            "name": answer.name,
            "inputs": tensors(answer.inputs),
            "outputs": tensors(answer.outputs),
        }

    def infer(
        self, model: str, name: str, datatype: str, rows: np.ndarray, output: str | None
    ) -> np.ndarray:
        """The model's output (``output``, or its first) on ``rows`` sent as raw ``datatype`` bytes."""
        tensor = self.pb.ModelInferRequest.InferInputTensor(
            name=name, datatype=datatype, shape=list(rows.shape)
        )
        raw = np.ascontiguousarray(rows).astype(rows.dtype.newbyteorder("<"), copy=False).tobytes()
        return self._infer_raw(model, tensor, raw, output)

    def infer_texts(
        self, model: str, name: str, texts: list[str], output: str | None
    ) -> np.ndarray:
        """The model's output on ``texts``, sent as a ``BYTES`` tensor ``(N,)`` (each element's
        4-byte little-endian length, then its UTF-8 bytes: the protocol's raw layout)."""
        tensor = self.pb.ModelInferRequest.InferInputTensor(
            name=name, datatype="BYTES", shape=[len(texts)]
        )
        pieces = []
        for text in texts:
            data = text.encode("utf-8")
            pieces.append(len(data).to_bytes(4, "little"))
            pieces.append(data)
        return self._infer_raw(model, tensor, b"".join(pieces), output)

    def _infer_raw(self, model: str, tensor: Any, raw: bytes, output: str | None) -> np.ndarray:
        request = self.pb.ModelInferRequest(
            model_name=model, inputs=[tensor], raw_input_contents=[raw]
        )
        answer = self._call(self._infer, request)
        outputs = list(answer.outputs)
        index = next((i for i, o in enumerate(outputs) if output is None or o.name == output), None)
        if index is None:
            names = [o.name for o in outputs]
            raise self._error(200, f"no output named {output!r} (outputs: {names})", False)
        chosen = outputs[index]
        shape = [int(d) for d in chosen.shape]
        dtype = _numpy_dtype(chosen.datatype)
        if dtype is None:
            raise self._error(
                200, f"output {chosen.name!r} has datatype {chosen.datatype}, not numbers", False
            )
        if index < len(answer.raw_output_contents):
            values = np.frombuffer(answer.raw_output_contents[index], dtype=dtype.newbyteorder("<"))
        elif chosen.datatype not in _CONTENTS:
            raise self._error(
                200, f"output {chosen.name!r} ({chosen.datatype}) came without raw bytes", False
            )
        else:
            values = np.asarray(getattr(chosen.contents, _CONTENTS[chosen.datatype]), dtype=dtype)
        try:
            return values.astype(dtype, copy=False).reshape(shape)
        except ValueError:
            raise self._error(
                200, f"output {chosen.name!r}: {values.size} values for shape {shape}", False
            ) from None


def _numpy_dtype(datatype: str) -> np.dtype | None:
    names = {
        "BOOL": np.bool_,
        "INT8": np.int8,
        "INT16": np.int16,
        "INT32": np.int32,
        "INT64": np.int64,
        "UINT8": np.uint8,
        "UINT16": np.uint16,
        "UINT32": np.uint32,
        "UINT64": np.uint64,
        "FP16": np.float16,
        "FP32": np.float32,
        "FP64": np.float64,
    }
    kind = names.get(datatype)
    return None if kind is None else np.dtype(kind)
