"""Structure segmentation against a reference (paper §2.8.3, §3.3, Figure 5).

The paper segmented the left and right amygdala automatically on the 3T, the synthetic U-Net and the synthetic
GAN U-Net images, aligned each image to the space of a manual reference segmentation (affine registration, labels
resampled by nearest neighbour, §2.3), and compared with Dice; the synthetic images gave higher Dice than the 3T.
This module does the same for any structures of :data:`synth7t.segment.FREESURFER_LABELS` (amygdala and, beyond the
paper, hippocampus by default):

- :func:`align_labels` registers an image to the reference image (ANTs affine, Mattes MI) and carries its label map
  into the reference grid (``genericLabel`` or nearest neighbour);
- :func:`structure_dice` scores one label map against the reference per structure;
- :func:`best_per_subject` counts, per structure, which image type scored best for each subject;
- :func:`plot_dice_differences` and :func:`plot_outlines` draw the Figure 5 analogue.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from . import io as sio

PathLike = Union[str, Path]

#: structures scored by default: name -> FreeSurfer label numbers
STRUCTURES = {
    "Left-Amygdala": (18,), "Right-Amygdala": (54,), "Left-Hippocampus": (17,), "Right-Hippocampus": (53,),
}


def _volume(x, what: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(x, (str, Path)):
        v = sio.load_volume(x, dtype=None)
        return v.data, v.affine
    data, affine = x
    return np.asarray(data), np.asarray(affine, float)


def align_labels(image, labels, reference, *, transform: str = "Affine",
                 interpolation: str = "nearestNeighbor", registration_spacing: Optional[float] = 2.0) -> np.ndarray:
    """Carry a label map into the grid of a reference image through an affine registration of the images.

    Args:
        image: the image the labels were segmented on: a NIfTI path or ``(array, affine)``.
        labels: its label map (path or ``(array, affine)``), on the image's grid.
        reference: the reference image (path or ``(array, affine)``), e.g. the 7T that a manual segmentation
            was drawn on.
        transform: ``"Affine"`` (the paper's) or ``"Rigid"``.
        interpolation: ``"nearestNeighbor"`` (the paper's) or ``"genericLabel"`` (smoother, much slower).
        registration_spacing: the images are registered at this voxel size (mm; never upsampled; ``None``: as
            they are); the transform lives in world coordinates and is applied to the labels at full resolution.
            At 2 mm an affine of two 0.7 mm brains takes seconds instead of a minute and a half.

    Returns:
        The label map on the reference grid (int16).
    """
    from .preprocess import PreprocessConfig, _coarsen, apply_transforms, register

    img, img_aff = _volume(image, "image")
    lab, lab_aff = _volume(labels, "labels")
    ref, ref_aff = _volume(reference, "reference")
    if lab.shape != img.shape or not np.allclose(lab_aff, img_aff, atol=1e-3):
        raise ValueError(f"labels {lab.shape} are not on the image's grid {img.shape}")
    if transform not in ("Affine", "Rigid"):
        raise ValueError(f"transform must be 'Affine' or 'Rigid', got {transform!r}")
    if interpolation not in ("genericLabel", "nearestNeighbor"):
        raise ValueError(f"interpolation must be 'genericLabel' or 'nearestNeighbor', got {interpolation!r}")
    cfg = PreprocessConfig(aff_iterations=(100, 50, 20), aff_shrink_factors=(4, 2, 1),
                           aff_smoothing_sigmas=(2, 1, 0))
    with tempfile.TemporaryDirectory(prefix="synth7t-align.") as tmp:
        fixed, fixed_aff = _coarsen(np.asarray(ref, np.float32), ref_aff, registration_spacing)
        moving, moving_aff = _coarsen(np.asarray(img, np.float32), img_aff, registration_spacing)
        reg = register(fixed, fixed_aff, moving, moving_aff, Path(tmp) / "reg_", cfg, syn=False,
                       linear_transform=transform)
        out = apply_transforms(lab.astype(np.float32), lab_aff, ref.shape, ref_aff, reg["transforms"],
                               interpolation)
    return np.rint(out).astype(np.int16)


def structure_dice(reference: np.ndarray, labels: np.ndarray,
                   structures: Mapping[str, Sequence[int]] = STRUCTURES) -> dict[str, float]:
    """Dice of each structure (a set of label numbers) between a reference label map and another on its grid.

    Returns:
        ``{structure: Dice}``; NaN where the structure is absent from both maps.
    """
    ref, lab = np.asarray(reference), np.asarray(labels)
    if ref.shape != lab.shape:
        raise ValueError(f"label maps differ in shape: {ref.shape} vs {lab.shape} (align them first)")
    out = {}
    for name, ids in structures.items():
        a, b = np.isin(ref, ids), np.isin(lab, ids)
        denom = int(a.sum()) + int(b.sum())
        out[name] = float(2 * np.logical_and(a, b).sum() / denom) if denom else float("nan")
    return out


def best_per_subject(table: pd.DataFrame, *, value: str = "dice", by: str = "structure",
                     subject: str = "key", condition: str = "image_type") -> pd.DataFrame:
    """How often each image type gave the best score per subject, for each ``by`` group (ties count for all).

    Returns:
        A table ``by x image type`` of counts.
    """
    rows = []
    for (grp, subj), g in table.dropna(subset=[value]).groupby([by, subject]):
        best = g[value].max()
        for c in g.loc[np.isclose(g[value], best), condition]:
            rows.append({by: grp, condition: c})
    counts = pd.DataFrame(rows, columns=[by, condition])
    out = counts.groupby([by, condition]).size().unstack(fill_value=0)
    for c in table[condition].unique():
        if c not in out.columns:
            out[c] = 0
    return out[list(dict.fromkeys(table[condition]))]


def plot_dice_differences(table: pd.DataFrame, *, baseline: str = "3T", value: str = "dice",
                          structures: Optional[Sequence[str]] = None, axes=None):
    """Figure 5 analogue: per structure, violins of each image type's Dice minus the baseline's (left) and the
    per-subject Dice of every image type joined by lines (right).

    Args:
        table: tidy ``key, image_type, structure, dice``.
        baseline: the image type differences are taken from.
        structures: structures to draw (default all in the table).

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    structures = list(structures or dict.fromkeys(table["structure"]))
    types = list(dict.fromkeys(table["image_type"]))
    others = [t for t in types if t != baseline]
    if baseline not in types:
        raise ValueError(f"baseline {baseline!r} is not an image type of the table ({', '.join(types)})")
    if axes is None:
        fig, axes = plt.subplots(2, len(structures), figsize=(3.1 * len(structures), 6.2), squeeze=False)
    else:
        axes = np.asarray(axes).reshape(2, len(structures))
        fig = axes[0, 0].figure
    for c, s in enumerate(structures):
        wide = table[table.structure == s].pivot(index="key", columns="image_type", values=value)
        ax = axes[0, c]
        diffs = [(wide[t] - wide[baseline]).dropna().to_numpy() for t in others]
        pos = np.arange(1, len(others) + 1)
        if all(len(d) > 1 for d in diffs):
            ax.violinplot(diffs, positions=pos, showmeans=True)
        for p, d in zip(pos, diffs):
            ax.scatter(np.full(len(d), p), d, s=10, color="k", zorder=3)
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_xticks(pos, others, rotation=20)
        ax.set_title(s, fontsize=9)
        if c == 0:
            ax.set_ylabel(f"{value} - {value}({baseline})")
        ax = axes[1, c]
        cols = [t for t in types if t in wide.columns]
        for _, row in wide[cols].iterrows():
            ax.plot(range(len(cols)), row.to_numpy(), "o-", color="tab:blue", alpha=0.5, ms=3, lw=0.8)
        ax.set_xticks(range(len(cols)), cols, rotation=20)
        if c == 0:
            ax.set_ylabel(value)
    fig.tight_layout()
    return fig


def plot_outlines(image: np.ndarray, reference: np.ndarray, labels: Mapping[str, np.ndarray], *,
                  structures: Mapping[str, Sequence[int]] = STRUCTURES, coronal: Optional[int] = None,
                  margin: int = 12, axes=None):
    """A coronal close-up of the reference image with the reference outline (yellow) and each image type's
    outline of the same structures (one panel per type).

    Args:
        image: the reference image ``(X, Y, Z)`` (RAS grid).
        reference: the reference label map on that grid.
        labels: ``{image type: label map on the reference grid}``.
        structures: which labels to outline.
        coronal: coronal slice index (default: through the centre of the structures).
        margin: voxels shown around the structures' extent (left-right and inferior-superior).

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    ids = sorted({i for v in structures.values() for i in v})
    target = np.argwhere(np.isin(reference, ids))
    if not len(target):
        raise ValueError("the reference holds none of the structures to outline")
    cy = int(np.round(target[:, 1].mean()))
    y = int(cy if coronal is None else coronal)
    # the structures' extent plus a margin: left and right structures both fit, whole
    lo, hi = target.min(0), target.max(0)
    x0, x1 = max(int(lo[0]) - margin, 0), min(int(hi[0]) + margin + 1, image.shape[0])
    z0, z1 = max(int(lo[2]) - margin, 0), min(int(hi[2]) + margin + 1, image.shape[2])
    names = list(labels)
    if axes is None:
        fig, axes = plt.subplots(1, len(names), figsize=(2.8 * len(names), 3.0), squeeze=False)
        axes = axes[0]
    else:
        fig = np.asarray(axes).ravel()[0].figure
    sl = image[x0:x1, y, z0:z1].T
    ref = np.isin(reference[x0:x1, y, z0:z1].T, ids)
    for ax, name in zip(np.asarray(axes).ravel(), names):
        ax.imshow(sl, cmap="gray", origin="lower", interpolation="nearest")
        if ref.any():
            ax.contour(ref, levels=[0.5], colors="yellow", linewidths=1.0)
        m = np.isin(np.asarray(labels[name])[x0:x1, y, z0:z1].T, ids)
        if m.any():
            ax.contour(m, levels=[0.5], colors="tab:red", linewidths=1.0)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig
