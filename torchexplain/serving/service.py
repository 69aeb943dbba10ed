"""What an explainer server does with one request, whatever the protocol it speaks.

The MLServer runtime (:mod:`torchexplain.serving.runtime`) and the KServe explainer
(:mod:`torchexplain.serving.kserve`) differ only in how a request arrives and how the
answer leaves. Everything else is here, once:

- loading a saved explainer folder for serving, with Seldon Core v2's settings
  (``explainer_type``, ``infer_uri``, ``init_parameters``) and ours (how many rows of a
  request to explain, the largest request, how many explanations run at once);
- checking a request's rows (numbers, finite, a batch, not too many) and its
  per-request settings (``explain_parameters``: a JSON object, or a JSON string of
  one, since KServe and gRPC clients can only send scalars);
- running the explanation and turning every failure into a :class:`ServiceError`
  with an HTTP status: 4xx for a bad request, 502/504 when the model endpoint failed
  or did not answer in time, 500 for anything else (the message says what).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchexplain import _checks
from torchexplain.base import Explainer
from torchexplain.explanation import Explanation
from torchexplain.models import Rows
from torchexplain.models.remote import PROTOCOLS, V2_DATATYPES, RemoteModel, RemoteModelError
from torchexplain.registry import by_explainer_type, registered_explainers

__all__ = ["ExplainerService", "ServiceError", "service_options", "stored_kind", "torch_thread"]

#: ``rows``: explain every row of a request, or only its first (Alibi's runtime does this silently).
ROW_MODES = ("all", "first")
#: the name of the answer's output, as Seldon's Alibi runtime names it
OUTPUT_NAME = "explanation"
#: ``explanation_format``: torchexplain's exact JSON (``Explanation.to_json``), or Alibi's layout
#: (:mod:`torchexplain.alibi_layout`), which Seldon users' ``alibi`` code parses.
FORMATS = ("torchexplain", "alibi")
#: The service's own settings, with their defaults (read from MLServer's
#: ``parameters.extra`` or the KServe command's flags).
_DEFAULTS: dict[str, Any] = {
    "explainer_type": None,
    "infer_uri": None,
    "model_uri": None,
    "infer_protocol": "v2",
    "infer_timeout": 30.0,
    "infer_batch_size": "auto",
    "init_parameters": None,
    "rows": "all",
    "max_rows": 1024,
    "max_concurrency": 1,
    "explain_parameters": None,
    "explanation_format": "torchexplain",
}


_TORCH_THREAD: ThreadPoolExecutor | None = None
_TORCH_THREAD_LOCK = threading.Lock()


def torch_thread() -> ThreadPoolExecutor:
    """The one thread of this process that runs the servers' model computations.

    PyTorch's CPU kernels run on an OpenMP thread team that belongs to the calling
    thread. Once a second thread runs torch ops, every call gets slower (measured on the
    2-core CI machine: IntegratedGradients on 32 census rows, 3.8 ms from one thread,
    4.9 ms once another thread had also run it, for the rest of the process). So
    white-box explanations and the served model's forward (and their loads) all run
    here, off the event loop but on one thread. Black-box explanations have a pool of
    their own, on which they are loaded too (:meth:`ExplainerService.load`): they wait
    on the model endpoint, which may be this same process and need this thread.
    """
    global _TORCH_THREAD
    with _TORCH_THREAD_LOCK:
        if _TORCH_THREAD is None:
            _TORCH_THREAD = ThreadPoolExecutor(1, thread_name_prefix="torchexplain-torch")
        return _TORCH_THREAD


class ServiceError(Exception):
    """A request the service could not answer: ``status`` is the HTTP status to send,
    the message what went wrong (sent to the client as ``{"error": message}``)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def service_options(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The service settings in ``extra`` (MLServer's ``parameters.extra``), checked, with defaults.

    Raises:
        ValueError, TypeError: an unknown key, or a wrong value (naming both).
    """
    extra = dict(extra or {})
    unknown = sorted(set(extra) - set(_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown explainer setting(s) {unknown}; the settings are {sorted(_DEFAULTS)}"
        )
    options = {**_DEFAULTS, **extra}
    kind = options["explainer_type"]
    if kind is not None and by_explainer_type(kind) is None:
        known = sorted(cls.explainer_type for cls in registered_explainers().values())
        raise ValueError(f"explainer_type {kind!r} is not one of {known}")
    for key in ("infer_uri", "model_uri"):
        if options[key] is not None and not isinstance(options[key], str):
            raise TypeError(f"{key} must be a string, got {options[key]!r}")
    if options["infer_uri"] is not None and options["model_uri"] is not None:
        raise ValueError(
            "give infer_uri (a black-box explainer's model endpoint) or model_uri (a white-box "
            "explainer's torch.export file), not both"
        )
    _checks.check_choice("infer_protocol", options["infer_protocol"], PROTOCOLS)
    _checks.check_number("infer_timeout", options["infer_timeout"], low=0.0, low_open=True)
    if options["infer_batch_size"] != "auto":
        _checks.check_int("infer_batch_size", options["infer_batch_size"], minimum=1)
    _checks.check_choice("rows", options["rows"], ROW_MODES)
    _checks.check_int("max_rows", options["max_rows"], minimum=1)
    _checks.check_int("max_concurrency", options["max_concurrency"], minimum=1)
    _checks.check_choice("explanation_format", options["explanation_format"], FORMATS)
    for key in ("init_parameters", "explain_parameters"):
        options[key] = _as_object(key, options[key], status=None) or {}
    return options


class ExplainerService:
    """A loaded explainer, answering explain requests.

    Args:
        explainer: the explainer (loaded from a folder, or built in the process).
        rows: ``"all"`` (every row of a request is explained, in one batched call) or
            ``"first"`` (only the first, as Alibi's MLServer runtime does).
        max_rows: a request with more rows is refused (HTTP 413).
        max_concurrency: black-box explainers: how many requests are explained at
            once. 1 by default: with the model in the same process on the 2-core CI
            machine, 4 clients got 0.53 AnchorTabular requests/s (32 rows each) with 1,
            0.42 with 2 and 0.33 with 4, as the searches' own torch work competes for
            the cores. Raise it when the model runs elsewhere and explanations mostly
            wait on it. White-box explainers explain one request at a time: they switch
            the model's state while they run, which concurrent calls must not see.
        explain_parameters: per-request settings applied to every request (a request's
            own ``explain_parameters`` override them).
        explanation_format: ``"torchexplain"`` (default: one ``Explanation.to_json()``
            text, exact dtypes and shapes) or ``"alibi"`` (Alibi's layout, see
            :mod:`torchexplain.alibi_layout`: one text per row for anchors and
            counterfactuals, one per request for SHAP and IG). A request may choose
            with ``explain_parameters: {"explanation_format": ...}``.

    Examples:
        >>> import numpy as np, torchexplain as te
        >>> predict = lambda rows: np.stack([rows[:, 0] > 0, rows[:, 0] <= 0], 1).astype(float)
        >>> train = np.random.default_rng(0).uniform(-1, 1, (200, 2))
        >>> anchor = te.AnchorTabular(predict, ["x", "y"], seed=0).fit(train)
        >>> service = ExplainerService(anchor)
        >>> service.explain([[0.5, 0.1]], '{"threshold": 0.9}').anchor
        [['x > 0.13']]
        >>> service.explain([[0.5, float("nan")]])  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ...
        torchexplain.serving.service.ServiceError: inputs contains 1 non-finite value(s) (NaN or inf), the first at index (0, 1); explanations of non-finite inputs are meaningless
    """

    def __init__(
        self,
        explainer: Explainer,
        rows: str = "all",
        max_rows: int = 1024,
        max_concurrency: int = 1,
        explain_parameters: Mapping[str, Any] | None = None,
        explanation_format: str = "torchexplain",
    ) -> None:
        if not isinstance(explainer, Explainer):
            raise TypeError(
                f"ExplainerService needs a torchexplain Explainer, got {type(explainer).__name__}"
            )
        _checks.check_choice("rows", rows, ROW_MODES)
        _checks.check_int("max_rows", max_rows, minimum=1)
        _checks.check_int("max_concurrency", max_concurrency, minimum=1)
        self.explainer = explainer
        self.rows, self.max_rows = rows, max_rows
        self.max_concurrency = 1 if explainer.kind == "whitebox" else max_concurrency
        self.defaults = dict(explain_parameters or {})
        self._check_parameter_names(self.defaults, status=None)
        self.explanation_format = self._check_format(explanation_format, status=None)
        self._slots = threading.BoundedSemaphore(self.max_concurrency)

    @classmethod
    def from_folder(cls, path: str | Path, model: Any = None, **extra: Any) -> ExplainerService:
        """Load a folder written by ``explainer.save(...)`` with the service settings ``extra``.

        ``extra`` takes MLServer's ``parameters.extra`` keys: Seldon Core v2's
        ``explainer_type`` (checked against the folder), ``infer_uri`` (the model's
        prediction endpoint: black-box explainers send their samples there, replacing
        any address stored in the folder) and ``init_parameters`` (settings to set on
        load, e.g. ``{"device": "cuda"}``); and ours: ``model_uri`` (white-box: a
        ``torch.export`` file to explain, relative to the folder or absolute, for a
        folder saved without its model), ``infer_protocol`` (``"v2"``,
        ``"kserve_v1"`` or ``"seldon_v1"``), ``infer_timeout``, ``infer_batch_size``,
        ``rows``, ``max_rows``, ``max_concurrency``, ``explain_parameters``.

        Raises:
            ValueError: the folder is not a valid saved explainer (see
                :func:`~torchexplain.load_explainer`), or a setting is wrong.
        """
        from torchexplain.saving import CONFIG_FILE, load_explainer

        options = service_options(extra)
        folder = Path(path)
        stored_name = _stored_explainer_name(folder / CONFIG_FILE)
        wanted = options["explainer_type"]
        if wanted is not None and stored_name is not None:
            wanted_name = by_explainer_type(wanted).name
            if wanted_name != stored_name:
                raise ValueError(
                    f"explainer_type is {wanted!r} ({wanted_name}), but {folder} holds a saved {stored_name}"
                )
        if options["model_uri"] is not None and model is None:
            if stored_kind(folder) == "blackbox":
                raise ValueError(
                    f"{folder} holds a black-box {stored_name}: it calls a model endpoint "
                    "(infer_uri), not a model file (model_uri)"
                )
            from torchexplain.models.exported import load_exported_model

            model_path = Path(options["model_uri"])
            model = load_exported_model(
                model_path if model_path.is_absolute() else folder / model_path
            )
        if options["infer_uri"] is not None and model is None:
            if stored_kind(folder) == "whitebox":
                raise ValueError(
                    f"{folder} holds a white-box {stored_name}, which needs the model itself (its gradients), "
                    "not a prediction endpoint: save it with example_inputs=... so the folder holds the model, "
                    "and drop infer_uri"
                )
            model = RemoteModel(
                options["infer_uri"],
                protocol=options["infer_protocol"],
                batch_size=options["infer_batch_size"],
                timeout=options["infer_timeout"],
            )
        explainer = load_explainer(folder, model=model, **options["init_parameters"])
        return cls(
            explainer,
            rows=options["rows"],
            max_rows=options["max_rows"],
            max_concurrency=options["max_concurrency"],
            explain_parameters=options["explain_parameters"],
            explanation_format=options["explanation_format"],
        )

    def executor(self) -> ThreadPoolExecutor:
        """Where this service's explanations run: :func:`torch_thread` for white-box explainers,
        a pool of ``max_concurrency`` threads of its own for black-box ones."""
        if self.explainer.kind == "whitebox":
            return torch_thread()
        if getattr(self, "_pool", None) is None:
            self._pool = _blackbox_pool(self.max_concurrency)
        return self._pool

    @classmethod
    def load(cls, path: str | Path, **extra: Any) -> ExplainerService:
        """:meth:`from_folder`, run on the thread(s) that will explain (what a server calls).

        Loading runs torch ops, and every thread that runs torch ops costs every later
        torch call of the process (see :func:`torch_thread`), so a white-box explainer is
        loaded on the torch thread and a black-box one on its own pool, which it then keeps.
        """
        options = service_options(extra)
        if stored_kind(path) == "whitebox":
            return torch_thread().submit(cls.from_folder, path, **extra).result()
        pool = _blackbox_pool(options["max_concurrency"])
        try:
            service = pool.submit(cls.from_folder, path, **extra).result()
        except BaseException:
            pool.shutdown(wait=False)
            raise
        service._pool = pool
        return service

    def close(self) -> None:
        """Stop this service's own threads (the shared torch thread stays)."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # -- requests -------------------------------------------------------------------

    def parameters(self, raw: Any) -> dict[str, Any]:
        """A request's ``explain_parameters`` (an object, a JSON string of one, or None), checked."""
        parsed = _as_object("explain_parameters", raw, status=400) or {}
        self._check_parameter_names(parsed, status=400)
        if "explanation_format" in parsed:
            self._check_format(parsed["explanation_format"], status=400)
        return {**self.defaults, **parsed}

    def _check_parameter_names(self, values: Mapping[str, Any], status: int | None) -> None:
        allowed = self.allowed_parameters()
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            message = (
                f"unknown explain parameter(s) {unknown}; {self.explainer.name} takes "
                f"{', '.join(allowed)}"
            )
            if status is None:
                raise ValueError(message)
            raise ServiceError(message, status)

    def allowed_parameters(self) -> list[str]:
        """The names a request's ``explain_parameters`` may hold."""
        names = self.explainer.settings_class.names(per_call_only=True)
        extra = ["explanation_format"] + (["target"] if self.explainer.accepts_target else [])
        return extra + sorted(names)

    def _check_format(self, value: Any, status: int | None) -> str:
        from torchexplain.alibi_layout import ALIBI_METHODS

        message = None
        if value not in FORMATS:
            message = f"explanation_format must be one of {list(FORMATS)}, got {value!r}"
        elif value == "alibi" and self.explainer.name not in ALIBI_METHODS:
            message = (
                f"explanation_format 'alibi': Alibi has no {self.explainer.name}; its layout exists "
                f"for {', '.join(sorted(ALIBI_METHODS))}"
            )
        if message is not None:
            if status is None:
                raise ValueError(message)
            raise ServiceError(message, status)
        return value

    def inputs_to_explain(self, inputs: Any) -> Rows | list[str]:
        """The request's inputs as the explainer takes them: texts for an explainer of text
        (:meth:`texts_to_explain`), else rows (:meth:`rows_to_explain`)."""
        if self.explainer.takes_texts:
            return self.texts_to_explain(inputs)
        return self.rows_to_explain(inputs)

    def texts_to_explain(self, inputs: Any) -> list[str]:
        """The request's texts: a list (or array) of strings, bytes read as UTF-8; one string is one text."""
        if isinstance(inputs, (str, bytes)):
            inputs = [inputs]
        if isinstance(inputs, np.ndarray):
            inputs = inputs.reshape(-1).tolist()
        if not isinstance(inputs, (list, tuple)):
            raise ServiceError(
                f"{self.explainer.name} explains texts: send a list of strings, got {type(inputs).__name__}"
            )
        texts = []
        for k, item in enumerate(inputs):
            if isinstance(item, bytes):
                try:
                    item = item.decode("utf-8")
                except UnicodeDecodeError:
                    raise ServiceError(f"text {k} is not UTF-8") from None
            if not isinstance(item, str):
                raise ServiceError(
                    f"{self.explainer.name} explains texts: item {k} is {type(item).__name__}, "
                    "expected a string"
                )
            texts.append(item)
        if not texts:
            raise ServiceError("the inputs are empty: send at least one text")
        if len(texts) > self.max_rows:
            raise ServiceError(
                f"the request holds {len(texts)} texts; this server explains at most {self.max_rows} per "
                "request (max_rows): send fewer texts per request",
                status=413,
            )
        return texts[:1] if self.rows == "first" else texts

    def rows_to_explain(self, inputs: Any) -> Rows:
        """The request's rows, checked once, as the :class:`~torchexplain.models.Rows` the explainer
        takes (it checks them no further); a 1-D input is one row (``(C,)`` → ``(1, C)``, what a curl
        user sends for one tabular row). White-box explainers get them in their model's dtype."""
        try:
            array = np.asarray(inputs)
        except (TypeError, ValueError) as err:  # ragged nested lists
            raise ServiceError(
                f"the inputs are not a rectangular array of numbers ({err})"
            ) from None
        if array.dtype == object or array.dtype.kind not in "iuf":
            what = "booleans" if array.dtype.kind == "b" else f"{array.dtype} values"
            raise ServiceError(f"the inputs must be numbers (int or float), got {what}")
        if array.ndim == 0:
            raise ServiceError("the inputs must be a batch of rows (N, ...), got a single number")
        if array.ndim == 1:
            array = array[None]
        if array.shape[0] == 0 or math.prod(array.shape[1:]) == 0:
            raise ServiceError(f"the inputs are empty (shape {list(array.shape)})")
        if array.shape[0] > self.max_rows:
            raise ServiceError(
                f"the request holds {array.shape[0]} rows; this server explains at most {self.max_rows} per "
                "request (max_rows): send fewer rows per request",
                status=413,
            )
        self.check_shape(array.shape)
        if self.rows == "first":
            array = array[:1]
        try:
            rows = Rows.of(array, integers=True)
        except (TypeError, ValueError) as err:  # NaN or infinite values
            raise ServiceError(str(err)) from None
        if self.explainer.kind == "whitebox":
            rows = rows.to(dtype=_model_dtype(self.explainer.model))
        return rows

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """A 400 naming the expected and the received shape when a batch of ``shape`` does not fit
        what the explainer takes (:meth:`~torchexplain.base.Explainer.input_shape`), before
        anything runs."""
        expected = self.explainer.input_shape()
        if expected is None:
            return
        fits = len(shape) == len(expected) + 1 and all(
            want in (-1, got) for want, got in zip(expected, shape[1:])
        )
        if not fits:
            layout = ", ".join(["N", *("*" if d == -1 else str(d) for d in expected)])
            raise ServiceError(
                f"the inputs have shape {list(shape)}; {self.explainer.name} takes ({layout})"
            )

    def input_metadata(self, name: str = "rows") -> dict[str, Any]:
        """What a request's one input is, as v2 metadata: ``name``, ``datatype``, ``shape`` (``-1``: any)."""
        if self.explainer.takes_texts:
            return {"name": name, "datatype": "BYTES", "shape": [-1]}
        expected = self.explainer.input_shape()
        shape = [-1, *expected] if expected is not None else [-1]
        if self.explainer.kind == "whitebox":
            datatype = v2_datatype(_model_dtype(self.explainer.model))
        else:  # any numbers are taken; float32 is what a client of a float model sends
            datatype = "FP32"
        return {"name": name, "datatype": datatype, "shape": shape}

    def explain(self, inputs: Any, parameters: Any = None) -> Explanation:
        """Explain a request's rows with its ``explain_parameters``.

        Raises:
            ServiceError: with status 400/413 (bad request), 502 (the model endpoint
                failed), 504 (it did not answer in time) or 500 (anything else).
        """
        return self._explain(self.inputs_to_explain(inputs), self.parameters(parameters))

    def _explain(self, rows: Rows | list[str], settings: dict[str, Any]) -> Explanation:
        settings.pop("explanation_format", None)
        with self._slots:
            try:
                return self.explainer.explain(rows, **settings)
            except RemoteModelError as err:
                status = 504 if err.timed_out else 502
                raise ServiceError(
                    f"the model endpoint failed while explaining: {err}", status
                ) from None
            except (TypeError, ValueError) as err:
                raise ServiceError(f"{self.explainer.name} refused the request: {err}") from None
            except torch.cuda.OutOfMemoryError as err:  # pragma: no cover - needs a GPU
                raise ServiceError(
                    f"out of device memory: send fewer rows per request ({err})", 507
                ) from None
            except Exception as err:  # anything else is our fault, not the client's; keep serving
                raise ServiceError(
                    f"{self.explainer.name} failed: {type(err).__name__}: {err}", 500
                ) from None

    def explain_texts(self, inputs: Any, parameters: Any = None) -> list[str]:
        """:meth:`explain`, as JSON in the request's (or the server's) ``explanation_format``: one
        ``Explanation.to_json()`` text, or Alibi's layout (one text per row or per request)."""
        from torchexplain.alibi_layout import to_alibi_json

        rows = self.inputs_to_explain(inputs)
        settings = self.parameters(parameters)
        chosen = settings.get("explanation_format", self.explanation_format)
        explanation = self._explain(rows, settings)
        if chosen == "alibi":
            return to_alibi_json(explanation, rows if isinstance(rows, list) else rows.values)
        return [explanation.to_json()]

    def explain_json(self, inputs: Any, parameters: Any = None) -> str:
        """:meth:`explain`, as the explanation's JSON (``Explanation.to_json()``)."""
        return self.explain(inputs, parameters).to_json()


def _blackbox_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="torchexplain-explain")


def _as_object(name: str, raw: Any, status: int | None) -> dict[str, Any] | None:
    """``raw`` as a dict: None, a dict, or a JSON string of an object; else an error naming ``name``."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as err:
            message = f"{name} is a string but not JSON ({err.msg} at character {err.pos})"
            raise (ServiceError(message, status) if status else ValueError(message)) from None
    if not isinstance(raw, dict):
        message = f"{name} must be a JSON object of settings, got {type(raw).__name__} {raw!r:.100}"
        raise ServiceError(message, status) if status else TypeError(message)
    return raw


def explanation_metadata() -> dict[str, Any]:
    """The explainer's one output, as v2 metadata: ``explanation``, BYTES, one JSON text per answer
    (one in all, or one per row with ``explanation_format="alibi"`` for per-instance methods)."""
    return {"name": OUTPUT_NAME, "datatype": "BYTES", "shape": [-1]}


def model_input_metadata(model: Any, dtype: torch.dtype) -> dict[str, Any]:
    """A served ``torch.export`` model's input, as v2 metadata, from its program's input spec."""
    shape = list(model.input_shape) if model.input_shape is not None else [-1]
    if shape and model.static_batch is not None:
        shape[0] = -1  # any batch: it is run in pieces of the exported size
    return {"name": model.input_name or "input-0", "datatype": v2_datatype(dtype), "shape": shape}


def model_output_metadata(model: Any) -> dict[str, Any]:
    """A served model's output ``output``, from its program's output spec (softmax keeps shape and dtype)."""
    shape = list(model.output_shape) if model.output_shape is not None else [-1]
    if shape:
        shape[0] = -1
    return {"name": "output", "datatype": v2_datatype(model.output_dtype), "shape": shape}


def v2_datatype(dtype: torch.dtype | None) -> str:
    """The Open Inference Protocol datatype of a torch dtype (``"FP32"`` when it has none, e.g. bfloat16)."""
    try:
        return V2_DATATYPES.get(np.dtype(str(dtype).removeprefix("torch.")), "FP32")
    except TypeError:
        return "FP32"


def _model_dtype(model: Any) -> torch.dtype:
    """The float dtype a white-box model takes: an exported program's example input's, else the first
    floating parameter's, else torch's default (JSON numbers arrive as float64)."""
    program = getattr(model, "program", None)
    examples = getattr(program, "example_inputs", None)
    if examples:
        first = next((t for t in examples[0] if isinstance(t, torch.Tensor)), None)
        if first is not None and first.is_floating_point():
            return first.dtype
    if isinstance(model, torch.nn.Module):
        floating = next((p for p in model.parameters() if p.is_floating_point()), None)
        if floating is not None:
            return floating.dtype
    return torch.get_default_dtype()


def stored_kind(folder: str | Path) -> str | None:
    """``"whitebox"`` or ``"blackbox"``: the kind of explainer a saved folder holds (None when it cannot
    be told; loading the folder then says what is wrong with it)."""
    from torchexplain.saving import CONFIG_FILE

    cls = registered_explainers().get(_stored_explainer_name(Path(folder) / CONFIG_FILE) or "")
    return None if cls is None else cls.kind


def _stored_explainer_name(config_path: Path) -> str | None:
    """The explainer a saved folder names (None when the file cannot be read: load says why)."""
    try:
        name = json.loads(config_path.read_text(encoding="utf-8")).get("explainer")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None
