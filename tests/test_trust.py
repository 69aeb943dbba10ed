"""TrustScore against a float64 brute-force loop and against Alibi 0.9.6 (in its own environment)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from torchexplain import trust
from torchexplain.trust import TrustScore


def _distances(queries, points, p=2):
    return np.linalg.norm(queries[:, None, :] - points[None, :, :], ord=p, axis=-1)


def _brute_force_scores(
    X,
    y,
    Xt,
    pred,
    classes,
    k,
    dist_type,
    filter_type=None,
    k_filter=3,
    alpha=0.0,
    dist_filter_type="point",
):
    """Trust scores by the paper's definition, a loop over classes in float64 (no trees)."""
    keep_rows = np.ones(len(X), bool)
    if filter_type == "probability_knn":
        d = _distances(X, X)
        order = np.argsort(d, axis=1, kind="stable")[:, :k_filter]
        agreement = np.array([np.bincount(y[o], minlength=classes).max() / k_filter for o in order])
        keep_rows = agreement >= np.percentile(agreement, alpha * 100)
    kept = []
    for c in range(classes):
        members = X[(y == c) & keep_rows]
        if filter_type == "distance_knn":
            d = np.sort(_distances(members, members), axis=1)[:, : k_filter + 1]
            radius = d[:, -1] if dist_filter_type == "point" else d[:, 1:].mean(1)
            members = members[radius <= np.percentile(radius, (1 - alpha) * 100)]
        kept.append(members)
    dist = np.full((len(Xt), classes), np.inf)
    for c, members in enumerate(kept):
        d = np.sort(_distances(Xt, members), axis=1)[:, :k]
        dist[:, c] = d[:, -1] if dist_type == "point" else d.mean(1)
    to_pred = dist[np.arange(len(Xt)), pred]
    others = dist.copy()
    others[np.arange(len(Xt)), pred] = np.inf
    return others.min(1) / (to_pred + 1e-12), others.argmin(1), [len(m) for m in kept]


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 5))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.8).astype(int)
    Xt = rng.normal(size=(60, 5))
    pred = (Xt[:, 0] > 0).astype(int)
    return X, y, Xt, pred


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(filter_type="distance_knn", alpha=0.2, k_filter=3),
        dict(filter_type="distance_knn", alpha=0.2, k_filter=3, dist_filter_type="mean"),
        dict(filter_type="probability_knn", alpha=0.2, k_filter=3),
    ],
)
@pytest.mark.parametrize("tree", [True, False])
def test_scores_equal_a_float64_brute_force(blobs, options, tree, monkeypatch, device):
    if not tree:
        monkeypatch.setattr(trust, "KD_TREE_MAX_FEATURES", 0)
    X, y, Xt, pred = blobs
    ts = TrustScore(device=device, **options).fit(X, y, classes=3)
    assert (ts.class_rows[0].tree is not None) == (tree and device.type == "cpu")
    for k, dist_type in ((2, "point"), (4, "mean")):
        scores, closest = ts.score(Xt, pred, k=k, dist_type=dist_type)
        expected, expected_closest, kept = _brute_force_scores(
            X, y, Xt, pred, 3, k, dist_type, **options
        )
        np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-12)
        assert closest.tolist() == expected_closest.tolist()
        assert [len(r) for r in ts.class_rows] == kept


def test_one_hot_labels_and_probabilities(blobs):
    X, y, Xt, pred = blobs
    one_hot = np.eye(3)[y]
    a = TrustScore(device="cpu").fit(X, one_hot).score(Xt, np.eye(3)[pred] * 0.9)
    b = TrustScore(device="cpu").fit(X, y, classes=3).score(Xt, pred)
    assert torch.equal(a.score, b.score) and torch.equal(a.closest_class, b.closest_class)


def test_ties_between_classes_give_one_class_per_row():
    X = np.array([[-1.0], [-1.0], [1.0], [1.0], [0.0], [0.0]])
    y = np.array([0, 0, 1, 1, 2, 2])
    ts = TrustScore(device="cpu").fit(X, y, classes=3)
    scores, closest = ts.score(np.array([[0.0]]), np.array([2]), k=1)
    # classes 0 and 1 are both at distance 1 (Alibi returns both, misaligning its rows)
    assert closest.tolist() == [0] and scores.shape == (1,)
    assert float(scores[0]) == pytest.approx(1.0 / 1e-12)


def test_empty_classes_and_bad_input(blobs):
    X, y, Xt, pred = blobs
    with pytest.warns(UserWarning, match="class 3 has no training rows"):
        ts = TrustScore(device="cpu").fit(X, y, classes=4)
    scores, closest = ts.score(Xt[:3], np.array([3, 0, 1]))
    assert torch.isnan(scores[0]) and not torch.isnan(scores[1:]).any()
    assert 3 not in closest.tolist()
    with pytest.raises(ValueError, match="k=500 is larger than class 0"):
        ts.score(Xt, pred, k=500)
    with pytest.raises(ValueError, match="label 5, outside the classes 0..3"):
        ts.score(Xt[:2], np.array([5, 0]))
    with pytest.raises(ValueError, match="X has 4 features per row"):
        ts.score(Xt[:, :4], pred)
    with pytest.raises(ValueError, match="k_filter=10 needs at least 11 training rows of class 2"):
        TrustScore(filter_type="distance_knn", device="cpu").fit(X[:40], y[:40], classes=3)
    with pytest.raises(ValueError, match="filter_type must be"):
        TrustScore(filter_type="knn")
    with pytest.raises(ValueError, match="not fitted"):
        TrustScore().score(Xt, pred)


def test_equals_alibi(blobs, tmp_path):
    from tests import _venvs

    python = _venvs.ready("alibi")
    if isinstance(python, str):
        pytest.skip(python)
    X, y, Xt, pred = blobs
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "Xt.npy", Xt)
    np.save(tmp_path / "pred.npy", pred)
    settings = [
        dict(),
        dict(filter_type="distance_knn", alpha=0.2, k_filter=3),
        dict(filter_type="distance_knn", alpha=0.2, k_filter=3, dist_filter_type="mean"),
        dict(filter_type="probability_knn", alpha=0.2, k_filter=3),
    ]
    script = f"""
import json, numpy as np
from alibi.confidence import TrustScore
d = {str(tmp_path)!r}
X, y, Xt, pred = (np.load(f"{{d}}/{{n}}.npy") for n in ("X", "y", "Xt", "pred"))
out = []
for options in {settings!r}:
    ts = TrustScore(**options)
    ts.fit(X, y, classes=3)
    a, ca = ts.score(Xt, pred, k=2)
    b, cb = ts.score(Xt, pred, k=4, dist_type="mean")
    out.append([a.tolist(), ca.tolist(), b.tolist(), cb.tolist()])
print(json.dumps(out))
"""
    result = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for options, (a, ca, b, cb) in zip(settings, json.loads(result.stdout.splitlines()[-1])):
        ts = TrustScore(device="cpu", **options).fit(X, y, classes=3)
        ours = ts.score(Xt, pred, k=2)
        np.testing.assert_allclose(ours.score.numpy(), a, rtol=1e-12)
        assert ours.closest_class.tolist() == ca
        ours = ts.score(Xt, pred, k=4, dist_type="mean")
        np.testing.assert_allclose(ours.score.numpy(), b, rtol=1e-12)
        assert ours.closest_class.tolist() == cb
