"""CounterfactualProto: shrinkage and FISTA steps by hand, the prototype pull in closed form,
the plain-gradient variant against the elastic-net loss, batch independence, honesty, errors."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from torch import nn

from torchexplain import CounterfactualProto, Explanation, counterfactual_proto, load_explainer
from torchexplain.counterfactual_proto import shrink

from .test_counterfactual import small_mlp, uniform

F64 = torch.float64


def linear(weight: list[list[float]], bias: list[float]) -> nn.Module:
    model = nn.Linear(len(weight[0]), len(weight)).to(F64)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weight, dtype=F64))
        model.bias.copy_(torch.tensor(bias, dtype=F64))
    return model.eval()


def hinge_by_hand(probs: torch.Tensor, orig: int, kappa: float) -> torch.Tensor:
    others = torch.cat([probs[:orig], probs[orig + 1 :]])
    return torch.clamp(probs[orig] - others.max() + kappa, min=0.0)


def pick_by_hand(model, x, candidates, orig, beta, kappa=0.0):
    """The search's choice among iterates: the valid one with the smallest elastic-net
    distance, else the one with the smallest margin p_orig + kappa - max_other p."""
    best, best_dist, best_margin = None, math.inf, math.inf
    found = False
    for cand in candidates:
        p = model(cand[None]).softmax(1)[0].detach()
        boosted = p.clone()
        boosted[orig] += kappa
        valid = int(boosted.argmax()) != orig
        d = cand - x
        dist = float(d.square().sum() + beta * d.abs().sum())
        margin = float(p[orig] + kappa - torch.cat([p[:orig], p[orig + 1 :]]).max())
        if valid and (not found or dist < best_dist):
            best, best_dist, found = cand, dist, True
        elif not valid and not found and margin < best_margin:
            best, best_margin = cand, margin
    return best, found


# ----------------------------------------------------------------------------- steps by hand


def test_shrinkage_step_by_hand():
    x = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], dtype=F64)
    z = torch.tensor([0.8, 0.55, 0.45, 0.2, 1.3, -0.9], dtype=F64)
    low, high = torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64)
    # beta = 0.1: 0.8 -> 0.7; within 0.1 of x -> x; 0.2 -> 0.3; 1.3 -> 1.2 -> box 1.0; -0.9 -> -0.8 -> box 0.0
    expected = torch.tensor([0.7, 0.5, 0.5, 0.3, 1.0, 0.0], dtype=F64)
    torch.testing.assert_close(shrink(z, x, 0.1, low, high), expected, rtol=0, atol=1e-15)
    assert torch.equal(shrink(z, x, 0.0, low, high), z.clamp(0, 1))


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_fista_iterates_by_hand(iterations):
    model = linear([[2.0, -1.0, 0.5], [-1.0, 1.5, 0.0], [0.0, 0.5, -2.0]], [0.3, 0.0, -0.2])
    x = torch.tensor([0.6, 0.4, 0.3], dtype=F64)
    orig = int(model(x[None]).argmax())
    beta, lr, c = 0.01, 0.5, 30.0
    settings = dict(
        c_init=c,
        c_steps=1,
        max_iterations=iterations,
        learning_rate_init=lr,
        beta=beta,
        feature_range=(0.0, 1.0),
    )
    exp = counterfactual_proto(model, x[None], **settings)

    low, high = torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64)
    x_k, y_k, candidates = x.clone(), x.clone(), []
    for k in range(iterations):
        y = y_k.clone().requires_grad_(True)
        p = model(y[None]).softmax(1)[0]
        loss = c * hinge_by_hand(p, orig, 0.0) + (y - x).square().sum()
        (grad,) = torch.autograd.grad(loss, y)
        step = lr * math.sqrt(1 - k / iterations)
        x_next = shrink(y.detach() - step * grad, x, beta, low, high)
        y_k = (x_next + (k + 1) / (k + 4) * (x_next - x_k)).clamp(0, 1)
        x_k = x_next
        candidates.append(x_next)
    expected, found = pick_by_hand(model, x, candidates, orig, beta)
    assert int(exp.n_iter[0]) == iterations
    assert bool(exp.success[0]) == found
    torch.testing.assert_close(exp.counterfactual[0], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("iterations", [1, 3, 6])
def test_plain_gradient_steps_descend_the_elastic_net_loss(iterations):
    # Without theta and gamma, and with FISTA replaced by plain projected gradient
    # steps, the loss descended is c * hinge + ||d||_2^2 + beta * ||d||_1.
    model = small_mlp(seed=3)
    x = uniform((5,), seed=4, low=0.2, high=0.8)
    orig = int(model(x[None]).argmax())
    beta, lr, c = 0.05, 0.2, 5.0
    exp = counterfactual_proto(
        model,
        x[None],
        optimizer="gradient",
        c_init=c,
        c_steps=1,
        max_iterations=iterations,
        learning_rate_init=lr,
        beta=beta,
        feature_range=(0.0, 1.0),
    )
    x_k, candidates = x.clone(), []
    for k in range(iterations):
        y = x_k.clone().requires_grad_(True)
        d = y - x
        loss = (
            c * hinge_by_hand(model(y[None]).softmax(1)[0], orig, 0.0)
            + d.square().sum()
            + beta * d.abs().sum()
        )
        (grad,) = torch.autograd.grad(loss, y)
        x_k = (x_k - lr * math.sqrt(1 - k / iterations) * grad).clamp(0, 1)
        candidates.append(x_k)
    expected, found = pick_by_hand(model, x, candidates, orig, beta)
    assert bool(exp.success[0]) == found
    torch.testing.assert_close(exp.counterfactual[0], expected, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- prototypes


def three_class_plane() -> tuple[nn.Module, torch.Tensor]:
    """A linear 3-class model on [0, 1]^2 and training points labelled by it."""
    model = linear([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]], [-1.0, -1.0, 3.0])
    train = torch.tensor(
        [[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.25, 0.8], [0.1, 0.1], [0.2, 0.15]], dtype=F64
    )
    return model, train


def test_prototype_term_pulls_to_the_closed_form_minimum():
    # With c = 0 and beta = 0 the loss is ||x' - x||^2 + theta ||x' - p||^2, whose minimum is
    # x' = (x + theta p) / (1 + theta); p is the nearest training point of another class.
    model, train = three_class_plane()
    x = torch.tensor([[0.2, 0.2], [0.7, 0.3], [0.3, 0.6]], dtype=F64)
    labels = model(train).argmax(1)
    orig = model(x).argmax(1)
    theta = 3.0
    exp = counterfactual_proto(
        model,
        x,
        train_data=train,
        use_kdtree=True,
        theta=theta,
        beta=0.0,
        c_init=0.0,
        c_steps=1,
        max_iterations=400,
        learning_rate_init=0.1,
        feature_range=(0.0, 1.0),
    )
    for i in range(x.shape[0]):
        others = (labels != orig[i]).nonzero().flatten()
        nearest = others[(train[others] - x[i]).norm(dim=1).argmin()]
        assert int(exp.proto_class[i]) == int(labels[nearest])
        assert int(exp.n_iter[i]) == 400
    # The search returns its best attempt at flipping the class; the loss's minimiser
    # is where the iterates end, read from the search itself.
    explainer = CounterfactualProto(
        model,
        use_kdtree=True,
        theta=theta,
        beta=0.0,
        c_init=0.0,
        c_steps=1,
        max_iterations=400,
        learning_rate_init=0.1,
        feature_range=(0.0, 1.0),
    ).fit(train)
    last = _last_iterate(explainer, x)
    for i in range(x.shape[0]):
        others = (labels != orig[i]).nonzero().flatten()
        nearest = others[(train[others] - x[i]).norm(dim=1).argmin()]
        torch.testing.assert_close(
            last[i], (x[i] + theta * train[nearest]) / (1 + theta), rtol=0, atol=1e-6
        )


def _last_iterate(explainer: CounterfactualProto, x: torch.Tensor) -> torch.Tensor:
    """Run the search and capture the final iterate of each instance (the loss's minimiser)."""
    module = importlib.import_module("torchexplain.counterfactual_proto")

    captured = {}
    original = module._ProtoSearch.next_round

    def spy(self, rows, x_, state):
        captured.update({int(r): state.adv[r].clone() for r in rows})
        return original(self, rows, x_, state)

    module._ProtoSearch.next_round = spy
    try:
        explainer.explain(x)
    finally:
        module._ProtoSearch.next_round = original
    return torch.stack([captured[i] for i in range(x.shape[0])])


def test_k_nearest_prototypes_against_a_brute_force_choice():
    # Encoder prototypes from the k nearest encodings of each class: the class chosen is
    # the one whose k nearest are closest on average (k_type 'mean') or whose k-th is ('point').
    model = small_mlp(seed=5, n_in=4, n_classes=3)
    encoder = nn.Sequential(nn.Linear(4, 2)).to(F64)
    with torch.no_grad():
        encoder[0].weight.copy_(
            torch.tensor([[1.0, -0.5, 0.3, 0.0], [0.2, 0.7, -1.0, 0.4]], dtype=F64)
        )
        encoder[0].bias.zero_()
    train = uniform((60, 4), seed=6)
    x = uniform((5, 4), seed=7)
    labels = model(train).argmax(1)
    codes = encoder(train).detach()
    for k_type in ("mean", "point"):
        exp = counterfactual_proto(
            model,
            x,
            train_data=train,
            enc_model=encoder,
            theta=1.0,
            k=3,
            k_type=k_type,
            c_steps=1,
            max_iterations=2,
        )
        query = encoder(x).detach()
        orig = model(x).argmax(1)
        for i in range(x.shape[0]):
            scores = {}
            for c in range(3):
                if c == int(orig[i]) or not (labels == c).any():
                    continue
                d = (codes[labels == c] - query[i]).norm(dim=1).sort().values[:3]
                scores[c] = float(d.mean() if k_type == "mean" else d[-1])
            assert int(exp.proto_class[i]) == min(scores, key=scores.get), (k_type, i)


# ----------------------------------------------------------------------------- invariants


def encoder_and_autoencoder(n_in: int = 5) -> tuple[nn.Module, nn.Module]:
    generator = torch.Generator().manual_seed(11)
    enc = nn.Sequential(nn.Linear(n_in, 3), nn.Tanh()).to(F64)
    dec = nn.Sequential(nn.Linear(3, n_in), nn.Sigmoid()).to(F64)
    with torch.no_grad():
        for p in [*enc.parameters(), *dec.parameters()]:
            p.copy_(torch.randn(p.shape, generator=generator, dtype=F64))
    return enc.eval(), nn.Sequential(enc, dec).eval()


@pytest.mark.parametrize("mode", ["kdtree", "encoder"])
def test_batch_equals_each_instance_alone(mode):
    model = small_mlp(seed=4)
    enc, ae = encoder_and_autoencoder()
    x = uniform((4, 5), seed=8)
    train = uniform((40, 5), seed=9)
    extra = (
        {"use_kdtree": True}
        if mode == "kdtree"
        else {"enc_model": enc, "ae_model": ae, "gamma": 0.5}
    )
    explainer = CounterfactualProto(
        model,
        theta=2.0,
        c_init=1.0,
        c_steps=3,
        max_iterations=60,
        learning_rate_init=0.05,
        feature_range=(0.0, 1.0),
        early_stop=20,
        **extra,
    ).fit(train)
    targets = torch.tensor([0, 1, 2, 1])
    for target_class in ("other", targets):
        batched = explainer.explain(x, target_class=target_class)
        assert (batched.proto_class >= 0).all()
        for i in range(x.shape[0]):
            one = target_class if isinstance(target_class, str) else target_class[i : i + 1]
            alone = explainer.explain(x[i : i + 1], target_class=one)
            for key in ("success", "cf_class", "n_iter", "target", "target_class", "proto_class"):
                assert torch.equal(batched.data[key][i : i + 1], alone.data[key]), key
            for key in ("counterfactual", "distance", "c", "cf_proba"):
                torch.testing.assert_close(
                    batched.data[key][i : i + 1], alone.data[key], rtol=1e-9, atol=1e-12
                )
    chunked = (
        CounterfactualProto(
            model,
            theta=2.0,
            c_init=1.0,
            c_steps=3,
            max_iterations=60,
            learning_rate_init=0.05,
            feature_range=(0.0, 1.0),
            early_stop=20,
            internal_batch_size=3,
            **extra,
        )
        .fit(train)
        .explain(x)
    )
    for key, value in explainer.explain(x).data.items():
        torch.testing.assert_close(chunked.data[key], value, rtol=1e-9, atol=1e-12)


def test_results_are_what_the_model_says():
    model = small_mlp(seed=4)  # a model that uses all three classes on [0, 1]^5
    x = uniform((8, 5), seed=13)
    exp = counterfactual_proto(
        model,
        x,
        train_data=uniform((40, 5), seed=14),
        use_kdtree=True,
        theta=1.0,
        c_init=1.0,
        c_steps=4,
        max_iterations=150,
        learning_rate_init=0.05,
        feature_range=(0.0, 1.0),
    )
    assert exp.success.float().mean() >= 0.5
    assert (exp.proto_class >= 0).all() and (exp.proto_class != exp.target).all()
    probs = model(exp.counterfactual).softmax(1).detach()
    torch.testing.assert_close(exp.cf_class, probs.argmax(1))
    torch.testing.assert_close(exp.cf_proba, probs.amax(1))
    orig = model(x).argmax(1)
    assert torch.equal(exp.target, orig)
    assert (exp.cf_class[exp.success] != orig[exp.success]).all()
    assert (exp.target_class[exp.success] == exp.cf_class[exp.success]).all()
    d = exp.counterfactual - x
    torch.testing.assert_close(exp.l1_distance, d.abs().sum(1))
    torch.testing.assert_close(exp.distance, d.square().sum(1) + 0.1 * d.abs().sum(1))
    assert ((exp.counterfactual >= 0) & (exp.counterfactual <= 1)).all()


def test_unreachable_target_is_a_failure_not_a_fake():
    # Class 2 needs x0 + x1 < 0.5 - impossible when the box forbids moving the point down.
    model, _ = three_class_plane()
    x = torch.tensor([[0.9, 0.5]], dtype=F64)
    exp = counterfactual_proto(
        model,
        x,
        target_class=2,
        c_init=1.0,
        c_steps=3,
        max_iterations=100,
        learning_rate_init=0.1,
        feature_range=(torch.tensor([0.85, 0.45], dtype=F64), 1.0),
    )
    assert not bool(exp.success[0])
    assert int(exp.cf_class[0]) != 2
    assert int(exp.target_class[0]) == 2


def test_deterministic_model_left_as_found_and_saved_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 3)).to(
        F64
    )
    model.train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    enc, ae = encoder_and_autoencoder(n_in=4)
    ae.train()
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    x = uniform((3, 4), seed=15)
    settings = dict(
        enc_model=enc,
        ae_model=ae,
        theta=1.0,
        gamma=0.2,
        c_init=1.0,
        c_steps=2,
        max_iterations=30,
        feature_range=(0.0, 1.0),
    )
    explainer = CounterfactualProto(model, **settings).fit(uniform((20, 4), seed=16))
    first = explainer.explain(x)
    assert model.training and ae.training and all(m.training for m in model.modules())
    assert (
        torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
        and model[0].bias.grad is None
    )
    assert all(p.requires_grad for p in [*model.parameters(), *ae.parameters()])
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    again = explainer.explain(x)
    for key, value in first.data.items():
        assert torch.equal(again.data[key], value), key
    assert Explanation.from_json(first.to_json()).data.keys() == first.data.keys()
    explainer.save(tmp_path / "proto")
    with pytest.raises(ValueError, match="enc_model"):
        load_explainer(tmp_path / "proto", model=model)
    loaded = load_explainer(tmp_path / "proto", model=model, enc_model=enc, ae_model=ae)
    for key, value in loaded.explain(x).data.items():
        assert torch.equal(value, first.data[key]), key


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("settings", "fit", "error", "match"),
    [
        ({"gamma": 1.0}, False, ValueError, "ae_model is None"),
        ({"theta": 1.0}, False, ValueError, "no prototypes"),
        ({"theta": 1.0, "use_kdtree": True}, False, ValueError, "call fit"),
        ({}, True, ValueError, "enc_model.*use_kdtree"),
        ({"k": 0}, False, ValueError, "k must be"),
        ({"k_type": "median"}, False, ValueError, "k_type"),
        ({"optimizer": "adam"}, False, ValueError, "optimizer"),
        ({"clip": (1.0, -1.0)}, False, ValueError, "clip"),
        ({"clip": 5.0}, False, TypeError, "clip"),
        ({"beta": -0.1}, False, ValueError, "beta"),
        ({"c_steps": 0}, False, ValueError, "c_steps"),
        ({"target_class": "same"}, False, ValueError, "target_class"),
        ({"target_class": 7}, False, ValueError, "out of range"),
        ({"enc_model": 3}, False, TypeError, "enc_model"),
        ({"feature_range": (0.5, 1.0)}, False, ValueError, "excludes the input"),
    ],
)
def test_bad_settings_are_named(settings, fit, error, match):
    model = small_mlp()
    x = uniform((2, 5), seed=17, low=0.2, high=0.8)
    x[0, 0] = 0.1
    with pytest.raises(error, match=match):
        explainer = CounterfactualProto(model, **{"max_iterations": 3, "c_steps": 1, **settings})
        if fit:
            explainer.fit(uniform((10, 5), seed=18))
        explainer.explain(x)


def test_wrong_autoencoder_output_is_named():
    model = small_mlp()
    with pytest.raises(ValueError, match="ae_model must return reconstructions shaped"):
        counterfactual_proto(
            model,
            uniform((2, 5), seed=19),
            ae_model=lambda x: x[:, :3],
            gamma=1.0,
            max_iterations=2,
            c_steps=1,
        )
