"""The KL-LUCB anchor beam search of many instances at once, as tensors on their device.

Ribeiro et al., "Anchors: High-Precision Model-Agnostic Explanations", AAAI 2018; the
arm selection is KL-LUCB (Kaufmann & Kalyanakrishnan 2013). The semantics are those of
Alibi's ``AnchorBaseBeam`` and of :mod:`torchexplain.anchors.reference` (the per-instance
search this engine is tested against): the same empty-anchor check, candidate proposal,
exploration rate ``beta``, refinement around the threshold, choice of the valid anchor
of largest coverage and best-precision attempt with ``success=False``, and the same
reuse of samples (a new candidate starts from its parent's samples that keep the added
feature; later draws count only for the arm they were drawn for).

Representation (B instances, M features, A arm slots per instance):

- Arms live in slots: slot 0 is the empty anchor, then ``H = beam_size * L`` history
  slots (the beam chosen at each anchor size, size-major), then ``beam_size * M``
  candidate slots rebuilt at every size. Per slot: the feature set ``(B, A, M)`` bool,
  the order features were added, counts of samples and agreements (float64), coverage
  and the coverage rows it holds as a packed bitset, a parent slot, and a tag.
- Every instance is in a phase (empty-anchor check, proposal, KL-LUCB, refinement,
  final choice, done). A round advances every instance through the phases that need
  no samples, until each one asks for samples or is done; each phase is one vectorised
  step over the instances in it.
- The round's requests are ``(B, A)`` counts; they become one flat batch of sample
  rows (instance, slot, stream position) answered by one call of the sampler, which
  builds and scores the perturbed inputs on the device.
- The sample store is flat (rows of all instances, appended each round). An arm's
  samples are never listed: they are recomputed when needed from each row's tag (the
  arm it was drawn for) and the arm's ancestry (``stream < created`` and the added
  feature kept), which is Alibi's reuse rule.

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
    "kl_lower_bound",
    "kl_upper_bound",
    "pack_rows",
    "popcount",
    "run_engine",
]

_EPS_LOW, _EPS_HIGH = 1e-7, 1.0 - 1e-16

# Phases of an instance's search.
_EMPTY_START, _EMPTY_CHECK, _PROPOSE, _KL_START, _KL_ENTRY, _KL_LOOP, _CHOSEN, _REFINE, _FINISH, _DONE = range(10)


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
    """

    def __call__(
        self, owner: torch.Tensor, features: torch.Tensor, order: torch.Tensor | None, stream: torch.Tensor,
        group: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]: ...


def kl_bernoulli(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL divergence between Bernoulli(p) and Bernoulli(q), clipped away from 0 and 1."""
    p = p.clamp(_EPS_LOW, _EPS_HIGH)
    q = q.clamp(_EPS_LOW, _EPS_HIGH)
    return p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))


def _kl_bound(p: torch.Tensor, level: torch.Tensor, n_iter: int, upper: bool) -> torch.Tensor:
    p = p.to(torch.float64)
    level = torch.as_tensor(level, dtype=torch.float64, device=p.device).expand_as(p)
    radius = torch.sqrt(level / 2.0)
    if upper:
        lo, hi = p.clone(), (p + radius).clamp_max(1.0)
    else:
        lo, hi = (p - radius).clamp(0.0, 1.0), p.clone()
    # KL(p, q) = [p log p + (1-p) log(1-p)] - p log q - (1-p) log(1-q): the bracket is fixed.
    pc = p.clamp(_EPS_LOW, _EPS_HIGH)
    entropy_term = pc * torch.log(pc) + (1 - pc) * torch.log(1 - pc)
    for _ in range(1, n_iter):
        mid = (lo + hi) / 2.0
        q = mid.clamp(_EPS_LOW, _EPS_HIGH)
        kl = entropy_term - pc * torch.log(q) - (1 - pc) * torch.log(1 - q)
        move_hi = (kl > level) == upper
        hi = torch.where(move_hi, mid, hi)
        lo = torch.where(move_hi, lo, mid)
    return hi if upper else lo


def kl_bounds(p: torch.Tensor, level: torch.Tensor, n_iter: int = 17) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)`` bounds together: one bisection over both (half the small-op overhead)."""
    p = p.to(torch.float64)
    level = torch.as_tensor(level, dtype=torch.float64, device=p.device).expand_as(p)
    radius = torch.sqrt(level / 2.0)
    lo = torch.stack([(p - radius).clamp(0.0, 1.0), p])
    hi = torch.stack([p, (p + radius).clamp_max(1.0)])
    lower_half = torch.tensor([True, False], device=p.device).reshape((2,) + (1,) * p.dim())
    pc = p.clamp(_EPS_LOW, _EPS_HIGH)
    qc = 1 - pc
    entropy_term = pc * torch.log(pc) + qc * torch.log(qc)
    for _ in range(1, n_iter):
        mid = (lo + hi) / 2.0
        q = mid.clamp(_EPS_LOW, _EPS_HIGH)
        kl = entropy_term - pc * torch.log(q) - qc * torch.log(1 - q)
        # the upper bound moves hi down where KL exceeds the level; the lower one moves lo up
        move_hi = (kl > level) ^ lower_half
        hi = torch.where(move_hi, mid, hi)
        lo = torch.where(move_hi, lo, mid)
    return lo[0], hi[1]


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

    Every shift is followed by a mask that clears the top bit, so the arithmetic right
    shift of int64 never leaks a sign bit into the count.
    """
    x = bits - ((bits >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    x = x + (x >> 8)
    x = x + (x >> 16)
    x = x + (x >> 32)
    return (x & 0x7F).sum(-1)


@dataclass
class SampleStore:
    """Every sample the search drew, all instances, in draw order (rows of one instance in stream order)."""

    present: torch.Tensor  # (R, M) bool
    agree: torch.Tensor  # (R,) bool
    owner: torch.Tensor  # (R,) int64
    stream: torch.Tensor  # (R,) int64
    tag: torch.Tensor  # (R,) int64: id of the arm the sample was drawn for
    tag_size: torch.Tensor  # (R,) int64: that arm's anchor size
    payload: torch.Tensor | None  # (R, ...) or None
    size: int = 0

    @classmethod
    def empty(cls, m: int, device: torch.device, capacity: int = 4096) -> SampleStore:
        z = dict(device=device)
        return cls(
            torch.zeros(capacity, m, dtype=torch.bool, **z), torch.zeros(capacity, dtype=torch.bool, **z),
            torch.zeros(capacity, dtype=torch.int64, **z), torch.zeros(capacity, dtype=torch.int64, **z),
            torch.zeros(capacity, dtype=torch.int64, **z), torch.zeros(capacity, dtype=torch.int64, **z), None,
        )

    def append(self, present, agree, owner, stream, tag, tag_size, payload) -> None:
        n = owner.shape[0]
        need = self.size + n
        if need > self.present.shape[0]:
            capacity = max(need, 2 * self.present.shape[0])
            for name in ("present", "agree", "owner", "stream", "tag", "tag_size", "payload"):
                old = getattr(self, name)
                if old is None:
                    continue
                grown = torch.zeros((capacity, *old.shape[1:]), dtype=old.dtype, device=old.device)
                grown[: self.size] = old[: self.size]
                setattr(self, name, grown)
        if payload is not None and self.payload is None:
            self.payload = torch.zeros(
                (self.present.shape[0], *payload.shape[1:]), dtype=payload.dtype, device=payload.device
            )
        rows = slice(self.size, need)
        self.present[rows] = present
        self.agree[rows] = agree
        self.owner[rows] = owner
        self.stream[rows] = stream
        self.tag[rows] = tag
        self.tag_size[rows] = tag_size
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
        row_chunk: int = 1 << 20,
    ) -> None:
        self.sampler = sampler
        self.device = coverage_bits.device
        dev = self.device
        self.n_features = n_features.to(dev, torch.int64)
        b = self.b = int(n_features.shape[0])
        m = self.m = int(coverage_bits.shape[-2])
        self.coverage_bits = coverage_bits.expand(b, m, coverage_bits.shape[-1])
        self.n_coverage = int(n_coverage)
        self.threshold, self.delta, self.tau, self.epsilon_stop = threshold, delta, tau, epsilon_stop
        self.batch_size, self.beam, self.min_samples_start = batch_size, beam_size, min_samples_start
        self.stop_on_first = stop_on_first
        self.row_chunk = row_chunk
        self.max_size = self.n_features.clone() if max_anchor_size is None else torch.full_like(
            self.n_features, int(max_anchor_size)
        )
        self.length = max(1, min(m, int(self.max_size.max()) if b else 1))  # L: longest anchor stored
        self.n_hist = self.beam * self.length
        self.n_cand = self.beam * max(m, 1)
        self.hist0, self.cand0 = 1, 1 + self.n_hist
        a = self.n_slots = 1 + self.n_hist + self.n_cand
        nbytes = self.coverage_bits.shape[-1]
        i64 = dict(dtype=torch.int64, device=dev)
        self.slot_features = torch.zeros(b, a, m, dtype=torch.bool, device=dev)
        self.slot_order = torch.full((b, a, self.length), -1, **i64)
        self.slot_len = torch.zeros(b, a, **i64)
        self.slot_id = torch.full((b, a), -1, **i64)
        self.slot_id[:, 0] = 0
        self.slot_parent = torch.zeros(b, a, **i64)
        self.slot_added = torch.full((b, a), -1, **i64)
        self.slot_created = torch.zeros(b, a, **i64)
        self.slot_cov_bits = torch.zeros(b, a, nbytes, dtype=torch.int64, device=dev)
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
        self.n_drawn = torch.zeros(b, **i64)
        self.store = SampleStore.empty(m, dev)
        # Samples of each instance's latest beam, as (row, instance, beam column) entries.
        # Held per instance as one segment of flat arrays (start, length), so a proposal
        # touches only its own instances' entries; stale segments are compacted away.
        self.pair_row = torch.zeros(1024, **i64)
        self.pair_j = torch.zeros(1024, **i64)
        self.pair_start = torch.zeros(b, **i64)
        self.pair_len = torch.zeros(b, **i64)
        self.pair_used = 0
        self.pair_stale = 0
        # Each round's rows of instance i are one block of the store: where each block starts.
        self.block_start = torch.zeros(64, b, **i64)
        self.block_len = torch.zeros(64, b, **i64)
        self.proposal_round = torch.zeros(b, **i64)
        self.n_rounds = 0
        self.request = torch.zeros(b, a, **i64)
        self.requested = torch.zeros(b, dtype=torch.bool, device=dev)
        self.n_syncs = 0
        # One bound per (beam slot, feature) that may be tested: a union bound (as Alibi).
        self.refine_beta = torch.log(1.0 / (delta / (1 + (beam_size - 1) * self.n_features.to(torch.float64))))

    # ------------------------------------------------------------------ helpers

    def _sync_nonzero(self, mask: torch.Tensor) -> torch.Tensor:
        self.n_syncs += 1
        return torch.nonzero(mask).flatten()

    def _hist_slots(self, size: torch.Tensor) -> torch.Tensor:
        """``(n, beam)`` history slot numbers of the beam of anchor size ``size`` ``(n,)``."""
        j = torch.arange(self.beam, device=self.device)
        return self.hist0 + (size[:, None] - 1) * self.beam + j

    def _means(self, idx: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos = self.positives[idx[:, None], slots]
        n = self.n[idx[:, None], slots]
        return pos / n, n

    def _members(self, idx: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The samples of arms ``slots`` ``(n, J)`` of instances ``idx`` (Alibi's reuse rule, module doc).

        A row can only be a sample of an arm if it was drawn for the empty anchor or for one
        of the arm's ancestors (itself included), one per anchor size; those rows are found
        with one lookup per row, and the rule is then checked in closed form (below).

        Returns ``(rows, position, j)``: each (store row, position of its instance in
        ``idx``, arm column ``j``) that is a member; a slot of -1 has none.
        """
        dev = self.device
        n, j = slots.shape
        inst = idx[:, None].expand(n, j)
        valid = slots >= 0
        safe = slots.clamp_min(0)
        depth = torch.where(valid, self.slot_len[inst, safe], 0)
        # ancestors[..., d]: the arm d steps up from the slot (the slot itself at d = 0).
        steps = [safe]
        for _ in range(self.length - 1):
            steps.append(self.slot_parent[inst, steps[-1]])
        ancestors = torch.stack(steps, dim=2)  # (n, J, L)
        # by_size[..., s]: the ancestor of size s (s = 0: the empty anchor), -1 past the arm.
        sizes = torch.arange(self.length + 1, device=dev)
        up = (depth[..., None] - sizes).clamp(0, self.length - 1)
        by_size = torch.where(sizes >= 1, ancestors.gather(2, up), 0)
        by_size = torch.where((sizes <= depth[..., None]) & valid[..., None], by_size, -1)
        ids = torch.where(by_size >= 0, self.slot_id[inst[..., None].expand_as(by_size), by_size.clamp_min(0)], -2)
        ids = torch.where((by_size >= 0) & (sizes == 0), 0, ids)

        # Unrolled, the reuse rule says: a row drawn for the ancestor of size k (k = 0: the
        # empty anchor) is a sample of the arm iff it keeps every feature added after size k
        # and was drawn before the ancestor of size k + 1 was created (creation times grow
        # down the chain, so that one bound implies the rest).
        inst3 = inst[..., None].expand_as(by_size)
        anc = by_size.clamp_min(0)
        created = self.slot_created[inst3, anc]
        next_created = torch.cat([created[..., 1:], torch.zeros_like(created[..., :1])], dim=-1)
        next_created = torch.where(sizes < depth[..., None], next_created, torch.iinfo(torch.int64).max)
        arm_features = self.slot_features[inst, safe]  # (n, J, M)
        later = arm_features[:, :, None, :] & ~self.slot_features[inst3, anc]  # (n, J, L+1, M)

        local = torch.full((self.b,), -1, dtype=torch.int64, device=dev)
        local[idx] = torch.arange(n, device=dev)
        tag_all = self.store.view("tag")
        owner_all = local[self.store.view("owner")]
        tag_size = self.store.view("tag_size")
        on_chain = (ids[owner_all.clamp_min(0), :, tag_size] == tag_all[:, None]) & (owner_all >= 0)[:, None]
        rows = self._sync_nonzero(on_chain.any(1))
        owner = owner_all[rows]
        level = tag_size[rows]
        stream = self.store.view("stream")[rows]
        present = self.store.view("present")[rows]
        need = later[owner, :, level]  # (R', J, M)
        keeps = ~(need & ~present[:, None, :]).any(-1)
        member = on_chain[rows] & keeps & (stream[:, None] < next_created[owner, :, level])
        member &= valid[owner]
        flat = self._sync_nonzero(member.reshape(-1))
        hit_row, hit_j = flat // j, flat % j
        return rows[hit_row], owner[hit_row], hit_j

    def _ranges(
        self, starts: torch.Tensor, lengths: torch.Tensor, use: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat indices of the ranges ``[start, start + length)`` of ``(n, R)`` tables, and each one's row ``n``."""
        if use is not None:
            lengths = torch.where(use, lengths, 0)
        flat_len = lengths.reshape(-1)
        total = int(flat_len.sum())
        self.n_syncs += 1
        owner = torch.arange(starts.shape[0], device=self.device).repeat_interleave(starts.shape[1])
        which = torch.repeat_interleave(torch.arange(flat_len.shape[0], device=self.device), flat_len, output_size=total)
        offset = torch.cumsum(flat_len, 0) - flat_len
        index = starts.reshape(-1)[which] + torch.arange(total, device=self.device) - offset[which]
        return index, owner[which]

    def _keep_pairs(self, idx: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, col: torch.Tensor, old: int) -> None:
        """Store (row, column) entries as the new segments of instances ``idx`` (``pos``: position in idx)."""
        n, total = idx.shape[0], rows.shape[0]
        order = torch.sort(pos, stable=True).indices
        counts = torch.bincount(pos, minlength=n)
        self.pair_stale += old
        self.pair_len[idx] = 0  # their old segments are stale from here on
        if self.pair_used + total > self.pair_row.shape[0] or self.pair_stale > max(self.pair_used // 2, 1 << 16):
            self._compact_pairs(extra=total)
        start = self.pair_used
        self.pair_row[start : start + total] = rows[order]
        self.pair_j[start : start + total] = col[order]
        self.pair_start[idx] = start + torch.cumsum(counts, 0) - counts
        self.pair_len[idx] = counts
        self.pair_used += total

    def _compact_pairs(self, extra: int) -> None:
        """Drop stale segments (and make room for ``extra`` more entries)."""
        everyone = torch.arange(self.b, device=self.device)
        held, owner = self._ranges(self.pair_start[:, None], self.pair_len[:, None], None)
        live = held.shape[0]
        capacity = max(2 * (live + extra), 1024)
        rows = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        cols = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        rows[:live], cols[:live] = self.pair_row[held], self.pair_j[held]
        self.pair_row, self.pair_j = rows, cols
        self.pair_start[everyone] = torch.cumsum(self.pair_len, 0) - self.pair_len
        self.pair_used, self.pair_stale = live, 0

    def _beam_rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The samples of the beam of size ``size - 1`` of instances ``idx`` (the empty anchor at size 1).

        Kept from one proposal to the next: a beam arm's samples are its parent's samples
        (kept last time) that keep the added feature, plus the rows drawn for it since it
        was created, which lie in this instance's blocks of the rounds since that
        proposal. So each row is looked at once for its tag, and then only while it
        belongs to a beam; the work is proportional to these instances' own rows.

        Returns ``(rows, position in idx, beam column)``, one entry per membership.
        """
        dev, beam = self.device, self.beam
        size = self.size[idx]
        first = size == 1
        slots = torch.where(first[:, None], 0, self._hist_slots((size - 1).clamp_min(1)))
        in_beam = torch.arange(beam, device=dev) < torch.where(first, 1, self.n_beam[idx, (size - 1).clamp_min(0)])[:, None]
        ids = torch.where(in_beam, self.slot_id[idx[:, None], slots], -2)  # (n, beam)
        # Rows drawn since these instances' last proposal: the new beam arms' own rows.
        since = self._ranges(
            self.block_start[: self.n_rounds, idx].T, self.block_len[: self.n_rounds, idx].T,
            torch.arange(self.n_rounds, device=dev)[None, :] >= self.proposal_round[idx][:, None],
        )
        since_rows, since_pos = since
        own = (self.store.tag[since_rows][:, None] == ids[since_pos])
        own = self._sync_nonzero(own.reshape(-1))
        own_rows, own_pos, own_j = since_rows[own // beam], since_pos[own // beam], own % beam
        # Inherited: the parents' rows kept at the previous proposal (none at size 1).
        lengths = self.pair_len[idx]
        held, old_pos = self._ranges(self.pair_start[idx][:, None], lengths[:, None], None)
        old_rows, old_j = self.pair_row[held], self.pair_j[held]
        parent_slot = self.slot_parent[idx[:, None], slots]
        # Beam column of each arm's parent (the empty anchor has column 0).
        parent_col = torch.where(parent_slot == 0, 0, (parent_slot - self.hist0) % beam)  # (n, beam)
        added = self.slot_added[idx[:, None], slots].clamp_min(0)
        created = self.slot_created[idx[:, None], slots]
        # Each old row (of parent column pj) goes to every beam arm j whose parent is pj.
        match = (parent_col[old_pos] == old_j[:, None]) & in_beam[old_pos] & ~first[old_pos][:, None]
        match &= self.store.present[old_rows[:, None], added[old_pos]]
        match &= self.store.stream[old_rows][:, None] < created[old_pos]
        hit = self._sync_nonzero(match.reshape(-1))
        inh_rows, inh_pos, inh_j = old_rows[hit // beam], old_pos[hit // beam], hit % beam
        rows = torch.cat([inh_rows, own_rows])
        pos = torch.cat([inh_pos, own_pos])
        col = torch.cat([inh_j, own_j])
        self._keep_pairs(idx, rows, pos, col, int(lengths.sum()))
        self.proposal_round[idx] = self.n_rounds
        return rows, pos, col

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
        dev, m, beam = self.device, self.m, self.beam
        n = idx.shape[0]
        size = self.size[idx]
        first = size == 1
        # Parents: the empty anchor at size 1, else the beam of the previous size.
        parents = torch.where(
            first[:, None], torch.where(torch.arange(beam, device=dev) == 0, 0, -1),
            self._hist_slots((size - 1).clamp_min(1)),
        )
        n_parent = torch.where(first, 1, self.n_beam[idx, (size - 1).clamp_min(0)])
        parents = torch.where(torch.arange(beam, device=dev) < n_parent[:, None], parents, -1)
        inst = idx[:, None]
        parent_features = self.slot_features[inst, parents.clamp_min(0)]  # (n, beam, M)
        # Raw candidates in the reference's order: feature-major, then parent.
        f = torch.arange(m, device=dev)
        raw_valid = (
            (parents >= 0)[:, None, :]
            & (f[None, :, None] < self.n_features[idx][:, None, None])
            & ~parent_features.transpose(1, 2)
        )  # (n, M, beam)
        if beam > 1:
            # parent_j + {b} equals parent_j' + {a} when the parents differ in exactly a (in j)
            # and b (in j'); keep the first of the two in (feature, parent) order.
            diff = parent_features[:, :, None, :] ^ parent_features[:, None, :, :]  # (n, j, j', M)
            pair = (diff.sum(-1) == 2) & (parents >= 0)[:, :, None] & (parents >= 0)[:, None, :]
            only_j = parent_features[:, :, None, :] & diff  # features in j, not in j'
            a_feat = only_j.float().argmax(-1)  # (n, j, j')
            b_feat = only_j.transpose(1, 2).float().argmax(-1)  # in j', not in j
            # (b, j) and (a, j') coincide; the later one in (f, parent) order is dropped.
            drop_jprime = pair & (b_feat < a_feat)
            drop = torch.zeros(n, m, beam, dtype=torch.bool, device=dev)
            jj = torch.arange(beam, device=dev)
            for j in range(beam):
                for jp in range(beam):
                    if j == jp:
                        continue
                    sel = drop_jprime[:, j, jp]  # drop (a, j')
                    drop[torch.arange(n, device=dev)[sel], a_feat[sel, j, jp], jj[jp]] = True
            raw_valid &= ~drop
        flat_valid = raw_valid.reshape(n, m * beam)
        # Stable compaction of the valid raw candidates to the front.
        order = torch.sort((~flat_valid).to(torch.int8), dim=1, stable=True).indices[:, : self.n_cand]
        cand_valid = flat_valid.gather(1, order)
        cand_feat = order // beam
        cand_parent = parents.gather(1, order % beam)
        cand_parent = torch.where(cand_valid, cand_parent, 0)
        slots = self.cand0 + torch.arange(self.n_cand, device=dev)
        onehot = torch.nn.functional.one_hot(cand_feat, m).bool() if m else torch.zeros(n, self.n_cand, 0, dtype=torch.bool, device=dev)
        features = (self.slot_features[inst, cand_parent] | onehot) & cand_valid[..., None]
        self.slot_features[inst, slots] = features
        parent_order = self.slot_order[inst, cand_parent]  # (n, C, L)
        pos = torch.arange(self.length, device=dev)
        at_end = pos == (size - 1)[:, None, None]
        self.slot_order[inst, slots] = torch.where(
            cand_valid[..., None], torch.where(at_end, cand_feat[..., None], parent_order), -1
        )
        self.slot_len[inst, slots] = torch.where(cand_valid, size[:, None], 0)
        self.slot_parent[inst, slots] = cand_parent
        self.slot_added[inst, slots] = torch.where(cand_valid, cand_feat, -1)
        self.slot_id[inst, slots] = torch.where(
            cand_valid, 1 + (size[:, None] - 1) * self.n_cand + torch.arange(self.n_cand, device=dev), -1
        )
        self.slot_created[inst, slots] = self.n_drawn[idx][:, None]
        cov_bits = self.slot_cov_bits[inst, cand_parent] & self.coverage_bits[inst, cand_feat]
        self.slot_cov_bits[inst, slots] = cov_bits
        coverage = popcount(cov_bits).to(torch.float64) / self.n_coverage
        self.slot_coverage[inst, slots] = torch.where(cand_valid, coverage, 0.0)
        # Counts from the parents' samples that keep the added feature.
        rows, owner_local, parent_col = self._beam_rows(idx)
        # float32 counts are exact below 2**24 samples per arm; chunks keep the sums there.
        sums = torch.zeros(n * beam, 2 * m, dtype=torch.float64, device=dev)
        for start in range(0, rows.shape[0], self.row_chunk):
            part = slice(start, start + self.row_chunk)
            kept = self.store.present[rows[part]]  # (r, M)
            both = torch.cat([kept, kept & self.store.agree[rows[part]][:, None]], dim=1).to(torch.float32)
            partial = torch.zeros(n * beam, 2 * m, dtype=torch.float32, device=dev)
            partial.index_add_(0, owner_local[part] * beam + parent_col[part], both)
            sums += partial
        totals, hits = sums[:, :m].view(n, beam, m), sums[:, m:].view(n, beam, m)
        parent_j = order % beam
        n_from_parent = totals[torch.arange(n, device=dev)[:, None], parent_j, cand_feat]
        pos_from_parent = hits[torch.arange(n, device=dev)[:, None], parent_j, cand_feat]
        self.n[inst, slots] = torch.where(cand_valid, n_from_parent, 0.0)
        self.positives[inst, slots] = torch.where(cand_valid, pos_from_parent, 0.0)
        active = cand_valid & (coverage > self.best_cov[idx][:, None])
        self.kl_active[idx] = False
        self.kl_active[inst, slots] = active
        n_active = active.sum(1)
        none = n_active == 0
        self.kl_t[idx] = 1
        self.kl_top[idx] = n_active.clamp(max=beam)
        self.kl_final[idx] = False
        self.phase[idx] = torch.where(none, _FINISH, _KL_START)

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
        self.chosen[idx] = torch.where(everything[:, None], torch.where(take, first, -1), self.chosen[idx])
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
        n_sorted = self.n[idx].gather(1, order).clamp_min(1)
        beta = compute_beta(n_active, self.kl_t[idx], self.delta)[:, None]
        safe_means = sorted_means.clamp_min(0.0)
        lower, upper = kl_bounds(safe_means, beta / n_sorted)
        upper = torch.where(is_rest, upper, -math.inf)
        lower = torch.where(is_best, lower, math.inf)
        challenger_rank = upper.argmax(1)
        weakest_rank = lower.argmin(1)
        gap = upper.gather(1, challenger_rank[:, None])[:, 0] - lower.gather(1, weakest_rank[:, None])[:, 0]
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
        best_positions = (a - top)[:, None] + j
        chosen = torch.where(take, order.gather(1, best_positions.clamp(max=a - 1)), -1)
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
            for name in ("slot_features", "slot_order", "slot_len", "slot_parent", "slot_added", "slot_id",
                         "slot_created", "slot_cov_bits", "slot_coverage", "positives", "n"):
                table = getattr(self, name)
                values = table[inst, src]
                old = table[inst, hist]
                shape = valid.shape + (1,) * (values.dim() - 2)
                table[inst, hist] = torch.where(valid.reshape(shape), values, old)
            self.n_beam[sub, size] = valid.sum(1)
        self.phase[idx] = torch.where(final, _DONE, _REFINE)

    def _refine(self, idx: torch.Tensor) -> None:
        size = self.size[idx]
        slots = self._hist_slots(size)
        in_beam = torch.arange(self.beam, device=self.device) < self.n_beam[idx, size][:, None]
        means, n = self._means(idx, slots)
        means = torch.where(in_beam, means, 0.0)
        level = self.refine_beta[idx][:, None] / n.clamp_min(1)
        lower, upper = kl_bounds(means, level)
        thr, eps = self.threshold, self.epsilon_stop
        pending = in_beam & (((means >= thr) & (lower < thr - eps)) | ((means < thr) & (upper >= thr + eps)))
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
        self.best_slot[idx] = torch.where(found, slots.gather(1, pick[:, None])[:, 0], self.best_slot[idx])
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
            (_EMPTY_START, self._empty_start), (_EMPTY_CHECK, self._empty_check), (_PROPOSE, self._propose),
            (_KL_START, self._kl_start), (_KL_ENTRY, self._kl_entry), (_KL_LOOP, self._kl_loop),
            (_CHOSEN, self._chosen), (_REFINE, self._refine), (_FINISH, self._finish),
        ]
        while True:
            waiting = (self.phase != _DONE) & ~self.requested
            self.n_syncs += 1
            if not bool(waiting.any()):
                return
            for phase, handler in handlers:
                # Instances may have moved into this phase earlier in this pass.
                idx = self._sync_nonzero((self.phase == phase) & ~self.requested)
                if idx.numel():
                    handler(idx)

    def _draw(self) -> None:
        """Answer the round's requests with one sampler call and update the counts."""
        dev = self.device
        counts = self.request.reshape(-1)
        total = int(counts.sum())
        self.n_syncs += 1
        flat = torch.repeat_interleave(torch.arange(counts.shape[0], device=dev), counts, output_size=total)
        owner = flat // self.n_slots
        slot = flat % self.n_slots
        per_instance = self.request.sum(1)
        starts = torch.cumsum(per_instance, 0) - per_instance
        stream = self.n_drawn[owner] + (torch.arange(total, device=dev) - starts[owner])
        features = self.slot_features[owner, slot]
        order = self.slot_order[owner, slot] if getattr(self.sampler, "needs_order", True) else None
        group = (torch.cumsum(counts > 0, 0) - 1)[flat]
        present, agree, payload = self.sampler(owner, features, order, stream, group)
        present = present.to(dev, torch.bool)
        agree = agree.to(dev, torch.bool)
        if self.n_rounds == self.block_start.shape[0]:
            self.block_start = torch.cat([self.block_start, torch.zeros_like(self.block_start)])
            self.block_len = torch.cat([self.block_len, torch.zeros_like(self.block_len)])
        # Rows are laid out instance by instance: each instance's rows of this round are one block.
        self.block_start[self.n_rounds] = self.store.size + starts
        self.block_len[self.n_rounds] = per_instance
        self.n_rounds += 1
        self.store.append(
            present, agree, owner, stream, self.slot_id[owner, slot], self.slot_len[owner, slot], payload
        )
        self.n += self.request
        self.positives += torch.bincount(flat, weights=agree.to(torch.float64), minlength=counts.shape[0]).view_as(
            self.positives
        )
        self.n_drawn += per_instance
        self.request.zero_()
        self.requested.zero_()

    def run(self) -> EngineResult:
        rounds = 0
        if self.b:
            while True:
                self._advance()
                if not bool(self.requested.any()):
                    break
                self._draw()
                rounds += 1
        idx = torch.arange(self.b, device=self.device)
        slot = self.result_slot
        precision = self.positives[idx, slot] / self.n[idx, slot].clamp_min(1.0)
        coverage = self.slot_coverage[idx, slot]
        n_samples = self.n[idx, slot].to(torch.int64)
        members = torch.zeros(self.store.size, dtype=torch.bool, device=self.device)
        if self.b:
            rows, _, _ = self._members(idx, slot[:, None])
            members[rows] = True
        orders = self.slot_order[idx, slot].tolist()
        anchors = [[f for f in order if f >= 0] for order in orders]
        return EngineResult(
            anchors=anchors, precision=precision, coverage=coverage, success=self.success.clone(),
            n_samples=n_samples, members=members, store=self.store, n_rounds=rounds, n_syncs=self.n_syncs,
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

    Returns:
        An :class:`EngineResult`.
    """
    engine = _Engine(
        sampler, n_features, coverage_bits, n_coverage, threshold=threshold, delta=delta, tau=tau,
        epsilon_stop=epsilon_stop, batch_size=batch_size, beam_size=beam_size,
        min_samples_start=min_samples_start, max_anchor_size=max_anchor_size, stop_on_first=stop_on_first,
    )
    return engine.run()
