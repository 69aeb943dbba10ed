"""AnchorText's ``language_model`` sampler: a masked language model fills the replaced words.

Alibi's ``LanguageModelSampler`` (TensorFlow only there), on PyTorch and any Hugging Face
``AutoModelForMaskedLM`` with its tokenizer, kept on the user's disk (loaded with
``local_files_only=True``: nothing is downloaded). As Alibi does it:

- a request of ``n`` samples for an anchor makes ``max(1, int(frac_mask_templates * n))``
  mask templates (one per sample with ``filling="autoregressive"``); each template masks
  every word outside the anchor with probability ``sample_proba``, at least one, among
  the words that may be masked (not punctuation, not in ``stopwords``);
- ``"parallel"`` filling: one forward pass of the templates; each masked word is drawn
  from the model's ``top_n`` tokens at its position (sub-word pieces, and punctuation
  unless ``sample_punctuation``, never), uniformly, or with probability
  ``softmax(logit / temperature)`` when ``use_proba``; the template's samples are drawn
  from it in equal shares. ``"autoregressive"``: the masks of each sample are filled left
  to right, each word drawn given the words filled before it (one forward pass per step).

Where it differs from Alibi: the features are the explainer's words (its tokeniser), not
the language model's tokens, so anchors read the same whatever the sampler; the text
around a replaced word keeps its spacing and case (Alibi decodes the whole sample with
the model's tokenizer, which lower-cases everything for an uncased model); and a text's
templates go through the model in calls of their own, so that a text gets the same
samples alone or in a batch (a language model's output for a row can depend on the
other rows of its call). Randomness is counter-based, keyed by each template's first
sample's number in its text's stream.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import string
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchexplain import _random
from torchexplain.anchors.text_samplers import Replacements
from torchexplain.anchors.tokens import Tokens
from torchexplain.models.calls import padded_size

__all__ = ["DEFAULT_PUNCTUATION", "LanguageModelReplacements", "load_language_model"]

#: what Alibi's ``punctuation`` defaults to
DEFAULT_PUNCTUATION = string.punctuation
#: rows of a language-model call are padded to a multiple of this (batch-invariant outputs)
_PAD_ROWS = 4


def import_transformers() -> Any:
    """``transformers``, imported so that a torchexplain checkout's own ``kernels/`` folder (on
    ``sys.path`` when running from the repository) does not stand in for the ``kernels``
    package that transformers imports.

    Raises:
        ImportError: transformers is not installed (naming the extra to install).
    """
    if "transformers" not in sys.modules and "kernels" not in sys.modules:
        ours = (Path(__file__).resolve().parents[2] / "kernels").resolve()
        found = importlib.util.find_spec("kernels")
        origin = Path(found.origin).resolve().parent if found and found.origin else None
        if origin == ours:
            others = [p for p in sys.path if Path(p or ".").resolve() != ours.parent]
            real = importlib.machinery.PathFinder.find_spec("kernels", others)
            if real is not None and real.loader is not None:
                module = importlib.util.module_from_spec(real)
                sys.modules["kernels"] = module
                real.loader.exec_module(module)
    try:
        import transformers
    except ImportError:
        raise ImportError(
            'AnchorText\'s language_model sampler needs transformers: pip install "torchexplain[text]"'
        ) from None
    return transformers


def load_language_model(path: str | Path) -> tuple[Any, Any]:
    """A masked language model and its tokenizer from a local folder (``save_pretrained``'s),
    never from the network: ``AutoModelForMaskedLM`` and ``AutoTokenizer`` with
    ``local_files_only=True``, the model in eval mode.

    Raises:
        ValueError: the folder does not hold a model and tokenizer transformers can load.
    """
    transformers = import_transformers()
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"language_model {str(path)!r} is not a folder holding a saved model")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = transformers.AutoModelForMaskedLM.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"language_model {str(path)!r} could not be loaded: {err}") from None
    return model.eval(), tokenizer


def _continuation_rule(vocab: dict[str, int]) -> Any:
    """Whether a vocabulary token continues a word: WordPiece's ``##`` pieces, or, for byte-level
    BPE (``Ġ``) and SentencePiece (``▁``) vocabularies, pieces without the word-start mark."""
    if any(token.startswith("##") for token in vocab):
        return lambda token: token.startswith("##")
    for mark in ("\u0120", "\u2581"):
        if sum(token.startswith(mark) for token in vocab) > len(vocab) // 4:
            return lambda token, mark=mark: not token.startswith(mark)
    return lambda token: False


class LanguageModelReplacements(Replacements):
    """Replacements drawn from a masked language model (see the module docs).

    A choice is a vocabulary id of the model's tokenizer (-1: the word is kept); ``count``
    is 1 for a word that may be masked, 0 otherwise.
    """

    def __init__(
        self,
        tokens: list[Tokens],
        model: Any,
        tokenizer: Any,
        device: torch.device,
        *,
        filling: str,
        frac_mask_templates: float,
        top_n: int,
        use_proba: bool,
        temperature: float,
        batch_size_lm: int,
        punctuation: str,
        stopwords: list[str],
        sample_punctuation: bool,
    ) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        self.model_device = parameter.device if parameter is not None else device
        self.filling, self.frac = filling, float(frac_mask_templates)
        self.use_proba, self.temperature = use_proba, float(temperature)
        self.batch_size_lm = int(batch_size_lm)
        if tokenizer.mask_token_id is None:
            raise ValueError(
                "the language model's tokenizer has no mask token: it is not a masked LM"
            )
        self.mask_id = int(tokenizer.mask_token_id)
        vocab = tokenizer.get_vocab()
        size = max(vocab.values()) + 1
        continuation = _continuation_rule(vocab)
        by_id = [""] * size
        for token, index in vocab.items():
            by_id[index] = token
        special = set(tokenizer.all_special_ids)
        excluded = np.zeros(size, dtype=bool)
        for index, token in enumerate(by_id):
            text = tokenizer.convert_tokens_to_string([token]).strip() if token else ""
            by_id[index] = text
            if (
                index in special
                or not text
                or continuation(token)
                or (not sample_punctuation and all(ch in punctuation for ch in text))
            ):
                excluded[index] = True
        self.strings = by_id
        self.excluded = torch.from_numpy(excluded).to(device)
        self.top_n = min(int(top_n), int((~self.excluded).sum()))
        stop = {w.lower().strip() for w in stopwords}
        limit = getattr(tokenizer, "model_max_length", 512)
        self.max_length = min(int(limit) if limit and limit < 100_000 else 512, 512)
        maskable = []
        for text in tokens:
            reach = self._reach(text.text)
            maskable.append(
                [
                    end <= reach
                    and not all(ch in punctuation for ch in word)
                    and word.lower() not in stop
                    for word, end in zip(text.words, text.ends, strict=True)
                ]
            )
        lengths = torch.tensor([len(t) for t in tokens], dtype=torch.int64)
        super().__init__(
            options=None,  # type: ignore[arg-type]
            offset=(torch.cumsum(lengths, 0) - lengths).to(device),
            count=torch.tensor(
                [int(m) for row in maskable for m in row], dtype=torch.int64, device=device
            ),
            cdf=None,
        )
        self.tokens = tokens

    def _reach(self, text: str) -> int:
        """How many characters of ``text`` fit in the model's input (the rest is never masked)."""
        encoded = self.tokenizer(
            text, truncation=True, max_length=self.max_length, return_offsets_mapping=True
        )
        ends = [end for _, end in encoded["offset_mapping"]]
        return max(ends, default=0)

    # ------------------------------------------------------------------ templates

    def template_masks(
        self,
        first_stream: torch.Tensor,
        allowed: torch.Tensor,
        sample_proba: float,
        key: torch.Tensor,
    ) -> torch.Tensor:
        """``(T, M)`` bool: which words each template masks, each allowed word with probability
        ``sample_proba``, and one allowed word drawn uniformly when that masked none (Alibi's
        ``max(1, Binomial(n, p))`` words, chosen uniformly)."""
        m = allowed.shape[1]
        u = _random.uniform(key, first_stream, m + 1)
        masked = (u[:, :m] < sample_proba) & allowed
        n_allowed = allowed.sum(1)
        none = ~masked.any(1) & (n_allowed > 0)
        pick = (u[:, m] * n_allowed).floor().to(torch.int64).clamp_max((n_allowed - 1).clamp_min(0))
        rank = torch.cumsum(allowed.to(torch.int64), 1) - 1
        chosen = allowed & (rank == pick[:, None])
        return masked | (none[:, None] & chosen)

    def coverage_present(
        self, i: int, n: int, valid: torch.Tensor, sample_proba: float, key: torch.Tensor
    ) -> torch.Tensor:
        """``(n, M)`` bool: text ``i``'s coverage samples, drawn for the empty anchor as Alibi draws
        them (``max(1, int(frac * n))`` templates, their samples in equal shares)."""
        owner = torch.full((1,), i, dtype=torch.int64, device=self.device)
        _, count = self._counts(owner, valid[None])
        group = torch.zeros(n, dtype=torch.int64, device=self.device)
        template = self._template_of(group)
        _, first, inverse = _first_rows(template)
        allowed = (count > 0).expand(first.shape[0], -1)
        masked = self.template_masks(first, allowed, sample_proba, key)[inverse]
        return ~masked & valid

    def _template_of(self, group: torch.Tensor) -> torch.Tensor:
        """Each sample's template, for samples of consecutive requests (``group``, ids from 0): a
        request of ``n`` samples has ``max(1, int(frac * n))`` templates (``n`` when filling
        autoregressively), the first ``n % T`` of them one sample more, in order (Alibi's shares)."""
        size = torch.bincount(group)[group]
        j = _within(group)
        if self.filling == "autoregressive":
            templates = size
        else:
            templates = ((size.double() * self.frac).floor().to(torch.int64)).clamp_min(1)
        mult, rem = size // templates, size % templates
        big = rem * (mult + 1)  # the samples of the first `rem` templates
        index = torch.where(j < big, j // (mult + 1), rem + (j - big) // mult.clamp_min(1))
        return group * (int(templates.max()) + 1) + index

    # ------------------------------------------------------------------ drawing

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
        n, m = keep.shape
        if n == 0:
            return torch.full((0, m), -1, dtype=torch.int64, device=owner.device)
        if group is None:
            group = torch.zeros(n, dtype=torch.int64, device=owner.device)
        _, count = self._counts(owner, valid)
        allowed = (count > 0) & ~keep
        template = self._template_of(group)
        _, first, inverse = _first_rows(template)
        # a template's random numbers are keyed by its first sample's number in the text's stream
        masks = self.template_masks(stream[first], allowed[first], sample_proba, replace_key)
        masked = masks[inverse]  # (N, M)
        if self.filling == "autoregressive":
            return self._fill_autoregressive(owner, masked, stream, choice_key)
        top_ids, top_logits = self._parallel_candidates(owner[first], masks)
        return self._pick(masked, stream, choice_key, top_ids, top_logits, inverse)

    def _template_texts(self, owner: torch.Tensor, masked: torch.Tensor) -> list[str]:
        mask = self.tokenizer.mask_token
        out = []
        for i, row in zip(owner.tolist(), masked.tolist(), strict=True):
            text = self.tokens[i]
            out.append(text.rebuild([mask if row[j] else None for j in range(len(text))]))
        return out

    def _forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's logits on ``texts`` (all of one original text) and their input ids."""
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        ids = encoded["input_ids"].to(self.model_device)
        attention = encoded["attention_mask"].to(self.model_device)
        rows = padded_size(len(texts), _PAD_ROWS)
        if rows > len(texts):  # repeat the last row: a row's logits do not depend on the call
            extra = rows - len(texts)
            ids = torch.cat([ids, ids[-1:].expand(extra, -1)])
            attention = torch.cat([attention, attention[-1:].expand(extra, -1)])
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=attention).logits
        return logits[: len(texts)].to(self.device), ids[: len(texts)].to(self.device)

    def _masked_logits(self, logits: torch.Tensor, ids: torch.Tensor, expected: torch.Tensor):
        """Logits at each mask token, ``(n_masks, V)``, in row order then position order."""
        found = ids == self.mask_id
        if not torch.equal(found.sum(1), expected):
            raise RuntimeError(
                "the language model's tokenizer did not keep one mask token per masked word "
                f"(found {found.sum(1).tolist()}, expected {expected.tolist()})"
            )
        picked = logits[found].float()
        return picked.masked_fill(self.excluded[: picked.shape[1]], -torch.inf)

    def _parallel_candidates(
        self, owner: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per masked word of every template (row order, then word order): the ``top_n`` token ids
        and logits, ``(n_masks, top_n)`` each. Each text's templates go through the model in
        calls of their own, ``batch_size_lm`` at a time."""
        n_masks = int(masks.sum())
        top_ids = torch.zeros(n_masks, self.top_n, dtype=torch.int64, device=self.device)
        top_logits = torch.zeros(n_masks, self.top_n, device=self.device)
        per_row = masks.sum(1)
        start_of = torch.cumsum(per_row, 0) - per_row
        for i in torch.unique(owner).tolist():
            rows = torch.nonzero(owner == i).flatten()
            for chunk in range(0, rows.numel(), self.batch_size_lm):
                part = rows[chunk : chunk + self.batch_size_lm]
                logits, ids = self._forward(self._template_texts(owner[part], masks[part]))
                values, index = self._masked_logits(logits, ids, per_row[part]).topk(self.top_n, 1)
                where = torch.cat(
                    [
                        torch.arange(int(s), int(s) + int(c))
                        for s, c in zip(start_of[part], per_row[part])
                    ]
                ).to(self.device)
                top_ids[where], top_logits[where] = index, values
        return top_ids, top_logits

    def _pick(
        self,
        masked: torch.Tensor,
        stream: torch.Tensor,
        key: torch.Tensor,
        top_ids: torch.Tensor,
        top_logits: torch.Tensor,
        inverse: torch.Tensor,
    ) -> torch.Tensor:
        """Each sample's token for each masked word of its template: ``(N, M)`` ids, -1 where kept."""
        n, m = masked.shape
        u = _random.uniform(key, stream, m)
        # the k-th masked word of sample s is candidate row start(template) + k
        template_counts = torch.zeros(
            int(inverse.max()) + 1, dtype=torch.int64, device=masked.device
        )
        template_counts.scatter_(0, inverse, masked.sum(1))
        template_start = torch.cumsum(template_counts, 0) - template_counts
        rank = torch.cumsum(masked.to(torch.int64), 1) - 1
        cells = torch.nonzero(masked)
        rows = template_start[inverse[cells[:, 0]]] + rank[cells[:, 0], cells[:, 1]]
        draws = u[cells[:, 0], cells[:, 1]]
        logits = top_logits[rows]
        if self.use_proba:
            probs = torch.softmax(logits.double() / self.temperature, 1)
        else:
            probs = torch.isfinite(logits).double()
            probs = probs / probs.sum(1, keepdim=True)
        cdf = probs.cumsum(1)
        index = (cdf <= draws[:, None].double()).sum(1).clamp_max(self.top_n - 1)
        choice = torch.full((n, m), -1, dtype=torch.int64, device=masked.device)
        choice[cells[:, 0], cells[:, 1]] = top_ids[rows, index]
        return choice

    def _fill_autoregressive(
        self, owner: torch.Tensor, masked: torch.Tensor, stream: torch.Tensor, key: torch.Tensor
    ) -> torch.Tensor:
        """Every sample its own template, its masks filled left to right (one forward pass a step)."""
        n, m = masked.shape
        choice = torch.full((n, m), -1, dtype=torch.int64, device=masked.device)
        u = _random.uniform(key, stream, m)
        for i in torch.unique(owner).tolist():
            for chunk_rows in torch.nonzero(owner == i).flatten().split(self.batch_size_lm):
                texts = self._template_texts(owner[chunk_rows], masked[chunk_rows])
                encoded = self.tokenizer(
                    texts,
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                ids = encoded["input_ids"].to(self.model_device)
                attention = encoded["attention_mask"].to(self.model_device)
                order = torch.cumsum(ids == self.mask_id, 1) * (ids == self.mask_id)
                words = [torch.nonzero(masked[r]).flatten() for r in chunk_rows.tolist()]
                for step in range(1, int(order.max()) + 1 if order.numel() else 1):
                    at = order == step
                    live = at.any(1)
                    if not bool(live.any()):
                        break
                    rows = padded_size(int(live.sum()), _PAD_ROWS)
                    sub_ids, sub_att = ids[live], attention[live]
                    if rows > sub_ids.shape[0]:
                        extra = rows - sub_ids.shape[0]
                        sub_ids = torch.cat([sub_ids, sub_ids[-1:].expand(extra, -1)])
                        sub_att = torch.cat([sub_att, sub_att[-1:].expand(extra, -1)])
                    with torch.no_grad():
                        logits = self.model(input_ids=sub_ids, attention_mask=sub_att).logits
                    logits = logits[: int(live.sum())][at[live]].float().to(self.device)
                    logits = logits.masked_fill(self.excluded[: logits.shape[1]], -torch.inf)
                    values, index = logits.topk(self.top_n, 1)
                    live_rows = torch.nonzero(live).flatten()
                    word = torch.stack([words[int(r)][step - 1] for r in live_rows])
                    sample = chunk_rows[live_rows.to(chunk_rows.device)]
                    draws = u[sample, word].double()
                    if self.use_proba:
                        probs = torch.softmax(values.double() / self.temperature, 1)
                    else:
                        probs = torch.isfinite(values).double()
                        probs = probs / probs.sum(1, keepdim=True)
                    pick = (probs.cumsum(1) <= draws[:, None]).sum(1).clamp_max(self.top_n - 1)
                    token = index.gather(1, pick[:, None])[:, 0]
                    ids[live_rows, at[live].float().argmax(1)] = token.to(ids.device)
                    choice[sample, word] = token
        return choice


def _first_rows(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct values, the first row holding each, and each row's index into the distinct ones."""
    distinct, inverse = torch.unique(values, return_inverse=True)
    n = values.shape[0]
    first = torch.full((distinct.shape[0],), n, dtype=torch.int64, device=values.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=values.device), reduce="amin")
    return distinct, first, inverse


def _within(group: torch.Tensor) -> torch.Tensor:
    """Each row's position within its request (rows of a request are adjacent)."""
    n = group.shape[0]
    dev = group.device
    starts = torch.ones(n, dtype=torch.bool, device=dev)
    starts[1:] = group[1:] != group[:-1]
    first_row = torch.cummax(torch.where(starts, torch.arange(n, device=dev), 0), 0).values
    return torch.arange(n, device=dev) - first_row
