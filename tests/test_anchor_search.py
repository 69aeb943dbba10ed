"""The KL-LUCB pieces against brute force, and the beam search on a bandit with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from torchexplain.anchors import reference as search
from torchexplain.anchors.reference import (
    BeamSearch,
    SampleBatch,
    compute_beta,
    kl_lower_bound,
    kl_upper_bound,
    run_searches,
)


def kl_root_brute_force(p: float, level: float, upper: bool) -> float:
    """The q beyond which KL(p, q) exceeds level, on a 2**-22 grid in float64."""
    grid = np.linspace(p, 1.0, 1 << 22) if upper else np.linspace(0.0, p, 1 << 22)
    kl = search.kl_bernoulli(np.full_like(grid, p), grid)
    inside = grid[kl <= level]
    return float(inside.max() if upper else inside.min())


@pytest.mark.parametrize("scalar", [True, False])
def test_kl_bounds_match_brute_force(scalar, monkeypatch):
    monkeypatch.setattr(search, "_SCALAR_BISECTION_MAX", 100 if scalar else 0)
    p = np.array([0.0, 0.3, 0.5, 0.92, 0.99, 1.0])
    level = np.array([0.5, 0.01, 0.2, 0.03, 0.001, 0.1])
    upper, lower = kl_upper_bound(p, level), kl_lower_bound(p, level)
    for i in range(len(p)):
        # 16 halvings of an interval no wider than sqrt(level / 2): error below 2**-16.
        assert upper[i] == pytest.approx(kl_root_brute_force(p[i], level[i], True), abs=2**-16)
        assert lower[i] == pytest.approx(kl_root_brute_force(p[i], level[i], False), abs=2**-16)


def test_scalar_and_vector_bisections_agree(monkeypatch):
    rng = np.random.default_rng(0)
    p, level = rng.random(6), rng.random(6) * 0.3
    fast = kl_upper_bound(p, level), kl_lower_bound(p, level)
    monkeypatch.setattr(search, "_SCALAR_BISECTION_MAX", 0)
    slow = kl_upper_bound(p, level), kl_lower_bound(p, level)
    # The paths round KL differently (scalar: one formula; vector: entropy term hoisted), so a
    # bisection step may go either way at a tie: they agree to the bisection resolution.
    np.testing.assert_allclose(fast, slow, rtol=0, atol=2**-16)


def test_beta_closed_form():
    inner = math.log(405.5 * 12 * 3**1.1 / 0.1)
    assert compute_beta(12, 3, 0.1) == pytest.approx(inner + math.log(inner), rel=1e-15)


def bandit_sampler(n_features: int, needed: tuple[int, ...], noise: float, seeds: list[int]):
    rngs = [np.random.default_rng(s) for s in seeds]

    def sample_fn(requests):
        out = []
        for i, anchor, n in requests:
            present = rngs[i].random((n, n_features)) >= 0.5
            present[:, list(anchor)] = True
            agree = present[:, list(needed)].all(1) ^ (rngs[i].random(n) < noise)
            out.append(SampleBatch(present, agree))
        return out

    return sample_fn


def test_search_finds_the_needed_features_and_the_driver_batches():
    n_features, needed = 8, (1, 3)
    coverage = np.random.default_rng(1).random((4000, n_features)) >= 0.5
    searches = [BeamSearch(n_features, coverage, threshold=0.9).run() for _ in range(3)]
    rounds = []
    sampler = bandit_sampler(n_features, needed, noise=0.01, seeds=[0, 0, 0])

    def counting(requests):
        rounds.append(len(requests))
        return sampler(requests)

    results = run_searches(searches, counting)
    for result in results:
        assert sorted(result.anchor) == [1, 3] and result.success
        assert result.precision >= 0.9
        assert result.coverage == pytest.approx(coverage[:, [1, 3]].all(1).mean())
    assert max(rounds) >= 3  # the three searches shared rounds


def test_beam_search_with_wider_beam_and_failure_mode():
    n_features = 6
    coverage = np.random.default_rng(2).random((2000, n_features)) >= 0.5
    # Agreement is a coin flip whatever is kept: no anchor can reach 0.95.
    sampler = bandit_sampler(n_features, (), noise=0.5, seeds=[3])
    [result] = run_searches(
        [BeamSearch(n_features, coverage, beam_size=2, max_anchor_size=2).run()], sampler
    )
    assert not result.success and 1 <= len(result.anchor) <= 2
    assert 0.3 < result.precision < 0.7
