"""The loan demo end to end: a census income classifier and its AnchorTabular explainer, each served by MLServer.

1. trains the small loan classifier on the bundled census table (or loads it from the cache)
   and exports it as a ``torch.export`` program (``income.pt2``: no pickled code);
2. fits an AnchorTabular explainer whose predictor is the *served* model's endpoint
   (``RemoteModel`` over gRPC: every sample batch the search draws is one request, its
   rows as raw bytes) and saves it;
3. ``torchexplain serve`` writes the MLServer settings and starts one MLServer on
   127.0.0.1 with two models: ``income`` (the classifier) and ``income-explainer``;
4. sends explain requests over HTTP, as ``curl`` would (the command is printed), prints
   each anchor with its precision and coverage, checks that the served answer equals
   the same explainer run in this process, and stops the server.

Everything runs on localhost, offline, on a CPU. Output: ``serve_loan.json`` (the
answers) and ``serve_loan.png`` (the anchors as precision/coverage bars) in the output
folder, plus the MLServer settings it wrote (``repository/``) and the server's log.

Run: ``python examples/serve_loan.py [out_dir] [--port 8080]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import torchexplain
from torchexplain.datasets import load_census
from torchexplain.serving import RemoteModel
from torchexplain.serving.local import (
    Process,
    explain_request_body,
    free_port,
    post_json,
    torchexplain_command,
)
from torchexplain.visualize import save_bar_chart
from torchexplain.zoo import pretrained_census_mlp

MODEL, EXPLAINER = "income", "income-explainer"


def pick_rows(data, model) -> list[int]:
    """Rows worth showing: a separated woman, and the first rows predicted each way."""
    with torch.no_grad():
        predicted = model(torch.from_numpy(data.X_test)).argmax(1).numpy()
    marital, sex = data.feature_names.index("Marital Status"), data.feature_names.index("Sex")
    separated = data.categorical_names[marital].index("Separated")
    female = data.categorical_names[sex].index("Female")
    chosen = [
        int(
            np.flatnonzero(
                (data.X_test[:, marital] == separated) & (data.X_test[:, sex] == female)
            )[0]
        )
    ]
    chosen += [int(np.flatnonzero(predicted == label)[0]) for label in (0, 1)]
    return sorted(set(chosen))


def explain_request(base: str, rows: np.ndarray, explain_parameters: dict) -> tuple[dict, str]:
    """POST a v2 explain request; the explanation (decoded) and the curl command that sends the same."""
    body = explain_request_body(rows, explain_parameters)
    url = f"{base}/v2/models/{EXPLAINER}/infer"
    text = json.dumps(body)
    curl = f"curl -s -X POST {url} -H 'Content-Type: application/json' -d '{text}'"
    status, response = post_json(url, body, timeout=300)
    if status != 200:
        raise RuntimeError(f"the explainer answered HTTP {status}: {response}")
    (output,) = response["outputs"]
    return json.loads(output["data"][0]), curl


def run(
    out_dir: str | Path = "demo_out/serve_loan", port: int | None = None, seed: int = 0
) -> dict:
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = load_census()
    model, cached = pretrained_census_mlp()
    model = model.eval()
    rows_index = pick_rows(data, model)
    rows = data.X_test[rows_index]

    # 1. the model, as a torch.export program
    example = torch.from_numpy(data.X_train[:8])
    program = torch.export.export(
        model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(out / "income.pt2"))

    # 2. the explainer, whose predictor is the served model
    port, grpc_port = port or free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    endpoint = RemoteModel(f"grpc://127.0.0.1:{grpc_port}", model_name=MODEL)
    explainer = torchexplain.AnchorTabular(
        endpoint, data.feature_names, data.categorical_names, seed=seed
    )
    explainer.fit(data.X_train)
    explainer.save(out / EXPLAINER)

    # 3. one MLServer for both, started by `torchexplain serve`
    command = torchexplain_command(
        "serve",
        str(out / EXPLAINER),
        "--name",
        EXPLAINER,
        "--model",
        str(out / "income.pt2"),
        "--model-name",
        MODEL,
        "--host",
        "127.0.0.1",
        "--http-port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        "--settings-dir",
        str(out / "repository"),
    )
    print("starting: torchexplain", " ".join(command[3:]), flush=True)
    started = time.perf_counter()
    server = Process(
        command,
        [f"{base}/v2/models/{name}/ready" for name in (MODEL, EXPLAINER)],
        out / "mlserver.log",
        timeout=120,
    )
    with server:
        ready_seconds = time.perf_counter() - started
        # 4. explain over HTTP, and the same explainer in this process
        parameters = {"threshold": 0.95}
        started = time.perf_counter()
        served, curl = explain_request(base, rows, parameters)
        served_seconds = time.perf_counter() - started
    local = torchexplain.load_explainer(out / EXPLAINER, model=_probabilities(model))
    in_process = json.loads(local.explain(rows.astype(np.float32), **parameters).to_json())

    explanation = torchexplain.Explanation.from_json(json.dumps(served))
    classes = data.class_names
    examples = [
        {
            "row": i,
            "prediction": classes[int(explanation.target[k])],
            "anchor": explanation.anchor[k],
            "precision": round(float(explanation.precision[k]), 3),
            "coverage": round(float(explanation.coverage[k]), 3),
        }
        for k, i in enumerate(rows_index)
    ]
    save_bar_chart(
        [
            (
                "Anchors served over HTTP (prediction IF rule)",
                [
                    (
                        f"{e['prediction']:>5} IF {' AND '.join(e['anchor']) or '(anything)'}",
                        (e["precision"], e["coverage"]),
                    )
                    for e in examples
                ],
            )
        ],
        out / "serve_loan.png",
        bar_labels=("precision", "coverage"),
    )
    summary = {
        "model_from_cache": cached,
        "server_ready_seconds": round(ready_seconds, 2),
        "explain_request_seconds": round(served_seconds, 3),
        "rows_explained": len(rows_index),
        "served_equals_in_process": served == in_process,
        "examples": examples,
        "curl": curl,
        "files": [
            str(out / n)
            for n in ("serve_loan.json", "serve_loan.png", "repository", "mlserver.log")
        ],
    }
    (out / "serve_loan.json").write_text(
        json.dumps({"summary": summary, "explanation": served}, indent=2)
    )
    return summary


def _probabilities(model):
    def predict(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(rows)).float()).softmax(-1).numpy()

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="demo_out/serve_loan")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: a free one)")
    args = parser.parse_args()
    summary = run(args.out_dir, args.port)
    print(
        "the same request with curl:\n  "
        + summary["curl"][:220]
        + (" ..." if len(summary["curl"]) > 220 else "")
    )
    for example in summary["examples"]:
        print(
            f"row {example['row']}: {example['prediction']:>5} IF {' AND '.join(example['anchor']) or '(anything)'}"
            f"  (precision {example['precision']:.2f}, coverage {example['coverage']:.2f})"
        )
    print(json.dumps({k: v for k, v in summary.items() if k not in ("examples", "curl")}, indent=2))
    if not summary["served_equals_in_process"]:
        raise SystemExit("the served explanation differs from the in-process one")


if __name__ == "__main__":
    main()
