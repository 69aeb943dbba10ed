"""ExplainerService without a server: request checks, per-request settings, error statuses, loading options.

The live servers (tests/test_serving_mlserver.py, tests/test_serving_kserve.py) send
these through HTTP; here each rule is checked directly against the explainer's own
answer or error.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests._servers import toy_model
from tests.conftest import TOLERANCES
from torchexplain import AnchorTabular, IntegratedGradients
from torchexplain.serving import ExplainerService, RemoteModelError, ServiceError
from torchexplain.serving.deploy import explainer_model_settings, write_repository
from torchexplain.serving.service import service_options

FEATURES = ["a", "b", "c", "d"]
TRAIN = np.random.default_rng(1).uniform(-1, 1, size=(300, 4))
ROWS = np.random.default_rng(2).uniform(-1, 1, size=(3, 4))


@pytest.fixture
def anchor():
    return AnchorTabular(toy_model, FEATURES, seed=5, coverage_samples=500).fit(TRAIN)


def test_every_row_is_explained_by_default_and_first_only_on_request(anchor):
    expected = json.loads(anchor.explain(ROWS).to_json())
    assert json.loads(ExplainerService(anchor).explain_json(ROWS.tolist())) == expected
    first = json.loads(ExplainerService(anchor, rows="first").explain_json(ROWS))
    assert first == json.loads(anchor.explain(ROWS[:1]).to_json())
    one_row = json.loads(ExplainerService(anchor).explain_json(ROWS[0].tolist()))  # (C,) is one row
    assert one_row == json.loads(anchor.explain(ROWS[:1]).to_json())


def test_explain_parameters_as_object_or_json_string_and_defaults(anchor):
    service = ExplainerService(anchor, explain_parameters={"threshold": 0.8})
    expected = json.loads(anchor.explain(ROWS, threshold=0.8).to_json())
    assert json.loads(service.explain_json(ROWS)) == expected
    assert json.loads(service.explain_json(ROWS, '{"threshold": 0.8}')) == expected
    assert json.loads(service.explain_json(ROWS, "")) == expected
    overridden = json.loads(service.explain_json(ROWS, {"threshold": 0.9}))
    assert overridden == json.loads(anchor.explain(ROWS, threshold=0.9).to_json())


@pytest.mark.parametrize(
    ("inputs", "parameters", "status", "match"),
    [
        ([[0, 0], [0, 0, 0, 0]], None, 400, "not a rectangular array"),
        ([["a", "b", "c", "d"]], None, 400, "must be numbers"),
        (3.0, None, 400, "got a single number"),
        (np.zeros((0, 4)), None, 400, "empty"),
        (
            np.full((1, 4), np.nan),
            None,
            400,
            r"non-finite value\(s\) \(NaN or inf\), the first at index \(0, 0\)",
        ),
        (np.zeros((11, 4)), None, 413, "holds 11 rows; this server explains at most 10"),
        (
            np.zeros((1, 5)),
            None,
            400,
            r"the inputs have shape \[1, 5\]; AnchorTabular takes \(N, 4\)",
        ),
        (
            np.zeros((1, 4, 1)),
            None,
            400,
            r"the inputs have shape \[1, 4, 1\]; AnchorTabular takes \(N, 4\)",
        ),
        (np.ones((1, 4), dtype=bool), None, 400, "must be numbers .*got booleans"),
        ([["1.5", "2", "3", "4"]], None, 400, "must be numbers"),
        (ROWS, {"explanation_format": "shap"}, 400, "explanation_format must be one of"),
        (
            ROWS,
            {"thresh": 1},
            400,
            r"unknown explain parameter\(s\) \['thresh'\]; AnchorTabular takes explanation_format, batch_size",
        ),
        (ROWS, "[1, 2]", 400, "explain_parameters must be a JSON object"),
        (ROWS, "{oops", 400, "explain_parameters is a string but not JSON"),
        (ROWS, {"threshold": "high"}, 400, "threshold"),
        (
            ROWS,
            {"seed": 1},
            400,
            "unknown explain parameter",
        ),  # fixed at build time, not per request
    ],
)
def test_bad_requests_are_service_errors_with_a_status(anchor, inputs, parameters, status, match):
    with pytest.raises(ServiceError, match=match) as info:
        ExplainerService(anchor, max_rows=10).explain(inputs, parameters)
    assert info.value.status == status


def test_model_endpoint_failures_are_502_and_timeouts_504(anchor):
    def down(rows):
        raise RemoteModelError("http://m/infer", None, "connection refused (after 2 retries)")

    def slow(rows):
        raise RemoteModelError("http://m/infer", None, "no answer within 1 s", timed_out=True)

    def broken(rows):
        raise ZeroDivisionError("oops")

    for predictor, status, match in (
        (down, 502, "could not be reached"),
        (slow, 504, "did not answer"),
        (broken, 500, "ZeroDivisionError: oops"),
    ):
        with pytest.raises(ServiceError, match=match) as info:
            ExplainerService(anchor.with_model(predictor)).explain(ROWS)
        assert info.value.status == status


def test_white_box_rows_become_the_models_dtype_and_run_one_at_a_time():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).double()
    ig = IntegratedGradients(model, n_steps=8)
    service = ExplainerService(ig, max_concurrency=8)
    assert service.max_concurrency == 1
    answer = json.loads(service.explain_json(ROWS.tolist(), {"target": [0, 1, 2]}))
    expected = json.loads(ig.explain(torch.from_numpy(ROWS), target=[0, 1, 2]).to_json())
    assert answer == expected and answer["data"]["attributions"]["dtype"] == "float64"


def test_service_options_refuse_unknown_keys_and_bad_values():
    assert service_options({})["rows"] == "all"
    assert service_options({"init_parameters": '{"device": "cpu"}'})["init_parameters"] == {
        "device": "cpu"
    }
    with pytest.raises(ValueError, match=r"unknown explainer setting\(s\) \['row'\]"):
        service_options({"row": "all"})
    with pytest.raises(ValueError, match="explainer_type 'anchors' is not one of"):
        service_options({"explainer_type": "anchors"})
    with pytest.raises(ValueError, match="rows"):
        service_options({"rows": "some"})
    with pytest.raises(TypeError, match="init_parameters must be a JSON object"):
        service_options({"init_parameters": [1]})


def test_from_folder_replaces_the_saved_address_and_checks_the_type(anchor, tmp_path):
    anchor.save(tmp_path / "a")
    service = ExplainerService.from_folder(
        tmp_path / "a",
        infer_uri="http://127.0.0.1:9/v1/models/m:predict",
        infer_protocol="kserve_v1",
        infer_timeout=2,
        rows="first",
    )
    assert service.explainer.model.endpoint == "http://127.0.0.1:9/v1/models/m:predict"
    assert service.explainer.model.timeout == 2.0 and service.rows == "first"
    named = ExplainerService.from_folder(
        tmp_path / "a", model=toy_model, explainer_type="AnchorTabular"
    )
    assert named.explainer.name == "AnchorTabular" and named.explainer.model is toy_model
    with pytest.raises(ValueError, match="explainer_type is 'kernel_shap'"):
        ExplainerService.from_folder(tmp_path / "a", explainer_type="kernel_shap")


def test_write_repository_writes_what_mlserver_reads(anchor, tmp_path):
    anchor.save(tmp_path / "a")
    linear = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    program = torch.export.export(
        linear, (torch.zeros(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(tmp_path / "m.pt2"))
    repo = write_repository(
        tmp_path / "a",
        tmp_path / "repo",
        name="expl",
        http_port=9000,
        grpc_port=9001,
        model_path=tmp_path / "m.pt2",
        model_name="m",
        rows="first",
    )
    server = json.loads((repo / "settings.json").read_text())
    assert server["parallel_workers"] == 0 and server["http_port"] == 9000
    explainer = json.loads((repo / "expl" / "model-settings.json").read_text())
    assert explainer["parameters"]["extra"] == {
        "rows": "first",
        "infer_uri": "grpc://127.0.0.1:9001/v2/models/m",
    }
    # what a v2 client discovers (GET /v2/models/{name}): the program's spec, the explainer's columns
    assert explainer["inputs"] == [{"name": "rows", "datatype": "FP32", "shape": [-1, 4]}]
    assert explainer["outputs"] == [{"name": "explanation", "datatype": "BYTES", "shape": [-1]}]
    model = json.loads((repo / "m" / "model-settings.json").read_text())
    assert model["implementation"].endswith("TorchModelRuntime")
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert model["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]
    (tmp_path / "bad.pt2").write_bytes(b"")
    with pytest.raises(ValueError, match="bad.pt2"):
        write_repository(tmp_path / "a", tmp_path / "r4", model_path=tmp_path / "bad.pt2")
    with pytest.raises(ValueError, match="must differ"):
        write_repository(tmp_path / "a", tmp_path / "r2", http_port=9000, grpc_port=9000)
    with pytest.raises(ValueError, match="no explainer.json"):
        write_repository(tmp_path, tmp_path / "r3")
    with pytest.raises(ValueError, match="unknown explainer setting"):
        explainer_model_settings("x", tmp_path / "a", colour="red")


def test_the_documented_model_settings_are_valid():
    """examples/deploy/income-explainer/model-settings.json: what the README shows, checked."""
    from pathlib import Path

    path = (
        Path(__file__).parent.parent
        / "examples"
        / "deploy"
        / "income-explainer"
        / "model-settings.json"
    )
    settings = json.loads(path.read_text())
    assert settings["implementation"] == "torchexplain.serving.runtime.ExplainerRuntime"
    options = service_options(settings["parameters"]["extra"])
    assert options["explainer_type"] == "anchor_tabular" and options["rows"] == "all"
    mlserver = pytest.importorskip("mlserver.settings")
    parsed = mlserver.ModelSettings(**{**settings, "implementation": settings["implementation"]})
    assert parsed.parameters.extra["infer_uri"].endswith("/v2/models/income/infer")


def test_serve_command_reports_a_bad_folder_in_one_line(tmp_path, capsys):
    from torchexplain import cli

    assert cli.main(["serve", str(tmp_path), "--write-only"]) == cli.EXIT_USAGE
    assert "no explainer.json" in capsys.readouterr().err


def test_serve_command_write_only_writes_the_settings(anchor, tmp_path, capsys):
    from torchexplain import cli

    anchor.save(tmp_path / "a")
    code = cli.main(
        [
            "serve",
            str(tmp_path / "a"),
            "--infer-uri",
            "http://127.0.0.1:9/v2/models/m/infer",
            "--name",
            "expl",
            "--settings-dir",
            str(tmp_path / "repo"),
            "--init-parameters",
            '{"threshold": 0.8}',
            "--explanation-format",
            "alibi",
            "--write-only",
        ]
    )
    assert code == cli.EXIT_OK
    settings = json.loads((tmp_path / "repo" / "expl" / "model-settings.json").read_text())
    assert settings["parameters"]["extra"] == {
        "rows": "all",
        "max_rows": 1024,
        "init_parameters": '{"threshold": 0.8}',
        "explanation_format": "alibi",
        "infer_uri": "http://127.0.0.1:9/v2/models/m/infer",
    }
    # and the service MLServer builds from them uses both
    service = ExplainerService.from_folder(tmp_path / "a", **settings["parameters"]["extra"])
    assert service.explainer.settings.threshold == 0.8 and service.explanation_format == "alibi"
    assert str(tmp_path / "repo") in capsys.readouterr().out


def test_the_docstring_examples_run():
    import doctest

    import torchexplain.serving.service as module

    failures, tried = doctest.testmod(module)
    assert tried >= 5 and failures == 0


def test_load_runs_where_the_explanations_will(anchor, tmp_path, monkeypatch):
    """Every thread that runs torch ops slows the process's later torch calls, so a server loads an
    explainer on the thread(s) that explain with it: its own pool (black-box), the torch thread (white-box)."""
    import threading

    anchor.save(tmp_path / "a")
    IntegratedGradients(torch.nn.Linear(4, 3), n_steps=4).save(
        tmp_path / "ig", example_inputs=torch.zeros(2, 4)
    )
    loaded_on = {}
    original = ExplainerService.from_folder.__func__

    def recording(cls, path, model=None, **extra):
        service = original(cls, path, model=toy_model if path.name == "a" else model, **extra)
        loaded_on[path.name] = threading.current_thread().name
        return service

    monkeypatch.setattr(ExplainerService, "from_folder", classmethod(recording))
    black = ExplainerService.load(tmp_path / "a")
    white = ExplainerService.load(tmp_path / "ig")
    assert loaded_on["a"].startswith("torchexplain-explain") and loaded_on["ig"].startswith(
        "torchexplain-torch"
    )
    ran_on = black.executor().submit(lambda: threading.current_thread().name).result()
    assert ran_on == loaded_on["a"]
    assert (
        white.executor().submit(lambda: threading.current_thread().name).result() == loaded_on["ig"]
    )
    assert json.loads(black.explain_json(ROWS)) == json.loads(anchor.explain(ROWS).to_json())
    black.close()


def test_a_white_box_folder_saved_without_its_model_takes_model_uri(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    ig = IntegratedGradients(model, n_steps=8)
    ig.save(tmp_path / "ig")  # settings only
    program = torch.export.export(
        model, (torch.zeros(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(tmp_path / "ig" / "net.pt2"))
    rows = torch.from_numpy(ROWS).float()
    expected = json.loads(ig.explain(rows, target=[0, 1, 2]).to_json())
    for uri in ("net.pt2", str(tmp_path / "ig" / "net.pt2")):  # relative to the folder, or absolute
        service = ExplainerService.from_folder(tmp_path / "ig", model_uri=uri)
        answer = json.loads(service.explain_json(rows.numpy(), {"target": [0, 1, 2]}))
        torch.testing.assert_close(
            torch.tensor(answer["data"]["attributions"]["data"]),
            torch.tensor(expected["data"]["attributions"]["data"]),
            rtol=TOLERANCES[torch.float32][0],
            atol=TOLERANCES[torch.float32][1],
        )
    with pytest.raises(ValueError, match="was not saved with the explainer"):
        ExplainerService.from_folder(tmp_path / "ig")
    with pytest.raises(ValueError, match="not both"):
        ExplainerService.from_folder(
            tmp_path / "ig", model_uri="net.pt2", infer_uri="http://127.0.0.1:9"
        )


def test_model_uri_is_refused_for_a_black_box_folder(anchor, tmp_path):
    anchor.save(tmp_path / "a")
    with pytest.raises(ValueError, match="calls a model endpoint"):
        ExplainerService.from_folder(tmp_path / "a", model_uri="m.pt2")
