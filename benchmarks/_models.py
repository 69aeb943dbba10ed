"""Models the benchmarks run, defined here so they need nothing but torch.

``resnet18``/``resnet50`` come from torchvision when it imports (as on GPU
runners); otherwise the same architecture is built here (torchvision's CPU-less
wheels cannot be imported next to a CPU-only torch). The result records which.
"""

from __future__ import annotations

import torch
from torch import nn


class GapLinear(nn.Module):
    """Global average pool + linear: almost no compute, so IG's own overhead shows."""

    def __init__(self, channels: int = 3, n_classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class _ResNet18(nn.Module):
    """torchvision's resnet18 layer for layer (BasicBlock, [2, 2, 2, 2])."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [64, 128, 256, 512]
        layers, cin = [], 64
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(
                nn.Sequential(_BasicBlock(cin, width, stride), _BasicBlock(width, width, 1))
            )
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet(depth: int, n_classes: int = 1000) -> tuple[nn.Module, str]:
    """An untrained resnet18/50 in eval mode and where it came from."""
    try:
        import torchvision

        model = getattr(torchvision.models, f"resnet{depth}")(num_classes=n_classes)
        return model.eval(), "torchvision"
    except Exception:
        if depth != 18:
            raise RuntimeError(
                f"resnet{depth} needs torchvision, which could not be imported"
            ) from None
        return _ResNet18(n_classes).eval(), "benchmarks._models (torchvision layout)"
