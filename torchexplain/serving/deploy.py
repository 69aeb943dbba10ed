"""``torchexplain serve``: MLServer settings for a saved explainer, written for the user, and MLServer started.

A user should not hand-write JSON to serve an explainer. :func:`write_repository`
writes an MLServer model repository: ``settings.json`` (ports, address,
``parallel_workers: 0``) and one ``<name>/model-settings.json`` for the explainer
(:class:`~torchexplain.serving.runtime.ExplainerRuntime`), plus one for the model when
a ``torch.export`` archive is served beside it
(:class:`~torchexplain.serving.runtime.TorchModelRuntime`). :func:`start` then runs
MLServer on that folder in this process's place.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "explainer_model_settings",
    "model_settings",
    "server_settings",
    "start",
    "write_repository",
]

RUNTIME = "torchexplain.serving.runtime.ExplainerRuntime"
MODEL_RUNTIME = "torchexplain.serving.runtime.TorchModelRuntime"


def explainer_model_settings(name: str, uri: str | Path, **extra: Any) -> dict[str, Any]:
    """The ``model-settings.json`` of an explainer served by MLServer (``extra``: the service settings,
    see :func:`torchexplain.serving.service.service_options`)."""
    from torchexplain.serving.service import service_options

    service_options(extra)  # refuse a wrong setting now, not when MLServer loads it
    settings = {"name": name, "implementation": RUNTIME, "parameters": {"uri": str(uri)}}
    if extra:
        settings["parameters"]["extra"] = dict(extra)
    return settings


def write_repository(
    explainer_path: str | Path,
    folder: str | Path | None = None,
    name: str = "explainer",
    http_port: int = 8080,
    grpc_port: int = 8081,
    host: str = "0.0.0.0",
    infer_uri: str | None = None,
    model_path: str | Path | None = None,
    model_name: str = "model",
    model_output: str = "probabilities",
    debug: bool = False,
    **extra: Any,
) -> Path:
    """Write an MLServer repository serving the saved explainer at ``explainer_path`` (and a model).

    Args:
        explainer_path: the folder ``explainer.save(...)`` wrote.
        folder: where to write (default: a new temporary folder).
        name: the explainer's model name (``/v2/models/{name}/infer``).
        http_port, grpc_port, host: where MLServer listens.
        infer_uri: the model's prediction endpoint (black-box explainers only): an
            ``http://`` v2/v1 endpoint or a ``grpc://host:port/v2/models/NAME`` address.
            When ``model_path`` is given and this is None, the model served beside it,
            over gRPC.
        model_path: a ``torch.export`` archive (``.pt2``) to serve as ``model_name`` in
            the same server (its output: ``model_output``, ``"probabilities"`` or ``"raw"``).
        debug: MLServer's debug mode (a log line per request).
        **extra: further service settings (``rows``, ``max_rows``, ``explainer_type``, ...).

    Returns:
        The repository folder (pass it to ``mlserver start``).
    """
    explainer_path = Path(explainer_path).resolve()
    if not (explainer_path / "explainer.json").is_file():
        raise ValueError(
            f"{explainer_path}: no explainer.json; is it a folder written by explainer.save()?"
        )
    for port_name, port in (("http_port", http_port), ("grpc_port", grpc_port)):
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"{port_name} must be a port number in 1..65535, got {port!r}")
    if http_port == grpc_port:
        raise ValueError(f"http_port and grpc_port must differ, both are {http_port}")
    if name == model_name and model_path is not None:
        raise ValueError(f"the explainer and the model need different names, both are {name!r}")
    repository = (
        Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="torchexplain-serve-"))
    )
    repository.mkdir(parents=True, exist_ok=True)
    server = server_settings(host, http_port, grpc_port, debug)
    _write_json(repository / "settings.json", server)
    if model_path is not None:
        model_path = Path(model_path).resolve()
        _write_json(
            repository / model_name / "model-settings.json",
            model_settings(model_name, model_path, model_output),
        )
        if infer_uri is None and not _white_box(explainer_path):
            # the model beside it, over gRPC: samples travel as raw bytes, not JSON text
            local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            infer_uri = f"grpc://{local}:{grpc_port}/v2/models/{model_name}"
    if infer_uri is not None:
        if _white_box(explainer_path):
            raise ValueError(
                f"{explainer_path} holds a white-box explainer, which runs the model it was saved "
                "with; it takes no infer_uri"
            )
        extra["infer_uri"] = infer_uri
    settings = explainer_model_settings(name, explainer_path, **extra)
    settings.update(_explainer_metadata(explainer_path, extra))
    _write_json(repository / name / "model-settings.json", settings)
    return repository


def server_settings(
    host: str, http_port: int, grpc_port: int, debug: bool = False
) -> dict[str, Any]:
    """MLServer's ``settings.json`` as ``torchexplain serve`` writes it."""
    return {
        "host": host,
        "http_port": http_port,
        "grpc_port": grpc_port,
        # MLServer 1.7.1's worker processes crash at start with uvloop >= 0.22; our
        # runtimes run their work in threads, so the server process is enough.
        "parallel_workers": 0,
        "metrics_endpoint": None,
        # MLServer's default (debug: true) logs every request line; measured at about 8 %
        # of the server's busy time on small IG requests. Errors are logged either way.
        "debug": debug,
    }


def model_settings(
    name: str, model_path: str | Path, output: str = "probabilities"
) -> dict[str, Any]:
    """The ``model-settings.json`` of a ``torch.export`` model served by MLServer, with its v2
    inputs and outputs read from the program.

    Raises:
        ValueError: the file is not a loadable ``torch.export`` archive.
    """
    model_path = Path(model_path).resolve()
    return {
        "name": name,
        "implementation": MODEL_RUNTIME,
        "parameters": {"uri": str(model_path), "extra": {"output": output}},
        **_model_metadata(model_path),
    }


def _model_metadata(model_path: Path) -> dict[str, Any]:
    """The v2 ``inputs``/``outputs`` of a ``.pt2`` model, from its program (refusing a bad file now,
    not when MLServer loads it)."""
    import torch

    from torchexplain.models.exported import load_exported_model
    from torchexplain.serving.service import model_input_metadata, model_output_metadata

    model = load_exported_model(model_path)  # ValueError naming the file when it is not one
    return {
        "inputs": [model_input_metadata(model, model.input_dtype or torch.float32)],
        "outputs": [model_output_metadata(model)],
    }


def _explainer_metadata(explainer_path: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """The explainer's v2 ``inputs``/``outputs``, read by loading it as the server will; nothing
    when it cannot be loaded here (the runtime then declares them when it loads)."""
    from torchexplain.serving.service import ExplainerService, explanation_metadata

    try:
        service = ExplainerService.from_folder(explainer_path, **extra)
    except Exception:  # noqa: BLE001 - MLServer's load reports what is wrong, with its context
        return {}
    try:
        return {"inputs": [service.input_metadata()], "outputs": [explanation_metadata()]}
    finally:
        service.close()


def start(repository: str | Path) -> None:
    """Run MLServer on ``repository`` in this process's place (signals reach MLServer directly)."""
    try:
        import mlserver  # noqa: F401
    except ImportError:
        raise RuntimeError('MLServer is not installed: pip install "torchexplain[serve]"') from None
    argv = [
        sys.executable,
        "-c",
        "from mlserver.cli.main import main; main()",
        "start",
        str(repository),
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(sys.executable, argv)
    import subprocess  # pragma: no cover - not POSIX

    raise SystemExit(subprocess.call(argv))  # pragma: no cover


def _white_box(explainer_path: Path) -> bool:
    from torchexplain.serving.service import stored_kind

    return stored_kind(explainer_path) == "whitebox"


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
