"""Anchor explanations for text (Ribeiro et al., "Anchors: High-Precision Model-Agnostic Explanations", AAAI 2018).

An anchor for a text is a small set of its words that, kept as they are, make the
model repeat its prediction with high probability (precision >= ``threshold``)
whatever happens to the other words, each of which is replaced with probability
``sample_proba`` (by ``UNK`` or a similar word, :mod:`torchexplain.anchors.text_samplers`, or by a
masked language model's fill, :mod:`torchexplain.anchors.text_language_model`).
This is Alibi's ``AnchorText`` on the batched engine:

- the searches of every text in the batch advance together
  (:mod:`torchexplain.anchors.engine`), so each call of the predictor carries the
  samples of every text and every anchor under test;
- words are found by a tokeniser that needs no download and keeps each word's
  place, so perturbed texts keep the original spacing (:mod:`torchexplain.anchors.tokens`);
- each distinct perturbation of a text is scored once per call (``cache_predictions``);
- randomness is counter-based, keyed by ``seed`` and each sample's number in its
  text's own stream, so a text gets the same anchor alone or in a batch.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchexplain import _checks, _random
from torchexplain._model_state import preserved_model_state
from torchexplain.anchors._batches import merge_parts, parts
from torchexplain.anchors._settings import AnchorSearchSettings
from torchexplain.anchors.engine import EngineResult, pack_rows, run_engine
from torchexplain.anchors.text_language_model import (
    DEFAULT_PUNCTUATION,
    LanguageModelReplacements,
    load_language_model,
)
from torchexplain.anchors.text_samplers import (
    Replacements,
    WordVectorTable,
    similarity_replacements,
    unknown_replacements,
)
from torchexplain.anchors.tokens import Tokens, tokenize
from torchexplain.base import Explainer, functional_twin, register_explainer
from torchexplain.explanation import Explanation
from torchexplain.models import Predictor, as_labels
from torchexplain.settings import DeviceSettings, ModelCallSettings, SeedSettings, setting

__all__ = ["SAMPLING_STRATEGIES", "AnchorText", "AnchorTextSettings", "anchor_text"]

#: the samplers (Alibi's ``sampling_strategy`` values)
SAMPLING_STRATEGIES = ("unknown", "similarity", "language_model")
#: texts per predictor call with ``internal_batch_size="auto"``
_AUTO_TEXTS = 1024

# Names of the random streams (any distinct numbers).
_COVERAGE_STREAM, _REPLACE_STREAM, _CHOICE_STREAM = 21, 22, 23


def _check_nlp(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(
            f"{name} must be None (the built-in word tokeniser), a spaCy Language or a callable from a "
            f"text to its words; got {type(value).__name__}"
        )
    return value


def _check_language_model(name: str, value: Any) -> Any:
    if value is None or isinstance(value, (str, Path)):
        return None if value is None else str(value)
    if not callable(value):
        raise TypeError(
            f"{name} must be a masked language model (a callable torch module), the path of a folder "
            f"holding one, or None; got {type(value).__name__}"
        )
    return value


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def _check_words(name: str, value: Any) -> list[str]:
    if isinstance(value, str) or not all(isinstance(w, str) for w in value):
        raise TypeError(f"{name} must be a list of words (str), got {value!r}")
    return list(value)


def _check_vectors(name: str, value: Any) -> Any:
    """None, or ``(vocab, vectors)``: V distinct strings and a ``(V, D)`` array of finite numbers."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(
            f"{name} must be None (the bundled GloVe subset) or a pair (vocab, vectors): V words and a "
            f"(V, D) array; got {type(value).__name__}"
        )
    vocab, vectors = value
    if isinstance(vocab, (str, bytes)) or not all(isinstance(w, str) for w in vocab):
        raise TypeError(f"{name}[0] must be a list of words (str)")
    vocab = list(vocab)
    vectors = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    if vectors.dim() != 2 or vectors.shape[0] != len(vocab) or not vocab:
        raise ValueError(
            f"{name} must pair V words with a (V, D) array; got {len(vocab)} words and shape "
            f"{tuple(vectors.shape)}"
        )
    if not bool(torch.isfinite(vectors).all()):
        raise ValueError(f"{name}[1] holds NaN or infinite values")
    return (vocab, vectors)


@dataclasses.dataclass(frozen=True)
class AnchorTextSettings(AnchorSearchSettings, SeedSettings, DeviceSettings, ModelCallSettings):
    """The settings of :class:`AnchorText` (Alibi's names and defaults; one definition for every use)."""

    sampling_strategy: str = setting(
        "unknown",
        "what replaces a word outside the anchor: 'unknown' (the token UNK), 'similarity' (one of its "
        "top_n nearest words by word vectors) or 'language_model' (a masked language model's fill)",
        check=_checks.choice(*SAMPLING_STRATEGIES),
    )
    nlp: Any = setting(
        None,
        "the tokeniser: None (words and punctuation marks, no download), a spaCy Language (a tagging "
        "pipeline also gives the similarity sampler parts of speech), or a callable from a text to its "
        "words (strings or (start, end) pairs)",
        check=_check_nlp,
    )
    vectors: Any = setting(
        None,
        "word vectors of the similarity sampler, (vocab, (V, D) array); None: the nlp's own vectors when it "
        "has any, else the GloVe 6B 50d subset bundled with torchexplain",
        check=_check_vectors,
    )
    language_model: Any = setting(
        None,
        "language_model sampler: a Hugging Face masked LM (AutoModelForMaskedLM; pass its tokenizer too), or "
        "the path of a local folder holding one (loaded with local_files_only=True)",
        check=_check_language_model,
    )
    tokenizer: Any = setting(
        None,
        "language_model sampler: the model's tokenizer (None: loaded from the language_model folder)",
        check=_checks.optional_callable(),
    )
    filling: str = setting(
        "parallel",
        "language_model: 'parallel' (one forward pass of the mask templates) or 'autoregressive' (masks "
        "filled left to right, one pass a step)",
        per_call=True,
        check=_checks.choice("parallel", "autoregressive"),
    )
    frac_mask_templates: float = setting(
        0.1,
        "language_model: mask templates per request, as a fraction of its samples (at least one), in (0, 1]",
        per_call=True,
        check=_checks.number(0.0, 1.0, low_open=True),
    )
    batch_size_lm: int = setting(
        32, "language_model: templates per forward pass", per_call=True, check=_checks.integer(1)
    )
    punctuation: str = setting(
        DEFAULT_PUNCTUATION,
        "language_model: characters of punctuation (words of them are never masked)",
        check=_check_str,
    )
    stopwords: list[str] = setting((), "language_model: words never masked", check=_check_words)
    sample_punctuation: bool = setting(
        False,
        "language_model: the model may fill a word with punctuation",
        check=_checks.boolean(),
    )
    stop_on_first: bool = setting(
        True,
        "stop at the first valid anchor (Alibi's AnchorText default)",
        per_call=True,
        check=_checks.boolean(),
    )
    sample_proba: float = setting(
        0.5,
        "probability that a word outside the anchor is replaced, in (0, 1]",
        per_call=True,
        check=_checks.number(0.0, 1.0, low_open=True),
    )
    top_n: int = setting(
        100,
        "similarity: the nearest words a word may be replaced by",
        per_call=True,
        check=_checks.integer(1),
    )
    use_proba: bool = setting(
        False,
        "similarity: draw replacements with probability softmax(similarity / temperature), not uniformly",
        per_call=True,
        check=_checks.boolean(),
    )
    temperature: float = setting(
        1.0,
        "similarity: the softmax temperature of use_proba, > 0",
        per_call=True,
        check=_checks.number(low=0.0, low_open=True),
    )

    cache_predictions: bool = setting(
        True,
        "query the predictor once per distinct perturbed text of a call and reuse the answer when the search "
        "draws it again (the predictor must be deterministic); False queries it for every sample, as Alibi "
        "does. The explanation is the same either way",
        check=_checks.boolean(),
    )

    def validate(self) -> dict[str, Any]:
        if self.sampling_strategy == "language_model":
            if self.language_model is None:
                raise ValueError(
                    "sampling_strategy='language_model' needs language_model: a masked LM with its "
                    "tokenizer, or the path of a local folder holding them"
                )
            if not isinstance(self.language_model, str) and self.tokenizer is None:
                raise ValueError(
                    "language_model is a model object: pass its tokenizer too (tokenizer=...)"
                )
        return super().validate()


@register_explainer
class AnchorText(Explainer):
    """Anchor explanations for text (Ribeiro et al., AAAI 2018), as Alibi's ``AnchorText``.

    Black-box: ``predictor`` takes a list of N strings and returns class scores
    ``(N, K)`` or labels ``(N,)`` (numpy or torch). An ``nn.Module`` that takes a list of
    strings is run in eval mode under ``torch.no_grad`` and left as found.

    Examples:
        >>> predict = lambda texts: np.array([[0.0, 1.0] if "good" in t.split() else [1.0, 0.0] for t in texts])
        >>> explainer = AnchorText(predict, seed=0)
        >>> explainer.explain(["a good film , all told"]).anchor
        [['good']]
    """

    name = "AnchorText"
    explainer_type = "anchor_text"
    peer = "alibi.explainers.AnchorText"
    paper = 'Ribeiro, Singh & Guestrin, "Anchors: High-Precision Model-Agnostic Explanations", AAAI 2018'
    kind = "blackbox"
    settings_class = AnchorTextSettings
    takes_texts = True

    def input_shape(self) -> tuple[int, ...] | None:
        """``()``: each input is one text (a batch is ``(N,)`` strings)."""
        return ()

    def explain(self, inputs: Any, **settings: Any) -> Explanation:
        """Anchors for a batch of texts.

        Args:
            inputs: a list of B texts (one text: ``[text]``; a lone ``str`` is taken as one text).
            **settings: per-call settings (``threshold``, ``delta``, ``tau``, ``batch_size``,
                ``coverage_samples``, ``beam_size``, ``stop_on_first``, ``max_anchor_size``,
                ``min_samples_start``, ``n_covered_ex``, ``sample_proba``, ``top_n``,
                ``use_proba``, ``temperature``, ``filling``, ``frac_mask_templates``,
                ``batch_size_lm``, ``internal_batch_size``), as Alibi's ``explain`` and
                ``AnchorText`` take them.

        Returns:
            An :class:`Explanation` whose ``data`` holds, for B texts: ``anchor`` (B lists
            of the anchor's words, in the order the search added them), ``feature`` (their
            word indices) and ``positions`` (their character offsets in the text),
            ``words`` (each text's words, the features), ``precision`` and ``coverage``
            ``(B,)`` float64, ``success`` ``(B,)`` bool, ``target`` ``(B,)`` the explained
            class, ``predictions`` (the predictor's output on the texts), ``covered_true``
            / ``covered_false`` (B lists of at most ``n_covered_ex`` perturbed texts with
            the anchor, where the prediction held / changed), ``n_samples`` ``(B,)`` (the
            samples the precision rests on), ``n_model_calls`` and ``n_texts_evaluated``
            ``(B,)`` int64 (calls that carried the text's samples and the texts the
            predictor saw for it, the first prediction included; perturbations answered
            from ``cache_predictions`` are not counted).
        """
        config = self._settings_for_call(settings)
        texts = _check_texts(inputs)
        if config.seed is None:
            config = dataclasses.replace(config, seed=secrets.randbits(62))
        device = torch.device(config.device or "cpu")
        tokens = [tokenize(text, config.nlp) for text in texts]
        table = self._vectors(config, device) if config.sampling_strategy == "similarity" else None
        language_model = (
            self._language_model(config) if config.sampling_strategy == "language_model" else None
        )
        longest = max((len(t) for t in tokens), default=1)
        # a stored sample: its words kept or not, its choice per word, 41 bytes of bookkeeping
        datas, totals = [], []
        for part in parts(len(texts), longest * 9 + 41, device):
            run = _TextRun(self.model, tokens[part], config, device, table, language_model)
            data, total = run.explain()
            datas.append(data)
            totals.append(total)
        data, total = merge_parts(datas, totals)
        return self._explanation(config, data, device, **total)

    def _vectors(self, config: AnchorTextSettings, device: torch.device) -> WordVectorTable:
        """The similarity sampler's word vectors (see the ``vectors`` setting), on ``device``."""
        cache = self.__dict__.setdefault("_vector_tables", {})
        key = (id(config.vectors), id(config.nlp), str(device))
        if key not in cache:
            found = config.vectors or _spacy_vectors(config.nlp)
            if found is None:
                from torchexplain.datasets import load_word_vectors

                found = load_word_vectors()
            vocab, vectors = found
            cache.clear()
            cache[key] = WordVectorTable.of(vocab, vectors, device)
        return cache[key]

    def _language_model(self, config: AnchorTextSettings) -> tuple[Any, Any]:
        """The ``language_model`` sampler's ``(model, tokenizer)``: given, or loaded once from its folder."""
        if isinstance(config.language_model, str):
            cache = self.__dict__.setdefault("_language_models", {})
            if config.language_model not in cache:
                cache.clear()
                cache[config.language_model] = load_language_model(config.language_model)
            model, tokenizer = cache[config.language_model]
            return model, config.tokenizer or tokenizer
        return config.language_model, config.tokenizer

    def explanation_map(self, explanation: Explanation, inputs: Any) -> torch.Tensor:
        """1.0 on each text's anchor words, 0.0 on its other words: ``(B, M)`` (M: the most words)."""
        words = explanation.data["words"]
        out = torch.zeros(len(words), max((len(w) for w in words), default=0))
        for i, feature in enumerate(explanation.data["feature"]):
            out[i, feature] = 1.0
        return out

    def draw(self, inputs: Any, explanation: Explanation, path: str | Path) -> Path | None:
        """Per text: its words with the anchor's highlighted, captioned with the prediction, precision
        and coverage (a PNG)."""
        from torchexplain import visualize

        return visualize.save_text_anchors(explanation, path)


def _check_texts(inputs: Any) -> list[str]:
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "UO":
        inputs = inputs.reshape(-1).tolist()
    if not isinstance(inputs, Sequence) or isinstance(inputs, bytes):
        raise TypeError(f"AnchorText explains a list of texts (str), got {type(inputs).__name__}")
    texts = list(inputs)
    bad = next((k for k, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(
            f"AnchorText explains a list of texts (str); item {bad} is {type(texts[bad]).__name__}"
        )
    if not texts:
        raise ValueError("AnchorText needs at least one text to explain, got an empty list")
    return texts


def _spacy_vectors(nlp: Any) -> tuple[list[str], np.ndarray] | None:
    """A spaCy pipeline's word vectors as ``(vocab, (V, D) array)``, or None when it has none."""
    vectors = getattr(getattr(nlp, "vocab", None), "vectors", None)
    if vectors is None or not getattr(vectors, "shape", (0,))[0]:
        return None
    strings = nlp.vocab.strings
    keys = list(vectors.keys())
    rows = [vectors.key2row[k] for k in keys]
    return [strings[k] for k in keys], np.asarray(vectors.data)[rows]


class _PredictionCache:
    """Agreement of every distinct perturbation already scored in one call.

    A perturbation is fixed by (text, the choice made for each word), so its key is the
    bytes of that row; the texts themselves are only built for perturbations not seen yet.
    """

    def __init__(self) -> None:
        self.seen: dict[bytes, bool] = {}

    def agreement(
        self,
        owner: torch.Tensor,
        choice: torch.Tensor,
        evaluate: Callable[[np.ndarray], np.ndarray],
    ) -> np.ndarray:
        rows = np.concatenate([owner.cpu().numpy()[:, None], choice.cpu().numpy()], axis=1).astype(
            np.int32
        )
        rows = np.ascontiguousarray(rows)
        keys = rows.view(np.dtype((np.void, rows.shape[1] * 4))).reshape(-1)
        distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        known = [self.seen.get(key.tobytes()) for key in distinct]
        missing = np.array([k for k, v in enumerate(known) if v is None], dtype=np.int64)
        values = np.array([bool(v) for v in known], dtype=bool)
        if missing.size:
            fresh = evaluate(first[missing])
            values[missing] = fresh
            for k, value in zip(missing.tolist(), fresh.tolist(), strict=True):
                self.seen[distinct[k].tobytes()] = value
        return values[inverse.reshape(-1)]


class _TextRun:
    """One part of an ``explain`` call: the texts' replacements, the batched searches, the results."""

    needs_order = (
        False  # the engine's sampler protocol: words do not care in which order they were added
    )

    def __init__(
        self,
        model: Any,
        tokens: list[Tokens],
        config: AnchorTextSettings,
        device: torch.device,
        table: WordVectorTable | None,
        language_model: tuple[Any, Any] | None = None,
    ) -> None:
        self.model, self.tokens, self.config, self.device = model, tokens, config, device
        self.n_words = torch.tensor([len(t) for t in tokens], dtype=torch.int64, device=device)
        self.m = max(1, int(self.n_words.max()) if len(tokens) else 1)
        self.valid = torch.arange(self.m, device=device) < self.n_words[:, None]
        if config.sampling_strategy == "unknown":
            self.replacements: Replacements = unknown_replacements(tokens, device)
        elif config.sampling_strategy == "language_model":
            lm, lm_tokenizer = language_model
            self.replacements = LanguageModelReplacements(
                tokens,
                lm,
                lm_tokenizer,
                device,
                filling=config.filling,
                frac_mask_templates=config.frac_mask_templates,
                top_n=config.top_n,
                use_proba=config.use_proba,
                temperature=config.temperature,
                batch_size_lm=config.batch_size_lm,
                punctuation=config.punctuation,
                stopwords=list(config.stopwords),
                sample_punctuation=config.sample_punctuation,
            )
        else:
            tag_of = _tagger(config.nlp)
            self.replacements = similarity_replacements(
                tokens, table, config.top_n, config.use_proba, config.temperature, tag_of
            )
        self.predictor = Predictor.wrap(
            model,
            takes="text",
            device=device,
            batch_size=config.internal_batch_size,
            auto_rows=lambda total: _AUTO_TEXTS,
            pad_to_multiple=config.padding(),
        )
        self.replace_key = _random.stream_key(config.seed, _REPLACE_STREAM, device)
        self.choice_key = _random.stream_key(config.seed, _CHOICE_STREAM, device)

    def explain(self) -> tuple[dict[str, Any], dict[str, int]]:
        config, device = self.config, self.device
        b = len(self.tokens)
        module = self.model if isinstance(self.model, nn.Module) else None
        lm = getattr(self.replacements, "model", None)
        with preserved_model_state(module), preserved_model_state(lm), torch.no_grad():
            predictions = self.predictor.outputs([t.text for t in self.tokens])
            self.target = as_labels(predictions).to(device)
            self.calls = np.ones(b, dtype=np.int64)
            self.evaluated = np.ones(b, dtype=np.int64)
            self.cache = _PredictionCache() if config.cache_predictions else None
            if self.cache is not None:  # the texts themselves agree with their own prediction
                unchanged = torch.full((b, self.m), -1, dtype=torch.int64, device=device)
                self.cache.agreement(
                    torch.arange(b, device=device), unchanged, lambda rows: np.ones(len(rows), bool)
                )
            result = run_engine(
                self.sample,
                self.n_words,
                self.coverage_bits(),
                config.coverage_samples,
                **config.engine_options(),
            )
        return self._data(result, predictions), {
            "total_model_calls": self.predictor.calls,
            "total_texts_evaluated": self.predictor.rows_evaluated,
            "search_rounds": result.n_rounds,
            "host_syncs": result.n_syncs,
        }

    def coverage_bits(self) -> torch.Tensor:
        """``(B, M, W)``: per text and word, which coverage samples (drawn for the empty anchor) keep it."""
        config, device = self.config, self.device
        key = _random.stream_key(config.seed, _COVERAGE_STREAM, device)
        n, p = config.coverage_samples, config.sample_proba
        return torch.stack(
            [
                pack_rows(self.replacements.coverage_present(i, n, self.valid[i], p, key))
                for i in range(len(self.tokens))
            ]
        )

    def sample(
        self,
        owner: torch.Tensor,
        features: torch.Tensor,
        order: torch.Tensor | None,
        stream: torch.Tensor,
        group: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One round of samples for every text: the words kept, agreement, the choice per word."""
        valid = self.valid[owner]
        choice = self.replacements.draw(
            owner,
            features,
            stream,
            valid,
            self.config.sample_proba,
            self.replace_key,
            self.choice_key,
            group,
        )
        present = (choice < 0) & valid

        def evaluate(rows: np.ndarray) -> np.ndarray:
            index = torch.from_numpy(rows).to(self.device)
            return self.evaluate(owner[index], choice[index]).cpu().numpy()

        if self.cache is None:
            agree = self.evaluate(owner, choice)
        else:
            agree = torch.from_numpy(self.cache.agreement(owner, choice, evaluate)).to(self.device)
        return present, agree, choice

    def evaluate(self, owner: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        """Agreement of the predictor with each text's explained class on its perturbations."""

        def build(start: int, stop: int) -> list[str]:
            return self.replacements.texts(self.tokens, owner[start:stop], choice[start:stop])

        def count(start: int, stop: int) -> None:
            self.calls[torch.unique(owner[start:stop]).cpu().numpy()] += 1

        labels = as_labels(self.predictor.map(len(owner), build, on_call=count))
        self.evaluated += np.bincount(owner.cpu().numpy(), minlength=len(self.evaluated))
        return labels.to(self.device) == self.target[owner]

    def _data(self, result: EngineResult, predictions: torch.Tensor) -> dict[str, Any]:
        store = result.store
        owner, agree = store.view("owner"), store.view("agree")
        covered: dict[bool, list[list[str]]] = {True: [], False: []}
        for i in range(len(self.tokens)):
            mine = result.members & (owner == i)
            for kind in (True, False):
                rows = torch.nonzero(mine & (agree == kind)).flatten()[: self.config.n_covered_ex]
                covered[kind].append(
                    self.replacements.texts(self.tokens, owner[rows], store.payload[rows])
                    if rows.numel()
                    else []
                )
        return {
            "anchor": [[t.words[j] for j in a] for t, a in zip(self.tokens, result.anchors)],
            "feature": [list(a) for a in result.anchors],
            "positions": [[t.starts[j] for j in a] for t, a in zip(self.tokens, result.anchors)],
            "words": [list(t.words) for t in self.tokens],
            "precision": result.precision.cpu(),
            "coverage": result.coverage.cpu(),
            "success": result.success.cpu(),
            "target": self.target.cpu(),
            "predictions": predictions.cpu(),
            "covered_true": covered[True],
            "covered_false": covered[False],
            "n_samples": result.n_samples.cpu(),
            "n_model_calls": torch.from_numpy(self.calls),
            "n_texts_evaluated": torch.from_numpy(self.evaluated),
        }


def _tagger(nlp: Any) -> Callable[[str], str] | None:
    """A word's fine part-of-speech tag as the pipeline tags it alone (cached), or None without a tagger."""
    if nlp is None or not hasattr(nlp, "pipe_names"):
        return None
    if not any(name in ("tagger", "morphologizer") for name in nlp.pipe_names):
        return None
    tags: dict[str, str] = {}

    def tag_of(word: str) -> str:
        if word not in tags:
            doc = nlp(word)
            tags[word] = doc[0].tag_ if len(doc) else ""
        return tags[word]

    return tag_of


@functional_twin(AnchorText)
def anchor_text(predictor: Any, inputs: Any, **settings: Any) -> Explanation:
    """Functional form of :class:`AnchorText`: the same settings, one call.

    Examples:
        >>> predict = lambda texts: np.array([[0.0, 1.0] if "good" in t.split() else [1.0, 0.0] for t in texts])
        >>> anchor_text(predict, ["a good film , all told"], seed=0).anchor
        [['good']]
    """
    return AnchorText(predictor, **settings).explain(inputs)
