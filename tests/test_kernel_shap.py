"""KernelShap against shap's KernelExplainer, exact Shapley values by brute force, and its own rules."""

from __future__ import annotations

import importlib
import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from torchexplain import KernelShap, kernel_shap
from torchexplain.kernel_shap import coalition_plan

shap = pytest.importorskip("shap")

F64 = torch.float64
#: shap and torchexplain compute the same float64 sums in a different order
RTOL, ATOL = 1e-6, 1e-12


def _mlp(d: int, k: int, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, k)).to(F64)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=F64))
    return model.eval()


def _numpy_predictor(model: nn.Module, softmax: bool = False):
    def predict(x):
        with torch.no_grad():
            out = model(torch.as_tensor(np.asarray(x), dtype=F64))
            return (out.softmax(1) if softmax else out).numpy()

    return predict


def _data(d: int, n_bg: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)  # noqa: NPY002 - local stream for test data
    return rng.randn(n_bg, d), rng.randn(n, d)


def _shap_values(explainer, rows: np.ndarray, seed: int | None = None, **kwargs) -> np.ndarray:
    """shap's values per row as (B, K, M); reseeded before each row when ``seed`` is given."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # l1_reg='auto' is deprecated in shap >= 0.47
        for i in range(rows.shape[0]):
            if seed is not None:
                np.random.seed(seed)  # noqa: NPY002 - shap draws from the global stream
            values = np.asarray(explainer.shap_values(rows[i : i + 1], silent=True, **kwargs))[0]
            out.append(values.T if values.ndim == 2 else values[None])
    return np.stack(out)


def _brute_force(
    f, x: np.ndarray, background: np.ndarray, weights: np.ndarray, groups, link=lambda p: p
):
    """Exact Shapley values over every coalition of ``groups`` (lists of columns)."""
    m = len(groups)

    def value(coalition: tuple[int, ...]) -> np.ndarray:
        rows = background.copy()
        for g in coalition:
            rows[:, groups[g]] = x[groups[g]]
        return link((f(rows) * weights[:, None]).sum(0))

    phi = np.zeros((value(()).shape[0], m))
    for i in range(m):
        others = [g for g in range(m) if g != i]
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for subset in itertools.combinations(others, size):
                phi[:, i] += weight * (value(tuple(sorted(subset + (i,)))) - value(subset))
    return phi


# ----------------------------------------------------------------------------- equal to shap


@pytest.mark.parametrize("link", ["identity", "logit"])
@pytest.mark.parametrize("d", [2, 5, 11])
def test_equal_to_shap_where_shap_enumerates_every_coalition(link, d):
    model = _mlp(d, 3, seed=d)
    predict = _numpy_predictor(model, softmax=True)
    background, rows = _data(d, n_bg=15, n=6, seed=d)
    reference = shap.KernelExplainer(predict, background, link=link)
    want = _shap_values(reference, rows, l1_reg="auto")
    exp = KernelShap(predict, link=link).fit(background).explain(rows)
    np.testing.assert_allclose(exp.shap_values.numpy(), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        exp.expected_value.numpy(), reference.expected_value, rtol=RTOL, atol=ATOL
    )
    # shap >= 0.47's default selection, num_features(10), is deterministic here too
    want = _shap_values(reference, rows)
    got = KernelShap(predict, link=link, l1_reg="num_features(10)").fit(background).explain(rows)
    np.testing.assert_allclose(got.shap_values.numpy(), want, rtol=RTOL, atol=ATOL)


def test_an_nn_module_gets_tensors_and_gives_the_same_values():
    model = _mlp(6, 2, seed=3)
    background, rows = _data(6, n_bg=10, n=4, seed=3)
    want = _shap_values(
        shap.KernelExplainer(_numpy_predictor(model), background), rows, l1_reg=False
    )
    exp = KernelShap(model).fit(torch.from_numpy(background)).explain(torch.from_numpy(rows))
    np.testing.assert_allclose(exp.shap_values.numpy(), want, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(exp.predictions, model(torch.from_numpy(rows)).detach())


@pytest.mark.parametrize("seed", [0, 7])
def test_sampled_coalitions_are_shaps_for_the_same_seed(seed):
    d = 12  # 2M + 2048 = 2072 < 2**12 - 2: shap samples part of the coalitions
    predict = _numpy_predictor(_mlp(d, 2, seed=seed))
    background, rows = _data(d, n_bg=8, n=3, seed=seed)
    reference = shap.KernelExplainer(predict, background)
    want = _shap_values(reference, rows, seed=seed, l1_reg="auto")
    # the coalition matrix and kernel weights of the last row, as shap evaluated them
    plan = coalition_plan(d, "auto", seed)
    used = reference.kernelWeights > 0
    np.testing.assert_array_equal(plan.masks, reference.maskMatrix[used].astype(bool))
    np.testing.assert_allclose(plan.weights, reference.kernelWeights[used], rtol=1e-12)
    exp = KernelShap(predict, seed=seed).fit(background).explain(rows)
    np.testing.assert_allclose(exp.shap_values.numpy(), want, rtol=RTOL, atol=ATOL)
    assert exp.meta["coalitions"] == {"12": len(plan.weights)}


def test_a_seed_beyond_32_bits_is_reproducible_and_all_its_bits_count():
    """Seeds below 2**32 are shap's (test above); larger ones, which every torchexplain method
    accepts, seed the same legacy generator with both 32-bit words."""
    seed = 3 * 2**40 + 5
    plan = coalition_plan(12, "auto", seed)
    np.testing.assert_array_equal(plan.masks, coalition_plan(12, "auto", seed).masks)
    assert not np.array_equal(plan.masks, coalition_plan(12, "auto", seed & 0xFFFFFFFF).masks)
    assert not np.array_equal(plan.masks, coalition_plan(12, "auto", seed + 2**32).masks)


@pytest.mark.parametrize("l1_reg", ["auto", "aic", "bic", "num_features(4)", 0.01])
def test_feature_selection_is_shaps(l1_reg):
    d = 14  # nsamples=300 of 16382 coalitions: "auto" selects with AIC
    predict = _numpy_predictor(_mlp(d, 1, seed=5))
    background, rows = _data(d, n_bg=5, n=2, seed=5)
    want = _shap_values(
        shap.KernelExplainer(predict, background), rows, seed=11, nsamples=300, l1_reg=l1_reg
    )
    exp = KernelShap(predict, seed=11).fit(background).explain(rows, nsamples=300, l1_reg=l1_reg)
    np.testing.assert_allclose(exp.shap_values.numpy(), want, rtol=RTOL, atol=ATOL)
    if l1_reg == "num_features(4)":
        assert ((exp.shap_values != 0).sum(-1) == 4).all()  # LARS kept 4 of the 14 features


def test_a_summarised_background_is_shaps_kmeans_with_its_weights():
    d = 4
    predict = _numpy_predictor(_mlp(d, 2, seed=8))
    background, rows = _data(d, n_bg=60, n=3, seed=8)
    summary = shap.kmeans(background, 6)
    want = _shap_values(shap.KernelExplainer(predict, summary), rows, l1_reg=False)
    explainer = KernelShap(predict).fit(
        background, summarise_background=True, n_background_samples=6
    )
    np.testing.assert_allclose(explainer._fit["background"].numpy(), summary.data)
    np.testing.assert_allclose(explainer._fit["weights"].numpy(), summary.weights)
    np.testing.assert_allclose(
        explainer.explain(rows).shap_values.numpy(), want, rtol=RTOL, atol=ATOL
    )


def test_a_sampled_background_keeps_distinct_real_rows_equally_weighted():
    background = np.arange(200.0).reshape(50, 4)
    explainer = KernelShap(lambda x: x[:, :1], categorical_names={0: ["a"] * 200})
    explainer.fit(background, summarise_background="auto", n_background_samples=10)
    kept = explainer._fit["background"].numpy()
    assert kept.shape == (10, 4) and len({tuple(r) for r in kept}) == 10
    assert all(any((r == b).all() for b in background) for r in kept)
    np.testing.assert_allclose(explainer._fit["weights"].numpy(), np.full(10, 0.1))
    explainer.fit(background, summarise_background="auto", n_background_samples=100)
    assert explainer._fit["background"].shape[0] == 50  # "auto": only when there are more rows


# ----------------------------------------------------------------------------- exact values


@pytest.mark.parametrize("link", ["identity", "logit"])
def test_exact_shapley_values_when_every_coalition_is_evaluated(link):
    d = 5
    model = _mlp(d, 3, seed=2)
    predict = _numpy_predictor(model, softmax=True)
    background, rows = _data(d, n_bg=7, n=3, seed=2)
    weights = np.arange(1.0, 8.0)
    logit = (lambda p: np.log(p / (1 - p))) if link == "logit" else (lambda p: p)
    exp = KernelShap(predict, link=link).fit(background, weights=weights).explain(rows)
    for i, x in enumerate(rows):
        want = _brute_force(
            predict, x, background, weights / weights.sum(), [[c] for c in range(d)], logit
        )
        np.testing.assert_allclose(exp.shap_values[i].numpy(), want, rtol=1e-9, atol=1e-12)


def test_groups_are_masked_as_one_feature():
    d = 6
    groups = [[0, 3], [1], [2, 4, 5]]
    predict = _numpy_predictor(_mlp(d, 2, seed=4))
    background, rows = _data(d, n_bg=5, n=2, seed=4)
    exp = (
        KernelShap(predict, feature_names=list("abcdef"))
        .fit(background, groups=groups, group_names=["ad", "b", "cef"])
        .explain(rows)
    )
    assert exp.shap_values.shape == (2, 2, 3) and exp.meta["feature_names"] == ["ad", "b", "cef"]
    for i, x in enumerate(rows):
        want = _brute_force(predict, x, background, np.full(5, 0.2), groups)
        np.testing.assert_allclose(exp.shap_values[i].numpy(), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("nsamples", ["auto", 40])
@pytest.mark.parametrize("link", ["identity", "logit"])
def test_values_add_up_to_the_prediction_for_every_instance(link, nsamples):
    d = 13
    model = _mlp(d, 3, seed=6)
    background, rows = _data(d, n_bg=6, n=5, seed=6)
    exp = (
        KernelShap(_numpy_predictor(model, softmax=True), link=link, seed=1)
        .fit(background)
        .explain(rows, nsamples=nsamples, l1_reg=False)
    )
    p = exp.predictions.numpy()
    linked = np.log(p / (1 - p)) if link == "logit" else p
    np.testing.assert_allclose(
        exp.shap_values.sum(-1).numpy() + exp.expected_value.numpy(), linked, rtol=1e-10, atol=1e-10
    )


def test_features_equal_to_the_whole_background_are_dropped():
    background = np.array([[1.0, 0.0, 2.0], [1.0, 1.0, 2.0], [1.0, 3.0, 2.0]])
    rows = np.array([[1.0, 5.0, 2.0], [1.0, 0.0, 2.0 + 1e-9], [4.0, 5.0, 2.0]])

    def predict(x):
        return np.stack([x[:, 0] * x[:, 1] + x[:, 2], -x[:, 1]], axis=1)

    exp = KernelShap(predict).fit(background).explain(rows)
    assert exp.varying.tolist() == [[False, True, False], [False, True, False], [True, True, False]]
    fnull = predict(background).mean(0)
    # one varying feature gets the whole difference
    np.testing.assert_allclose(exp.shap_values[0, :, 1].numpy(), predict(rows[:1])[0] - fnull)
    assert (exp.shap_values[:2, :, [0, 2]] == 0).all()
    want = _brute_force(predict, rows[2], background, np.full(3, 1 / 3), [[0], [1], [2]])
    np.testing.assert_allclose(exp.shap_values[2].numpy(), want, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- batching


def test_a_batch_gives_what_each_instance_gives_alone_with_mixed_feature_counts():
    d = 13
    predict = _numpy_predictor(_mlp(d, 2, seed=9))
    background, rows = _data(d, n_bg=4, n=4, seed=9)
    background[:, :3] = 0.5
    rows[1, :3] = 0.5  # 10 varying features (enumerated), the others 13 (sampled)
    rows[2, :2] = 0.5
    explainer = KernelShap(predict, seed=3).fit(background)
    batch = explainer.explain(rows, nsamples=300)
    assert sorted(batch.meta["coalitions"]) == ["10", "11", "13"]
    for i in range(4):
        alone = explainer.explain(rows[i : i + 1], nsamples=300)
        torch.testing.assert_close(
            alone.shap_values, batch.shap_values[i : i + 1], rtol=1e-12, atol=1e-14
        )


@pytest.mark.parametrize("cache_predictions", [True, False])
@pytest.mark.parametrize("rows_per_call", [1, 3, 50, None])
def test_chunked_predictor_calls_give_the_same_values_and_bound_the_call_size(
    rows_per_call, cache_predictions
):
    d = 4
    seen = []
    model = _mlp(d, 2, seed=10)

    def predict(x):
        seen.append(x.shape[0])
        return _numpy_predictor(model)(x)

    background, rows = _data(d, n_bg=7, n=3, seed=10)
    want = (
        KernelShap(_numpy_predictor(model)).fit(background).explain(rows, internal_batch_size=None)
    )
    seen.clear()
    got = (
        KernelShap(predict, cache_predictions=cache_predictions, pad_to_multiple=1)
        .fit(background)
        .explain(rows, internal_batch_size=rows_per_call)
    )
    torch.testing.assert_close(got.shap_values, want.shap_values, rtol=1e-12, atol=1e-14)
    if rows_per_call is not None:
        assert max(seen[2:]) <= max(rows_per_call, 1)  # after f(x) and f(background)
    assert got.meta["total_rows_evaluated"] == sum(seen)
    # padded (the default), a call carries a multiple of 4 rows, and the rows asked for are counted
    seen.clear()
    padded = KernelShap(predict, cache_predictions=cache_predictions).fit(background)
    padded = padded.explain(rows, internal_batch_size=rows_per_call)
    torch.testing.assert_close(padded.shap_values, want.shap_values, rtol=1e-12, atol=1e-14)
    assert all(size % 4 == 0 for size in seen)
    if rows_per_call is not None:
        assert max(seen) <= max(rows_per_call, 4)
    assert padded.meta["total_rows_evaluated"] == got.meta["total_rows_evaluated"] < sum(seen)


@pytest.mark.parametrize("cache_predictions", [True, False])
def test_out_of_memory_halves_the_call_and_gives_the_same_values(cache_predictions):
    d = 4
    model = _mlp(d, 2, seed=12)
    calls = []

    def predict(x):
        calls.append(x.shape[0])
        if x.shape[0] > 20:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return _numpy_predictor(model)(x)

    background, rows = _data(d, n_bg=5, n=2, seed=12)
    want = KernelShap(_numpy_predictor(model)).fit(background).explain(rows)
    got = KernelShap(predict, cache_predictions=cache_predictions).fit(background).explain(rows)
    torch.testing.assert_close(got.shap_values, want.shap_values, rtol=1e-12, atol=1e-14)
    assert max(calls) > 20  # the first, too large, call was retried smaller


# ----------------------------------------------------------------------------- images and masks


class _QuadrantModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(4)
        self.linear = nn.Linear(4, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[3.0, -1, 0, 2], [0, 2, 1, -1], [1, 1, -2, 0]]))
            self.linear.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(self.pool(images).flatten(1))).softmax(1)


def _quadrants() -> torch.Tensor:
    mask = torch.zeros(8, 8, dtype=torch.int64)
    mask[:4, 4:], mask[4:, :4], mask[4:, 4:] = 1, 2, 3
    return mask


def test_images_with_a_feature_mask_give_exact_values_per_superpixel():
    model = _QuadrantModel().to(F64)
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    background = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=F64)
    mask = _quadrants()[None]  # (1, H, W): one mask for every image
    exp = KernelShap(model).fit(background).explain(images, feature_mask=mask[:, None])
    columns = [[int(i) for i in torch.nonzero(mask.flatten() == q)[:, 0]] for q in range(4)]

    def predict(rows):
        return model(torch.from_numpy(rows).view(-1, 1, 8, 8)).detach().numpy()

    for i in range(3):
        want = _brute_force(
            predict,
            images[i].flatten().numpy(),
            background.flatten(1).numpy(),
            np.full(2, 0.5),
            columns,
        )
        np.testing.assert_allclose(exp.shap_values[i].numpy(), want, rtol=1e-9, atol=1e-12)
    maps = KernelShap(model).fit(background).explanation_map(exp, images)
    assert maps.shape == images.shape
    target = exp.target
    for i in range(3):
        torch.testing.assert_close(
            maps[i, 0].double(), exp.shap_values[i, target[i]][mask[0]], rtol=1e-6, atol=1e-7
        )


def test_images_without_a_mask_are_segmented_and_batch_independent():
    model = _QuadrantModel()
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    images[1, :, :4] += 1.0
    explainer = KernelShap(
        model, segmentation_kwargs={"n_segments": 4, "compactness": 10.0, "sigma": 0.5}
    )
    explainer.fit(torch.zeros(1, 1, 8, 8))
    batch = explainer.explain(images)
    assert batch.feature_mask.shape == (3, 8, 8)
    for i in range(3):
        alone = explainer.explain(images[i : i + 1])
        assert torch.equal(alone.feature_mask, batch.feature_mask[i : i + 1])
        m = alone.shap_values.shape[2]
        torch.testing.assert_close(
            alone.shap_values, batch.shap_values[i : i + 1, :, :m], rtol=1e-6, atol=1e-9
        )
        assert (batch.shap_values[i, :, m:] == 0).all()
    p = batch.predictions.double()
    torch.testing.assert_close(
        batch.shap_values.sum(-1) + batch.expected_value, p, rtol=1e-6, atol=1e-7
    )


# ----------------------------------------------------------------------------- the logit link and errors


def test_logit_of_probabilities_of_exactly_zero_or_one_is_clipped_not_nan():
    def predict(x):
        p = 1 / (1 + np.exp(-x[:, 0] - x[:, 1]))
        p = np.where(x[:, 2] > 0, 1.0, p)  # certain wherever column 2 is positive
        return np.stack([p, 1 - p], axis=1)

    background, rows = _data(3, n_bg=5, n=4, seed=13)
    rows[0, 2], background[:, 2] = 5.0, 2.0  # row 0: p = 1 on every coalition
    exp = KernelShap(predict, link="logit").fit(background).explain(rows)
    assert torch.isfinite(exp.shap_values).all() and torch.isfinite(exp.expected_value).all()
    eps = 1e-7
    clipped = np.clip(exp.predictions.numpy(), eps, 1 - eps)
    np.testing.assert_allclose(
        exp.shap_values.sum(-1).numpy() + exp.expected_value.numpy(),
        np.log(clipped / (1 - clipped)),
        rtol=1e-9,
        atol=1e-9,
    )
    with pytest.raises(ValueError, match="link='logit' needs probabilities in \\[0, 1\\]"):
        KernelShap(lambda x: x[:, :2] * 10, link="logit").fit(background).explain(rows)


def test_bad_arguments_are_refused_with_the_argument_named():
    background, rows = _data(3, n_bg=4, n=2, seed=14)
    predict = lambda x: x[:, :2]  # noqa: E731
    with pytest.raises(ValueError, match="not fitted"):
        KernelShap(predict).explain(rows)
    explainer = KernelShap(predict).fit(background)
    with pytest.raises(ValueError, match=r"inputs must be shaped \(B, 3\)"):
        explainer.explain(rows[:, :2])
    with pytest.raises(ValueError, match="not labels"):
        KernelShap(lambda x: np.zeros(x.shape[0], dtype=np.int64)).fit(background).explain(rows)
    with pytest.raises(ValueError, match="l1_reg must be"):
        explainer.explain(rows, l1_reg="num_features(0)")
    with pytest.raises(TypeError, match="nsamples must be"):
        explainer.explain(rows, nsamples="many")
    with pytest.raises(ValueError, match="exactly one group; missing \\[2\\]"):
        KernelShap(predict).fit(background, groups=[[0], [1]])
    with pytest.raises(ValueError, match="weights must be shaped \\(4,\\)"):
        KernelShap(predict).fit(background, weights=[1.0, 2.0])
    with pytest.raises(TypeError, match="feature_mask must hold integer"):
        explainer.explain(rows, feature_mask=np.zeros((1, 3)))
    # one seed rule for every method (torchexplain.settings.SeedSettings)
    with pytest.raises(ValueError, match="seed must be in \\[0, 2\\*\\*63\\)"):
        KernelShap(predict, seed=2**63)


def test_the_function_twin_fits_and_explains():
    background, rows = _data(4, n_bg=6, n=2, seed=15)
    predict = _numpy_predictor(_mlp(4, 2, seed=15))
    by_class = KernelShap(predict).fit(background, groups=[[0, 1], [2], [3]]).explain(rows)
    by_function = kernel_shap(predict, rows, background, groups=[[0, 1], [2], [3]])
    torch.testing.assert_close(by_function.shap_values, by_class.shap_values, rtol=0, atol=0)


@pytest.mark.parametrize("n_features, distinct", [(6, 3), (40, 12)])
def test_scoring_distinct_rows_once_gives_the_values_of_scoring_every_row(n_features, distinct):
    rng = np.random.RandomState(16)  # noqa: NPY002 - local stream for test data
    background = rng.randint(0, distinct, (20, n_features)).astype(np.float64)
    rows = rng.randint(0, distinct, (3, n_features)).astype(np.float64)
    predict = _numpy_predictor(_mlp(n_features, 2, seed=16))
    every = (
        KernelShap(predict, cache_predictions=False, seed=0)
        .fit(background)
        .explain(rows, nsamples=200)
    )
    once = KernelShap(predict, seed=0).fit(background).explain(rows, nsamples=200)
    torch.testing.assert_close(once.shap_values, every.shap_values, rtol=1e-12, atol=1e-14)
    perturbed = once.meta["total_rows_perturbed"]
    assert (
        perturbed
        == every.meta["total_rows_perturbed"]
        == every.meta["total_rows_evaluated"] - 3 - 20
    )
    if n_features == 6:  # few distinct values: most perturbed rows recur
        assert once.meta["total_rows_evaluated"] - 3 - 20 < perturbed / 4
    else:  # 13**40 codes cannot be exact float64 keys: every row is scored
        assert once.meta["total_rows_evaluated"] == every.meta["total_rows_evaluated"]


@pytest.mark.parametrize("cache_predictions", [True, False])
def test_instances_in_blocks_give_the_values_of_one_block(monkeypatch, cache_predictions):
    module = importlib.import_module(
        "torchexplain.kernel_shap"
    )  # the package's kernel_shap is the function

    predict = _numpy_predictor(_mlp(5, 2, seed=17))
    background, rows = _data(5, n_bg=6, n=5, seed=17)
    explainer = KernelShap(predict, cache_predictions=cache_predictions).fit(background)
    whole = explainer.explain(rows)
    monkeypatch.setattr(
        module, "_KEYS_PER_BLOCK", 2 * 30 * 6
    )  # 2 instances of 30 coalitions per block
    blocks = explainer.explain(rows)
    torch.testing.assert_close(blocks.shap_values, whole.shap_values, rtol=1e-12, atol=1e-14)


def test_loan_shap_demo_writes_the_explanations_and_pictures(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    from PIL import Image

    from torchexplain import Explanation
    from torchexplain.datasets import load_census

    monkeypatch.setenv(
        "TORCHEXPLAIN_CACHE", str(tmp_path / "cache")
    )  # trains its model here (seconds)
    path = Path(__file__).parents[1] / "examples" / "loan_shap.py"
    spec = importlib.util.spec_from_file_location("loan_shap", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    summary = demo.run(tmp_path / "out", n_rows=12, device="cpu")
    assert summary["rows_explained"] == 12 and summary["kernel_shap_additivity_error"] < 1e-12
    kernel = Explanation.from_json((tmp_path / "out" / "loan_kernel_shap.json").read_text())
    tree = Explanation.from_json((tmp_path / "out" / "loan_tree_shap.json").read_text())
    data = load_census()
    # the ranking written is the one the values give
    ranking = kernel.shap_values[:, 1].abs().mean(0)
    assert summary["top_features_mlp"] == [
        data.feature_names[c] for c in ranking.argsort(descending=True)[:5]
    ]
    for exp in (kernel, tree):
        torch.testing.assert_close(
            exp.shap_values.sum(-1) + exp.expected_value,
            exp.predictions.double(),
            rtol=1e-6,
            atol=1e-6,
        )
    for name in ("loan_shap_importance.png", "loan_shap_instances.png"):
        with Image.open(tmp_path / "out" / name) as picture:
            assert picture.size[0] > 300 and picture.size[1] > 100


def test_signed_bars_point_right_for_positive_and_left_for_negative(tmp_path):
    from PIL import Image

    from torchexplain.visualize import save_signed_bars

    path = save_signed_bars(
        [("t", [("up", 2.0), ("down", -1.0)])], tmp_path / "bars.png", bar_width=100
    )
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("RGB")).astype(int)
    red = (pixels[..., 0] > 180) & (pixels[..., 2] < 80)
    blue = (pixels[..., 2] > 180) & (pixels[..., 0] < 80)
    red_columns, blue_columns = np.nonzero(red.any(0))[0], np.nonzero(blue.any(0))[0]
    assert len(red_columns) == pytest.approx(101, abs=1) and len(blue_columns) == pytest.approx(
        51, abs=1
    )
    assert blue_columns.max() <= red_columns.min()  # negative left of the zero line, positive right
    with pytest.raises(ValueError, match="finite"):
        save_signed_bars([("t", [("x", float("nan"))])], tmp_path / "bad.png")


def test_a_single_output_predictor_gives_one_row_of_values_per_instance():
    model = _mlp(5, 1, seed=18)
    predict = lambda x: _numpy_predictor(model)(x)[:, 0]  # noqa: E731 - (N,) scores
    background, rows = _data(5, n_bg=6, n=3, seed=18)
    reference = shap.KernelExplainer(predict, background)
    want = _shap_values(reference, rows, l1_reg=False)
    exp = KernelShap(predict).fit(background).explain(rows)
    assert exp.predictions.shape == (3,) and exp.shap_values.shape == (3, 1, 5)
    np.testing.assert_allclose(exp.shap_values.numpy(), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        exp.expected_value.numpy(), [reference.expected_value], rtol=RTOL, atol=ATOL
    )
    assert torch.equal(exp.target, torch.zeros(3, dtype=torch.int64))
