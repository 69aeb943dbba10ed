"""The batched anchor engine against its oracle (the per-instance reference search) and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchexplain import _random
from torchexplain.anchors import engine, reference


def _bandit_sampler(needed: list[list[int]], noise: float, p: float = 0.5, seed: int = 0):
    """A toy sampler: features kept at random, the 'model' agrees when an instance's needed
    features are all kept, flipped with probability ``noise``; counter-based like the explainers'."""
    keep_key, flip_key = _random.stream_key(seed, 2), _random.stream_key(seed, 3)
    needed_mask = torch.zeros(len(needed), max(max(n) for n in needed) + 1, dtype=torch.bool)
    for i, features in enumerate(needed):
        needed_mask[i, features] = True

    def sampler(owner, features, order, stream, group=None):
        m = features.shape[1]
        present = (_random.uniform(keep_key, stream, m) >= p) | features
        width = needed_mask.shape[1]
        need = torch.zeros(len(owner), max(m, width), dtype=torch.bool)
        need[:, :width] = needed_mask[owner]
        need = need[:, :m]
        agree = ~(need & ~present).any(1)
        flip = _random.uniform(flip_key, stream, 1)[:, 0] < noise
        return present, agree ^ flip, stream  # the payload: anything the sampler wants back

    return sampler


def _reference_results(sampler, n_instances: int, m: int, coverage: np.ndarray, **settings):
    """The reference search driven by the same sampler, each instance numbering its own samples."""
    drawn = [0] * n_instances

    def sample_fn(requests):
        out = []
        for i, anchor, n in requests:
            features = torch.zeros(n, m, dtype=torch.bool)
            features[:, list(anchor)] = True
            stream = torch.arange(drawn[i], drawn[i] + n)
            drawn[i] += n
            present, agree, _ = sampler(torch.full((n,), i), features, None, stream)
            out.append(reference.SampleBatch(present.numpy(), agree.numpy()))
        return out

    searches = [reference.BeamSearch(m, coverage, **settings).run() for _ in range(n_instances)]
    return reference.run_searches(searches, sample_fn), drawn


SETTINGS = [
    {},
    {"beam_size": 2},
    {"beam_size": 3, "max_anchor_size": 3},
    {"stop_on_first": True, "beam_size": 2},
    {"threshold": 0.99, "max_anchor_size": 2},  # mostly failures: the best-precision attempt
    {"delta": 0.3, "tau": 0.3, "batch_size": 37, "min_samples_start": 13},
    {"precision_samples": "fresh"},
    {"precision_samples": "fresh", "beam_size": 2, "max_anchor_size": 3},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=[str(s) for s in SETTINGS])
@pytest.mark.parametrize("noise", [0.03, 0.15])
def test_engine_gives_the_reference_search_exactly(settings, noise):
    m, n_instances = 8, 6
    rng = np.random.default_rng(0)
    needed = [
        sorted(rng.choice(m, size=int(rng.integers(1, 4)), replace=False).tolist())
        for _ in range(n_instances)
    ]
    coverage = _random.uniform(_random.stream_key(0, 1), torch.arange(1000), m) >= 0.5
    sampler = _bandit_sampler(needed, noise)
    got = engine.run_engine(
        sampler, torch.full((n_instances,), m), engine.pack_rows(coverage)[None], 1000, **settings
    )
    want, drawn = _reference_results(sampler, n_instances, m, coverage.numpy(), **settings)
    owner = got.store.view("owner")
    for i, ref in enumerate(want):
        assert got.anchors[i] == list(ref.anchor), i
        assert got.precision[i].item() == ref.precision, i
        assert got.coverage[i].item() == ref.coverage, i
        assert bool(got.success[i]) == ref.success, i
        assert int(got.n_samples[i]) == ref.n_samples, i
        # the same samples, drawn in the same order, and the same ones behind the estimate
        assert int((owner == i).sum()) == drawn[i]
        mine = torch.nonzero(got.members & (owner == i)).flatten()
        assert mine.numel() == ref.n_samples
        assert torch.equal(
            got.store.payload[mine], got.store.stream[mine]
        )  # the sampler's payload, kept
        assert torch.equal(got.store.present[mine], torch.from_numpy(ref.samples.present))
        assert torch.equal(got.store.agree[mine], torch.from_numpy(ref.samples.agree))
    if not settings:
        assert all(a for a in got.anchors)  # non-trivial: anchors were found


def test_instances_with_different_feature_counts_and_none():
    # Instance 0 has 6 features, instance 1 has 3, instance 2 none (e.g. a one-superpixel image).
    needed = [[1, 4], [2], [0]]
    sampler = _bandit_sampler(needed, 0.02)
    n_features = torch.tensor([6, 3, 0])
    coverage = _random.uniform(_random.stream_key(1, 1), torch.arange(500), 6) >= 0.5
    got = engine.run_engine(sampler, n_features, engine.pack_rows(coverage)[None], 500)
    for i, m in enumerate([6, 3]):
        own_sampler = _bandit_sampler(
            [needed[i]], 0.02
        )  # the same numbers: they depend on the stream only
        [want], _ = _reference_results(own_sampler, 1, m, coverage[:, :m].numpy())
        alone = engine.run_engine(
            own_sampler, n_features[i : i + 1], engine.pack_rows(coverage)[None], 500
        )
        assert got.anchors[i] == alone.anchors[0] == list(want.anchor)
        assert got.precision[i] == alone.precision[0] == want.precision
        assert set(needed[i]) <= set(got.anchors[i]) and got.success[i]
    assert got.anchors[2] == [] and not got.success[2]
    assert max(max(a, default=0) for a in got.anchors) < 6


def test_kl_bounds_against_brute_force():
    p = torch.tensor([0.0, 0.01, 0.3, 0.5, 0.93, 1.0], dtype=torch.float64)
    level = torch.tensor([0.5, 0.02, 0.1, 0.001, 0.05, 0.3], dtype=torch.float64)
    lower, upper = engine.kl_bounds(p, level)
    assert torch.equal(lower, engine.kl_lower_bound(p, level)) and torch.equal(
        upper, engine.kl_upper_bound(p, level)
    )
    grid = torch.linspace(0, 1, 2_000_001, dtype=torch.float64)
    for i in range(len(p)):
        kl = engine.kl_bernoulli(torch.full_like(grid, p[i].item()), grid)
        inside = grid[kl <= level[i]]
        # 16 halvings of a bracket no wider than 1: within 2**-16 of the true bound, on the right side.
        assert 0 <= upper[i] - inside.max() <= 2**-16 + 1e-6
        assert 0 <= inside.min() - lower[i] <= 2**-16 + 1e-6
        assert lower[i] <= p[i] <= upper[i]


def test_kl_bounds_equal_the_reference_bisection():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    level = rng.random(500) * 0.3
    lower, upper = engine.kl_bounds(torch.from_numpy(p), torch.from_numpy(level))
    np.testing.assert_allclose(
        lower.numpy(), reference.kl_lower_bound(p, level), rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(
        upper.numpy(), reference.kl_upper_bound(p, level), rtol=0, atol=1e-15
    )


def test_beta_is_the_reference_exploration_rate():
    for n, t, delta in [(1, 1, 0.1), (15, 7, 0.05), (200, 1000, 0.3)]:
        got = engine.compute_beta(torch.tensor(n), torch.tensor(t), delta).item()
        assert math.isclose(got, reference.compute_beta(n, t, delta), rel_tol=1e-14)


@pytest.mark.parametrize("rows", [1, 63, 64, 65, 1000])
def test_packed_bitsets_and_popcount_against_loops(rows):
    present = torch.rand(rows, 5, generator=torch.Generator().manual_seed(rows)) < 0.4
    bits = engine.pack_rows(present)
    assert bits.shape == (5, (rows + 63) // 64) and bits.dtype == torch.int64
    for f in range(5):
        for r in range(rows):
            word, bit = divmod(r, 64)
            assert bool((int(bits[f, word]) >> bit) & 1) == bool(present[r, f])
    assert torch.equal(engine.popcount(bits), present.sum(0))
    # every bit set, the sign bit included
    assert engine.popcount(torch.tensor([[-1, 0, 1 << 62, -(1 << 63)]])).item() == 64 + 0 + 1 + 1


def test_counter_based_random_numbers_are_uniform_and_independent():
    key = _random.stream_key(123, 2)
    u = _random.uniform(key, torch.arange(20000), 8, dtype=torch.float64)
    assert u.min() >= 0 and u.max() < 1
    # mean 1/2 and variance 1/12 within ~5 standard errors; neighbours uncorrelated
    assert abs(u.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / u.numel())
    assert abs(u.var().item() - 1 / 12) < 0.002
    across_slots = torch.corrcoef(torch.stack([u[:, 0], u[:, 1]]))[0, 1]
    across_counters = torch.corrcoef(torch.stack([u[:-1, 0], u[1:, 0]]))[0, 1]
    assert across_slots.abs() < 0.03 and across_counters.abs() < 0.03
    # other seeds and streams give other numbers; the same coordinates the same ones
    assert not torch.equal(
        u, _random.uniform(_random.stream_key(124, 2), torch.arange(20000), 8, torch.float64)
    )
    assert torch.equal(u[5:9], _random.uniform(key, torch.arange(5, 9), 8, torch.float64))
    k = _random.integers(key, torch.arange(60000), 1, 7)
    counts = torch.bincount(k.flatten(), minlength=7)
    assert counts.shape == (7,) and k.min() >= 0 and k.max() < 7
    assert (counts - 60000 / 7).abs().max() < 5 * math.sqrt(60000 / 7)
