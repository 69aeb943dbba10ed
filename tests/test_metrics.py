"""Explanation-quality metrics against Captum, brute-force loops and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import torchexplain
from torchexplain import metrics

captum_metrics = pytest.importorskip("captum.metrics")
captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).eval()


def _global_noise(inputs):
    noise = torch.randn_like(inputs) * 0.1
    return noise, inputs - noise


def _global_noise_with_baselines(inputs, baselines):
    noise = torch.randn_like(inputs) * 0.1 * (inputs - baselines)
    return noise, inputs - noise


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("max_examples_per_batch", [None, 8, 11])
def test_infidelity_equals_captum(net, normalize, max_examples_per_batch):
    x = torch.randn(4, 6)
    target = torch.tensor([0, 2, 1, 0])
    attributions = captum_attr.IntegratedGradients(net).attribute(x, target=target)
    kwargs = dict(
        target=target,
        n_perturb_samples=7,
        max_examples_per_batch=max_examples_per_batch,
        normalize=normalize,
    )
    torch.manual_seed(5)
    theirs = captum_metrics.infidelity(net, _global_noise, x, attributions, **kwargs)
    torch.manual_seed(5)
    ours = metrics.infidelity(net, _global_noise, x, attributions, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_infidelity_with_tuples_baselines_and_extra_arguments():
    class Two(nn.Module):
        def forward(self, a, b, scale):
            return (a.sum(1, keepdim=True) * scale + (b**2).sum(1, keepdim=True)).repeat(1, 2)

    model = Two()
    a, b = torch.randn(3, 4), torch.randn(3, 2)
    scale = torch.tensor([[1.0], [2.0], [3.0]])
    attributions = (torch.randn(3, 4), torch.randn(3, 2))
    baselines = (torch.zeros(3, 4), torch.ones(3, 2))

    def perturb(inputs, base):
        noise = tuple(torch.randn_like(i) * 0.2 for i in inputs)
        return noise, tuple(i - n for i, n in zip(inputs, noise))

    kwargs = dict(
        baselines=baselines, additional_forward_args=(scale,), target=0, n_perturb_samples=5
    )
    torch.manual_seed(1)
    theirs = captum_metrics.infidelity(model, perturb, (a, b), attributions, **kwargs)
    torch.manual_seed(1)
    ours = metrics.infidelity(model, perturb, (a, b), attributions, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_infidelity_is_zero_for_a_linear_model_and_its_exact_attributions():
    """For f(x) = w.x and perturbations I: f(x) - f(x - I) = w.I, so a = w gives 0 exactly."""
    w = torch.tensor([[1.5, -2.0, 0.5]], dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    model.weight.data = w
    x = torch.randn(5, 3, dtype=torch.float64)
    values = metrics.infidelity(model, metrics.noise_perturbation(0.3), x, w.expand(5, 3), target=0)
    assert values.abs().max() < 1e-25
    state = torch.random.get_rng_state()
    metrics.infidelity(model, metrics.noise_perturbation(0.3), x, w.expand(5, 3) * 2, target=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the seeded perturbation leaves it


def test_sensitivity_max_equals_captum(net):
    from captum.metrics._core.sensitivity import default_perturb_func

    x = torch.randn(5, 6)
    ig = captum_attr.IntegratedGradients(net)
    for mepb in (None, 10):
        torch.manual_seed(3)
        theirs = captum_metrics.sensitivity_max(
            ig.attribute,
            x,
            perturb_func=default_perturb_func,
            target=1,
            n_perturb_samples=6,
            max_examples_per_batch=mepb,
        )
        torch.manual_seed(3)
        ours = metrics.sensitivity_max(
            ig.attribute,
            x,
            perturb_func=default_perturb_func,
            target=1,
            n_perturb_samples=6,
            max_examples_per_batch=mepb,
        )
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    # per-example targets are expanded with the perturbations
    target = torch.tensor([0, 1, 2, 0, 1])
    torch.manual_seed(4)
    theirs = captum_metrics.sensitivity_max(
        ig.attribute, x, perturb_func=default_perturb_func, target=target
    )
    torch.manual_seed(4)
    ours = metrics.sensitivity_max(
        ig.attribute, x, perturb_func=default_perturb_func, target=target
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_sensitivity_of_a_linear_model_s_gradients_is_zero(net):
    linear = nn.Linear(6, 2)
    saliency = captum_attr.Saliency(linear)
    values = metrics.sensitivity_max(
        lambda x, **kw: saliency.attribute(x, abs=False, **kw), torch.randn(3, 6), target=0
    )
    assert values.abs().max() == 0


def _brute_curve(model, x, attributions, ids, n_features, counts, baseline, mode, descending):
    scores = []
    for b in range(x.shape[0]):
        relevance = np.zeros(n_features)
        np.add.at(
            relevance, ids[b].reshape(-1).numpy(), attributions[b].reshape(-1).double().numpy()
        )
        order = sorted(
            range(n_features), key=lambda f: (-relevance[f] if descending else relevance[f], f)
        )
        row = []
        for count in counts:
            chosen = set(order[:count])
            changed = torch.tensor([int(i) in chosen for i in ids[b].reshape(-1)]).view(x[b].shape)
            if mode == "insertion":
                changed = ~changed
            rows = torch.where(changed, torch.full_like(x[b], baseline), x[b])
            with torch.no_grad():
                out = model(rows[None])
            row.append(float(out[0, int(model(x[b : b + 1]).argmax())]))
        scores.append(row)
    return np.array(scores)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("order", ["most_relevant_first", "least_relevant_first"])
def test_curves_equal_a_brute_force_loop_on_superpixels(mode, order):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 6, 4), nn.Softmax(dim=1)).eval()
    x = torch.rand(3, 2, 6, 6)
    attributions = torch.randn(3, 2, 6, 6)
    mask = (torch.arange(36).view(6, 6) // 5).expand(3, 2, 6, 6)  # 8 superpixels per image
    curve = metrics.deletion_curve(
        model, x, attributions, feature_mask=mask, n_steps=5, order=order, mode=mode, baselines=0.25
    )
    counts = [round(s * 8 / 5) for s in range(6)]
    expected = _brute_curve(
        model, x, attributions, mask, 8, counts, 0.25, mode, order == "most_relevant_first"
    )
    np.testing.assert_allclose(curve.scores.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(curve.fractions.numpy(), np.array(counts) / 8)
    np.testing.assert_allclose(
        curve.auc.numpy(), np.trapezoid(expected, np.array(counts) / 8, axis=1), rtol=1e-6
    )


def test_curves_on_tabular_columns_step_through_every_feature(net):
    x = torch.randn(4, 6)
    attributions = torch.randn(4, 6)
    curve = metrics.insertion_curve(net, x, attributions, n_steps=50, model_output="logits")
    assert curve.scores.shape == (4, 7)
    probabilities = torch.softmax(net(x), 1)
    # all features inserted: the input's own probability of its prediction
    torch.testing.assert_close(
        curve.scores[:, -1], probabilities.max(1).values.double(), rtol=1e-6, atol=1e-7
    )
    with pytest.raises(ValueError, match="attributions must be shaped like inputs"):
        metrics.deletion_curve(net, x, attributions[:, :5])


def test_spearman_equals_scipy():
    from scipy.stats import spearmanr

    a = torch.randn(3, 50)
    b = a + torch.randn(3, 50)
    b[0, :10] = 1.0  # ties
    ours = metrics.spearman(a, b)
    for i in range(3):
        assert float(ours[i]) == pytest.approx(
            spearmanr(a[i].numpy(), b[i].numpy()).statistic, abs=1e-12
        )


def test_randomisation_check_on_a_linear_model_has_a_closed_form():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x = torch.randn(4, 5)

    def explain(m, inputs):  # IG on a linear model with a zero baseline: x * w[target]
        return (
            torchexplain.IntegratedGradients(m)
            .explain(inputs, target=1, baselines=0.0)
            .attributions
        )

    before = {k: v.clone() for k, v in model.state_dict().items()}
    check = metrics.randomisation_check(explain, model, x, seed=7)
    assert all(
        torch.equal(before[k], v) for k, v in model.state_dict().items()
    )  # a copy was randomised
    assert check.layers == [""]
    reference = nn.Linear(5, 3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        reference.reset_parameters()
    original = x * model.weight[1].detach()
    randomised = x * reference.weight[1].detach()
    from scipy.stats import spearmanr

    for b in range(4):
        expected = spearmanr(original[b].numpy(), randomised[b].numpy()).statistic
        assert float(check.spearman[0, b]) == pytest.approx(expected, abs=1e-5)


def test_randomisation_separates_gradients_from_gradient_times_input_on_a_cnn():
    """Adebayo et al.'s finding, on the MNIST CNN: plain gradients decorrelate as the layers are
    randomised, while IG (a gradient times the input) keeps the digit's shape: on MNIST's zero
    background its attributions are 0 whatever the weights."""
    from torchexplain.datasets import load_mnist
    from torchexplain.zoo import pretrained_mnist_cnn

    model, _ = pretrained_mnist_cnn()
    x = load_mnist("test").images[:4]
    classes = model(x).argmax(1)

    def gradients(m, inputs):
        inputs = inputs.clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(m(inputs).gather(1, classes[:, None]).sum(), inputs)
        return grad

    def ig(m, inputs):
        return (
            torchexplain.IntegratedGradients(m, n_steps=16)
            .explain(inputs, target=classes)
            .attributions
        )

    plain = metrics.randomisation_check(gradients, model, x)
    names = [
        name for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))
    ]
    assert plain.layers == names[::-1]
    assert plain.spearman.shape == plain.ssim.shape == (len(names), 4)
    assert float(plain.ssim[-1].mean()) < 0.1 < float(plain.ssim[0].mean())
    assert float(plain.spearman_abs[-1].mean()) < float(plain.spearman_abs[0].mean()) - 0.3
    times_input = metrics.randomisation_check(ig, model, x)
    assert float(times_input.spearman_abs[-1].mean()) > 0.9
    with pytest.raises(ValueError, match="layers must name modules"):
        metrics.randomisation_check(ig, model, x, layers=["nope"])


def test_additivity_error_of_kernel_shap_is_float_precision(net):
    probabilities = nn.Sequential(net, nn.Softmax(dim=1))
    explainer = torchexplain.KernelShap(probabilities, seed=0).fit(torch.randn(10, 6))
    explanation = explainer.explain(torch.randn(3, 6))
    assert metrics.additivity_error(explanation).max() < 1e-6
    logit = torchexplain.KernelShap(probabilities, link="logit", seed=0).fit(torch.randn(10, 6))
    assert metrics.additivity_error(logit.explain(torch.randn(3, 6))).max() < 1e-5
    explanation.data["shap_values"] = explanation.data["shap_values"] * 2
    assert metrics.additivity_error(explanation).max() > 1e-3


def test_anchor_precision_on_fresh_samples_agrees_with_the_search():
    from torchexplain.datasets import load_census
    from torchexplain.zoo import Probabilities, pretrained_census_mlp

    data = load_census()
    model = Probabilities(pretrained_census_mlp()[0]).eval()
    rows = data.X_test[:24]
    explainer = torchexplain.AnchorTabular(
        model, data.feature_names, data.categorical_names, seed=0
    ).fit(data.X_train)
    explanation = explainer.explain(rows)
    fresh = metrics.anchor_precision(explainer, rows, explanation, n_samples=500)
    success = explanation.success.bool()
    assert torch.equal(torch.isnan(fresh), ~success)
    # fresh samples of the same sampler: the search's estimate holds on average
    assert abs(float(fresh[success].mean()) - float(explanation.precision[success].mean())) < 0.05
    again = metrics.anchor_precision(explainer, rows, explanation, n_samples=500)
    assert torch.equal(torch.nan_to_num(again), torch.nan_to_num(fresh))
    with pytest.raises(TypeError, match="AnchorTabular and AnchorText"):
        metrics.anchor_precision(torchexplain.KernelShap(model), rows, explanation)


def test_anchor_precision_of_a_text_anchor_that_decides_the_model_is_one():
    def keyword(texts):
        hits = np.array([float("good" in t.split()) for t in texts])
        return np.stack([1 - hits, hits], 1)

    texts = ["a good film with a dull plot", "the good cast saves it", "dull and long"]
    explainer = torchexplain.AnchorText(keyword, sampling_strategy="unknown", seed=0)
    explanation = explainer.explain(texts)
    fresh = metrics.anchor_precision(explainer, texts, explanation, n_samples=300, seed=5)
    for i, anchor in enumerate(explanation.anchor):
        if "good" in anchor:
            assert float(fresh[i]) == 1.0
    assert explanation.anchor[0] == ["good"] and explanation.anchor[1] == ["good"]
