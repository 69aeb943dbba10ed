"""Save and load explainers safely: one JSON file and one safetensors file, no pickle.

A saved explainer is a folder:

- ``explainer.json``: the format version, the torchexplain version that wrote it, the
  explainer's registered name, its settings and fitted plain data, the dtype and
  shape of every stored tensor, and the SHA-256 of every other file;
- ``tensors.safetensors``: the tensors (tensor-valued settings such as background
  images, and fitted statistics such as Counterfactual's MAD);
- ``model.pt2`` (optional, white-box methods): the model as a ``torch.export``
  program.

Loading never runs code from the folder: the class comes from the registry of
torchexplain's own explainers (an allow-list), the JSON is plain data, tensors are
read by safetensors, and any file that differs from what ``explainer.json``
records (checksum, dtype, shape, names) is refused with a ``ValueError`` naming the
file. The model is not stored by default: a black-box explainer gets its predictor
at load time, a white-box one its model, unless a ``torch.export`` program was
saved with ``save(path, example_inputs=...)``; a :class:`~torchexplain.serving.RemoteModel`
predictor is stored as its address (plain data) and rebuilt at load. ``torch.export.load`` can unpickle
parts of an archive, so before calling it the archive is checked to hold only the
plain parts ``torch.export.save`` writes for an ordinary model (raw weights, JSON,
example inputs readable with ``torch.load(weights_only=True)``); anything else is
refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from torchexplain._version import __version__
from torchexplain.explanation import TENSOR_DTYPES
from torchexplain.models.exported import ExportedModel, load_exported_model
from torchexplain.models.remote import RemoteModel
from torchexplain.registry import registered_explainers

if TYPE_CHECKING:
    from torchexplain.base import Explainer

__all__ = [
    "FORMAT_VERSION",
    "load_explainer",
    "save_explainer",
]

#: Version of the folder layout; a folder written by a newer format is refused.
FORMAT_VERSION = 1
FORMAT_NAME = "torchexplain.explainer"
CONFIG_FILE = "explainer.json"
TENSORS_FILE = "tensors.safetensors"
MODEL_FILE = "model.pt2"

_TAG = "__tag__"
_KEYS = {
    "format",
    "format_version",
    "torchexplain_version",
    "explainer",
    "settings",
    "fitted",
    "tensors",
    "files",
    "model",
}


# ----------------------------------------------------------------------------- save


def save_explainer(explainer: Explainer, path: str | Path, example_inputs: Any = None) -> Path:
    """Write ``explainer`` to the folder ``path`` (see :meth:`Explainer.save`)."""
    from safetensors.torch import save_file

    if registered_explainers().get(getattr(type(explainer), "name", None)) is not type(explainer):
        if not hasattr(explainer, "explain"):
            raise TypeError(f"expected a torchexplain Explainer, got {type(explainer).__name__}")
        raise ValueError(
            f"{type(explainer).__name__} is not a registered torchexplain explainer; it cannot be saved"
        )
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    settings = {
        name: _encode(value, f"settings/{name}", tensors)
        for name, value in explainer.config.items()
    }
    fitted_data, fitted_tensors = explainer._fitted_state()
    fitted = {
        name: _encode(value, f"fitted/{name}", tensors) for name, value in fitted_data.items()
    }
    for name, tensor in fitted_tensors.items():
        tensors[f"fitted/{name}"] = tensor
    tensors = {key: t.detach().to("cpu").contiguous() for key, t in tensors.items()}

    files: dict[str, str] = {}
    _write_private(folder / TENSORS_FILE, lambda target: save_file(tensors, str(target)))
    files[TENSORS_FILE] = _sha256(folder / TENSORS_FILE)
    model_entry = None
    if example_inputs is not None:
        _export_model(explainer, example_inputs, folder / MODEL_FILE)
        files[MODEL_FILE] = _sha256(folder / MODEL_FILE)
        model_entry = {
            "format": "torch.export",
            "file": MODEL_FILE,
            "torch_version": torch.__version__,
        }
    elif (folder / MODEL_FILE).exists():
        (folder / MODEL_FILE).unlink()  # a stale program must not be picked up by load
    if model_entry is None and isinstance(explainer.model, RemoteModel):
        # A model behind an endpoint is stored as its address (plain data, no code).
        model_entry = {"format": "remote", **explainer.model.config()}

    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "torchexplain_version": __version__,
        "explainer": explainer.name,
        "settings": settings,
        "fitted": fitted,
        "tensors": {
            key: {"dtype": _dtype_name(t.dtype), "shape": list(t.shape)}
            for key, t in tensors.items()
        },
        "files": files,
        "model": model_entry,
    }
    text = json.dumps(config, indent=2, sort_keys=True)
    _write_private(
        folder / CONFIG_FILE, lambda target: target.write_text(text + "\n", encoding="utf-8")
    )
    return folder


def _write_private(target: Path, write: Any) -> None:
    """Write through a temporary name, then give the file the usual permissions.

    safetensors creates its files 0600; a saved explainer is usually read by another
    user (the serving process), so every file gets what ``open()`` would give it:
    0666 less the process umask.
    """
    temporary = target.with_name(f".tmp-{target.name}")
    write(temporary)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, target)


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A setting or fitted value as JSON; tensors go to the safetensors file under ``key``."""
    if isinstance(value, torch.Tensor):
        if value.dtype not in TENSOR_DTYPES.values():
            raise ValueError(f"{key}: tensors of dtype {value.dtype} cannot be saved")
        tensors[key] = value
        return {_TAG: "tensor", "key": key}
    if isinstance(value, torch.dtype):
        return {_TAG: "dtype", "name": _dtype_name(value)}
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, tuple):
        return {
            _TAG: "tuple",
            "items": [_encode(v, f"{key}/{i}", tensors) for i, v in enumerate(value)],
        }
    if isinstance(value, list):
        return [_encode(v, f"{key}/{i}", tensors) for i, v in enumerate(value)]
    if (
        isinstance(value, Mapping)
        and value
        and all(isinstance(k, int) and not isinstance(k, bool) for k in value)
    ):
        # Integer keys (e.g. AnchorTabular's categorical_names, column -> names) are kept as ints.
        return {
            _TAG: "int_keys",
            "items": [[int(k), _encode(v, f"{key}/{k}", tensors)] for k, v in value.items()],
        }
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"{key}: only dicts with string keys (or with int keys) can be saved")
        if _TAG in value:
            raise ValueError(f"{key}: a dict key may not be {_TAG!r}")
        return {k: _encode(v, f"{key}/{k}", tensors) for k, v in value.items()}
    if callable(value):
        # Code is never stored: the user passes it again at load time.
        name = f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
        return {_TAG: "callable", "name": name}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"{key}: a value of type {type(value).__name__} cannot be saved")


def _export_model(explainer: Explainer, example_inputs: Any, target: Path) -> None:
    from torchexplain._model_state import preserved_model_state

    if explainer.kind != "whitebox":
        raise ValueError(
            f"{explainer.name} is black-box: its predictor is never saved; pass it to "
            "load_explainer(path, model=...) instead of example_inputs"
        )
    model = explainer.model
    if isinstance(model, ExportedModel):
        program = model.program
    else:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"example_inputs: only an nn.Module can be exported, got {type(model).__name__}"
            )
        args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        if not args or not all(isinstance(a, torch.Tensor) and a.dim() >= 1 for a in args):
            raise TypeError("example_inputs must be a (B, ...) tensor or a tuple of them")
        batch = torch.export.Dim("batch", min=1)
        dynamic = tuple({0: batch} for _ in args)
        eval_mode = bool(getattr(explainer.settings, "eval_mode", True))
        with preserved_model_state(model, eval_mode=eval_mode):
            try:
                program = torch.export.export(model, args, dynamic_shapes=dynamic)
            except Exception as err:
                raise ValueError(
                    f"torch.export could not export the model with a dynamic batch dimension: {err}"
                ) from err
    _write_private(target, lambda path: torch.export.save(program, str(path)))


# ----------------------------------------------------------------------------- load


def load_explainer(path: str | Path, model: Any = None, **settings: Any) -> Explainer:
    """Load an explainer written by :meth:`Explainer.save`.

    Args:
        path: the folder ``save`` wrote.
        model: the model (white-box) or predictor (black-box) to explain. A white-box
            explainer saved with ``example_inputs`` loads its ``torch.export`` program
            when this is None.
        **settings: settings to set on load: callables, which are never stored
            (e.g. a custom ``segmentation_fn``), or anything to change (``device``).

    Returns:
        The explainer, which gives the explanations the saved one gave.

    Raises:
        ValueError: the folder is not a saved explainer, was written by a newer
            format, names an unknown explainer, or a file differs from what
            ``explainer.json`` records; the message names the file.
    """
    folder = Path(path)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(
            f"{config_path}: not found; is {folder} a folder written by Explainer.save()?"
        )
    config = _read_config(config_path)
    cls = registered_explainers().get(config["explainer"])
    if cls is None:
        raise ValueError(
            f"{config_path}: unknown explainer {config['explainer']!r}; this torchexplain ({__version__}) "
            f"loads {sorted(registered_explainers())}"
        )
    tensors = _read_tensors(folder, config)
    stored = {
        name: _decode(value, f"settings.{name}", tensors, config_path)
        for name, value in config["settings"].items()
    }
    missing = [
        name
        for name, value in stored.items()
        if isinstance(value, _Callable) and name not in settings
    ]
    if missing:
        names = ", ".join(f"{n} (was {stored[n].name})" for n in missing)
        raise ValueError(
            f"{config_path}: setting(s) {names} were callables, which are never stored; pass them again: "
            f"load_explainer(path, {missing[0]}=...)"
        )
    unknown = sorted(set(settings) - set(cls.settings_class.names()))
    if unknown:
        raise TypeError(
            f"load_explainer got unknown setting(s) {unknown}; {cls.name}'s settings are {cls.settings_class.names()}"
        )
    stored.update(settings)
    if model is None:
        model = _load_model(folder, config, cls)
    try:
        explainer = cls(model, **stored)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{config_path}: the stored settings are not valid for {cls.name}: {err}"
        ) from err
    fitted = {
        name: _decode(value, f"fitted.{name}", tensors, config_path)
        for name, value in config["fitted"].items()
    }
    fitted_tensors = {
        key.removeprefix("fitted/"): t for key, t in tensors.items() if key.startswith("fitted/")
    }
    try:
        explainer._restore_fitted_state(fitted, fitted_tensors)
    except ValueError as err:
        raise ValueError(f"{folder / TENSORS_FILE}: {err}") from err
    return explainer


def _read_config(config_path: Path) -> dict[str, Any]:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{config_path}: not a torchexplain explainer file (no 'format': {FORMAT_NAME!r})"
        )
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{config_path}: format_version must be a positive int, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{config_path}: written in format {version} by torchexplain {config.get('torchexplain_version')}; "
            f"this torchexplain ({__version__}) reads format {FORMAT_VERSION} and older: upgrade torchexplain"
        )
    if set(config) != _KEYS:
        raise ValueError(f"{config_path}: expected the keys {sorted(_KEYS)}, got {sorted(config)}")
    types = {"explainer": str, "settings": dict, "fitted": dict, "tensors": dict, "files": dict}
    for key, kind in types.items():
        if not isinstance(config[key], kind):
            raise ValueError(
                f"{config_path}: {key!r} must be a {kind.__name__}, got {type(config[key]).__name__}"
            )
    model = config["model"]
    remote = isinstance(model, dict) and model.get("format") == "remote"
    if (
        model is not None
        and not remote
        and (not isinstance(model, dict) or model.get("file") != MODEL_FILE)
    ):
        raise ValueError(
            f"{config_path}: 'model' must be null, name {MODEL_FILE!r} or be a remote address, got {model!r}"
        )
    return config


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _verify_file(folder: Path, name: str, config: dict[str, Any]) -> Path:
    path = folder / name
    expected = config["files"].get(name)
    if not path.is_file():
        raise ValueError(f"{path}: missing (explainer.json lists it)")
    if expected is None:
        raise ValueError(f"{folder / CONFIG_FILE}: records no checksum for {name}")
    if _sha256(path) != expected:
        raise ValueError(
            f"{path}: its SHA-256 differs from the one explainer.json records; the file was changed after saving"
        )
    return path


def _read_tensors(folder: Path, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _verify_file(folder, TENSORS_FILE, config)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    declared = config["tensors"]
    if set(tensors) != set(declared):
        raise ValueError(
            f"{path}: holds tensors {sorted(tensors)} but explainer.json declares {sorted(declared)}"
        )
    for key, tensor in tensors.items():
        spec = declared[key]
        if (
            not isinstance(spec, dict)
            or spec.get("dtype") != _dtype_name(tensor.dtype)
            or spec.get("shape") != list(tensor.shape)
        ):
            raise ValueError(
                f"{path}: tensor {key!r} is {_dtype_name(tensor.dtype)} {list(tensor.shape)} but explainer.json "
                f"declares {spec!r}"
            )
    return tensors


class _Callable:
    """A stored placeholder for a callable setting, which must be passed again."""

    def __init__(self, name: str) -> None:
        self.name = name


def _decode(value: Any, where: str, tensors: Mapping[str, torch.Tensor], config_path: Path) -> Any:
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]", tensors, config_path) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if _TAG not in value:
        return {k: _decode(v, f"{where}.{k}", tensors, config_path) for k, v in value.items()}
    tag = value[_TAG]
    if tag == "tensor" and set(value) == {_TAG, "key"}:
        if value["key"] not in tensors:
            raise ValueError(
                f"{config_path}: {where} refers to tensor {value['key']!r}, which is not stored"
            )
        return tensors[value["key"]]
    if tag == "dtype" and set(value) == {_TAG, "name"}:
        if value["name"] not in TENSOR_DTYPES:
            raise ValueError(
                f"{config_path}: {where}: dtype {value['name']!r} is not one of {sorted(TENSOR_DTYPES)}"
            )
        return TENSOR_DTYPES[value["name"]]
    if tag == "tuple" and set(value) == {_TAG, "items"} and isinstance(value["items"], list):
        return tuple(
            _decode(v, f"{where}[{i}]", tensors, config_path) for i, v in enumerate(value["items"])
        )
    if tag == "callable" and set(value) == {_TAG, "name"}:
        return _Callable(str(value["name"]))
    if (
        tag == "int_keys"
        and set(value) == {_TAG, "items"}
        and isinstance(value["items"], list)
        and all(isinstance(p, list) and len(p) == 2 and type(p[0]) is int for p in value["items"])
    ):
        return {k: _decode(v, f"{where}[{k}]", tensors, config_path) for k, v in value["items"]}
    raise ValueError(f"{config_path}: {where}: malformed tagged value {value!r}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ----------------------------------------------------------------------------- the model


def _load_model(folder: Path, config: dict[str, Any], cls: type[Explainer]) -> Any:
    entry = config["model"]
    if isinstance(entry, dict) and entry.get("format") == "remote":
        try:
            return RemoteModel.from_config({k: v for k, v in entry.items() if k != "format"})
        except ValueError as err:
            raise ValueError(f"{folder / CONFIG_FILE}: {err}") from None
    if entry is None:
        raise ValueError(
            f"{folder / CONFIG_FILE}: the {cls.model_role()} was not saved with the explainer; pass it: "
            f"load_explainer({str(folder)!r}, model=...)"
        )
    return load_exported_model(_verify_file(folder, MODEL_FILE, config))
