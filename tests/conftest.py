"""Shared fixtures: devices, dtype tolerances, a trained MNIST CNN."""

from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

#: One tolerance table per dtype (rtol, atol) for comparisons against a
#: higher-precision or independent reference computed on the same inputs.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (2e-2, 1e-2),
    torch.float16: (5e-3, 1e-3),
}


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> torch.device:
    """Every test using it runs on the CPU and, when present, on CUDA."""
    return torch.device(request.param)


@pytest.fixture(scope="session")
def mnist_cnn(tmp_path_factory):
    """A trained MnistCNN (cached across the session) and the bundled test split."""
    from torchexplain.datasets import load_mnist
    from torchexplain.zoo import pretrained_mnist_cnn

    model, _ = pretrained_mnist_cnn()
    return model, load_mnist("test")
