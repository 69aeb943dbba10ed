"""Data that ships with torchexplain, so demos and tests run offline."""

from torchexplain.datasets.census import CensusData, load_census
from torchexplain.datasets.mnist import MNISTSplit, load_mnist

__all__ = ["CensusData", "MNISTSplit", "load_census", "load_mnist"]
