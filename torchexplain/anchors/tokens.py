"""Words of a text with their character offsets, so a perturbed text keeps the original's spacing.

An anchor for text is a set of words. :func:`tokenize` splits a text into words (the
features) and remembers where each one starts and ends, so :meth:`Tokens.rebuild`
can put replacements back into the original string: ``"Great film, really."`` with
``film`` replaced reads ``"Great UNK, really."``, where Alibi's space-joined tokens
would read ``"Great UNK , really ."`` (a text the model never saw, even with nothing
replaced).

The default tokeniser needs no model: runs of letters and digits (with inner
apostrophes, so ``don't`` is one word) and single punctuation marks. A spaCy
``Language`` (``spacy.blank("en")`` needs no download; a trained pipeline adds
part-of-speech tags, which the similarity sampler uses) or any callable from a text to
its words (strings, ``(start, end)`` pairs, or tokens with ``.idx``) can replace it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["WORD_PATTERN", "Tokens", "tokenize", "word_tokenizer"]

#: the default tokeniser's words: letters/digits with inner apostrophes, or one other non-space character
WORD_PATTERN = re.compile(r"\w+(?:['\u2019]\w+)*|[^\w\s]")


@dataclass(frozen=True)
class Tokens:
    """A text's words: ``words[i] == text[starts[i]:ends[i]]``.

    ``pos``, ``tags`` and ``lemmas`` (coarse and fine part-of-speech tags, lemmas) are
    filled by a tagging spaCy pipeline, else None.
    """

    text: str
    words: tuple[str, ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    pos: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    lemmas: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.words)

    @functools.cached_property
    def gaps(self) -> tuple[str, ...]:
        """The ``len + 1`` stretches of text around the words (before the first, between, after the
        last); computed once (perturbed texts are rebuilt from them every round)."""
        bounds = [0, *[x for pair in zip(self.starts, self.ends) for x in pair], len(self.text)]
        return tuple(self.text[bounds[k] : bounds[k + 1]] for k in range(0, len(bounds), 2))

    @functools.cached_property
    def pieces(self) -> tuple[str, ...]:
        """The text as ``gap, word, gap, ..., word, gap`` (word ``j`` at ``2 j + 1``): a perturbed
        text is a copy with some words swapped, joined."""
        out = [self.gaps[0]]
        for word, gap in zip(self.words, self.gaps[1:], strict=True):
            out += [word, gap]
        return tuple(out)

    def rebuild(self, replacements: dict[int, str] | list[str | None]) -> str:
        """The text with word ``i`` replaced by ``replacements[i]`` (None or absent: kept)."""
        if isinstance(replacements, dict):
            replacements = [replacements.get(i) for i in range(len(self.words))]
        gaps = self.gaps
        pieces = [gaps[0]]
        for word, new, gap in zip(self.words, replacements, gaps[1:], strict=True):
            pieces.append(word if new is None else new)
            pieces.append(gap)
        return "".join(pieces)


def word_tokenizer(text: str) -> list[tuple[int, int]]:
    """The default tokeniser: ``(start, end)`` of each match of :data:`WORD_PATTERN`.

    Examples:
        >>> text = "Don't miss it, really."
        >>> [text[s:e] for s, e in word_tokenizer(text)]
        ["Don't", 'miss', 'it', ',', 'really', '.']
    """
    return [match.span() for match in WORD_PATTERN.finditer(text)]


def tokenize(text: str, nlp: Callable[[str], Any] | None = None) -> Tokens:
    """``text`` split into words by ``nlp`` (default :func:`word_tokenizer`).

    ``nlp(text)`` may return a spaCy ``Doc`` (or any tokens with ``.text`` and ``.idx``;
    tags are read from ``.pos_``, ``.tag_``, ``.lemma_`` when the pipeline set them),
    ``(start, end)`` pairs, or the words as strings (found in the text in order).

    Raises:
        TypeError: ``text`` is not a str, or ``nlp`` returns something else.
        ValueError: a word ``nlp`` returned is not in the text where it should be.
    """
    if not isinstance(text, str):
        raise TypeError(f"a text to explain must be a str, got {type(text).__name__}")
    found = word_tokenizer(text) if nlp is None else nlp(text)
    starts, ends, pos, tags, lemmas = [], [], [], [], []
    tagged = True
    cursor = 0
    for item in found:
        if isinstance(item, str):
            start = text.find(item, cursor)
            if start < 0 or not item:
                raise ValueError(
                    f"the tokeniser returned the word {item!r}, which is not in the text after "
                    f"character {cursor}: {text!r}"
                )
            end = start + len(item)
        elif hasattr(item, "idx") and hasattr(item, "text"):
            start, end = int(item.idx), int(item.idx) + len(item.text)
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            start, end = int(item[0]), int(item[1])
        else:
            raise TypeError(
                "the tokeniser must return words as strings, (start, end) pairs or tokens with .idx "
                f"and .text (a spaCy Doc); got {type(item).__name__}"
            )
        if 0 <= start < end <= len(text) and not text[start:end].strip():
            continue  # a run of spaces some tokenisers (spaCy) return as a token: not a word
        if not 0 <= start < end <= len(text) or start < cursor:
            raise ValueError(
                f"the tokeniser returned the span ({start}, {end}), which is empty, out of order or "
                f"outside the text of {len(text)} characters"
            )
        if hasattr(item, "idx"):
            tag = getattr(item, "tag_", "")
            if tag:
                pos.append(getattr(item, "pos_", ""))
                tags.append(tag)
                lemmas.append(getattr(item, "lemma_", "") or item.text)
            else:
                tagged = False
        starts.append(start)
        ends.append(end)
        cursor = end
    words = tuple(text[s:e] for s, e in zip(starts, ends, strict=True))
    has_tags = tagged and bool(tags) and len(tags) == len(words)
    return Tokens(
        text=text,
        words=words,
        starts=tuple(starts),
        ends=tuple(ends),
        pos=tuple(pos) if has_tags else None,
        tags=tuple(tags) if has_tags else None,
        lemmas=tuple(lemmas) if has_tags else None,
    )
