"""Anchor explanations for tabular data (Ribeiro et al., "Anchors: High-Precision Model-Agnostic Explanations", AAAI 2018).

An anchor is a short rule over the features of one row ("Marital Status = Separated
AND Age <= 28.00") under which the model keeps its prediction with high probability
(precision >= ``threshold``) when every other feature is drawn from the training data.
This is Alibi's ``AnchorTabular``, batched:

- a discretiser (numerical columns binned at training percentiles, as Alibi's) turns
  each row into predicates: one per categorical column (equal to the row's value) and,
  per numerical column, one per bin edge (``<= edge`` for the edges at or above the
  row's bin, ``> edge`` below it), named as Alibi names them;
- samples conditioned on an anchor are training rows whose anchor columns come from
  training rows that satisfy the anchor, with Alibi's fallbacks when too few do
  (partial anchors, then column by column, then the instance's value or a uniform
  draw over the column's range, with a warning). Training rows satisfying a predicate
  are held as packed bitsets, so "a random training row satisfying these predicates"
  is a few ANDs and a bit select, for every request of a round at once;
- the KL-LUCB searches of all rows advance together (:mod:`torchexplain.anchors.engine`),
  so each predictor call carries the samples of every row being explained.
"""

from __future__ import annotations

import dataclasses
import secrets
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from torchexplain import _checks, _random
from torchexplain._model_state import preserved_model_state
from torchexplain.anchors._batches import merge_parts, parts
from torchexplain.anchors._settings import AnchorSearchSettings
from torchexplain.anchors.engine import EngineResult, pack_rows, popcount, run_engine
from torchexplain.base import Explainer, functional_twin, register_explainer
from torchexplain.explanation import Explanation
from torchexplain.models import Predictor, Rows, as_labels
from torchexplain.settings import PredictorSettings, SeedSettings, TabularSettings

__all__ = ["AnchorTabular", "AnchorTabularSettings", "anchor_tabular"]

_COVERAGE_STREAM, _SAMPLE_STREAM = 11, 12
#: rows per predictor call when ``internal_batch_size="auto"`` (tabular rows are small:
#: per-call overhead dominates below a few thousand rows, and very large calls stop
#: fitting in cache)
_AUTO_ROWS = 16384


@dataclasses.dataclass(frozen=True)
class AnchorTabularSettings(AnchorSearchSettings, TabularSettings, SeedSettings, PredictorSettings):
    """The settings of :class:`AnchorTabular` (Alibi's names; one definition for every use)."""

    def validate(self) -> dict[str, Any]:
        n_columns = None if self.feature_names is None else len(self.feature_names)
        for column in self.categorical_names or {}:
            if n_columns is not None and column >= n_columns:
                raise ValueError(
                    f"categorical_names key {column!r} is not a column index in [0, {n_columns})"
                )
        return {}


class _Discretiser:
    """Numerical columns binned at training percentiles, as Alibi's ``Discretizer``.

    Edges are ``np.percentile(column, disc_perc)`` with duplicates removed; a value
    equal to an edge falls in the lower bin (``searchsorted`` on the left), so bin ``k``
    is ``edge[k-1] < x <= edge[k]``.
    """

    def __init__(self, numerical: list[int], edges: list[np.ndarray]) -> None:
        self.numerical = numerical
        self.edges = edges

    @classmethod
    def fit(
        cls, train: np.ndarray, numerical: list[int], percentiles: Sequence[float]
    ) -> _Discretiser:
        edges = [
            np.unique(np.percentile(train[:, c].astype(np.float64), percentiles)) for c in numerical
        ]
        return cls(numerical, edges)

    def codes(self, rows: torch.Tensor, categorical: list[int]) -> torch.Tensor:
        """``(N, C)`` int64: bin of each numerical value, code of each categorical one."""
        codes = torch.zeros(rows.shape, dtype=torch.int64, device=rows.device)
        if categorical:
            codes[:, categorical] = rows[:, categorical].round().to(torch.int64)
        for column, edges in zip(self.numerical, self.edges, strict=True):
            edge = torch.as_tensor(edges, dtype=torch.float64, device=rows.device)
            codes[:, column] = torch.searchsorted(
                edge, rows[:, column].to(torch.float64).contiguous(), right=False
            )
        return codes

    def intervals(self, column: int, name: str) -> list[str]:
        """Alibi's names of a numerical column's bins."""
        edges = self.edges[self.numerical.index(column)]
        names = [f"{name} <= {edges[0]:.2f}"]
        names += [f"{edges[i]:.2f} < {name} <= {edges[i + 1]:.2f}" for i in range(len(edges) - 1)]
        return names + [f"{name} > {edges[-1]:.2f}"]


class _Predicates:
    """Every predicate any row can have, with the training rows that satisfy each one as bitsets.

    Per categorical column ``c`` and code ``v``: ``c == v``. Per numerical column ``c``
    and edge ``k``: ``bin <= k`` and ``bin > k``. A predicate allows the codes
    ``[lo, hi]`` of its column.
    """

    def __init__(
        self, n_columns: int, categorical: dict[int, list[str]], discretiser: _Discretiser
    ) -> None:
        column, lo, hi = [], [], []
        self.first: dict[int, int] = {}
        for c in range(n_columns):
            self.first[c] = len(column)
            if c in categorical:
                for v in range(len(categorical[c])):
                    column.append(c), lo.append(v), hi.append(v)
            else:
                n_edges = len(discretiser.edges[discretiser.numerical.index(c)])
                for k in range(n_edges):  # "<= edge k", then "> edge k"
                    column += [c, c]
                    lo += [0, k + 1]
                    hi += [k, n_edges]
        self.column = torch.tensor(column, dtype=torch.int64)
        self.lo = torch.tensor(lo, dtype=torch.int64)
        self.hi = torch.tensor(hi, dtype=torch.int64)

    def satisfied(self, codes: torch.Tensor) -> torch.Tensor:
        """``(N, P)`` bool: which predicates each coded row satisfies."""
        values = codes[:, self.column.to(codes.device)]
        return (values >= self.lo.to(codes.device)) & (values <= self.hi.to(codes.device))


_BYTE_SHIFTS = torch.arange(0, 64, 8)
_BYTE_TABLES: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def _byte_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per byte value: its set bits ``(256,)``, and the position of its k-th set bit ``(256, 8)``."""
    key = str(device)
    if key not in _BYTE_TABLES:
        counts = torch.tensor([bin(v).count("1") for v in range(256)], dtype=torch.int64)
        select = torch.zeros(256, 8, dtype=torch.int64)
        for v in range(256):
            positions = [k for k in range(8) if v >> k & 1]
            select[v, : len(positions)] = torch.tensor(positions, dtype=torch.int64)
        _BYTE_TABLES[key] = (counts.to(device), select.to(device))
    return _BYTE_TABLES[key]


class _BitSelector:
    """Picks the ``rank``-th set bit of one of many bitsets, for many queries at once.

    Args:
        bits: ``(G, W)`` int64 bitsets.
        word_counts: ``(G, W)`` their per-word popcounts, if already known.
    """

    def __init__(self, bits: torch.Tensor, word_counts: torch.Tensor | None = None) -> None:
        self.bits = bits
        self.words = bits.shape[1]
        counts = popcount(bits[..., None]) if word_counts is None else word_counts
        self.totals = counts.sum(1)
        self.offsets = torch.cumsum(self.totals, 0) - self.totals
        # One sorted sequence for all bitsets: each query's word is one searchsorted away.
        self.flat = (torch.cumsum(counts, 1) + self.offsets[:, None]).reshape(-1)

    def select(self, which: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
        """Bit positions ``(N,)`` of the ``rank[n]``-th set bit (from 0) of bitset ``which[n]``."""
        w = self.words
        target = self.offsets[which] + rank
        word = torch.searchsorted(self.flat, target, right=True)
        before = torch.where(word % w == 0, self.offsets[which], self.flat[(word - 1).clamp_min(0)])
        remaining = target - before  # rank within the word
        value = self.bits.reshape(-1)[word]
        # Within the word: bytes (counted by table), then the bit (looked up by table).
        counts, select = _byte_tables(value.device)
        byte_values = (value[:, None] >> _BYTE_SHIFTS.to(value.device)) & 0xFF
        byte_cum = torch.cumsum(counts[byte_values], 1)
        byte = torch.searchsorted(byte_cum, remaining[:, None], right=True)
        before_byte = torch.where(byte > 0, byte_cum.gather(1, (byte - 1).clamp_min(0)), 0)
        chosen = byte_values.gather(1, byte)[:, 0]
        bit = select[chosen, remaining - before_byte[:, 0]]
        byte = byte[:, 0]
        return (word % w) * 64 + byte * 8 + bit


@register_explainer
class AnchorTabular(Explainer):
    """Anchor explanations for tabular data (Ribeiro et al., AAAI 2018), as Alibi's ``AnchorTabular``.

    Black-box: ``predictor`` takes a batch of rows ``(N, C)`` and returns class
    probabilities or scores ``(N, K)`` or labels ``(N,)``. By default an ``nn.Module``
    gets float tensors on the explainer's device (run in eval mode under
    ``torch.no_grad`` and left as found) and any other callable gets numpy arrays
    (scikit-learn's ``predict_proba``, an Alibi user's function). Categorical columns
    hold integer codes; a model trained on one-hot columns is wrapped in a predictor
    that encodes them.

    Examples:
        >>> train = np.array([[0, 1.0], [1, 5.0], [0, 2.0], [1, 7.0]] * 50, dtype=np.float32)
        >>> predict = lambda x: (x[:, 1] > 4).astype(np.int64)
        >>> explainer = AnchorTabular(predict, ["Kind", "Size"], {0: ["a", "b"]}, seed=0).fit(train)
        >>> explainer.explain(train[:1]).anchor
        [['Size <= 3.50']]
    """

    name = "AnchorTabular"
    explainer_type = "anchor_tabular"
    peer = "alibi.explainers.AnchorTabular"
    paper = 'Ribeiro, Singh & Guestrin, "Anchors: High-Precision Model-Agnostic Explanations", AAAI 2018'
    kind = "blackbox"
    settings_class = AnchorTabularSettings

    positional_settings = ("feature_names", "categorical_names")
    _fit: dict[str, Any] | None = None  # what fit() learnt

    # ----------------------------------------------------------------- fit

    def fit(self, train_data: Any, disc_perc: Sequence[float] = (25, 50, 75)) -> AnchorTabular:
        """Learn the discretiser and keep the training rows the sampler draws from.

        Args:
            train_data: ``(N, C)`` numpy array or tensor (categorical columns as codes).
            disc_perc: percentiles at which numerical columns are binned (Alibi's default).

        Returns:
            The explainer (fitted).
        """
        config = self.settings
        if config.feature_names is None:
            raise ValueError(
                "AnchorTabular needs feature_names (the name of every column) before fit: "
                "AnchorTabular(predictor, feature_names, categorical_names)"
            )
        train = Rows.of(train_data, "train_data", integers=True).with_columns(
            len(config.feature_names), "train_data"
        )
        train = train.values
        percentiles = _check_percentiles(disc_perc)
        categorical = dict(config.categorical_names or {})
        _check_codes("train_data", train, categorical)
        numerical = [c for c in range(train.shape[1]) if c not in categorical]
        discretiser = _Discretiser.fit(train.numpy(), numerical, percentiles)
        self._set_fitted(train, percentiles, discretiser)
        return self

    def _set_fitted(
        self, train: torch.Tensor, percentiles: list[float], discretiser: _Discretiser
    ) -> None:
        config = self.settings
        categorical = dict(config.categorical_names or {})
        predicates = _Predicates(train.shape[1], categorical, discretiser)
        codes = discretiser.codes(train, sorted(categorical))
        satisfied = predicates.satisfied(codes)  # (N, P)
        numerical = discretiser.numerical
        self._fit = {
            "train": train,
            "disc_perc": percentiles,
            "discretiser": discretiser,
            "predicates": predicates,
            "codes": codes,
            "train_bits": pack_rows(satisfied),  # (P, W)
            "minimum": train[:, numerical].min(0).values if numerical else torch.zeros(0),
            "maximum": train[:, numerical].max(0).values if numerical else torch.zeros(0),
        }

    def input_shape(self) -> tuple[int, ...] | None:
        """``(C,)``: one column per feature name (None before the names are set)."""
        names = self.settings.feature_names
        return (len(names),) if names else None

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        if self._fit is None:
            return {}, {}
        discretiser = self._fit["discretiser"]
        data = {"disc_perc": list(self._fit["disc_perc"]), "numerical": list(discretiser.numerical)}
        tensors = {"train_data": self._fit["train"]}
        for column, edges in zip(discretiser.numerical, discretiser.edges, strict=True):
            tensors[f"edges_{column}"] = torch.as_tensor(edges, dtype=torch.float64)
        return data, tensors

    def _restore_fitted_state(self, data: Any, tensors: Any) -> None:
        if not data and not tensors:
            return
        expected = {"train_data"} | {f"edges_{c}" for c in data.get("numerical", [])}
        if set(data) != {"disc_perc", "numerical"} or set(tensors) != expected:
            raise ValueError(
                f"AnchorTabular: fitted state must hold disc_perc, numerical and tensors {sorted(expected)}; "
                f"got {sorted(data)} and {sorted(tensors)}"
            )
        train = Rows.of(tensors["train_data"], "train_data", integers=True)
        train = train.with_columns(len(self.settings.feature_names), "train_data").values
        categorical = dict(self.settings.categorical_names or {})
        numerical = [int(c) for c in data["numerical"]]
        if numerical != [c for c in range(train.shape[1]) if c not in categorical]:
            raise ValueError(
                f"AnchorTabular: stored numerical columns {numerical} do not match categorical_names"
            )
        edges = [tensors[f"edges_{c}"].numpy() for c in numerical]
        self._set_fitted(
            train, [float(p) for p in data["disc_perc"]], _Discretiser(numerical, edges)
        )

    # ----------------------------------------------------------------- explain

    def explain(self, inputs: Any, **settings: Any) -> Explanation:
        """Anchors for a batch of rows ``(B, C)``.

        Args:
            inputs: ``(B, C)`` numpy array or tensor (one row: ``row[None]``).
            **settings: per-call settings (``threshold``, ``delta``, ``tau``,
                ``batch_size``, ``coverage_samples``, ``beam_size``, ``stop_on_first``,
                ``max_anchor_size``, ``min_samples_start``, ``n_covered_ex``,
                ``internal_batch_size``), as Alibi's ``explain`` takes them.

        Returns:
            An :class:`Explanation` whose ``data`` holds, for B rows: ``anchor`` (B
            lists of predicate names, in the order the search added them, as Alibi
            writes them), ``feature`` (B lists of the anchor's column indices),
            ``precision`` and ``coverage`` ``(B,)`` float64, ``success`` ``(B,)``
            bool, ``target`` ``(B,)`` the explained class, ``predictions`` (the
            predictor's output on the rows), ``covered_true`` / ``covered_false`` (B
            tensors ``(k, C)``, ``k <= n_covered_ex``: samples with the anchor where
            the prediction held / changed) and ``n_samples`` ``(B,)`` int64 (samples
            the precision rests on). Tensors are on the inputs' device (cpu for numpy).
        """
        config = self._settings_for_call(settings)
        if self._fit is None:
            raise ValueError("AnchorTabular is not fitted: call explainer.fit(train_data) first")
        if config.seed is None:
            config = dataclasses.replace(config, seed=secrets.randbits(62))
        rows = Rows.of(inputs, integers=True).with_columns(len(config.feature_names))
        _check_codes("inputs", rows.values, dict(config.categorical_names or {}))
        device = rows.compute_device(config.device)
        # a stored sample: its row (payload), its predicates, and the engine's 41 bytes of bookkeeping
        n_predicates = len(self._fit["predicates"].column)
        per_sample = rows.shape[1] * rows.values.element_size() + n_predicates + 41
        datas, totals = [], []
        for part in parts(len(rows), per_sample, device):
            data, total = _TabularRun(self, config, rows[part]).explain()
            datas.append(data)
            totals.append(total)
        data, total = merge_parts(datas, totals)
        return self._explanation(
            config, data, device, disc_perc=list(self._fit["disc_perc"]), **total
        )

    def explanation_map(self, explanation: Explanation, inputs: Any) -> torch.Tensor:
        """1.0 on each row's anchor columns, 0.0 elsewhere: ``(B, C)``."""
        rows = inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(np.asarray(inputs))
        out = torch.zeros(rows.shape, dtype=torch.float32, device=rows.device)
        for i, columns in enumerate(explanation.data["feature"]):
            out[i, columns] = 1.0
        return out


@dataclasses.dataclass
class _Requests:
    """A round's requests that fall back (fewer matching training rows than samples), G of them.

    Per sample (n): ``rows`` its row in the round's values, ``owner`` its instance, ``stream``
    its position in the instance's stream, ``group`` its request (0..G-1), ``random_bits``
    ``(n, 2 + L)`` its draws (see :meth:`_TabularRun.conditioned_rows`). Per request: the
    anchor's ``order``, ``pred`` (predicate index) and ``column`` at each position ``(G, L)``
    (-1 padded), the samples asked for (``size``) and the first sample's row (``first_row``).
    """

    rows: torch.Tensor
    owner: torch.Tensor
    stream: torch.Tensor
    group: torch.Tensor
    order: torch.Tensor
    pred: torch.Tensor
    column: torch.Tensor
    size: torch.Tensor
    first_row: torch.Tensor
    random_bits: torch.Tensor


@dataclasses.dataclass
class _AnchorColumns:
    """Per request, its anchor's columns some training row satisfies ("known"), in order of first
    appearance: ``bits`` ``(G, L, W)`` the training rows satisfying each, ``own`` a selector over
    them, ``column`` ``(G, L)`` (-1 past the last), ``n_known`` ``(G,)``; and ``unknown`` ``(G, L)``
    the ranks no training row satisfies, with ``column_of_rank`` ``(G, L)`` every rank's column."""

    bits: torch.Tensor
    own: _BitSelector
    column: torch.Tensor
    n_known: torch.Tensor
    unknown: torch.Tensor
    column_of_rank: torch.Tensor


class _TabularRun:
    """One ``explain`` call: predicates per row, coverage, the batched searches and the results."""

    # anchors (in the order their predicates were added: the fallbacks drop the last-added
    # columns first) come one row per request (see the engine's Sampler)
    per_request = True

    def __init__(self, explainer: AnchorTabular, config: AnchorTabularSettings, rows: Rows) -> None:
        """``rows``: checked (their columns and category codes too) by ``AnchorTabular.explain``."""
        self.explainer = explainer
        self.config = config
        fit = explainer._fit
        self.fit = fit
        self.input_device = rows.input_device
        self.device = rows.compute_device(config.device)
        self.categorical = dict(config.categorical_names or {})
        self.rows = rows.values.to(self.device, fit["train"].dtype)
        self.train = fit["train"].to(self.device)
        # codes are small (categories, bins): int32 halves the per-sample gathers and compares
        self.train_codes = fit["codes"].to(self.device, torch.int32)
        self.train_bits = fit["train_bits"].to(self.device)
        # every training row, as a bitset (the neutral element of AND)
        self.all_rows = pack_rows(
            torch.ones(self.train.shape[0], 1, dtype=torch.bool, device=self.device)
        )[0]
        self.predicates: _Predicates = fit["predicates"]
        self.discretiser: _Discretiser = fit["discretiser"]
        self.minimum = fit["minimum"].to(self.device, torch.float64)
        self.maximum = fit["maximum"].to(self.device, torch.float64)
        self.predictor = Predictor.wrap(
            explainer.model,
            takes=config.predictor_input,
            device=self.device,
            batch_size=config.internal_batch_size,
            auto_rows=lambda total: _AUTO_ROWS,
            pad_to_multiple=config.padding(),
        )
        self.unknown_warned: set[int] = set()
        # Per predicate, the training rows satisfying it in row order (its bitset's set bits):
        # a one-predicate anchor's rank-th matching row is one lookup, no bitset select.
        n_train = self.train.shape[0]
        shifts = torch.arange(64, device=self.device)
        satisfied = ((self.train_bits[..., None] >> shifts) & 1).bool()
        satisfied = satisfied.reshape(self.train_bits.shape[0], -1)[:, :n_train]
        self.pred_rows = torch.nonzero(satisfied)[:, 1]  # grouped by predicate, rows ascending
        self.pred_count = satisfied.sum(1)
        self.pred_start = torch.cumsum(self.pred_count, 0) - self.pred_count

    # ----------------------------------------------------------------- the predictor

    def predict(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The predictor's outputs on ``rows`` and the classes they mean."""
        outputs = self.predictor.outputs(rows)
        return outputs, as_labels(outputs)

    # ----------------------------------------------------------------- the search

    def explain(self) -> tuple[dict[str, Any], dict[str, Any]]:
        config, device = self.config, self.device
        b = self.rows.shape[0]
        model = self.explainer.model if isinstance(self.explainer.model, nn.Module) else None
        with preserved_model_state(model), torch.no_grad():
            predictions, self.target = self.predict(self.rows)
            self._instance_predicates()
            n_train = self.train.shape[0]
            coverage_key = _random.stream_key(config.seed, _COVERAGE_STREAM, device)
            picks = _random.integers(
                coverage_key, torch.arange(config.coverage_samples, device=device), 1, n_train
            )
            cover = self.predicates.satisfied(self.train_codes[picks[:, 0]])  # (n_cov, P)
            coverage_bits = pack_rows(cover)[self.pred_index]  # (B, M, W)
            self.sample_key = _random.stream_key(config.seed, _SAMPLE_STREAM, device)
            n_features = torch.full((b,), self.m, dtype=torch.int64, device=device)
            result = run_engine(
                self,
                n_features,
                coverage_bits,
                config.coverage_samples,
                **config.engine_options(),
            )
        self.result = result
        return self._data(result, predictions), {
            "total_model_calls": self.predictor.calls,
            "total_rows_evaluated": self.predictor.rows_evaluated,
            "search_rounds": result.n_rounds,
            "host_syncs": result.n_syncs,
        }

    def _instance_predicates(self) -> None:
        """Each row's predicates, in Alibi's order (columns in order, numerical ones expanded)."""
        codes = self.discretiser.codes(self.rows, sorted(self.categorical))  # (B, C)
        self.codes = codes
        columns, index = [], []
        first = self.predicates.first
        for c in range(self.rows.shape[1]):
            if c in self.categorical:
                columns.append(c)
                index.append(first[c] + codes[:, c])
            else:
                n_edges = len(self.discretiser.edges[self.discretiser.numerical.index(c)])
                for k in range(n_edges):
                    columns.append(c)
                    # "<= edge k" when the row's bin is at most k, else "> edge k".
                    index.append(first[c] + 2 * k + (codes[:, c] > k).to(torch.int64))
        self.m = len(columns)
        self.pred_column = torch.tensor(columns, dtype=torch.int64, device=self.device)
        self.pred_index = (
            torch.stack(index, dim=1).to(self.device)
            if index
            else torch.zeros(self.rows.shape[0], 0, dtype=torch.int64, device=self.device)
        )
        self.pred_lo = self.predicates.lo.to(self.device, torch.int32)[self.pred_index]
        self.pred_hi = self.predicates.hi.to(self.device, torch.int32)[self.pred_index]

    def __call__(self, *request: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The engine's sampler (``per_request`` is read off this object)."""
        return self.sample(*request)

    def sample(
        self,
        owner: torch.Tensor,
        features: torch.Tensor,
        order: torch.Tensor | None,
        stream: torch.Tensor,
        group: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One round of samples for every row: predicates satisfied, agreement, the sampled rows."""
        values, codes = self._conditioned(owner, order, stream, group)
        sample_codes = codes[:, self.pred_column]  # (N, M)
        present = (sample_codes >= self.pred_lo[owner]) & (sample_codes <= self.pred_hi[owner])
        _, labels = self.predict(values)
        return present, labels == self.target[owner], values

    def conditioned_rows(
        self, owner: torch.Tensor, order: torch.Tensor, stream: torch.Tensor, group: torch.Tensor
    ) -> torch.Tensor:
        """Training rows, with the anchor's columns taken from training rows that satisfy it.

        As Alibi's ``TabularSampler``: when at least as many training rows satisfy the
        whole anchor as samples are asked for, the anchor's columns come from a random
        one of them. Otherwise the request is filled level by level: every row
        satisfying the whole anchor once, then rows satisfying the anchor without its
        last-added column (that column drawn from rows satisfying its own predicates),
        and so on (the last level used drawn at random); when even all levels together
        fall short, every anchor column is drawn on its own. A column no training row
        satisfies gets the row's own category, or a uniform draw over the numerical
        column's training range, with a warning.

        ``owner``, ``stream`` and ``group`` are per sample ``(N,)``; ``order`` is per request
        ``(G, L)`` (the anchor's predicates in the order added, -1 padded), G = ``group[-1] + 1``.
        """
        return self._conditioned(owner, order, stream, group)[0]

    def _conditioned(
        self, owner: torch.Tensor, order: torch.Tensor, stream: torch.Tensor, group: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`conditioned_rows` and their codes: each sample starts as its base training row
        (values and codes, whole rows), and each anchor column is a cell (sample, column,
        training row it comes from), filled from the training rows and their codes at the end
        (no discretising of the samples)."""
        dev = self.device
        n = owner.shape[0]
        n_train = self.train.shape[0]
        key = self.sample_key
        length = order.shape[1]
        if length == 0 or n == 0:
            base = _random.integers(key, stream, 1, n_train)[:, 0]
            return self.train[base], self.train_codes[base]
        # One entry per request (rows of a request are adjacent).
        n_groups = int(group[-1]) + 1
        first_row = torch.zeros(n_groups, dtype=torch.int64, device=dev)
        first_row.scatter_reduce_(
            0, group, torch.arange(n, device=dev), reduce="amin", include_self=False
        )
        size = torch.bincount(group, minlength=n_groups)
        g_owner, g_order = owner[first_row], order  # (G,), (G, L)
        # Only as many positions as this round's longest anchor (bitsets are (G, L, W)).
        length = int((g_order >= 0).sum(1).max())
        # A sample's draws, hashed from its stream position: slot 0 its base row, slot 1 its
        # rank among the rows satisfying the anchor (or its level), and, for the samples of
        # requests that fall back, slot 2 + r its rank among the rows satisfying the anchor's
        # r-th known column (drawn below, for those samples only).
        random_bits = _random.bits(key, stream, 2)
        base = _random.integers_from_bits(random_bits[:, 0], n_train)
        if length == 0:
            return self.train[base], self.train_codes[base]
        g_order = g_order[:, :length]
        valid = g_order >= 0
        g_pred = torch.where(valid, self.pred_index[g_owner[:, None], g_order.clamp_min(0)], 0)
        g_col = torch.where(valid, self.predicates.column.to(dev)[g_pred], -1)
        cell_rows, cell_columns, cell_sources = [], [], []
        totals, pick = self._whole_anchor_rows(valid, g_pred)
        enough = totals >= size
        easy = torch.nonzero(enough[group]).flatten()
        if easy.numel():
            # The common case: every anchor column of the sample from one random training row
            # satisfying the whole anchor, in one write.
            source = pick(
                group[easy], _random.integers_from_bits(random_bits[easy, 1], totals[group[easy]])
            )
            column = g_col[group[easy]]  # (n_easy, L), -1 past the anchor
            cells = torch.nonzero(column >= 0)
            r, k = cells[:, 0], cells[:, 1]
            cell_rows.append(easy[r])
            cell_columns.append(column[r, k])
            cell_sources.append(source[r])
        hard = torch.nonzero(~enough).flatten()
        requests = unknown = None
        if hard.numel():
            requests = self._hard_requests(
                hard, owner, stream, group, size, first_row, random_bits, g_order, g_pred, g_col
            )
            rows_f, columns_f, sources_f, unknown = self._fallback_sources(requests)
            cell_rows.append(rows_f)
            cell_columns.append(columns_f)
            cell_sources.append(sources_f)
        values, codes = self.train[base], self.train_codes[base]
        if cell_rows:
            r, c, source = torch.cat(cell_rows), torch.cat(cell_columns), torch.cat(cell_sources)
            values[r, c] = self.train[source, c]
            codes[r, c] = self.train_codes[source, c]
        if unknown is not None and requests is not None:
            # Columns no training row satisfies: values of no training row, coded afresh.
            sub = values[requests.rows]
            self._fill_unknown(sub, requests, unknown)
            values[requests.rows] = sub
            codes[requests.rows] = self.discretiser.codes(sub, sorted(self.categorical)).to(
                codes.dtype
            )
        return values, codes

    def _hard_requests(
        self,
        hard: torch.Tensor,
        owner: torch.Tensor,
        stream: torch.Tensor,
        group: torch.Tensor,
        size: torch.Tensor,
        first_row: torch.Tensor,
        random_bits: torch.Tensor,
        g_order: torch.Tensor,
        g_pred: torch.Tensor,
        g_col: torch.Tensor,
    ) -> _Requests:
        """The requests that fall back (``hard``, renumbered 0..G'-1), with only as many positions
        as their longest anchor and, per sample, the draws of slots 2 + r (its rank among the rows
        satisfying its anchor's r-th known column)."""
        dev = self.device
        is_hard = torch.zeros(g_order.shape[0], dtype=torch.bool, device=dev)
        is_hard[hard] = True
        rows = torch.nonzero(is_hard[group]).flatten()
        hard_length = int((g_order[hard] >= 0).sum(1).max())
        renumber = torch.full((g_order.shape[0],), -1, dtype=torch.int64, device=dev)
        renumber[hard] = torch.arange(hard.numel(), device=dev)
        slots = torch.arange(2, hard_length + 2, device=dev)
        return _Requests(
            rows=rows,
            owner=owner[rows],
            stream=stream[rows],
            group=renumber[group[rows]],
            order=g_order[hard, :hard_length],
            pred=g_pred[hard, :hard_length],
            column=g_col[hard, :hard_length],
            size=size[hard],
            first_row=first_row[hard],
            random_bits=torch.cat(
                [random_bits[rows], _random.bits(self.sample_key, stream[rows], slots)], dim=1
            ),
        )

    def _whole_anchor_rows(
        self, valid: torch.Tensor, g_pred: torch.Tensor
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
        """Per request (``valid``, ``g_pred``: ``(G, L)``), how many training rows satisfy its whole
        anchor, and ``pick(request, rank)``: the rank-th of them (in row order) for each query.

        One-predicate anchors (most requests) read their rows off the predicate's list; longer
        ones AND the predicates' bitsets and select a set bit."""
        dev = self.device
        single = valid.sum(1) == 1
        totals = torch.where(single, self.pred_count[g_pred[:, 0]], 0)
        multi = torch.nonzero(~single).flatten()
        full = None
        if multi.numel():
            all_rows = self.all_rows
            m_valid, m_pred = valid[multi], g_pred[multi]
            full_bits = all_rows.expand(multi.numel(), self.train_bits.shape[1]).clone()
            for position in range(valid.shape[1]):
                full_bits &= torch.where(
                    m_valid[:, position, None], self.train_bits[m_pred[:, position]], all_rows
                )
            full = _BitSelector(full_bits)
            totals[multi] = full.totals
        position_in_multi = torch.full((valid.shape[0],), -1, dtype=torch.int64, device=dev)
        position_in_multi[multi] = torch.arange(multi.numel(), device=dev)

        def pick(request: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
            first_pred = g_pred[request, 0]
            source = self.pred_rows[
                (self.pred_start[first_pred] + rank).clamp_max(self.pred_rows.shape[0] - 1)
            ]
            if full is not None:
                longer = torch.nonzero(~single[request]).flatten()
                source[longer] = full.select(position_in_multi[request[longer]], rank[longer])
            return source

        return totals, pick

    def _fallback_sources(
        self, requests: _Requests
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, _AnchorColumns | None]:
        """Requests with fewer matching training rows than samples: Alibi's levels and fallbacks,
        as cells (sample, column, training row the value comes from) for their anchor columns.

        Named steps: the anchor's columns and the training rows satisfying each
        (:meth:`_anchor_columns`), the level each sample draws its row from
        (:meth:`_level_rows`), each column from that row or drawn on its own
        (:meth:`_fill_columns`). Also returns the columns when some of them no training row
        satisfies (filled by :meth:`_fill_unknown` once the values exist), else None.
        """
        columns = self._anchor_columns(requests)
        level_row, from_level = self._level_rows(requests, columns)
        r, c, source = self._fill_columns(requests, columns, level_row, from_level)
        return requests.rows[r], c, source, (columns if bool(columns.unknown.any()) else None)

    def _anchor_columns(self, requests: _Requests) -> _AnchorColumns:
        """Per request, the anchor's columns in order of first appearance, each with the training rows
        satisfying all of its predicates; the columns some training row satisfies ("known")
        compacted to the front, in order, the others set apart (as Alibi)."""
        dev = self.device
        g_order, g_pred, g_col = requests.order, requests.pred, requests.column
        n_groups, length = g_order.shape
        valid = g_order >= 0
        # Columns in order of first appearance, and each predicate's column rank.
        same = (g_col[:, :, None] == g_col[:, None, :]) & valid[:, :, None] & valid[:, None, :]
        earlier = torch.tril(torch.ones(length, length, dtype=torch.bool, device=dev), diagonal=-1)
        is_first = valid & ~(same & earlier).any(2)
        rank_of_first = torch.cumsum(is_first.to(torch.int64), 1) - 1
        itself = torch.eye(length, dtype=torch.bool, device=dev)
        first_pos = (same & (earlier | itself)).to(torch.int8).argmax(2)
        rank = rank_of_first.gather(1, first_pos)  # (G, L)
        words = self.train_bits.shape[1]
        col_bits = self.all_rows.expand(n_groups, length, words).clone()
        for position in range(length):
            bits = torch.where(
                valid[:, position, None], self.train_bits[g_pred[:, position]], self.all_rows
            )
            col_bits[torch.arange(n_groups, device=dev), rank[:, position].clamp_min(0)] &= bits
        # Column of each rank (a spare last slot takes the positions that are not first).
        col_of_rank = torch.full((n_groups, length + 1), -1, dtype=torch.int64, device=dev)
        col_of_rank.scatter_(
            1, torch.where(is_first, rank_of_first, length), torch.where(is_first, g_col, -1)
        )
        col_of_rank = col_of_rank[:, :length]
        col_used = torch.arange(length, device=dev) < is_first.sum(1)[:, None]
        col_word_counts = popcount(col_bits[..., None])  # (G, L, W)
        unknown = col_used & (col_word_counts.sum(-1) == 0)
        known = col_used & ~unknown
        known_order = torch.sort((~known).to(torch.int8), dim=1, stable=True).indices
        by_known = known_order[..., None].expand(-1, -1, words)
        k_bits = col_bits.gather(1, by_known)
        return _AnchorColumns(
            bits=k_bits,
            own=_BitSelector(
                k_bits.reshape(-1, words), col_word_counts.gather(1, by_known).reshape(-1, words)
            ),
            column=torch.where(
                known.gather(1, known_order), col_of_rank.gather(1, known_order), -1
            ),
            n_known=known.sum(1),
            unknown=unknown,
            column_of_rank=col_of_rank,
        )

    def _level_rows(
        self, requests: _Requests, columns: _AnchorColumns
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample, the training row its request's level gives it, and which of its columns take
        their value from that row.

        Level j holds the training rows satisfying the first ``n_known - j`` known columns; a
        request uses every row of level 0, then of level 1, ... (the last level used at random)
        until it has its samples; with enough rows at level 0, random rows of it.
        """
        dev = self.device
        group, size = requests.group, requests.size
        n_groups, length = requests.order.shape
        words = self.train_bits.shape[1]
        prefix = columns.bits.clone()
        for r in range(1, length):
            prefix[:, r] = prefix[:, r - 1] & columns.bits[:, r]
        levels_bits = _BitSelector(prefix.reshape(-1, words))
        prefix_count = levels_bits.totals.view(
            n_groups, length
        )  # rows satisfying the first r + 1 known columns
        n_known = columns.n_known
        level_prefix = (
            n_known[:, None] - 1 - torch.arange(length, device=dev)
        )  # prefix index of level j
        level_count = torch.where(
            level_prefix >= 0, prefix_count.gather(1, level_prefix.clamp_min(0)), 0
        )
        enough = level_count[:, 0] >= size
        cum = torch.cumsum(level_count, 1)
        # Per sample: its slot in the request, its level, its rank within the level.
        slot = requests.rows - requests.first_row[group]
        s_cum = cum[group]
        level = torch.searchsorted(s_cum, slot[:, None], right=True)[:, 0]
        level = torch.where(enough[group], 0, level)
        last = level.clamp(max=length - 1)[:, None]
        prev = torch.where(
            level > 0, s_cum.gather(1, (level - 1).clamp(0, length - 1)[:, None])[:, 0], 0
        )
        this_count = level_count[group].gather(1, last)[:, 0]
        fully_used = s_cum.gather(1, last)[:, 0] <= size[group]
        random_rank = _random.integers_from_bits(
            requests.random_bits[:, 1], this_count.clamp_min(1)
        )
        in_level = torch.where(enough[group] | ~fully_used, random_rank, slot - prev)
        has_level = (level < n_known[group]) & (n_known[group] > 0)
        which = group * length + level_prefix[group].gather(1, last)[:, 0].clamp_min(0)
        take = torch.nonzero(has_level).flatten()
        level_row = torch.zeros(requests.rows.shape[0], dtype=torch.int64, device=dev)
        if take.numel():
            level_row[take] = levels_bits.select(which[take], in_level[take])
        kept = n_known[group] - level  # known columns taken from the level row
        from_level = has_level[:, None] & (
            torch.arange(length, device=dev) < kept[:, None]
        )  # (n, L)
        return level_row, from_level

    def _fill_columns(
        self,
        requests: _Requests,
        columns: _AnchorColumns,
        level_row: torch.Tensor,
        from_level: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each known column of each sample: from its level's row, or (dropped by the level, or beyond
        every level) from a training row satisfying that column's predicates alone. Returns the
        cells: sample (among the requests' rows), column, training row."""
        group = requests.group
        length = requests.order.shape[1]
        own_count = columns.own.totals.view(-1, length)
        column = columns.column[group]  # (n, L): each sample's known columns, -1 past the last
        active = column >= 0
        # Every (sample, column) at once: its own random rank among the rows satisfying that
        # column alone (slot 2 + r of the sample's draws), used where its level drops it.
        own_rank = _random.integers_from_bits(
            requests.random_bits[:, 2 : 2 + length], own_count[group].clamp_min(1)
        )
        source = level_row[:, None].expand(-1, length).clone()
        alone = torch.nonzero(active & ~from_level)
        if alone.numel():
            r, k = alone[:, 0], alone[:, 1]
            source[r, k] = columns.own.select(group[r] * length + k, own_rank[r, k])
        hit = torch.nonzero(active)
        r, k = hit[:, 0], hit[:, 1]
        return r, column[r, k], source[r, k]

    def _fill_unknown(
        self, values: torch.Tensor, requests: _Requests, columns: _AnchorColumns
    ) -> None:
        """Columns of an anchor no training row satisfies: the row's category, or uniform over the range."""
        owner, stream, group = requests.owner, requests.stream, requests.group
        unknown, col_of_rank = columns.unknown, columns.column_of_rank
        key = self.sample_key
        length = unknown.shape[1]
        for r in range(length):
            cols = torch.where(unknown[group, r], col_of_rank[group, r], -1)
            rows = torch.nonzero(cols >= 0).flatten()
            if not rows.numel():
                continue
            for column in torch.unique(cols[rows]).tolist():
                sel = rows[cols[rows] == column]
                if column in self.categorical:
                    values[sel, column] = self.rows[owner[sel], column]
                else:
                    j = self.discretiser.numerical.index(column)
                    u = _random.uniform(
                        key,
                        stream[sel],
                        torch.tensor([1_000_000 + column], device=self.device),
                        torch.float64,
                    )
                    low, high = self.minimum[j], self.maximum[j]
                    values[sel, column] = (low + u[:, 0] * (high - low)).to(values.dtype)
                if column not in self.unknown_warned:
                    self.unknown_warned.add(column)
                    what = (
                        "using the row's own category"
                        if column in self.categorical
                        else "sampling uniformly over the column's training range"
                    )
                    warnings.warn(
                        f"AnchorTabular: no training row satisfies the anchor's predicates on column "
                        f"{self.config.feature_names[column]!r}; {what} (as Alibi does)",
                        RuntimeWarning,
                        stacklevel=6,
                    )

    # ----------------------------------------------------------------- results

    def _names(self, row: int, predicates: list[int]) -> tuple[list[str], list[int]]:
        """Alibi's names for one anchor (numerical columns merged into one range, at their first predicate)."""
        names_of = self.config.feature_names
        columns = self.pred_column.tolist()
        index = self.pred_index[row].tolist()
        lo, hi = self.predicates.lo.tolist(), self.predicates.hi.tolist()
        bounds: dict[int, list[float]] = {}
        for p in predicates:
            c = columns[p]
            if c in self.categorical:
                continue
            low, high = bounds.setdefault(c, [-np.inf, np.inf])
            if lo[index[p]] == 0:  # "<= edge k": bins up to k
                bounds[c][1] = min(high, hi[index[p]])
            else:  # "> edge k": bins from k + 1
                bounds[c][0] = max(low, lo[index[p]] - 1)
        names, features, seen = [], [], set()
        for p in predicates:
            c = columns[p]
            if c not in features:
                features.append(c)
            if c in self.categorical:
                value = self.categorical[c][lo[index[p]]]
                names.append(
                    value if ("<" in value or ">" in value) else f"{names_of[c]} = {value}"
                )
                continue
            if c in seen:
                continue
            seen.add(c)
            edges = self.discretiser.edges[self.discretiser.numerical.index(c)]
            low, high = bounds[c]
            if low > -np.inf and high < np.inf:
                names.append(f"{edges[int(low)]:.2f} < {names_of[c]} <= {edges[int(high)]:.2f}")
            elif high < np.inf:
                names.append(f"{names_of[c]} <= {edges[int(high)]:.2f}")
            else:
                names.append(f"{names_of[c]} > {edges[int(low)]:.2f}")
        return names, features

    def _data(self, result: EngineResult, predictions: torch.Tensor) -> dict[str, Any]:
        out = self.input_device
        b = self.rows.shape[0]
        names, features = [], []
        for i in range(b):
            n, f = self._names(i, result.anchors[i])
            names.append(n)
            features.append(f)
        store = result.store
        owner = store.view("owner")
        agree = store.view("agree")
        covered_true, covered_false = [], []
        # Only the anchors' own samples, grouped by instance (stable: in draw order).
        member_rows = torch.nonzero(result.members).flatten()
        order = member_rows[torch.argsort(owner[member_rows], stable=True)]
        owner_sorted, agree_sorted = owner[order], agree[order]
        for kind, kept in ((True, covered_true), (False, covered_false)):
            hits = order[agree_sorted == kind]
            counts = torch.bincount(owner_sorted[agree_sorted == kind], minlength=b).tolist()
            start = 0
            for i in range(b):
                rows = hits[start : start + min(counts[i], self.config.n_covered_ex)]
                start += counts[i]
                kept.append(
                    store.payload[rows].to(out)
                    if store.payload is not None
                    else self.rows[:0].to(out)
                )
        return {
            "anchor": names,
            "feature": features,
            "precision": result.precision.to(out),
            "coverage": result.coverage.to(out),
            "success": result.success.to(out),
            "target": self.target.to(out),
            "predictions": predictions.to(out),
            "covered_true": covered_true,
            "covered_false": covered_false,
            "n_samples": result.n_samples.to(out),
        }


def _check_codes(name: str, rows: torch.Tensor, categorical: dict[int, list[str]]) -> None:
    for column, names in categorical.items():
        values = rows[:, column]
        bad = (values != values.round()) | (values < 0) | (values >= len(names))
        if bool(bad.any()):
            first = int(torch.nonzero(bad)[0, 0])
            raise ValueError(
                f"{name}[{first}, {column}] = {values[first].item()!r}: column {column} is categorical with "
                f"{len(names)} categories, so its values must be integer codes 0..{len(names) - 1}"
            )


def _check_percentiles(disc_perc: Any) -> list[float]:
    if isinstance(disc_perc, (str, bytes)) or not isinstance(disc_perc, Sequence) or not disc_perc:
        raise TypeError(f"disc_perc must be a non-empty sequence of percentiles, got {disc_perc!r}")
    values = []
    for p in disc_perc:
        if not _checks.is_number(p) or not 0 <= float(p) <= 100:
            raise ValueError(f"disc_perc values must be percentiles in [0, 100], got {p!r}")
        values.append(float(p))
    return values


@functional_twin(AnchorTabular)
def anchor_tabular(
    predictor: Any,
    inputs: Any,
    train_data: Any,
    disc_perc: Sequence[float] = (25, 50, 75),
    **settings: Any,
) -> Explanation:
    """Functional form of :class:`AnchorTabular`: fit on ``train_data`` and explain ``inputs`` in one call.

    Examples:
        >>> train = np.array([[0, 1.0], [1, 5.0], [0, 2.0], [1, 7.0]] * 50, dtype=np.float32)
        >>> predict = lambda x: (x[:, 1] > 4).astype(np.int64)
        >>> anchor_tabular(predict, train[:1], train, feature_names=["Kind", "Size"], seed=0).anchor
        [['Size <= 3.50']]
    """
    return AnchorTabular(predictor, **settings).fit(train_data, disc_perc).explain(inputs)
