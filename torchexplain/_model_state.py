"""Leave the user's model exactly as we found it.

Explainers run the model many times; none of that may leak into the caller's
training: the train/eval mode of every submodule, each parameter's ``.grad`` and
``requires_grad``, and every buffer (BatchNorm running statistics) are put back.
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
        model: an ``nn.Module`` or any callable; callables that are not modules are
            left untouched.
        eval_mode: put every submodule in eval mode for the block. When False the
            caller's modes are kept; buffers are still restored, so a BatchNorm in
            training mode does not move its running statistics.
    """
    if not isinstance(model, nn.Module):
        yield
        return
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
