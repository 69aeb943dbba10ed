"""The one loader of ``torch.export`` archives (``.pt2``), checked before anything in them is read.

``torch.export.load`` can unpickle parts of an archive, so before calling it the
archive is checked to hold only the plain parts ``torch.export.save`` writes for an
ordinary model (raw weights, JSON, example inputs readable with
``torch.load(weights_only=True)``); anything else is refused with a ``ValueError``
naming the file and the part.
"""

from __future__ import annotations

import io
import json
import re
import threading
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["ExportedModel", "load_exported_model"]


class ExportedModel:
    """A model loaded from a ``torch.export`` program: callable like the module it was.

    The program already holds the mode it was exported in (eval, by default), so it
    is not an ``nn.Module`` to switch: explainers call it as they would any function.
    A program exported with a fixed batch size (its batch dimension not marked
    dynamic) is run on larger batches in pieces of that size, the last one padded
    with zeros and the padding dropped.

    Inputs are checked against the program's input spec before it runs: a batch of
    the wrong shape or kind raises a ``ValueError`` naming the expected and the given
    shape, where the program itself would fail a shape guard with an ``AssertionError``
    (which servers cannot tell from a bug).

    Attributes:
        program: the ``torch.export.ExportedProgram``.
        input_name: the name of its first input (the ``forward`` argument's).
        input_shape: the shape of its first input, ``-1`` for dynamic dimensions
            (None when the program does not record one).
        input_dtype: that input's dtype (None when not recorded).
        output_shape, output_dtype: the same for its first output.
        static_batch: the batch size it was exported for, when that is fixed.
    """

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        self.program = program
        self.module = program.module()
        self.input_name, self.input_shape, self.input_dtype = _user_input_spec(program)
        self.output_shape, self.output_dtype = _output_spec(program)
        self.static_batch = None
        if self.input_shape and self.input_shape[0] != -1:
            self.static_batch = self.input_shape[0]

    def to(self, device: torch.device | str) -> ExportedModel:
        """The program's weights moved to ``device`` (in place); returns the model."""
        self.module = self.module.to(device)
        return self

    def check_input(self, shape: tuple[int, ...] | list[int], what: str = "inputs") -> None:
        """Raise a ``ValueError`` when a batch of ``shape`` does not fit the program's first input
        (its rank or a fixed dimension other than the batch's differs)."""
        expected = self.input_shape
        if expected is None:
            return
        shape = tuple(int(d) for d in shape)
        fits = len(shape) == len(expected) and all(
            want in (-1, got) for want, got in zip(expected[1:], shape[1:])
        )
        if not fits:
            layout = ", ".join(
                "N" if i == 0 else ("*" if d == -1 else str(d)) for i, d in enumerate(expected)
            )
            raise ValueError(
                f"{what}: shape {list(shape)}, but the model takes ({layout}) "
                f"(its torch.export program's input {self.input_name!r})"
            )

    def __call__(self, *args: Any) -> Any:
        if len(args) == 1 and hasattr(args[0], "shape"):
            self.check_input(tuple(args[0].shape))
        batch = self.static_batch
        if batch is None or len(args) != 1 or args[0].shape[0] == batch:
            return self.module(*args)
        outputs = []
        for piece in args[0].split(batch):
            rows = piece.shape[0]
            if rows < batch:
                piece = torch.cat([piece, piece.new_zeros((batch - rows, *piece.shape[1:]))])
            outputs.append(self.module(piece)[:rows])
        return torch.cat(outputs)

    def __repr__(self) -> str:
        return f"ExportedModel({type(self.program).__name__}, input_shape={self.input_shape})"


def _spec(value: Any) -> tuple[tuple[int, ...] | None, torch.dtype | None]:
    """A traced value's shape (``-1`` for dynamic dimensions) and dtype, None where not a tensor."""
    if value is None or not hasattr(value, "shape"):
        return None, None
    shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
    return shape, getattr(value, "dtype", None)


def _user_input_spec(program: Any) -> tuple[str | None, tuple[int, ...] | None, torch.dtype | None]:
    """The first user input's name, shape and dtype as the program records them."""
    names = program.graph_signature.user_inputs
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in names:
            return (node.name, *_spec(node.meta.get("val")))
    return None, None, None


def _output_spec(program: Any) -> tuple[tuple[int, ...] | None, torch.dtype | None]:
    """The first user output's shape and dtype."""
    for node in program.graph.nodes:
        if node.op == "output":
            values = node.meta.get("val")
            first = values[0] if isinstance(values, (tuple, list)) and values else values
            return _spec(first)
    return None, None


# Entries torch.export.save writes for an ordinary model; anything else is refused.
_ARCHIVE_ENTRY = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/weights/weight_\d+|data/weights/model_weights_config\.json"
    r"|data/constants/tensor_\d+|data/constants/model_constants_config\.json|data/sample_inputs/model\.pt)"
)


# Servers load models in threads at once; two concurrent torch.export.load calls fail with
# "_CURRENT_DESERIALIZER is already set" (seen with MLServer loading two models).
_EXPORT_LOAD_LOCK = threading.Lock()


def load_exported_model(path: str | Path) -> ExportedModel:
    """A ``torch.export`` archive (``.pt2``) as a callable, after checking that it holds only the
    plain parts ``torch.export.save`` writes (nothing ``torch.export.load`` would unpickle).

    This is torchexplain's one loader of ``.pt2`` files: saved explainers, the servers and
    the command line all load through it.

    Raises:
        ValueError: the file is missing, is not such an archive, or holds other parts.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file (expected a torch.export archive, .pt2)")
    _check_model_archive(path)
    try:
        with (
            _EXPORT_LOAD_LOCK
        ):  # torch.export.load is not thread-safe (a module-global deserializer)
            program = torch.export.load(str(path))
    except Exception as err:
        raise ValueError(f"{path}: torch.export.load could not read it ({err})") from err
    return ExportedModel(program)


def _check_model_archive(path: Path) -> None:
    """Refuse any part of the archive that ``torch.export.load`` would unpickle."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: not a torch.export archive (not a zip file)") from None
    with archive:
        names = archive.namelist()
        roots = {name.split("/", 1)[0] for name in names}
        if len(roots) != 1:
            raise ValueError(
                f"{path}: expected one top folder in the archive, found {sorted(roots)}"
            )
        root = roots.pop() + "/"
        for name in names:
            if not _ARCHIVE_ENTRY.fullmatch(name[len(root) :]):
                raise ValueError(
                    f"{path}: holds {name!r}, which an exported model of plain tensors does not"
                )
        for config_name in (
            "data/weights/model_weights_config.json",
            "data/constants/model_constants_config.json",
        ):
            try:
                payload = json.loads(archive.read(root + config_name))
                entries = payload["config"].items()
            except (KeyError, ValueError, AttributeError, TypeError):
                raise ValueError(f"{path}: {config_name} is missing or malformed") from None
            for fqn, meta in entries:
                if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
                    raise ValueError(
                        f"{path}: {config_name} entry {fqn!r} is stored as a pickle; refusing to load it"
                    )
        try:
            torch.load(
                io.BytesIO(archive.read(root + "data/sample_inputs/model.pt")), weights_only=True
            )
        except KeyError:
            raise ValueError(f"{path}: the archive has no example inputs") from None
        except Exception as err:
            raise ValueError(
                f"{path}: its example inputs do not load with torch.load(weights_only=True) ({err}); refusing"
            ) from None
