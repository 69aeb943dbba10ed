"""Large batches of anchors, searched in memory-sized parts and put back together.

A search's state grows with the samples it draws (thousands per instance), so a batch
too large for the device is split into parts searched one after another. Results are
batch-independent, so the parts put together equal one search of the whole batch.
"""

from __future__ import annotations

from typing import Any

import torch

from torchexplain._memory import instances_per_search

__all__ = ["merge_parts", "parts"]

#: samples a search may draw per instance, for sizing parts (measured: 3,000-4,700 on
#: census rows and MNIST digits; this leaves room for the slow ones)
SAMPLES_PER_INSTANCE = 16384


def parts(n_instances: int, bytes_per_sample: float, device: torch.device) -> list[slice]:
    """Slices of the batch, each small enough for its searches' sample stores to fit."""
    size = instances_per_search(SAMPLES_PER_INSTANCE * bytes_per_sample, device, n_instances)
    return [slice(start, min(start + size, n_instances)) for start in range(0, n_instances, size)]


def merge_parts(
    datas: list[dict[str, Any]], totals: list[dict[str, int]]
) -> tuple[dict[str, Any], dict[str, int]]:
    """One ``data`` dict from the parts' (tensors concatenated, lists joined) and their totals
    (counts summed; ``search_rounds`` is the largest, as the parts ran one after another)."""
    if len(datas) == 1:
        return datas[0], {**totals[0], "search_parts": 1}
    data: dict[str, Any] = {}
    for key, first in datas[0].items():
        values = [d[key] for d in datas]
        data[key] = (
            torch.cat(values)
            if isinstance(first, torch.Tensor)
            else [v for part in values for v in part]
        )
    total = {key: sum(t[key] for t in totals) for key in totals[0]}
    if "search_rounds" in total:
        total["search_rounds"] = max(t["search_rounds"] for t in totals)
    total["search_parts"] = len(datas)
    return data, total
