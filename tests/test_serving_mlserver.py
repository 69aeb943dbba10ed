"""A live MLServer (127.0.0.1, started and stopped here) serving torchexplain explainers and a model.

One server for the module, started by ``torchexplain serve``: the census classifier as a
``torch.export`` model (``income``), an AnchorTabular explainer that queries it over
HTTP (``anchor``), an IntegratedGradients explainer holding its own exported model
(``ig``), and two AnchorTabular explainers whose model endpoint is down
(``anchor-down``) or too slow (``anchor-slow``). Every answer is compared with the same
saved explainer run in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pickle
import statistics
import threading
import time
import zipfile

import numpy as np
import pytest
import torch

pytest.importorskip("mlserver")
pytest.importorskip("urllib3")

from tests._servers import (  # noqa: E402
    Process,
    export_census_model,
    free_port,
    post_json,
    probabilities,
    torchexplain_command,
    toy_server,
)
from torchexplain import AnchorTabular, IntegratedGradients, load_explainer  # noqa: E402
from torchexplain.datasets import load_census  # noqa: E402
from torchexplain.serving import ExplainerService, RemoteModel  # noqa: E402
from torchexplain.serving.deploy import explainer_model_settings  # noqa: E402
from torchexplain.serving.local import explain_request_body  # noqa: E402
from torchexplain.zoo import pretrained_census_mlp  # noqa: E402

pytestmark = pytest.mark.slow

IG_ROWS = 4


@pytest.fixture(scope="module")
def census():
    data = load_census()
    model, _ = pretrained_census_mlp()
    return data, model.eval()


@pytest.fixture(scope="module")
def deployment(census, tmp_path_factory):
    data, model = census
    root = tmp_path_factory.mktemp("serving")
    example = torch.from_numpy(data.X_train[:8])
    export_census_model(model, data, root / "income.pt2")

    port, grpc = free_port(), free_port()
    # the address stored here is replaced by infer_uri when the server loads it
    anchor = AnchorTabular(
        RemoteModel("http://127.0.0.1:9", model_name="income"),
        data.feature_names,
        data.categorical_names,
        seed=0,
        coverage_samples=2000,
    )
    anchor.fit(data.X_train)
    anchor.save(root / "anchor")
    ig = IntegratedGradients(model, n_steps=16)
    ig.save(root / "ig", example_inputs=example)

    repository = root / "repository"
    servers = contextlib.ExitStack()
    slow_server = servers.enter_context(toy_server(slow_seconds=3.0))
    extra_models = {
        "ig": explainer_model_settings("ig", root / "ig", explainer_type="integrated_gradients"),
        "anchor-down": explainer_model_settings(
            "anchor-down",
            root / "anchor",
            infer_uri=f"http://127.0.0.1:{free_port()}/v2/models/income/infer",
        ),
        "anchor-slow": explainer_model_settings(
            "anchor-slow",
            root / "anchor",
            infer_timeout=0.5,
            infer_uri=f"http://127.0.0.1:{slow_server.server_address[1]}/v2/models/slow/infer",
        ),
    }
    for name, settings in extra_models.items():
        (repository / name).mkdir(parents=True)
        (repository / name / "model-settings.json").write_text(json.dumps(settings))
    base = f"http://127.0.0.1:{port}"
    names = ["income", "anchor", *extra_models]
    server = Process(
        torchexplain_command(
            "serve",
            str(root / "anchor"),
            "--model",
            str(root / "income.pt2"),
            "--model-name",
            "income",
            "--name",
            "anchor",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--grpc-port",
            str(grpc),
            "--max-rows",
            "64",
            "--settings-dir",
            str(repository),
        ),
        [f"{base}/v2/models/{name}/ready" for name in names],
        root / "mlserver.log",
    ).start()
    yield {"base": base, "root": root, "server": server, "rows": data.X_test, "model": model}
    server.stop()
    servers.close()


def explain(deployment, name: str, body, timeout: float = 60.0) -> tuple[int, dict]:
    return post_json(f"{deployment['base']}/v2/models/{name}/infer", body, timeout=timeout)


def served_explanation(answer: dict) -> dict:
    (output,) = answer["outputs"]
    assert output["name"] == "explanation" and output["datatype"] == "BYTES"
    return json.loads(output["data"][0])


def test_anchor_over_http_equals_the_in_process_explainer(deployment, census):
    rows = deployment["rows"][:3]
    status, answer = explain(deployment, "anchor", explain_request_body(rows, {"threshold": 0.9}))
    assert status == 200, answer
    local = load_explainer(deployment["root"] / "anchor", model=probabilities(census[1]))
    expected = json.loads(local.explain(rows.astype(np.float32), threshold=0.9).to_json())
    assert served_explanation(answer) == expected
    assert len(expected["data"]["anchor"]) == 3  # every row explained ("rows": "all")
    # explain_parameters as a JSON string (what KServe/gRPC clients can send) means the same
    status, answer = explain(
        deployment, "anchor", explain_request_body(rows, json.dumps({"threshold": 0.9}))
    )
    assert status == 200 and served_explanation(answer) == expected


def ig_reference(deployment, rows: np.ndarray, target: list[int]) -> dict:
    local = load_explainer(
        deployment["root"] / "ig"
    )  # its own exported model, as the server loads it
    return json.loads(
        local.explain(torch.from_numpy(rows.astype(np.float32)), target=target).to_json()
    )


def test_white_box_ig_loads_its_model_from_the_folder_and_matches(deployment):
    rows = deployment["rows"][:IG_ROWS]
    status, answer = explain(deployment, "ig", explain_request_body(rows, {"target": [1, 0, 1, 0]}))
    assert status == 200, answer
    served = served_explanation(answer)
    assert served == ig_reference(deployment, rows, [1, 0, 1, 0])
    # (IG's numbers themselves are tested against Captum in test_integrated_gradients; here the
    # census model's categorical columns go through round/one-hot, so completeness does not hold)
    assert (
        served["meta"]["name"] == "IntegratedGradients"
        and len(served["data"]["target"]["data"]) == IG_ROWS
    )


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (explain_request_body(np.zeros((2, 5))), 400, "shape [2, 5]; AnchorTabular takes (N, 12)"),
        (
            {
                "inputs": [
                    {"name": "rows", "shape": [1, 12], "datatype": "BYTES", "data": ["x"] * 12}
                ]
            },
            400,
            "datatype BYTES",
        ),
        (
            {
                "inputs": [
                    {"name": "rows", "shape": [1, 12], "datatype": "FP32", "data": ["a"] * 12}
                ]
            },
            400,
            "its data holds strings",
        ),
        (
            {
                "inputs": [
                    {"name": "rows", "shape": [1, 12], "datatype": "FP32", "data": ["1.5"] * 12}
                ]
            },
            400,
            "its data holds strings",
        ),
        (
            {
                "inputs": [
                    {"name": "rows", "shape": [1, 12], "datatype": "BOOL", "data": [True] * 12}
                ]
            },
            400,
            "has datatype BOOL",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "rows",
                        "shape": [1, 12],
                        "datatype": "FP32",
                        "data": [1e39] + [0.0] * 11,
                    }
                ]
            },
            400,
            "NaN or inf",
        ),
        (
            b'{"inputs": [{"name": "rows", "shape": [1, 12], "datatype": "FP32", "data": [NaN'
            + b", 0" * 11
            + b"]}]}",
            422,
            "JSON",
        ),
        (
            explain_request_body(np.zeros((1, 12)), {"thresh": 0.9}),
            400,
            "unknown explain parameter(s) ['thresh']",
        ),
        (
            explain_request_body(np.zeros((1, 12)), "{not json"),
            400,
            "explain_parameters is a string but not JSON",
        ),
        (explain_request_body(np.zeros((1, 12)), {"threshold": 2.0}), 400, "threshold"),
        (b'{"inputs": [', 422, "JSON"),
        (explain_request_body(np.zeros((65, 12))), 413, "at most 64 per request"),
        (
            {
                "inputs": [{"name": "a", "shape": [1, 12], "datatype": "FP32", "data": [0.0] * 12}]
                * 2
            },
            400,
            "exactly one input",
        ),
    ],
    ids=[
        "shape",
        "dtype-bytes",
        "dtype-strings",
        "numeric-strings",
        "dtype-bool",
        "infinite",
        "nan-literal",
        "unknown-parameter",
        "parameters-not-json",
        "bad-setting-value",
        "malformed-json",
        "oversized",
        "two-inputs",
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem_and_the_server_keeps_serving(
    deployment, body, status, message
):
    got, answer = explain(deployment, "anchor", body)
    assert got == status, answer
    text = answer.get("error") or json.dumps(answer.get("detail"))
    assert message in text, text
    rows = deployment["rows"][:1]
    again, answer = explain(deployment, "anchor", explain_request_body(rows))
    assert again == 200 and served_explanation(answer)["data"]["anchor"]


def test_load_8_clients_25_requests_each_all_answered_and_equal(deployment, capsys):
    rows = deployment["rows"]
    clients, per_client = 8, 25
    batches = [rows[i * IG_ROWS : (i + 1) * IG_ROWS] for i in range(clients)]
    targets = [[(i + j) % 2 for j in range(IG_ROWS)] for i in range(clients)]
    expected = [ig_reference(deployment, b, t) for b, t in zip(batches, targets)]
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for _ in range(per_client):
            start = time.perf_counter()
            status, answer = explain(
                deployment, "ig", explain_request_body(batches[i], {"target": targets[i]})
            )
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if status != 200 or served_explanation(answer) != expected[i]:
                    failures.append(f"client {i}: {status} {str(answer)[:200]}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    wall = time.perf_counter() - start
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    assert failures == []
    assert len(latencies) == clients * per_client
    assert deployment["server"].alive()
    cuts = statistics.quantiles(latencies, n=100)
    with capsys.disabled():
        print(
            f"\n[serving load] IG, {IG_ROWS} rows/request, {clients}x{per_client} requests in {wall:.1f} s: "
            f"p50 {1000 * statistics.median(latencies):.1f} ms, p99 {1000 * cuts[98]:.1f} ms"
        )


def test_a_model_endpoint_that_is_down_is_a_502_not_a_hang(deployment):
    start = time.perf_counter()
    status, answer = explain(
        deployment, "anchor-down", explain_request_body(deployment["rows"][:1]), timeout=30
    )
    assert status == 502, answer
    assert (
        "the model endpoint failed" in answer["error"] and "could not be reached" in answer["error"]
    )
    assert time.perf_counter() - start < 10


def test_a_slow_model_endpoint_is_a_504_after_the_timeout(deployment):
    start = time.perf_counter()
    status, answer = explain(
        deployment, "anchor-slow", explain_request_body(deployment["rows"][:1]), timeout=30
    )
    assert status == 504, answer
    assert "no answer within 0.5 s" in answer["error"]
    assert time.perf_counter() - start < 3.0  # the endpoint would have taken 3 s
    status, _ = explain(deployment, "anchor", explain_request_body(deployment["rows"][:1]))
    assert status == 200


def test_restarted_server_loads_the_saved_explainer_again_and_answers_identically(deployment):
    rows = deployment["rows"][5:7]
    status, before = explain(deployment, "anchor", explain_request_body(rows))
    assert status == 200
    server = deployment["server"]
    server.stop()
    assert not server.alive()
    server.start()
    status, after = explain(deployment, "anchor", explain_request_body(rows))
    assert status == 200
    assert served_explanation(after) == served_explanation(before)


# -- safety: a folder that is not what it claims is refused at load, nothing in it runs ------------


class _Marker:
    """Unpickling this would create the file ``path``: proof that nothing was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _runtime(name: str, folder, **extra):
    from mlserver.settings import ModelParameters, ModelSettings

    from torchexplain.serving.runtime import ExplainerRuntime

    settings = ModelSettings(
        name=name,
        implementation=ExplainerRuntime,
        parameters=ModelParameters(uri=str(folder), extra=extra),
    )
    return ExplainerRuntime(settings)


def _load_error(runtime) -> str:
    from mlserver.errors import MLServerError

    with pytest.raises(MLServerError) as info:
        asyncio.run(runtime.load())
    assert info.value.status_code == 422
    return str(info.value)


@pytest.fixture
def saved_anchor(deployment, tmp_path):
    import shutil

    folder = tmp_path / "anchor"
    shutil.copytree(deployment["root"] / "anchor", folder)
    return folder


def test_unknown_explainer_name_is_refused(saved_anchor):
    config = json.loads((saved_anchor / "explainer.json").read_text())
    config["explainer"] = "os.system"
    (saved_anchor / "explainer.json").write_text(json.dumps(config))
    assert "unknown explainer 'os.system'" in _load_error(_runtime("x", saved_anchor))


def test_tampered_json_is_refused(saved_anchor):
    config = json.loads((saved_anchor / "explainer.json").read_text())
    config["files"]["tensors.safetensors"] = "0" * 64
    (saved_anchor / "explainer.json").write_text(json.dumps(config))
    assert "tensors.safetensors" in _load_error(_runtime("x", saved_anchor))


def test_a_pickle_in_the_folder_is_refused_and_never_unpickled(deployment, tmp_path):
    import hashlib
    import shutil

    marker = tmp_path / "unpickled"
    folder = tmp_path / "ig"
    shutil.copytree(deployment["root"] / "ig", folder)
    # the saved model archive with one more entry, a pickle, and explainer.json updated to
    # its new checksum: only the archive check stands between it and torch.export.load
    original = zipfile.ZipFile(folder / "model.pt2")
    entries = {name: original.read(name) for name in original.namelist()}
    original.close()
    top = next(iter(entries)).split("/", 1)[0]
    entries[f"{top}/models/payload.pkl"] = pickle.dumps(_Marker(marker))
    with zipfile.ZipFile(folder / "model.pt2", "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    config = json.loads((folder / "explainer.json").read_text())
    config["files"]["model.pt2"] = (
        "sha256:" + hashlib.sha256((folder / "model.pt2").read_bytes()).hexdigest()
    )
    (folder / "explainer.json").write_text(json.dumps(config))
    message = _load_error(_runtime("x", folder))
    assert "payload.pkl" in message
    assert not marker.exists()


def test_wrong_explainer_type_and_settings_are_refused_at_load(saved_anchor, deployment):
    assert "holds a saved AnchorTabular" in _load_error(
        _runtime("x", saved_anchor, explainer_type="kernel_shap")
    )
    assert "unknown explainer setting(s) ['bogus']" in _load_error(
        _runtime("x", saved_anchor, bogus=1)
    )
    with pytest.raises(ValueError, match="white-box IntegratedGradients"):
        ExplainerService.from_folder(deployment["root"] / "ig", infer_uri="http://127.0.0.1:9")


def test_the_loan_demo_serves_and_matches_in_process(tmp_path):
    """examples/serve_loan.py end to end: its own MLServer, started and stopped by it."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "examples" / "serve_loan.py"
    spec = importlib.util.spec_from_file_location("serve_loan", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    summary = demo.run(tmp_path / "out")
    assert summary["served_equals_in_process"]
    assert summary["rows_explained"] == len(summary["examples"]) >= 2
    for example in summary["examples"]:
        assert (
            example["anchor"] and example["precision"] >= 0.9
        )  # threshold 0.95, with the search's delta
    assert (tmp_path / "out" / "serve_loan.png").stat().st_size > 0
