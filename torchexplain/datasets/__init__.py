"""Data that ships with torchexplain, so demos and tests run offline."""

from torchexplain.datasets.census import CensusData, load_census
from torchexplain.datasets.mnist import MNISTSplit, load_mnist
from torchexplain.datasets.movie_reviews import (
    MovieReviews,
    WordVectors,
    load_movie_reviews,
    load_word_vectors,
)

__all__ = [
    "CensusData",
    "MNISTSplit",
    "MovieReviews",
    "WordVectors",
    "load_census",
    "load_mnist",
    "load_movie_reviews",
    "load_word_vectors",
]
