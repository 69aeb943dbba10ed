"""Chunk sizing: how many rows of work go through the model at once.

The cost of one row is measured, not guessed: the first chunk runs under a
saved-tensors hook that adds up what autograd keeps for the backward pass, and
the remaining chunks are sized so that activations, inputs and gradients of one
chunk fit the device's budget. A chunk that still runs out of memory is halved
and retried, so work never fails where a smaller chunk would have worked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

#: CPU work per chunk (activations kept for backward + path + gradients): small
#: enough to stay near the last-level cache. Measured on a 2-core EPYC (32 MiB L3),
#: MNIST CNN, N=32, 50 steps (1,600 rows, ~0.48 MiB per row): 50 rows 0.95 s,
#: 100 rows 0.88 s, 160 rows 1.08 s, 320 rows 1.66 s, one batch 1.95 s; Captum 1.97 s.
CPU_CHUNK_BYTES = 48 * 2**20
#: ...but never fewer rows than this on the CPU while memory allows: below it the
#: fixed cost of every op dominates (resnet18 at 64 px, 256 rows of ~7 MiB:
#: 8 rows 1.94 s, 16 rows 1.63 s, 32 rows 1.54 s, 64-256 rows 1.59-1.64 s).
CPU_MIN_ROWS = 32
#: What one row costs while a model runs forward only (no backward), in multiples of its
#: input bytes: sizes the calls of the black-box methods and permutation importance. Measured
#: on the census MLP (12 columns, 2-core EPYC): KernelShap 8,192 rows per call 0.10 s per
#: instance, 32,768 rows 0.14 s, 65,536 rows 0.11-0.16 s; permutation importance (12 columns
#: x 10 shuffles x 2,561 rows) 8,192 rows per call 0.114 s, 65,536 0.144 s, 153,660 0.249 s.
FORWARD_BYTES_FACTOR = 128
#: The most of the free host memory one chunk may take, whatever the above say.
CPU_MAX_FREE_FRACTION = 0.25
#: Share of free CUDA memory one chunk may use; the rest covers the allocator's
#: fragmentation and whatever the model allocates outside autograd.
CUDA_FREE_FRACTION = 0.5
#: At most this many rows in the first (measuring) chunk, when nothing is known yet.
PROBE_ROWS = 128
#: Until the first chunk has measured the model, assume activations of this many
#: times the path's bytes per row (generous for small-image CNNs).
PROBE_ACTIVATION_FACTOR = 32


class SavedBytesCounter:
    """Counts the bytes autograd saves for backward inside ``with counter.recording():``."""

    def __init__(self) -> None:
        self.total = 0
        self._seen: set[int] = set()

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self._seen:
            self._seen.add(key)
            self.total += storage.nbytes()
        return tensor

    @contextlib.contextmanager
    def recording(self) -> Iterator[SavedBytesCounter]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            yield self


def _available_host_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def rows_per_chunk(bytes_per_row: float, device: torch.device, total_rows: int) -> int:
    """Rows per chunk for work costing ``bytes_per_row`` on ``device``, spread evenly.

    CUDA: as many rows as fit in a share of the free memory. CPU: a cache-sized
    chunk, but at least :data:`CPU_MIN_ROWS` rows when host memory allows, and never
    more than a quarter of the free host memory.
    """
    if total_rows <= 0:
        return 1
    return even_split(total_rows, max_rows(bytes_per_row, device))


def max_rows(bytes_per_row: float, device: torch.device) -> int:
    """The most rows of work costing ``bytes_per_row`` one chunk may hold on ``device`` (see
    :func:`rows_per_chunk`), whatever the total."""
    per_row = max(float(bytes_per_row), 1.0)
    if device.type == "cuda":
        return max(1, _cuda_free_share(device, per_row))
    most = max(int(CPU_CHUNK_BYTES // per_row), CPU_MIN_ROWS)
    available = _available_host_bytes()
    if available is not None:
        most = min(most, int(available * CPU_MAX_FREE_FRACTION // per_row))
    return max(1, most)


def even_split(total: int, most: int) -> int:
    """The size of equal chunks of at most ``most`` covering ``total``: no chunk is left with a small tail."""
    most = max(1, min(total, most))
    n_chunks = -(-total // most)
    return -(-total // n_chunks)


def _cuda_free_share(device: torch.device, per_item: float) -> int:
    free, _ = torch.cuda.mem_get_info(device)
    return int(free * CUDA_FREE_FRACTION // per_item)


def instances_per_search(bytes_per_instance: float, device: torch.device, total: int) -> int:
    """Instances per search for work whose state grows to ``bytes_per_instance`` each (anchors'
    sample stores): a share of the free memory of ``device``, split evenly over the batch."""
    if total <= 0:
        return 1
    per_instance = max(float(bytes_per_instance), 1.0)
    if device.type == "cuda":
        most = _cuda_free_share(device, per_instance)
    else:
        available = _available_host_bytes()
        most = (
            total if available is None else int(available * CPU_MAX_FREE_FRACTION // per_instance)
        )
    return even_split(total, most)


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA OOM and for the CPU allocator failing to allocate."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in str(error) or "DefaultCPUAllocator" in str(error)
    )
