"""Multi-view 2.5D (beyond the paper): plane reslicing, fusion of per-plane predictions, the uncertainty map and
the measures that judge them.

The paper's models slice the 7T grid axially; its discussion notes slicing artefacts in coronal views of the medial
temporal lobe and proposes multi-view 2D training. Here a model may slice along any of the three planes, and
predictions made plane by plane are fused into one volume.

**Planes and stacks.** A grid volume is ``(X, Y, Z)`` = (left-right, anterior-posterior, inferior-superior). A
plane's *stack* is the volume as a pile of that plane's slices, ``(S, H, W)``, the layout the slice cache stores and
the networks read:

============ =========== ======================== =============================================================
plane        slices      stack ``(S, H, W)``      note
============ =========== ======================== =============================================================
``axial``    along Z     ``(Z, Y, X)``            the paper's (AP, LR) slices, e.g. 288 x 224
``coronal``  along Y     ``(Y, Z, X)``            H is the grid's depth, padded to ``pad_multiple`` (see below)
``sagittal`` along X     ``(X, Z, Y)``            H likewise; W is anterior-posterior
============ =========== ======================== =============================================================

The grid's depth (its number of axial slices) varies by subject and is rarely divisible by a U-Net's
downsampling factor, so coronal and sagittal stacks are zero-padded at the superior end to a multiple of
``pad_multiple`` rows; :func:`from_plane_stack` crops the padding away. The round trip through any plane is
exact (pure transposition and padding): see ``tests/test_views.py``.

**Fusion.** :func:`fuse_views` takes the voxel-wise mean or median of the per-plane predictions, or a weighted mean
with weights fitted by non-negative least squares on training-side subjects (:func:`fit_fusion_weights`: a small
learned fusion, three numbers).

**Uncertainty.** :func:`view_uncertainty` is the voxel-wise standard deviation across the predictions of the views
(and of their left-right flipped inputs when asked): where three networks that see the anatomy from three
directions disagree, the synthetic detail is not pinned down by the 3T. It costs no extra network pass beyond the
views themselves. :func:`uncertainty_calibration` checks it against the real 7T: the Spearman correlation with the
absolute error inside the brain and the mean error per uncertainty decile.

**Slicing artefacts.** :func:`through_plane_ratios` measures, for each plane, the energy of the second difference
across that plane's slices (along its axis), inside the brain, as a ratio to the real 7T's. Isotropic blur lowers all
three alike. A model that predicts one plane's slices one at a time treats that axis differently from the other two:
it may leave slice-to-slice jitter across them (the ratio across its slices rises above the in-plane ones) or, as
the small demo U-Nets do, add detail within each slice that it cannot make consistent across slices (the ratio across
its slices stays low while the in-plane ones rise: an axial model on the demo cohort scores 0.13 across axial slices
and 0.38 and 0.49 across coronal and sagittal ones). The *slicing-artefact index* is the largest ratio over the
smallest: 1 when the image is as rough, relative to the 7T, in every direction, whichever way a plane stands out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from .models.config import PLANES, check_planes

__all__ = ["PLANE_AXIS", "FUSIONS", "to_plane_stack", "from_plane_stack", "reslice",
           "padded_height", "brain_range", "fuse_views", "fit_fusion_weights", "view_uncertainty",
           "second_difference_energy", "through_plane_ratios", "artefact_index", "uncertainty_calibration",
           "uncertainty_path", "write_uncertainty", "score_through_plane", "score_uncertainty"]

PathLike = Union[str, Path]

#: The grid axis each plane's slices are taken along (X left-right, Y anterior-posterior, Z inferior-superior).
PLANE_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
#: Axis order of each plane's stack ``(S, H, W)`` from a grid volume ``(X, Y, Z)``.
_STACK_ORDER = {"axial": (2, 1, 0), "coronal": (1, 2, 0), "sagittal": (0, 2, 1)}
#: Fusion methods of :func:`fuse_views`.
FUSIONS = ("mean", "median", "weighted")
#: Coronal and sagittal stack heights (the grid's depth) are padded to a multiple of this by default: 2^5, the most
#: downsamplings any preset uses (the paper's remark on 288 and 224).
PAD_MULTIPLE = 32


def _plane(plane: str) -> str:
    return check_planes([plane], "plane")[0]


def _volume(volume: np.ndarray, what: str = "volume") -> np.ndarray:
    v = np.asarray(volume)
    if v.ndim != 3:
        raise ValueError(f"{what} must be a 3D grid volume (X, Y, Z), got shape {v.shape}")
    return v


def padded_height(depth: int, pad_multiple: int = PAD_MULTIPLE) -> int:
    """``depth`` rounded up to a multiple of ``pad_multiple`` (the H of coronal and sagittal stacks)."""
    if isinstance(pad_multiple, bool) or not isinstance(pad_multiple, (int, np.integer)) or pad_multiple < 1:
        raise ValueError(f"pad_multiple must be a positive integer, got {pad_multiple!r}")
    return -(-int(depth) // int(pad_multiple)) * int(pad_multiple)


def to_plane_stack(volume: np.ndarray, plane: str, *, height: Optional[int] = None,
                   pad_multiple: int = 1) -> np.ndarray:
    """A grid volume as a pile of one plane's slices.

    Args:
        volume: ``(X, Y, Z)`` grid volume.
        plane: ``axial``, ``coronal`` or ``sagittal``.
        height: coronal/sagittal only: pad H (the depth Z) with zeros at the superior end to this many rows.
        pad_multiple: coronal/sagittal only, without ``height``: pad H to a multiple of this (1: no padding).

    Returns:
        ``(S, H, W)`` (see the module's table); a view of ``volume`` when nothing is padded, else a new array.

    Raises:
        ValueError: not a 3D volume, an unknown plane, a ``height`` smaller than the depth.
    """
    v, plane = _volume(volume), _plane(plane)
    stack = np.transpose(v, _STACK_ORDER[plane])
    if plane == "axial":
        return stack
    depth = v.shape[2]
    h = padded_height(depth, pad_multiple) if height is None else int(height)
    if h < depth:
        raise ValueError(f"height {h} is smaller than the grid's depth {depth}")
    if h == depth:
        return stack
    out = np.zeros((stack.shape[0], h, stack.shape[2]), dtype=stack.dtype)
    out[:, :depth] = stack
    return out


def from_plane_stack(stack: np.ndarray, plane: str, shape: Sequence[int]) -> np.ndarray:
    """The inverse of :func:`to_plane_stack`: a plane's stack (padding cropped) back as the ``(X, Y, Z)`` volume.

    Args:
        stack: ``(S, H, W)`` of ``plane``; H may exceed the depth (padding), never fall short of it.
        plane: the stack's plane.
        shape: the grid volume's shape ``(X, Y, Z)``.

    Raises:
        ValueError: a stack whose shape does not fit ``shape`` in that plane.
    """
    plane = _plane(plane)
    s = np.asarray(stack)
    shape = tuple(int(n) for n in shape)
    if s.ndim != 3 or len(shape) != 3:
        raise ValueError(f"stack must be (S, H, W) and shape (X, Y, Z), got {s.shape} and {shape}")
    order = _STACK_ORDER[plane]
    want = tuple(shape[a] for a in order)
    if plane != "axial" and s.shape[1] >= want[1]:
        s = s[:, :want[1]]
    if s.shape != want:
        raise ValueError(f"a {plane} stack of a {shape} grid has shape {want} (H may be padded), got {s.shape}")
    return np.transpose(s, np.argsort(order))


def reslice(stack: np.ndarray, source: str, target: str, shape: Sequence[int], *,
            pad_multiple: int = 1) -> np.ndarray:
    """Re-cut a stack of ``source`` slices into ``target`` slices (e.g. axial -> coronal), exactly.

    Args:
        stack: ``(S, H, W)`` stack of ``source``.
        source, target: planes.
        shape: the grid volume's shape ``(X, Y, Z)``.
        pad_multiple: padding of the target stack (see :func:`to_plane_stack`).
    """
    return to_plane_stack(from_plane_stack(stack, source, shape), target, pad_multiple=pad_multiple)


def brain_range(mask: np.ndarray, plane: str) -> tuple[int, int]:
    """``(bottom, top)``: the first and last slice index of ``plane`` that hold brain (the slice-location range
    of §2.4 along that plane's axis; for ``axial`` the preprocessing record's ``bottom_slice``/``top_slice``).

    Raises:
        ValueError: an empty mask.
    """
    m = _volume(mask, "mask") > 0
    axis = PLANE_AXIS[_plane(plane)]
    other = tuple(a for a in range(3) if a != axis)
    idx = np.flatnonzero(m.any(axis=other))
    if idx.size == 0:
        raise ValueError("the brain mask is empty: no slice location can be defined")
    return int(idx[0]), int(idx[-1])


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
            raise ValueError('fusion "weighted" needs weights (fit them with synth7t.views.fit_fusion_weights)')
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


# ------------------------------------------------------------------------------------------------ measures


def second_difference_energy(volume: np.ndarray, axis: int, mask: Optional[np.ndarray] = None) -> float:
    """Mean squared second difference ``v[i+1] - 2 v[i] + v[i-1]`` along ``axis``, over the positions whose three
    voxels all lie in ``mask`` (every interior position without a mask).

    Raises:
        ValueError: a bad axis, a mask of another shape, or no position to average over.
    """
    v = _volume(volume).astype(np.float64)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    n = v.shape[axis]
    if n < 3:
        raise ValueError(f"a second difference needs 3 voxels along axis {axis}, the volume has {n}")
    take = lambda a, s: np.take(a, np.arange(s, s + n - 2), axis=axis)  # noqa: E731
    d2 = take(v, 2) - 2 * take(v, 1) + take(v, 0)
    if mask is None:
        ok = np.ones(d2.shape, bool)
    else:
        m = np.asarray(mask) > 0
        if m.shape != v.shape:
            raise ValueError(f"mask shape {m.shape} differs from the volume's {v.shape}")
        ok = take(m, 0) & take(m, 1) & take(m, 2)
    if not ok.any():
        raise ValueError(f"no run of three masked voxels along axis {axis}")
    return float(np.mean(d2[ok] ** 2))


def through_plane_ratios(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Per plane, the second-difference energy across that plane's slices of ``image`` over the ``reference``'s
    (the real 7T), inside ``mask`` (the brain, artefact slices left out: see
    :func:`synth7t.metrics.evaluation_mask`).

    Returns:
        ``{"axial": r_Z, "coronal": r_Y, "sagittal": r_X}``: 1 is the 7T's roughness across those slices; blur
        lowers every ratio; a model that predicts one plane's slices one by one makes the ratio across them stand
        out from the other two (higher with slice-to-slice jitter, lower when it sharpens only within slices).
    """
    img, ref = _volume(image, "image"), _volume(reference, "reference")
    if img.shape != ref.shape:
        raise ValueError(f"image and reference shapes differ: {img.shape} and {ref.shape}")
    return {p: second_difference_energy(img, PLANE_AXIS[p], mask) / second_difference_energy(ref, PLANE_AXIS[p], mask)
            for p in PLANES}


def artefact_index(ratios: Mapping[str, float]) -> float:
    """The slicing-artefact index: largest through-plane ratio over the smallest (1: no direction stands out)."""
    r = np.array([float(ratios[p]) for p in PLANES])
    if np.any(r <= 0) or not np.isfinite(r).all():
        raise ValueError(f"through-plane ratios must be positive, got {dict(ratios)}")
    return float(r.max() / r.min())


def uncertainty_calibration(uncertainty: np.ndarray, prediction: np.ndarray, reference: np.ndarray,
                            mask: np.ndarray, n_bins: int = 10, block: int = 1) -> tuple[float, pd.DataFrame]:
    """How well the uncertainty map points at the errors, inside ``mask``.

    Args:
        uncertainty, prediction, reference: volumes of one shape (reference: the real 7T).
        mask: the voxels scored (brain, artefact slices left out).
        n_bins: quantile bins of the uncertainty (10: deciles).
        block: score ``block``-voxel cubes instead of voxels (the mean uncertainty and mean absolute error of each
            cube lying wholly inside ``mask``): a real 7T carries its own voxel noise, which no prediction can
            anticipate, and a user asks where not to trust a *region*; 1 scores voxels.

    Returns:
        ``(rho, table)``: Spearman's rank correlation between the uncertainty and the absolute error, and per bin
        (``bin`` 1 = least uncertain) the uncertainty range and mean, the mean absolute error and the count of
        voxels (or cubes).
    """
    from scipy.stats import spearmanr

    u, p, r = (_volume(a, n) for a, n in ((uncertainty, "uncertainty"), (prediction, "prediction"),
                                           (reference, "reference")))
    if not u.shape == p.shape == r.shape:
        raise ValueError(f"uncertainty, prediction and reference shapes differ: {u.shape}, {p.shape}, {r.shape}")
    m = np.asarray(mask) > 0
    if m.shape != u.shape or not m.any():
        raise ValueError("mask must have the volumes' shape and select at least one voxel")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive integer (voxels), got {block!r}")
    err_vol = np.abs(p.astype(np.float64) - r.astype(np.float64))
    if block == 1:
        uu, err = u[m].astype(np.float64), err_vol[m]
    else:
        uu, err = _block_means(u.astype(np.float64), block, m), _block_means(err_vol, block, m)
        if not len(uu):
            raise ValueError(f"no {block}-voxel cube lies wholly inside the mask")
    rho = float(spearmanr(uu, err).statistic) if np.ptp(uu) > 0 and np.ptp(err) > 0 else float("nan")
    # rank-based bins: equal counts even where many voxels share one uncertainty value
    order = np.argsort(uu, kind="stable")
    bins = np.empty(len(uu), int)
    bins[order] = np.arange(len(uu)) * n_bins // len(uu)
    table = (pd.DataFrame({"bin": bins + 1, "u": uu, "err": err}).groupby("bin")
             .agg(u_min=("u", "min"), u_max=("u", "max"), uncertainty=("u", "mean"), abs_error=("err", "mean"),
                  n_voxels=("err", "size")).reset_index())
    return rho, table


def _block_means(volume: np.ndarray, block: int, mask: np.ndarray) -> np.ndarray:
    """Means of the ``block``-voxel cubes of ``volume`` that lie wholly inside ``mask`` (the grid cut to whole cubes)."""
    X, Y, Z = (n // block * block for n in volume.shape)
    shape = (X // block, block, Y // block, block, Z // block, block)
    means = volume[:X, :Y, :Z].reshape(shape).mean(axis=(1, 3, 5))
    inside = mask[:X, :Y, :Z].reshape(shape).all(axis=(1, 3, 5))
    return means[inside]


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

    from . import io as sio

    u = _volume(uncertainty, "uncertainty")
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


# ------------------------------------------------------------------------------------------------ tables


def _evaluation_inputs(key: str, record: Mapping, derivatives: PathLike, reference_path: PathLike):
    from . import io as sio
    from .metrics import evaluation_mask, slice_indices

    ref = sio.load_volume(reference_path).data
    rel = (record.get("files") or {}).get("mask")
    if not rel:
        raise ValueError(f"{key}: its preprocessing record has no brain mask (files.mask)")
    brain = sio.load_volume(Path(derivatives) / rel, dtype=None).data > 0
    m = evaluation_mask(ref, brain_mask=brain, excluded_slices=slice_indices(record.get("excluded_slices") or []))
    return ref, m


def score_through_plane(images: pd.DataFrame, records: Mapping[str, dict], *, derivatives: PathLike,
                        reference: str = "7T") -> pd.DataFrame:
    """:func:`through_plane_ratios` and :func:`artefact_index` of every image against its subject's real 7T.

    Args:
        images: :func:`synth7t.inference.collect_images` (``key, image_type, name, path``).
        records: ``{key: preprocessing record}`` (brain mask and artefact slices).
        derivatives: the preprocessing output folder.

    Returns:
        One row per image but the reference: ``key``, ``image_type`` (display name), ``tp_axial``,
        ``tp_coronal``, ``tp_sagittal`` and ``artefact_index``.
    """
    from . import io as sio

    rows = []
    for key, group in images.groupby("key", sort=True):
        ref_path = group.loc[group["image_type"] == reference, "path"]
        if ref_path.empty:
            raise ValueError(f"{key}: no {reference} image to score against")
        ref, m = _evaluation_inputs(key, records.get(key) or {}, derivatives, ref_path.iloc[0])
        for r in group[group["image_type"] != reference].itertuples(index=False):
            ratios = through_plane_ratios(sio.load_volume(r.path).data, ref, m)
            rows.append({"key": key, "image_type": r.name, **{f"tp_{p}": v for p, v in ratios.items()},
                         "artefact_index": artefact_index(ratios)})
    return pd.DataFrame(rows)


def score_uncertainty(images: pd.DataFrame, records: Mapping[str, dict], *, derivatives: PathLike,
                      reference: str = "7T", n_bins: int = 10, block: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spearman correlation and calibration of every prediction that has an uncertainty map beside it.

    Args:
        images, records, derivatives, reference: as :func:`score_through_plane`.
        n_bins: bins of the calibration table (deciles).
        block: the cube side of the regional correlation ``rho_block`` (see :func:`uncertainty_calibration`).

    Returns:
        ``(summary, calibration)``: per (key, image type) ``rho`` (voxels), ``rho_block`` (``block``-voxel cubes)
        and the voxel count; per (key, image type, bin) the rows of :func:`uncertainty_calibration` (voxels).
    """
    from . import io as sio

    summary, calib = [], []
    for key, group in images.groupby("key", sort=True):
        ref_path = group.loc[group["image_type"] == reference, "path"]
        if ref_path.empty:
            raise ValueError(f"{key}: no {reference} image to score against")
        ref = m = None
        for r in group[group["image_type"] != reference].itertuples(index=False):
            up = uncertainty_path(r.path)
            if not up.is_file():
                continue
            if ref is None:
                ref, m = _evaluation_inputs(key, records.get(key) or {}, derivatives, ref_path.iloc[0])
            u, pred = sio.load_volume(up).data, sio.load_volume(r.path).data
            rho, table = uncertainty_calibration(u, pred, ref, m, n_bins=n_bins)
            rho_block, _ = uncertainty_calibration(u, pred, ref, m, n_bins=n_bins, block=block)
            summary.append({"key": key, "image_type": r.name, "rho": rho, "rho_block": rho_block,
                            "n_voxels": int(m.sum())})
            calib.append(table.assign(key=key, image_type=r.name))
    cal = pd.concat(calib, ignore_index=True) if calib else pd.DataFrame(
        columns=["bin", "u_min", "u_max", "uncertainty", "abs_error", "n_voxels", "key", "image_type"])
    return pd.DataFrame(summary, columns=["key", "image_type", "rho", "rho_block", "n_voxels"]), cal

