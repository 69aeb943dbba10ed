"""AnchorText served: texts in as v2 BYTES (MLServer) and v1 ``instances`` of strings (KServe), the
explainer's samples sent to a model of text over HTTP; answers equal the in-process explainer."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

pytest.importorskip("urllib3")

from tests._servers import (  # noqa: E402
    Process,
    free_port,
    post_json,
    torchexplain_command,
    toy_server,
    toy_text_model,
)
from torchexplain import AnchorText, load_explainer  # noqa: E402
from torchexplain.serving import RemoteModel  # noqa: E402

TEXTS = ["A good film with a great cast.", "Dull and bad, though the music is good."]


def texts_body(texts: list[str], explain_parameters=None) -> dict:
    body = {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    if explain_parameters is not None:
        body["parameters"] = {"explain_parameters": explain_parameters}
    return body


@pytest.fixture(scope="module")
def words():
    with toy_server() as httpd:
        yield httpd


@pytest.fixture(scope="module")
def saved(words, tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    explainer = AnchorText(
        RemoteModel("http://127.0.0.1:9", model_name="words"), seed=0, coverage_samples=1000
    )
    explainer.save(root / "explainer")
    return root


def test_remote_model_sends_texts_as_v2_bytes_and_v1_strings(words):
    base = f"http://127.0.0.1:{words.server_address[1]}"
    want = toy_text_model(TEXTS)
    for protocol in ("v2", "kserve_v1"):
        model = RemoteModel(base, protocol=protocol, model_name="words", batch_size=1)
        np.testing.assert_allclose(model(TEXTS), want)
    with pytest.raises(TypeError, match="non-empty list of texts"):
        RemoteModel(base, model_name="words")([3, "fine"])
    with pytest.raises(ValueError, match="takes FP64, not texts"):
        RemoteModel(base, model_name="toy")(TEXTS)


@pytest.mark.slow
def test_mlserver_explains_bytes_inputs_as_the_in_process_explainer(words, saved):
    pytest.importorskip("mlserver")
    port, grpc = free_port(), free_port()
    infer = f"http://127.0.0.1:{words.server_address[1]}/v2/models/words/infer"
    base = f"http://127.0.0.1:{port}"
    server = Process(
        torchexplain_command(
            "serve",
            str(saved / "explainer"),
            "--infer-uri",
            infer,
            "--name",
            "text",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--grpc-port",
            str(grpc),
            "--settings-dir",
            str(saved / "repository"),
        ),
        [f"{base}/v2/models/text/ready"],
        saved / "mlserver.log",
    ).start()
    try:
        local = load_explainer(saved / "explainer", model=toy_text_model)
        status, answer = post_json(f"{base}/v2/models/text/infer", texts_body(TEXTS))
        assert status == 200, answer
        (output,) = answer["outputs"]
        assert json.loads(output["data"][0]) == json.loads(local.explain(TEXTS).to_json())
        # per-request settings, and Alibi's layout (one answer per text)
        status, answer = post_json(
            f"{base}/v2/models/text/infer",
            texts_body(TEXTS, '{"threshold": 0.9, "explanation_format": "alibi"}'),
        )
        assert status == 200, answer
        alibi = [json.loads(t) for t in answer["outputs"][0]["data"]]
        want = local.explain(TEXTS, threshold=0.9)
        assert [a["data"]["anchor"] for a in alibi] == want.anchor
        assert alibi[1]["data"]["raw"]["instance"] == TEXTS[1]
        # the metadata says texts; numbers are refused with a 400 and the server keeps serving
        with urllib.request.urlopen(f"{base}/v2/models/text", timeout=10) as reply:
            meta = json.loads(reply.read())
        assert meta["inputs"] == [{"name": "rows", "datatype": "BYTES", "shape": [-1]}]
        status, answer = post_json(
            f"{base}/v2/models/text/infer",
            {"inputs": [{"name": "text", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]},
        )
        assert status == 400 and "send them as BYTES" in answer["error"]
        status, _ = post_json(f"{base}/v2/models/text/infer", texts_body(TEXTS[:1]))
        assert status == 200
    finally:
        server.stop()


@pytest.mark.slow
def test_kserve_explains_instances_of_strings_as_the_in_process_explainer(words, saved):
    pytest.importorskip("starlette")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = Process(
        torchexplain_command(
            "kserve",
            "--model_name",
            "words",
            "--predictor_host",
            f"127.0.0.1:{words.server_address[1]}",
            "--http_port",
            str(port),
            "--host",
            "127.0.0.1",
            "--storage_uri",
            str(saved / "explainer"),
        ),
        [f"{base}/v1/models/words"],
        saved / "kserve.log",
        timeout=60,
    ).start()
    try:
        status, answer = post_json(f"{base}/v1/models/words:explain", {"instances": TEXTS})
        assert status == 200, answer
        local = load_explainer(saved / "explainer", model=toy_text_model)
        assert answer == json.loads(local.explain(TEXTS).to_json())
        status, answer = post_json(f"{base}/v1/models/words:explain", {"instances": [[1, 2]]})
        assert status == 400 and "item 0 is list" in answer["error"]
    finally:
        process.stop()
