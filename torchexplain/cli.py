"""The ``torchexplain`` command.

    torchexplain demo [--out DIR] [--device cpu|cuda]
    torchexplain explain --model FILE --input FILE [FILE ...] [--method ig] --out DIR
    torchexplain bench [--device cuda|cpu] [--quick] [--out results.json] [--compare baseline.json]
    torchexplain serve PATH [--infer-uri URL | --model PT2] [--http-port 8080] [--name NAME] [--write-only]
    torchexplain kserve --model_name NAME --predictor_host HOST [--http_port 8080] [--storage_uri DIR]

Exit status: 0 success; 1 ``bench --compare`` found a regression; 2 a usage error
(a bad flag or file: one line on stderr naming it, no traceback); 3 a benchmark
script failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import torchexplain
from torchexplain import _bench, visualize
from torchexplain._progress import Progress
from torchexplain.explanation import Explanation
from torchexplain.models.exported import load_exported_model

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_BENCH_FAILED = 0, 1, 2, 3
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


@dataclass
class CliMethod:
    """One ``--method``: the torchexplain attribute it needs and how to run and draw it."""

    attribute: str
    explain: Callable[[Callable, torch.Tensor, argparse.Namespace], Explanation]
    draw: Callable[[torch.Tensor, Explanation, Path], Path | None]

    @property
    def available(self) -> bool:
        return hasattr(torchexplain, self.attribute)


def _explain_ig(model: Callable, inputs: torch.Tensor, args: argparse.Namespace) -> Explanation:
    explainer = torchexplain.IntegratedGradients(model, n_steps=args.n_steps)
    return explainer.explain(inputs, target=args.target)


def _is_image(x: torch.Tensor) -> bool:
    return x.dim() == 3 and x.shape[0] in (1, 3)


def _draw_attributions(inputs: torch.Tensor, explanation: Explanation, path: Path) -> Path | None:
    if not _is_image(inputs[0]):
        return None
    attributions = explanation.attributions.detach().cpu()
    rows, captions = [], []
    for i in range(inputs.shape[0]):
        image = inputs[i].cpu()
        rows.append(
            [image, visualize.heatmap(attributions[i]), visualize.overlay(image, attributions[i])]
        )
        caption = (
            f"#{i} target {int(explanation.target[i])}"
            if explanation.target is not None
            else f"#{i}"
        )
        delta = explanation.data.get("convergence_delta")
        if delta is not None:
            caption += f"  delta {float(delta[i]):+.1e}"
        captions.append(caption)
    return visualize.save_grid(rows, captions, path, titles=["input", "attribution", "overlay"])


def _explain_counterfactual(
    model: Callable, inputs: torch.Tensor, args: argparse.Namespace
) -> Explanation:
    settings: dict[str, Any] = {"target_class": "other" if args.target is None else args.target}
    if args.max_lam_steps is not None:
        settings["max_lam_steps"] = args.max_lam_steps
    if args.max_iter is not None:
        settings["max_iter"] = args.max_iter
    return torchexplain.Counterfactual(model, **settings).explain(inputs)


def _draw_counterfactual(inputs: torch.Tensor, explanation: Explanation, path: Path) -> Path | None:
    if not _is_image(inputs[0]):
        return None
    found = explanation.counterfactual.detach().cpu()
    rows, captions = [], []
    for i in range(inputs.shape[0]):
        original = inputs[i].cpu()
        rows.append([original, found[i], visualize.heatmap(found[i] - original)])
        outcome = "" if bool(explanation.success[i]) else " (not found; closest)"
        captions.append(
            f"#{i} {int(explanation.target[i])} -> {int(explanation.cf_class[i])}{outcome}  "
            f"p {float(explanation.cf_proba[i]):.2f}  L1 {float(explanation.l1_distance[i]):.1f}"
        )
    return visualize.save_grid(
        rows, captions, path, titles=["input", "counterfactual", "difference"]
    )


def _slic_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The library's SLIC settings, with ``--n-segments`` when given."""
    from torchexplain.segmentation import DEFAULT_SEGMENTATION_KWARGS

    segmentation = dict(DEFAULT_SEGMENTATION_KWARGS["slic"])
    if args.n_segments is not None:
        segmentation["n_segments"] = args.n_segments
    return segmentation


def _explain_anchor(model: Callable, inputs: torch.Tensor, args: argparse.Namespace) -> Explanation:
    if not _is_image(inputs[0]):
        raise UsageError(
            f"--method anchor explains images (C, H, W) with C 1 or 3; got examples shaped "
            f"{tuple(inputs.shape[1:])}"
        )
    if args.target is not None:
        raise UsageError(
            "--target: anchors explain the model's own prediction; drop --target for --method anchor"
        )
    segmentation = _slic_settings(args)
    explainer = torchexplain.AnchorImage(model, segmentation_kwargs=segmentation, seed=args.seed)
    return explainer.explain(inputs, threshold=args.threshold)


def _draw_anchor(inputs: torch.Tensor, explanation: Explanation, path: Path) -> Path | None:
    rows, captions = [], []
    for i in range(inputs.shape[0]):
        image = inputs[i].cpu()
        rows.append(
            [
                image,
                visualize.mask_overlay(
                    image, explanation.mask[i], outline=visualize.ANCHOR_OUTLINE
                ),
            ]
        )
        status = "" if bool(explanation.success[i]) else " (no valid anchor)"
        captions.append(
            f"#{i} pred {int(explanation.target[i])}: precision {float(explanation.precision[i]):.2f}, "
            f"coverage {float(explanation.coverage[i]):.2f}{status}"
        )
    return visualize.save_grid(rows, captions, path, titles=["input", "anchor"])


def _explain_kernel_shap(
    model: Callable, inputs: torch.Tensor, args: argparse.Namespace
) -> Explanation:
    if not _is_image(inputs[0]):
        raise UsageError(
            f"--method kernel_shap explains images (C, H, W) with C 1 or 3; got examples shaped "
            f"{tuple(inputs.shape[1:])}"
        )
    segmentation = _slic_settings(args)
    explainer = torchexplain.KernelShap(model, segmentation_kwargs=segmentation, seed=args.seed)
    # a black image stands for "feature absent", as a zero baseline does for IG
    explanation = explainer.fit(torch.zeros_like(inputs[:1])).explain(inputs)
    if args.target is not None:  # every class is explained; --target picks the one drawn
        n_classes = explanation.shap_values.shape[1]
        if not 0 <= args.target < n_classes:
            raise UsageError(
                f"--target {args.target}: the model has {n_classes} outputs (0..{n_classes - 1})"
            )
        explanation.data["target"] = torch.full_like(explanation.target, args.target)
    return explanation


def _draw_shap(inputs: torch.Tensor, explanation: Explanation, path: Path) -> Path | None:
    maps = torchexplain.KernelShap(None).explanation_map(explanation, inputs).cpu()
    rows, captions = [], []
    for i in range(inputs.shape[0]):
        image = inputs[i].cpu()
        rows.append([image, visualize.heatmap(maps[i]), visualize.overlay(image, maps[i])])
        target = int(explanation.target[i])
        total = float(explanation.shap_values[i, target].sum())
        captions.append(
            f"#{i} pred {target}: base {float(explanation.expected_value[target]):.2f} + {total:+.2f}"
        )
    return visualize.save_grid(
        rows, captions, path, titles=["input", "SHAP per superpixel", "overlay"]
    )


#: ``--method`` name -> how to run it. A method whose class is missing from the installed
#: torchexplain answers with a clear error instead of a traceback.
METHODS: dict[str, CliMethod] = {
    "ig": CliMethod("IntegratedGradients", _explain_ig, _draw_attributions),
    "counterfactual": CliMethod("Counterfactual", _explain_counterfactual, _draw_counterfactual),
    "anchor": CliMethod("AnchorImage", _explain_anchor, _draw_anchor),
    "kernel_shap": CliMethod("KernelShap", _explain_kernel_shap, _draw_shap),
}


def _method(name: str) -> CliMethod:
    if name in METHODS and METHODS[name].available:
        return METHODS[name]
    if name in METHODS:
        raise UsageError(
            f"--method {name}: method {name!r} is not available in this version of torchexplain "
            f"({torchexplain.__version__}); available: {', '.join(n for n, m in METHODS.items() if m.available)}"
        )
    raise UsageError(f"--method {name}: unknown method; expected one of {', '.join(METHODS)}")


def _unique_stems(paths: list[Path]) -> list[str]:
    stems, seen = [], {}
    for path in paths:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


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
                explanation = method.explain(model.forward, batch.to(device), args)
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
            picture = method.draw(batch, explanation, out / f"{stem}.png")
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


# -- bench -------------------------------------------------------------------------------


def _load_common(folder: Path):
    """The checkout's benchmarks/_common.py (metadata for the combined JSON)."""
    spec = importlib.util.spec_from_file_location(
        "_torchexplain_bench_common", folder / "_common.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _print_table(rows: list[dict[str, str]], stream=None) -> None:
    stream = stream or sys.stdout
    if not rows:
        print("(no comparable rows)", file=stream)
        return
    columns = list(rows[0])
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), file=stream)
    for row in rows:
        print("  ".join(row[c].ljust(w) for c, w in zip(columns, widths, strict=True)), file=stream)


def run_bench(args: argparse.Namespace) -> int:
    device = _device(args.device)
    if not 0 <= args.margin < 10:
        raise UsageError(f"--margin must be a fraction such as 0.25 (25 %), got {args.margin}")
    if args.min_time is not None and args.min_time < 0:
        raise UsageError(f"--min-time must be seconds >= 0, got {args.min_time}")
    min_time = (
        _bench.DEFAULT_MIN_TIME_S.get(device.type, 0.0) if args.min_time is None else args.min_time
    )
    baseline = _bench.load_baseline(args.compare) if args.compare else None
    folder = _bench.find_benchmarks_dir(args.benchmarks_dir)
    scripts = _bench.discover(folder, args.only.split(",") if args.only else None)
    runs = []
    with (
        _bench.temporary_workdir() as tmp,
        Progress(len(scripts), "bench", enabled=None if not args.quiet else False) as bar,
    ):
        for script in scripts:
            bar.update(script.stem)
            run = _bench.run_script(script, device.type, args.quick, Path(tmp), args.timeout)
            runs.append(run)
            bar.advance()
            status = "ok" if run.returncode == 0 else f"FAILED (exit {run.returncode})"
            if run.returncode != 0:
                bar.write(
                    f"{script.name}: {status} in {run.seconds:.1f} s\n"
                    + "\n".join("    " + line for line in run.log_tail.splitlines()),
                    file=sys.stderr,
                )
            elif not args.quiet:
                bar.write(f"{script.name}: {status} in {run.seconds:.1f} s")
    rows = [row for run in runs if run.payload for row in _bench.normalise(run.name, run.payload)]
    if not args.quiet:
        _print_table(_bench.table_rows(rows))
    common = _load_common(folder)
    payload: dict[str, Any] = {
        "meta": common.metadata(
            device,
            benchmark="torchexplain bench",
            quick=args.quick,
            margin=args.margin,
            ratio="torchexplain_s / other_s (lower is better)",
        ),
        "rows": rows,
        "scripts": [
            {
                "name": r.name,
                "returncode": r.returncode,
                "seconds": r.seconds,
                **({"log_tail": r.log_tail} if r.returncode else {}),
            }
            for r in runs
        ],
        "raw": {r.name: r.payload for r in runs if r.payload},
    }
    status = EXIT_OK
    if baseline is not None:
        comparison = _bench.compare(rows, baseline, args.margin, min_time)
        payload["compare"] = {"baseline": str(args.compare), **comparison}
        status = _report_comparison(comparison, device_name=payload["meta"].get("device_name"))
    out = (
        Path(args.out)
        if args.out
        else folder
        / "results"
        / (f"torchexplain_bench-{device.type}{'-quick' if args.quick else ''}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    if not args.quiet:
        print(f"wrote {out}")
    if any(r.returncode != 0 for r in runs):
        failed = ", ".join(r.name for r in runs if r.returncode)
        print(f"torchexplain bench: error: benchmark(s) failed: {failed}", file=sys.stderr)
        return EXIT_BENCH_FAILED
    return status


def _report_comparison(comparison: dict[str, Any], device_name: str | None) -> int:
    margin = comparison["margin"]
    if comparison["baseline_device"] and comparison["baseline_device"] != device_name:
        print(
            f"note: the baseline was measured on {comparison['baseline_device']}, this run on {device_name}",
            file=sys.stderr,
        )
    for key in comparison["missing_now"]:
        print(f"note: baseline row not measured now: {key}", file=sys.stderr)
    print(
        f"compared {len(comparison['checks'])} ratios with the baseline (margin {margin:.0%})"
        + (
            f"; {len(comparison['too_short'])} not judged (times under {comparison['min_time_s'] * 1e3:g} ms)"
            if comparison["too_short"]
            else ""
        )
    )
    for check in comparison["regressions"]:
        print(
            f"REGRESSION {check['row']}: {check['ratio']} {check['baseline']:.3g} -> {check['now']:.3g} "
            f"({check['change']:+.0%})",
            file=sys.stderr,
        )
    if comparison["regressions"]:
        print(
            f"torchexplain bench: {len(comparison['regressions'])} ratio(s) regressed by more than "
            f"{margin:.0%}",
            file=sys.stderr,
        )
        return EXIT_REGRESSION
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------


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


def build_parser() -> argparse.ArgumentParser:
    from torchexplain import demo

    parser = argparse.ArgumentParser(
        prog="torchexplain", description="Fast explanations for PyTorch models."
    )
    parser.add_argument(
        "--version", action="version", version=f"torchexplain {torchexplain.__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo_parser = commands.add_parser(
        "demo", help="the MNIST demo: train (or reuse) a CNN and explain it"
    )
    demo.add_arguments(demo_parser)

    explain = commands.add_parser(
        "explain", help="explain a saved model's predictions on input files"
    )
    explain.add_argument(
        "--model", required=True, help="torch.export archive (.pt2) or TorchScript file"
    )
    explain.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="FILE",
        help="PNG/JPEG images, or .pt/.npy tensors (one example or a batch)",
    )
    explain.add_argument("--method", default="ig", help=f"one of {', '.join(METHODS)} (default ig)")
    explain.add_argument(
        "--out", required=True, help="folder for <input>.json, <input>.png and summary.json"
    )
    explain.add_argument(
        "--target", type=int, default=None, help="class to explain (default: the prediction)"
    )
    explain.add_argument(
        "--n-steps", type=int, default=50, help="ig: steps on the path (default 50)"
    )
    explain.add_argument(
        "--max-lam-steps",
        type=int,
        default=None,
        help="counterfactual: rounds of the lambda search (default: the library's, 10)",
    )
    explain.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="counterfactual: optimiser steps per round (default: the library's, 1000)",
    )
    explain.add_argument(
        "--threshold", type=float, default=0.95, help="anchor: precision to reach (default 0.95)"
    )
    explain.add_argument(
        "--n-segments",
        type=int,
        default=None,
        help="anchor, kernel_shap: SLIC superpixels per image (default: the library's, 10)",
    )
    explain.add_argument(
        "--seed", type=int, default=0, help="anchor, kernel_shap: seed of the sampling (default 0)"
    )
    explain.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=None,
        help="images: 1 (grey) or 3 (RGB); default from the exported model, else the file",
    )
    explain.add_argument(
        "--device", default=None, help="cpu or cuda (default: cuda when available)"
    )
    explain.add_argument("--quiet", action="store_true", help="no progress bar or per-file lines")

    bench = commands.add_parser(
        "bench", help="run every benchmarks/bench_*.py; one table, one JSON"
    )
    bench.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    bench.add_argument(
        "--quick", action="store_true", help="small configurations (under 2 minutes on a CPU)"
    )
    bench.add_argument(
        "--out",
        default=None,
        help="combined JSON (default benchmarks/results/torchexplain_bench-<device>[-quick].json)",
    )
    bench.add_argument(
        "--compare",
        default=None,
        metavar="BASELINE",
        help="a previous --out file: exit 1 when a ratio regressed by more than --margin",
    )
    bench.add_argument(
        "--margin",
        type=float,
        default=_bench.DEFAULT_MARGIN,
        help=f"allowed growth of a ratio over the baseline (default {_bench.DEFAULT_MARGIN}, i.e. "
        f"{_bench.DEFAULT_MARGIN * 100:.0f} %%)",
    )  # argparse %-formats help
    bench.add_argument(
        "--min-time",
        type=float,
        default=None,
        metavar="SECONDS",
        help="--compare judges only ratios whose times are all at least this long "
        "(default 0.01 on cpu, where shorter ops are too noisy; 0 on cuda)",
    )
    bench.add_argument(
        "--only", default=None, help="comma list of benchmarks to run, e.g. ig,monitor"
    )
    bench.add_argument(
        "--benchmarks-dir",
        default=None,
        help="the checkout's benchmarks/ folder (found by default)",
    )
    bench.add_argument(
        "--timeout", type=float, default=None, help="seconds allowed per benchmark script"
    )
    bench.add_argument(
        "--quiet", action="store_true", help="no progress bar, table or per-script lines"
    )
    serve = commands.add_parser(
        "serve", help="serve a saved explainer with MLServer (writes its settings for you)"
    )
    serve.add_argument("path", help="the folder explainer.save() wrote")
    serve.add_argument(
        "--infer-uri",
        default=None,
        help="the model's prediction endpoint (black-box explainers), e.g. "
        "http://127.0.0.1:8080/v2/models/income/infer",
    )
    serve.add_argument(
        "--infer-protocol",
        default="v2",
        choices=("v2", "kserve_v1", "seldon_v1"),
        help="protocol that endpoint speaks (default v2)",
    )
    serve.add_argument(
        "--model",
        default=None,
        metavar="PT2",
        help="also serve this torch.export archive (probabilities) in the same server; "
        "--infer-uri then defaults to it",
    )
    serve.add_argument("--model-name", default="model", help="name of the --model (default model)")
    serve.add_argument(
        "--name", default="explainer", help="the explainer's model name (default explainer)"
    )
    serve.add_argument("--http-port", type=int, default=8080, help="HTTP port (default 8080)")
    serve.add_argument("--grpc-port", type=int, default=8081, help="gRPC port (default 8081)")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    serve.add_argument(
        "--rows",
        default="all",
        choices=("all", "first"),
        help="explain every row of a request (default) or only the first, as Alibi's runtime",
    )
    serve.add_argument(
        "--max-rows", type=int, default=1024, help="most rows per request (default 1024)"
    )
    serve.add_argument(
        "--settings-dir",
        default=None,
        help="where to write the MLServer settings (default: a new temporary folder)",
    )
    serve.add_argument(
        "--init-parameters",
        default=None,
        metavar="JSON",
        help='settings to set on load, as a JSON object, e.g. \'{"device": "cuda"}\'',
    )
    serve.add_argument(
        "--debug", action="store_true", help="MLServer's debug mode: a log line per request"
    )
    serve.add_argument(
        "--write-only", action="store_true", help="write the settings, print where, do not start"
    )

    kserve = commands.add_parser(
        "kserve", help="serve a saved explainer as a KServe explainer (v1 :explain)"
    )
    from torchexplain.serving import kserve as kserve_module

    kserve_module.add_arguments(kserve)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    """``torchexplain serve``: write the MLServer repository, then start MLServer on it."""
    from torchexplain.serving import deploy

    extra = {"rows": args.rows, "max_rows": args.max_rows}
    if args.infer_protocol != "v2":
        extra["infer_protocol"] = args.infer_protocol
    if args.init_parameters:
        extra["init_parameters"] = args.init_parameters
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
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from torchexplain import demo

            return demo.run(args)
        if args.command == "explain":
            return run_explain(args)
        if args.command == "serve":
            return run_serve(args)
        if args.command == "kserve":
            return run_kserve(args)
        return run_bench(args)
    except (UsageError, _bench.BenchError) as err:
        print(f"torchexplain {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"torchexplain {args.command}: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:  # the console_scripts entry point
    sys.exit(main())


if __name__ == "__main__":
    console_main()
