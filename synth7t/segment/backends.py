"""The two segmentation backends (offline atlas propagation, FreeSurfer's SynthSeg) and the one-image API."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from scipy import ndimage as ndi

from .. import io as sio
from ..preprocess.ants import coarsen, register, resample, to_ants
from ..templates import load_mni
from .config import (FREESURFER_LABELS, AtlasConfig, PathLike, SegmentationBackendError, SynthSegConfig,
                     config_for)

# ------------------------------------------------------------------------------------------------ inputs


def _as_volume(image, affine, what: str = "image") -> tuple[np.ndarray, np.ndarray, Any]:
    """``(float32 data, affine, header or None)`` of a path or an array with its affine; bad inputs raise."""
    header = None
    if isinstance(image, (str, os.PathLike)):
        vol = sio.load_volume(image)  # NiftiError names the file and the problem
        data, aff, header = vol.data, vol.affine, vol.header
        if affine is not None:
            raise ValueError(f"{what}: give an affine only with an array (the file {image} has its own)")
    else:
        if affine is None:
            raise ValueError(f"{what}: an array needs its 4x4 voxel-to-world affine (affine=...)")
        data = np.asarray(image)
        aff = np.asarray(affine, float)
        if aff.shape != (4, 4) or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-9:
            raise ValueError(f"{what}: affine must be a finite, invertible 4x4 matrix, got shape {aff.shape}")
        if data.ndim != 3 or min(data.shape) < 2:
            raise ValueError(f"{what}: expected a 3D volume, got shape {tuple(data.shape)}")
        if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
            raise ValueError(f"{what}: expected numbers, got dtype {data.dtype}")
        data = data.astype(np.float32)
        if not np.all(np.isfinite(data)):
            raise ValueError(f"{what}: contains non-finite voxel values (NaN or inf)")
    if not np.any(data):
        raise ValueError(f"{what}: the image is all zero; there is no brain to segment")
    return data, aff, header


def _brain_mask(data: np.ndarray, affine: np.ndarray, mask, fill_holes: bool) -> np.ndarray:
    """The brain to label: a given mask (array or file, resampled by nearest neighbour when on another grid) or
    the image's non-zero voxels."""
    if mask is None:
        m = data != 0
        if fill_holes:
            m = _fill_holes(m)
        return m
    if isinstance(mask, (str, os.PathLike)):
        mv = sio.load_volume(mask, dtype=None)
        m = np.asarray(mv.data) > 0
        if m.shape != data.shape or not np.allclose(mv.affine, affine, atol=1e-4):
            m = resample(m, mv.affine, data.shape, affine, order=0)
    else:
        m = np.asarray(mask)
        if m.shape != data.shape:
            raise ValueError(f"mask shape {m.shape} differs from the image's {data.shape}")
        m = m > 0
    if not m.any():
        raise ValueError("the brain mask is empty (or does not overlap the image)")
    return m


def _bbox(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    box = _bbox(mask, 1)
    out = mask.copy()
    out[box] = ndi.binary_fill_holes(mask[box])
    return out


def _crop_affine(affine: np.ndarray, box: Sequence[slice]) -> np.ndarray:
    a = np.asarray(affine, float).copy()
    a[:3, 3] = a[:3, :3] @ np.array([s.start for s in box], float) + a[:3, 3]
    return a


def _rescale(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Clipped min-max to [0, 1] inside the mask (upper bound the 99th percentile), 0 outside."""
    v = data[mask]
    lo, hi = float(v.min()), float(np.percentile(v, 99))
    if not hi > lo:
        hi = float(v.max())
    if not hi > lo:
        raise ValueError("the image is constant inside the brain; not a T1w brain MRI")
    out = np.clip((data - lo) / (hi - lo), 0, 1).astype(np.float32)
    out[~mask] = 0
    return out


# --------------------------------------------------------------------------------------- atlas backend


@functools.lru_cache(maxsize=4)
def _atlas(spacing: float):
    """The template brain (normalised, cropped, at ``spacing`` mm) and its labels (1 mm, cropped); per process."""
    tpl = load_mni()
    box = _bbox(tpl.mask, 4)
    aff = _crop_affine(tpl.affine, box)
    img = _rescale(tpl.t1[box] * tpl.mask[box], tpl.mask[box])
    img, img_aff = coarsen(img, aff, spacing, antialias=True)
    labels = np.ascontiguousarray(tpl.labels[box].astype(np.float32))
    return img, img_aff, labels, aff


def _segment_atlas(data: np.ndarray, affine: np.ndarray, brain: np.ndarray, cfg: AtlasConfig) -> np.ndarray:
    import ants

    tpl_img, tpl_aff, tpl_labels, lab_aff = _atlas(float(cfg.registration_spacing))
    # register on the brain's bounding box (plus 8 mm): the grid's padding only costs time
    vox = float(np.linalg.norm(affine[:3, :3], axis=0).min())
    box = _bbox(brain, int(np.ceil(8.0 / vox)))
    crop_aff = _crop_affine(affine, box)
    fixed = _rescale(data[box], brain[box])
    fixed, fixed_aff = coarsen(fixed, crop_aff, float(cfg.registration_spacing), antialias=True)
    with tempfile.TemporaryDirectory(prefix="synth7t-atlas.") as tmp:
        try:
            transforms = register(fixed, fixed_aff, tpl_img, tpl_aff, Path(tmp) / "atlas_", cfg)["transforms"]
        except RuntimeError as exc:
            raise SegmentationBackendError(str(exc)) from None
        # warp the labels onto the input's own grid, only over the brain's bounding box
        lbox = _bbox(brain, 1)
        ref = to_ants(np.zeros(tuple(s.stop - s.start for s in lbox), np.float32), _crop_affine(affine, lbox))
        warped = ants.apply_transforms(fixed=ref, moving=to_ants(tpl_labels, lab_aff), transformlist=transforms,
                                       interpolator=cfg.label_interpolation)
    labels = np.zeros(data.shape, np.int16)
    labels[lbox] = np.rint(warped.numpy()).astype(np.int16)
    labels[~brain] = 0
    return labels


# ------------------------------------------------------------------------------------ synthseg backend


def synthseg_available() -> bool:
    """True when FreeSurfer's ``mri_synthseg`` is on PATH."""
    return shutil.which("mri_synthseg") is not None


def _segment_synthseg(data: np.ndarray, affine: np.ndarray, header, cfg: SynthSegConfig) -> np.ndarray:
    exe = shutil.which("mri_synthseg")
    if exe is None:
        raise SegmentationBackendError(
            "backend='synthseg' needs FreeSurfer's mri_synthseg (FreeSurfer >= 7.3, "
            "https://surfer.nmr.mgh.harvard.edu) on PATH, which was not found: install FreeSurfer and source "
            "$FREESURFER_HOME/SetUpFreeSurfer.sh; or use backend='atlas', which works offline")
    with tempfile.TemporaryDirectory(prefix="synth7t-synthseg.") as tmp:
        src, dst = Path(tmp) / "input.nii.gz", Path(tmp) / "synthseg.nii.gz"
        sio.save_volume(src, data, affine, header=header, dtype=np.float32)
        cmd = [exe, "--i", str(src), "--o", str(dst), "--threads", str(int(cfg.threads))]
        if cfg.robust:
            cmd.append("--robust")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not dst.exists():
            tail = (proc.stderr or proc.stdout or "").strip()[-500:]
            raise SegmentationBackendError(f"mri_synthseg failed (exit {proc.returncode}): {tail}")
        out = sio.load_volume(dst, dtype=None)
    lab = np.rint(np.asarray(out.data)).astype(np.int16)
    same = lab.shape == data.shape and np.allclose(out.affine, affine, atol=1e-4)
    lab = lab if same else resample(lab, out.affine, data.shape, affine, order=0)
    lab[~np.isin(lab, list(FREESURFER_LABELS))] = 0  # e.g. SynthSeg's CSF (24)
    return lab.astype(np.int16)


# ----------------------------------------------------------------------------------------------- API


def segment(image, affine: Optional[np.ndarray] = None, *, backend: str = "atlas", mask=None,
            config: Optional[Union[AtlasConfig, SynthSegConfig, Mapping]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Segment a brain-extracted T1w volume into the regions of :data:`FREESURFER_LABELS`.

    Args:
        image: a NIfTI path, or an array ``(X, Y, Z)`` with ``affine``. The atlas backend expects a
            brain-extracted image (background exactly 0, e.g. the preprocessed 3T, 7T or a synthetic 7T) or an
            explicit ``mask``; any intensity scale works (it is rescaled inside the brain).
        affine: ``4x4`` voxel-to-world (RAS mm) matrix of an array ``image``.
        backend: ``"atlas"`` (offline default) or ``"synthseg"`` (FreeSurfer's ``mri_synthseg`` on PATH).
        mask: brain mask (array of the image's shape, or a NIfTI path resampled onto the image's grid); labels
            are kept inside it. Default: the image's non-zero voxels.
        config: :class:`AtlasConfig` or :class:`SynthSegConfig` (or a dict of its fields) for the backend.

    Returns:
        ``(labels, affine)``: int16 label map ``(X, Y, Z)`` on the image's own grid (FreeSurfer numbers, 0
        background) and that grid's affine.

    Raises:
        ValueError: an unknown backend or config; an array that is not 3D, all zero or non-finite; a mask of
            another shape or an empty mask (:class:`synth7t.io.NiftiError`, a ``ValueError``, for bad files).
        SegmentationBackendError: ``mri_synthseg`` is missing or failed; ANTs failed.

    Example:
        >>> labels, aff = segment("sub-001_acq-7T_desc-preproc_T1w.nii.gz")    # doctest: +SKIP
        >>> regional_volumes(labels, aff, [17, 53])                               # doctest: +SKIP
        {'Left-Hippocampus': 3.9, 'Right-Hippocampus': 4.1}
    """
    cfg = config_for(backend, config)
    data, aff, header = _as_volume(image, affine)
    brain = _brain_mask(data, aff, mask, getattr(cfg, "fill_holes", True))
    if backend == "atlas":
        labels = _segment_atlas(data, aff, brain, cfg)
    else:
        labels = _segment_synthseg(data, aff, header, cfg)
        labels[~brain] = 0
    return labels, aff


def segment_file(in_path: PathLike, out_path: PathLike, *, backend: str = "atlas", mask=None,
                 config: Optional[Union[AtlasConfig, SynthSegConfig, Mapping]] = None) -> Path:
    """:func:`segment` a NIfTI file and write the label map with the input's header fields (atomic write).

    Args:
        in_path: the image (see :func:`segment`).
        out_path: destination ``.nii`` or ``.nii.gz``.
        backend, mask, config: as in :func:`segment`.

    Returns:
        The path written.
    """
    if not sio.is_nifti_path(out_path):
        raise ValueError(f"{out_path}: output must end in .nii or .nii.gz")
    vol = sio.load_volume(in_path)
    labels, aff = segment(vol.data, vol.affine, backend=backend, mask=mask, config=config)
    return sio.save_volume(out_path, labels, aff, header=vol.header)


def regional_volumes(labels: np.ndarray, affine: np.ndarray,
                     label_ids: Optional[Iterable[int]] = None) -> dict[str, float]:
    """Volume of each region in mL (voxel count times the voxel volume of ``affine``).

    Args:
        labels: integer label map ``(X, Y, Z)``.
        affine: its ``4x4`` voxel-to-world matrix (only the voxel volume is used).
        label_ids: labels to measure (default every label of :data:`FREESURFER_LABELS`); a number missing from
            the table is named ``label-<n>``. Absent labels measure 0.

    Returns:
        ``{region name: mL}`` in the order of ``label_ids``.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"labels must be a 3D label map, got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.allclose(lab, np.rint(lab)):
            raise ValueError("labels must hold integers (a label map), got fractional values")
        lab = np.rint(lab).astype(np.int64)
    if lab.size and lab.min() < 0:
        raise ValueError("labels must be >= 0")
    ids = [int(i) for i in (FREESURFER_LABELS if label_ids is None else label_ids)]
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, float)[:3, :3]))) / 1000.0
    counts = np.bincount(lab.ravel().astype(np.int64), minlength=max(ids + [0]) + 1)
    return {FREESURFER_LABELS.get(i, f"label-{i}"): float(counts[i] * voxel_ml) if i < counts.size else 0.0
            for i in ids}
