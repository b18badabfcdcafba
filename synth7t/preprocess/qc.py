"""Quality control of preprocessed pairs: similarity metrics, the QC table with robust outliers, QC figures."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

import nibabel as nib
from scipy import ndimage as ndi

from .ants import PathLike
from .records import load_records, output_paths

# ------------------------------------------------------------------------------------------------- QC


def nmi(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray] = None, bins: int = 64) -> float:
    """Normalised mutual information ``(H(A) + H(B)) / H(A, B)`` in the mask (1: independent, 2: identical)."""
    if mask is not None:
        a, b = a[mask], b[mask]
    h, _, _ = np.histogram2d(np.ravel(a), np.ravel(b), bins=bins)
    p = h / max(h.sum(), 1)
    px, py = p.sum(1), p.sum(0)

    def ent(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    hxy = ent(p.ravel())
    return (ent(px) + ent(py)) / hxy if hxy > 0 else float("nan")


def robust_z(values: Sequence[float]) -> np.ndarray:
    """Robust z-scores ``(x - median) / (1.4826 MAD)``; zeros when the MAD is zero (all values alike)."""
    v = np.asarray(values, float)
    med = np.nanmedian(v)
    mad = 1.4826 * np.nanmedian(np.abs(v - med))
    if not np.isfinite(mad) or mad <= 1e-12 * max(1.0, abs(med)):
        return np.zeros_like(v)
    return (v - med) / mad


QC_METRICS = ("mask_ml", "nmi", "correlation", "t3_p01", "t3_p50", "t3_p99", "t7_p01", "t7_p50", "t7_p99",
              "n_slices")


def qc_table(out_root: PathLike, threshold: float = 3.5) -> pd.DataFrame:
    """QC metrics of every finished subject with robust z-score outlier flags.

    Columns: ``key``, the :data:`QC_METRICS` (brain-mask volume in mL; NMI and Pearson correlation of the
    normalised warped 3T and 7T in the mask; 1st/50th/99th percentiles of the bias-corrected brain intensities),
    ``seconds``, ``z_<metric>``, ``outlier`` (any ``|z| > threshold``) and ``outlier_metrics``.
    """
    rows = []
    for rec in load_records(out_root):
        row = {"key": rec["key"], **{k: rec["qc"].get(k) for k in QC_METRICS}, "seconds": rec.get("seconds")}
        rows.append(row)
    df = pd.DataFrame(rows, columns=["key", *QC_METRICS, "seconds"])
    flagged = []
    for m in QC_METRICS:
        df[f"z_{m}"] = robust_z(df[m].to_numpy(float)) if len(df) else []
    for _, r in df.iterrows():
        flagged.append(",".join(m for m in QC_METRICS if abs(r[f"z_{m}"]) > threshold))
    df["outlier"] = [bool(f) for f in flagged]
    df["outlier_metrics"] = flagged
    return df


def plot_qc(subject_dir: PathLike, key: Optional[str] = None, *, axes=None, point: Optional[Sequence[int]] = None):
    """QC figure of a preprocessed pair: the warped 3T with the 7T's edges (yellow) and the brain-mask outline
    (cyan), and the 7T with the same outline, in three planes through the brain centre.

    Args:
        subject_dir: the subject's folder under the derivatives (``.../sub-001``) or its ``anat`` folder.
        key: acquisition key (default: the folder name).
        axes: optional ``(2, 3)`` axes to draw into.
        point: grid voxel index to cut through (default: the mask's centre of mass).

    Returns:
        The matplotlib figure.
    """

    d = Path(subject_dir)
    d = d / "anat" if (d / "anat").is_dir() else d
    key = key or (d.parent.name if d.name == "anat" else d.name)
    paths = output_paths(d.parent.parent if d.name == "anat" else d.parent, key)
    t3 = nib.load(str(paths["t3"])).get_fdata(dtype=np.float32)
    t7 = nib.load(str(paths["t7"])).get_fdata(dtype=np.float32)
    mask = np.asarray(nib.load(str(paths["mask"])).dataobj) > 0
    return plot_qc_arrays(t3, t7, mask, title=f"{key}: warped 3T with 7T edges and brain outline", axes=axes,
                          point=point)


def plot_qc_arrays(t3: np.ndarray, t7: np.ndarray, mask: np.ndarray, *, title: str = "", axes=None,
                   point: Optional[Sequence[int]] = None):
    """:func:`plot_qc` on arrays already on one grid (RAS voxel order, isotropic voxels)."""
    import matplotlib.pyplot as plt

    if point is None:
        point = np.rint(ndi.center_of_mass(mask)).astype(int) if mask.any() else np.array(mask.shape) // 2
    i, j, k = (int(v) for v in point)
    edges = ndi.gaussian_gradient_magnitude(t7, 1.0)
    thr = np.percentile(edges[mask], 85) if mask.any() else edges.max()
    edge = (edges > thr) & ndi.binary_dilation(mask, iterations=2)
    if axes is None:
        fig, axes = plt.subplots(2, 3, figsize=(10, 6.6), squeeze=False)
    else:
        axes = np.asarray(axes).reshape(2, 3)
        fig = axes[0, 0].figure
    # show the brain's bounding box (plus a margin), not the padding around it
    if mask.any():
        idx = np.argwhere(mask)
        lo = np.maximum(idx.min(0) - 6, 0)
        hi = np.minimum(idx.max(0) + 7, np.array(mask.shape))
    else:
        lo, hi = np.zeros(3, int), np.array(mask.shape)
    x, y, z = (slice(int(a), int(b)) for a, b in zip(lo, hi))
    cuts = {"sagittal": lambda a: a[i, y, z].T, "coronal": lambda a: a[x, j, z].T, "axial": lambda a: a[x, y, k].T}
    for c, (plane, cut) in enumerate(cuts.items()):
        for r, (name, img) in enumerate((("3T (warped)", t3), ("7T", t7))):
            ax = axes[r, c]
            ax.imshow(cut(img), cmap="gray", vmin=0, vmax=1, origin="lower", interpolation="nearest")
            if r == 0:
                e = cut(edge).astype(float)
                rgba = np.zeros((*e.shape, 4), np.float32)
                rgba[e > 0] = (1.0, 0.85, 0.0, 0.8)
                ax.imshow(rgba, origin="lower", interpolation="nearest")
                ax.set_title(plane)
            m = cut(mask).astype(float)
            if m.any() and m.min() < 1:
                ax.contour(m, levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_grid_images(images: dict, *, axes=None, title: str = ""):
    """Three planes through the brain centre of each grid image (one row each; each image on its own grid).

    Args:
        images: ``{name: path}`` of preprocessed grid images (values in [0, 1], background 0).

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    names = list(images)
    if axes is None:
        fig, axes = plt.subplots(len(names), 3, figsize=(9, 3 * len(names)), squeeze=False)
    else:
        axes = np.asarray(axes).reshape(len(names), 3)
        fig = axes[0, 0].figure
    for r, name in enumerate(names):
        a = nib.load(str(images[name])).get_fdata(dtype=np.float32)
        m = a > 0
        i, j, k = (np.rint(ndi.center_of_mass(m)).astype(int) if m.any() else np.array(a.shape) // 2)
        for c, (plane, sl) in enumerate((("sagittal", a[i].T), ("coronal", a[:, j].T), ("axial", a[:, :, k].T))):
            ax = axes[r, c]
            ax.imshow(sl, cmap="gray", vmin=0, vmax=1, origin="lower", interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(plane)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
