"""Image and segmentation metrics as the paper defines them (§2.8.1).

PSNR and SSIM are computed on whole normalised 3D images (clipped min-max, values in [0, 1]), over the voxels
inside the subject's brain mask and outside the excluded (artefact) axial slices:

- ``PSNR(I, I') = -10 log10(MSE(I, I'))`` (the peak is 1 after normalisation);
- a *global* SSIM, one value per image pair:
  ``SSIM = (2 E(I) E(I') + c1)(2 C(I, I') + c2) / ((E(I)² + E(I')² + c1)(V(I) + V(I') + c2))``
  with ``c1 = 1e-4`` and ``c2 = 9e-4`` and E, C, V the mean, covariance and variance over the evaluated voxels.

Dice is computed per label; the paper's mean Dice leaves out the cerebellum (artefacts in the 7T).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

C1 = 1e-4
C2 = 9e-4
CEREBELLUM_LABELS = (7, 8, 46, 47)


def evaluation_mask(
    reference: np.ndarray,
    *,
    brain_mask: Optional[np.ndarray] = None,
    excluded_slices: Optional[Iterable[int]] = None,
    axis: int = 2,
) -> np.ndarray:
    """Voxels on which image metrics are computed: not background, not in an excluded axial slice.

    Args:
        reference: the reference (real 7T) volume ``(X, Y, Z)``; without ``brain_mask`` its non-zero voxels
            are the foreground (preprocessed images are brain-masked, background exactly 0).
        brain_mask: explicit foreground mask of the same shape.
        excluded_slices: indices along ``axis`` to drop (annotated 7T artefact slices).
        axis: the axial axis (2 for RAS volumes).

    Returns:
        Boolean mask of the reference's shape.
    """
    ref = np.asarray(reference)
    if ref.ndim != 3:
        raise ValueError(f"reference must be a 3D volume, got shape {ref.shape}")
    if brain_mask is not None:
        m = np.asarray(brain_mask).astype(bool)
        if m.shape != ref.shape:
            raise ValueError(f"brain_mask shape {m.shape} differs from the reference's {ref.shape}")
        m = m.copy()
    else:
        m = ref != 0
    if excluded_slices is not None:
        idx = np.asarray(list(excluded_slices), dtype=int)
        if idx.size:
            if idx.min() < 0 or idx.max() >= ref.shape[axis]:
                raise ValueError(f"excluded slice indices must lie in [0, {ref.shape[axis] - 1}], "
                                 f"got {idx.min()}..{idx.max()}")
            sl = [slice(None)] * 3
            sl[axis] = idx
            m[tuple(sl)] = False
    return m


def _pair(reference, prediction, mask):
    ref = np.asarray(reference, dtype=np.float64)
    pred = np.asarray(prediction, dtype=np.float64)
    if ref.shape != pred.shape:
        raise ValueError(f"images must have the same shape, got {ref.shape} and {pred.shape}")
    if mask is None:
        return ref.ravel(), pred.ravel()
    m = np.asarray(mask, dtype=bool)
    if m.shape != ref.shape:
        raise ValueError(f"mask shape {m.shape} differs from the images' {ref.shape}")
    if not m.any():
        raise ValueError("the evaluation mask is empty (all background or excluded)")
    return ref[m], pred[m]


def psnr(reference: np.ndarray, prediction: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """``-10 log10(MSE)`` over the masked voxels of two normalised images (peak 1). Identical images: ``inf``."""
    a, b = _pair(reference, prediction, mask)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(-10.0 * np.log10(mse))


def ssim_global(reference: np.ndarray, prediction: np.ndarray, mask: Optional[np.ndarray] = None,
                c1: float = C1, c2: float = C2) -> float:
    """The paper's global SSIM over the masked voxels (population variance and covariance)."""
    a, b = _pair(reference, prediction, mask)
    ma, mb = a.mean(), b.mean()
    va, vb = a.var(), b.var()
    cov = float(np.mean((a - ma) * (b - mb)))
    return float((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))


def dice(a: np.ndarray, b: np.ndarray, labels: Optional[Sequence[int]] = None) -> dict[int, float]:
    """Dice per label between two label maps; NaN where a label is absent from both.

    Args:
        a, b: integer label maps of the same shape.
        labels: labels to score (default: every non-zero label in either map).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps must have the same shape, got {a.shape} and {b.shape}")
    if labels is None:
        labels = sorted(set(np.unique(a).tolist()) | set(np.unique(b).tolist()) - {0})
    ai = a.ravel().astype(np.int64)
    bi = b.ravel().astype(np.int64)
    top = int(max(ai.max(initial=0), bi.max(initial=0), max(labels, default=0))) + 1
    ca = np.bincount(ai, minlength=top)
    cb = np.bincount(bi, minlength=top)
    both = np.bincount(ai[ai == bi], minlength=top)
    out = {}
    for lab in labels:
        denom = ca[lab] + cb[lab]
        out[int(lab)] = float(2 * both[lab] / denom) if denom else float("nan")
    return out


def mean_dice(scores: Mapping[int, float], exclude: Iterable[int] = CEREBELLUM_LABELS) -> float:
    """Mean of the per-label Dice scores, leaving out ``exclude`` (the cerebellum, as in the paper) and NaNs."""
    ex = set(exclude)
    vals = [v for k, v in scores.items() if k not in ex and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def image_metrics(reference, prediction, *, brain_mask=None, excluded_slices=None, axis: int = 2) -> dict:
    """PSNR and SSIM of one pair on the paper's evaluation mask, with the number of voxels used."""
    m = evaluation_mask(reference, brain_mask=brain_mask, excluded_slices=excluded_slices, axis=axis)
    return {"psnr": psnr(reference, prediction, m), "ssim": ssim_global(reference, prediction, m),
            "n_voxels": int(m.sum())}


def summarise(table: pd.DataFrame, by: str = "image_type", columns: Sequence[str] = ("psnr", "ssim", "mean_dice"),
              order: Optional[Sequence[str]] = None, subjects: Optional[str] = None) -> pd.DataFrame:
    """The Table 1 layout: ``mean ± SD`` per image type for each metric, from a tidy per-subject table.

    ``subjects`` (e.g. :func:`synth7t.data.layout.describe_subjects`) becomes a column, so that the table says which
    subjects it scores."""
    cols = [c for c in columns if c in table.columns]
    g = table.groupby(by)[cols]
    mean, sd = g.mean(), g.std(ddof=1)
    out = pd.DataFrame(index=mean.index)
    for c in cols:
        out[c] = [f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}" for m, s in zip(mean[c], sd[c])]
    out["n"] = g.size()
    if subjects is not None:
        out["subjects"] = subjects
    if order is not None:
        out = out.reindex([o for o in order if o in out.index])
    return out


def margins_over(table: pd.DataFrame, reference: str = "3T", columns: Sequence[str] = ("psnr", "ssim"),
                 by: str = "image_type") -> pd.DataFrame:
    """Per image type and subject, each score minus the ``reference`` image's (Table 1's question, subject by
    subject: does the synthetic image beat its input?), with ``above`` true where every margin is positive.

    Args:
        table: per-subject scores with ``key``, ``by`` and ``columns`` (e.g. :func:`score_images`).
        reference: the image type subtracted (the 3T input).

    Returns:
        ``key, <by>, <column>_margin..., above`` for every image type but the reference.

    Raises:
        ValueError: no ``reference`` rows.
    """
    ref = table[table[by] == reference].set_index("key")[list(columns)]
    if ref.empty:
        raise ValueError(f"no {reference!r} rows to compare with (image types: {', '.join(map(str, table[by].unique()))})")
    others = table[table[by] != reference]
    out = others[["key", by]].copy()
    for c in columns:
        out[f"{c}_margin"] = others[c].to_numpy() - ref.loc[others["key"], c].to_numpy()
    out["above"] = (out[[f"{c}_margin" for c in columns]] > 0).all(axis=1)
    return out.reset_index(drop=True)


def slice_indices(ranges: Iterable[Sequence[int]]) -> list[int]:
    """Slice indices of inclusive ``[first, last]`` ranges (a preprocessing record's ``excluded_slices``)."""
    out: list[int] = []
    for r in ranges:
        if len(r) != 2 or int(r[1]) < int(r[0]):
            raise ValueError(f"a slice range is [first, last] with first <= last, got {list(r)}")
        out.extend(range(int(r[0]), int(r[1]) + 1))
    return sorted(set(out))


#: ways :func:`score_images` chooses the evaluated voxels
MASK_MODES = ("brain", "nonzero")


def score_images(images: pd.DataFrame, records: Mapping[str, dict], *, derivatives=None, mask: str = "brain",
                 reference: str = "7T") -> pd.DataFrame:
    """PSNR and global SSIM of every image against its subject's real 7T (§2.8.1), artefact slices left out.

    The paper scores "the images without background and artifacts". The background is what lies outside the
    subject's saved brain mask (``mask="brain"``, default). ``mask="nonzero"`` takes the reference's non-zero voxels
    instead, as earlier versions did: the clipped min-max normalisation sets the darkest brain voxels (CSF) to exactly
    0, so that choice drops them and scores a slightly different set of voxels for every subject.

    Args:
        images: :func:`synth7t.inference.collect_images` (``key, image_type, name, path``).
        records: ``{key: preprocessing record}``; each record's ``excluded_slices`` are left out, and with
            ``mask="brain"`` its ``files["mask"]`` (relative to ``derivatives``) is the brain.
        derivatives: the preprocessing output folder (needed with ``mask="brain"``).
        mask: ``"brain"`` or ``"nonzero"``.
        reference: the image type scored against.

    Returns:
        One row per image but the reference: ``key``, ``image_type`` (display name) and :func:`image_metrics`'s
        columns.

    Raises:
        ValueError: unknown ``mask``, ``mask="brain"`` without ``derivatives``, a record without a brain mask, or a
            mask on another grid than the reference.
    """
    from pathlib import Path

    from ..data import io as sio

    if mask not in MASK_MODES:
        raise ValueError(f"mask must be one of {', '.join(MASK_MODES)}, got {mask!r}")
    if mask == "brain" and derivatives is None:
        raise ValueError('mask="brain" reads each subject\'s saved brain mask: give derivatives=<the preprocessing '
                         'output folder>, or mask="nonzero" to score the reference\'s non-zero voxels')
    rows = []
    for key, group in images.groupby("key", sort=True):
        ref_path = group.loc[group["image_type"] == reference, "path"]
        if ref_path.empty:
            raise ValueError(f"{key}: no {reference} image to score against")
        ref = sio.load_volume(ref_path.iloc[0]).data
        record = records.get(key) or {}
        excluded = slice_indices(record.get("excluded_slices") or [])
        brain = None
        if mask == "brain":
            rel = (record.get("files") or {}).get("mask")
            if not rel:
                raise ValueError(f"{key}: its preprocessing record has no brain mask (files.mask); rerun "
                                 'preprocessing, or score with mask="nonzero"')
            brain = sio.load_volume(Path(derivatives) / rel, dtype=None).data > 0
            if brain.shape != ref.shape:
                raise ValueError(f"{key}: brain mask shape {brain.shape} differs from the {reference}'s {ref.shape}")
        for r in group[group["image_type"] != reference].itertuples(index=False):
            rows.append({"key": key, "image_type": r.name,
                         **image_metrics(ref, sio.load_volume(r.path).data, brain_mask=brain,
                                         excluded_slices=excluded)})
    return pd.DataFrame(rows)
