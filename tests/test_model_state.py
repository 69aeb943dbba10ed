"""Explaining leaves the user's model exactly as it was found."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchexplain import integrated_gradients


def make_bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


def snapshot(model: nn.Module):
    return {
        "modes": [m.training for m in model.modules()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "grad_ids": [id(p.grad) for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
        "params": [p.detach().clone() for p in model.parameters()],
    }


def assert_same(before, model):
    after = snapshot(model)
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["grad_ids"] == before["grad_ids"]
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    for key in ("buffers", "params"):
        for a, b in zip(after[key], before[key]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("eval_mode", [True, False])
def test_training_model_with_grads_is_left_as_found(eval_mode):
    model = make_bn_model().train()
    x = torch.rand(4, 1, 6, 6)
    model(x).sum().backward()  # populate .grad
    model[0].weight.requires_grad_(False)
    model[5].eval()  # mixed modes must survive too
    before = snapshot(model)
    integrated_gradients(model, x, target=0, n_steps=5, eval_mode=eval_mode)
    assert_same(before, model)


def test_eval_mode_default_makes_results_deterministic():
    model = make_bn_model().train()
    x = torch.rand(3, 1, 6, 6)
    a = integrated_gradients(model, x, target=1, n_steps=4).attributions
    b = integrated_gradients(model, x, target=1, n_steps=4).attributions
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_hooks_are_untouched():
    model = make_bn_model().eval()
    calls = []
    handle = model[0].register_forward_hook(lambda *args: calls.append(1))
    n_hooks = len(model[0]._forward_hooks)
    integrated_gradients(model, torch.rand(2, 1, 6, 6), target=0, n_steps=3)
    assert len(model[0]._forward_hooks) == n_hooks and calls
    handle.remove()


def test_works_inside_no_grad():
    model = make_bn_model().eval()
    x = torch.rand(2, 1, 6, 6)
    expected = integrated_gradients(model, x, target=2, n_steps=4).attributions
    with torch.no_grad():
        got = integrated_gradients(model, x, target=2, n_steps=4).attributions
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_global_rng_untouched():
    model = make_bn_model().eval()
    x = torch.rand(2, 1, 6, 6)
    state = torch.get_rng_state()
    integrated_gradients(model, x, n_steps=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_model_left_in_training_mode_does_not_move_the_global_random_streams():
    # eval_mode=False keeps Dropout active, and a training-mode forward draws its mask
    # from torch's global stream:
    model = make_bn_model().train()
    x = torch.rand(2, 1, 6, 6)
    state = torch.get_rng_state()
    model(x)
    assert not torch.equal(torch.get_rng_state(), state)
    # ...but explaining it leaves the stream where it was.
    state = torch.get_rng_state()
    integrated_gradients(model, x, target=0, n_steps=3, eval_mode=False)
    assert torch.equal(torch.get_rng_state(), state)
