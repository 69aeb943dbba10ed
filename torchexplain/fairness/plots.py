"""The report's pictures, with matplotlib (``pip install "torchexplain[fairness]"``).

Each function draws one figure and returns it as PNG bytes, so the report can embed it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torchexplain._plotting import COLOURS as _COLOURS
from torchexplain._plotting import png as _png
from torchexplain._plotting import pyplot as _pyplot

__all__ = [
    "association_heatmap",
    "group_counts_chart",
    "metrics_chart",
    "roc_chart",
    "importance_chart",
    "gap_chart",
    "recourse_chart",
]


def group_counts_chart(counts: dict[str, Any], title: str) -> bytes:
    """Rows per group, split by label; flagged groups' names in red."""
    plt = _pyplot()
    groups, cells = counts["groups"], np.asarray(counts["label_counts"], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(groups)))
    left = np.zeros(len(groups))
    for j, label in enumerate(counts["labels"]):
        ax.barh(groups, cells[:, j], left=left, color=_COLOURS[j % 8], label=f"label {label}")
        left += cells[:, j]
    for tick, flagged in zip(ax.get_yticklabels(), counts["flagged"]):
        tick.set_color("#c00000" if flagged else "black")
    ax.invert_yaxis()
    ax.set_xlabel("rows")
    ax.set_title(title + f" (red: < {counts['threshold']:g} x the largest group)")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def association_heatmap(assoc: dict[str, Any], order: list[int], links: Any) -> bytes:
    """The association matrix in clustered order, with the dendrogram above it."""
    plt = _pyplot()
    names = [assoc["names"][i] for i in order]
    values = np.array(assoc["values"], dtype=float)[np.ix_(order, order)]
    fig = plt.figure(figsize=(7.5, 8))
    top = fig.add_axes([0.2, 0.8, 0.62, 0.15])
    if links is not None:
        from scipy.cluster.hierarchy import dendrogram

        dendrogram(links, ax=top, no_labels=True, color_threshold=0.7)
    top.set_axis_off()
    ax = fig.add_axes([0.2, 0.1, 0.62, 0.68])
    image = ax.imshow(np.abs(np.nan_to_num(values)), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            if i != j and np.isfinite(values[i, j]):
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if abs(values[i, j]) < 0.6 else "black",
                )
    bar = fig.add_axes([0.84, 0.1, 0.03, 0.68])
    fig.colorbar(image, cax=bar, label="|association| (|r|, Cramér's V, eta)")
    return _png(fig)


def metrics_chart(frame: dict[str, Any], title: str) -> bytes:
    """Each metric per group (bars), with the bootstrap interval when there is one."""
    plt = _pyplot()
    metrics, groups = frame["metrics"], frame["groups"]
    shown = [m for m in metrics if m != "count"]
    values = np.array(frame["by_group"], dtype=float)
    lows = highs = None
    if "by_group_ci" in frame:
        ci = np.array(frame["by_group_ci"], dtype=float)
        lows, highs = ci[0], ci[-1]
    fig, ax = plt.subplots(figsize=(min(13, max(6, 0.35 * len(shown) * (len(groups) + 1))), 3.6))
    width = 0.8 / len(groups)
    x = np.arange(len(shown))
    for g, name in enumerate(groups):
        cols = [metrics.index(m) for m in shown]
        heights = values[g, cols]
        errors = None
        if lows is not None:
            errors = np.abs(np.stack([heights - lows[g, cols], highs[g, cols] - heights]))
        ax.bar(
            x + (g - (len(groups) - 1) / 2) * width,
            np.nan_to_num(heights),
            width,
            yerr=None if errors is None else np.nan_to_num(errors),
            capsize=2,
            label=name,
            color=_COLOURS[g % 8],
        )
    ax.set_xticks(x, shown, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=min(5, len(groups)), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return _png(fig)


def roc_chart(
    groups: list[str], curves: list[tuple[Any, Any, Any]], aucs: list[Any], title: str
) -> bytes:
    """Each group's ROC curve (false positive rate across, true positive rate up)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for g, (fpr, tpr, _) in enumerate(curves):
        auc = aucs[g]
        label = f"{groups[g]} (AUC {auc:.3f})" if auc is not None else f"{groups[g]} (AUC n/a)"
        ax.plot(np.asarray(fpr), np.asarray(tpr), color=_COLOURS[g % 8], label=label)
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def importance_chart(result: dict[str, Any], title: str) -> bytes:
    """Permutation importance per feature: overall, and per group when there are groups."""
    plt = _pyplot()
    names = result["feature_names"]
    order = np.argsort(result["importances_mean"])
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.3 * len(names)))
    series = [("all rows", result["importances_mean"])]
    for g, name in enumerate(result.get("groups", [])):
        series.append((name, result["importances_mean_by_group"][g]))
    height = 0.8 / len(series)
    y = np.arange(len(names))
    for s, (label, values) in enumerate(series):
        values = np.asarray(values)[order]
        ax.barh(
            y + (s - (len(series) - 1) / 2) * height,
            values,
            height,
            label=label,
            color="#444444" if s == 0 else _COLOURS[(s - 1) % 8],
        )
    ax.set_yticks(y, [names[i] for i in order], fontsize=8)
    ax.set_xlabel("drop in score when the column is shuffled")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _png(fig)


def gap_chart(split: dict[str, Any], title: str) -> bytes:
    """Each feature's part of each group's gap to the reference group (signed bars)."""
    plt = _pyplot()
    names, groups = split["feature_names"], split["groups"]
    others = [g for g in range(len(groups)) if g != groups.index(split["reference"])]
    contributions = np.array(split["contributions"], dtype=float)
    order = np.argsort(-np.abs(contributions[others]).max(0))
    fig, ax = plt.subplots(figsize=(6.4, 0.8 + 0.3 * len(names)))
    height = 0.8 / max(1, len(others))
    y = np.arange(len(names))
    for s, g in enumerate(others):
        ax.barh(
            y + (s - (len(others) - 1) / 2) * height,
            contributions[g, order],
            height,
            color=_COLOURS[g % 8],
            label=f"{groups[g]} - {split['reference']}: gap {split['gap'][g]:+.3f}",
        )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, [names[i] for i in order], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("part of the gap in mean score")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return _png(fig)


def recourse_chart(burden: dict[str, Any], title: str) -> bytes:
    """Per group: the share of unfavourable rows with a counterfactual, and its mean distance."""
    plt = _pyplot()
    groups = burden["groups"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 0.8 + 0.4 * len(groups)))
    colours = [_COLOURS[g % 8] for g in range(len(groups))]
    left.barh(groups, np.nan_to_num(np.array(burden["success_rate"], dtype=float)), color=colours)
    left.set_xlim(0, 1)
    left.set_xlabel("counterfactual found (share)")
    right.barh(groups, np.nan_to_num(np.array(burden["burden"], dtype=float)), color=colours)
    right.set_xlabel("burden: mean L1 change of the counterfactuals found")
    right.set_yticks([])
    left.invert_yaxis()
    right.invert_yaxis()
    fig.suptitle(title)
    return _png(fig)
