"""Leave the user's model exactly as we found it.

Explainers run the model many times; none of that may leak into the caller's
training: the train/eval mode of every submodule, each parameter's ``.grad`` and
``requires_grad``, every buffer (BatchNorm running statistics), and torch's global
random streams (a model left in training mode draws dropout masks from them) are put
back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def preserved_model_state(model: Any, eval_mode: bool = True) -> Iterator[None]:
    """Run a block with ``model`` in eval mode (optionally) and restore it afterwards.

    Args:
        model: an ``nn.Module`` or any callable; for callables that are not modules
            only the random streams are put back.
        eval_mode: put every submodule in eval mode for the block. When False the
            caller's modes are kept; buffers are still restored, so a BatchNorm in
            training mode does not move its running statistics.
    """
    with preserved_random_state():
        if not isinstance(model, nn.Module):
            yield
            return
        with _preserved_module_state(model, eval_mode):
            yield


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Put torch's global CPU and (initialised) CUDA random streams back after the block."""
    cpu = torch.get_rng_state()
    cuda = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [
            (index, torch.cuda.get_rng_state(index)) for index in range(torch.cuda.device_count())
        ]
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        for index, state in cuda:
            torch.cuda.set_rng_state(state, index)


@contextlib.contextmanager
def _preserved_module_state(model: nn.Module, eval_mode: bool) -> Iterator[None]:
    modes = [(module, module.training) for module in model.modules()]
    params = [(p, p.grad, p.requires_grad) for p in model.parameters()]
    # Buffers are small next to activations; copying them is the one sure way to
    # undo in-place updates (running stats, num_batches_tracked, user buffers).
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        if eval_mode:
            model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, grad, requires_grad in params:
            param.grad = grad
            param.requires_grad_(requires_grad)
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
