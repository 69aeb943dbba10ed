"""The anchor search's settings, shared by every anchor explainer (Alibi's names and defaults)."""

from __future__ import annotations

import dataclasses
from typing import Any

from torchexplain import _checks
from torchexplain.settings import Settings, setting

__all__ = ["AnchorSearchSettings"]

_PROBABILITY = _checks.number(0.0, 1.0, low_open=True, high_open=True)


@dataclasses.dataclass(frozen=True)
class AnchorSearchSettings(Settings):
    """Per-call settings of the KL-LUCB beam search (see :mod:`torchexplain.anchors.engine`)."""

    threshold: float = setting(
        0.95, "precision an anchor must reach, in (0, 1)", per_call=True, check=_PROBABILITY
    )
    delta: float = setting(
        0.1,
        "confidence budget of the precision bounds, in (0, 1)",
        per_call=True,
        check=_PROBABILITY,
    )
    tau: float = setting(
        0.15,
        "KL-LUCB tolerance epsilon: arm selection stops when the bounds of the best arms overlap by less "
        "than this, > 0 (Alibi's name; the paper's tau is threshold)",
        per_call=True,
        check=_checks.number(low=0.0, low_open=True),
    )
    batch_size: int = setting(
        100, "samples drawn per arm pull", per_call=True, check=_checks.integer(1)
    )
    coverage_samples: int = setting(
        10000, "rows used to estimate coverage", per_call=True, check=_checks.integer(1)
    )
    beam_size: int = setting(
        1, "anchors kept per anchor size", per_call=True, check=_checks.integer(1)
    )
    stop_on_first: bool = setting(
        False, "stop at the first valid anchor", per_call=True, check=_checks.boolean()
    )
    max_anchor_size: int | None = setting(
        None,
        "largest anchor tried (None: every feature)",
        per_call=True,
        check=_checks.integer(1, optional=True),
    )
    min_samples_start: int = setting(
        100, "samples for the empty-anchor check", per_call=True, check=_checks.integer(1)
    )
    precision_samples: str = setting(
        "reuse",
        "which samples estimate a candidate's precision: 'reuse' (Alibi's rule: a new candidate starts "
        "from its parent's samples that satisfy the added feature; biased upward where the sampler "
        "draws the added feature's column with the rest of its row, as the tabular one does) or "
        "'fresh' (only samples drawn for the candidate itself: unbiased, more model calls)",
        per_call=True,
        check=_checks.choice("reuse", "fresh"),
    )
    n_covered_ex: int = setting(
        10,
        "examples kept of each kind (prediction kept / changed)",
        per_call=True,
        check=_checks.integer(0),
    )

    def engine_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~torchexplain.anchors.engine.run_engine`."""
        return {
            "threshold": self.threshold,
            "delta": self.delta,
            "tau": self.tau,
            "batch_size": self.batch_size,
            "beam_size": self.beam_size,
            "min_samples_start": self.min_samples_start,
            "max_anchor_size": self.max_anchor_size,
            "stop_on_first": self.stop_on_first,
            "precision_samples": self.precision_samples,
        }
