"""What replaces the words outside a text anchor: ``UNK``, or a similar word.

Ribeiro et al. (AAAI 2018) perturb a text by replacing each word outside the anchor,
with probability ``sample_proba``, by something else; Alibi's ``AnchorText`` offers
the choices kept here (its ``UnknownSampler`` and ``SimilaritySampler``):

- ``unknown``: the word becomes ``"UNK"``.
- ``similarity``: the word becomes one of its ``top_n`` nearest words by the cosine
  similarity of word vectors, drawn uniformly, or with probabilities
  ``softmax(similarity / temperature)`` when ``use_proba``.

A sampler here is a table, not a loop: for every word of every text in a batch it
holds the word's possible replacements (:class:`Replacements`), found for all the
batch's words at once (one matrix product of the word vectors and one ``topk``).
Drawing a round of samples for every text is then a few vectorised operations on the
device (:meth:`Replacements.draw`), keyed by counter-based random numbers, so a text
draws the same samples alone or in a batch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from torchexplain import _random
from torchexplain.anchors.tokens import Tokens

__all__ = [
    "FORBIDDEN_TAGS",
    "FORBIDDEN_WORDS",
    "REPLACEABLE_POS",
    "UNK",
    "Replacements",
    "WordVectorTable",
    "similar_words",
    "similarity_replacements",
    "unknown_replacements",
]

#: what the ``unknown`` sampler writes in place of a word (Alibi's token)
UNK = "UNK"
#: with a tagger: the coarse parts of speech that may be replaced (Alibi's ``pos``)
REPLACEABLE_POS = frozenset({"NOUN", "VERB", "ADJ", "ADV", "ADP", "DET"})
#: with a tagger: fine tags never replaced (Alibi's ``forbidden_tags``)
FORBIDDEN_TAGS = frozenset({"PRP$"})
#: words never replaced (Alibi's ``forbidden_words``)
FORBIDDEN_WORDS = frozenset({"be"})
#: with a tagger, the nearest words scanned for ones of the same tag (Alibi's ``n_similar``)
TAGGED_SCAN = 500
#: a replacement word, without a tagger: letters, with inner apostrophes
_PLAIN_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
#: query words per matrix product (bounds the (Q, V) similarity block)
_QUERY_CHUNK = 512


@dataclass
class WordVectorTable:
    """Words and unit-length vectors on a device: ``vocab`` (V words), ``index`` (word -> row),
    ``unit`` ``(V, D)`` float32, ``plain`` ``(V,)`` bool (the word is letters only: a replacement
    that is allowed without a tagger)."""

    vocab: list[str]
    index: dict[str, int]
    unit: torch.Tensor
    plain: torch.Tensor

    @classmethod
    def of(cls, vocab: Sequence[str], vectors: Any, device: torch.device) -> WordVectorTable:
        if isinstance(vectors, torch.Tensor):
            data = vectors.detach().to(device, torch.float32)
        else:
            data = torch.tensor(np.asarray(vectors, dtype=np.float32), device=device)
        unit = data / data.norm(dim=1, keepdim=True).clamp_min(1e-12)
        plain = torch.tensor(
            [_PLAIN_WORD.fullmatch(w) is not None for w in vocab], dtype=torch.bool, device=device
        )
        index: dict[str, int] = {}
        for row, word in enumerate(vocab):
            index.setdefault(word, row)
        return cls(list(vocab), index, unit, plain)


@dataclass
class Replacements:
    """Every word's possible replacements, for a batch of texts.

    Words are numbered across the batch: text ``i``'s word ``j`` is word ``offset[i] + j``.
    Per word: ``options`` (its replacement strings, empty when the word is never
    replaced), ``count`` ``(T,)`` int64, and ``cdf`` ``(T, K)`` float32, the cumulative
    probabilities of its options (None: options equally likely).
    """

    options: list[list[str]] | None
    offset: torch.Tensor
    count: torch.Tensor
    cdf: torch.Tensor | None
    #: with ``options`` None: choices are indices into this one table of strings (a vocabulary)
    strings = None

    def _counts(
        self, owner: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each cell's word number across the batch and its count of options (0 where not ``valid``)."""
        m = valid.shape[1]
        word = (self.offset[owner][:, None] + torch.arange(m, device=owner.device)).clamp(
            max=max(int(self.count.shape[0]) - 1, 0)
        )
        return word, torch.where(valid, self.count[word], 0)

    def coverage_present(
        self, i: int, n: int, valid: torch.Tensor, sample_proba: float, key: torch.Tensor
    ) -> torch.Tensor:
        """``(n, M)`` bool: text ``i``'s ``n`` coverage samples (drawn for the empty anchor): which
        words each keeps (``valid``: ``(M,)``, the text's words)."""
        owner = torch.full((1,), i, dtype=torch.int64, device=valid.device)
        _, count = self._counts(owner, valid[None])
        drawn = _random.uniform(key, torch.arange(n, device=valid.device), valid.shape[0])
        return ~((drawn < sample_proba) & (count > 0)) & valid

    def draw(
        self,
        owner: torch.Tensor,
        keep: torch.Tensor,
        stream: torch.Tensor,
        valid: torch.Tensor,
        sample_proba: float,
        replace_key: torch.Tensor,
        choice_key: torch.Tensor,
        group: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(N, M)`` int64: per sample and word, the option it is replaced by, -1 where it is kept.

        Args:
            owner: ``(N,)`` the text each sample perturbs.
            keep: ``(N, M)`` bool, the words of the anchor it is drawn for (never replaced).
            stream: ``(N,)`` the sample's number in its text's stream (the random numbers' key).
            valid: ``(N, M)`` bool, the word exists (``j < len(text)``).
            sample_proba: probability that a replaceable word outside the anchor is replaced.
            replace_key, choice_key: :func:`torchexplain._random.stream_key` of the two draws.
            group: ``(N,)`` the request each sample answers (the language-model sampler's
                templates are per request; the others draw every sample alone).
        """
        n, m = keep.shape
        word, count = self._counts(owner, valid)
        replaced = (_random.uniform(replace_key, stream, m) < sample_proba) & ~keep & (count > 0)
        u = _random.uniform(choice_key, stream, m)
        if self.cdf is None:
            pick = (u * count).floor().to(torch.int64).clamp_max((count - 1).clamp_min(0))
        else:
            pick = torch.zeros(n, m, dtype=torch.int64, device=owner.device)
            cells = torch.nonzero(replaced)
            step = max(1, (1 << 22) // max(1, self.cdf.shape[1]))
            for start in range(0, cells.shape[0], step):
                part = cells[start : start + step]
                rows = self.cdf[word[part[:, 0], part[:, 1]]]
                chosen = (rows <= u[part[:, 0], part[:, 1]][:, None]).sum(1)
                limit = count[part[:, 0], part[:, 1]] - 1
                pick[part[:, 0], part[:, 1]] = torch.minimum(chosen, limit)
        return torch.where(replaced, pick, -1)

    def texts(self, tokens: list[Tokens], owner: torch.Tensor, choice: torch.Tensor) -> list[str]:
        """The perturbed texts: text ``owner[k]`` with each word replaced as ``choice[k]`` says.

        Each text starts as a copy of its pieces (gaps and words); only the replaced words are
        visited (one pass over the replaced cells, in row order), then each is joined."""
        owners = owner.tolist()
        cells = torch.nonzero(choice >= 0)
        rows, columns = cells[:, 0].tolist(), cells[:, 1].tolist()
        picks = choice[cells[:, 0], cells[:, 1]].tolist()
        offsets = self.offset.tolist()
        options, strings = self.options, self.strings
        pieces = [list(tokens[i].pieces) for i in owners]
        for r, j, k in zip(rows, columns, picks, strict=True):
            pieces[r][2 * j + 1] = (
                strings[k] if options is None else options[offsets[owners[r]] + j][k]
            )
        return ["".join(p) for p in pieces]


def _offsets(tokens: list[Tokens], device: torch.device) -> torch.Tensor:
    lengths = torch.tensor([len(t) for t in tokens], dtype=torch.int64)
    return (torch.cumsum(lengths, 0) - lengths).to(device)


def unknown_replacements(tokens: list[Tokens], device: torch.device) -> Replacements:
    """Alibi's ``unknown`` sampler: every word may become ``UNK``."""
    total = sum(len(t) for t in tokens)
    return Replacements(
        options=[[UNK]] * total,
        offset=_offsets(tokens, device),
        count=torch.ones(total, dtype=torch.int64, device=device),
        cdf=None,
    )


def _replaceable(tokens: Tokens, j: int) -> bool:
    """Whether word ``j`` may be replaced by a similar word (Alibi's rules where a tagger tagged it)."""
    word = tokens.words[j]
    if word in FORBIDDEN_WORDS:
        return False
    if tokens.tags is None:
        return _PLAIN_WORD.fullmatch(word) is not None
    return tokens.pos[j] in REPLACEABLE_POS and tokens.tags[j] not in FORBIDDEN_TAGS


def _match_case(original: str, replacement: str) -> str:
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def similar_words(
    table: WordVectorTable,
    words: list[str],
    top_n: int,
    tag_of: Callable[[str], str] | None = None,
    tags: list[str] | None = None,
) -> list[tuple[list[str], list[float]]]:
    """For each word (looked up in lower case), its ``top_n`` nearest other words of the table by
    cosine similarity, most similar first, with the similarities.

    Without a tagger the candidates are the table's words of letters only; with one
    (``tag_of(word)`` gives a word's fine tag, ``tags`` the queries' own), the
    :data:`TAGGED_SCAN` nearest are scanned for ones of the same tag, as Alibi does. A
    word not in the table has no neighbours.
    """
    out: list[tuple[list[str], list[float]]] = [([], []) for _ in words]
    rows = [table.index.get(w.lower(), -1) for w in words]
    asked = [k for k, row in enumerate(rows) if row >= 0]
    vocab_size = table.unit.shape[0]
    take = min(vocab_size, TAGGED_SCAN if tag_of is not None else top_n + 1)
    for start in range(0, len(asked), _QUERY_CHUNK):
        part = asked[start : start + _QUERY_CHUNK]
        query = torch.tensor([rows[k] for k in part], device=table.unit.device)
        sims = table.unit[query] @ table.unit.T  # (Q, V)
        sims[torch.arange(len(part), device=sims.device), query] = -torch.inf
        if tag_of is None:
            sims = sims.masked_fill(~table.plain, -torch.inf)
        values, index = sims.topk(take, dim=1)
        for k, vals, idx in zip(part, values.tolist(), index.tolist(), strict=True):
            chosen, similarity = [], []
            for value, row in zip(vals, idx, strict=True):
                if len(chosen) == top_n or value == -np.inf:
                    break
                candidate = table.vocab[row]
                if tag_of is not None and tag_of(candidate) != tags[k]:
                    continue
                chosen.append(candidate)
                similarity.append(value)
            out[k] = (chosen, similarity)
    return out


def similarity_replacements(
    tokens: list[Tokens],
    table: WordVectorTable,
    top_n: int,
    use_proba: bool,
    temperature: float,
    tag_of: Callable[[str], str] | None,
) -> Replacements:
    """Alibi's ``similarity`` sampler: each replaceable word may become one of its ``top_n`` nearest
    words (its case copied onto them), equally likely or by ``softmax(similarity / temperature)``."""
    device = table.unit.device
    flat = [(t, j) for t in tokens for j in range(len(t))]
    asked = [k for k, (t, j) in enumerate(flat) if _replaceable(t, j)]
    tagged = tag_of is not None and all(t.tags is not None for t in tokens)
    found = similar_words(
        table,
        [flat[k][0].words[flat[k][1]] for k in asked],
        top_n,
        tag_of if tagged else None,
        [flat[k][0].tags[flat[k][1]] for k in asked] if tagged else None,
    )
    options: list[list[str]] = [[] for _ in flat]
    weights: list[list[float]] = [[] for _ in flat]
    for k, (words, sims) in zip(asked, found, strict=True):
        original = flat[k][0].words[flat[k][1]]
        options[k] = [_match_case(original, w) for w in words]
        weights[k] = sims
    count = torch.tensor([len(o) for o in options], dtype=torch.int64, device=device)
    cdf = None
    if use_proba:
        width = max(1, int(count.max()) if len(flat) else 1)
        logits = torch.full((len(flat), width), -torch.inf, dtype=torch.float64)
        for k, sims in enumerate(weights):
            if sims:
                logits[k, : len(sims)] = torch.tensor(sims, dtype=torch.float64) / temperature
        probs = torch.softmax(logits, dim=1).nan_to_num(0.0)
        cdf = probs.cumsum(1).to(torch.float32).to(device)
    return Replacements(options, _offsets(tokens, device), count, cdf)
