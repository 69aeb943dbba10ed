"""The KServe explainer (``torchexplain kserve``), live on 127.0.0.1, its model calls going to a toy predictor.

KServe's v1 explain protocol: ``POST /v1/models/{name}:explain`` with ``{"instances": ...}``,
the explanation JSON back; the predictor is reached at ``--predictor_host`` with KServe
v1 ``:predict``. Answers are compared with the same saved explainer run in this process.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("urllib3")

from tests._servers import (  # noqa: E402
    Process,
    free_port,
    post_json,
    torchexplain_command,
    toy_model,
    toy_server,
)
from torchexplain import AnchorTabular, load_explainer  # noqa: E402
from torchexplain.serving import RemoteModel  # noqa: E402

pytestmark = pytest.mark.slow

FEATURES = ["a", "b", "c", "d"]
TRAIN = np.random.default_rng(1).uniform(-1, 1, size=(400, 4))
ROWS = np.random.default_rng(2).uniform(-1, 1, size=(3, 4))


@pytest.fixture(scope="module")
def predictor():
    with toy_server() as httpd:
        yield httpd


def _start(tmp_path_factory, predictor_host: str, name: str, *extra: str):
    root = tmp_path_factory.mktemp(name)
    explainer = AnchorTabular(
        RemoteModel("http://127.0.0.1:9", protocol="kserve_v1", model_name="toy"),
        FEATURES,
        seed=3,
        coverage_samples=1000,
    )
    explainer.fit(TRAIN)
    explainer.save(root / "explainer")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = Process(
        torchexplain_command(
            "kserve",
            "--model_name",
            "toy",
            "--predictor_host",
            predictor_host,
            "--http_port",
            str(port),
            "--host",
            "127.0.0.1",
            "--storage_uri",
            str(root / "explainer"),
            "--max_request_bytes",
            "20000",
            "--max_rows",
            "50",
            "--predictor_timeout",
            "5",
            *extra,
        ),
        [f"{base}/v1/models/toy"],
        root / "kserve.log",
        timeout=60,
    ).start()
    return process, base, root


@pytest.fixture(scope="module")
def kserve(predictor, tmp_path_factory):
    process, base, root = _start(
        tmp_path_factory, f"127.0.0.1:{predictor.server_address[1]}", "kserve"
    )
    yield {"base": base, "root": root, "process": process}
    process.stop()


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_explain_equals_the_in_process_explainer(kserve):
    status, answer = post_json(
        f"{kserve['base']}/v1/models/toy:explain", {"instances": ROWS.tolist()}
    )
    assert status == 200, answer
    local = load_explainer(kserve["root"] / "explainer", model=toy_model)
    assert answer == json.loads(local.explain(ROWS).to_json())
    # per-request settings, as a JSON string
    status, answer = post_json(
        f"{kserve['base']}/v1/models/toy:explain",
        {"instances": ROWS.tolist(), "explain_parameters": '{"threshold": 0.8}'},
    )
    assert status == 200 and answer == json.loads(local.explain(ROWS, threshold=0.8).to_json())


def test_health_and_model_routes(kserve):
    assert get(f"{kserve['base']}/") == (200, {"status": "alive"})
    assert get(f"{kserve['base']}/v1/models") == (200, {"models": ["toy"]})
    status, ready = get(f"{kserve['base']}/v1/models/toy")
    assert status == 200 and ready["name"] == "toy" and ready["ready"] is True
    status, answer = get(f"{kserve['base']}/v1/models/other")
    assert status == 404 and "'other' not found" in answer["error"]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("toy:explain", b"{not json", 400, "not JSON"),
        ("toy:explain", {"rows": [[0, 0, 0, 0]]}, 400, '{"instances"'),
        (
            "toy:explain",
            {"instances": [[0, 0, 0, 0]], "extra": 1},
            400,
            "unknown request key(s) ['extra']",
        ),
        (
            "toy:explain",
            {"instances": [[0, 0, 0]]},
            400,
            "shape [1, 3]; AnchorTabular takes (N, 4)",
        ),
        ("toy:explain", {"instances": [[True, False, True, True]]}, 400, "got booleans"),
        ("toy:explain", {"instances": [[0, 0], [0, 0, 0, 0]]}, 400, "rectangular"),
        ("toy:explain", {"instances": [["a", "b", "c", "d"]]}, 400, "must be numbers"),
        (
            "toy:explain",
            {"instances": [[0, 0, 0, 0]], "explain_parameters": {"beam": 2}},
            400,
            "unknown explain parameter(s) ['beam']",
        ),
        ("toy:explain", {"instances": [[0.0] * 4] * 51}, 413, "at most 50 per request"),
        ("toy:explain", {"instances": [[0.123456789] * 4] * 500}, 413, "reads at most 20000"),
        ("other:explain", {"instances": [[0, 0, 0, 0]]}, 404, "not found"),
        ("toy:predict", {"instances": [[0, 0, 0, 0]]}, 404, "send ':predict' to the predictor"),
    ],
    ids=[
        "malformed-json",
        "no-instances",
        "unknown-key",
        "shape",
        "booleans",
        "ragged",
        "strings",
        "unknown-parameter",
        "too-many-rows",
        "too-many-bytes",
        "unknown-model",
        "predict-verb",
    ],
)
def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(kserve, path, body, status, message):
    got, answer = post_json(f"{kserve['base']}/v1/models/{path}", body)
    assert got == status, answer
    assert message in answer["error"], answer
    again, answer = post_json(
        f"{kserve['base']}/v1/models/toy:explain", {"instances": ROWS[:1].tolist()}
    )
    assert again == 200 and answer["data"]["anchor"]


def test_a_predictor_that_is_down_is_a_502(tmp_path_factory):
    process, base, _ = _start(
        tmp_path_factory, f"127.0.0.1:{free_port()}", "kserve-down", "--skip_predictor_check"
    )
    try:
        status, answer = post_json(
            f"{base}/v1/models/toy:explain", {"instances": ROWS.tolist()}, timeout=30
        )
        assert status == 502 and "could not be reached" in answer["error"], answer
        assert process.alive()
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("host", "protocol", "endpoint"),
    [
        (
            "income-predictor.default",
            "kserve_v1",
            "http://income-predictor.default/v1/models/toy:predict",
        ),
        ("10.0.0.5:8080", "v2", "http://10.0.0.5:8080/v2/models/toy/infer"),
        (
            "https://p.example/v1/models/other:predict",
            "kserve_v1",
            "https://p.example/v1/models/other:predict",
        ),
        ("seldon:9000", "seldon_v1", "http://seldon:9000/api/v1.0/predictions"),
    ],
)
def test_predictor_host_becomes_the_endpoint_kserve_means(tmp_path, host, protocol, endpoint):
    """KServe passes a bare host[:port]; the model behind it has the explainer's name."""
    from torchexplain.serving import kserve as kserve_module

    AnchorTabular(toy_model, FEATURES, seed=0, coverage_samples=100).fit(TRAIN).save(tmp_path / "e")
    args = kserve_module.build_parser().parse_args(
        [
            "--model_name",
            "toy",
            "--predictor_host",
            host,
            "--predictor_protocol",
            protocol,
            "--storage_uri",
            str(tmp_path / "e"),
            "--skip_predictor_check",
        ]
    )
    service = kserve_module.load_service(args)
    assert service.explainer.model.endpoint == endpoint
    service.close()


@pytest.mark.parametrize(
    ("name", "host", "message"),
    [
        ("income", None, "GET http://127.0.0.1:{port}/v1/models/income answered HTTP 404"),
        ("toy", "127.0.0.1:{down}", "could not be reached"),
    ],
    ids=["wrong-model-name", "predictor-down"],
)
def test_a_wrong_model_name_or_host_fails_at_start_not_at_the_first_explain(
    predictor, tmp_path, name, host, message
):
    """KServe names the explainer after the predictor's model; a mismatch used to surface only as a
    502 on every explain. The start reads the predictor's metadata and says what is wrong."""
    from torchexplain import cli

    port, down = predictor.server_address[1], free_port()
    AnchorTabular(toy_model, FEATURES, seed=0, coverage_samples=100).fit(TRAIN).save(tmp_path / "e")
    argv = ["kserve", "--model_name", name, "--storage_uri", str(tmp_path / "e")]
    argv += ["--predictor_host", (host or "127.0.0.1:{port}").format(port=port, down=down)]
    completed = subprocess.run(
        torchexplain_command(*argv), capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == cli.EXIT_USAGE
    assert message.format(port=port) in completed.stderr, completed.stderr
    assert "--skip_predictor_check" in completed.stderr


def test_metadata_declares_the_input_the_explainer_takes(kserve):
    status, answer = get(f"{kserve['base']}/v2/models/toy")
    assert status == 200
    assert answer["inputs"] == [{"name": "rows", "datatype": "FP32", "shape": [-1, 4]}]
    assert answer["outputs"] == [{"name": "explanation", "datatype": "BYTES", "shape": [-1]}]
    assert get(f"{kserve['base']}/v1/models/toy")[1]["inputs"] == answer["inputs"]
    assert get(f"{kserve['base']}/v2/health/ready") == (200, {"ready": True})
    assert get(f"{kserve['base']}/v2/models/toy/ready")[0] == 200
    assert get(f"{kserve['base']}/v2/models/other")[0] == 404
