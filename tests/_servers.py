"""Servers the serving tests start on 127.0.0.1 and stop again: a toy model server speaking
every protocol (in a thread), and torchexplain's own servers (in a subprocess)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

WEIGHTS = np.array([[1.0, -2.0, 0.5], [0.3, 0.8, -1.0], [-0.7, 0.2, 0.9], [0.4, -0.1, 0.6]])
BIAS = np.array([0.1, -0.2, 0.05])


def toy_model(rows: np.ndarray) -> np.ndarray:
    """The served model: softmax(x W + b), float64, one row at a time (batch-size independent)."""
    logits = np.stack([row @ WEIGHTS + BIAS for row in np.asarray(rows, dtype=np.float64)])
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


TEXT_WEIGHTS = {"good": 2.0, "great": 1.5, "bad": -2.0, "dull": -1.5}


def toy_text_model(texts: list[str]) -> np.ndarray:
    """The served model of text: softmax([0, 0.3 + sum of the weights of its words]), float64."""
    scores = np.array(
        [0.3 + sum(TEXT_WEIGHTS.get(w, 0.0) for w in t.lower().split()) for t in texts]
    )
    logits = np.stack([np.zeros_like(scores), scores], axis=1)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse can be seen

    def log_message(self, *args):  # quiet
        pass

    def reply(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (the timeout test)

    def do_GET(self):
        self.server.log.append(("GET", self.path, self.client_address[1]))
        if self.path in ("/v2/models/toy", "/v2/models/slow"):
            self.reply(
                200,
                {
                    "name": "toy",
                    "inputs": [{"name": "rows", "datatype": "FP64", "shape": [-1, 4]}],
                    "outputs": [{"name": "proba", "datatype": "FP64", "shape": [-1, 3]}],
                },
            )
        elif self.path == "/v2/models/words":
            self.reply(
                200,
                {
                    "name": "words",
                    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                    "outputs": [{"name": "proba", "datatype": "FP64", "shape": [-1, 2]}],
                },
            )
        elif self.path in ("/v1/models/toy", "/v1/models/slow", "/v1/models/words"):
            self.reply(200, {"name": self.path.rsplit("/", 1)[-1], "ready": True})
        else:
            self.reply(404, {"error": f"no model at {self.path}"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.log.append(("POST", self.path, self.client_address[1]))
        if self.path == "/v2/models/toy/infer":
            (inp,) = body["inputs"]
            assert inp["name"] == "rows" and inp["datatype"] == "FP64"
            rows = np.asarray(inp["data"], dtype=np.float64).reshape(inp["shape"])
            out = toy_model(rows)
            self.reply(
                200,
                {
                    "model_name": "toy",
                    "outputs": [
                        {
                            "name": "label",
                            "datatype": "INT64",
                            "shape": [len(rows)],
                            "data": out.argmax(1).tolist(),
                        },
                        {
                            "name": "proba",
                            "datatype": "FP64",
                            "shape": list(out.shape),
                            "data": out.reshape(-1).tolist(),
                        },
                    ],
                },
            )
        elif self.path == "/v2/models/words/infer":
            (inp,) = body["inputs"]
            assert inp["name"] == "text" and inp["datatype"] == "BYTES"
            out = toy_text_model(inp["data"])
            self.reply(
                200,
                {
                    "model_name": "words",
                    "outputs": [
                        {
                            "name": "proba",
                            "datatype": "FP64",
                            "shape": list(out.shape),
                            "data": out.reshape(-1).tolist(),
                        }
                    ],
                },
            )
        elif self.path == "/v1/models/words:predict":
            self.reply(200, {"predictions": toy_text_model(body["instances"]).tolist()})
        elif self.path == "/v1/models/toy:predict":
            self.reply(200, {"predictions": toy_model(body["instances"]).tolist()})
        elif self.path == "/api/v1.0/predictions":
            self.reply(
                200,
                {
                    "data": {
                        "names": ["a", "b", "c"],
                        "ndarray": toy_model(body["data"]["ndarray"]).tolist(),
                    }
                },
            )
        elif self.path == "/v1/models/broken:predict":
            self.reply(500, {"error": "model crashed: CUDA out of memory"})
        elif self.path == "/v1/models/odd:predict":
            self.reply(200, {"outputs": [1, 2]})
        elif self.path == "/v1/models/short:predict":
            self.reply(200, {"predictions": toy_model(body["instances"])[:1].tolist()})
        elif self.path in ("/v1/models/slow:predict", "/v2/models/slow/infer"):
            time.sleep(self.server.slow_seconds)
            self.reply(200, {"predictions": toy_model(body["instances"]).tolist()})
        else:
            self.reply(404, {"error": f"no model at {self.path}"})


@contextlib.contextmanager
def toy_server(slow_seconds: float = 1.5) -> Iterator[ThreadingHTTPServer]:
    """The toy model behind v2 (``toy``, ``slow``), KServe v1 and Seldon v1 routes, in a thread."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.log = []
    httpd.slow_seconds = slow_seconds
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def probabilities(model):
    """The in-process twin of a served census model: numpy rows -> float32 softmax, as the server
    computes it."""
    import torch

    def predict(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(rows)).float()).softmax(-1).numpy()

    return predict


def export_census_model(model, data, path) -> None:
    """Save the census classifier as a ``torch.export`` archive with a dynamic batch dimension."""
    import torch

    example = torch.from_numpy(data.X_train[:8])
    program = torch.export.export(
        model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(path))


# the subprocess servers live in the package: the demo and the benchmark start theirs the same way
from torchexplain.serving.local import Process, free_port, post_json, torchexplain_command  # noqa: E402,F401
