"""A KServe explainer: KServe's v1 explain protocol, without the ``kserve`` package.

KServe removed its Alibi explainer in 2024; a custom explainer container is what
remains. This module is one: it answers ``POST /v1/models/{name}:explain`` with
``{"instances": [...]}`` by explaining those rows and returning the explanation JSON
(``Explanation.to_json()``), and forwards the explainer's model calls to the
predictor (``--predictor_host``, KServe v1 ``:predict`` by default). It runs on
Starlette and uvicorn, which the ``serve`` extra brings with MLServer: the ``kserve``
package itself cannot be installed beside MLServer 1.7 (their starlette pins
conflict), and nothing here needs it.

Run it as KServe's controller runs a custom explainer::

    torchexplain kserve --model_name income --predictor_host income-predictor.default \\
        --http_port 8080 --storage_uri /mnt/models

Routes: ``GET /`` (alive), ``GET /v1/models`` (the model list), ``GET
/v1/models/{name}`` (ready, with the input it takes), ``POST /v1/models/{name}:explain``;
and for v2 clients and probes ``GET /v2/health/live``, ``/v2/health/ready``,
``/v2/models/{name}/ready`` and ``/v2/models/{name}`` (metadata: the ``rows`` input's
datatype and shape, the ``explanation`` output). Explaining is v1 JSON only: a v2
``/infer`` (and binary tensor data) is not served here.

At start the predictor's metadata is read (``GET /v1/models/{name}`` or
``/v2/models/{name}``), so a wrong ``--model_name`` or ``--predictor_host`` fails
then, naming what the predictor answered, not at the first explain;
``--skip_predictor_check`` starts without it (for a predictor that starts later). Per-request
settings go in an optional top-level ``"explain_parameters"`` (an object or a JSON
string of one). Errors are answered ``{"error": "..."}`` with a 4xx (bad request),
413 (too large), 502/504 (the predictor failed / did not answer in time) or 500.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

from torchexplain.models.remote import PROTOCOLS
from torchexplain.serving.service import ExplainerService, ServiceError, explanation_metadata

__all__ = ["build_app", "build_parser", "main"]

_LOG = logging.getLogger("torchexplain.serving.kserve")
#: the largest request body read (bytes); larger ones are refused with 413 before reading
DEFAULT_MAX_BYTES = 16 * 2**20
_REQUEST_KEYS = {"instances", "explain_parameters"}


def build_app(
    service: ExplainerService, model_name: str, max_request_bytes: int = DEFAULT_MAX_BYTES
) -> Any:
    """The Starlette application serving ``service`` as the KServe model ``model_name``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def unknown_model(name: str) -> JSONResponse:
        return error(f"model {name!r} not found; this explainer serves {model_name!r}", 404)

    def constant(body: dict[str, Any]) -> Any:
        async def answer(request: Request) -> JSONResponse:
            return JSONResponse(body)

        return answer

    def of_the_model(answer: Any) -> Any:
        """A route about one model: 404 for any name but ``model_name``."""

        async def route(request: Request) -> Response:
            name = request.path_params["name"]
            return unknown_model(name) if name != model_name else await answer(request)

        return route

    def declared() -> dict[str, Any]:
        return {"inputs": [service.input_metadata()], "outputs": [explanation_metadata()]}

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"name": model_name, "ready": True, **declared()})

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse({"name": model_name, "platform": "torchexplain", **declared()})

    async def explain(request: Request) -> Response:
        try:
            body = await _read_body(request, max_request_bytes)
            rows, parameters = _parse_request(body)
            texts = await asyncio.get_running_loop().run_in_executor(
                service.executor(), service.explain_texts, rows, parameters
            )
        except ServiceError as err:
            return error(str(err), err.status)
        # one explanation is the body itself; several (Alibi's layout, one per row) a JSON array
        text = texts[0] if len(texts) == 1 else "[" + ",".join(texts) + "]"
        return Response(text, media_type="application/json")

    async def other_verbs(request: Request) -> JSONResponse:
        verb = request.path_params["verb"]
        return error(
            f"this is the explainer of {model_name!r}: it answers ':explain'; send ':{verb}' to the "
            "predictor",
            404,
        )

    routes = [
        Route("/", constant({"status": "alive"}), methods=["GET"]),
        Route("/v1/models", constant({"models": [model_name]}), methods=["GET"]),
        Route("/v1/models/{name}:explain", of_the_model(explain), methods=["POST"]),
        Route("/v1/models/{name}:{verb}", other_verbs, methods=["POST"]),
        Route("/v1/models/{name}", of_the_model(ready), methods=["GET"]),
        # v2 health and metadata (what v2 clients and KServe's probes ask); explaining stays v1
        Route("/v2/health/live", constant({"live": True}), methods=["GET"]),
        Route("/v2/health/ready", constant({"ready": True}), methods=["GET"]),
        Route("/v2/models/{name}/ready", of_the_model(ready), methods=["GET"]),
        Route("/v2/models/{name}", of_the_model(metadata), methods=["GET"]),
    ]
    return Starlette(routes=routes, on_shutdown=[service.close])


async def _read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServiceError(
            f"the request body is {int(declared)} bytes; this server reads at most {limit}", 413
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ServiceError(
                f"the request body is over {limit} bytes, the most this server reads", 413
            )
    return bytes(body)


def _parse_request(body: bytes) -> tuple[Any, Any]:
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = (
            f" ({err.msg} at character {err.pos})" if isinstance(err, json.JSONDecodeError) else ""
        )
        raise ServiceError(f"the request body is not JSON{where}") from None
    if not isinstance(request, dict) or "instances" not in request:
        raise ServiceError('the request must be a JSON object {"instances": [[...], ...]}')
    unknown = sorted(set(request) - _REQUEST_KEYS)
    if unknown:
        raise ServiceError(
            f"unknown request key(s) {unknown}; a request holds {sorted(_REQUEST_KEYS)}"
        )
    instances = request["instances"]
    if not isinstance(instances, list):
        raise ServiceError(f"'instances' must be a list of rows, got {type(instances).__name__}")
    return instances, request.get("explain_parameters")


def build_parser() -> argparse.ArgumentParser:
    """The arguments KServe's controller passes a custom explainer, and ours."""
    parser = argparse.ArgumentParser(
        prog="torchexplain kserve",
        description="Serve a saved explainer as a KServe explainer (v1 explain protocol).",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The KServe explainer container's flags (KServe's own names, and ours)."""
    # long: one statement per flag, nothing else to name
    parser.add_argument(
        "--model_name",
        "--model-name",
        dest="model_name",
        required=True,
        help="the InferenceService's model name (KServe passes it)",
    )
    parser.add_argument(
        "--predictor_host",
        "--predictor-host",
        dest="predictor_host",
        default=None,
        help="host[:port] (or URL) of the predictor the explainer's model calls go to (KServe "
        "passes it); not needed by a white-box explainer saved with its model",
    )
    parser.add_argument(
        "--http_port",
        "--http-port",
        dest="http_port",
        type=int,
        default=8080,
        help="port to listen on (default 8080)",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument(
        "--storage_uri",
        "--storage-uri",
        dest="storage_uri",
        default="/mnt/models",
        help="the folder explainer.save() wrote (default /mnt/models, where KServe's storage "
        "initializer puts storageUri)",
    )
    parser.add_argument(
        "--predictor_protocol",
        "--predictor-protocol",
        dest="predictor_protocol",
        default="kserve_v1",
        choices=PROTOCOLS,
        help="protocol the predictor speaks (default kserve_v1)",
    )
    parser.add_argument(
        "--predictor_timeout",
        dest="predictor_timeout",
        type=float,
        default=30.0,
        help="seconds to wait for each predictor answer (default 30)",
    )
    parser.add_argument(
        "--rows",
        default="all",
        choices=("all", "first"),
        help="explain every row of a request (default) or only the first",
    )
    parser.add_argument(
        "--max_rows",
        dest="max_rows",
        type=int,
        default=1024,
        help="most rows per request (default 1024; more: HTTP 413)",
    )
    parser.add_argument(
        "--max_concurrency",
        dest="max_concurrency",
        type=int,
        default=1,
        help="black-box explainers: requests explained at once (default 1; raise it when the "
        "predictor runs on another machine)",
    )
    parser.add_argument(
        "--max_request_bytes",
        dest="max_request_bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help=f"largest request body read (default {DEFAULT_MAX_BYTES}; more: HTTP 413)",
    )
    parser.add_argument(
        "--skip_predictor_check",
        "--skip-predictor-check",
        dest="skip_predictor_check",
        action="store_true",
        help="start without checking that the predictor serves --model_name (it may start later)",
    )
    parser.add_argument(
        "--explanation_format",
        "--explanation-format",
        dest="explanation_format",
        default="torchexplain",
        choices=("torchexplain", "alibi"),
        help="answers as torchexplain's JSON (default) or in Alibi's layout (what alibi's "
        "Explanation.from_json parses); a request may choose with explain_parameters",
    )
    parser.add_argument(
        "--init_parameters",
        dest="init_parameters",
        default=None,
        help='JSON object of settings to set on load, e.g. \'{"device": "cuda"}\'',
    )


def load_service(args: argparse.Namespace) -> ExplainerService:
    infer_uri = None
    if args.predictor_host:
        host = args.predictor_host.rstrip("/")
        infer_uri = host if host.startswith(("http://", "https://")) else f"http://{host}"
    extra: dict[str, Any] = {
        "infer_protocol": args.predictor_protocol,
        "infer_timeout": args.predictor_timeout,
        "rows": args.rows,
        "max_rows": args.max_rows,
        "max_concurrency": args.max_concurrency,
        "init_parameters": args.init_parameters,
        "explanation_format": args.explanation_format,
    }
    if infer_uri is not None:
        # the predictor's model is served under the same name as the explainer (KServe's convention)
        suffix = {
            "kserve_v1": f"/v1/models/{args.model_name}:predict",
            "v2": f"/v2/models/{args.model_name}/infer",
        }.get(args.predictor_protocol, "")
        extra["infer_uri"] = (
            infer_uri
            if infer_uri.endswith((":predict", "/infer", "/predictions"))
            else infer_uri + suffix
        )
    if "infer_uri" in extra and not args.skip_predictor_check:
        check_predictor(extra["infer_uri"], args.predictor_protocol, args.predictor_timeout)
    return ExplainerService.load(args.storage_uri, **extra)  # on the thread(s) that will explain


def check_predictor(infer_uri: str, protocol: str, timeout: float) -> None:
    """Read the predictor's model metadata once; a ``ValueError`` saying what it answered when it
    does not serve the model (a wrong ``--model_name`` would otherwise fail every explain with 502).

    Seldon v1 has no metadata route: nothing is checked for it.
    """
    import urllib.error
    import urllib.request

    if protocol == "kserve_v1" and infer_uri.endswith(":predict"):
        url = infer_uri.removesuffix(":predict")
    elif protocol == "v2" and infer_uri.endswith("/infer"):
        url = infer_uri.removesuffix("/infer")
    else:
        return
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - http(s) only
            if answer.status == 200:
                return
            status, text = answer.status, answer.read(300).decode(errors="replace")
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read(300).decode(errors="replace")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ValueError(
            f"the predictor at {url} could not be reached ({reason}); check --predictor_host, or "
            "pass --skip_predictor_check when the predictor starts after the explainer"
        ) from None
    raise ValueError(
        f"the predictor does not serve this model: GET {url} answered HTTP {status} ({text.strip()}); "
        "check --model_name (the predictor's model name) and --predictor_host, or pass "
        "--skip_predictor_check"
    )


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> int:
    """Load the explainer and serve it until stopped (Ctrl-C or SIGTERM)."""
    import uvicorn

    if args is None:
        args, ignored = build_parser().parse_known_args(argv)
        if ignored:
            _LOG.warning("ignoring arguments this explainer does not use: %s", ignored)
    service = load_service(args)
    app = build_app(service, args.model_name, max_request_bytes=args.max_request_bytes)
    print(
        f"torchexplain kserve: {service.explainer.name} from {args.storage_uri} as {args.model_name!r} on "
        f"http://{args.host}:{args.http_port}/v1/models/{args.model_name}:explain",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.http_port, log_level="warning")
    return 0


if __name__ == "__main__":  # python -m torchexplain.serving.kserve
    raise SystemExit(main())
