"""Data that ships with torchexplain, so demos and tests run offline."""

from torchexplain.datasets.mnist import MNISTSplit, load_mnist

__all__ = ["MNISTSplit", "load_mnist"]
