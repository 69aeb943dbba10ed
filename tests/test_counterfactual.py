"""Counterfactual search: closed forms on linear models, batch independence, honesty, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchexplain import Counterfactual, Explanation, counterfactual
from torchexplain.counterfactual import median_absolute_deviation

F64 = torch.float64
LOGIT_95 = math.log(0.95 / 0.05)  # sigmoid(z) >= 0.95  <=>  z >= log(19)


class Logistic(nn.Module):
    """Binary logistic regression as a 2-class model: logits (0, w.x + b)."""

    def __init__(self, weights: list[float], bias: float) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.tensor(weights, dtype=F64))
        self.bias = nn.Parameter(torch.tensor(bias, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x @ self.weights + self.bias
        return torch.stack([torch.zeros_like(z), z], dim=1)


def minimal_l1_change(
    x: torch.Tensor, weights: torch.Tensor, bias: float, z_needed: float
) -> float:
    """Smallest L1 move inside [0, 1]^d raising w.x + b to z_needed (a fractional knapsack:
    spend on the features with the largest |w| first, each up to its box edge)."""
    need = z_needed - float(x @ weights + bias)
    cost = 0.0
    for j in torch.argsort(weights.abs(), descending=True).tolist():
        room = float(1 - x[j]) if weights[j] > 0 else float(x[j])
        gain = room * abs(float(weights[j]))
        if gain >= need:
            return cost + need / abs(float(weights[j]))
        cost, need = cost + room, need - gain
    return math.inf


def small_mlp(seed: int = 0, n_in: int = 5, n_classes: int = 3) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(n_in, 8), nn.Tanh(), nn.Linear(8, n_classes)).to(F64)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=F64) * 1.5)
    return model.eval()


def uniform(shape: tuple[int, ...], seed: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=F64)


FAST = dict(max_lam_steps=4, max_iter=300)  # enough rounds to pin the closed forms
LIGHT = dict(max_lam_steps=2, max_iter=200)  # for invariants, where speed matters more


# ----------------------------------------------------------------------------- closed forms


def test_one_free_feature_reaches_the_closed_form_distance():
    # One feature, w = 6, b = -3: the minimal change is x' = (log 19 + 3) / 6 exactly.
    model = Logistic([6.0], -3.0)
    x = torch.tensor([[0.1], [0.2], [0.3], [0.4]], dtype=F64)
    exp = counterfactual(model, x, target_class=1, **FAST)
    optimum = (LOGIT_95 + 3.0) / 6.0 - x[:, 0]
    assert exp.success.all()
    # Never below the optimum (that would be an invalid counterfactual), and the
    # closest valid iterate lies within one small Adam step of the boundary.
    assert (exp.distance >= optimum - 1e-12).all()
    torch.testing.assert_close(exp.distance, optimum, rtol=0.02, atol=0.0)


def test_equal_weights_reach_the_closed_form_distance():
    # With |w_j| all equal and no box edge in the way, every move in the right
    # direction is L1-optimal: the optimum is (log 19 - z0) / |w|.
    weights = [2.0, -2.0, 2.0, -2.0]
    model = Logistic(weights, -0.5)
    x = uniform((5, 4), seed=1, low=0.35, high=0.65)
    exp = counterfactual(model, x, target_class=1, **FAST)
    z0 = x @ model.weights.detach() - 0.5
    optimum = (LOGIT_95 - z0) / 2.0
    assert exp.success.all()
    assert (exp.distance >= optimum - 1e-12).all()
    torch.testing.assert_close(exp.distance, optimum, rtol=0.03, atol=0.0)


def test_unequal_weights_land_near_the_linear_programme_optimum():
    # Adam moves every coordinate at first, so the closest valid iterate carries a
    # little change on features the LP optimum leaves alone: measured 3-15 % above.
    weights = torch.tensor([3.0, -2.0, 1.0, 0.5, -0.25, 0.1], dtype=F64)
    model = Logistic(weights.tolist(), -1.0)
    x = uniform((24, 6), seed=1, high=0.5)
    x = x[(x @ weights - 1.0) < 0][:6]
    exp = counterfactual(model, x, target_class=1)
    optimum = torch.tensor(
        [minimal_l1_change(row, weights, -1.0, LOGIT_95) for row in x], dtype=F64
    )
    assert exp.success.all()
    assert (exp.distance >= optimum - 1e-12).all()
    assert (exp.distance <= 1.2 * optimum).all(), (exp.distance / optimum).tolist()


def test_valid_results_are_what_the_model_says():
    model = small_mlp()
    x = uniform((8, 5), seed=2)
    # Class 2 is out of reach of this model on [0, 1]^5 (p < 1e-3): it must fail honestly.
    for target_class in ("other", 2, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])):
        exp = counterfactual(
            model, x, target_class=target_class, target_proba=0.7, tol=0.1, **LIGHT
        )
        probs = torch.softmax(model(exp.counterfactual), dim=1)
        classes = probs.argmax(1)
        torch.testing.assert_close(exp.cf_class, classes)
        torch.testing.assert_close(exp.cf_proba, probs.max(1).values)
        torch.testing.assert_close(exp.l1_distance, (exp.counterfactual - x).abs().sum(1))
        ok = exp.success
        unreachable = isinstance(target_class, int) and target_class == 2
        assert not ok.any() if unreachable else ok.any()
        assert (classes[ok] == exp.target_class[ok]).all()
        assert (
            (probs[ok].gather(1, exp.target_class[ok, None]).squeeze(1) - 0.7).abs() <= 0.1
        ).all()
        # target is the class explained: the model's prediction at the input
        torch.testing.assert_close(exp.target, model(x).argmax(1))
        torch.testing.assert_close(exp.predictions, model(x).detach())
        if target_class == "other":
            assert (classes[ok] != exp.target[ok]).all()
        # Every returned counterfactual stays inside the feature range.
        assert exp.counterfactual.min() >= 0 and exp.counterfactual.max() <= 1


def test_unreachable_target_is_reported_as_failure():
    # w.x + b <= 1 + 1 - 3 = -1 on [0, 1]^2: class 1 cannot pass 0.27, let alone 0.95.
    model = Logistic([1.0, 1.0], -3.0)
    x = uniform((3, 2), seed=3, high=0.5)
    exp = counterfactual(model, x, target_class=1, **FAST)
    assert not exp.success.any()
    # The closest attempt is returned honestly: its class and probability are the model's.
    probs = torch.softmax(model(exp.counterfactual), dim=1)
    torch.testing.assert_close(exp.cf_proba, probs.max(1).values)
    assert (exp.cf_class == 0).all()
    # The attempt moved towards the target as far as the range allows.
    torch.testing.assert_close(exp.counterfactual, torch.ones_like(x), atol=0.05, rtol=0)


def test_a_feature_range_too_tight_is_a_failure_not_a_fake():
    model = small_mlp()
    x = uniform((4, 5), seed=4, low=0.4, high=0.6)
    exp = counterfactual(
        model,
        x,
        feature_range=(x.min().item(), x.max().item()),
        target_proba=1.0,
        tol=0.01,
        **LIGHT,
    )
    probs = torch.softmax(model(exp.counterfactual), dim=1)
    valid = (probs.argmax(1) != exp.target) & (probs.max(1).values >= 0.99)
    assert torch.equal(exp.success, valid)


def test_same_target_already_satisfied_costs_nothing():
    model = Logistic([4.0], 0.0)
    x = torch.tensor([[0.9]], dtype=F64)  # sigmoid(3.6) = 0.973: already class 1 at >= 0.95
    exp = counterfactual(model, x, target_class="same", **LIGHT)
    assert exp.success.all()
    assert exp.distance.item() == 0.0
    torch.testing.assert_close(exp.counterfactual, x)


def test_probabilities_output_matches_logits_output():
    model = small_mlp()
    x = uniform((4, 5), seed=5)
    from_logits = counterfactual(model, x, target_proba=0.8, tol=0.1, **LIGHT)

    def as_probabilities(inputs: torch.Tensor) -> torch.Tensor:
        logits = model(inputs)
        exp_logits = (logits - logits.amax(1, keepdim=True)).exp()
        return exp_logits / exp_logits.sum(1, keepdim=True)

    from_probs = counterfactual(
        as_probabilities, x, target_proba=0.8, tol=0.1, model_output="probabilities", **LIGHT
    )
    assert torch.equal(from_logits.success, from_probs.success)
    torch.testing.assert_close(
        from_logits.counterfactual, from_probs.counterfactual, rtol=1e-6, atol=1e-8
    )


def test_mad_scaling_weights_the_distance():
    x_train = uniform((50, 3), seed=6)
    x_train[:, 2] = 0.5  # a feature that never varies: floored at eps
    mad = median_absolute_deviation(x_train, eps=0.01)
    # Brute force: torch's median is the lower middle value for an even count.
    for j in range(3):
        column = x_train[:, j].sort().values
        median = column[(len(column) - 1) // 2]
        deviations = (x_train[:, j] - median).abs().sort().values
        assert mad[j].item() == pytest.approx(max(deviations[(len(column) - 1) // 2].item(), 0.01))
    # z = 2 * sum(x) - 3 at x = 0.3 needs sum(x) to rise by 1.77 to reach p = 0.95.
    model = Logistic([2.0, 2.0, 2.0, 2.0], -3.0)
    x_train4 = torch.cat([x_train, uniform((50, 1), seed=7)], dim=1)
    mad4 = median_absolute_deviation(x_train4, eps=0.01)
    x = torch.full((2, 4), 0.3, dtype=F64)
    exp = Counterfactual(model, target_class=1, **FAST).fit(x_train4).explain(x)
    torch.testing.assert_close(exp.distance, ((exp.counterfactual - x).abs() / mad4).sum(1))
    assert exp.success.all()
    # Features 0, 1 and 3 can supply the change (2.1 > 1.77) at ~4 per unit, so the
    # frozen feature, at 100 per unit, is left (nearly) alone.
    assert (exp.counterfactual[:, 2] - 0.3).abs().max() < 0.02


# ----------------------------------------------------------------------------- invariants


def test_batch_equals_each_instance_alone():
    model = small_mlp(seed=7)
    x = uniform((4, 5), seed=8)
    targets = torch.tensor([0, 1, 2, 1])
    settings = dict(target_class=targets, target_proba=0.8, tol=0.05, **LIGHT)
    batched = counterfactual(model, x, **settings)
    for i in range(x.shape[0]):
        alone = counterfactual(
            model, x[i : i + 1], **{**settings, "target_class": targets[i : i + 1]}
        )
        for key in ("success", "cf_class", "n_iter", "target", "target_class"):
            assert torch.equal(batched.data[key][i : i + 1], alone.data[key]), key
        for key in ("counterfactual", "distance", "lam", "cf_proba"):
            torch.testing.assert_close(
                batched.data[key][i : i + 1], alone.data[key], rtol=1e-9, atol=1e-12
            )


def test_chunking_changes_nothing():
    model = small_mlp(seed=9)
    x = uniform((5, 5), seed=10)
    whole = counterfactual(model, x, target_proba=0.8, tol=0.1, **LIGHT)
    chunked = counterfactual(model, x, target_proba=0.8, tol=0.1, internal_batch_size=2, **LIGHT)
    for key, value in whole.data.items():
        torch.testing.assert_close(chunked.data[key], value, rtol=1e-9, atol=1e-12)


def test_deterministic_and_class_agrees_with_function():
    model = small_mlp(seed=11)
    x = uniform((3, 5), seed=12)
    settings = dict(target_proba=0.9, tol=0.05, lam_init=0.05, **LIGHT)
    first = counterfactual(model, x, **settings)
    again = counterfactual(model, x, **settings)
    from_class = Counterfactual(model, **settings).explain(x)
    assert isinstance(from_class, Explanation) and from_class.meta["name"] == "Counterfactual"
    for key, value in first.data.items():
        assert torch.equal(again.data[key], value), key
        assert torch.equal(from_class.data[key], value), key
    assert Explanation.from_json(first.to_json()).data.keys() == first.data.keys()


def test_model_left_as_found():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 3)).to(
        F64
    )
    model.train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    model[3].bias.requires_grad_(False)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    x = uniform((3, 4), seed=13)
    counterfactual(model, x, target_proba=0.6, tol=0.2, max_lam_steps=2, max_iter=60)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert model[0].bias.grad is None
    assert model[0].weight.requires_grad and not model[3].bias.requires_grad
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    assert len(model._forward_hooks) == 1 and calls  # the user's hook is kept (and was called)


def test_on_device_matches_cpu(device):
    model = small_mlp(seed=14)
    x = uniform((4, 5), seed=15)
    on_cpu = counterfactual(model, x, target_proba=0.8, tol=0.1, **LIGHT)
    on_device = counterfactual(model.to(device), x.to(device), target_proba=0.8, tol=0.1, **LIGHT)
    assert torch.equal(on_device.success.cpu(), on_cpu.success)
    torch.testing.assert_close(
        on_device.counterfactual.cpu(), on_cpu.counterfactual, rtol=1e-6, atol=1e-8
    )


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target_proba": 1.5}, ValueError, "target_proba"),
        ({"target_proba": -0.1}, ValueError, "target_proba"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"lam_init": 0.0}, ValueError, "lam_init"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"max_lam_steps": 2.5}, TypeError, "max_lam_steps must be an int"),
        ({"target_proba": "high"}, TypeError, "target_proba must be a number"),
        ({"early_stop": 0}, ValueError, "early_stop"),
        ({"internal_batch_size": 0}, ValueError, "internal_batch_size"),
        ({"internal_batch_size": "big"}, ValueError, "internal_batch_size"),
        ({"internal_batch_size": 2.0}, TypeError, "internal_batch_size"),
        ({"model_output": "scores"}, ValueError, "model_output"),
        ({"target_class": "another"}, ValueError, "target_class"),
        ({"target_class": 3}, ValueError, "out of range"),
        ({"target_class": -1}, ValueError, "target_class"),
        ({"target_class": 1.0}, TypeError, "target_class"),
        ({"target_class": torch.tensor([0, 1])}, ValueError, r"\(B,\)"),
        ({"target_class": torch.tensor([0.0, 1.0, 2.0])}, TypeError, "integers"),
        ({"feature_range": (0.5, 1.0)}, ValueError, "excludes the input"),
        ({"feature_range": (1.0, 0.0)}, ValueError, "low must be <= high"),
        ({"feature_range": (0.0,)}, ValueError, "pair"),
        ({"feature_range": (torch.zeros(4), 1.0)}, ValueError, "broadcast"),
        ({"model_output": "probabilities"}, ValueError, "not probabilities"),
        ({"train_data": torch.ones(4)}, ValueError, r"train_data must be shaped \(N, \.\.\.\)"),
        (
            {"train_data": torch.ones(6, 4, dtype=F64)},
            ValueError,
            "mad must have the feature shape",
        ),
        (
            {"train_data": torch.ones(6, 5, dtype=torch.long)},
            TypeError,
            "train_data must be a floating-point",
        ),
    ],
)
def test_bad_input_is_named(kwargs, error, match):
    model = small_mlp()
    x = uniform((3, 5), seed=16, low=0.2, high=0.8)
    x[0, 0] = 0.1
    with pytest.raises(error, match=match):
        counterfactual(model, x, **{"max_lam_steps": 1, "max_iter": 5, **kwargs})


@pytest.mark.parametrize(
    ("model", "x", "error", "match"),
    [
        (lambda x: x.sum(1), torch.rand(2, 5, dtype=F64), ValueError, r"\(B, classes\)"),
        (lambda x: x[:1, :3], torch.rand(2, 5, dtype=F64), ValueError, r"\(B, classes\)"),
        (lambda x: x[:, :1], torch.rand(2, 5, dtype=F64), ValueError, "at least 2 classes"),
        (small_mlp(), [[0.5] * 5], TypeError, "torch.Tensor"),
        (small_mlp(), torch.ones(2, 5, dtype=torch.long), TypeError, "floating-point"),
        (small_mlp(), torch.ones(5, dtype=F64), ValueError, r"\(B, \.\.\.\)"),
        (small_mlp(), torch.full((2, 5), math.nan, dtype=F64), ValueError, "NaN"),
    ],
)
def test_bad_model_or_input_is_named(model, x, error, match):
    with pytest.raises(error, match=match):
        counterfactual(model, x, max_lam_steps=1, max_iter=5)


# ----------------------------------------------------------------------------- the lambda schedule


def reference_search(
    model, x, target, *, lam_init, max_iter, max_lam_steps, early_stop, lr, decay, target_proba, tol
):
    """One instance, plain Python control flow: the schedule the batched search must follow.

    A sweep over lam_init / 10**i (i < 10), max_iter // 10 Adam steps each, carrying
    the iterate over; the bracket from the sweep's counts of valid iterates; then
    bisection rounds from x of up to max_iter steps, ended early by a run of
    early_stop valid (or invalid) iterates, a round finding when >= 5 were valid.
    Every evaluated iterate is a candidate; the closest valid one is returned.
    """
    x = x.clone()
    x_cf = x.clone()
    best, best_d, total = None, math.inf, 0

    def run_round(x_cf, lam, steps, stop_early):
        nonlocal best, best_d, total
        m = torch.zeros_like(x_cf)
        v = torch.zeros_like(x_cf)
        n_valid = run_valid = run_invalid = 0
        for t in range(1, steps + 1):
            xr = x_cf.clone().requires_grad_(True)
            probs = model(xr[None]).softmax(1)[0]
            loss = (probs[target] - target_proba) ** 2 + lam * (xr - x).abs().sum()
            (grad,) = torch.autograd.grad(loss, xr)
            p = probs.detach()
            valid = abs(float(p[target]) - target_proba) <= tol and int(p.argmax()) == target
            d = float((x_cf - x).abs().sum())
            if valid and d < best_d:
                best, best_d = x_cf.clone(), d
            n_valid += valid
            run_valid, run_invalid = (run_valid + 1, 0) if valid else (0, run_invalid + 1)
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad * grad
            rate = lr * max(0.0, 1 - (t - 1) / max_iter) if decay else lr
            step = rate * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
            x_cf = (x_cf - step).clamp(0.0, 1.0)
            total += 1
            if stop_early and (run_valid >= early_stop or run_invalid >= early_stop):
                break
        return x_cf, n_valid

    lams = [lam_init / 10**i for i in range(10)]
    counts = []
    for lam in lams:
        x_cf, n_valid = run_round(x_cf, lam, max_iter // 10, stop_early=False)
        counts.append(n_valid)
    seen = [i for i, c in enumerate(counts) if c > 0]
    if not seen:
        low, high = 0.0, lams[-1]
    else:
        lb = seen[1] if len(seen) >= 2 else seen[0]
        unseen_above = [i for i in range(lb) if counts[i] == 0]
        low = lams[lb]
        high = lams[unseen_above[-1]] if unseen_above else (lams[0] if lb > 0 else 10 * lams[0])
    lam = (low + high) / 2
    x_cf = x.clone()
    for _ in range(max_lam_steps):
        x_cf, n_valid = run_round(x_cf, lam, max_iter, stop_early=True)
        if n_valid >= 5:
            low = max(low, lam)
            lam = (low + high) / 2
        else:
            high = min(high, lam)
            lam = (low + high) / 2 if low > 0 else lam / 10
    return best, best_d, total


@pytest.mark.parametrize("decay", [True, False])
def test_schedule_matches_a_one_instance_reference_loop(decay):
    model = small_mlp(seed=21)
    x = uniform((3, 5), seed=22)
    targets = torch.tensor([0, 1, 2])
    settings = dict(
        lam_init=0.1, max_iter=120, max_lam_steps=3, early_stop=15, target_proba=0.7, tol=0.1
    )
    exp = counterfactual(
        model, x, target_class=targets, decay=decay, learning_rate_init=0.1, **settings
    )
    for i in range(x.shape[0]):
        best, best_d, total = reference_search(
            model, x[i], int(targets[i]), lr=0.1, decay=decay, **settings
        )
        assert int(exp.n_iter[i]) == total
        assert bool(exp.success[i]) == (best is not None)
        if best is not None:
            torch.testing.assert_close(exp.counterfactual[i], best, rtol=1e-9, atol=1e-12)
            assert exp.l1_distance[i].item() == pytest.approx(best_d, rel=1e-9)
