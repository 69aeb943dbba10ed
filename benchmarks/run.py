"""Run every ``benchmarks/bench_*.py``: one table, one JSON, a gate.

    python benchmarks/run.py [--device cuda|cpu] [--quick] [--out results.json]
                             [--compare baseline.json] [--margin 0.25] [--only ig,monitor]

``torchexplain bench ARGS`` runs this script of the source checkout with the same
arguments (benchmarks are tooling: they are not installed with the package).

Exit status: 0 success; 1 ``--compare`` found a regression; 2 a usage error (one line
on stderr, no traceback); 3 a benchmark script failed.

Each script keeps its own JSON layout (they measure different things); a small
adapter per script turns its results into common rows::

    method, config, device, torchexplain_s, peer, peer_s, floor, floor_s,
    ratio_vs_peer = torchexplain_s / peer_s, ratio_vs_floor = torchexplain_s / floor_s

Ratios are times, so lower is better and they travel between runs far better than
seconds do. A script without an adapter is read by the generic one, which understands
the two layouts the scripts share (rows with a ``providers`` dict, or flat rows with a
``provider`` field), so a new ``bench_<method>.py`` plugs in by following either.

``--compare baseline.json`` flags a row whose ratio grew by more than ``margin``
(default :data:`DEFAULT_MARGIN`, i.e. 25 %) over the same row of the baseline;
ratios built from times under ``--min-time`` (:data:`DEFAULT_MIN_TIME_S`) are
reported but not judged.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import metadata  # noqa: E402

from torchexplain._progress import Progress  # noqa: E402

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_BENCH_FAILED = 0, 1, 2, 3

#: A ratio regresses when ``new > baseline * (1 + margin)``. 25 %: between two
#: back-to-back quick runs on the shared 2-core CPU the judged ratios moved by up to
#: 18 %, and a regression worth blocking a merge for is larger than that.
DEFAULT_MARGIN = 0.25
#: Ratios are gated only when every time in them (now and in the baseline) is at least
#: this long. On the CPU, ops under ~10 ms swung by up to 7x between back-to-back quick
#: runs on the shared 2-core machine (the IG kernel rows), while every longer ratio moved
#: by at most 18 %. On CUDA the kernels are timed with triton's do_bench (stable to a
#: few %), so everything is gated.
DEFAULT_MIN_TIME_S = {"cpu": 0.010, "cuda": 0.0}
#: Peers in order of preference when a script compares several.
PEER_PREFERENCE = ("captum", "alibi", "shap", "captum_style")
RATIO_KEYS = ("ratio_vs_peer", "ratio_vs_floor")
#: Extra flags with ``--quick``, so that all scripts together finish in under 100 s on a
#: 2-core CPU (each script's own ``--quick`` is a smaller run of its full set: the
#: counterfactual's Wachter search, for one, runs 2 rounds of lambda of 250 steps at most).
QUICK_ARGS: dict[str, list[str]] = {
    "bench_counterfactual": ["--methods", "cf"],
    "bench_serving": ["--rows", "16", "--anchor-rows", "4"],
}


class BenchError(Exception):
    """A user-facing problem (missing folder, bad baseline file): printed, no traceback."""


def benchmarks_dir(explicit: str | Path | None = None) -> Path:
    """Where the ``bench_*.py`` scripts are: ``explicit``, else this script's folder."""
    folder = Path(explicit) if explicit is not None else Path(__file__).resolve().parent
    if not folder.is_dir() or not any(folder.glob("bench_*.py")):
        raise BenchError(f"--benchmarks-dir {folder}: no bench_*.py scripts there")
    return folder.resolve()


def discover(folder: Path, only: list[str] | None = None) -> list[Path]:
    scripts = sorted(folder.glob("bench_*.py"))
    if only:
        wanted = {name.removeprefix("bench_").removesuffix(".py") for name in only}
        known = {s.stem.removeprefix("bench_") for s in scripts}
        unknown = sorted(wanted - known)
        if unknown:
            raise BenchError(
                f"--only {','.join(unknown)}: no such benchmark in {folder}; available: {', '.join(sorted(known))}"
            )
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    return scripts


@dataclass
class ScriptRun:
    name: str
    returncode: int
    seconds: float
    payload: dict[str, Any] | None
    log_tail: str


def run_script(
    script: Path, device: str, quick: bool, workdir: Path, timeout: float | None
) -> ScriptRun:
    out = workdir / f"{script.stem}.json"
    command = [sys.executable, str(script), "--device", device, "--out", str(out)]
    if quick:
        command += ["--quick", *QUICK_ARGS.get(script.stem, [])]
    env = dict(os.environ)
    # Scripts import torchexplain: the checkout's copy, whether or not it is installed.
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(script.parent.parent), env.get("PYTHONPATH")])
    )
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            cwd=script.parent.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        returncode, log = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        returncode = 124
        log = f"timed out after {timeout} s\n" + _text(err.stdout) + _text(err.stderr)
    seconds = time.perf_counter() - start
    payload = None
    if returncode == 0 and out.is_file():
        payload = json.loads(out.read_text())
    elif returncode == 0:
        returncode, log = 1, log + f"\n{script.name} exited 0 but wrote no JSON to --out {out}"
    return ScriptRun(
        script.stem, returncode, seconds, payload, "\n".join(log.strip().splitlines()[-15:])
    )


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


# -- adapters: one script's JSON -> common rows -----------------------------------------


def _row(
    benchmark: str,
    method: str,
    config: str,
    device: str,
    ours: float | None,
    peer: str | None = None,
    peer_s: float | None = None,
    floor: str | None = None,
    floor_s: float | None = None,
) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "method": method,
        "config": config,
        "device": device,
        "torchexplain_s": ours,
        "peer": peer,
        "peer_s": peer_s,
        "floor": floor,
        "floor_s": floor_s,
        "ratio_vs_peer": _ratio(ours, peer_s),
        "ratio_vs_floor": _ratio(ours, floor_s),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _median(provider: dict[str, Any] | None) -> float | None:
    if not provider:
        return None
    if "median_s" in provider:
        return provider["median_s"]
    if "median_ms" in provider:
        return provider["median_ms"] / 1e3
    return None


def _pick_peer(names: list[str]) -> str | None:
    others = [n for n in names if n not in ("torchexplain", "floor")]
    for preferred in PEER_PREFERENCE:
        if preferred in others:
            return preferred
    return others[0] if others else None


def _method_name(benchmark: str) -> str:
    return benchmark.removeprefix("bench_")


def adapt_providers(benchmark: str, payload: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """Rows shaped ``{"config": ..., "providers": {name: {"median_s": ...}}}`` (bench_ig)."""
    rows = []
    for entry in payload.get("results", payload.get("rows", [])):
        providers = entry.get("providers")
        if not isinstance(providers, dict) or "torchexplain" not in providers:
            continue
        peer = _pick_peer(list(providers))
        rows.append(
            _row(
                benchmark,
                entry.get("method", _method_name(benchmark)),
                str(entry.get("config", "?")),
                device,
                _median(providers["torchexplain"]),
                peer,
                _median(providers.get(peer)),
                "floor" if "floor" in providers else None,
                _median(providers.get("floor")),
            )
        )
    return rows


def adapt_flat(benchmark: str, payload: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """Flat rows, one per provider, with ``provider`` and ``median_s``/``median_ms`` fields."""
    timing_keys = {"provider", "median_s", "median_ms", "min_s", "max_s", "repeats"}
    groups: dict[str, dict[str, float | None]] = {}
    for entry in payload.get("results", payload.get("rows", [])):
        if "provider" not in entry:
            continue
        config = " ".join(
            f"{k}={v}"
            for k, v in entry.items()
            if k not in timing_keys
            and isinstance(v, (str, int))
            and not isinstance(v, bool)
            and k in ("size", "op", "dtype", "N", "steps", "config", "name")
        )
        groups.setdefault(config, {})[entry["provider"]] = _median(entry)
    rows = []
    for config, providers in groups.items():
        if "torchexplain" not in providers:
            continue
        peer = _pick_peer(list(providers))
        rows.append(
            _row(
                benchmark,
                _method_name(benchmark),
                config,
                device,
                providers["torchexplain"],
                peer,
                providers.get(peer),
                "floor" if "floor" in providers else None,
                providers.get("floor"),
            )
        )
    return rows


def adapt_kernels(benchmark: str, payload: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """bench_kernels: the dispatch (the eager reference on CPU) vs the Captum-style ops;
    the floor is moving the op's bytes at the copy bandwidth measured in the same run."""
    copy_gbps = payload.get("meta", {}).get("copy_bandwidth_gbps")
    groups: dict[tuple, dict[str, Any]] = {}
    for entry in payload.get("rows", []):
        key = (entry["size"], entry["op"], entry["dtype"], entry["N"], entry["steps"])
        groups.setdefault(key, {})[entry["provider"]] = entry
    rows = []
    for (size, op, dtype, n, steps), providers in groups.items():
        ours_name = "torchexplain" if "torchexplain" in providers else "reference"
        ours = providers.get(ours_name)
        if ours is None:
            continue
        floor_s = ours["bytes"] / (copy_gbps * 1e9) if copy_gbps else None
        label = "" if ours_name == "torchexplain" else " (eager reference)"
        rows.append(
            _row(
                benchmark,
                f"ig_kernel_{op}",
                f"{size} {dtype} N={n} steps={steps}{label}",
                device,
                ours["median_ms"] / 1e3,
                "captum_style",
                providers["captum_style"]["median_ms"] / 1e3
                if "captum_style" in providers
                else None,
                "copy_bandwidth" if floor_s else None,
                floor_s,
            )
        )
    return rows


def adapt_counterfactual(
    benchmark: str, payload: dict[str, Any], device: str
) -> list[dict[str, Any]]:
    """bench_counterfactual: seconds per digit of each batched search against Alibi's (one digit
    at a time, in the same run, when it ran) and the model's step floor."""
    results = payload.get("results", {})
    if isinstance(
        results, list
    ):  # the layout before Alibi ran beside it: one at a time, our own search
        return [
            _row(
                benchmark,
                "counterfactual",
                f"mnist_cnn N={entry['N']} (s per instance)",
                device,
                entry["batched_s_per_instance"],
                "one_at_a_time",
                entry.get("peer_s_per_instance"),
            )
            for entry in results
            if "batched_s_per_instance" in entry
        ]
    rows = []
    sections = [("counterfactual", "", results.get("cf"))]
    sections += [
        ("counterfactual_proto", f"{mode} ", section)
        for mode, section in (results.get("proto") or {}).items()
        if isinstance(section, dict)
    ]
    for method, label, section in sections:
        if not isinstance(section, dict) or "ours_by_size" not in section:
            continue
        alibi = section.get("alibi")
        alibi_s = alibi.get("median_seconds_per_digit") if isinstance(alibi, dict) else None
        for entry in section["ours_by_size"]:
            floor = entry.get("floor_s_per_digit", entry.get("model_step_floor_s_per_digit"))
            rows.append(
                _row(
                    benchmark,
                    method,
                    f"mnist_cnn {label}N={entry['N']} (s per digit)",
                    device,
                    entry["s_per_digit"],
                    "alibi" if alibi_s else None,
                    alibi_s,
                    "model_steps" if floor else None,
                    floor,
                )
            )
    return rows


def adapt_anchor(benchmark: str, payload: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """bench_anchor: AnchorImage per image vs Alibi (only when measured in the same run; the
    reference figures from other hardware are not a ratio) and the model-only floor; SLIC vs
    scikit-image."""
    rows = []
    anchor = payload.get("anchor", {})
    ours = anchor.get("torchexplain (batch)")
    if ours and "s_per_image" in ours:
        alibi = anchor.get("alibi", {})
        measured_alibi = alibi.get("s_per_image") if alibi.get("installed") else None
        floor = anchor.get("model only (floor)", {}).get("s_per_image")
        n_digits = payload.get("meta", {}).get("digits")
        config = (
            f"mnist_cnn {n_digits} digits (s per image)" if n_digits else "mnist_cnn (s per image)"
        )
        rows.append(
            _row(
                benchmark,
                "anchor",
                config,
                device,
                ours["s_per_image"],
                "alibi" if measured_alibi else None,
                measured_alibi,
                "model_only" if floor else None,
                floor,
            )
        )
    slic: dict[str, dict[str, Any]] = {}
    for entry in payload.get("slic", []):
        config = f"{entry['images']} images {entry['shape']} n_segments={entry['n_segments']}"
        side = "ours" if entry["provider"].startswith("torchexplain") else "peer"
        slic.setdefault(config, {})[side] = entry
    for config, sides in slic.items():
        if "ours" in sides:
            peer = sides.get("peer")
            rows.append(
                _row(
                    benchmark,
                    "slic",
                    config,
                    device,
                    sides["ours"]["median_s"],
                    "scikit-image" if peer else None,
                    peer["median_s"] if peer else None,
                )
            )
    return rows


def adapt_anchor_tabular(
    benchmark: str, payload: dict[str, Any], device: str
) -> list[dict[str, Any]]:
    """bench_anchor_tabular: AnchorTabular seconds per row, batched and one by one, vs Alibi
    (only when measured in the same run) and, for the batch it was sized on, the floor."""
    results = payload.get("results", {})
    alibi = results.get("alibi", {})
    measured_alibi = alibi.get("s_per_row") if alibi.get("installed") else None
    floor = results.get("model only (floor)", {})
    rows = []
    for name, entry in results.items():
        if not name.startswith("torchexplain") or "s_per_row" not in entry:
            continue
        floor_s = (
            floor.get("s_per_row")
            if entry.get("rows") == floor.get("rows") and "batch" in name
            else None
        )
        rows.append(
            _row(
                benchmark,
                "anchor_tabular",
                f"census_mlp {name.removeprefix('torchexplain ')} (s per row)",
                device,
                entry["s_per_row"],
                "alibi" if measured_alibi else None,
                measured_alibi,
                "model_only" if floor_s else None,
                floor_s,
            )
        )
    return rows


def adapt_shap(benchmark: str, payload: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """bench_shap: KernelShap seconds per instance per batch size vs the newest shap measured in
    the run and the model-only floor (every row shap scores); TreeShap vs shap's TreeExplainer."""
    entries = payload.get("kernel_shap", [])
    peers = [e for e in entries if e.get("provider", "").startswith("shap ")]
    peer = max(
        peers,
        key=lambda e: [int(p) for p in e["provider"].split()[1].split(".") if p.isdigit()],
        default=None,
    )
    floor = next(
        (e for e in entries if e.get("provider", "").startswith("model only (floor")), None
    )
    rows = [
        _row(
            benchmark,
            "kernel_shap",
            f"census_mlp N={e['n']} (s per instance)",
            device,
            e["s_per_instance"],
            peer["provider"].replace(" ", "_") if peer else None,
            peer["s_per_instance"] if peer else None,
            "model_only" if floor else None,
            floor["s_per_instance"] if floor else None,
        )
        for e in entries
        if e.get("provider", "").startswith("torchexplain")
    ]
    rows += [
        _row(
            benchmark,
            "tree_shap",
            f"random_forest {t['mode']} {t['rows']} rows",
            device,
            t["torchexplain_s"],
            "shap",
            t["shap_s"],
        )
        for t in payload.get("tree_shap", [])
    ]
    return rows


def adapt_serving(benchmark: str, payload: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """bench_serving: each served explainer (MLServer, KServe) against the same explainer in-process
    (the "peer" here: ratio - 1 is the serving overhead) and the model alone on the request's rows."""
    rows = []
    for entry in payload.get("results", []):
        providers = entry.get("providers", {})
        in_process, floor = _median(providers.get("in_process")), _median(providers.get("floor"))
        for name, label in (("torchexplain", "MLServer"), ("kserve", "KServe")):
            if name in providers:
                rows.append(
                    _row(
                        benchmark,
                        entry.get("method", "serving"),
                        f"{entry.get('config', '?')} via {label}",
                        device,
                        _median(providers[name]),
                        "in_process",
                        in_process,
                        "model_only",
                        floor,
                    )
                )
    return rows


def adapt_generic(benchmark: str, payload: dict[str, Any], device: str) -> list[dict[str, Any]]:
    return adapt_providers(benchmark, payload, device) or adapt_flat(benchmark, payload, device)


#: Script name -> adapter. Scripts not listed go through :func:`adapt_generic`.
ADAPTERS: dict[str, Callable[[str, dict[str, Any], str], list[dict[str, Any]]]] = {
    "bench_ig": adapt_providers,
    "bench_kernels": adapt_kernels,
    "bench_monitor": adapt_providers,
    "bench_counterfactual": adapt_counterfactual,
    "bench_anchor": adapt_anchor,
    "bench_anchor_tabular": adapt_anchor_tabular,
    "bench_shap": adapt_shap,
    "bench_serving": adapt_serving,
}


def normalise(benchmark: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    device = str(payload.get("meta", {}).get("device", "?"))
    return ADAPTERS.get(benchmark, adapt_generic)(benchmark, payload, device)


# -- comparison against a baseline -------------------------------------------------------


def row_key(row: dict[str, Any]) -> str:
    return f"{row['benchmark']} | {row['method']} | {row['config']}"


def load_baseline(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"--compare {path}: no such file")
    try:
        baseline = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BenchError(f"--compare {path}: not valid JSON ({err})") from err
    if not isinstance(baseline, dict) or not isinstance(baseline.get("rows"), list):
        raise BenchError(
            f"--compare {path}: expected the JSON written by `torchexplain bench --out` "
            "(an object with a 'rows' list)"
        )
    for i, row in enumerate(baseline["rows"]):
        if not isinstance(row, dict) or not {"benchmark", "method", "config"} <= set(row):
            raise BenchError(f"--compare {path}: row {i} lacks benchmark/method/config")
    return baseline


_DENOMINATOR = {"ratio_vs_peer": "peer_s", "ratio_vs_floor": "floor_s"}


def compare(
    rows: list[dict[str, Any]], baseline: dict[str, Any], margin: float, min_time_s: float = 0.0
) -> dict[str, Any]:
    """Each ratio of ``rows`` against the same row of ``baseline``; regressions beyond ``margin``.

    A ratio whose times (either side, now or in the baseline) are under ``min_time_s`` is
    listed in ``too_short`` instead of being judged.
    """
    previous = {row_key(r): r for r in baseline["rows"]}
    checks, regressions, too_short = [], [], []
    for row in rows:
        old = previous.get(row_key(row))
        if old is None:
            continue
        for key in RATIO_KEYS:
            new_ratio, old_ratio = row.get(key), old.get(key)
            if not new_ratio or not old_ratio:
                continue
            times = [
                r.get(name) for r in (row, old) for name in ("torchexplain_s", _DENOMINATOR[key])
            ]
            if any(t is not None and t < min_time_s for t in times):
                too_short.append(f"{row_key(row)} ({key})")
                continue
            change = new_ratio / old_ratio - 1
            check = {
                "row": row_key(row),
                "ratio": key,
                "baseline": old_ratio,
                "now": new_ratio,
                "change": change,
                "regressed": change > margin,
            }
            checks.append(check)
            if check["regressed"]:
                regressions.append(check)
    current = {row_key(r) for r in rows}
    return {
        "margin": margin,
        "min_time_s": min_time_s,
        "baseline_device": baseline.get("meta", {}).get("device_name"),
        "checks": checks,
        "regressions": regressions,
        "too_short": too_short,
        "missing_now": sorted(set(previous) - current),
        "new_rows": sorted(current - set(previous)),
    }


def format_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f}us"
    if value < 1:
        return f"{value * 1e3:.1f}ms"
    return f"{value:.2f}s"


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    def ratio(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    return [
        {
            "method": r["method"],
            "configuration": r["config"],
            "torchexplain": format_seconds(r["torchexplain_s"]),
            "peer": "-" if r["peer"] is None else f"{format_seconds(r['peer_s'])} {r['peer']}",
            "floor": "-" if r["floor"] is None else f"{format_seconds(r['floor_s'])} {r['floor']}",
            "vs peer": ratio(r["ratio_vs_peer"]),
            "vs floor": ratio(r["ratio_vs_floor"]),
            "device": r["device"],
        }
        for r in rows
    ]


def temporary_workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="torchexplain-bench-")


# -- the command ------------------------------------------------------------------------


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


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise BenchError(f"--device {name}: expected cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(
            f"--device {name}: no CUDA device is available (torch.cuda.is_available() is False)"
        )
    return torch.device(name)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Run every benchmarks/bench_*.py; one table, one JSON."
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quick", action="store_true", help="small configurations (the CI gate)")
    parser.add_argument(
        "--out",
        default=None,
        help="combined JSON (default benchmarks/results/torchexplain_bench-<device>[-quick].json)",
    )
    parser.add_argument(
        "--compare",
        default=None,
        metavar="BASELINE",
        help="a previous --out file: exit 1 when a ratio regressed by more than --margin",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        help=f"allowed growth of a ratio over the baseline (default {DEFAULT_MARGIN}, i.e. "
        f"{DEFAULT_MARGIN * 100:.0f} %%)",  # argparse %-formats help
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=None,
        metavar="SECONDS",
        help="--compare judges only ratios whose times are all at least this long "
        "(default 0.01 on cpu, where shorter ops are too noisy; 0 on cuda)",
    )
    parser.add_argument(
        "--only", default=None, help="comma list of benchmarks to run, e.g. ig,monitor"
    )
    parser.add_argument(
        "--benchmarks-dir", default=None, help="where the bench_*.py scripts are (default: here)"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds allowed per benchmark script"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar, table or per-script lines"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the scripts, print the table, write the JSON, compare with a baseline; the exit status."""
    device = _device(args.device)
    if not 0 <= args.margin < 10:
        raise BenchError(f"--margin must be a fraction such as 0.25 (25 %), got {args.margin}")
    if args.min_time is not None and args.min_time < 0:
        raise BenchError(f"--min-time must be seconds >= 0, got {args.min_time}")
    min_time = DEFAULT_MIN_TIME_S.get(device.type, 0.0) if args.min_time is None else args.min_time
    baseline = load_baseline(args.compare) if args.compare else None
    folder = benchmarks_dir(args.benchmarks_dir)
    scripts = discover(folder, args.only.split(",") if args.only else None)
    runs = _run_scripts(scripts, device, args)
    rows = [row for run in runs if run.payload for row in normalise(run.name, run.payload)]
    if not args.quiet:
        _print_table(table_rows(rows))
    payload: dict[str, Any] = {
        "meta": metadata(
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
        comparison = compare(rows, baseline, args.margin, min_time)
        payload["compare"] = {"baseline": str(args.compare), **comparison}
        status = _report_comparison(comparison, device_name=payload["meta"].get("device_name"))
    out = (
        Path(args.out)
        if args.out
        else Path(__file__).resolve().parent
        / "results"
        / (f"torchexplain_bench-{device.type}{'-quick' if args.quick else ''}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    if not args.quiet:
        print(f"wrote {out}")
    if any(r.returncode != 0 for r in runs):
        failed = ", ".join(r.name for r in runs if r.returncode)
        print(f"bench: error: benchmark(s) failed: {failed}", file=sys.stderr)
        return EXIT_BENCH_FAILED
    return status


def _run_scripts(
    scripts: list[Path], device: torch.device, args: argparse.Namespace
) -> list[ScriptRun]:
    runs = []
    with (
        temporary_workdir() as tmp,
        Progress(len(scripts), "bench", enabled=None if not args.quiet else False) as bar,
    ):
        for script in scripts:
            bar.update(script.stem)
            run = run_script(script, device.type, args.quick, Path(tmp), args.timeout)
            runs.append(run)
            bar.advance()
            if run.returncode != 0:
                bar.write(
                    f"{script.name}: FAILED (exit {run.returncode}) in {run.seconds:.1f} s\n"
                    + "\n".join("    " + line for line in run.log_tail.splitlines()),
                    file=sys.stderr,
                )
            elif not args.quiet:
                bar.write(f"{script.name}: ok in {run.seconds:.1f} s")
    return runs


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
            f"bench: {len(comparison['regressions'])} ratio(s) regressed by more than {margin:.0%}",
            file=sys.stderr,
        )
        return EXIT_REGRESSION
    return EXIT_OK


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return run(args)
    except BenchError as err:
        print(f"{prog or 'bench'}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog or 'bench'}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(prog=os.environ.get("TORCHEXPLAIN_PROG")))
