"""What every benchmark shares: timing, peak memory, metadata, and the JSON it writes.

Methodology (the same for every script): providers run side by side in one
process on the same inputs, each is warmed up first, repeats are interleaved
across providers so drift hits all of them alike, and the median is reported.
On CUDA, times are taken with ``torch.cuda.synchronize()`` around each call and
peak memory from the caching allocator; on the CPU, peak memory is the process's
resident high-water mark above the level before the call (Linux ``clear_refs``),
with glibc set to unmap freed tensors so the mark follows live memory.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).parent / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_cpu_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_MALLOC_TUNED = False


def _release_freed_host_memory() -> None:
    """Make freed tensors leave the resident set, so its high-water mark tracks live memory.

    glibc keeps freed blocks mapped and reuses them, which hides a provider's peak
    behind memory an earlier call already touched. Serving every block of 64 KiB or
    more from its own mapping (unmapped on free) and trimming the heap removes that.
    It changes allocation speed for the rest of the process, so benchmarks measure
    memory only after all their timings.
    """
    global _MALLOC_TUNED
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        if not _MALLOC_TUNED:
            libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD
            _MALLOC_TUNED = True
        libc.malloc_trim(0)
    except OSError:
        pass


def steady_host_allocator(device: torch.device) -> str:
    """Keep freed host memory mapped for the rest of the process (glibc only).

    By default glibc hands large freed blocks back to the OS, so a model call whose
    activations outgrow its thresholds page-faults them in again every call: on the
    MNIST CNN, one thread, calls of 100-128 images then cost 0.72-0.85 ms per image
    against 0.51-0.55 with the heap kept (system time reached a quarter of the run).
    Which provider pays depends on heap layout and call size, not on the method, so
    timing benchmarks call this first and every provider runs on the same allocator.
    Does nothing off the CPU. Returns what the allocator is, for the JSON's metadata.
    """
    if device.type != "cpu":
        return "device allocator"
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return "system defaults (not glibc)"
    ok = libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap
    ok &= libc.mallopt(-3, 1 << 25)  # M_MMAP_THRESHOLD: blocks under 32 MiB come from the heap
    if not ok:
        return "glibc defaults (mallopt refused)"
    return (
        "glibc: freed heap kept (M_TRIM_THRESHOLD 1 GiB, M_MMAP_THRESHOLD 32 MiB), every provider"
    )


def peak_memory(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Bytes allocated at the peak of one call of ``fn`` above what was held before it."""
    import gc

    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    _release_freed_host_memory()
    if not _reset_cpu_peak():
        return None
    before = _rss_bytes("VmRSS")
    fn()
    return _rss_bytes("VmHWM") - before


def time_providers(
    providers: dict[str, Callable[[], Any]],
    device: torch.device,
    repeats: int = 7,
    warmup: int = 2,
) -> dict[str, dict[str, float]]:
    """Median, min and max seconds per call of each provider, repeats interleaved."""
    for _ in range(warmup):
        for fn in providers.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in providers}
    for _ in range(repeats):
        for name, fn in providers.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            samples[name].append(time.perf_counter() - start)
    return {
        name: {
            "median_s": statistics.median(s),
            "min_s": min(s),
            "max_s": max(s),
            "repeats": len(s),
        }
        for name, s in samples.items()
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def metadata(device: torch.device, **extra: Any) -> dict[str, Any]:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("torchexplain", "captum", "triton", "torchvision", "numpy"):
        # the installed distribution's version, without importing it (captum and
        # torchvision take most of a second to import; a script that does not use them
        # should not pay for that)
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    cpu_model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu_model
            )
    except OSError:
        pass
    return {
        "device": str(device),
        "device_name": device_name(device),
        "cpu_model": cpu_model,
        "threads": torch.get_num_threads(),
        "versions": versions,
        "commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def write_results(name: str, payload: dict[str, Any], out: str | Path | None) -> Path:
    """Write ``payload`` as JSON to ``out`` (a file or folder) or to results/<name>-<device>.json."""
    device = payload.get("meta", {}).get("device", "cpu").split(":")[0]
    target = Path(out) if out else RESULTS_DIR
    if target.suffix != ".json":
        target = target / f"{name}-{device}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=2) + "\n")
    return target


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain fixed-width table of ``rows`` restricted to ``columns``."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
