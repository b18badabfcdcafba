"""What multi-view slicing leaves behind (beyond the paper): through-plane roughness against the real 7T, the
slicing-artefact index, and how well the views' uncertainty map points at the errors.

**Slicing artefacts.** :func:`through_plane_ratios` measures, for each plane, the energy of the second difference
across that plane's slices (along its axis), inside the brain, as a ratio to the real 7T's. Isotropic blur lowers all
three alike. A model that predicts one plane's slices one at a time treats that axis differently from the other two:
it may leave slice-to-slice jitter across them (the ratio across its slices rises above the in-plane ones) or, as
the small demo U-Nets do, add detail within each slice that it cannot make consistent across slices (the ratio across
its slices stays low while the in-plane ones rise: an axial model on the demo cohort scores 0.13 across axial slices
and 0.38 and 0.49 across coronal and sagittal ones). The *slicing-artefact index* is the largest ratio over the
smallest: 1 when the image is as rough, relative to the 7T, in every direction, whichever way a plane stands out.

The uncertainty map is :func:`synth7t.inference.fusion.view_uncertainty`; :func:`uncertainty_calibration` checks it
against the real 7T (the Spearman correlation with the absolute error inside the brain and the mean error per
uncertainty decile).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
import pandas as pd

from ..data.planes import PLANE_AXIS, PLANES, as_volume
from ..inference.fusion import uncertainty_path

__all__ = ["second_difference_energy", "through_plane_ratios", "artefact_index", "uncertainty_calibration",
           "score_through_plane", "score_uncertainty"]

PathLike = Union[str, Path]


# ------------------------------------------------------------------------------------------------ measures


def second_difference_energy(volume: np.ndarray, axis: int, mask: Optional[np.ndarray] = None) -> float:
    """Mean squared second difference ``v[i+1] - 2 v[i] + v[i-1]`` along ``axis``, over the positions whose three
    voxels all lie in ``mask`` (every interior position without a mask).

    Raises:
        ValueError: a bad axis, a mask of another shape, or no position to average over.
    """
    v = as_volume(volume).astype(np.float64)
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
    :func:`synth7t.evaluation.metrics.evaluation_mask`).

    Returns:
        ``{"axial": r_Z, "coronal": r_Y, "sagittal": r_X}``: 1 is the 7T's roughness across those slices; blur
        lowers every ratio; a model that predicts one plane's slices one by one makes the ratio across them stand
        out from the other two (higher with slice-to-slice jitter, lower when it sharpens only within slices).
    """
    img, ref = as_volume(image, "image"), as_volume(reference, "reference")
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

    u, p, r = (as_volume(a, n) for a, n in ((uncertainty, "uncertainty"), (prediction, "prediction"),
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
    """Means of the ``block``-voxel cubes of ``volume`` that lie wholly inside ``mask`` (the grid cut to whole
    cubes)."""
    X, Y, Z = (n // block * block for n in volume.shape)
    shape = (X // block, block, Y // block, block, Z // block, block)
    means = volume[:X, :Y, :Z].reshape(shape).mean(axis=(1, 3, 5))
    inside = mask[:X, :Y, :Z].reshape(shape).all(axis=(1, 3, 5))
    return means[inside]


# ------------------------------------------------------------------------------------------------ tables


def _evaluation_inputs(key: str, record: Mapping, derivatives: PathLike, reference_path: PathLike):
    from ..data import io as sio
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
    from ..data import io as sio

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
    from ..data import io as sio

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
