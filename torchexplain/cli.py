"""The ``torchexplain`` command.

    torchexplain explain --model FILE --input FILE [FILE ...] [--method ig] --out DIR
    torchexplain serve PATH [--infer-uri URL | --model PT2] [--host 0.0.0.0] [--http-port 8080] [--name NAME] [--write-only]
    torchexplain fairness (--model FILE --data CSV --label COLUMN | --census) --sensitive COL [COL ...] --out DIR
    torchexplain explain-dataset SAVED_EXPLAINER DATA --out DIR [--model PT2] [--resume | --overwrite]
    torchexplain evaluate --model FILE --input FILE [FILE ...] [--methods ig kernel_shap random] --out DIR
    torchexplain kserve --model_name NAME --predictor_host HOST [--host 0.0.0.0] [--http_port 8080] [--storage_uri DIR]
    torchexplain demo [--out DIR] [--device cpu|cuda]        (a source checkout's examples/mnist_cnn.py)
    torchexplain bench [--device cuda|cpu] [--quick] [--compare baseline.json]   (its benchmarks/run.py)

``explain``, ``explain-dataset``, ``evaluate``, ``fairness``, ``serve`` and ``kserve`` are part of the installed package. ``demo`` and
``bench`` run tooling of a source checkout (examples and benchmarks are not installed)
and say so when there is none.

Exit status: 0 success; 2 a usage error (a bad flag or file: one line on stderr naming
it, no traceback); ``demo`` and ``bench`` exit with their script's status (``bench``: 1
``--compare`` found a regression, 3 a benchmark script failed; see ``benchmarks/run.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import torchexplain
from torchexplain._progress import Progress
from torchexplain.base import Explainer, is_image_batch
from torchexplain.explanation import Explanation
from torchexplain.models.exported import load_exported_model
from torchexplain.registry import registered_explainers

EXIT_OK, EXIT_USAGE = 0, 2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TENSOR_SUFFIXES = (".pt", ".pth", ".npy")


class UsageError(Exception):
    """A mistake in the command line or its files: reported in one line, exit status 2."""


# -- models and inputs -------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A callable model, and what its file says about its input (``None`` when unknown)."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    kind: str  # "torch.export" or "TorchScript"
    example_shape: tuple[int, ...] | None  # (B, C, H, W) of the exported example input
    static_batch: int | None  # the exported batch size when it was not made dynamic


def load_model(path: Path, device: torch.device) -> LoadedModel:
    """A ``torch.export`` archive (``.pt2``) or a TorchScript file, ready to call on ``device``."""
    if not path.is_file():
        raise UsageError(f"--model {path}: no such file")
    errors = []
    loaders = ("export", "jit") if path.suffix == ".pt2" else ("jit", "export")
    for loader in loaders:
        try:
            if loader == "export":
                exported = load_exported_model(path).to(device)  # the checked loader
                shape = exported.input_shape
                return LoadedModel(exported, "torch.export", shape, exported.static_batch)
            module = torch.jit.load(str(path), map_location=device)
            return LoadedModel(module, "TorchScript", None, None)
        except Exception as err:  # each loader fails in its own way on the other's files
            errors.append(
                f"{'torch.export' if loader == 'export' else 'torch.jit.load'}: "
                f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
            )
    raise UsageError(
        f"--model {path}: not a torch.export archive (.pt2, torch.export.save) nor a TorchScript "
        f"file (torch.jit.save); a state_dict or a pickled nn.Module cannot be run without its code. "
        f"({'; '.join(errors)})"
    )


def load_inputs(path: Path, expected: tuple[int, ...] | None, channels: int | None) -> torch.Tensor:
    """One input file as a float batch ``(B, ...)``.

    Images become ``(1, C, H, W)`` in [0, 1] (C from ``--channels``, else the exported
    model's input, else the file: grey stays 1 channel, colour is RGB), resized to the
    exported model's H x W when it has one. ``.pt``/``.npy`` tensors are taken as they
    are (uint8 scaled to [0, 1]); they hold one example, or a batch when they have one
    more dimension than the exported model's examples. When that is unknown
    (TorchScript): 1-D is one vector, 2-D a batch of vectors, 3-D one image ``(C, H, W)``
    and 4-D a batch of images.
    """
    if not path.is_file():
        raise UsageError(f"--input {path}: no such file")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _load_image(path, expected, channels)
    if suffix not in TENSOR_SUFFIXES:
        raise UsageError(
            f"--input {path}: unsupported file type {suffix or '(none)'!r}; expected one of "
            f"{', '.join(IMAGE_SUFFIXES + TENSOR_SUFFIXES)}"
        )
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        else:
            tensor = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UsageError(
            f"--input {path}: cannot be read as {suffix} ({str(err).splitlines()[0]})"
        ) from err
    if not isinstance(tensor, torch.Tensor):
        raise UsageError(f"--input {path}: expected a saved tensor, found {type(tensor).__name__}")
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255
    elif not tensor.is_floating_point():
        raise UsageError(f"--input {path}: expected float or uint8 values, got {tensor.dtype}")
    tensor = tensor.float()
    if expected:
        example_dims = len(expected) - 1
    else:  # unknown (TorchScript): vectors are 1-D, images 3-D; one more dimension is a batch
        example_dims = {1: 1, 2: 1, 3: 3, 4: 3}.get(tensor.dim(), 3)
    if tensor.dim() == example_dims + 1:
        batch = tensor
    elif tensor.dim() == example_dims:
        batch = tensor.unsqueeze(0)
    else:
        raise UsageError(
            f"--input {path}: shape {tuple(tensor.shape)} has {tensor.dim()} dimensions; the model "
            f"takes {example_dims} per example (or {example_dims + 1} for a batch)"
        )
    if (
        expected
        and tuple(batch.shape[1:]) != tuple(d for d in expected[1:])
        and -1 not in expected[1:]
    ):
        raise UsageError(
            f"--input {path}: examples shaped {tuple(batch.shape[1:])}, but the model was exported "
            f"for {tuple(expected[1:])}"
        )
    return batch


def _load_image(path: Path, expected: tuple[int, ...] | None, channels: int | None) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as err:
        raise UsageError(f"--input {path}: not a readable image ({err})") from err
    if channels is None and expected and len(expected) == 4 and expected[1] in (1, 3):
        channels = expected[1]
    if channels is None:
        channels = 1 if image.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    image = image.convert("L" if channels == 1 else "RGB")
    if (
        expected
        and len(expected) == 4
        and expected[2] > 0
        and image.size != (expected[3], expected[2])
    ):
        image = image.resize((expected[3], expected[2]), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255
    tensor = torch.from_numpy(array)
    tensor = tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    return tensor.unsqueeze(0).contiguous()


# -- methods -----------------------------------------------------------------------------


def cli_methods() -> dict[str, type[Explainer]]:
    """``--method`` name -> explainer: every registered explainer that declares a ``cli_name``."""
    return {cls.cli_name: cls for cls in registered_explainers().values() if cls.cli_name}


#: flags that set the method's setting of the same name, for the methods that have one
SETTING_FLAGS = ("n_steps", "max_lam_steps", "max_iter", "threshold", "precision_samples", "seed")


def _method(name: str) -> type[Explainer]:
    methods = cli_methods()
    if name not in methods:
        raise UsageError(f"--method {name}: unknown method; expected one of {', '.join(methods)}")
    return methods[name]


def _slic_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The library's SLIC settings, with ``--n-segments`` when given."""
    from torchexplain.segmentation import DEFAULT_SEGMENTATION_KWARGS

    segmentation = dict(DEFAULT_SEGMENTATION_KWARGS["slic"])
    if args.n_segments is not None:
        segmentation["n_segments"] = args.n_segments
    return segmentation


def explain_with(
    cls: type[Explainer], model: Callable, inputs: torch.Tensor, args: argparse.Namespace
) -> tuple[Explainer, Explanation]:
    """Explain ``inputs`` with the method ``cls``, its settings taken from the flags it has;
    returns the explainer (which draws the picture) and the explanation.

    ``--target`` is the class explained (methods taking ``target``), the class to reach
    (``target_class``), or, for methods that explain every class, the one drawn.
    """
    if cls.cli_needs_images and not is_image_batch(inputs):
        raise UsageError(
            f"--method {cls.cli_name} explains images (C, H, W) with C 1 or 3; got examples shaped "
            f"{tuple(inputs.shape[1:])}"
        )
    names = cls.settings_class.names()
    settings = {
        flag: getattr(args, flag)
        for flag in SETTING_FLAGS
        if flag in names and getattr(args, flag) is not None
    }
    if "segmentation_kwargs" in names:
        settings["segmentation_kwargs"] = _slic_settings(args)
    call: dict[str, Any] = {}
    if args.target is not None:
        if cls.accepts_target:
            call["target"] = args.target
        elif "target_class" in names:
            settings["target_class"] = args.target
        elif not cls.explains_every_class:
            raise UsageError(
                f"--target: {cls.name} explains the model's own prediction; drop --target for --method {cls.cli_name}"
            )
    explainer = cls(model, **settings).default_fit(inputs)
    explanation = explainer.explain(inputs, **call)
    if args.target is not None and cls.explains_every_class:  # --target picks the class drawn
        n_classes = explanation.shap_values.shape[1]
        if not 0 <= args.target < n_classes:
            raise UsageError(
                f"--target {args.target}: the model has {n_classes} outputs (0..{n_classes - 1})"
            )
        explanation.data["target"] = torch.full_like(explanation.target, args.target)
    return explainer, explanation


def _unique_stems(paths: list[Path]) -> list[str]:
    stems, seen = [], {}
    for path in paths:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UsageError(f"--device {name}: expected cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"--device {name}: no CUDA device is available (torch.cuda.is_available() is False)"
        )
    return torch.device(name)


def run_explain(args: argparse.Namespace) -> int:
    method = _method(args.method)
    device = _device(args.device)
    if args.n_steps < 1:
        raise UsageError(f"--n-steps must be at least 1, got {args.n_steps}")
    model = load_model(Path(args.model), device)
    batches = [load_inputs(Path(p), model.example_shape, args.channels) for p in args.input]
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "model": str(args.model),
        "model_kind": model.kind,
        "method": args.method,
        "torchexplain": torchexplain.__version__,
        "device": str(device),
        "inputs": [],
    }
    paths = [Path(p) for p in args.input]
    with Progress(
        len(paths), f"explain ({args.method})", enabled=None if not args.quiet else False
    ) as bar:
        for path, stem, batch in zip(paths, _unique_stems(paths), batches, strict=True):
            bar.update(path.name)
            try:
                explainer, explanation = explain_with(method, model.forward, batch.to(device), args)
            except (RuntimeError, ValueError, TypeError, IndexError) as err:
                # The model refusing this input (wrong shape, channels, dtype) is a user mistake.
                first_line = (
                    str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                )
                raise UsageError(
                    f"--input {path}: explaining it with --model {args.model} failed: {first_line}"
                ) from err
            json_path = out / f"{stem}.json"
            json_path.write_text(explanation.to_json())
            picture = explainer.draw(batch, explanation, out / f"{stem}.png")
            entry = {
                "input": str(path),
                "json": str(json_path),
                "picture": None if picture is None else str(picture),
                "examples": int(batch.shape[0]),
            }
            explained_class = explanation.data.get("target")
            if isinstance(explained_class, torch.Tensor):
                entry["target"] = explained_class.tolist()
            summary["inputs"].append(entry)
            bar.advance()
            if not args.quiet:
                bar.write(
                    f"{path}: {entry['examples']} example(s) -> {json_path}"
                    + (f", {picture}" if picture else "")
                )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not args.quiet:
        print(f"wrote {out / 'summary.json'}")
    return EXIT_OK


# -- tooling in the source checkout: the demo and the benchmarks ---------------------------

#: commands that run a script of the source checkout (tooling, not installed with the package)
CHECKOUT_SCRIPTS = {
    "demo": Path("examples") / "mnist_cnn.py",
    "bench": Path("benchmarks") / "run.py",
}


def checkout_script(command: str) -> Path:
    """The checkout's script that ``command`` runs: next to the installed package (an editable
    install), or under the current directory."""
    relative = CHECKOUT_SCRIPTS[command]
    package_parent = Path(__file__).resolve().parent.parent
    for root in (package_parent, Path.cwd()):
        if (root / relative).is_file():
            return (root / relative).resolve()
    raise UsageError(
        f"torchexplain {command} runs {relative.as_posix()} of a source checkout (examples and benchmarks "
        f"are not installed with the package), and none was found next to the package ({package_parent}) "
        f"or in the current directory ({Path.cwd()}); clone the repository and run the command inside it "
        f"(or python {relative.as_posix()} there)"
    )


def run_checkout_script(command: str, arguments: list[str]) -> int:
    """Run the checkout's script for ``command`` with ``arguments``; its exit status."""
    script = checkout_script(command)
    env = dict(os.environ, TORCHEXPLAIN_PROG=f"torchexplain {command}")
    return subprocess.run([sys.executable, str(script), *arguments], env=env).returncode


# -- the parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchexplain", description="Fast explanations for PyTorch models."
    )
    parser.add_argument(
        "--version", action="version", version=f"torchexplain {torchexplain.__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in (
        (
            "demo",
            "the MNIST demo: a source checkout's examples/mnist_cnn.py (its flags, --help too, pass through)",
        ),
        (
            "bench",
            "run every benchmark: a source checkout's benchmarks/run.py (its flags, --help too, pass through)",
        ),
    ):
        commands.add_parser(name, help=text, description=text, add_help=False)
    _add_explain_parser(commands)
    _add_dataset_parser(commands)
    _add_evaluate_parser(commands)
    _add_fairness_parser(commands)
    _add_serve_parser(commands)
    kserve = commands.add_parser(
        "kserve", help="serve a saved explainer as a KServe explainer (v1 :explain)"
    )
    from torchexplain.serving import kserve as kserve_module

    kserve_module.add_arguments(kserve)
    return parser


def _add_explain_parser(commands: Any) -> None:
    explain = commands.add_parser(
        "explain", help="explain a saved model's predictions on input files"
    )
    add = explain.add_argument
    add("--model", required=True, help="torch.export archive (.pt2) or TorchScript file")
    add(
        "--input",
        required=True,
        nargs="+",
        metavar="FILE",
        help="PNG/JPEG images, or .pt/.npy tensors (one example or a batch)",
    )
    add("--method", default="ig", help=f"one of {', '.join(cli_methods())} (default ig)")
    add("--out", required=True, help="folder for <input>.json, <input>.png and summary.json")
    add("--target", type=int, default=None, help="class to explain (default: the prediction)")
    add("--n-steps", type=int, default=50, help="ig: steps on the path (default 50)")
    add(
        "--max-lam-steps",
        type=int,
        default=None,
        help="counterfactual: rounds of the lambda search (default: the library's, 10)",
    )
    add(
        "--max-iter",
        type=int,
        default=None,
        help="counterfactual: optimiser steps per round (default: the library's, 1000)",
    )
    add("--threshold", type=float, default=0.95, help="anchor: precision to reach (default 0.95)")
    add(
        "--precision-samples",
        choices=("reuse", "fresh"),
        default=None,
        help="anchor: estimate each anchor's precision from reused samples (Alibi's rule, the "
        "default) or only from samples drawn for it",
    )
    add(
        "--n-segments",
        type=int,
        default=None,
        help="anchor, kernel_shap: SLIC superpixels per image (default: the library's, 10)",
    )
    add("--seed", type=int, default=0, help="anchor, kernel_shap: seed of the sampling (default 0)")
    add(
        "--channels",
        type=int,
        choices=(1, 3),
        default=None,
        help="images: 1 (grey) or 3 (RGB); default from the exported model, else the file",
    )
    add("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add("--quiet", action="store_true", help="no progress bar or per-file lines")


def _add_dataset_parser(commands: Any) -> None:
    dataset = commands.add_parser(
        "explain-dataset",
        help="explain every row of a file with a saved explainer, into resumable shards",
    )
    add = dataset.add_argument
    add("path", help="the folder explainer.save() wrote")
    add("data", help=".npy, .safetensors, .csv (numeric, with a header) or .parquet rows")
    add("--out", required=True, help="folder of shards (and manifest.json when done)")
    add("--model", default=None, metavar="PT2", help="the model, for a saved black-box explainer")
    add("--drop", nargs="*", default=[], metavar="COLUMN", help="CSV/Parquet columns to leave out")
    add("--chunk-rows", type=int, default=256, help="rows per shard (default 256)")
    add("--resume", action="store_true", help="finish a run that was stopped")
    add("--overwrite", action="store_true", help="start over in a folder that holds another run")
    add("--device", default=None, help="cpu or cuda (default: the saved explainer's)")
    add("--quiet", action="store_true", help="no progress bar")


def run_explain_dataset(args: argparse.Namespace) -> int:
    """``torchexplain explain-dataset``: shards of explanations, resumable, split by torchrun rank."""
    from torchexplain.dataset import explain_dataset, read_rows
    from torchexplain.saving import load_explainer

    out = Path(args.out)
    if out.exists() and any(out.glob("shard-*")) and not (args.resume or args.overwrite):
        raise UsageError(
            f"--out {out}: holds shards of a run; give --resume to finish it or --overwrite"
        )
    try:
        rows = read_rows(args.data, args.drop)
        options = {} if args.device is None else {"device": args.device}
        model = None
        if args.model is not None:
            model = load_model(Path(args.model), _device(args.device)).forward
        explainer = load_explainer(args.path, model=model, **options)
        manifest = explain_dataset(
            explainer,
            rows,
            out,
            chunk_rows=args.chunk_rows,
            overwrite=args.overwrite,
            progress=False if args.quiet else None,
        )
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None
    print(
        f"torchexplain explain-dataset: {manifest['rows']} rows in {len(manifest['shards'])} shards, {out / 'manifest.json'}"
    )
    return EXIT_OK


def _add_evaluate_parser(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="score explanation methods on a saved model's inputs (infidelity, sensitivity, deletion, insertion)",
    )
    add = evaluate.add_argument
    add("--model", required=True, help="torch.export archive (.pt2) or TorchScript file")
    add("--input", required=True, nargs="+", metavar="FILE", help="images or .pt/.npy tensors")
    add(
        "--methods",
        nargs="+",
        default=["ig", "kernel_shap", "random"],
        help="methods with their defaults (ig, kernel_shap, ...) and 'random', the control",
    )
    add(
        "--metrics",
        nargs="+",
        default=None,
        help="infidelity sensitivity_max deletion insertion (default all)",
    )
    add("--n-sensitivity-samples", type=int, default=5, help="explanations per example (default 5)")
    add(
        "--n-steps",
        type=int,
        default=20,
        help="steps of the deletion/insertion curves (default 20)",
    )
    add(
        "--model-output",
        default="logits",
        choices=("logits", "probabilities"),
        help="what the model returns (the curves follow probabilities)",
    )
    add("--channels", type=int, choices=(1, 3), default=None)
    add("--seed", type=int, default=0)
    add("--out", required=True, help="folder for evaluation.json and evaluation.png")
    add("--device", default=None, help="cpu or cuda (default: cuda when available)")


def run_evaluate(args: argparse.Namespace) -> int:
    """``torchexplain evaluate``: every method on every input, one table and one picture."""
    from torchexplain.evaluation import METRICS, evaluate, random_attributions

    device = _device(args.device)
    model = load_model(Path(args.model), device)
    batches = [load_inputs(Path(p), model.example_shape, args.channels) for p in args.input]
    shapes = {tuple(b.shape[1:]) for b in batches}
    if len(shapes) != 1:
        raise UsageError(f"--input: the examples must share one shape, got {sorted(shapes)}")
    inputs = torch.cat(batches).to(device)
    methods: dict[str, Any] = {}
    for name in args.methods:
        if name == "random":
            methods[name] = random_attributions(args.seed)
            continue
        cls = _method(name)
        if cls.cli_needs_images and not is_image_batch(inputs):
            raise UsageError(
                f"--methods {name} explains images; got examples shaped {tuple(inputs.shape[1:])}"
            )
        settings = {"seed": args.seed} if "seed" in cls.settings_class.names() else {}
        methods[name] = cls(model.forward, **settings).default_fit(inputs)
    chosen = args.metrics or list(METRICS)
    try:
        evaluation = evaluate(
            model.forward,
            inputs,
            methods,
            metrics_to_run=chosen,
            n_sensitivity_samples=args.n_sensitivity_samples,
            n_steps=args.n_steps,
            model_output=args.model_output,
            seed=args.seed,
        )
        paths = evaluation.save(args.out)
    except ImportError as err:
        raise UsageError(str(err)) from None
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None
    table = evaluation.table()
    for method in evaluation.methods:
        print(
            f"{method:>16}  " + "  ".join(f"{k} {table[method][k]:.4g}" for k in evaluation.metrics)
        )
    print(f"torchexplain evaluate: {paths['json']} and {paths['png']}")
    return EXIT_OK


def _add_fairness_parser(commands: Any) -> None:
    fairness = commands.add_parser(
        "fairness",
        help="bias evaluation of a model on a table: the data, the model per group, explanations per group",
    )
    add = fairness.add_argument
    add(
        "--model",
        default=None,
        help="torch.export archive (.pt2) or TorchScript file: rows -> class scores",
    )
    add("--data", default=None, metavar="CSV", help="the rows evaluated: a CSV with a header row")
    add("--label", default=None, help="the CSV's label column")
    add(
        "--train",
        default=None,
        metavar="CSV",
        help="rows the explainers learn from (default --data)",
    )
    add(
        "--categorical",
        nargs="*",
        default=[],
        metavar="COLUMN",
        help="numeric columns that are categories (text columns always are)",
    )
    add(
        "--census",
        action="store_true",
        help="the bundled census table and the zoo's census MLP (trained and cached on first use)",
    )
    add("--sensitive", nargs="+", required=True, metavar="COLUMN", help="the protected columns")
    add("--out", required=True, help="folder for fairness.json and fairness.html")
    add("--model-output", default="logits", choices=("logits", "probabilities"))
    add("--positive-class", type=int, default=1, help="the favourable class (default 1)")
    add("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    add("--rows", type=int, default=None, help="evaluate only the first ROWS rows")
    add(
        "--steps",
        nargs="+",
        default=None,
        metavar="STEP",
        help="data model importance gap anchors recourse flip (default all)",
    )
    add("--seed", type=int, default=0)
    add("--device", default=None, help="cpu or cuda (default: cuda when available)")


def read_table(
    path: Path, categorical: list[str]
) -> tuple[list[str], np.ndarray, dict[int, list[str]]]:
    """A CSV's columns as a float matrix, with the names of each categorical column's codes.

    Text columns are coded 0..K-1 in the sorted order of the values present (give a model that
    expects fixed codes the codes themselves); numeric columns named in ``categorical`` are
    codes already and are kept as they are."""
    import csv

    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        raise UsageError(f"{path}: needs a header row and at least one row")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    bad = [i + 2 for i, row in enumerate(body) if len(row) != len(header)]
    if bad:
        raise UsageError(f"{path}: rows {bad[:5]} do not have {len(header)} fields")
    unknown = sorted(set(categorical) - set(header))
    if unknown:
        raise UsageError(f"--categorical {unknown}: not columns of {path} ({header})")
    columns, names = [], {}
    for j, name in enumerate(header):
        values = [row[j].strip() for row in body]
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            numbers = None
        if numbers is None:  # text: coded in the sorted order of the values present
            levels = sorted(set(values))
            code = {v: i for i, v in enumerate(levels)}
            columns.append([code[v] for v in values])
            names[j] = levels
            continue
        if name in categorical:  # codes already: kept, so the model sees what it was trained on
            if any(v < 0 or v != int(v) for v in numbers):
                raise UsageError(f"--categorical {name}: its values must be codes 0, 1, 2, ...")
            names[j] = [str(k) for k in range(int(max(numbers)) + 1)]
        columns.append(numbers)
    return header, np.asarray(columns, dtype=np.float32).T, names


def _fairness_inputs(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    if args.census:
        if args.model or args.data:
            raise UsageError(
                "--census uses the bundled table and model: leave out --model and --data"
            )
        from torchexplain.datasets import load_census
        from torchexplain.zoo import pretrained_census_mlp

        data = load_census()
        model, _ = pretrained_census_mlp()
        return dict(
            model=model.to(device).eval(),
            X=data.X_test,
            y=data.y_test,
            train_data=data.X_train,
            feature_names=data.feature_names,
            categorical_names=data.categorical_names,
        )
    if not (args.model and args.data and args.label):
        raise UsageError("give --model, --data and --label (or --census)")
    header, table, names = read_table(Path(args.data), args.categorical)
    if args.label not in header:
        raise UsageError(f"--label {args.label!r}: not a column of {args.data} ({header})")
    label = header.index(args.label)
    keep = [j for j in range(len(header)) if j != label]
    train = None
    if args.train:
        train_header, train_table, _ = read_table(Path(args.train), args.categorical)
        if train_header != header:
            raise UsageError(f"--train {args.train}: its columns differ from --data's")
        train = train_table[:, keep]
    return dict(
        model=load_model(Path(args.model), device).forward,
        X=table[:, keep],
        y=table[:, label].astype(np.int64),
        train_data=train,
        feature_names=[header[j] for j in keep],
        categorical_names={keep.index(j): v for j, v in names.items() if j != label},
    )


def run_fairness(args: argparse.Namespace) -> int:
    """``torchexplain fairness``: the report on a model and a table."""
    from torchexplain.fairness.report import STEPS, fairness_report

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    inputs = _fairness_inputs(args, device)
    if args.rows is not None:
        if args.rows < 1:
            raise UsageError(f"--rows must be >= 1, got {args.rows}")
        inputs["X"], inputs["y"] = inputs["X"][: args.rows], inputs["y"][: args.rows]
    try:
        result = fairness_report(
            inputs.pop("model"),
            inputs.pop("X"),
            inputs.pop("y"),
            args.out,
            train_data=inputs.pop("train_data"),
            sensitive=args.sensitive,
            model_output=args.model_output,
            positive_class=args.positive_class,
            n_boot=args.n_boot,
            steps=tuple(args.steps or STEPS),
            seed=args.seed,
            device=str(device),
            **inputs,
        )
    except ImportError as err:
        raise UsageError(str(err)) from None
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None
    print(f"torchexplain fairness: {result['paths']['html']} and {result['paths']['json']}")
    return EXIT_OK


def _add_serve_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve", help="serve a saved explainer with MLServer (writes its settings for you)"
    )
    add = serve.add_argument
    add("path", help="the folder explainer.save() wrote")
    add(
        "--infer-uri",
        default=None,
        help="the model's prediction endpoint (black-box explainers), e.g. grpc://127.0.0.1:8081/v2/models/income "
        "(v2 over gRPC) or http://127.0.0.1:8080/v2/models/income/infer",
    )
    add(
        "--infer-protocol",
        default="v2",
        choices=("v2", "kserve_v1", "seldon_v1"),
        help="protocol that endpoint speaks (default v2)",
    )
    add(
        "--model",
        default=None,
        metavar="PT2",
        help="also serve this torch.export archive (probabilities) in the same server; --infer-uri then defaults to it (over gRPC)",
    )
    add("--model-name", default="model", help="name of the --model (default model)")
    add("--name", default="explainer", help="the explainer's model name (default explainer)")
    add("--http-port", type=int, default=8080, help="HTTP port (default 8080)")
    add("--grpc-port", type=int, default=8081, help="gRPC port (default 8081)")
    add(
        "--host",
        default="0.0.0.0",
        help="address to listen on (default 0.0.0.0, every interface, for containers; 127.0.0.1: this machine only)",
    )
    add(
        "--rows",
        default="all",
        choices=("all", "first"),
        help="explain every row of a request (default) or only the first, as Alibi's runtime",
    )
    add("--max-rows", type=int, default=1024, help="most rows per request (default 1024)")
    add(
        "--settings-dir",
        default=None,
        help="where to write the MLServer settings (default: a new temporary folder)",
    )
    add(
        "--init-parameters",
        default=None,
        metavar="JSON",
        help='settings to set on load, as a JSON object, e.g. \'{"device": "cuda"}\'',
    )
    add(
        "--explanation-format",
        default="torchexplain",
        choices=("torchexplain", "alibi"),
        help="answers as torchexplain's JSON (default) or in Alibi's layout (what alibi's "
        "Explanation.from_json parses); a request may choose with explain_parameters",
    )
    add("--debug", action="store_true", help="MLServer's debug mode: a log line per request")
    add("--write-only", action="store_true", help="write the settings, print where, do not start")


def run_serve(args: argparse.Namespace) -> int:
    """``torchexplain serve``: write the MLServer repository, then start MLServer on it."""
    from torchexplain.serving import deploy

    extra = {"rows": args.rows, "max_rows": args.max_rows}
    if args.infer_protocol != "v2":
        extra["infer_protocol"] = args.infer_protocol
    if args.init_parameters:
        extra["init_parameters"] = args.init_parameters
    if args.explanation_format != "torchexplain":
        extra["explanation_format"] = args.explanation_format
    try:
        repository = deploy.write_repository(
            args.path,
            args.settings_dir,
            name=args.name,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            host=args.host,
            infer_uri=args.infer_uri,
            model_path=args.model,
            model_name=args.model_name,
            debug=args.debug,
            **extra,
        )
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None
    print(f"torchexplain serve: MLServer settings in {repository}", flush=True)
    if args.write_only:
        return EXIT_OK
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(
        f"torchexplain serve: explain at http://{local}:{args.http_port}/v2/models/{args.name}/infer",
        flush=True,
    )
    try:
        deploy.start(repository)
    except RuntimeError as err:
        raise UsageError(str(err)) from None
    return EXIT_OK  # pragma: no cover - start() replaces the process


def run_kserve(args: argparse.Namespace) -> int:
    """``torchexplain kserve``: the KServe explainer container's entry point."""
    from torchexplain.serving import kserve

    try:
        return kserve.main(args=args)
    except ImportError as err:
        raise UsageError(f'{err}: pip install "torchexplain[serve]"') from None
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docs)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, passed_on = parser.parse_known_args(argv)
    if args.command not in CHECKOUT_SCRIPTS and passed_on:
        parser.error(f"unrecognized arguments: {' '.join(passed_on)}")
    try:
        if args.command in CHECKOUT_SCRIPTS:
            return run_checkout_script(args.command, [a for a in passed_on if a != "--"])
        if args.command == "explain":
            return run_explain(args)
        if args.command == "serve":
            return run_serve(args)
        if args.command == "fairness":
            return run_fairness(args)
        if args.command == "evaluate":
            return run_evaluate(args)
        if args.command == "explain-dataset":
            return run_explain_dataset(args)
        return run_kserve(args)
    except UsageError as err:
        print(f"torchexplain {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"torchexplain {args.command}: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:  # the console_scripts entry point
    sys.exit(main())


if __name__ == "__main__":
    console_main()
