"""Integrated Gradients against Captum, a float64 brute force and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import torchexplain
from torchexplain import IntegratedGradients, integrated_gradients
from torchexplain._quadrature import METHODS, quadrature

from .conftest import TOLERANCES

captum_attr = pytest.importorskip("captum.attr")


class SmoothNet(nn.Module):
    """Conv + tanh + linear: smooth, so quadrature error shrinks predictably."""

    def __init__(self, n_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 5 * 5, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


class TwoInputNet(nn.Module):
    """Two inputs and an additional (scale, flag) argument."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(3, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x1, x2, scale, double):
        h = torch.tanh(self.a(x1) * scale + self.b(x2))
        y = self.out(h)
        return 2 * y if double else y


def make_model(seed: int = 0, dtype=torch.float32, model_cls=SmoothNet) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = model_cls()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.to(dtype).eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def brute_force_ig(model, x, baseline, target, method, n_steps):
    """float64, one step at a time, each example on its own."""
    model64 = _as_float64(model)
    alphas, weights = quadrature(method, n_steps)
    x64, b64 = x.double(), baseline.double().expand_as(x)
    out = torch.zeros_like(x64)
    for i in range(x.shape[0]):
        total = torch.zeros_like(x64[i])
        for alpha, weight in zip(alphas.tolist(), weights.tolist()):
            point = (b64[i] + alpha * (x64[i] - b64[i])).unsqueeze(0).requires_grad_()
            score = model64(point)[0, target[i]]
            (grad,) = torch.autograd.grad(score, point)
            total += weight * grad[0]
        out[i] = (x64[i] - b64[i]) * total
    return out


def _as_float64(model):
    import copy

    return copy.deepcopy(model).double()


# -- quadrature -----------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n_steps", [2, 7, 50])
def test_quadrature_integrates_polynomials(method, n_steps):
    alphas, weights = quadrature(method, n_steps)
    assert alphas.dtype == weights.dtype == torch.float64
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-14)
    # Exact degree: Riemann midpoint and trapezoid integrate linear functions
    # exactly; Gauss-Legendre with n points integrates degree 2n - 1 exactly.
    if method in ("riemann_middle", "riemann_trapezoid"):
        assert float((weights * alphas).sum()) == pytest.approx(0.5, abs=1e-14)
    if method == "gausslegendre":
        degree = 2 * n_steps - 1
        assert float((weights * alphas**degree).sum()) == pytest.approx(1 / (degree + 1), rel=1e-12)


def test_trapezoid_points_and_weights_are_the_textbook_rule():
    alphas, weights = quadrature("riemann_trapezoid", 5)
    np.testing.assert_allclose(alphas.numpy(), [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(weights.numpy(), [0.125, 0.25, 0.25, 0.25, 0.125])


# -- against Captum (float32) -----------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_matches_captum_every_method(method):
    model = make_model()
    x = torch.rand(5, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    baseline = torch.full((1, 2, 5, 5), 0.1)
    target = torch.tensor([0, 1, 2, 3, 1])
    ours = integrated_gradients(
        model, x, target=target, baselines=baseline, method=method, n_steps=20
    )
    theirs = captum_attr.IntegratedGradients(model).attribute(
        x, baselines=baseline, target=target, method=method, n_steps=20
    )
    if method == "riemann_trapezoid":
        # Captum's trapezoid weights are ours times (n - 1) / n: every weight alike.
        theirs = theirs * 20 / 19
    rtol, _ = TOLERANCES[torch.float32]
    assert ours.attributions.dtype == torch.float32
    assert rel_err(ours.attributions, theirs) <= rtol


def test_matches_captum_tuple_inputs_and_additional_args():
    model = make_model(model_cls=TwoInputNet)
    g = torch.Generator().manual_seed(2)
    x1, x2 = torch.rand(4, 6, generator=g), torch.rand(4, 3, generator=g)
    scale = torch.rand(4, 1, generator=g) + 0.5
    baselines = (torch.zeros(1, 6), 0.25)
    extra = (scale, True)
    ours = integrated_gradients(
        model,
        (x1, x2),
        target=[0, 2, 1, 2],
        baselines=baselines,
        additional_forward_args=extra,
        n_steps=16,
        internal_batch_size=13,
    )
    theirs = captum_attr.IntegratedGradients(model).attribute(
        (x1, x2),
        baselines=baselines,
        target=[0, 2, 1, 2],
        additional_forward_args=extra,
        n_steps=16,
    )
    assert isinstance(ours.attributions, tuple) and len(ours.attributions) == 2
    for a, b in zip(ours.attributions, theirs):
        assert rel_err(a, b) <= TOLERANCES[torch.float32][0]


@pytest.mark.parametrize("internal_batch_size", [None, "auto", 1, 7, 20, 33])
def test_chunking_does_not_change_the_result(internal_batch_size):
    model = make_model(dtype=torch.float64)
    x = torch.rand(3, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    whole = integrated_gradients(model, x, target=1, n_steps=10, internal_batch_size=None)
    chunked = integrated_gradients(
        model, x, target=1, n_steps=10, internal_batch_size=internal_batch_size
    )
    torch.testing.assert_close(chunked.attributions, whole.attributions, rtol=1e-12, atol=1e-14)


# -- against the float64 brute force ----------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_float64_matches_brute_force(method):
    model = make_model(dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 2, 5, 5, dtype=torch.float64, generator=g)
    baseline = torch.rand(3, 2, 5, 5, dtype=torch.float64, generator=g) * 0.2
    target = torch.tensor([3, 0, 2])
    ours = integrated_gradients(
        model,
        x,
        target=target,
        baselines=baseline,
        method=method,
        n_steps=12,
        internal_batch_size=8,
    )
    expected = brute_force_ig(model, x, baseline, target, method, 12)
    assert ours.attributions.dtype == torch.float64
    assert rel_err(ours.attributions, expected) <= TOLERANCES[torch.float64][0]


def test_captum_float64_is_off_where_we_are_not():
    """Captum rounds its weights to float32; we keep float64 exact."""
    model = make_model(dtype=torch.float64)
    x = torch.rand(2, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    target = torch.tensor([0, 1])
    expected = brute_force_ig(model, x, torch.zeros(1, 2, 5, 5), target, "gausslegendre", 9)
    ours = integrated_gradients(model, x, target=target, n_steps=9)
    theirs = captum_attr.IntegratedGradients(model).attribute(x, target=target, n_steps=9)
    assert rel_err(ours.attributions, expected) <= 1e-12
    assert rel_err(theirs, expected) > 1e-10


# -- completeness -----------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_completeness_improves_with_steps(method):
    model = make_model(dtype=torch.float64)
    x = torch.rand(4, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * 2
    steps = [2, 4, 8] if method == "gausslegendre" else [4, 16, 64]
    deltas = [
        float(
            integrated_gradients(model, x, target=2, n_steps=n, method=method)
            .convergence_delta.abs()
            .max()
        )
        for n in steps
    ]
    assert deltas[0] > deltas[1] > deltas[2]
    if method == "gausslegendre":
        assert deltas[2] < 1e-3 * deltas[0]
    else:
        # Error falls as n^-order: order 1 for left/right, 2 for middle/trapezoid.
        order = 2 if method in ("riemann_middle", "riemann_trapezoid") else 1
        assert deltas[0] / deltas[2] >= 0.5 * (steps[2] / steps[0]) ** order


def test_linear_model_is_exact_in_closed_form():
    """For F(x) = w.x + c, IG is (x - b) * w for any rule whose weights sum to 1."""
    model = nn.Linear(7, 3).double()
    x = torch.rand(5, 7, dtype=torch.float64)
    b = torch.rand(1, 7, dtype=torch.float64)
    for method in METHODS:
        exp = integrated_gradients(model, x, target=1, baselines=b, method=method, n_steps=3)
        torch.testing.assert_close(
            exp.attributions, (x - b) * model.weight[1], rtol=1e-13, atol=1e-15
        )
        assert float(exp.convergence_delta.abs().max()) < 1e-13


def test_delta_is_sum_minus_score_difference():
    model = make_model()
    x = torch.rand(3, 2, 5, 5)
    exp = integrated_gradients(model, x, n_steps=5)
    with torch.no_grad():
        fx = model(x).gather(1, exp.target[:, None])[:, 0]
        fb = model(torch.zeros_like(x)).gather(1, exp.target[:, None])[:, 0]
    expected = exp.attributions.flatten(1).sum(1) - (fx - fb)
    torch.testing.assert_close(exp.convergence_delta, expected, rtol=1e-5, atol=1e-6)


# -- targets, baselines, outputs --------------------------------------------------


def test_target_none_is_the_predicted_class():
    model = make_model()
    x = torch.rand(6, 2, 5, 5)
    exp = integrated_gradients(model, x, n_steps=4)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    torch.testing.assert_close(exp.target, predicted)
    torch.testing.assert_close(exp.predictions, model(x).detach())
    explicit = integrated_gradients(model, x, target=predicted, n_steps=4)
    torch.testing.assert_close(exp.attributions, explicit.attributions)


def test_callable_target_equals_class_target():
    model = make_model()
    x = torch.rand(3, 2, 5, 5)
    by_class = integrated_gradients(model, x, target=2, n_steps=6)
    by_callable = integrated_gradients(model, x, target=lambda out: out[:, 2], n_steps=6)
    torch.testing.assert_close(by_callable.attributions, by_class.attributions)
    assert by_callable.target is None


def test_scalar_output_model_needs_no_target():
    model = nn.Sequential(nn.Linear(4, 1), nn.Flatten(0))
    x = torch.rand(3, 4, dtype=torch.float64)
    model = model.double()
    exp = integrated_gradients(model, x, n_steps=3)
    torch.testing.assert_close(exp.attributions, x * model[0].weight[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "baseline",
    [0.3, torch.full((2, 5, 5), 0.3), torch.full((1, 2, 5, 5), 0.3), torch.full((1, 2, 1, 1), 0.3)],
    ids=["number", "no-batch-dim", "batch-1", "per-channel"],
)
def test_baseline_forms_agree(baseline):
    model = make_model()
    x = torch.rand(3, 2, 5, 5)
    expected = integrated_gradients(
        model, x, target=0, baselines=torch.full_like(x, 0.3), n_steps=5
    )
    got = integrated_gradients(model, x, target=0, baselines=baseline, n_steps=5)
    torch.testing.assert_close(got.attributions, expected.attributions)


def test_multiply_by_inputs_false_gives_averaged_gradients():
    model = nn.Linear(5, 2).double()
    x = torch.rand(3, 5, dtype=torch.float64)
    exp = integrated_gradients(model, x, target=1, n_steps=4, multiply_by_inputs=False)
    torch.testing.assert_close(
        exp.attributions, model.weight[1].expand(3, 5), rtol=1e-13, atol=1e-15
    )


# -- half precision ---------------------------------------------------------------


def test_bfloat16_model_accumulates_in_float32():
    model32 = make_model()
    model16 = make_model(dtype=torch.bfloat16)
    x = torch.rand(4, 2, 5, 5, generator=torch.Generator().manual_seed(7))
    exp16 = integrated_gradients(model16, x.bfloat16(), target=1, n_steps=32)
    exp32 = integrated_gradients(model32, x.bfloat16().float(), target=1, n_steps=32)
    assert exp16.attributions.dtype == torch.bfloat16
    assert exp16.convergence_delta.dtype == torch.float32
    rtol, _ = TOLERANCES[torch.bfloat16]
    # bfloat16 forward/backward has ~3 significant digits; summing 32 steps in
    # float32 keeps the total at that level rather than compounding rounding.
    assert rel_err(exp16.attributions.float(), exp32.attributions) <= 4 * rtol


# -- class and function, batch independence ---------------------------------------


def test_class_and_function_agree():
    model = make_model()
    x = torch.rand(3, 2, 5, 5)
    explainer = IntegratedGradients(model, n_steps=9, method="riemann_middle")
    a = explainer.explain(x, target=1)
    b = integrated_gradients(model, x, target=1, n_steps=9, method="riemann_middle")
    torch.testing.assert_close(a.attributions, b.attributions, rtol=0, atol=0)
    assert a.meta == b.meta
    assert a.meta["name"] == "IntegratedGradients"
    assert a.meta["version"] == torchexplain.__version__


def test_batch_independence():
    model = make_model(dtype=torch.float64)
    x = torch.rand(4, 2, 5, 5, dtype=torch.float64)
    batch = integrated_gradients(model, x, n_steps=8, internal_batch_size=5)
    for i in range(4):
        single = integrated_gradients(model, x[i : i + 1], n_steps=8)
        torch.testing.assert_close(
            single.attributions[0], batch.attributions[i], rtol=1e-12, atol=1e-14
        )
        assert single.target[0] == batch.target[i]


def test_mnist_cnn_matches_captum(mnist_cnn):
    model, test = mnist_cnn
    x = test.images[:8]
    ours = integrated_gradients(model, x, n_steps=50)
    theirs = captum_attr.IntegratedGradients(model).attribute(x, target=ours.target, n_steps=50)
    assert rel_err(ours.attributions, theirs) <= TOLERANCES[torch.float32][0]
    assert float(ours.convergence_delta.abs().mean()) < 1e-2


# -- mixed precision --------------------------------------------------------------


def test_mixed_precision_closed_form_on_a_linear_model():
    """Under bfloat16 autocast the input gradient of a linear layer is its bf16-rounded weight."""
    model = nn.Linear(9, 4)
    x = torch.rand(3, 9)
    exp = integrated_gradients(model, x, target=2, n_steps=8, mixed_precision=torch.bfloat16)
    assert exp.attributions.dtype == torch.float32
    expected = x * model.weight[2].detach().bfloat16().float()
    torch.testing.assert_close(exp.attributions, expected, rtol=1e-6, atol=1e-7)
    assert exp.meta["params"]["mixed_precision"] == "bfloat16"


def test_mixed_precision_error_on_the_mnist_cnn(mnist_cnn):
    """The documented error of bf16 autocast (README): per-example relative L2 ~1%, at most ~6%."""
    model, test = mnist_cnn
    x = test.images[:16]
    full = integrated_gradients(model, x, n_steps=32)
    mixed = integrated_gradients(
        model, x, target=full.target, n_steps=32, mixed_precision=torch.bfloat16
    )
    error = (mixed.attributions - full.attributions).flatten(1).norm(
        dim=1
    ) / full.attributions.flatten(1).norm(dim=1)
    assert float(error.median()) < 0.02
    assert float(error.max()) < 0.1


def test_mixed_precision_rejects_other_dtypes():
    with pytest.raises(ValueError, match="mixed_precision"):
        IntegratedGradients(nn.Linear(2, 2), mixed_precision=torch.float64)


# -- devices ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_device_matches_the_float64_reference(device, dtype):
    """On CUDA this runs the Triton path/reduce kernels inside IG."""
    model = make_model()
    x = torch.rand(5, 2, 5, 5, generator=torch.Generator().manual_seed(8))
    target = torch.tensor([0, 1, 2, 3, 0])
    expected = brute_force_ig(
        model, x.to(dtype).double(), torch.zeros(1, 2, 5, 5), target, "gausslegendre", 16
    )
    got = integrated_gradients(
        model.to(device, dtype), x.to(device, dtype), target=target.to(device), n_steps=16
    )
    assert got.attributions.device.type == device.type and got.attributions.dtype == dtype
    rtol = 1e-5 if dtype == torch.float32 else 4 * TOLERANCES[torch.bfloat16][0]
    assert rel_err(got.attributions.double().cpu(), expected) <= rtol


# -- memory -----------------------------------------------------------------------


class _SmallMemoryModel(nn.Module):
    """Raises the allocator's out-of-memory error for batches over ``limit`` rows."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.batch_sizes = inner, limit, []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"tried to run {x.shape[0]} rows")
        return self.inner(x)


def test_auto_chunks_shrink_instead_of_running_out_of_memory():
    inner = make_model(dtype=torch.float64)
    x = torch.rand(6, 2, 5, 5, dtype=torch.float64)
    model = _SmallMemoryModel(inner, limit=40)
    got = integrated_gradients(model, x, target=1, n_steps=30)
    expected = integrated_gradients(inner, x, target=1, n_steps=30, internal_batch_size=None)
    torch.testing.assert_close(got.attributions, expected.attributions, rtol=1e-12, atol=1e-14)
    assert max(model.batch_sizes) > 40 and any(b <= 40 for b in model.batch_sizes)
    # an explicit chunk size is the user's choice: it is not silently shrunk
    with pytest.raises(torch.OutOfMemoryError):
        integrated_gradients(
            _SmallMemoryModel(inner, limit=40), x, target=1, n_steps=30, internal_batch_size=60
        )
