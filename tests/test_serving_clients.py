"""Our servers against clients nobody here wrote: tritonclient (HTTP, and gRPC in a subprocess),
``requests``, MLServer's own codecs and ``mlserver infer``, Alibi's parser and the kserve SDK (each
in its own environment), all on 127.0.0.1, started and stopped here.

One MLServer for the module (``torchexplain serve``): the census classifier as a ``torch.export``
model (``income``), AnchorTabular explainers querying it over gRPC (``anchor``; ``anchor-alibi``
answering in Alibi's layout; ``anchor-080`` with ``threshold`` 0.8 set server-side; ``anchor-down``
whose model endpoint is down) and Integrated Gradients holding its own exported model (``ig``).
Every answer is compared with the same explainer run in this process.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("mlserver")
tritonclient_http = pytest.importorskip("tritonclient.http")
requests = pytest.importorskip("requests")

from tests import _venvs  # noqa: E402
from tests._servers import (  # noqa: E402
    BIAS,
    WEIGHTS,
    Process,
    export_census_model,
    free_port,
    probabilities,
    torchexplain_command,
    toy_model,
)
from torchexplain import AnchorTabular, IntegratedGradients, load_explainer  # noqa: E402
from torchexplain.alibi_layout import to_alibi_json  # noqa: E402
from torchexplain.datasets import load_census  # noqa: E402
from torchexplain.models.remote import RemoteModelError  # noqa: E402
from torchexplain.serving import RemoteModel  # noqa: E402
from torchexplain.serving.deploy import explainer_model_settings  # noqa: E402
from torchexplain.zoo import pretrained_census_mlp  # noqa: E402

pytestmark = pytest.mark.slow

MAX_ROWS = 64


@pytest.fixture(scope="module")
def census():
    data = load_census()
    model, _ = pretrained_census_mlp()
    return data, model.eval()


@pytest.fixture(scope="module")
def server(census, tmp_path_factory):
    _venvs.start("alibi", "kserve")  # created in the background while this server runs
    data, model = census
    root = tmp_path_factory.mktemp("clients")
    example = torch.from_numpy(data.X_train[:8])
    export_census_model(model, data, root / "income.pt2")
    anchor = AnchorTabular(
        RemoteModel("http://127.0.0.1:9", model_name="income"),
        data.feature_names,
        data.categorical_names,
        seed=0,
        coverage_samples=2000,
    )
    anchor.fit(data.X_train)
    anchor.save(root / "anchor")
    IntegratedGradients(model, n_steps=16).save(root / "ig", example_inputs=example)

    port, grpc_port = free_port(), free_port()
    model_grpc = f"grpc://127.0.0.1:{grpc_port}/v2/models/income"
    repository = root / "repository"
    extra_models = {
        "ig": explainer_model_settings("ig", root / "ig"),
        "anchor-alibi": explainer_model_settings(
            "anchor-alibi", root / "anchor", infer_uri=model_grpc, explanation_format="alibi"
        ),
        "anchor-080": explainer_model_settings(
            "anchor-080", root / "anchor", infer_uri=model_grpc, init_parameters={"threshold": 0.8}
        ),
        "anchor-down": explainer_model_settings(
            "anchor-down",
            root / "anchor",
            infer_uri=f"grpc://127.0.0.1:{free_port()}/v2/models/income",
            infer_timeout=5.0,
        ),
    }
    for name, settings in extra_models.items():
        (repository / name).mkdir(parents=True)
        (repository / name / "model-settings.json").write_text(json.dumps(settings))
    names = ["income", "anchor", *extra_models]
    base = f"http://127.0.0.1:{port}"
    process = Process(
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
            str(grpc_port),
            "--max-rows",
            str(MAX_ROWS),
            "--settings-dir",
            str(repository),
        ),
        [f"{base}/v2/models/{name}/ready" for name in names],
        root / "mlserver.log",
    ).start()
    anchor_local = load_explainer(root / "anchor", model=probabilities(model))
    ig_local = load_explainer(root / "ig")
    yield {
        "base": base,
        "host": f"127.0.0.1:{port}",
        "grpc": f"127.0.0.1:{grpc_port}",
        "root": root,
        "process": process,
        "rows": data.X_test.astype(np.float32),
        "anchor": anchor_local,
        "ig": ig_local,
    }
    process.stop()


def triton_input(rows: np.ndarray, datatype: str = "FP32", binary: bool = False):
    tensor = tritonclient_http.InferInput("rows", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return tensor


def triton_explanations(result) -> list[dict]:
    return [json.loads(text) for text in result.as_numpy("explanation").reshape(-1)]


def in_process(explainer, rows, **settings) -> dict:
    return json.loads(explainer.explain(torch.from_numpy(rows), **settings).to_json())


# -- defect 1: a wrong width is a 400 before anything runs, and the connection stays usable -----


@pytest.mark.parametrize("client", ["tritonclient", "requests"])
@pytest.mark.parametrize("model", ["income", "ig"])
def test_wrong_width_is_a_400_and_ten_good_requests_follow_on_one_connection(server, client, model):
    bad, good = np.zeros((2, 11), np.float32), server["rows"][:2]
    if client == "tritonclient":
        triton = tritonclient_http.InferenceServerClient(server["host"], concurrency=1)
        with pytest.raises(tritonclient_http.InferenceServerException) as info:
            triton.infer(model, [triton_input(bad)])
        assert info.value.status() == "400"
        message = info.value.message()
        answers = [triton.infer(model, [triton_input(good)]) for _ in range(10)]
        assert all(a.get_response()["model_name"] == model for a in answers)
        triton.close()
    else:
        session = requests.Session()
        url = f"{server['base']}/v2/models/{model}/infer"

        def body(rows):
            return {
                "inputs": [
                    {
                        "name": "rows",
                        "shape": list(rows.shape),
                        "datatype": "FP32",
                        "data": rows.reshape(-1).tolist(),
                    }
                ]
            }

        answer = session.post(url, json=body(bad), timeout=60)
        assert answer.status_code == 400
        message = answer.json()["error"]
        statuses = [session.post(url, json=body(good), timeout=60).status_code for _ in range(10)]
        assert statuses == [200] * 10
        # one connection for all eleven: the 400 did not close it
        (pool,) = session.get_adapter(url).poolmanager.pools._container.values()
        assert pool.num_connections == 1
        session.close()
    assert "[2, 11]" in message and "(N, 12)" in message, message
    assert "AssertionError" not in message and "Guard failed" not in message


# -- defect 2: metadata declares what each model takes -------------------------------------------


def test_v2_metadata_declares_inputs_and_outputs(server):
    triton = tritonclient_http.InferenceServerClient(server["host"])
    model = triton.get_model_metadata("income")
    assert model["inputs"] == [{"name": "rows", "datatype": "FP32", "shape": [-1, 12]}]
    assert model["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 2]}]
    for name in ("anchor", "ig", "anchor-alibi"):
        meta = triton.get_model_metadata(name)
        assert meta["inputs"] == [{"name": "rows", "datatype": "FP32", "shape": [-1, 12]}], name
        assert meta["outputs"] == [{"name": "explanation", "datatype": "BYTES", "shape": [-1]}]
    triton.close()


# -- tritonclient over HTTP: explain with per-request parameters, and binary data ----------------


def test_tritonclient_http_explain_with_parameters_equals_in_process(server):
    triton = tritonclient_http.InferenceServerClient(server["host"])
    rows = server["rows"][:3]
    result = triton.infer(
        "ig",
        [triton_input(rows)],
        outputs=[tritonclient_http.InferRequestedOutput("explanation", binary_data=False)],
        parameters={"explain_parameters": json.dumps({"target": [1, 0, 1]})},
    )
    (served,) = triton_explanations(result)
    assert served == in_process(server["ig"], rows, target=[1, 0, 1])
    triton.close()


def test_binary_tensor_data_is_refused_by_mlserver_and_json_data_works(server, census):
    """MLServer 1.7 does not read the binary tensor extension that tritonclient uses by default:
    the README tells users to pass binary_data=False. The server keeps serving after it."""
    triton = tritonclient_http.InferenceServerClient(server["host"])
    rows = server["rows"][:1]
    with pytest.raises(tritonclient_http.InferenceServerException) as info:
        triton.infer("income", [triton_input(rows, binary=True)])
    assert info.value.status() in ("400", "422"), info.value
    result = triton.infer("income", [triton_input(rows)])
    np.testing.assert_array_equal(result.as_numpy("output"), probabilities(census[1])(rows))
    triton.close()


def test_bool_and_quoted_numbers_are_refused_naming_the_datatype(server):
    triton = tritonclient_http.InferenceServerClient(server["host"])
    with pytest.raises(tritonclient_http.InferenceServerException) as info:
        triton.infer("anchor", [triton_input(np.ones((1, 12), bool), "BOOL")])
    assert info.value.status() == "400" and "BOOL" in info.value.message()
    body = {"inputs": [{"name": "rows", "shape": [1, 12], "datatype": "FP32", "data": ["1"] * 12}]}
    answer = requests.post(f"{server['base']}/v2/models/income/infer", json=body, timeout=30)
    assert answer.status_code == 400 and "strings" in answer.json()["error"]
    triton.close()


# -- MLServer's own codecs, and `mlserver infer` -------------------------------------------------


def test_mlserver_codecs_build_the_request_and_read_the_answer(server):
    from mlserver.codecs import NumpyRequestCodec, StringCodec
    from mlserver.types import InferenceResponse

    rows = server["rows"][:2]
    request = NumpyRequestCodec.encode_request(rows)
    request.parameters = request.parameters or type(request.parameters)()
    request.parameters.explain_parameters = json.dumps({"threshold": 0.9})
    answer = requests.post(
        f"{server['base']}/v2/models/anchor/infer", data=request.model_dump_json(), timeout=60
    )
    assert answer.status_code == 200, answer.text
    response = InferenceResponse.model_validate(answer.json())
    (text,) = StringCodec.decode_output(response.outputs[0])
    assert json.loads(text) == in_process(server["anchor"], rows, threshold=0.9)


def test_mlserver_infer_drops_request_parameters_and_init_parameters_set_the_defaults(
    server, tmp_path
):
    """``mlserver infer`` rebuilds each request without its parameters: a threshold sent per request
    is lost, while the one set server-side (init_parameters) holds."""
    rows = server["rows"][:1]
    request = {
        "inputs": [
            {"name": "rows", "shape": [1, 12], "datatype": "FP32", "data": rows[0].tolist()}
        ],
        "parameters": {"explain_parameters": {"threshold": 0.99}},
    }
    (tmp_path / "in.jsonl").write_text(json.dumps(request) + "\n")
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mlserver.cli.main import main; main()",
            "infer",
            "-u",
            server["host"],
            "-m",
            "anchor-080",
            "-i",
            str(tmp_path / "in.jsonl"),
            "-o",
            str(tmp_path / "out.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    (line,) = (tmp_path / "out.jsonl").read_text().splitlines()
    (text,) = json.loads(line)["outputs"][0]["data"]
    served = json.loads(text)
    assert served == in_process(server["anchor"], rows, threshold=0.8)
    assert served["meta"]["params"]["threshold"] == 0.8


# -- gRPC (tritonclient's gRPC client cannot share a process with MLServer's gRPC modules) -------

GRPC_CLIENT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    host, rows_file = sys.argv[1], sys.argv[2]
    rows = np.load(rows_file)
    client = grpcclient.InferenceServerClient(host)

    def tensor(array, datatype="FP32"):
        t = grpcclient.InferInput("rows", list(array.shape), datatype)
        t.set_data_from_numpy(array)
        return t

    def call(model, array, datatype="FP32", parameters=None):
        try:
            result = client.infer(model, [tensor(array, datatype)], parameters=parameters)
        except InferenceServerException as err:
            return {"status": err.status(), "message": err.message()}
        return {"status": "OK", "texts": [t.decode() for t in result.as_numpy("explanation").reshape(-1)]}

    out = {
        "explain": call("anchor", rows[:2], parameters={"explain_parameters": json.dumps({"threshold": 0.9})}),
        "wrong_width": call("anchor", rows[:2, :11]),
        "too_many_rows": call("anchor", np.repeat(rows[:1], 65, 0)),
        "endpoint_down": call("anchor-down", rows[:1]),
        "bool": call("anchor", np.ones((1, 12), bool), "BOOL"),
        "unknown_parameter": call("anchor", rows[:1], parameters={"explain_parameters": json.dumps({"thresh": 1})}),
        "metadata": client.get_model_metadata("income", as_json=True),
    }
    out["after"] = call("anchor", rows[:2], parameters={"explain_parameters": json.dumps({"threshold": 0.9})})
    print(json.dumps(out))
    """
)


def test_tritonclient_grpc_explains_and_bad_requests_get_their_status_codes(server, tmp_path):
    # only looked up here: importing it beside MLServer's gRPC modules fails ("duplicate symbol")
    if importlib.util.find_spec("tritonclient.grpc") is None:
        pytest.skip("tritonclient[grpc] is not installed")
    rows = server["rows"][:2]
    np.save(tmp_path / "rows.npy", server["rows"][:4])
    (tmp_path / "client.py").write_text(GRPC_CLIENT)
    completed = subprocess.run(
        [sys.executable, str(tmp_path / "client.py"), server["grpc"], str(tmp_path / "rows.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    expected = in_process(server["anchor"], rows, threshold=0.9)
    for key in ("explain", "after"):
        assert out[key]["status"] == "OK", out[key]
        assert [json.loads(t) for t in out[key]["texts"]] == [expected]
    codes = {
        "wrong_width": ("StatusCode.INVALID_ARGUMENT", "(N, 12)"),
        "too_many_rows": ("StatusCode.RESOURCE_EXHAUSTED", "at most 64 per request"),
        "endpoint_down": ("StatusCode.UNAVAILABLE", "the model endpoint failed"),
        "bool": ("StatusCode.INVALID_ARGUMENT", "BOOL"),
        "unknown_parameter": ("StatusCode.INVALID_ARGUMENT", "unknown explain parameter"),
    }
    for key, (status, message) in codes.items():
        assert out[key]["status"] == status, (key, out[key])
        assert message in out[key]["message"], (key, out[key])
    inputs = out["metadata"]["inputs"]
    assert inputs == [{"name": "rows", "datatype": "FP32", "shape": ["-1", "12"]}]


def test_remote_model_over_grpc_equals_http_and_the_model(server, census):
    _, model = census
    rows = server["rows"][:300]
    over_grpc = RemoteModel(f"grpc://{server['grpc']}", model_name="income")
    over_http = RemoteModel(server["base"], model_name="income")
    expected = probabilities(model)(rows)
    np.testing.assert_array_equal(over_grpc(rows), over_http(rows))
    np.testing.assert_allclose(over_grpc(rows), expected, rtol=1e-6, atol=1e-7)
    assert over_grpc.metadata()["inputs"][0]["shape"] == [-1, 12]
    with pytest.raises(RemoteModelError, match=r"answered HTTP 400: INVALID_ARGUMENT.*\(N, 12\)"):
        over_grpc(rows[:, :11])
    down = RemoteModel(f"grpc://127.0.0.1:{free_port()}", model_name="income", timeout=5)
    with pytest.raises(RemoteModelError, match="could not be reached: unavailable") as info:
        down(rows[:1])
    assert info.value.status is None and not info.value.timed_out


# -- Alibi's parser, in Alibi's own environment -------------------------------------------------

ALIBI_CHECK = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from alibi.api import defaults
    from alibi.api.interfaces import Explanation
    from alibi.explainers import AnchorTabular

    answers = json.load(open(sys.argv[1]))
    layouts = {
        "AnchorTabular": ("DEFAULT_META_ANCHOR", "DEFAULT_DATA_ANCHOR"),
        "AnchorImage": ("DEFAULT_META_ANCHOR", "DEFAULT_DATA_ANCHOR_IMG"),
        "KernelShap": ("DEFAULT_META_KERNEL_SHAP", "DEFAULT_DATA_KERNEL_SHAP"),
        "TreeShap": ("DEFAULT_META_TREE_SHAP", "DEFAULT_DATA_TREE_SHAP"),
        "IntegratedGradients": ("DEFAULT_META_INTGRAD", "DEFAULT_DATA_INTGRAD"),
        "Counterfactual": ("DEFAULT_META_CF", "DEFAULT_DATA_CF"),
        "CounterfactualProto": ("DEFAULT_META_CFP", "DEFAULT_DATA_CFP"),
    }

    def tree(value, depth=0):
        # the layout's shape: keys and kinds, not values
        if isinstance(value, dict):
            return {k: tree(v, depth + 1) for k, v in value.items()} if depth < 3 else "dict"
        if isinstance(value, list):
            return "list"
        return type(value).__name__

    out = {}
    for method, texts in answers["texts"].items():
        meta_name, data_name = layouts[method]
        parsed = []
        for text in texts:
            exp = Explanation.from_json(text)
            fields = {k: getattr(exp, k) for k in ("anchor", "precision", "coverage", "shap_values",
                      "expected_value", "attributions", "deltas", "cf", "orig_class") if k in exp.data}
            parsed.append({
                "meta_missing": sorted(set(getattr(defaults, meta_name)) - set(exp.meta)),
                "data_keys": sorted(exp.data),
                "alibi_data_keys": sorted(getattr(defaults, data_name)),
                "fields": fields,
                "name": exp.name,
            })
        out[method] = parsed

    # Alibi's own AnchorTabular on the toy model: the layout ours must have
    rng = np.random.default_rng(1)
    train = rng.uniform(-1, 1, (400, 4))
    W = np.array(answers["toy_weights"]); b = np.array(answers["toy_bias"])
    def predict(x):
        logits = x @ W + b
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    alibi = AnchorTabular(predict, ["a", "b", "c", "d"], seed=0).fit(train)
    own = json.loads(alibi.explain(np.array(answers["toy_row"])).to_json())
    out["alibi_anchor_tree"] = tree(own)
    out["ours_anchor_tree"] = tree(json.loads(answers["toy_ours"]))
    print(json.dumps(out, default=str))
    """
)


def _alibi_answers(server, census) -> dict:
    """One answer of every explainer Alibi has, in Alibi's layout: the anchors served, the rest made
    in this process (the layout is the same code either way)."""
    from sklearn.tree import DecisionTreeClassifier

    import torchexplain as te
    from torchexplain.datasets import load_mnist
    from torchexplain.zoo import pretrained_mnist_cnn

    data, model = census
    rows = server["rows"][:2]
    answer = requests.post(
        f"{server['base']}/v2/models/anchor-alibi/infer",
        json={
            "inputs": [
                {
                    "name": "rows",
                    "shape": [2, 12],
                    "datatype": "FP32",
                    "data": rows.reshape(-1).tolist(),
                }
            ]
        },
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    texts = {"AnchorTabular": answer.json()["outputs"][0]["data"]}
    x = torch.from_numpy(rows)
    loan = probabilities(model)
    shap = te.KernelShap(loan, feature_names=data.feature_names, seed=0).fit(data.X_train[:20])
    texts["KernelShap"] = to_alibi_json(shap.explain(x), x)
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(
        data.X_train[:500], data.y_train[:500]
    )
    texts["TreeShap"] = to_alibi_json(te.TreeShap(tree).fit().explain(x), x)
    texts["IntegratedGradients"] = to_alibi_json(
        te.IntegratedGradients(model, n_steps=8).explain(x, target=[1, 0]), x
    )
    cnn, _ = pretrained_mnist_cnn()
    digit = load_mnist("test").images[:1]
    texts["Counterfactual"] = to_alibi_json(
        te.Counterfactual(cnn, max_iter=20, max_lam_steps=2).explain(digit), digit
    )
    proto = te.CounterfactualProto(cnn, max_iterations=20, c_steps=1, use_kdtree=True)
    proto.fit(load_mnist("train").images[:50])
    texts["CounterfactualProto"] = to_alibi_json(proto.explain(digit), digit)
    texts["AnchorImage"] = to_alibi_json(
        te.AnchorImage(cnn, seed=0, coverage_samples=200, n_covered_ex=2).explain(digit), digit
    )
    toy_row = np.random.default_rng(2).uniform(-1, 1, (1, 4))
    ours = AnchorTabular(toy_model, ["a", "b", "c", "d"], seed=0).fit(
        np.random.default_rng(1).uniform(-1, 1, (400, 4))
    )
    (toy_ours,) = to_alibi_json(ours.explain(toy_row), toy_row)
    return {
        "texts": texts,
        "toy_weights": WEIGHTS.tolist(),
        "toy_bias": BIAS.tolist(),
        "toy_row": toy_row[0].tolist(),
        "toy_ours": toy_ours,
    }


def test_alibi_parses_the_alibi_format_into_alibis_fields(server, census, tmp_path):
    python = _venvs.ready("alibi")
    if isinstance(python, str):
        pytest.skip(python)
    answers = _alibi_answers(server, census)
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    (tmp_path / "check.py").write_text(ALIBI_CHECK)
    completed = subprocess.run(
        [str(python), str(tmp_path / "check.py"), str(tmp_path / "answers.json")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    for method, parsed in out.items():
        if method.endswith("_tree"):
            continue
        for one in parsed:
            assert one["name"] == method
            assert one["meta_missing"] == [], (method, one["meta_missing"])
            expected_keys = set(one["alibi_data_keys"]) | (
                {"target"} if method == "IntegratedGradients" else set()
            )
            assert set(one["data_keys"]) == expected_keys, (method, one["data_keys"])
    # the anchors served for two rows: one Alibi explanation each, numbers as in-process
    local = server["anchor"].explain(torch.from_numpy(server["rows"][:2]))
    for i, one in enumerate(out["AnchorTabular"]):
        assert one["fields"]["anchor"] == local.anchor[i]
        assert one["fields"]["precision"] == pytest.approx(float(local.precision[i]))
        assert one["fields"]["coverage"] == pytest.approx(float(local.coverage[i]))
    (shap,) = out["KernelShap"]
    assert np.asarray(shap["fields"]["shap_values"]).shape == (2, 2, 12)  # per class: (N, M)
    (ig,) = out["IntegratedGradients"]
    assert np.asarray(ig["fields"]["attributions"]).shape == (1, 2, 12)  # one input: (N, M)
    # our layout of a toy anchor has the tree of Alibi's own AnchorTabular answer: the same keys and
    # kinds everywhere; meta.params holds Alibi's keys, then torchexplain's other settings
    ours, alibi = out["ours_anchor_tree"], out["alibi_anchor_tree"]
    ours_params, alibi_params = ours["meta"].pop("params"), alibi["meta"].pop("params")
    assert list(ours_params)[: len(alibi_params)] == list(alibi_params)
    assert ours == alibi


# -- the kserve SDK against `torchexplain kserve` in front of a real KServe ModelServer ----------

KSERVE_PREDICTOR = textwrap.dedent(
    """
    import sys
    import numpy as np
    import uvicorn
    import kserve

    # KServe's ModelServer listens on 0.0.0.0 with no option; the tests listen on 127.0.0.1 only
    _config = uvicorn.Config
    uvicorn.Config = lambda *a, **k: _config(*a, **{{**k, "host": "127.0.0.1"}})

    W = np.array({weights}); b = np.array({bias})

    class Toy(kserve.Model):
        def __init__(self):
            super().__init__("toy")
            self.ready = True

        def predict(self, payload, headers=None, response_headers=None):
            x = np.asarray(payload["instances"], dtype=np.float64)
            logits = np.stack([row @ W + b for row in x])
            e = np.exp(logits - logits.max(1, keepdims=True))
            return {{"predictions": (e / e.sum(1, keepdims=True)).tolist()}}

    kserve.ModelServer(http_port=int(sys.argv[1]), enable_grpc=False, workers=1).start([Toy()])
    """
)

KSERVE_CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from kserve import InferenceRESTClient, RESTConfig

    base, rows = sys.argv[1], json.loads(sys.argv[2])

    async def main():
        v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
        v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
        out = {
            "live": await v1.is_server_live(base),
            "model_ready_v1": await v1.is_model_ready(base, "toy"),
            "server_ready_v2": await v2.is_server_ready(base),
            "model_ready_v2": await v2.is_model_ready(base, "toy"),
            "explanation": await v1.explain(base, "toy", {"instances": rows}),
        }
        try:
            await v1.explain(base, "toy", {"instances": [[0.0, 0.0, 0.0]]})
        except Exception as err:
            out["bad"] = str(err)
        await v1.close(); await v2.close()
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def test_kserve_sdk_explains_through_torchexplain_kserve_in_front_of_a_kserve_predictor(tmp_path):

    python = _venvs.ready("kserve")
    if isinstance(python, str):
        pytest.skip(python)
    features = ["a", "b", "c", "d"]
    train = np.random.default_rng(1).uniform(-1, 1, (400, 4))
    rows = np.random.default_rng(2).uniform(-1, 1, (2, 4))
    AnchorTabular(toy_model, features, seed=3, coverage_samples=1000).fit(train).save(
        tmp_path / "e"
    )
    (tmp_path / "predictor.py").write_text(
        KSERVE_PREDICTOR.format(weights=WEIGHTS.tolist(), bias=BIAS.tolist())
    )
    (tmp_path / "client.py").write_text(KSERVE_CLIENT)
    predictor_port, port = free_port(), free_port()
    predictor = Process(
        [str(python), str(tmp_path / "predictor.py"), str(predictor_port)],
        [f"http://127.0.0.1:{predictor_port}/v1/models/toy"],
        tmp_path / "predictor.log",
    )
    explainer = Process(
        torchexplain_command(
            "kserve",
            "--model_name",
            "toy",
            "--predictor_host",
            f"127.0.0.1:{predictor_port}",
            "--http_port",
            str(port),
            "--host",
            "127.0.0.1",
            "--storage_uri",
            str(tmp_path / "e"),
        ),
        [f"http://127.0.0.1:{port}/v1/models/toy"],
        tmp_path / "kserve.log",
    )
    with predictor:
        with explainer:
            completed = subprocess.run(
                [
                    str(python),
                    str(tmp_path / "client.py"),
                    f"http://127.0.0.1:{port}",
                    json.dumps(rows.tolist()),
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    assert (
        out["live"] and out["model_ready_v1"] and out["server_ready_v2"] and out["model_ready_v2"]
    )
    local = load_explainer(tmp_path / "e", model=toy_model).explain(rows)
    assert out["explanation"] == json.loads(local.to_json())
    assert "400" in out["bad"] and "(N, 4)" in out["bad"]
