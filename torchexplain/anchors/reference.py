"""KL-LUCB beam search for anchors, one instance at a time: the engine's test oracle.

Ribeiro et al., "Anchors: High-Precision Model-Agnostic Explanations", AAAI 2018.
The explainers run :mod:`torchexplain.anchors.engine`, which advances the searches of
all instances together as tensors; this module keeps the same search written plainly,
per instance, so tests can check the engine against it (as the kernels keep
``reference.py``). Within a round an instance's requests are listed in the order of
its arms (the candidates' order), which is also the order the engine lays out samples.

The search is written once, for one instance, as a generator: it *yields* sample
requests (``[(anchor, n_samples), ...]``) and is *sent* the answers (for each request a
:class:`SampleBatch`: which features each sample kept, and whether the model agreed with
the explained prediction). :func:`run_searches` drives many such generators together:
each round it gathers every open request of every instance, has them answered in one
call of the caller's ``sample_fn`` (so the model sees one large batch), and hands each
instance its answers. The search logic therefore never depends on batching, which is
what makes a batch give the same anchors as each instance alone.

The search follows the paper and Alibi's ``AnchorBaseBeam``: an empty-anchor check,
candidates grown by one feature from the current beam, arm selection by KL-LUCB
(Kaufmann & Kalyanakrishnan 2013) with the same exploration rate ``beta``, refinement of
the chosen arms until their confidence bounds settle around the threshold, the valid
anchor of largest coverage, and the best-precision attempt with ``success=False`` when
no anchor is valid. Samples drawn for an anchor are reused for its extensions wherever
they keep the added feature, as in Alibi; with ``precision_samples="fresh"`` an anchor
chosen into the beam then drops those and keeps only its own draws. The result carries the samples its estimate
rests on, so the caller can show examples without drawing more (Alibi draws a fresh
batch for an anchor that was only ever estimated from reused samples). Bookkeeping is
numpy on the CPU (tiny arrays); the heavy work (building and scoring perturbed inputs)
is the caller's ``sample_fn``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "AnchorResult",
    "BeamSearch",
    "SampleBatch",
    "compute_beta",
    "kl_bernoulli",
    "kl_lower_bound",
    "kl_upper_bound",
    "run_searches",
]

Anchor = tuple[int, ...]
Request = list[tuple[Anchor, int]]

_EPS_LOW, _EPS_HIGH = 1e-7, 1.0 - 1e-16


@dataclass
class SampleBatch:
    """The answer to one sample request.

    Attributes:
        present: ``(n, M)`` bool, feature kept (True) or perturbed, per sample.
        agree: ``(n,)`` bool, the model's prediction on the sample equals the explained one.
        payload: optional ``(n,)`` int64 the sampler needs to rebuild each sample (e.g.
            which background image it used); stored with the sample and handed back in
            :attr:`AnchorResult.samples`.
    """

    present: np.ndarray
    agree: np.ndarray
    payload: np.ndarray | None = None


@dataclass
class AnchorResult:
    """Outcome of one instance's search.

    Attributes:
        anchor: features of the anchor in the order the search added them.
        precision: estimated precision (fraction of samples with the anchor whose
            prediction agrees).
        coverage: fraction of coverage samples in which the anchor applies.
        success: whether the anchor meets the precision constraint.
        n_samples: samples the precision estimate rests on.
        samples: those samples (``present``, ``agree`` and ``payload``, in the order
            drawn); ``payload`` is zeros where the sampler gave none.
    """

    anchor: Anchor
    precision: float
    coverage: float
    success: bool
    n_samples: int
    samples: SampleBatch


def kl_bernoulli(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL divergence between Bernoulli(p) and Bernoulli(q), clipped away from 0 and 1."""
    p = np.clip(p, _EPS_LOW, _EPS_HIGH)
    q = np.clip(q, _EPS_LOW, _EPS_HIGH)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def _kl_scalar(p: float, q: float) -> float:
    p = min(max(p, _EPS_LOW), _EPS_HIGH)
    q = min(max(q, _EPS_LOW), _EPS_HIGH)
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


# Below this many arms the bisection runs on Python floats: numpy's per-call overhead on
# 1-4 element arrays costs ~10x more, and the search calls the bounds once per arm pull.
_SCALAR_BISECTION_MAX = 8


def _kl_bound(p: np.ndarray, level: np.ndarray, n_iter: int, upper: bool) -> np.ndarray:
    """Bisection for the q on the ``upper`` (or lower) side of p where ``KL(p, q) = level``."""
    p = np.asarray(p, dtype=np.float64)
    level = np.broadcast_to(np.asarray(level, dtype=np.float64), p.shape)
    if p.size <= _SCALAR_BISECTION_MAX:
        out = np.empty_like(p)
        for i, (pi, li) in enumerate(zip(p.flat, level.flat, strict=True)):
            pi, li = float(pi), float(li)
            if upper:
                lo, hi = pi, min(pi + math.sqrt(li / 2.0), 1.0)
            else:
                lo, hi = min(max(pi - math.sqrt(li / 2.0), 0.0), 1.0), pi
            for _ in range(1, n_iter):
                mid = (lo + hi) / 2.0
                if (_kl_scalar(pi, mid) > li) == upper:
                    hi = mid
                else:
                    lo = mid
            out.flat[i] = hi if upper else lo
        return out
    if upper:
        lo, hi = p.copy(), np.minimum(p + np.sqrt(level / 2.0), 1.0)
    else:
        lo, hi = np.clip(p - np.sqrt(level / 2.0), 0.0, 1.0), p.copy()
    # KL(p, q) = [p log p + (1-p) log(1-p)] - p log q - (1-p) log(1-q): the bracket is fixed.
    pc = np.minimum(np.maximum(p, _EPS_LOW), _EPS_HIGH)
    entropy_term = pc * np.log(pc) + (1 - pc) * np.log(1 - pc)
    for _ in range(1, n_iter):
        mid = (lo + hi) / 2.0
        q = np.minimum(np.maximum(mid, _EPS_LOW), _EPS_HIGH)
        kl = entropy_term - pc * np.log(q) - (1 - pc) * np.log(1 - q)
        move_hi = (kl > level) == upper
        hi = np.where(move_hi, mid, hi)
        lo = np.where(move_hi, lo, mid)
    return hi if upper else lo


def kl_upper_bound(p: np.ndarray, level: np.ndarray, n_iter: int = 17) -> np.ndarray:
    """Largest q >= p with ``KL(p, q) <= level``, by bisection (16 halvings, as Alibi)."""
    return _kl_bound(p, level, n_iter, upper=True)


def kl_lower_bound(p: np.ndarray, level: np.ndarray, n_iter: int = 17) -> np.ndarray:
    """Smallest q <= p with ``KL(p, q) <= level``, by bisection (16 halvings, as Alibi)."""
    return _kl_bound(p, level, n_iter, upper=False)


def compute_beta(n_arms: int, t: int, delta: float) -> float:
    """KL-LUCB exploration rate ``log(k n t^a / delta) + log log(...)`` with k=405.5, a=1.1 (as Alibi)."""
    inner = math.log(405.5 * n_arms * t**1.1 / delta)
    return inner + math.log(inner)


@dataclass
class _ArmStats:
    idx: np.ndarray  # rows of the sample store drawn with this anchor present
    positives: float
    n_samples: float
    coverage: float
    order: list[int] = field(default_factory=list)
    n_inherited: int = 0  # the first rows of idx came from the parent (Alibi's reuse)


class BeamSearch:
    """The anchor search for one instance, as a request/answer generator (see module doc).

    Args:
        n_features: number of features (superpixels) M.
        coverage_data: ``(n_cov, M)`` bool perturbation samples; an anchor's coverage is
            the fraction of rows that keep all its features.
        threshold: precision wanted (``tau`` in the paper; Alibi's ``desired_confidence``).
        delta: confidence budget of the bounds.
        tau: KL-LUCB tolerance epsilon: arm selection stops when the bounds of the best arms
            overlap by less than this (Alibi's ``tau``; the paper's tau is ``threshold``).
        epsilon_stop: margin around ``threshold`` when refining a chosen anchor.
        batch_size: samples per arm pull.
        beam_size: anchors kept per size.
        min_samples_start: samples for the empty-anchor check.
        max_anchor_size: largest anchor tried (None: M).
        stop_on_first: stop at the first valid anchor.
        precision_samples: ``"reuse"`` (Alibi) or ``"fresh"``: an anchor chosen into the beam
            keeps only the samples drawn for it (a batch is drawn if it has none).
    """

    def __init__(
        self,
        n_features: int,
        coverage_data: np.ndarray,
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
    ) -> None:
        if precision_samples not in ("reuse", "fresh"):
            raise ValueError(
                f"precision_samples must be 'reuse' or 'fresh', got {precision_samples!r}"
            )
        self.fresh = precision_samples == "fresh"
        self.n_features = int(n_features)
        self.coverage_data = np.asarray(coverage_data, dtype=bool)
        self.threshold = threshold
        self.delta = delta
        self.tau = tau
        self.epsilon_stop = epsilon_stop
        self.batch_size = batch_size
        self.beam_size = beam_size
        self.min_samples_start = min_samples_start
        self.max_anchor_size = self.n_features if max_anchor_size is None else int(max_anchor_size)
        self.stop_on_first = stop_on_first
        capacity = max(1024, 64 * batch_size)
        self._present = np.zeros((capacity, self.n_features), dtype=bool)
        self._agree = np.zeros(capacity, dtype=bool)
        self._payload = np.zeros(capacity, dtype=np.int64)
        self._n_stored = 0
        self._arms: dict[Anchor, _ArmStats] = {
            (): _ArmStats(np.zeros(0, dtype=np.int64), 0.0, 0.0, 1.0)
        }

    # ------------------------------------------------------------------ bookkeeping

    def _store(self, anchor: Anchor, batch: SampleBatch) -> tuple[float, float]:
        present = np.asarray(batch.present, dtype=bool)
        agree = np.asarray(batch.agree, dtype=bool)
        n = present.shape[0]
        if self._n_stored + n > self._present.shape[0]:
            grow = max(self._present.shape[0], n)
            self._present = np.concatenate(
                [self._present, np.zeros((grow, self.n_features), dtype=bool)]
            )
            self._agree = np.concatenate([self._agree, np.zeros(grow, dtype=bool)])
            self._payload = np.concatenate([self._payload, np.zeros(grow, dtype=np.int64)])
        rows = np.arange(self._n_stored, self._n_stored + n)
        self._present[rows] = present
        self._agree[rows] = agree
        if batch.payload is not None:
            self._payload[rows] = np.asarray(batch.payload, dtype=np.int64)
        self._n_stored += n
        arm = self._arms[anchor]
        arm.idx = np.concatenate([arm.idx, rows])
        arm.positives += float(agree.sum())
        arm.n_samples += n
        return float(agree.sum()), float(n)

    def _coverage(self, anchor: Anchor) -> float:
        return float(self.coverage_data[:, list(anchor)].all(axis=1).mean())

    def _propose(self, previous_best: Sequence[Anchor]) -> list[Anchor]:
        """Candidates one feature larger than the beam, with stats from reusable samples."""
        present = self._present[: self._n_stored]
        agree = self._agree[: self._n_stored]
        if not previous_best:
            candidates = []
            for f in range(self.n_features):
                rows = np.flatnonzero(present[:, f])
                self._arms[(f,)] = _ArmStats(
                    rows,
                    float(agree[rows].sum()),
                    float(rows.size),
                    self._coverage((f,)),
                    [f],
                    n_inherited=rows.size,
                )
                candidates.append((f,))
            return candidates
        candidates: list[Anchor] = []
        seen: set[Anchor] = set()
        for f in range(self.n_features):
            for parent in previous_best:
                if f in parent:
                    continue
                anchor = tuple(sorted((*parent, f)))
                if anchor in seen:
                    continue
                seen.add(anchor)
                parent_arm = self._arms[parent]
                rows = parent_arm.idx[present[parent_arm.idx, f]]
                self._arms[anchor] = _ArmStats(
                    rows,
                    float(agree[rows].sum()),
                    float(rows.size),
                    self._coverage(anchor),
                    [*parent_arm.order, f],
                    n_inherited=rows.size,
                )
                candidates.append(anchor)
        return candidates

    def _stats(self, anchors: Sequence[Anchor]) -> tuple[np.ndarray, np.ndarray]:
        positives = np.array([self._arms[a].positives for a in anchors], dtype=np.float64)
        n_samples = np.array([self._arms[a].n_samples for a in anchors], dtype=np.float64)
        return positives, n_samples

    def _pull(
        self, anchors: Sequence[Anchor], n: int
    ) -> Generator[Request, list[SampleBatch], None]:
        # Each request names the anchor's features in the order they were added (the
        # tabular sampler's fallbacks drop the last-added first).
        batches = yield [(tuple(self._arms[a].order) if a else a, n) for a in anchors]
        for anchor, batch in zip(anchors, batches, strict=True):
            self._store(anchor, batch)

    # ------------------------------------------------------------------ KL-LUCB

    def _kllucb(
        self, anchors: list[Anchor], top_n: int
    ) -> Generator[Request, list[SampleBatch], np.ndarray]:
        """Indices of the ``top_n`` anchors of highest precision, by KL-LUCB."""
        positives, n_samples = self._stats(anchors)
        unsampled = [a for a, n in zip(anchors, n_samples, strict=True) if n == 0]
        if unsampled:
            yield from self._pull(unsampled, 1)
            positives, n_samples = self._stats(anchors)
        n_arms = len(anchors)
        if n_arms == top_n:
            return np.arange(n_arms)
        upper = np.zeros(n_arms)
        lower = np.zeros(n_arms)
        t = 1

        def critical_arms() -> tuple[int, int]:
            means = positives / n_samples
            order = np.argsort(means, kind="stable")
            beta = compute_beta(n_arms, t, self.delta)
            best, rest = order[-top_n:], order[:-top_n]
            upper[rest] = kl_upper_bound(means[rest], beta / n_samples[rest])
            lower[best] = kl_lower_bound(means[best], beta / n_samples[best])
            return int(rest[np.argmax(upper[rest])]), int(best[np.argmin(lower[best])])

        challenger, weakest = critical_arms()
        while upper[challenger] - lower[weakest] > self.tau:
            # Arm order, not (challenger, weakest): the engine lays out a round's samples that way.
            pair = sorted((challenger, weakest))
            yield from self._pull([anchors[pair[0]], anchors[pair[1]]], self.batch_size)
            positives, n_samples = self._stats(anchors)
            t += 1
            challenger, weakest = critical_arms()
        return np.argsort(positives / n_samples, kind="stable")[-top_n:]

    def _keep_own_samples(self, beam: list[Anchor]) -> Generator[Request, list[SampleBatch], None]:
        """Fresh precision: the beam's anchors drop their inherited samples; those left with none
        draw a batch."""
        for anchor in beam:
            arm = self._arms[anchor]
            own = arm.idx[arm.n_inherited :]
            arm.idx, arm.n_inherited = own, 0
            arm.positives, arm.n_samples = float(self._agree[own].sum()), float(own.size)
        empty = [a for a in beam if self._arms[a].n_samples == 0]
        if empty:
            yield from self._pull(empty, self.batch_size)

    def _needs_samples(self, means: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        above = (means >= self.threshold) & (lower < self.threshold - self.epsilon_stop)
        below = (means < self.threshold) & (upper >= self.threshold + self.epsilon_stop)
        return above | below

    def _result(self, anchor: Anchor, success: bool) -> AnchorResult:
        arm = self._arms[anchor]
        samples = SampleBatch(self._present[arm.idx], self._agree[arm.idx], self._payload[arm.idx])
        return AnchorResult(
            anchor=tuple(arm.order),
            precision=arm.positives / max(arm.n_samples, 1.0),
            coverage=arm.coverage,
            success=success,
            n_samples=int(arm.n_samples),
            samples=samples,
        )

    # ------------------------------------------------------------------ beam search

    def run(self) -> Generator[Request, list[SampleBatch], AnchorResult]:
        """The search; drive it with :func:`run_searches`."""
        threshold = self.threshold
        yield from self._pull([()], self.min_samples_start)
        empty = self._arms[()]
        beta = math.log(1.0 / self.delta)
        mean = empty.positives / empty.n_samples
        lower = kl_lower_bound(np.array([mean]), np.array([beta / empty.n_samples]))[0]
        while mean > threshold and lower < threshold - self.tau:
            yield from self._pull([()], self.batch_size)
            mean = empty.positives / empty.n_samples
            lower = kl_lower_bound(np.array([mean]), np.array([beta / empty.n_samples]))[0]
        if lower > threshold:
            return self._result((), success=True)

        size, best_coverage, best_anchor = 1, -1.0, None
        best_of_size: dict[int, list[Anchor]] = {0: []}
        while size <= self.max_anchor_size:
            anchors = self._propose(best_of_size[size - 1])
            anchors = [a for a in anchors if self._arms[a].coverage > best_coverage]
            if not anchors:
                break
            chosen = yield from self._kllucb(anchors, min(self.beam_size, len(anchors)))
            beam = [anchors[i] for i in chosen]
            best_of_size[size] = beam
            if self.fresh:
                yield from self._keep_own_samples(beam)
            positives, n_samples = self._stats(beam)
            coverages = np.array([self._arms[a].coverage for a in beam])
            # One bound per (beam slot, feature) that may be tested: a union bound.
            beta = math.log(1.0 / (self.delta / (1 + (self.beam_size - 1) * self.n_features)))
            means = positives / n_samples
            lowers = kl_lower_bound(means, beta / n_samples)
            uppers = kl_upper_bound(means, beta / n_samples)
            pending = self._needs_samples(means, lowers, uppers)
            while pending.any():
                todo = np.flatnonzero(pending)
                yield from self._pull([beam[i] for i in todo], self.batch_size)
                positives, n_samples = self._stats(beam)
                means = positives / n_samples
                lowers[todo] = kl_lower_bound(means[todo], beta / n_samples[todo])
                uppers[todo] = kl_upper_bound(means[todo], beta / n_samples[todo])
                pending = self._needs_samples(means, lowers, uppers)
            valid = (means >= threshold) & (lowers > threshold - self.epsilon_stop)
            better = np.flatnonzero(valid & (coverages > best_coverage))
            if better.size:
                pick = better[np.argmax(coverages[better])]
                best_coverage, best_anchor = float(coverages[pick]), beam[pick]
                if best_coverage == 1.0 or self.stop_on_first:
                    break
            size += 1

        success = best_anchor is not None
        if not success:
            tried = [a for s in range(size) for a in best_of_size.get(s, [])]
            chosen = yield from self._kllucb(tried, 1)
            best_anchor = tried[int(chosen[0])]
        return self._result(best_anchor, success)


def run_searches(
    searches: Sequence[Generator[Request, list[SampleBatch], AnchorResult]],
    sample_fn: Callable[[list[tuple[int, Anchor, int]]], list[SampleBatch]],
) -> list[AnchorResult]:
    """Advance many searches in lock-step, answering all their requests together.

    Args:
        searches: generators from :meth:`BeamSearch.run`, one per instance.
        sample_fn: called once per round with every open request as
            ``(instance index, anchor, n_samples)`` and returning one
            :class:`SampleBatch` per request, in order.

    Returns:
        One :class:`AnchorResult` per search, in order.
    """
    results: list[AnchorResult | None] = [None] * len(searches)
    pending: dict[int, Request] = {}
    for i, search in enumerate(searches):
        try:
            pending[i] = next(search)
        except StopIteration as stop:
            results[i] = stop.value
    while pending:
        flat = [(i, anchor, n) for i, request in pending.items() for anchor, n in request]
        answers = sample_fn(flat)
        if len(answers) != len(flat):
            raise RuntimeError(
                f"sample_fn returned {len(answers)} batches for {len(flat)} requests"
            )
        cursor = 0
        replies: dict[int, list[SampleBatch]] = {}
        for i, request in pending.items():
            replies[i] = answers[cursor : cursor + len(request)]
            cursor += len(request)
        pending = {}
        for i, reply in replies.items():
            try:
                pending[i] = searches[i].send(reply)
            except StopIteration as stop:
                results[i] = stop.value
    return results  # type: ignore[return-value]
