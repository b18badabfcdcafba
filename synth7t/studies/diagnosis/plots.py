"""Figures of the diagnosis analysis: score distributions per image type (Figure 6A analogue) and the baseline's
feature importances with each type's deviation from them (Figure 6B/C analogue).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from .compare import importance_deviation
from .crossval import METRICS, CVResult


def plot_accuracy_distributions(scores_by_type: Mapping[str, CVResult], *, metrics: Sequence[str] = METRICS,
                                order: Optional[Sequence[str]] = None, labels: Optional[Mapping[str, str]] = None,
                                n_classes: Optional[int] = None, majority: Optional[float] = None, axes=None):
    """Figure 6A analogue: violins with boxplots of each metric over repeats, one panel per metric.

    Chance lines: balanced accuracy ``1 / n_classes`` (any classifier that ignores the features); accuracy, the
    majority-class share ``majority`` (always answering the largest class), when given.

    Args:
        scores_by_type: image type -> :class:`CVResult`.
        metrics: panels.
        order: image types on the x axis (default: the mapping's order).
        labels: display names of the image types.
        n_classes: number of classes (default: from the first result).
        majority: proportion of the largest class.
    """
    import matplotlib.pyplot as plt

    order = list(order or scores_by_type)
    labels = dict(labels or {})
    n_classes = n_classes or len(next(iter(scores_by_type.values())).classes)
    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(1.2 + 1.5 * len(order) * len(metrics), 3.6),
                                 squeeze=False)
        axes = axes[0]
    else:
        axes = np.ravel(axes)
        fig = axes[0].figure
    for ax, m in zip(axes, metrics):
        data = [scores_by_type[t].scores[m].to_numpy(float) for t in order]
        pos = np.arange(1, len(order) + 1)
        if all(len(d) > 1 and np.ptp(d) > 0 for d in data):
            parts = ax.violinplot(data, positions=pos, showextrema=False, widths=0.8)
            for body in parts["bodies"]:
                body.set_alpha(0.35)
        ax.boxplot(data, positions=pos, widths=0.25, showfliers=False, medianprops={"color": "k"})
        chance = 1.0 / n_classes if m == "balanced_accuracy" else majority
        if chance is not None:
            what = f"chance (1/{n_classes})" if m == "balanced_accuracy" else "majority class"
            ax.axhline(chance, color="grey", ls="--", lw=1, label=what)
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(pos, [labels.get(t, t) for t in order], rotation=20, ha="right", fontsize=8)
        ax.set_title(m.replace("_", " "))
        ax.set_ylabel("score")
        lo = min([chance or 1.0] + [float(np.min(d)) for d in data])
        ax.set_ylim(max(0.0, lo - 0.05), min(1.0, max(float(np.max(d)) for d in data) + 0.05))
    fig.tight_layout()
    return fig


def plot_importances(imp_by_type, *, baseline: str = "3T", kind: str = "impurity", top: Optional[int] = None,
                     labels: Optional[Mapping[str, str]] = None, axes=None):
    """Figure 6B/C analogue: the baseline's mean importance per feature, and each type's deviation from it.

    Left panel: horizontal bars of the baseline's mean importance, features sorted by it (largest on top).
    Right panel: per feature, horizontal bars of each other type's importance minus the baseline's, with the
    2.5–97.5 percentile band of the per-repeat differences as error bars when available.

    Args:
        imp_by_type: as for :func:`importance_deviation`.
        baseline: the reference type.
        kind: ``"impurity"`` or ``"permutation"``.
        top: show only the ``top`` features of the baseline (default all).
        labels: display names of the image types.
    """
    import matplotlib.pyplot as plt

    dev = importance_deviation(imp_by_type, baseline=baseline, kind=kind)
    labels = dict(labels or {})
    base = dev[dev["image_type"] == baseline].set_index("feature")["importance"].sort_values(ascending=False)
    feats = list(base.index[:top] if top else base.index)
    others = [t for t in dict.fromkeys(dev["image_type"]) if t != baseline]
    n_panels = 2 if others else 1
    if axes is None:
        fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels + 1.5, 0.9 + 0.22 * len(feats)),
                                 squeeze=False, sharey=True)
        axes = axes[0]
    else:
        axes = np.ravel(axes)
        fig = axes[0].figure
    ypos = np.arange(len(feats))[::-1]
    axes[0].barh(ypos, base.reindex(feats).to_numpy(), color="tab:red", alpha=0.75)
    axes[0].set_yticks(ypos, feats, fontsize=7)
    axes[0].set_xlabel(f"{'mean decrease in impurity' if kind == 'impurity' else 'permutation importance'}")
    axes[0].set_title(f"{labels.get(baseline, baseline)}: importance", fontsize=9)
    if others:
        ax = axes[1]
        h = 0.8 / len(others)
        for i, t in enumerate(others):
            d = dev[dev["image_type"] == t].set_index("feature").reindex(feats)
            y = ypos + 0.4 - h * (i + 0.5)
            err = None
            if d["deviation_q025"].notna().all():
                err = np.vstack([d["deviation"] - d["deviation_q025"], d["deviation_q975"] - d["deviation"]])
                err = np.clip(err, 0, None)
            ax.barh(y, d["deviation"].to_numpy(), height=h, xerr=err, label=labels.get(t, t),
                    error_kw={"lw": 0.6, "capsize": 0, "ecolor": "0.4"})
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"importance minus {labels.get(baseline, baseline)}'s")
        ax.set_title("deviation from " + labels.get(baseline, baseline), fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
