"""One volume from the predictions of several planes (beyond the paper), and the uncertainty map of their spread.

**Fusion.** :func:`fuse_views` takes the voxel-wise mean or median of the per-plane predictions, or a weighted mean
with weights fitted by non-negative least squares on training-side subjects (:func:`fit_fusion_weights`: a small
learned fusion, three numbers).

**Uncertainty.** :func:`view_uncertainty` is the voxel-wise standard deviation across the predictions of the views
(and of their left-right flipped inputs when asked): where three networks that see the anatomy from three
directions disagree, the synthetic detail is not pinned down by the 3T. It costs no extra network pass beyond the
views themselves. :func:`synth7t.evaluation.slicing.uncertainty_calibration` checks it against the real 7T: the
Spearman correlation with the absolute error inside the brain and the mean error per uncertainty decile.

The planes themselves: :mod:`synth7t.data.planes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from ..data.planes import as_volume

__all__ = ["FUSIONS", "fuse_views", "fit_fusion_weights", "view_uncertainty", "uncertainty_path",
           "UNCERTAINTY_DESCRIP", "write_uncertainty"]

PathLike = Union[str, Path]

#: Fusion methods of :func:`fuse_views`.
FUSIONS = ("mean", "median", "weighted")


# ------------------------------------------------------------------------------------------------ fusion


def _stack_views(views: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]]) -> np.ndarray:
    arrays = list(views.values()) if isinstance(views, Mapping) else list(views)
    if not arrays:
        raise ValueError("no views to fuse: give at least one prediction")
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"views must be 3D volumes of one shape, got shapes {sorted(shapes)}")
    return np.stack([np.asarray(a, np.float32) for a in arrays])


def fuse_views(views: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]], method: str = "mean", *,
               weights: Optional[Union[Mapping[str, float], Sequence[float]]] = None,
               mask: Optional[np.ndarray] = None) -> np.ndarray:
    """One volume from several predictions of it (one per plane, or per plane and flip).

    Args:
        views: ``{plane: (X, Y, Z)}`` or a list of volumes of one shape.
        method: ``"mean"``, ``"median"`` (robust to one view's outlier) or ``"weighted"`` (a weighted mean with
            ``weights``, e.g. from :func:`fit_fusion_weights`).
        weights: per view (a mapping keyed like ``views``, or a sequence in its order); non-negative, not all 0.
        mask: optional brain mask: zero outside it.

    Returns:
        float32 ``(X, Y, Z)``.
    """
    if method not in FUSIONS:
        raise ValueError(f"unknown fusion {method!r}; choose one of {', '.join(FUSIONS)}")
    a = _stack_views(views)
    if method == "mean":
        out = a.mean(axis=0)
    elif method == "median":
        out = np.median(a, axis=0)
    else:
        if weights is None:
            raise ValueError('fusion "weighted" needs weights '
                             '(fit them with synth7t.inference.fusion.fit_fusion_weights)')
        if isinstance(weights, Mapping):
            if not isinstance(views, Mapping) or set(weights) != set(views):
                raise ValueError(f"weights {sorted(weights)} must name the same views as {sorted(views)}")
            w = np.array([float(weights[k]) for k in views], float)
        else:
            w = np.asarray(list(weights), float)
        if w.shape != (len(a),) or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(f"weights must be {len(a)} non-negative numbers, not all zero, got {w.tolist()}")
        out = np.tensordot(w / w.sum(), a, axes=1)
    out = out.astype(np.float32)
    if mask is not None:
        out = out * (np.asarray(mask) > 0)
    return out


def fit_fusion_weights(views: Sequence[Mapping[str, np.ndarray]], targets: Sequence[np.ndarray],
                       masks: Sequence[np.ndarray]) -> dict[str, float]:
    """The learned fusion: non-negative view weights, summing to 1, that best predict the real 7T (least squares
    inside the brain, :func:`scipy.optimize.nnls`), fitted on subjects the model did not train on but that are not
    test subjects either (the validation subjects).

    Args:
        views: per subject, ``{plane: prediction}`` (the same planes for every subject).
        targets: per subject, the real 7T.
        masks: per subject, the voxels to fit on (brain, artefact slices left out).

    Returns:
        ``{plane: weight}``.
    """
    from scipy.optimize import nnls

    if not views or len(views) != len(targets) or len(views) != len(masks):
        raise ValueError("give one views mapping, one target and one mask per subject (at least one subject)")
    names = list(views[0])
    if any(list(v) != names for v in views):
        raise ValueError("every subject must have the same views, in the same order")
    cols, ys = [], []
    for v, t, m in zip(views, targets, masks):
        m = np.asarray(m) > 0
        cols.append(np.stack([np.asarray(v[n], np.float64)[m] for n in names], axis=1))
        ys.append(np.asarray(t, np.float64)[m])
    w, _ = nnls(np.concatenate(cols), np.concatenate(ys))
    if w.sum() <= 0:
        w = np.ones(len(names))
    return {n: float(x) for n, x in zip(names, w / w.sum())}


def view_uncertainty(views: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]], *,
                     mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Voxel-wise standard deviation across predictions (views, flips): the uncertainty map.

    Args:
        views: two or more volumes of one shape (``{name: volume}`` or a list).
        mask: optional brain mask: zero outside it.

    Returns:
        float32 ``(X, Y, Z)``, in the images' intensity units (normalised [0, 1]).
    """
    a = _stack_views(views)
    if len(a) < 2:
        raise ValueError("an uncertainty map needs at least two predictions (views or flips) to disagree")
    out = a.std(axis=0).astype(np.float32)
    if mask is not None:
        out = out * (np.asarray(mask) > 0)
    return out


# ------------------------------------------------------------------------------------------------ files


def uncertainty_path(prediction_path: PathLike) -> Path:
    """Where the uncertainty map of a prediction goes: beside it, ``<name>_uncertainty.nii.gz``
    (``sub-01_acq-unet_space-grid_T1w.nii.gz`` -> ``sub-01_acq-unet_space-grid_T1w_uncertainty.nii.gz``)."""
    p = Path(prediction_path)
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return p.with_name(name[: -len(ext)] + "_uncertainty" + ext)
    raise ValueError(f"{p}: a prediction file ends in .nii or .nii.gz")


#: ``descrip`` of the uncertainty maps' NIfTI headers
UNCERTAINTY_DESCRIP = "synth7t uncertainty (SD across views)"


def write_uncertainty(prediction_path: PathLike, uncertainty: np.ndarray, affine: Optional[np.ndarray] = None,
                      header=None) -> Path:
    """Write an uncertainty map beside its prediction (:func:`uncertainty_path`), on the same grid.

    Args:
        prediction_path: the prediction's file; when ``affine`` is None it must exist, and its affine and header
            (voxel sizes, orientation codes) are copied.
        uncertainty: ``(X, Y, Z)`` of the prediction's shape.
        affine, header: the grid of the prediction as written (when it is written at the same time).

    Returns:
        The uncertainty map's path.
    """
    import nibabel as nib

    from ..data import io as sio

    u = as_volume(uncertainty, "uncertainty")
    if affine is None:
        img = nib.load(str(prediction_path))
        if tuple(img.shape[:3]) != u.shape:
            raise ValueError(f"uncertainty shape {u.shape} differs from the prediction's {tuple(img.shape[:3])}")
        affine, header = img.affine, img.header
    hdr = nib.Nifti1Header() if header is None else header.copy()
    hdr["descrip"] = UNCERTAINTY_DESCRIP.encode()
    out = uncertainty_path(prediction_path)
    sio.save_volume(out, np.asarray(u, np.float32), np.asarray(affine, float), header=hdr, dtype=np.float32)
    return out
