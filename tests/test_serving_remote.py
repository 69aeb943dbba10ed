"""RemoteModel against live local servers of each protocol (127.0.0.1, started and stopped here)."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
import torch

from tests._servers import toy_model, toy_server
from torchexplain import KernelShap, load_explainer
from torchexplain.serving import RemoteModel, RemoteModelError

pytest.importorskip("urllib3")


@pytest.fixture(scope="module")
def server():
    with toy_server() as httpd:
        yield httpd


def base(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


ROWS = np.random.default_rng(0).uniform(-1, 1, size=(10, 4))


@pytest.mark.parametrize(
    ("protocol", "kwargs"),
    [
        ("v2", {"model_name": "toy", "output_name": "proba"}),
        ("kserve_v1", {"model_name": "toy"}),
        ("seldon_v1", {}),
    ],
)
def test_each_protocol_returns_the_models_outputs(server, protocol, kwargs):
    model = RemoteModel(base(server), protocol=protocol, batch_size=4, **kwargs)
    before = len(server.log)
    out = model(ROWS)
    assert isinstance(out, np.ndarray) and out.shape == (10, 3)
    np.testing.assert_array_equal(out, toy_model(ROWS))  # JSON carries float64 exactly
    posts = [entry for entry in server.log[before:] if entry[0] == "POST"]
    assert len(posts) == 3  # 10 rows in pieces of 4
    assert len({port for _, _, port in server.log[before:]}) == 1  # one pooled connection
    as_tensor = model(torch.from_numpy(ROWS))
    assert isinstance(as_tensor, torch.Tensor)
    torch.testing.assert_close(as_tensor, torch.from_numpy(toy_model(ROWS)), rtol=0, atol=0)


def test_full_endpoint_urls_and_v2_first_output(server):
    v2 = RemoteModel(f"{base(server)}/v2/models/toy/infer")
    assert v2.model_name == "toy" and v2.metadata()["inputs"][0]["name"] == "rows"
    np.testing.assert_array_equal(v2(ROWS), toy_model(ROWS).argmax(1))  # the first output: labels
    v1 = RemoteModel(f"{base(server)}/v1/models/toy:predict", protocol="kserve_v1")
    np.testing.assert_array_equal(v1(ROWS), toy_model(ROWS))


def test_http_errors_name_the_url_status_and_message(server):
    broken = RemoteModel(base(server), protocol="kserve_v1", model_name="broken")
    with pytest.raises(
        RemoteModelError, match=r"broken:predict answered HTTP 500: model crashed"
    ) as info:
        broken(ROWS)
    assert info.value.status == 500
    with pytest.raises(RemoteModelError, match="HTTP 404: no model at /v2/models/nothing"):
        RemoteModel(base(server), model_name="nothing")(ROWS)
    with pytest.raises(RemoteModelError, match="not a kserve_v1 response"):
        RemoteModel(base(server), protocol="kserve_v1", model_name="odd")(ROWS)
    with pytest.raises(RemoteModelError, match="returned 1 rows for 10 inputs"):
        RemoteModel(base(server), protocol="kserve_v1", model_name="short")(ROWS)
    with pytest.raises(RemoteModelError, match="no output named 'nope'"):
        RemoteModel(base(server), model_name="toy", output_name="nope")(ROWS)
    # The server still answers after all of that.
    np.testing.assert_array_equal(
        RemoteModel(base(server), protocol="seldon_v1")(ROWS), toy_model(ROWS)
    )


def test_a_slow_model_times_out_once_without_a_second_prediction(server):
    slow = RemoteModel(
        base(server), protocol="kserve_v1", model_name="slow", timeout=0.3, retries=2
    )
    before = len(server.log)
    start = time.perf_counter()
    with pytest.raises(
        RemoteModelError, match=r"slow:predict did not answer: no answer within 0.3 s"
    ) as info:
        slow(ROWS[:2])
    assert info.value.timed_out and info.value.status is None
    assert time.perf_counter() - start < 1.2
    assert sum(1 for entry in server.log[before:] if entry[0] == "POST") == 1


def test_an_endpoint_that_is_down_is_a_clear_error_not_a_hang():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = RemoteModel(
        f"http://127.0.0.1:{port}", protocol="kserve_v1", model_name="toy", timeout=1.0, retries=1
    )
    start = time.perf_counter()
    with pytest.raises(
        RemoteModelError, match=rf"127.0.0.1:{port}.*could not be reached.*after 1 retries"
    ) as info:
        down(ROWS)
    assert info.value.status is None and time.perf_counter() - start < 5


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"url": "127.0.0.1:8080"}, ValueError, "http://"),
        ({"protocol": "grpc"}, ValueError, "protocol"),
        ({"protocol": "v2"}, ValueError, "needs model_name"),
        ({"protocol": "kserve_v1"}, ValueError, "needs model_name"),
        ({"protocol": "seldon_v1", "batch_size": 0}, ValueError, "batch_size"),
        ({"protocol": "seldon_v1", "timeout": 0}, ValueError, "timeout"),
        ({"protocol": "seldon_v1", "headers": {"a": 1}}, TypeError, "headers"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        RemoteModel(**{"url": "http://127.0.0.1:1", **kwargs})


def test_bad_batches_are_refused_before_sending():
    model = RemoteModel("http://127.0.0.1:1", protocol="seldon_v1")
    with pytest.raises(TypeError, match="numpy array or a tensor"):
        model([[0.0] * 4])
    with pytest.raises(ValueError, match="NaN"):
        model(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="N >= 1"):
        model(np.zeros((0, 4)))


def test_a_black_box_explainer_gives_the_in_process_result_and_saves_the_address(server, tmp_path):
    background = np.random.default_rng(1).uniform(-1, 1, size=(6, 4))
    local = KernelShap(toy_model, seed=0).fit(torch.from_numpy(background))
    remote_model = RemoteModel(
        base(server), protocol="v2", model_name="toy", output_name="proba", batch_size=64
    )
    remote = KernelShap(remote_model, seed=0).fit(torch.from_numpy(background))
    x = torch.from_numpy(ROWS[:3])
    expected, got = local.explain(x), remote.explain(x)
    torch.testing.assert_close(got.shap_values, expected.shap_values, rtol=1e-12, atol=1e-12)

    remote.save(tmp_path / "shap")
    loaded = load_explainer(tmp_path / "shap")  # the predictor is the saved address
    assert (
        isinstance(loaded.predictor, RemoteModel)
        and loaded.predictor.config() == remote_model.config()
    )
    torch.testing.assert_close(
        loaded.explain(x).shap_values, expected.shap_values, rtol=1e-12, atol=1e-12
    )


def test_a_tampered_remote_address_is_refused_at_load(tmp_path):
    explainer = KernelShap(RemoteModel("http://127.0.0.1:1", protocol="seldon_v1"), seed=0)
    explainer.fit(torch.zeros(2, 4, dtype=torch.float64))
    folder = explainer.save(tmp_path / "shap")
    config = json.loads((folder / "explainer.json").read_text())
    assert config["model"]["format"] == "remote" and config["model"]["url"] == "http://127.0.0.1:1"
    config["model"]["command"] = "rm -rf /"
    (folder / "explainer.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unknown remote model keys \['command'\]"):
        load_explainer(folder)
    config["model"].pop("command")
    config["model"]["url"] = "file:///etc/passwd"
    (folder / "explainer.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="remote model is not valid: url must be an http"):
        load_explainer(folder)


def test_auto_batch_size_sends_about_a_quarter_million_numbers_per_request(server):
    model = RemoteModel(base(server), protocol="kserve_v1", model_name="toy")
    assert model.batch_size == "auto"
    assert model.rows_per_request(np.zeros((5, 4))) == 2**18 // 4
    assert model.rows_per_request(np.zeros((5, 1, 28, 28))) == 2**18 // 784
    assert model.rows_per_request(np.zeros((5, 2**19))) == 1
    before = len(server.log)
    np.testing.assert_array_equal(model(ROWS), toy_model(ROWS))
    assert sum(1 for entry in server.log[before:] if entry[0] == "POST") == 1
    assert RemoteModel(base(server), protocol="seldon_v1", batch_size=3).rows_per_request(ROWS) == 3
