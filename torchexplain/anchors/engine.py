"""The KL-LUCB anchor beam search of many instances at once, as tensors on their device.

Ribeiro et al., "Anchors: High-Precision Model-Agnostic Explanations", AAAI 2018; the
arm selection is KL-LUCB (Kaufmann & Kalyanakrishnan 2013). The semantics are those of
Alibi's ``AnchorBaseBeam`` and of :mod:`torchexplain.anchors.reference` (the per-instance
search this engine is tested against): the same empty-anchor check, candidate proposal,
exploration rate ``beta``, refinement around the threshold, choice of the valid anchor
of largest coverage and best-precision attempt with ``success=False``, and the same
reuse of samples (a new candidate starts from its parent's samples that keep the added
feature; later draws count only for the arm they were drawn for). With
``precision_samples="fresh"`` the reused samples still rank the candidates in KL-LUCB, but
an anchor chosen into the beam drops them: its refinement, its validity and the precision
reported rest only on samples drawn for it (reused samples are biased where the sampler
draws the added feature together with the rest of a row, as the tabular sampler does).

Representation (B instances, M features, A arm slots per instance):

- Arms live in slots: slot 0 is the empty anchor, then ``H = beam_size * L`` history
  slots (the beam chosen at each anchor size, size-major), then ``beam_size * M``
  candidate slots rebuilt at every size. Per slot: the feature set ``(B, A, M)`` bool,
  the order features were added, counts of samples and agreements (float64), coverage
  and the coverage rows it holds as a packed bitset, a parent slot, and its samples as a
  bitset over the instance's own stream of samples (bit s: its sample number s).
- Every instance is in a phase (empty-anchor check, proposal, KL-LUCB, refinement,
  final choice, done). A round advances every instance through the phases that need
  no samples, until each one asks for samples or is done; each phase is one vectorised
  step over the instances in it.
- The round's requests are ``(B, A)`` counts; they become one flat batch of sample
  rows (instance, slot, stream position) answered by one call of the sampler, which
  builds and scores the perturbed inputs on the device.
- The sample store is flat (rows of all instances, appended each round, for the
  covered examples). The search itself works on bitsets over each instance's stream:
  which samples keep each feature, which agree, and which belong to each arm. A draw
  sets its bits in the arm it was drawn for; a new candidate's samples are its parent's
  AND the added feature's (Alibi's reuse rule, one AND per candidate); counts are
  popcounts. Each sample costs one bit per arm and per feature, not a row of bytes.

Randomness belongs to the sampler and is keyed by each instance's own stream position,
so explaining a batch gives what each instance gives alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = [
    "EngineResult",
    "Sampler",
    "SampleStore",
    "compute_beta",
    "kl_bound",
    "kl_lower_bound",
    "kl_upper_bound",
    "pack_rows",
    "popcount",
    "run_engine",
]

_EPS_LOW, _EPS_HIGH = 1e-7, 1.0 - 1e-16

# Phases of an instance's search.
(
    _EMPTY_START,
    _EMPTY_CHECK,
    _PROPOSE,
    _KL_START,
    _KL_ENTRY,
    _KL_LOOP,
    _CHOSEN,
    _REFINE,
    _FINISH,
    _DONE,
) = range(10)


class Sampler(Protocol):
    """Answers one round of sample requests for all instances.

    Called with ``owner`` ``(N,)`` int64 (the instance each sample is for), ``features``
    ``(N, M)`` bool (the anchor it is drawn for), ``order`` ``(N, L)`` int64 (that
    anchor's features in the order they were added, -1 padded; None when the sampler
    has an attribute ``needs_order = False``) and ``stream`` ``(N,)``
    int64 (the sample's position in its instance's own stream: the key of its random
    numbers), and ``group`` ``(N,)`` int64 (which request, i.e. which (instance, arm)
    pair, the sample answers: consecutive ids from 0, rows of one request adjacent).
    Returns ``present`` ``(N, M)`` bool (which features the sample keeps, or
    which predicates it satisfies), ``agree`` ``(N,)`` bool (the model's prediction on
    it equals the explained one) and an optional ``payload`` ``(N, ...)`` tensor the
    sampler needs to rebuild the sample later (stored and handed back).

    A sampler with an attribute ``per_request = True`` gets ``features`` ``(G, M)`` and
    ``order`` ``(G, L)`` per request instead (row g for request g), which spares the engine
    a per-sample copy of both when the sampler only needs them per request.
    """

    def __call__(
        self,
        owner: torch.Tensor,
        features: torch.Tensor,
        order: torch.Tensor | None,
        stream: torch.Tensor,
        group: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]: ...


def kl_bernoulli(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL divergence between Bernoulli(p) and Bernoulli(q), clipped away from 0 and 1."""
    p = p.clamp(_EPS_LOW, _EPS_HIGH)
    q = q.clamp(_EPS_LOW, _EPS_HIGH)
    return p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))


def _kl_bound(
    p: torch.Tensor, level: torch.Tensor, n_iter: int, upper: bool | torch.Tensor
) -> torch.Tensor:
    """Bisection for the q on the ``upper`` side of p (elementwise when a bool tensor; the lower
    side where False) where ``KL(p, q) = level``: one bisection serves arms needing either bound."""
    p = p.to(torch.float64)
    level = torch.as_tensor(level, dtype=torch.float64, device=p.device).expand_as(p)
    radius = torch.sqrt(level / 2.0)
    if isinstance(upper, bool):
        if upper:
            lo, hi = p.clone(), (p + radius).clamp_max(1.0)
        else:
            lo, hi = (p - radius).clamp(0.0, 1.0), p.clone()
    else:
        lo = torch.where(upper, p, (p - radius).clamp(0.0, 1.0))
        hi = torch.where(upper, (p + radius).clamp_max(1.0), p)
    # KL(p, q) = [p log p + (1-p) log(1-p)] - p log q - (1-p) log(1-q): the bracket is fixed.
    pc = p.clamp(_EPS_LOW, _EPS_HIGH)
    qc = 1 - pc
    entropy_term = pc * torch.log(pc) + qc * torch.log(qc)
    lower_side = ~upper if isinstance(upper, torch.Tensor) else None
    for _ in range(1, n_iter):
        mid = (lo + hi) / 2.0
        q = mid.clamp(_EPS_LOW, _EPS_HIGH)
        kl = entropy_term - pc * torch.log(q) - qc * torch.log(1 - q)
        # the upper bound moves hi down where KL exceeds the level; the lower one moves lo up
        if lower_side is not None:
            move_hi = (kl > level) ^ lower_side
        else:
            move_hi = kl > level if upper else kl <= level
        hi = torch.where(move_hi, mid, hi)
        lo = torch.where(move_hi, lo, mid)
    return torch.where(upper, hi, lo) if isinstance(upper, torch.Tensor) else (hi if upper else lo)


def kl_bound(
    p: torch.Tensor, level: torch.Tensor, upper: torch.Tensor, n_iter: int = 17
) -> torch.Tensor:
    """The upper bound where ``upper`` (bool, broadcast against p) is True, else the lower one."""
    return _kl_bound(p, level, n_iter, upper)


def kl_bounds(
    p: torch.Tensor, level: torch.Tensor, n_iter: int = 17
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)`` bounds together: one bisection over both (half the small-op overhead)."""
    p = p.to(torch.float64)
    level = torch.as_tensor(level, dtype=torch.float64, device=p.device).expand_as(p)
    upper_half = torch.tensor([False, True], device=p.device).reshape((2,) + (1,) * p.dim())
    bounds = _kl_bound(p.expand(2, *p.shape), level.expand(2, *p.shape), n_iter, upper_half)
    return bounds[0], bounds[1]


def kl_upper_bound(p: torch.Tensor, level: torch.Tensor, n_iter: int = 17) -> torch.Tensor:
    """Largest q >= p with ``KL(p, q) <= level``, elementwise, by bisection (16 halvings, as Alibi)."""
    return _kl_bound(p, level, n_iter, upper=True)


def kl_lower_bound(p: torch.Tensor, level: torch.Tensor, n_iter: int = 17) -> torch.Tensor:
    """Smallest q <= p with ``KL(p, q) <= level``, elementwise, by bisection (16 halvings, as Alibi)."""
    return _kl_bound(p, level, n_iter, upper=False)


def compute_beta(n_arms: torch.Tensor, t: torch.Tensor, delta: float) -> torch.Tensor:
    """KL-LUCB exploration rate ``log(k n t^a / delta) + log log(...)``, k=405.5, a=1.1 (as Alibi), elementwise."""
    inner = torch.log(405.5 * n_arms.to(torch.float64) * t.to(torch.float64) ** 1.1 / delta)
    return inner + torch.log(inner)


_BIT_WEIGHTS = torch.tensor([1 << k for k in range(63)] + [-(1 << 63)], dtype=torch.int64)


def pack_rows(present: torch.Tensor) -> torch.Tensor:
    """``(..., R, M)`` bool -> ``(..., M, ceil(R / 64))`` int64: per feature, a bitset over the rows."""
    *lead, rows, m = present.shape
    pad = (-rows) % 64
    bits = present.transpose(-1, -2)
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad))
    bits = bits.reshape(*lead, m, -1, 64).to(torch.int64)
    return (bits * _BIT_WEIGHTS.to(present.device)).sum(-1)


def popcount(bits: torch.Tensor) -> torch.Tensor:
    """Set bits of ``(..., n_words)`` int64 bitsets: ``(...)`` int64 (bit-parallel count per word).

    Byte counts by the usual masks (each shift is followed by a mask that clears the top
    bits, so the arithmetic right shift of int64 leaks no sign bit), then one multiply sums
    the eight bytes into the top byte. The multiply wraps modulo 2**64 (two's complement,
    on the CPU and CUDA alike); the top byte holds at most 64, so its shift down is positive.
    """
    x = bits - ((bits >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return ((x * 0x0101010101010101) >> 56).sum(-1)


@dataclass
class SampleStore:
    """Every sample the search drew, all instances, in draw order (rows of one instance in stream order)."""

    present: torch.Tensor  # (R, M) bool
    agree: torch.Tensor  # (R,) bool
    owner: torch.Tensor  # (R,) int64
    stream: torch.Tensor  # (R,) int64
    payload: torch.Tensor | None  # (R, ...) or None
    size: int = 0

    @classmethod
    def empty(cls, m: int, device: torch.device, capacity: int = 4096) -> SampleStore:
        z = dict(device=device)
        return cls(
            torch.zeros(capacity, m, dtype=torch.bool, **z),
            torch.zeros(capacity, dtype=torch.bool, **z),
            torch.zeros(capacity, dtype=torch.int64, **z),
            torch.zeros(capacity, dtype=torch.int64, **z),
            None,
        )

    def append(self, present, agree, owner, stream, payload) -> None:
        n = owner.shape[0]
        need = self.size + n
        if need > self.present.shape[0]:
            capacity = max(need, 2 * self.present.shape[0])
            for name in ("present", "agree", "owner", "stream", "payload"):
                old = getattr(self, name)
                if old is None:
                    continue
                # rows past ``size`` are never read: no need to clear them
                grown = torch.empty((capacity, *old.shape[1:]), dtype=old.dtype, device=old.device)
                grown[: self.size] = old[: self.size]
                setattr(self, name, grown)
        if payload is not None and self.payload is None:
            self.payload = torch.zeros(
                (self.present.shape[0], *payload.shape[1:]),
                dtype=payload.dtype,
                device=payload.device,
            )
        rows = slice(self.size, need)
        self.present[rows] = present
        self.agree[rows] = agree
        self.owner[rows] = owner
        self.stream[rows] = stream
        if payload is not None:
            self.payload[rows] = payload
        self.size = need

    def view(self, name: str) -> torch.Tensor:
        value = getattr(self, name)
        return value[: self.size]


@dataclass
class EngineResult:
    """Outcome of every instance's search.

    Attributes:
        anchors: per instance, the anchor's features in the order the search added them.
        precision: ``(B,)`` float64 estimated precision.
        coverage: ``(B,)`` float64 fraction of coverage rows the anchor applies to.
        success: ``(B,)`` bool, the anchor meets the precision constraint.
        n_samples: ``(B,)`` int64 samples the precision estimate rests on.
        members: ``(R,)`` bool over the store: the row is one of its instance's anchor's samples.
        store: every sample drawn.
        n_rounds: rounds of sampling (one sampler call each).
        n_syncs: host synchronisations the bookkeeping made.
    """

    anchors: list[list[int]]
    precision: torch.Tensor
    coverage: torch.Tensor
    success: torch.Tensor
    n_samples: torch.Tensor
    members: torch.Tensor
    store: SampleStore
    n_rounds: int
    n_syncs: int


class _Engine:
    def __init__(
        self,
        sampler: Sampler,
        n_features: torch.Tensor,
        coverage_bits: torch.Tensor,
        n_coverage: int,
        *,
        threshold: float,
        delta: float,
        tau: float,
        epsilon_stop: float,
        batch_size: int,
        beam_size: int,
        min_samples_start: int,
        max_anchor_size: int | None,
        stop_on_first: bool,
        precision_samples: str = "reuse",
    ) -> None:
        if precision_samples not in ("reuse", "fresh"):
            raise ValueError(
                f"precision_samples must be 'reuse' or 'fresh', got {precision_samples!r}"
            )
        self.fresh = precision_samples == "fresh"
        self.sampler = sampler
        self.device = coverage_bits.device
        dev = self.device
        self.n_features = n_features.to(dev, torch.int64)
        b = self.b = int(n_features.shape[0])
        m = self.m = int(coverage_bits.shape[-2])
        self.coverage_bits = coverage_bits.expand(b, m, coverage_bits.shape[-1])
        self.n_coverage = int(n_coverage)
        self.threshold, self.delta, self.tau, self.epsilon_stop = (
            threshold,
            delta,
            tau,
            epsilon_stop,
        )
        self.batch_size, self.beam, self.min_samples_start = (
            batch_size,
            beam_size,
            min_samples_start,
        )
        self.stop_on_first = stop_on_first
        self.max_size = (
            self.n_features.clone()
            if max_anchor_size is None
            else torch.full_like(self.n_features, int(max_anchor_size))
        )
        self.length = max(
            1, min(m, int(self.max_size.max()) if b else 1)
        )  # L: longest anchor stored
        self.n_hist = self.beam * self.length
        self.n_cand = self.beam * max(m, 1)
        self.kl_width = max(self.n_hist, self.n_cand)
        self.hist0, self.cand0 = 1, 1 + self.n_hist
        a = self.n_slots = 1 + self.n_hist + self.n_cand
        n_words = self.coverage_bits.shape[-1]
        i64 = dict(dtype=torch.int64, device=dev)
        self.slot_features = torch.zeros(b, a, m, dtype=torch.bool, device=dev)
        self.slot_order = torch.full((b, a, self.length), -1, **i64)
        self.slot_len = torch.zeros(b, a, **i64)
        self.slot_parent = torch.zeros(b, a, **i64)
        self.slot_added = torch.full((b, a), -1, **i64)
        self.slot_cov_bits = torch.zeros(b, a, n_words, dtype=torch.int64, device=dev)
        self.slot_cov_bits[:, 0] = -1  # every bit set
        self.slot_coverage = torch.zeros(b, a, dtype=torch.float64, device=dev)
        self.slot_coverage[:, 0] = 1.0
        self.positives = torch.zeros(b, a, dtype=torch.float64, device=dev)
        self.n = torch.zeros(b, a, dtype=torch.float64, device=dev)
        self.phase = torch.full((b,), _EMPTY_START, **i64)
        self.size = torch.ones(b, **i64)
        self.best_cov = torch.full((b,), -1.0, dtype=torch.float64, device=dev)
        self.best_slot = torch.full((b,), -1, **i64)
        self.result_slot = torch.zeros(b, **i64)
        self.success = torch.zeros(b, dtype=torch.bool, device=dev)
        self.kl_active = torch.zeros(b, a, dtype=torch.bool, device=dev)
        self.kl_t = torch.ones(b, **i64)
        self.kl_top = torch.ones(b, **i64)
        self.kl_final = torch.zeros(b, dtype=torch.bool, device=dev)
        self.chosen = torch.full((b, self.beam), -1, **i64)
        self.n_beam = torch.zeros(b, self.length + 1, **i64)
        self._init_samples()
        # One bound per (beam slot, feature) that may be tested: a union bound (as Alibi).
        self.refine_beta = torch.log(
            1.0 / (delta / (1 + (beam_size - 1) * self.n_features.to(torch.float64)))
        )

    def _init_samples(self) -> None:
        """The samples' state: the store, the requests, the counters, and which samples belong to
        which arm, as bitsets over each instance's own stream of samples (bit s = its sample
        number s): per slot, per feature (kept / predicate satisfied), and the agreement.
        Alibi's reuse rule is then one AND per candidate."""
        b, a, m, dev = self.b, self.n_slots, self.m, self.device
        i64 = dict(dtype=torch.int64, device=dev)
        self.n_drawn = torch.zeros(b, **i64)
        self.max_drawn = 0  # the most samples any instance has drawn (known on the host)
        self.store = SampleStore.empty(m, dev)
        words = 64
        self.member = torch.zeros(b, a, words, **i64)
        self.present_bits = torch.zeros(b, m, words, **i64)
        self.agree_bits = torch.zeros(b, words, **i64)
        self.bit_weights = torch.tensor([1 << k for k in range(63)] + [-(1 << 63)], **i64)
        self.n_rounds = 0
        self.request = torch.zeros(b, a, **i64)
        self.requested = torch.zeros(b, dtype=torch.bool, device=dev)
        self.n_syncs = 0

    # ------------------------------------------------------------------ helpers

    def _hist_slots(self, size: torch.Tensor) -> torch.Tensor:
        """``(n, beam)`` history slot numbers of the beam of anchor size ``size`` ``(n,)``."""
        j = torch.arange(self.beam, device=self.device)
        return self.hist0 + (size[:, None] - 1) * self.beam + j

    def _means(self, idx: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos = self.positives[idx[:, None], slots]
        n = self.n[idx[:, None], slots]
        return pos / n, n

    def _used_words(self) -> int:
        """Bitset words that can hold a set bit (every sample's bit is below ``max_drawn``): the
        per-arm work reads and writes only these, not the whole capacity."""
        return min(self.max_drawn // 64 + 1, self.member.shape[-1])

    def _grow_bitsets(self, words: int) -> None:
        """Room for ``64 * words`` samples per instance in every bitset."""
        old = self.member.shape[-1]
        if words <= old:
            return
        words = max(words, 2 * old)
        pad = (0, words - old)
        self.member = torch.nn.functional.pad(self.member, pad)
        self.present_bits = torch.nn.functional.pad(self.present_bits, pad)
        self.agree_bits = torch.nn.functional.pad(self.agree_bits, pad)

    # ------------------------------------------------------------------ phases

    def _empty_start(self, idx: torch.Tensor) -> None:
        self.request[idx, 0] = self.min_samples_start
        self.requested[idx] = True
        self.phase[idx] = _EMPTY_CHECK

    def _empty_check(self, idx: torch.Tensor) -> None:
        mean = self.positives[idx, 0] / self.n[idx, 0]
        lower = kl_lower_bound(mean, math.log(1.0 / self.delta) / self.n[idx, 0])
        more = (mean > self.threshold) & (lower < self.threshold - self.tau)
        done = ~more & (lower > self.threshold)
        self.request[idx, 0] = torch.where(more, self.batch_size, 0)
        self.requested[idx] = more
        self.phase[idx] = torch.where(more, _EMPTY_CHECK, torch.where(done, _DONE, _PROPOSE))
        self.success[idx] = done
        self.result_slot[idx] = 0

    def _propose(self, idx: torch.Tensor) -> None:
        """The candidates of the next size (each beam anchor plus one feature), their slots filled,
        and the KL-LUCB selection started among those that could beat the best coverage."""
        cand_valid, cand_feat, cand_parent = self._candidates(idx)
        coverage = self._fill_candidates(idx, cand_valid, cand_feat, cand_parent)
        inst = idx[:, None]
        slots = self.cand0 + torch.arange(self.n_cand, device=self.device)
        active = cand_valid & (coverage > self.best_cov[idx][:, None])
        self.kl_active[idx] = False
        self.kl_active[inst, slots] = active
        n_active = active.sum(1)
        self.kl_t[idx] = 1
        self.kl_top[idx] = n_active.clamp(max=self.beam)
        self.kl_final[idx] = False
        self.phase[idx] = torch.where(n_active == 0, _FINISH, _KL_START)

    def _candidates(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(n, C)`` candidates in the reference's order (feature-major, then parent), compacted to
        the front: valid or not, the added feature, the parent slot."""
        dev, m, beam = self.device, self.m, self.beam
        size = self.size[idx]
        first = size == 1
        # Parents: the empty anchor at size 1, else the beam of the previous size.
        parents = torch.where(
            first[:, None],
            torch.where(torch.arange(beam, device=dev) == 0, 0, -1),
            self._hist_slots((size - 1).clamp_min(1)),
        )
        n_parent = torch.where(first, 1, self.n_beam[idx, (size - 1).clamp_min(0)])
        parents = torch.where(torch.arange(beam, device=dev) < n_parent[:, None], parents, -1)
        parent_features = self.slot_features[idx[:, None], parents.clamp_min(0)]  # (n, beam, M)
        f = torch.arange(m, device=dev)
        raw_valid = (
            (parents >= 0)[:, None, :]
            & (f[None, :, None] < self.n_features[idx][:, None, None])
            & ~parent_features.transpose(1, 2)
        )  # (n, M, beam)
        if beam > 1:
            raw_valid &= ~_repeated_candidates(parents, parent_features)
        flat_valid = raw_valid.reshape(idx.shape[0], m * beam)
        # Stable compaction of the valid raw candidates to the front.
        order = torch.sort((~flat_valid).to(torch.int8), dim=1, stable=True).indices[
            :, : self.n_cand
        ]
        cand_valid = flat_valid.gather(1, order)
        cand_parent = torch.where(cand_valid, parents.gather(1, order % beam), 0)
        return cand_valid, order // beam, cand_parent

    def _fill_candidates(
        self,
        idx: torch.Tensor,
        cand_valid: torch.Tensor,
        cand_feat: torch.Tensor,
        cand_parent: torch.Tensor,
    ) -> torch.Tensor:
        """Write the candidates into their slots (features, order, coverage, the samples they reuse);
        returns their coverage ``(n, C)``."""
        dev, m = self.device, self.m
        n = idx.shape[0]
        inst = idx[:, None]
        size = self.size[idx]
        slots = self.cand0 + torch.arange(self.n_cand, device=dev)
        onehot = (
            torch.nn.functional.one_hot(cand_feat, m).bool()
            if m
            else torch.zeros(n, self.n_cand, 0, dtype=torch.bool, device=dev)
        )
        features = (self.slot_features[inst, cand_parent] | onehot) & cand_valid[..., None]
        self.slot_features[inst, slots] = features
        parent_order = self.slot_order[inst, cand_parent]  # (n, C, L)
        at_end = torch.arange(self.length, device=dev) == (size - 1)[:, None, None]
        self.slot_order[inst, slots] = torch.where(
            cand_valid[..., None], torch.where(at_end, cand_feat[..., None], parent_order), -1
        )
        self.slot_len[inst, slots] = torch.where(cand_valid, size[:, None], 0)
        self.slot_parent[inst, slots] = cand_parent
        self.slot_added[inst, slots] = torch.where(cand_valid, cand_feat, -1)
        cov_bits = self.slot_cov_bits[inst, cand_parent] & self.coverage_bits[inst, cand_feat]
        self.slot_cov_bits[inst, slots] = cov_bits
        coverage = popcount(cov_bits).to(torch.float64) / self.n_coverage
        self.slot_coverage[inst, slots] = torch.where(cand_valid, coverage, 0.0)
        # Alibi's reuse: a candidate starts with its parent's samples that keep the added
        # feature (a snapshot: the parent's later draws count for the parent only).
        w = self._used_words()
        member = self.member[inst, cand_parent, :w] & self.present_bits[inst, cand_feat, :w]
        member = torch.where(cand_valid[..., None], member, 0)
        self.member[inst, slots, :w] = member
        self.n[inst, slots] = popcount(member).to(torch.float64)
        self.positives[inst, slots] = popcount(member & self.agree_bits[idx, None, :w]).to(
            torch.float64
        )
        return coverage

    def _kl_start(self, idx: torch.Tensor) -> None:
        unsampled = self.kl_active[idx] & (self.n[idx] == 0)
        self.request[idx] += unsampled.to(torch.int64)
        self.requested[idx] = unsampled.any(1)
        self.phase[idx] = _KL_ENTRY

    def _kl_entry(self, idx: torch.Tensor) -> None:
        active = self.kl_active[idx]
        everything = active.sum(1) == self.kl_top[idx]
        # All arms are the top arms: chosen in arm order.
        first = torch.sort((~active).to(torch.int8), dim=1, stable=True).indices[:, : self.beam]
        take = torch.arange(self.beam, device=self.device) < self.kl_top[idx][:, None]
        self.chosen[idx] = torch.where(
            everything[:, None], torch.where(take, first, -1), self.chosen[idx]
        )
        self.phase[idx] = torch.where(everything, _CHOSEN, _KL_LOOP)

    def _kl_loop(self, idx: torch.Tensor) -> None:
        a = self.n_slots
        active = self.kl_active[idx]
        means = torch.where(active, self.positives[idx] / self.n[idx].clamp_min(1), -math.inf)
        n_active = active.sum(1)
        top = self.kl_top[idx]
        sorted_means, order = torch.sort(means, dim=1, stable=True)
        rank = torch.arange(a, device=self.device)
        is_best = rank >= (a - top)[:, None]
        is_rest = (rank >= (a - n_active)[:, None]) & ~is_best
        # The active arms sort last (the others' means are -inf) and are candidates, or beams
        # in the final choice: only the last ``kl_width`` ranks can hold any.
        width = self.kl_width
        sorted_means, order = sorted_means[:, a - width :], order[:, a - width :]
        is_best, is_rest = is_best[:, a - width :], is_rest[:, a - width :]
        n_sorted = self.n[idx].gather(1, order).clamp_min(1)
        beta = compute_beta(n_active, self.kl_t[idx], self.delta)[:, None]
        safe_means = sorted_means.clamp_min(0.0)
        # Upper bounds for the rest, lower bounds for the best: one bisection for both.
        bound = kl_bound(safe_means, beta / n_sorted, is_rest)
        upper = torch.where(is_rest, bound, -math.inf)
        lower = torch.where(is_best, bound, math.inf)
        challenger_rank = upper.argmax(1)
        weakest_rank = lower.argmin(1)
        gap = (
            upper.gather(1, challenger_rank[:, None])[:, 0]
            - lower.gather(1, weakest_rank[:, None])[:, 0]
        )
        more = gap > self.tau
        challenger = order.gather(1, challenger_rank[:, None])[:, 0]
        weakest = order.gather(1, weakest_rank[:, None])[:, 0]
        pull = torch.zeros_like(self.request[idx])
        pull.scatter_(1, challenger[:, None], self.batch_size)
        pull.scatter_(1, weakest[:, None], self.batch_size)
        self.request[idx] += torch.where(more[:, None], pull, 0)
        self.requested[idx] = more
        self.kl_t[idx] += more.to(torch.int64)
        # Done: the top arms in ascending order of precision (as the reference's argsort).
        j = torch.arange(self.beam, device=self.device)
        take = j < top[:, None]
        best_positions = (width - top)[:, None] + j
        chosen = torch.where(take, order.gather(1, best_positions.clamp(0, width - 1)), -1)
        self.chosen[idx] = torch.where(more[:, None], self.chosen[idx], chosen)
        self.phase[idx] = torch.where(more, _KL_LOOP, _CHOSEN)

    def _chosen(self, idx: torch.Tensor) -> None:
        final = self.kl_final[idx]
        chosen = self.chosen[idx]
        self.result_slot[idx] = torch.where(final, chosen[:, 0], self.result_slot[idx])
        self.success[idx] = torch.where(final, False, self.success[idx])
        keep = ~final
        if bool(keep.any()):
            self.n_syncs += 1
            sub = idx[keep]
            chosen = chosen[keep]
            size = self.size[sub]
            valid = chosen >= 0
            hist = self._hist_slots(size)
            inst = sub[:, None]
            src = chosen.clamp_min(0)
            tables = [
                getattr(self, name)
                for name in (
                    "slot_features",
                    "slot_order",
                    "slot_len",
                    "slot_parent",
                    "slot_added",
                    "slot_cov_bits",
                    "slot_coverage",
                    "positives",
                    "n",
                )
            ]
            # Words past the used ones are zero in every slot (no sample has a bit there).
            tables.append(self.member[..., : self._used_words()])
            for table in tables:
                values = table[inst, src]
                old = table[inst, hist]
                shape = valid.shape + (1,) * (values.dim() - 2)
                table[inst, hist] = torch.where(valid.reshape(shape), values, old)
            self.n_beam[sub, size] = valid.sum(1)
            if self.fresh:
                self._keep_own_samples(sub, hist, valid)
        self.phase[idx] = torch.where(final, _DONE, _REFINE)

    def _keep_own_samples(self, sub: torch.Tensor, hist: torch.Tensor, valid: torch.Tensor) -> None:
        """Fresh precision: the new beam anchors (history slots ``hist``, ``(n, beam)``) drop the
        samples they inherited and keep those drawn for them; one without any draws a batch.

        The inherited samples are exactly the parent's (whose set no longer changes once it has
        children), so the anchor's own are its samples outside its parent's."""
        inst = sub[:, None]
        parent = self.slot_parent[inst, hist]
        w = self._used_words()
        own = self.member[inst, hist, :w] & ~self.member[inst, parent, :w]
        own = torch.where(valid[..., None], own, self.member[inst, hist, :w])
        self.member[inst, hist, :w] = own
        self.n[inst, hist] = popcount(own).to(torch.float64)
        self.positives[inst, hist] = popcount(own & self.agree_bits[sub, None, :w]).to(
            torch.float64
        )
        empty = valid & (self.n[inst, hist] == 0)
        self.request[inst, hist] += empty.to(torch.int64) * self.batch_size
        self.requested[sub] |= empty.any(1)

    def _refine(self, idx: torch.Tensor) -> None:
        size = self.size[idx]
        slots = self._hist_slots(size)
        in_beam = torch.arange(self.beam, device=self.device) < self.n_beam[idx, size][:, None]
        means, n = self._means(idx, slots)
        means = torch.where(in_beam, means, 0.0)
        level = self.refine_beta[idx][:, None] / n.clamp_min(1)
        lower, upper = kl_bounds(means, level)
        thr, eps = self.threshold, self.epsilon_stop
        pending = in_beam & (
            ((means >= thr) & (lower < thr - eps)) | ((means < thr) & (upper >= thr + eps))
        )
        any_pending = pending.any(1)
        pull = torch.zeros_like(self.request[idx])
        pull.scatter_add_(1, slots, pending.to(torch.int64) * self.batch_size)
        self.request[idx] += pull
        self.requested[idx] = any_pending
        # Settled: keep the valid anchor of largest coverage.
        coverage = self.slot_coverage[idx[:, None], slots]
        valid = in_beam & (means >= thr) & (lower > thr - eps)
        better = valid & (coverage > self.best_cov[idx][:, None])
        found = better.any(1) & ~any_pending
        pick = torch.where(better, coverage, -math.inf).argmax(1)
        pick_cov = coverage.gather(1, pick[:, None])[:, 0]
        self.best_cov[idx] = torch.where(found, pick_cov, self.best_cov[idx])
        self.best_slot[idx] = torch.where(
            found, slots.gather(1, pick[:, None])[:, 0], self.best_slot[idx]
        )
        stop = found & ((pick_cov == 1.0) | self.stop_on_first)
        grown = size + 1
        self.size[idx] = torch.where(any_pending | stop, size, grown)
        over = grown > self.max_size[idx]
        nxt = torch.where(stop | over, _FINISH, _PROPOSE)
        self.phase[idx] = torch.where(any_pending, _REFINE, nxt)

    def _finish(self, idx: torch.Tensor) -> None:
        found = self.best_slot[idx] >= 0
        self.result_slot[idx] = torch.where(found, self.best_slot[idx], self.result_slot[idx])
        self.success[idx] = found
        # No valid anchor: the best-precision attempt among the beams of every size tried.
        size = self.size[idx]
        hist = torch.arange(self.n_hist, device=self.device)
        hist_size = 1 + hist // self.beam
        hist_j = hist % self.beam
        tried = (hist_size[None, :] < size[:, None]) & (
            hist_j[None, :] < self.n_beam[idx][:, hist_size.clamp(max=self.length)]
        )
        tried &= ~found[:, None]
        n_tried = tried.sum(1)
        self.kl_active[idx] = False
        self.kl_active[idx[:, None], self.hist0 + hist] = tried
        self.kl_t[idx] = 1
        self.kl_top[idx] = 1
        self.kl_final[idx] = True
        nothing = ~found & (n_tried == 0)
        self.result_slot[idx] = torch.where(nothing, 0, self.result_slot[idx])
        self.phase[idx] = torch.where(found | nothing, _DONE, _KL_START)

    # ------------------------------------------------------------------ driver

    def _advance(self) -> None:
        """Move every instance on until it asks for samples or is done."""
        handlers: list[tuple[int, Callable[[torch.Tensor], None]]] = [
            (_EMPTY_START, self._empty_start),
            (_EMPTY_CHECK, self._empty_check),
            (_PROPOSE, self._propose),
            (_KL_START, self._kl_start),
            (_KL_ENTRY, self._kl_entry),
            (_KL_LOOP, self._kl_loop),
            (_CHOSEN, self._chosen),
            (_REFINE, self._refine),
            (_FINISH, self._finish),
        ]
        while True:
            # One host sync per pass: the waiting instances sorted by phase, and how many are in
            # each. An instance a handler moves on is handled in the next pass.
            key = torch.where(self.requested, _DONE, self.phase)
            order = torch.argsort(key, stable=True)
            counts = torch.bincount(key, minlength=_DONE + 1).tolist()
            self.n_syncs += 1
            if counts[_DONE] == self.b:
                return
            starts = [0]
            for count in counts:
                starts.append(starts[-1] + count)
            for phase, handler in handlers:
                if counts[phase]:
                    handler(order[starts[phase] : starts[phase + 1]])

    def _draw(self) -> None:
        """Answer the round's requests with one sampler call and update the counts."""
        dev = self.device
        counts = self.request.reshape(-1)
        total = int(counts.sum())
        self.n_syncs += 1
        flat = torch.repeat_interleave(
            torch.arange(counts.shape[0], device=dev), counts, output_size=total
        )
        owner = flat // self.n_slots
        slot = flat % self.n_slots
        per_instance = self.request.sum(1)
        starts = torch.cumsum(per_instance, 0) - per_instance
        stream = self.n_drawn[owner] + (torch.arange(total, device=dev) - starts[owner])
        group = (torch.cumsum(counts > 0, 0) - 1)[flat]
        if getattr(self.sampler, "per_request", False):
            # One row per request: the (instance, slot) pairs with samples, in flat order.
            pairs = torch.nonzero(counts).flatten()
            self.n_syncs += 1
            features = self.slot_features.view(-1, self.m)[pairs]
            order = self.slot_order.view(-1, self.length)[pairs]
        else:
            features = self.slot_features[owner, slot]
            order = (
                self.slot_order[owner, slot] if getattr(self.sampler, "needs_order", True) else None
            )
        present, agree, payload = self.sampler(owner, features, order, stream, group)
        present = present.to(dev, torch.bool)
        agree = agree.to(dev, torch.bool)
        self.max_drawn = int((self.n_drawn + per_instance).max())
        self._grow_bitsets(self.max_drawn // 64 + 1)
        self.n_syncs += 1
        word, bit = stream // 64, self.bit_weights[stream % 64]
        # Rows come instance by instance in stream order, so rows sharing an (instance, word)
        # are adjacent: sum their bits into one value per word first (each bit is set once,
        # so adding is OR-ing), then add those into the bitsets.
        if total:
            starts_word = torch.ones(total, dtype=torch.bool, device=dev)
            starts_word[1:] = (owner[1:] != owner[:-1]) | (word[1:] != word[:-1])
            segment = torch.cumsum(starts_word, 0) - 1
            n_segments = int(segment[-1]) + 1
            self.n_syncs += 1
            seg_owner, seg_word = owner[starts_word], word[starts_word]
            bits = torch.zeros(n_segments, 2 + self.m, dtype=torch.int64, device=dev)
            bits.index_add_(
                0,
                segment,
                torch.cat(
                    [
                        torch.where(agree, bit, 0)[:, None],
                        bit[:, None],
                        torch.where(present, bit[:, None], 0),
                    ],
                    dim=1,
                ),
            )
            self.agree_bits.index_put_((seg_owner, seg_word), bits[:, 0], accumulate=True)
            self.present_bits[seg_owner, :, seg_word] += bits[:, 2:]
            # An arm's draws in a round are adjacent too: one value per (instance, slot, word).
            starts_arm = starts_word.clone()
            starts_arm[1:] |= slot[1:] != slot[:-1]
            arm_segment = torch.cumsum(starts_arm, 0) - 1
            arm_bits = torch.zeros(int(arm_segment[-1]) + 1, dtype=torch.int64, device=dev)
            self.n_syncs += 1
            arm_bits.index_add_(0, arm_segment, bit)
            self.member.index_put_(
                (owner[starts_arm], slot[starts_arm], word[starts_arm]), arm_bits, accumulate=True
            )
        self.n_rounds += 1
        self.store.append(present, agree, owner, stream, payload)
        self.n += self.request
        self.positives += torch.bincount(
            flat, weights=agree.to(torch.float64), minlength=counts.shape[0]
        ).view_as(self.positives)
        self.n_drawn += per_instance
        self.request.zero_()
        self.requested.zero_()

    def run(self) -> EngineResult:
        if self.b:
            while True:
                self._advance()
                self.n_syncs += 1
                if not bool(self.requested.any()):
                    break
                self._draw()
        idx = torch.arange(self.b, device=self.device)
        slot = self.result_slot
        precision = self.positives[idx, slot] / self.n[idx, slot].clamp_min(1.0)
        coverage = self.slot_coverage[idx, slot]
        n_samples = self.n[idx, slot].to(torch.int64)
        # A stored sample is one of its instance's anchor's samples when its bit is set in the
        # result arm's bitset (one gather per stored row).
        owner, stream = self.store.view("owner"), self.store.view("stream")
        bits = self.member[idx, slot]  # (B, W): the result arms' samples
        word = bits[owner, stream // 64]
        members = ((word >> (stream % 64)) & 1).bool()
        orders = self.slot_order[idx, slot].tolist()
        anchors = [[f for f in order if f >= 0] for order in orders]
        return EngineResult(
            anchors=anchors,
            precision=precision,
            coverage=coverage,
            success=self.success.clone(),
            n_samples=n_samples,
            members=members,
            store=self.store,
            n_rounds=self.n_rounds,
            n_syncs=self.n_syncs,
        )


def run_engine(
    sampler: Sampler,
    n_features: torch.Tensor,
    coverage_bits: torch.Tensor,
    n_coverage: int,
    *,
    threshold: float = 0.95,
    delta: float = 0.1,
    tau: float = 0.15,
    epsilon_stop: float = 0.05,
    batch_size: int = 100,
    beam_size: int = 1,
    min_samples_start: int = 100,
    max_anchor_size: int | None = None,
    stop_on_first: bool = False,
    precision_samples: str = "reuse",
) -> EngineResult:
    """Run the anchor searches of B instances together.

    Args:
        sampler: answers each round's requests (see :class:`Sampler`).
        n_features: ``(B,)`` int64 features of each instance (features ``>= n_features[i]``
            do not exist for instance ``i``; M is the largest).
        coverage_bits: ``(B, M, n_words)`` or ``(1, M, n_words)`` int64 from :func:`pack_rows`:
            per feature, the coverage rows that keep it (or satisfy its predicate); its device
            is where the search runs.
        n_coverage: number of coverage rows.
        threshold: precision wanted (Alibi's ``threshold``; the paper's tau).
        delta: confidence budget of the bounds.
        tau: KL-LUCB tolerance epsilon (Alibi's name).
        epsilon_stop: margin around ``threshold`` when refining the chosen anchors.
        batch_size: samples per arm pull.
        beam_size: anchors kept per size.
        min_samples_start: samples for the empty-anchor check.
        max_anchor_size: largest anchor tried (None: every feature).
        stop_on_first: stop at the first valid anchor.
        precision_samples: ``"reuse"`` (Alibi's rule throughout) or ``"fresh"``: an anchor
            chosen into the beam keeps only the samples drawn for it (drawing a batch if it has
            none), so its refinement, validity and reported precision rest on its own draws.

    Returns:
        An :class:`EngineResult`.
    """
    engine = _Engine(
        sampler,
        n_features,
        coverage_bits,
        n_coverage,
        threshold=threshold,
        delta=delta,
        tau=tau,
        epsilon_stop=epsilon_stop,
        batch_size=batch_size,
        beam_size=beam_size,
        min_samples_start=min_samples_start,
        max_anchor_size=max_anchor_size,
        stop_on_first=stop_on_first,
        precision_samples=precision_samples,
    )
    return engine.run()


def _repeated_candidates(parents: torch.Tensor, parent_features: torch.Tensor) -> torch.Tensor:
    """``(n, M, beam)``: raw candidates (feature, parent) that repeat an earlier one.

    ``parent_j + {b}`` equals ``parent_j' + {a}`` when the parents differ in exactly ``a`` (in
    ``j``) and ``b`` (in ``j'``); the first of the two in (feature, parent) order is kept.
    """
    n, beam, m = parent_features.shape
    dev = parent_features.device
    diff = parent_features[:, :, None, :] ^ parent_features[:, None, :, :]  # (n, j, j', M)
    pair = (diff.sum(-1) == 2) & (parents >= 0)[:, :, None] & (parents >= 0)[:, None, :]
    only_j = parent_features[:, :, None, :] & diff  # features in j, not in j'
    a_feat = only_j.float().argmax(-1)  # (n, j, j')
    b_feat = only_j.transpose(1, 2).float().argmax(-1)  # in j', not in j
    # (b, j) and (a, j') coincide; the later one in (f, parent) order is dropped.
    drop_jprime = pair & (b_feat < a_feat)
    drop = torch.zeros(n, m, beam, dtype=torch.bool, device=dev)
    for j in range(beam):
        for jp in range(beam):
            if j != jp:
                sel = drop_jprime[:, j, jp]  # drop (a, j')
                drop[torch.arange(n, device=dev)[sel], a_feat[sel, j, jp], jp] = True
    return drop
