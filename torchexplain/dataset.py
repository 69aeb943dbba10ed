"""Explain a whole dataset: streamed in chunks, written as shards, resumable, split by rank.

``explain_dataset(explainer, inputs, out)`` explains ``inputs`` chunk by chunk and writes one shard
per chunk into ``out``: ``shard-<start>-<stop>.safetensors`` (every per-row tensor of the
explanation) and ``shard-<start>-<stop>.json`` (the rest, and the safetensors file's sha256).
A shard is done when its JSON is in place (written last, atomically), so a run killed at any point
leaves only whole shards; the same call again skips the shards that are done and checks their
checksums. ``run.json`` fingerprints the run (explainer, settings, fitted state, inputs, chunk
size), and a different one is refused unless ``overwrite=True``. ``manifest.json`` is written
when every shard is done.

Under ``torchrun`` (``WORLD_SIZE > 1``) each rank takes every ``WORLD_SIZE``-th shard, explains it
on its own device (``cuda:LOCAL_RANK`` when there is CUDA), and rank 0 writes the manifest after
a barrier: no DDP, one explainer per rank. Explainers are batch invariant (a row's explanation
does not depend on the other rows of its call), so the shards together equal one call on all rows.

``load_results(out)`` reads it back: fields in row order (``results["attributions"]``), shard by
shard (``results.shards()``), each shard checked against its checksum.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchexplain import _checks
from torchexplain._progress import Progress
from torchexplain.explanation import Explanation

__all__ = ["DatasetResults", "ExplainBatches", "explain_dataset", "load_results", "read_rows"]

RUN_FILE, MANIFEST_FILE = "run.json", "manifest.json"
#: rows per shard when none is given
DEFAULT_CHUNK_ROWS = 256


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _as_rows(inputs: Any) -> torch.Tensor:
    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(np.ascontiguousarray(inputs))
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(
            f"inputs must be a tensor or a numpy array (N, ...), got {type(inputs).__name__}"
        )
    if inputs.dim() < 1 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must have at least one row, got shape {tuple(inputs.shape)}")
    return inputs


def _check_finite(rows: torch.Tensor, chunk_rows: int) -> None:
    """NaN or infinite values are refused before any work, naming the rows."""
    if not rows.is_floating_point():
        return
    for start in range(0, rows.shape[0], chunk_rows):
        chunk = rows[start : start + chunk_rows]
        bad = ~torch.isfinite(chunk.reshape(chunk.shape[0], -1)).all(1)
        if bool(bad.any()):
            where = (bad.nonzero().flatten() + start).tolist()
            raise ValueError(
                f"inputs rows {where[:10]} (in rows {start}..{start + chunk.shape[0] - 1}) have NaN "
                "or infinite values; nothing was explained"
            )


def _fingerprint(explainer: Any, rows: torch.Tensor, chunk_rows: int) -> dict[str, Any]:
    digest = hashlib.sha256()
    flat = rows.detach().cpu().contiguous()
    digest.update(str((tuple(flat.shape), str(flat.dtype))).encode())
    digest.update(
        flat.numpy().tobytes() if flat.dtype != torch.bfloat16 else flat.float().numpy().tobytes()
    )
    fitted = hashlib.sha256()
    data, tensors = explainer._fitted_state()
    fitted.update(json.dumps(data, sort_keys=True, default=repr).encode())
    for name in sorted(tensors):
        fitted.update(name.encode())
        fitted.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    config = {k: v for k, v in explainer.config.items() if k not in ("device", "progress")}
    return {
        "explainer": explainer.name,
        "settings": json.loads(json.dumps(config, sort_keys=True, default=repr)),
        "fitted": fitted.hexdigest(),
        "inputs": {
            "sha256": digest.hexdigest(),
            "shape": list(rows.shape),
            "dtype": str(rows.dtype),
        },
        "chunk_rows": chunk_rows,
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    names = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
                names += [f"{key}.{k}" for k in _differences(old[key], new[key])]
            else:
                names.append(key)
    return names


def _rank() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _shard_name(start: int, stop: int) -> str:
    return f"shard-{start:010d}-{stop:010d}"


def _split(explanation: Explanation, n: int) -> tuple[dict[str, torch.Tensor], Explanation]:
    """The per-row tensors (for safetensors) and the rest (for JSON)."""
    tensors, rest = {}, {}
    for key, value in explanation.data.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == n:
            tensors[key] = value.detach().cpu().contiguous()
        else:
            rest[key] = value
    return tensors, Explanation(explanation.meta, rest)


def _claim_folder(out: Path, fingerprint: dict[str, Any], overwrite: bool) -> None:
    """Write ``run.json``; a folder holding another run is refused, or cleared with ``overwrite``."""
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / RUN_FILE
    if run_file.exists():
        old = json.loads(run_file.read_text())
        if old != fingerprint:
            if not overwrite:
                raise ValueError(
                    f"{out} holds a run with other {', '.join(_differences(old, fingerprint))}; "
                    "give overwrite=True (--overwrite) to start over, or another folder"
                )
            for stale in out.glob("shard-*"):
                stale.unlink()
            (out / MANIFEST_FILE).unlink(missing_ok=True)
    _atomic_write(run_file, json.dumps(fingerprint, indent=1).encode())


def _write_shard(out: Path, name: str, explanation: Explanation, start: int, stop: int) -> None:
    """The tensors first, then the JSON that records their checksum: the shard's completion."""
    from safetensors.torch import save as save_tensors

    tensors, rest = _split(explanation, stop - start)
    data = save_tensors(tensors)
    _atomic_write(out / f"{name}.safetensors", data)
    record = {
        "start": start,
        "stop": stop,
        "sha256": hashlib.sha256(data).hexdigest(),
        "tensors": sorted(tensors),
        "rest": json.loads(rest.to_json()),
    }
    _atomic_write(out / f"{name}.json", json.dumps(record).encode())


def _shard_done(out: Path, name: str) -> bool:
    """Done: its JSON is there and the tensors' file matches the checksum it records."""
    record = out / f"{name}.json"
    if not record.exists():
        return False
    try:
        expected = json.loads(record.read_text())["sha256"]
    except (ValueError, KeyError):
        return False
    tensors = out / f"{name}.safetensors"
    return tensors.exists() and _sha256(tensors) == expected


def explain_dataset(
    explainer: Any,
    inputs: Any,
    out: str | Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    explain_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    on_shard: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Explain every row of ``inputs`` into shards under ``out``; resume what a killed run left.

    Args:
        explainer: an :class:`~torchexplain.base.Explainer` (fitted where it needs to be), or the
            folder ``explainer.save()`` wrote (loaded with :func:`~torchexplain.load_explainer`;
            a white-box explainer saved with ``example_inputs`` brings its exported model).
        inputs: ``(N, ...)`` rows (tensor or numpy array).
        out: the folder of shards.
        chunk_rows: rows per shard (and per ``explain`` call).
        explain_options: per-call settings given to every ``explain`` call.
        overwrite: start over when ``out`` holds a different run (else a ``ValueError`` naming
            what differs).
        progress: a progress bar with rows/s and an ETA (None: when the output is a terminal).
        on_shard: called with each shard's name once it is written (tests kill the run here).

    Returns:
        The manifest (also written to ``out/manifest.json`` once every shard is done).
    """
    from torchexplain.saving import load_explainer

    if isinstance(explainer, (str, Path)):
        explainer = load_explainer(explainer)
    if not hasattr(explainer, "explain") or not hasattr(explainer, "_fitted_state"):
        raise TypeError(
            f"explainer must be an Explainer or a saved explainer's folder, got {type(explainer).__name__}"
        )
    chunk_rows = _checks.check_int("chunk_rows", chunk_rows, minimum=1)
    rows = _as_rows(inputs)
    _check_finite(rows, chunk_rows)
    out = Path(out)
    rank, world = _rank()
    fingerprint = _fingerprint(explainer, rows, chunk_rows)
    if rank == 0:
        _claim_folder(out, fingerprint, overwrite)
    _barrier(world)
    n = rows.shape[0]
    plan = [(start, min(start + chunk_rows, n)) for start in range(0, n, chunk_rows)]
    mine = [span for i, span in enumerate(plan) if i % world == rank]
    todo = [span for span in mine if not _shard_done(out, _shard_name(*span))]
    options = dict(explain_options or {})
    device = _rank_device(explainer, world)
    with Progress(
        sum(b - a for a, b in todo),
        f"explain_dataset (rank {rank})" if world > 1 else "explain_dataset",
        enabled=progress,
    ) as bar:
        for start, stop in todo:
            name = _shard_name(start, stop)
            batch = rows[start:stop]
            if device is not None:
                batch = batch.to(device)
            explanation = explainer.explain(batch, **options)
            _write_shard(out, name, explanation, start, stop)
            bar.advance(stop - start)
            if on_shard is not None:
                on_shard(name)
    _barrier(world)
    manifest = {
        "run": fingerprint,
        "rows": n,
        "world_size": world,
        "shards": [
            {
                "name": _shard_name(a, b),
                "start": a,
                "stop": b,
                "sha256": json.loads((out / f"{_shard_name(a, b)}.json").read_text())["sha256"],
            }
            for a, b in plan
        ],
    }
    if rank == 0:
        _atomic_write(out / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
    _barrier(world)
    return manifest


def _rank_device(explainer: Any, world: int) -> torch.device | None:
    """Under torchrun with CUDA, each rank's rows go to its own GPU (``LOCAL_RANK``)."""
    if world > 1 and torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device
    return None


@dataclasses.dataclass
class DatasetResults:
    """The explanations :func:`explain_dataset` wrote, read back lazily.

    Attributes:
        out: the folder.
        manifest: its manifest.
    """

    out: Path
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return int(self.manifest["rows"])

    def shards(self) -> Iterator[Explanation]:
        """Each shard as an :class:`~torchexplain.explanation.Explanation`, in row order, checked
        against its checksum."""
        from safetensors.torch import load as load_tensors

        for shard in self.manifest["shards"]:
            path = self.out / f"{shard['name']}.safetensors"
            data = path.read_bytes() if path.exists() else b""
            if hashlib.sha256(data).hexdigest() != shard["sha256"]:
                raise ValueError(
                    f"{path}: missing, truncated or changed (its sha256 is not the manifest's); "
                    "run explain_dataset again with the same arguments to recompute it"
                )
            record = json.loads((self.out / f"{shard['name']}.json").read_text())
            rest = Explanation.from_json(json.dumps(record["rest"]))
            yield Explanation(rest.meta, {**load_tensors(data), **rest.data})

    def __getitem__(self, field: str) -> Any:
        """One field for every row, in row order (tensors concatenated, per-row lists joined);
        a field that is not per row comes from the first shard."""
        parts = [shard.data[field] for shard in self.shards()]
        first = parts[0]
        sizes = [s["stop"] - s["start"] for s in self.manifest["shards"]]
        if isinstance(first, torch.Tensor) and first.dim() >= 1 and first.shape[0] == sizes[0]:
            return torch.cat(parts)
        if isinstance(first, list) and len(first) == sizes[0]:
            return [item for part in parts for item in part]
        return first


def load_results(out: str | Path) -> DatasetResults:
    """The results of :func:`explain_dataset` in ``out`` (its manifest must be there: a run that
    was killed is finished by running it again)."""
    out = Path(out)
    manifest = out / MANIFEST_FILE
    if not manifest.exists():
        raise ValueError(
            f"{out}: no {MANIFEST_FILE}; the run is not finished (run explain_dataset again to resume)"
        )
    return DatasetResults(out, json.loads(manifest.read_text()))


class ExplainBatches:
    """A callable class for ``ray.data.Dataset.map_batches``: each actor loads the saved explainer
    once (the safe loader: JSON and safetensors, nothing unpickled; the folder is what travels),
    and turns a batch of rows into columns of explanation fields.

    ``ds.map_batches(ExplainBatches, fn_constructor_kwargs={"path": "income-explainer"},
    batch_format="numpy", batch_size=256, concurrency=2)`` (``num_gpus=1`` per actor on GPUs).

    Args:
        path: the folder ``explainer.save()`` wrote.
        column: the batch's column that holds the rows (default: every column, stacked in order).
        fields: the explanation fields to return (default every per-row field).
        keep: batch columns passed through to the output (a row id, to key the results by).
        explain_options: per-call settings.
        load_options: passed to :func:`~torchexplain.load_explainer` (``device``, settings).
    """

    def __init__(
        self,
        path: str,
        column: str | None = None,
        fields: list[str] | None = None,
        keep: list[str] | None = None,
        explain_options: dict[str, Any] | None = None,
        load_options: dict[str, Any] | None = None,
    ) -> None:
        from torchexplain.saving import load_explainer

        self.explainer = load_explainer(path, **(load_options or {}))
        self.column, self.fields, self.keep = column, fields, list(keep or [])
        self.options = dict(explain_options or {})

    def rows_of(self, batch: Any) -> np.ndarray:
        if isinstance(batch, dict):
            batch = {c: v for c, v in batch.items() if c not in self.keep}
            if self.column is not None:
                return (
                    np.stack(list(batch[self.column]))
                    if batch[self.column].dtype == object
                    else batch[self.column]
                )
            return np.stack([np.asarray(batch[c], dtype=np.float32) for c in batch], axis=1)
        return np.asarray(batch)

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        if hasattr(batch, "to_numpy") and hasattr(batch, "columns"):  # pandas
            batch = {c: batch[c].to_numpy() for c in batch.columns}
        missing = [c for c in self.keep if not isinstance(batch, dict) or c not in batch]
        if missing:
            raise ValueError(f"keep: the batch has no columns {missing}")
        rows = self.rows_of(batch)
        explanation = self.explainer.explain(
            torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)), **self.options
        )
        tensors, rest = _split(explanation, rows.shape[0])
        columns = {k: v.numpy() for k, v in tensors.items()}
        for key, value in rest.data.items():
            if isinstance(value, list) and len(value) == rows.shape[0]:
                columns[key] = np.array([json.dumps(v, default=repr) for v in value], dtype=object)
        if self.fields is not None:
            missing = [f for f in self.fields if f not in columns]
            if missing:
                raise ValueError(
                    f"fields {missing} are not per-row fields of {self.explainer.name}: {sorted(columns)}"
                )
            columns = {f: columns[f] for f in self.fields}
        for name in self.keep:
            columns[name] = np.asarray(batch[name])
        return columns


def read_rows(path: str | Path, drop: list[str] | None = None) -> torch.Tensor:
    """Rows from a ``.npy``, ``.safetensors`` (its only tensor, or ``rows``), ``.csv`` (numeric,
    with a header) or ``.parquet`` file (pandas and pyarrow), ``drop`` naming columns to leave out."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False))
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if len(tensors) != 1 and "rows" not in tensors:
            raise ValueError(f"{path}: holds {sorted(tensors)}; name the rows tensor 'rows'")
        return tensors["rows"] if "rows" in tensors else next(iter(tensors.values()))
    if suffix in (".csv", ".parquet"):
        if suffix == ".csv":
            import csv

            with path.open(newline="") as handle:
                table = list(csv.reader(handle))
            header, body = table[0], table[1:]
            columns = {name: [row[j] for row in body] for j, name in enumerate(header)}
        else:
            try:
                import pandas as pd

                frame = pd.read_parquet(path)
            except ImportError as err:
                raise ValueError(
                    f"{path}: reading Parquet needs pandas and pyarrow ({err})"
                ) from err
            columns = {str(c): frame[c].tolist() for c in frame.columns}
        unknown = sorted(set(drop or []) - set(columns))
        if unknown:
            raise ValueError(f"{path}: no columns {unknown} to drop (columns: {list(columns)})")
        kept = [c for c in columns if c not in set(drop or [])]
        try:
            values = np.array([[float(v) for v in columns[c]] for c in kept], dtype=np.float32).T
        except ValueError as err:
            raise ValueError(f"{path}: every kept column must be numeric ({err})") from err
        return torch.from_numpy(np.ascontiguousarray(values))
    raise ValueError(f"{path}: expected .npy, .safetensors, .csv or .parquet")
