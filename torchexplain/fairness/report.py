"""One call (or ``torchexplain fairness``) that runs the three steps on a model and its data and
writes ``fairness.json`` and a self-contained ``fairness.html`` (pictures embedded).

1. **Data**: rows per group and label (small ones flagged), associations between all columns,
   clustered, with the protected columns' proxies named.
2. **Model, per group**: the metrics with bootstrap intervals, the disparities (demographic
   parity, equalized odds, equal opportunity), ROC curves, permutation importance per group.
3. **Explanations, per group**: the gap in mean score split by feature (KernelShap on one
   shared background), anchors per group, recourse burden (counterfactuals that may not change
   the protected or other immutable columns) and the attribute-flip probe.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchexplain._model_state import preserved_model_state
from torchexplain.fairness import plots
from torchexplain.fairness.data import associations, cluster_order, group_counts
from torchexplain.fairness.explanations import (
    anchors_by_group,
    attribute_flip,
    gap_by_feature,
    recourse_burden,
)
from torchexplain.fairness.importance import permutation_importance
from torchexplain.fairness.metrics import MetricFrame, roc_curve_by_group
from torchexplain.models.predictor import Predictor
from torchexplain.models.rows import Rows

__all__ = ["REPORT_METRICS", "ReportSettings", "fairness_report"]

#: the metrics the report shows per group
REPORT_METRICS = (
    "count",
    "selection_rate",
    "accuracy",
    "precision",
    "recall",
    "false_positive_rate",
    "specificity",
    "f1",
    "roc_auc",
)
#: groups with fewer rows are marked in the report's tables
SMALL_GROUP = 30
STEPS = ("data", "model", "importance", "gap", "anchors", "recourse", "flip")


class _Softmax(nn.Module):
    """Class probabilities from a model of logits (the explainers' view of the scores)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(rows), dim=-1)


class _Rescaled(nn.Module):
    """A model of raw rows called on rows scaled to [0, 1]: ``model(z * span + low)``."""

    def __init__(self, model: Any, low: torch.Tensor, span: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("low", low)
        self.register_buffer("span", span)

    def forward(self, scaled: torch.Tensor) -> torch.Tensor:
        return self.model(scaled * self.span + self.low)


@dataclasses.dataclass(frozen=True)
class ReportSettings:
    """What the report runs, and how much of it.

    Attributes:
        sensitive: the protected columns (indices or names).
        feature_names: every column's name.
        categorical_names: column index -> names of its codes (Alibi's ``category_map``).
        model_output: ``"logits"`` (a softmax gives the scores) or ``"probabilities"``.
        positive_class: the favourable class (its probability is the score).
        n_boot: bootstrap resamples of the metrics.
        n_repeats: shuffles per column in the permutation importance.
        n_explain, n_anchors, n_recourse: rows given to KernelShap, AnchorTabular and the
            counterfactual search (the first rows of ``X``).
        n_background: KernelShap's shared background rows (from ``train_data``).
        mutable_features: columns the counterfactuals may change (default: the numeric ones
            that are not protected).
        steps: which of ``STEPS`` to run.
        seed: every draw's seed.
        imbalance_threshold, association_threshold: what is flagged as small and as a proxy.
        device: where it runs (default CUDA when available).
    """

    sensitive: Sequence[int | str]
    feature_names: Sequence[str] | None = None
    categorical_names: dict[int, list[str]] | None = None
    model_output: str = "logits"
    positive_class: int = 1
    n_boot: int = 1000
    n_repeats: int = 10
    n_explain: int = 300
    n_anchors: int = 100
    n_recourse: int = 100
    n_background: int = 100
    mutable_features: Sequence[int] | None = None
    steps: Sequence[str] = STEPS
    seed: int = 0
    imbalance_threshold: float = 0.5
    association_threshold: float = 0.3
    device: str | None = None


class _Run:
    """The report's steps over one model and table; results collect in ``results``."""

    def __init__(self, model: Any, X: Any, y: Any, train_data: Any, settings: ReportSettings):
        self.settings = settings
        self.device = torch.device(
            settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.X = Rows.of(X, "X", integers=True, exact_dim=2, layout="(N, D)").values.to(self.device)
        n, d = self.X.shape
        self.y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
        if len(self.y) != n:
            raise ValueError(f"y has {len(self.y)} rows, X has {n}")
        train = self.X if train_data is None else train_data
        self.train = Rows.of(train, "train_data", integers=True, exact_dim=2).values.to(self.device)
        if settings.model_output not in ("logits", "probabilities"):
            raise ValueError(
                f"model_output must be 'logits' or 'probabilities', got {settings.model_output!r}"
            )
        bad = [s for s in settings.steps if s not in STEPS]
        if bad:
            raise ValueError(f"steps must be among {list(STEPS)}, got {bad}")
        self.model = model
        self.scores_model = _Softmax(model) if settings.model_output == "logits" else model
        self.names = list(settings.feature_names or [f"x{j}" for j in range(d)])
        if len(self.names) != d:
            raise ValueError(f"feature_names has {len(self.names)} names for {d} columns")
        self.categorical = {int(k): list(v) for k, v in (settings.categorical_names or {}).items()}
        self.sensitive = [self._column(c) for c in settings.sensitive]
        if not self.sensitive:
            raise ValueError("sensitive must name at least one protected column")
        self.results: dict[str, Any] = {"pictures": {}}
        self.timings: dict[str, float] = {}

    def _column(self, column: int | str) -> int:
        if isinstance(column, str):
            if column not in self.names:
                raise ValueError(f"sensitive column {column!r} is not one of {self.names}")
            return self.names.index(column)
        if not isinstance(column, (int, np.integer)) or not 0 <= column < len(self.names):
            raise ValueError(
                f"sensitive column {column!r} must be a name or an index < {len(self.names)}"
            )
        return int(column)

    def groups_of(self, column: int, rows: torch.Tensor | None = None) -> np.ndarray:
        """A column's values as group labels (category names where known)."""
        values = (self.X if rows is None else rows)[:, column].cpu().numpy()
        names = self.categorical.get(column)
        if names is None:
            return values
        return np.array([names[int(v)] for v in values], dtype=object)

    def picture(self, key: str, png: bytes) -> None:
        self.results["pictures"][key] = base64.b64encode(png).decode("ascii")

    # ------------------------------------------------------------------ steps

    def data_step(self) -> None:
        s = self.settings
        counts = {}
        for c in self.sensitive:
            result = group_counts(
                self.groups_of(c), self.y, threshold=s.imbalance_threshold
            ).to_dict()
            counts[self.names[c]] = result
            self.picture(f"counts_{self.names[c]}", plots.group_counts_chart(result, self.names[c]))
        assoc = associations(
            self.X.cpu().numpy(), categorical=list(self.categorical), feature_names=self.names
        )
        order, links = cluster_order(assoc)
        proxies = {
            self.names[c]: [
                self.names[j] for j in assoc.associated_with(c, s.association_threshold)
            ]
            for c in self.sensitive
        }
        self.assoc = assoc
        self.results["data"] = {
            "counts": counts,
            "associations": assoc.to_dict(),
            "order": order,
            "proxies": proxies,
        }
        self.picture("associations", plots.association_heatmap(assoc.to_dict(), order, links))

    def model_step(self) -> None:
        s = self.settings
        with preserved_model_state(self.model), torch.no_grad():
            scores = (
                Predictor.wrap(self.scores_model, device=self.device).outputs(self.X).double().cpu()
            )
        self.y_pred = scores.argmax(1).numpy()
        self.y_score = scores[:, s.positive_class].numpy()
        frames = {}
        sensitive_sets = [[c] for c in self.sensitive]
        if len(self.sensitive) > 1:
            sensitive_sets.append(list(self.sensitive))
        for columns in sensitive_sets:
            key = " x ".join(self.names[c] for c in columns)
            features = {self.names[c]: self.groups_of(c) for c in columns}
            frame = MetricFrame(
                metrics=list(REPORT_METRICS),
                y_true=self.y,
                y_pred=self.y_pred,
                y_score=self.y_score,
                sensitive_features=features,
                pos_label=s.positive_class,
                n_boot=s.n_boot,
                ci_quantiles=[0.025, 0.975],
                random_state=s.seed,
                device=self.device,
            )
            result = frame.to_dict()
            result["disparities"] = _disparities(frame)
            frames[key] = result
            self.picture(
                f"metrics_{key}",
                plots.metrics_chart(result, f"metrics by {key} (95% bootstrap interval)"),
            )
            groups, curves = roc_curve_by_group(
                self.y == s.positive_class,
                self.y_score,
                sensitive_features=features,
                pos_label=True,
            )
            auc = [row[REPORT_METRICS.index("roc_auc")] for row in result["by_group"]]
            self.picture(
                f"roc_{key}", plots.roc_chart(groups.label_strings(), curves, auc, f"ROC by {key}")
            )
        self.results["model"] = frames

    def importance_step(self) -> None:
        s = self.settings
        results = {}
        for c in self.sensitive:
            result = permutation_importance(
                self.model,
                self.X,
                self.y,
                n_repeats=s.n_repeats,
                seed=s.seed,
                feature_names=self.names,
                sensitive_features=self.groups_of(c),
                device=self.device,
            ).to_dict()
            results[self.names[c]] = result
            self.picture(
                f"importance_{self.names[c]}",
                plots.importance_chart(
                    result, f"permutation importance (accuracy) by {self.names[c]}"
                ),
            )
        self.results["importance"] = results

    def gap_step(self) -> None:
        from torchexplain.kernel_shap import KernelShap

        s = self.settings
        rows = self.X[: s.n_explain]
        background = self.train[
            torch.randperm(len(self.train), generator=torch.Generator().manual_seed(s.seed))[
                : s.n_background
            ].to(self.device)
        ]
        explainer = KernelShap(
            self.scores_model,
            feature_names=self.names,
            categorical_names=self.categorical or None,
            seed=s.seed,
        )
        explanation = explainer.fit(background).explain(rows)
        results = {}
        for c in self.sensitive:
            split = gap_by_feature(
                explanation, self.groups_of(c, rows), output=s.positive_class
            ).to_dict()
            results[self.names[c]] = split
            self.picture(
                f"gap_{self.names[c]}",
                plots.gap_chart(
                    split, f"what carries the gap in P(class {s.positive_class}) by {self.names[c]}"
                ),
            )
        self.results["gap"] = {
            "rows": int(rows.shape[0]),
            "background": int(background.shape[0]),
            "by": results,
        }

    def anchors_step(self) -> None:
        from torchexplain.anchors import AnchorTabular

        s = self.settings
        rows = self.X[: s.n_anchors]
        explainer = AnchorTabular(
            self.scores_model,
            feature_names=self.names,
            categorical_names=self.categorical or None,
            seed=s.seed,
        )
        explanation = explainer.fit(self.train).explain(rows)
        assoc = getattr(self, "assoc", None) or associations(
            self.X.cpu().numpy(), categorical=list(self.categorical), feature_names=self.names
        )
        self.results["anchors"] = {
            self.names[c]: anchors_by_group(
                explanation,
                self.groups_of(c, rows),
                protected=self.sensitive,
                associations=assoc,
                threshold=s.association_threshold,
            ).to_dict()
            for c in self.sensitive
        }
        for result in self.results["anchors"].values():
            result["protected"] = [self.names[j] for j in result["protected"]]
            result["proxies"] = [self.names[j] for j in result["proxies"]]

    def recourse_step(self) -> None:
        from torchexplain.counterfactual import Counterfactual

        s = self.settings
        d = self.X.shape[1]
        mutable = s.mutable_features
        if mutable is None:
            mutable = [j for j in range(d) if j not in self.categorical and j not in self.sensitive]
        immutable = [j for j in range(d) if j not in set(mutable)]
        rows = self.X[: s.n_recourse]
        # the search runs on columns scaled to [0, 1] by the training range: Adam's steps are
        # a share of each column's range (on raw columns a dollar of capital gain and an hour of
        # work would move alike), and the burden is the L1 change in range units
        low, high = self.train.min(0).values, self.train.max(0).values
        span = torch.where(high > low, high - low, torch.ones_like(high))
        explainer = Counterfactual(
            _Rescaled(self.scores_model, low, span),
            model_output="probabilities",
            target_class=s.positive_class,
            target_proba=0.75,
            tol=0.25,
            max_iter=500,
            max_lam_steps=5,
            feature_range=(0.0, 1.0),
            immutable_features=immutable,
        )
        scaled = (rows - low) / span
        results = {}
        for c in self.sensitive:
            results[self.names[c]] = recourse_burden(
                explainer,
                scaled,
                self.groups_of(c, rows),
                favourable_class=s.positive_class,
                distance="l1_distance",
            ).to_dict()
            self.picture(
                f"recourse_{self.names[c]}",
                plots.recourse_chart(results[self.names[c]], f"recourse by {self.names[c]}"),
            )
        self.results["recourse"] = {
            "rows": int(rows.shape[0]),
            "mutable": [self.names[j] for j in mutable],
            "by": results,
        }

    def flip_step(self) -> None:
        results = {}
        for c in self.sensitive:
            flip = attribute_flip(self.model, self.X, c).to_dict()
            names = self.categorical.get(c)
            flip["values"] = [names[int(v)] if names else v for v in flip["values"]]
            results[self.names[c]] = flip
        self.results["flip"] = results

    def run(self) -> dict[str, Any]:
        for step in STEPS:
            if step in self.settings.steps:
                start = time.perf_counter()
                getattr(self, f"{step}_step")()
                self.timings[step] = round(time.perf_counter() - start, 3)
        self.results["timings_s"] = self.timings
        self.results["sensitive"] = [self.names[c] for c in self.sensitive]
        self.results["rows"] = int(self.X.shape[0])
        self.results["device"] = str(self.device)
        return self.results


def _disparities(frame: MetricFrame) -> dict[str, float | None]:
    """Demographic parity, equalized odds and equal opportunity, from the frame's own numbers."""
    names = frame.metric_names
    by_diff = dict(zip(names, frame.difference().tolist()))
    by_ratio = dict(zip(names, frame.ratio().tolist()))
    clean = lambda v: None if v != v else v  # noqa: E731
    return {
        "demographic_parity_difference": clean(by_diff["selection_rate"]),
        "demographic_parity_ratio": clean(by_ratio["selection_rate"]),
        "equalized_odds_difference": clean(max(by_diff["recall"], by_diff["false_positive_rate"])),
        "equalized_odds_ratio": clean(min(by_ratio["recall"], by_ratio["false_positive_rate"])),
        "equal_opportunity_difference": clean(by_diff["recall"]),
        "equal_opportunity_ratio": clean(by_ratio["recall"]),
    }


def fairness_report(
    model: Any,
    X: Any,
    y: Any,
    out: str | Path,
    *,
    train_data: Any = None,
    title: str = "Fairness report",
    **settings: Any,
) -> dict[str, Any]:
    """Run the data, model and explanation steps and write ``fairness.json`` and ``fairness.html``.

    Args:
        model: an ``nn.Module`` (or callable) from rows ``(N, D)`` to class logits (or
            probabilities, ``model_output="probabilities"``).
        X: ``(N, D)`` the rows evaluated (a test set), categorical columns as codes.
        y: ``(N,)`` their labels.
        out: the folder written.
        train_data: rows the explainers learn from (KernelShap's background, the anchors'
            sampler, the counterfactuals' MAD and ranges); default ``X``.
        title: the page's title.
        **settings: :class:`ReportSettings` (``sensitive`` is required).

    Returns:
        The JSON written (without the pictures), with ``paths``.
    """
    run = _Run(model, X, y, train_data, ReportSettings(**settings))
    results = run.run()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pictures = results.pop("pictures")
    json_path = out / "fairness.json"
    json_path.write_text(json.dumps(results, indent=1, default=_json_default))
    html_path = out / "fairness.html"
    html_path.write_text(render_html(title, results, pictures))
    results["paths"] = {"json": str(json_path), "html": str(html_path)}
    return results


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value).__name__}")


# ----------------------------------------------------------------------------- HTML

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:0.6em 0;font-size:0.85em}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.flag{color:#c00000;font-weight:bold}
.note{color:#555;font-size:0.9em}img{max-width:100%;margin:0.4em 0}
"""


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], flags: Sequence[bool] | None = None
) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="flag"' if flags and flags[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_number(v)}</td>" for v in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _image(pictures: dict[str, str], key: str, alt: str) -> str:
    if key not in pictures:
        return ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{pictures[key]}">'


def _data_html(data: dict[str, Any], pictures: dict[str, str]) -> list[str]:
    parts = ["<h2>1. The data</h2>"]
    for name, counts in data["counts"].items():
        rows = [
            [g, c, s, *cells]
            for g, c, s, cells in zip(
                counts["groups"], counts["counts"], counts["shares"], counts["label_counts"]
            )
        ]
        parts.append(f"<h3>Rows by {html.escape(name)}</h3>")
        parts.append(
            _table(
                ["group", "rows", "share", *[f"label {v}" for v in counts["labels"]]],
                rows,
                counts["flagged"],
            )
        )
        parts.append(_image(pictures, f"counts_{name}", f"rows by {name}"))
    parts.append("<h3>Associations between columns</h3>")
    parts.append(
        '<p class="note">Pearson r (numeric pairs), Cramér\'s V (categorical pairs), correlation ratio eta (mixed); columns ordered by average-linkage clustering on 1 - |association|.</p>'
    )
    for name, proxies in data["proxies"].items():
        parts.append(
            f"<p>Columns associated with <b>{html.escape(name)}</b>: {html.escape(', '.join(proxies) or 'none')}</p>"
        )
    parts.append(_image(pictures, "associations", "association heat map"))
    return parts


def _model_html(model: dict[str, Any], pictures: dict[str, str]) -> list[str]:
    parts = ["<h2>2. The model, per group</h2>"]
    for key, frame in model.items():
        parts.append(f"<h3>By {html.escape(key)}</h3>")
        low, high = frame["by_group_ci"][0], frame["by_group_ci"][-1]
        rows, small = [], []
        count = frame["metrics"].index("count")
        for g, group in enumerate(frame["groups"]):
            cells = [group]
            for m, value in enumerate(frame["by_group"][g]):
                if m == count:
                    cells.append(int(value))
                else:
                    cells.append(f"{_number(value)} [{_number(low[g][m])}, {_number(high[g][m])}]")
            rows.append(cells)
            small.append(frame["by_group"][g][count] < SMALL_GROUP)
        overall = [int(v) if i == count else v for i, v in enumerate(frame["overall"])]
        rows.append(["all rows", *overall])
        small.append(False)
        parts.append(_table(["group", *frame["metrics"]], rows, small))
        if any(small):
            parts.append(
                f'<p class="note flag">Groups in red have fewer than {SMALL_GROUP} rows: their metrics, and any disparity that involves them, rest on a handful of people (see the intervals).</p>'
            )
        parts.append(_table(["disparity", "value"], list(frame["disparities"].items())))
        parts.append(_image(pictures, f"metrics_{key}", f"metrics by {key}"))
        parts.append(_image(pictures, f"roc_{key}", f"ROC by {key}"))
    return parts


def _explanations_html(results: dict[str, Any], pictures: dict[str, str]) -> list[str]:
    parts = ["<h2>3. Explanations, per group</h2>"]
    for name in results.get("importance", {}):
        parts.append(f"<h3>Permutation importance by {html.escape(name)}</h3>")
        parts.append(_image(pictures, f"importance_{name}", f"importance by {name}"))
    parts += _gap_html(results.get("gap"), pictures)
    parts += _anchors_html(results.get("anchors", {}))
    parts += _recourse_html(results.get("recourse"), pictures)
    parts += _flip_html(results.get("flip", {}))
    return parts


def _gap_html(gap: dict[str, Any] | None, pictures: dict[str, str]) -> list[str]:
    parts: list[str] = []
    if gap:
        for name, split in gap["by"].items():
            parts.append(f"<h3>What carries the gap, by {html.escape(name)}</h3>")
            parts.append(
                f"<p class=\"note\">KernelShap on {gap['rows']} rows with one shared background of {gap['background']} rows: each group's mean SHAP values minus the reference group's ({html.escape(split['reference'])}) add up to the gap in mean score (residual column).</p>"
            )
            rows = [
                [g, o, gp, f"{r:.1e}"]
                for g, o, gp, r in zip(
                    split["groups"], split["mean_output"], split["gap"], split["residual"]
                )
            ]
            parts.append(_table(["group", "mean score", "gap", "residual"], rows))
            parts.append(_image(pictures, f"gap_{name}", f"gap split by {name}"))
    return parts


def _anchors_html(anchors_by: dict[str, Any]) -> list[str]:
    parts: list[str] = []
    for name, anchors in anchors_by.items():
        parts.append(f"<h3>Anchors by {html.escape(name)}</h3>")
        parts.append(
            f'<p class="note">protected: {html.escape(", ".join(anchors["protected"]))}; proxies: {html.escape(", ".join(anchors["proxies"]) or "none")}</p>'
        )
        rows = list(
            zip(
                anchors["groups"],
                anchors["count"],
                anchors["precision"],
                anchors["coverage"],
                anchors["success"],
                anchors["uses_protected"],
                anchors["uses_proxy"],
            )
        )
        parts.append(
            _table(
                [
                    "group",
                    "anchors",
                    "precision",
                    "coverage",
                    "success",
                    "uses protected",
                    "uses proxy only",
                ],
                rows,
            )
        )
    return parts


def _recourse_html(recourse: dict[str, Any] | None, pictures: dict[str, str]) -> list[str]:
    parts: list[str] = []
    if recourse:
        for name, burden in recourse["by"].items():
            parts.append(f"<h3>Recourse by {html.escape(name)}</h3>")
            parts.append(
                f'<p class="note">Counterfactuals that change only {html.escape(", ".join(recourse["mutable"]))}, for the unfavourable rows among the first {recourse["rows"]} (towards P(favourable) of at least 0.5); the burden is the mean L1 change of those found, each column\'s change a share of its training range. Failures are counted, not dropped.</p>'
            )
            rows = list(
                zip(
                    burden["groups"],
                    burden["unfavourable"],
                    burden["found"],
                    burden["failed"],
                    burden["success_rate"],
                    burden["burden"],
                )
            )
            parts.append(
                _table(
                    [
                        "group",
                        "unfavourable",
                        "found",
                        "failed",
                        "success rate",
                        "burden (L1, range units)",
                    ],
                    rows,
                )
            )
            parts.append(_image(pictures, f"recourse_{name}", f"recourse by {name}"))
    return parts


def _flip_html(flips: dict[str, Any]) -> list[str]:
    parts: list[str] = []
    for name, flip in flips.items():
        parts.append(f"<h3>Attribute flip: {html.escape(name)}</h3>")
        parts.append(
            '<p class="note">Only this column changes; a probe of the model\'s direct use of it, not counterfactual fairness.</p>'
        )
        rows = [
            [v, c, a, *r]
            for v, c, a, r in zip(
                flip["values"], flip["count"], flip["any_flip_rate"], flip["flip_rate"]
            )
        ]
        parts.append(
            _table(["from", "rows", "any change", *[f"to {v}" for v in flip["values"]]], rows)
        )
    return parts


def render_html(title: str, results: dict[str, Any], pictures: dict[str, str]) -> str:
    """The report as one HTML page with the pictures inline."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f'<p class="note">{results["rows"]} rows; protected: {html.escape(", ".join(results["sensitive"]))}; device {results["device"]}; step times (s): {html.escape(json.dumps(results["timings_s"]))}</p>',
    ]
    if "data" in results:
        parts += _data_html(results["data"], pictures)
    if "model" in results:
        parts += _model_html(results["model"], pictures)
    parts += _explanations_html(results, pictures)
    parts.append("</body></html>")
    return "\n".join(parts)
