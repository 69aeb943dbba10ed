"""Counter-based random numbers: a pure function of (seed, stream, counter, slot).

Batched samplers need randomness that does not depend on how work is batched:
the samples instance ``i`` draws must be the same whether it is explained alone or
with 1,000 others, on the CPU or on a GPU. One ``torch.Generator`` per instance
gives that but is drawn one instance at a time, on the CPU. Here every random
number is instead a hash of its coordinates, so a whole round of samples for every
instance is drawn in a few vectorised integer ops on any device, and the same
coordinates give the same number everywhere.

The hash is a 32-bit integer finaliser (xor-shift / multiply rounds, the shape of
the "lowbias32" family) evaluated in int64 arithmetic. Its multipliers are odd and
below 2**31 and every value is masked to 32 bits before it is multiplied, so no
product exceeds 2**63: the result does not rely on signed overflow, and CPU and
CUDA agree bit for bit. This is for Monte Carlo sampling, not for cryptography.
"""

from __future__ import annotations

import torch

__all__ = [
    "SeededGenerators",
    "bits",
    "integers",
    "integers_from_bits",
    "mix32",
    "stream_key",
    "uniform",
]


class SeededGenerators:
    """One ``torch.Generator`` per device, seeded with ``seed`` on first use: a draw function's own
    stream (each call continues it), the global generator left as it was. For the perturbations of
    quality metrics, which follow Captum's sequential draws rather than counter-based ones."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._by_device: dict[str, torch.Generator] = {}

    def __call__(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._by_device:
            self._by_device[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._by_device[key]


_MASK32 = 0xFFFFFFFF
_MULTIPLIERS = (0x7FEB352D, 0x68E31DA5, 0x2C1B3C6D)


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A well-mixed 32-bit hash of each element of an int64 tensor (values taken mod 2**32)."""
    x = x & _MASK32
    for multiplier in _MULTIPLIERS:
        x = x ^ (x >> 16)
        x = (x * multiplier) & _MASK32
    return x ^ (x >> 15)


def stream_key(seed: int, stream: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 0-d int64 key of one named stream of a seed (seeds may use up to 64 bits)."""
    seed = int(seed) & ((1 << 64) - 1)
    words = torch.tensor([seed & _MASK32, seed >> 32, int(stream) & _MASK32], dtype=torch.int64)
    key = mix32(words[0])
    key = mix32(key ^ words[1])
    return mix32(key ^ words[2]).to(device)


def bits(key: torch.Tensor, counter: torch.Tensor, slots: torch.Tensor | int) -> torch.Tensor:
    """32 random bits per (counter, slot): ``(N, K)`` for counters ``(N,)`` and ``K`` slots.

    A column of the result equals the same slot drawn alone, so a caller needing several
    slots of the same counters draws them in one call (one hash of the counters, not one
    per slot) and maps each column with :func:`integers_from_bits`.
    """
    if isinstance(slots, int):
        slots = torch.arange(slots, dtype=torch.int64, device=counter.device)
    row = mix32(key ^ mix32(counter.to(torch.int64)))
    # Each slot gets its own multiple of the golden ratio before mixing, so that slot 0
    # and counter 0 do not alias.
    column = mix32(slots.to(torch.int64) * 0x9E3779B1 + 0x632BE5AB)
    return mix32(row[:, None] ^ column[None, :])


def uniform(
    key: torch.Tensor, counter: torch.Tensor, slots: torch.Tensor | int, dtype=torch.float32
) -> torch.Tensor:
    """Uniform numbers in [0, 1): ``(N, K)``, 24 random bits each (exact in float32).

    Args:
        key: from :func:`stream_key`.
        counter: ``(N,)`` int64, e.g. the sample's number in its instance's stream.
        slots: ``K`` or a ``(K,)`` int64 tensor of slot numbers (e.g. feature indices).
        dtype: floating dtype of the result.
    """
    return (bits(key, counter, slots) >> 8).to(dtype) * (1.0 / (1 << 24))


def integers(
    key: torch.Tensor, counter: torch.Tensor, slots: torch.Tensor | int, high: torch.Tensor | int
) -> torch.Tensor:
    """Integers uniform in ``[0, high)`` (``high`` < 2**31, broadcast against ``(N, K)``): int64.

    Lemire's multiply-shift maps 32 random bits onto the range; the bias is below
    ``high / 2**32``, far under the Monte Carlo error of any estimate built on it.
    """
    return integers_from_bits(bits(key, counter, slots), high)


def integers_from_bits(random_bits: torch.Tensor, high: torch.Tensor | int) -> torch.Tensor:
    """:func:`integers` from bits already drawn by :func:`bits` (broadcast against ``high``)."""
    high = torch.as_tensor(high, dtype=torch.int64, device=random_bits.device)
    return (random_bits * high) >> 32
