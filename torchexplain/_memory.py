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

#: CPU work per chunk (activations kept for backward + path + gradients). Measured
#: on a 2-core CPU: chunks of under ~100 rows make convolutions several times slower
#: per row (MNIST CNN: 80 rows 8.5 s vs 160 rows 4.0 s for 1,600 rows; resnet18 at
#: 64 px: 16 rows 49 s vs 128 rows 10.7 s for 256 rows), while one huge batch is a
#: little slower again and holds gigabytes. 512 MiB gives ~1,000 MNIST rows, ~70
#: resnet18 rows and ~400 rows of 3x224x224 for a memory-bound model.
CPU_CHUNK_BYTES = 512 * 2**20
#: Share of free CUDA memory one chunk may use; the rest covers the allocator's
#: fragmentation and whatever the model allocates outside autograd.
CUDA_FREE_FRACTION = 0.5
#: At most this many rows in the first (measuring) chunk, when nothing is known yet.
PROBE_ROWS = 256
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


def chunk_budget_bytes(device: torch.device) -> int:
    """Bytes one chunk of work may occupy on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_FRACTION)
    available = _available_host_bytes()
    if available is None:
        return CPU_CHUNK_BYTES
    return int(min(CPU_CHUNK_BYTES, available // 4))


def rows_for_budget(bytes_per_row: float, budget: int, total_rows: int) -> int:
    """Rows per chunk so ``rows * bytes_per_row`` stays within ``budget`` (at least 1).

    The rows are spread evenly over the chunks this needs, so no chunk is left
    with a small tail (small batches run convolutions far below their best speed).
    """
    if total_rows <= 0:
        return 1
    most = total_rows if bytes_per_row <= 0 else max(1, min(total_rows, int(budget // bytes_per_row)))
    n_chunks = -(-total_rows // most)
    return -(-total_rows // n_chunks)


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA OOM and for the CPU allocator failing to allocate."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in str(error) or "DefaultCPUAllocator" in str(error)
    )
