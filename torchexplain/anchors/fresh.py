"""Anchors' precision re-estimated on fresh samples: each anchor's rule applied to samples the
search never saw (another seed, drawn by the same sampler, in requests of the size the search
makes), and the share on which the model keeps its prediction.

The search's own precision estimate rests on the samples that decided the anchor; re-drawing
shows how much of it holds (on the census table, 6% of successful anchors fall more than 0.05
below the threshold on fresh samples, Alibi's 10%).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from torchexplain import _random
from torchexplain.explanation import Explanation
from torchexplain.models import Rows

__all__ = ["TabularRules", "fresh_precision"]

#: streams of the fresh draws start here, far from any stream a search uses
_FRESH_STREAMS = 10**9


class TabularRules:
    """An AnchorTabular explainer's view of some rows: their predicates, a sampler of fresh rows
    satisfying a rule, and anchors' names (ours or Alibi's, which read alike) mapped back to
    predicates.

    Args:
        explainer: a fitted :class:`~torchexplain.AnchorTabular`.
        rows: ``(B, D)`` the rows explained.
        seed: the fresh samples' seed.
    """

    def __init__(self, explainer: Any, rows: Any, seed: int = 12345) -> None:
        from torchexplain.anchors.tabular import _TabularRun

        config = dataclasses.replace(explainer._settings_for_call({}), seed=seed)
        self.run = _TabularRun(explainer, config, Rows.of(rows, integers=True))
        with torch.no_grad():
            _, self.run.target = self.run.predict(self.run.rows)
        self.run._instance_predicates()
        self.run.sample_key = _random.stream_key(seed, 12)

    def predicates_of(self, i: int, names: list[str]) -> list[int] | None:
        """The predicates an anchor written as ``names`` means for row ``i`` (None: a name this
        explainer does not write)."""
        run = self.run
        lookup: dict[str, list[int]] = {}
        for p in range(run.m):
            lookup[run._names(i, [p])[0][0]] = [p]
            for q in range(p + 1, run.m):
                if run.pred_column[q] == run.pred_column[p]:
                    lookup.setdefault(run._names(i, [p, q])[0][0], [p, q])
        chosen: list[int] = []
        for name in names:
            if name not in lookup:
                return None
            chosen += lookup[name]
        return chosen

    def precision(self, i: int, predicates: list[int], n: int = 1000, batch: int = 100) -> float:
        """Row ``i``'s prediction kept on ``n`` fresh samples satisfying ``predicates``, drawn in
        requests of ``batch`` as the search draws them (Alibi's sampler fills a request larger
        than the training rows matching the rule with partial matches, so the size matters)."""
        run = self.run
        owner = torch.full((n,), i, dtype=torch.int64, device=run.device)
        stream = torch.arange(n, device=run.device) + _FRESH_STREAMS
        group = torch.arange(n, device=run.device) // batch
        order = torch.tensor([predicates or [-1]] * (int(group[-1]) + 1), device=run.device)
        values = run.conditioned_rows(owner, order, stream, group)
        with torch.no_grad():
            _, labels = run.predict(values)
        return float((labels == run.target[i]).float().mean())


def _text_precision(
    explainer: Any, texts: list[str], explanation: Explanation, n: int, seed: int
) -> list:
    from torchexplain.anchors.text import _TextRun
    from torchexplain.anchors.tokens import tokenize

    config = dataclasses.replace(explainer._settings_for_call({}), seed=seed)
    device = torch.device(config.device or "cpu")  # where AnchorText.explain runs
    tokens = [tokenize(t, config.nlp) for t in texts]
    table = explainer._vectors(config, device) if config.sampling_strategy == "similarity" else None
    lm = explainer._language_model(config) if config.sampling_strategy == "language_model" else None
    run = _TextRun(explainer.model, tokens, config, device, table, lm)
    out: list[float | None] = []
    with torch.no_grad():
        run.target = explanation.target.to(device)
        run.calls = np.ones(len(texts), dtype=np.int64)
        run.evaluated = np.ones(len(texts), dtype=np.int64)
        run.cache = None
        for i in range(len(texts)):
            if not bool(explanation.success[i]):
                out.append(None)
                continue
            features = torch.zeros(n, run.m, dtype=torch.bool, device=device)
            features[:, explanation.feature[i]] = True
            _, agree, _ = run.sample(
                torch.full((n,), i, device=device),
                features,
                None,
                torch.arange(n, device=device),
                torch.zeros(n, dtype=torch.int64, device=device),
            )
            out.append(float(agree.double().mean()))
    return out


def fresh_precision(
    explainer: Any,
    inputs: Any,
    explanation: Explanation,
    *,
    n_samples: int = 1000,
    seed: int = 12345,
) -> torch.Tensor:
    """Each successful anchor's precision on ``n_samples`` fresh samples.

    Args:
        explainer: the :class:`~torchexplain.AnchorTabular` or :class:`~torchexplain.AnchorText`
            that explained ``inputs``.
        inputs: what was explained (rows, or a list of texts).
        explanation: its explanation.
        n_samples: fresh samples per anchor.
        seed: their seed (use another than the search's).

    Returns:
        ``(B,)`` float64 precisions, NaN where the search did not reach its threshold.
    """
    name = getattr(explainer, "name", type(explainer).__name__)
    if name == "AnchorTabular":
        rules = TabularRules(explainer, inputs, seed=seed)
        values = []
        for i, (names, ok) in enumerate(zip(explanation.anchor, explanation.success.tolist())):
            predicates = rules.predicates_of(i, names) if ok else None
            values.append(
                float("nan") if predicates is None else rules.precision(i, predicates, n_samples)
            )
        return torch.tensor(values, dtype=torch.float64)
    if name == "AnchorText":
        values = _text_precision(explainer, list(inputs), explanation, n_samples, seed)
        return torch.tensor([float("nan") if v is None else v for v in values], dtype=torch.float64)
    raise TypeError(f"fresh_precision re-draws AnchorTabular and AnchorText anchors, got {name}")
