"""Figures of the multi-view chapter sections (beyond the paper): close-ups in the planes where slicing shows, the
uncertainty map beside the absolute error, its calibration, and the through-plane ratios.

Each function takes ``axes=None`` (or ``ax=None``) and returns the figure, like :mod:`synth7t.plots.figures`.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ..data.planes import PLANES

__all__ = ["plot_plane_closeups", "plot_uncertainty_vs_error", "plot_calibration", "plot_through_plane"]

#: how each plane's slice through a voxel is cut from an ``(X, Y, Z)`` volume and shown (rows of the image: up)
_CUTS = {
    "axial": lambda v, x, y, z, h: v[max(x - h, 0):x + h, max(y - h, 0):y + h, z].T,
    "coronal": lambda v, x, y, z, h: v[max(x - h, 0):x + h, y, max(z - h, 0):z + h].T,
    "sagittal": lambda v, x, y, z, h: v[x, max(y - h, 0):y + h, max(z - h, 0):z + h].T,
}


def _cut(volume: np.ndarray, plane: str, centre: Sequence[int], size: int) -> np.ndarray:
    x, y, z = (int(c) for c in centre)
    return _CUTS[plane](np.asarray(volume), x, y, z, max(int(size) // 2, 1))


def plot_plane_closeups(volumes: Mapping[str, np.ndarray], centre: Sequence[int], size: int, *,
                        planes: Sequence[str] = ("coronal", "sagittal"), order: Optional[Sequence[str]] = None,
                        axes=None, title: Optional[str] = None):
    """Square crops around one voxel (the hippocampus) in the planes an axial model slices across.

    Args:
        volumes: ``{name: (X, Y, Z)}`` on one grid (e.g. 3T, axial-only, fused, 7T).
        centre: the voxel ``(x, y, z)``.
        size: crop side in voxels.
        planes: rows of the figure.
        order: columns (default: the mapping's order).
        axes: a ``(len(planes), n)`` array of axes.
        title: figure title.
    """
    import matplotlib.pyplot as plt

    if size < 2:
        raise ValueError(f"size must be at least 2 voxels, got {size}")
    bad = [p for p in planes if p not in PLANES]
    if bad:
        raise ValueError(f"unknown plane(s) {bad}; known planes: {', '.join(PLANES)}")
    names = list(order) if order is not None else list(volumes)
    missing = [n for n in names if n not in volumes]
    if missing:
        raise ValueError(f"no volume for {missing}; have {list(volumes)}")
    if axes is None:
        fig, axes = plt.subplots(len(planes), len(names), figsize=(2.2 * len(names), 2.3 * len(planes)),
                                 squeeze=False)
    else:
        axes = np.asarray(axes).reshape(len(planes), len(names))
        fig = axes[0, 0].figure
    for c, name in enumerate(names):
        for r, plane in enumerate(planes):
            a = axes[r, c]
            a.imshow(_cut(volumes[name], plane, centre, size), cmap="gray", origin="lower", vmin=0, vmax=1,
                     interpolation="nearest")
            a.set_xticks([]), a.set_yticks([])
            if r == 0:
                a.set_title(name)
            if c == 0:
                a.set_ylabel(plane)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_uncertainty_vs_error(prediction: np.ndarray, reference: np.ndarray, uncertainty: np.ndarray,
                              centre: Sequence[int], *, mask: Optional[np.ndarray] = None,
                              planes: Sequence[str] = ("axial", "coronal"), size: Optional[int] = None,
                              axes=None, title: Optional[str] = None):
    """The prediction, its absolute error against the real 7T and its uncertainty map, through one voxel.

    The error and the uncertainty each have their own colour scale (0 to their 99th percentile inside ``mask``,
    printed in the column titles): the figure compares where they are high; the calibration plot
    (:func:`plot_calibration`) compares their sizes.

    Args:
        prediction, reference, uncertainty: ``(X, Y, Z)`` on one grid.
        centre: the voxel the slices go through.
        mask: brain mask (outside it the error is not shown).
        planes: rows.
        size: crop side (default: whole slices).
        axes: a ``(len(planes), 3)`` array of axes.
        title: figure title.
    """
    import matplotlib.pyplot as plt

    p, r, u = (np.asarray(a, np.float32) for a in (prediction, reference, uncertainty))
    if not p.shape == r.shape == u.shape:
        raise ValueError(f"prediction, reference and uncertainty shapes differ: {p.shape}, {r.shape}, {u.shape}")
    m = np.ones(p.shape, bool) if mask is None else np.asarray(mask) > 0
    err, u = np.abs(p - r) * m, u * m
    top = [float(np.percentile(v[m], 99)) if m.any() else 1.0 for v in (err, u)]
    top = [t if t > 0 else 1.0 for t in top]
    side = int(size) if size else 2 * max(p.shape)
    if axes is None:
        fig, axes = plt.subplots(len(planes), 3, figsize=(10, 3.2 * len(planes)), squeeze=False,
                                 layout="constrained")
    else:
        axes = np.asarray(axes).reshape(len(planes), 3)
        fig = axes[0, 0].figure
    panels = (("synthetic 7T", p, "gray", 1.0), (f"|synthetic - real 7T| (0-{top[0]:.3f})", err, "magma", top[0]),
              (f"uncertainty: SD across views (0-{top[1]:.3f})", u, "magma", top[1]))
    for i, plane in enumerate(planes):
        for j, (name, vol, cmap, hi) in enumerate(panels):
            a = axes[i, j]
            im = a.imshow(_cut(vol, plane, centre, side), cmap=cmap, origin="lower", vmin=0, vmax=hi,
                          interpolation="nearest")
            a.set_xticks([]), a.set_yticks([])
            if i == 0:
                a.set_title(name, fontsize=9)
            if j == 0:
                a.set_ylabel(plane)
            if j and i == len(planes) - 1:
                fig.colorbar(im, ax=axes[:, j].tolist(), location="bottom", shrink=0.8, pad=0.02)
    if title:
        fig.suptitle(title)
    return fig


def plot_calibration(calibration: pd.DataFrame, *, rho: Optional[Mapping[str, float]] = None, ax=None,
                     title: Optional[str] = None):
    """Mean absolute error per uncertainty decile (:func:`synth7t.evaluation.slicing.score_uncertainty`'s calibration table),
    one line per subject and image type, against the decile's mean uncertainty.

    Args:
        calibration: rows ``key, image_type, bin, uncertainty, abs_error``.
        rho: optional ``{image_type: mean Spearman rho}`` for the legend.
        ax: a matplotlib axis.
        title: axis title.
    """
    import matplotlib.pyplot as plt

    need = {"key", "image_type", "bin", "uncertainty", "abs_error"}
    if not need <= set(calibration.columns):
        raise ValueError(f"calibration needs columns {sorted(need)}, got {list(calibration.columns)}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 4))
    else:
        fig = ax.figure
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, g) in enumerate(calibration.groupby("image_type", sort=False)):
        col = colours[i % len(colours)]
        for _, s in g.groupby("key"):
            ax.plot(s["uncertainty"], s["abs_error"], "-", color=col, alpha=0.35, lw=1)
        mean = g.groupby("bin")[["uncertainty", "abs_error"]].mean()
        label = name + (f" (Spearman rho {rho[name]:.2f})" if rho and name in rho else "")
        ax.plot(mean["uncertainty"], mean["abs_error"], "o-", color=col, lw=2, label=label)
    lim = float(max(calibration["uncertainty"].max(), calibration["abs_error"].max())) * 1.05
    ax.plot([0, lim], [0, lim], ":", color="grey", lw=1, label="error = uncertainty")
    ax.set_xlabel("mean uncertainty of the decile (SD across views)")
    ax.set_ylabel("mean absolute error of the decile")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_through_plane(table: pd.DataFrame, *, order: Optional[Sequence[str]] = None, ax=None,
                       title: Optional[str] = None):
    """The through-plane second-difference ratios per image type (mean over subjects, bars per plane; 1 = the
    real 7T's), from :func:`synth7t.evaluation.slicing.score_through_plane`."""
    import matplotlib.pyplot as plt

    cols = [f"tp_{p}" for p in PLANES]
    if not {"image_type", *cols} <= set(table.columns):
        raise ValueError(f"table needs columns image_type, {', '.join(cols)}")
    mean = table.groupby("image_type")[cols].mean()
    if order is not None:
        mean = mean.reindex([o for o in order if o in mean.index])
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.4 * len(mean) + 2.5, 3.6))
    else:
        fig = ax.figure
    width = 0.8 / len(cols)
    xs = np.arange(len(mean))
    for i, c in enumerate(cols):
        ax.bar(xs + (i - 1) * width, mean[c], width, label=f"across {c[3:]} slices")
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_xticks(xs, mean.index, rotation=20, ha="right")
    ax.set_ylabel("second-difference energy / real 7T's")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
