"""torchexplain.captum.IntegratedGradients behaves like captum.attr.IntegratedGradients."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from torchexplain.captum import IntegratedGradients

from .conftest import TOLERANCES

captum_attr = pytest.importorskip("captum.attr")
RTOL = TOLERANCES[torch.float32][0]


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).eval()


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(
    "method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle"]
)
@pytest.mark.parametrize("internal_batch_size", [None, 12])
def test_same_results_and_return_conventions(method, internal_batch_size):
    model = make_model()
    x = torch.rand(5, 6)
    kwargs = dict(
        target=torch.tensor([0, 1, 2, 1, 0]),
        n_steps=24,
        method=method,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    ours, our_delta = IntegratedGradients(model).attribute(x, **kwargs)
    theirs, their_delta = captum_attr.IntegratedGradients(model).attribute(x, **kwargs)
    assert isinstance(ours, torch.Tensor) and ours.shape == x.shape
    assert rel_err(ours, theirs) <= RTOL
    assert our_delta.shape == their_delta.shape == (5,)
    torch.testing.assert_close(our_delta, their_delta.to(our_delta.dtype), rtol=1e-4, atol=1e-5)
    plain = IntegratedGradients(model).attribute(x, target=0)
    assert isinstance(plain, torch.Tensor)


def test_tuple_inputs_return_a_tuple_and_local_mode():
    model = lambda a, b: torch.tanh(a) @ torch.ones(3, 2) + b**2  # noqa: E731
    x = (torch.rand(4, 3), torch.rand(4, 2))
    ours = IntegratedGradients(model, multiply_by_inputs=False).attribute(x, target=1, n_steps=10)
    theirs = captum_attr.IntegratedGradients(model, multiply_by_inputs=False).attribute(
        x, target=1, n_steps=10
    )
    assert isinstance(ours, tuple) and len(ours) == 2
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= RTOL


def test_attribution_api():
    model = make_model()
    ours, theirs = IntegratedGradients(model), captum_attr.IntegratedGradients(model)
    assert ours.forward_func is model
    assert ours.multiplies_by_inputs is True
    assert IntegratedGradients(model, multiply_by_inputs=False).multiplies_by_inputs is False
    assert ours.has_convergence_delta() is theirs.has_convergence_delta() is True
    assert ours.get_name() == theirs.get_name() == "Integrated Gradients"
    with pytest.raises(NotImplementedError):
        ours.attribute_future()
    x = torch.rand(3, 6)
    attributions = ours.attribute(x, target=2)
    torch.testing.assert_close(
        ours.compute_convergence_delta(attributions, torch.zeros_like(x), x, target=2),
        theirs.compute_convergence_delta(attributions, torch.zeros_like(x), x, target=2),
    )
    assert not issubclass(IntegratedGradients, captum_attr.Attribution)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_inside_noise_tunnel(nt_type):
    model = make_model()
    x = torch.rand(3, 6)
    results = []
    for ig in (IntegratedGradients(model), captum_attr.IntegratedGradients(model)):
        torch.manual_seed(7)
        results.append(
            captum_attr.NoiseTunnel(ig).attribute(
                x,
                nt_type=nt_type,
                nt_samples=5,
                stdevs=0.05,
                target=1,
                n_steps=16,
                return_convergence_delta=True,
            )
        )
    (ours, our_delta), (theirs, their_delta) = results
    assert rel_err(ours, theirs) <= 10 * RTOL  # squares and variances amplify rounding
    assert our_delta.shape == their_delta.shape


def test_trapezoid_is_corrected():
    model = make_model()
    x = torch.rand(4, 6)
    ours = IntegratedGradients(model).attribute(x, target=0, method="riemann_trapezoid", n_steps=10)
    theirs = captum_attr.IntegratedGradients(model).attribute(
        x, target=0, method="riemann_trapezoid", n_steps=10
    )
    assert rel_err(ours, theirs * 10 / 9) <= RTOL


def test_module_does_not_import_captum():
    import importlib
    import subprocess

    code = "import sys, torchexplain.captum; print('captum' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    importlib.import_module("torchexplain.captum")


# -- targets as Captum users write them ---------------------------------------------

captum_models = pytest.importorskip("captum.testing.helpers.basic_models")


def multidim_model():
    """Captum's own test model; with ``multidim_output=True`` it returns (B, 2, 2, 2)."""
    return captum_models.BasicModel_MultiLayer()


@pytest.mark.parametrize(
    "target",
    [
        (1, 0, 0),
        [(1, 0, 0), (0, 1, 1), (1, 1, 1), (0, 0, 0)],
        [(0, 1, 1), (0, 1, 1), (1, 1, 1), (0, 1, 1)],
    ],
    ids=["one-tuple", "per-example-tuples", "sensitivity-test-tuples"],
)
@pytest.mark.parametrize("internal_batch_size", [None, 7])
def test_tuple_targets_index_outputs_of_more_dimensions_as_captum(target, internal_batch_size):
    model = multidim_model()
    x = torch.arange(1.0, 13.0).view(4, 3) / 4
    kwargs = dict(
        target=target,
        additional_forward_args=(None, True),
        n_steps=20,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    ours, our_delta = IntegratedGradients(model).attribute(x, **kwargs)
    theirs, their_delta = captum_attr.IntegratedGradients(model).attribute(x, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=1e-5)
    torch.testing.assert_close(our_delta, their_delta.to(our_delta.dtype), rtol=1e-4, atol=1e-4)
    # and the library records the index tuples it explained, (B, 3)
    from torchexplain import integrated_gradients

    exp = integrated_gradients(
        model, x, target=target, additional_forward_args=(None, True), n_steps=20
    )
    expected = torch.tensor(
        [list(target)] * 4 if isinstance(target, tuple) else [list(t) for t in target]
    )
    assert torch.equal(exp.target, expected)
    torch.testing.assert_close(exp.attributions, ours)


def test_int_target_on_an_output_with_one_value_per_example_as_captum():
    # (B, 1, 1, 1) output: Captum's output[:, 0] leaves one value per example.
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 1), nn.Tanh(), nn.Unflatten(1, (1, 1, 1)))
    x = torch.rand(3, 5)
    for target in (0, torch.tensor(0), None):
        ours = IntegratedGradients(model).attribute(x, target=target, n_steps=16)
        theirs = captum_attr.IntegratedGradients(model).attribute(x, target=target, n_steps=16)
        assert rel_err(ours, theirs) <= RTOL, target


def test_features_equal_to_the_baseline_and_constant_gradients_are_exact_as_captum():
    # Captum's infidelity test case: between the ReLU kinks the gradient is constant along
    # the path, so attributions are exactly (x - b) * g and the deltas exactly 0 (rows
    # 1-3); row 0 holds a feature equal to its baseline, which must be exactly 0. A float32
    # sum over the steps came out an ulp short (95.99998 for 96, delta -6e-5).
    model = multidim_model()
    x = torch.arange(1.0, 13.0).view(4, 3)
    kwargs = dict(
        baselines=torch.ones(4, 3),
        target=[(0, 1, 1), (0, 1, 1), (1, 1, 1), (0, 1, 1)],
        additional_forward_args=(torch.arange(1, 13).view(4, 3).float(), True),
        return_convergence_delta=True,
    )
    ours, our_delta = IntegratedGradients(model).attribute(x, **kwargs)
    theirs, their_delta = captum_attr.IntegratedGradients(model).attribute(x, **kwargs)
    assert torch.equal(ours[1:], theirs[1:])
    assert torch.equal(ours[1:], torch.tensor([[96.0, 128, 160], [192, 224, 256], [288, 320, 352]]))
    assert torch.equal(our_delta[1:], their_delta[1:]) and not our_delta[1:].any()
    assert ours[0, 0] == theirs[0, 0] == 0.0
    torch.testing.assert_close(ours[0], theirs[0], rtol=RTOL, atol=0)


def test_bad_targets_are_named():
    model = multidim_model()
    x = torch.rand(2, 3)
    call = IntegratedGradients(model).attribute
    with pytest.raises(ValueError, match=r"leaves 2 values of the output \(2, 2, 2, 2\)"):
        call(x, target=(1, 0), additional_forward_args=(None, True))
    with pytest.raises(ValueError, match=r"target index 2 \(position 1\) is out of range"):
        call(x, target=(1, 2, 0), additional_forward_args=(None, True))
    with pytest.raises(ValueError, match="indexes 4 output dimension"):
        call(x, target=(0, 0, 0, 0), additional_forward_args=(None, True))
    with pytest.raises(TypeError, match="tuple target must hold ints"):
        call(x, target=(0, 0.5, 0), additional_forward_args=(None, True))
