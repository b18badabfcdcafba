"""The two segmentation backends (offline atlas propagation, FreeSurfer's SynthSeg) and the one-image API."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from scipy import ndimage as ndi

from ..data import io as sio
from ..preprocess.ants import coarsen, register, resample, to_ants
from ..preprocess.grid import bounding_box, crop_affine
from ..data.templates import load_mni, load_mni_aparc
from .config import (APARC_LABELS, FREESURFER_LABELS, AtlasConfig, PathLike, SegmentationBackendError,
    SynthSegConfig, config_for, label_table)

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


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    box = bounding_box(mask, 1)
    out = mask.copy()
    out[box] = ndi.binary_fill_holes(mask[box])
    return out


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
def _atlas(spacing: float, parc: bool = False):
    """The template brain (normalised, cropped, at ``spacing`` mm) and its labels (1 mm, cropped; the cortex
    divided into CerebrA's regions with ``parc``); per process."""
    tpl = load_mni()
    box = bounding_box(tpl.mask, 4)
    aff = crop_affine(tpl.affine, box)
    img = _rescale(tpl.t1[box] * tpl.mask[box], tpl.mask[box])
    img, img_aff = coarsen(img, aff, spacing, antialias=True)
    labels = np.ascontiguousarray((load_mni_aparc() if parc else tpl.labels)[box].astype(np.float32))
    return img, img_aff, labels, aff


def _segment_atlas(data: np.ndarray, affine: np.ndarray, brain: np.ndarray, cfg: AtlasConfig) -> np.ndarray:
    import ants

    tpl_img, tpl_aff, tpl_labels, lab_aff = _atlas(float(cfg.registration.spacing), bool(cfg.parc))
    # register on the brain's bounding box (plus 8 mm): the grid's padding only costs time
    vox = float(np.linalg.norm(affine[:3, :3], axis=0).min())
    box = bounding_box(brain, int(np.ceil(8.0 / vox)))
    crop_aff = crop_affine(affine, box)
    fixed = _rescale(data[box], brain[box])
    fixed, fixed_aff = coarsen(fixed, crop_aff, float(cfg.registration.spacing), antialias=True)
    with tempfile.TemporaryDirectory(prefix="synth7t-atlas-") as tmp:
        try:
            transforms = register(fixed, fixed_aff, tpl_img, tpl_aff, Path(tmp) / "atlas_", cfg)["transforms"]
        except RuntimeError as exc:
            raise SegmentationBackendError(str(exc)) from None
        # warp the labels onto the input's own grid, only over the brain's bounding box
        lbox = bounding_box(brain, 1)
        ref = to_ants(np.zeros(tuple(s.stop - s.start for s in lbox), np.float32), crop_affine(affine, lbox))
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


def synthseg_executable() -> str:
    """The path of ``mri_synthseg`` on PATH.

    Raises:
        SegmentationBackendError: it is not on PATH (the message says how to get it).
    """
    exe = shutil.which("mri_synthseg")
    if exe is None:
        raise SegmentationBackendError(
            "backend='synthseg' needs FreeSurfer's mri_synthseg (FreeSurfer >= 7.3, "
            "https://surfer.nmr.mgh.harvard.edu) on PATH, which was not found: install FreeSurfer and source "
            "$FREESURFER_HOME/SetUpFreeSurfer.sh; or use backend='atlas', which works offline")
    return exe


def _stamp(exe: str) -> tuple:
    """What identifies an installed executable for the per-process caches (an upgrade in place changes it)."""
    st = os.stat(exe)
    return (exe, os.path.realpath(exe), st.st_mtime_ns, st.st_size, os.environ.get("FREESURFER_HOME", ""))


@functools.lru_cache(maxsize=8)
def _synthseg_help(stamp: tuple) -> str:
    """``mri_synthseg --help`` of the executable of ``stamp`` (cached per process: it imports TensorFlow)."""
    exe = stamp[0]
    try:
        proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SegmentationBackendError(f"could not run `{exe} --help`: {exc}") from None
    text = f"{proc.stdout or ''}\n{proc.stderr or ''}"
    if not (_offers(text, "--i") and _offers(text, "--o")):
        tail = text.strip()[-500:]
        raise SegmentationBackendError(
            f"could not read the options of {exe} from `mri_synthseg --help` (exit {proc.returncode}): {tail!r}; "
            "mri_synthseg needs FreeSurfer set up (export FREESURFER_HOME=<your FreeSurfer> and source "
            "$FREESURFER_HOME/SetUpFreeSurfer.sh)")
    return text


def _offers(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def synthseg_flags(config: Optional[Union[SynthSegConfig, Mapping]] = None) -> list[str]:
    """The model flags that ``config`` passes to the ``mri_synthseg`` on PATH (``--v1``, ``--parc``, ``--robust``),
    each checked against the flags its ``--help`` lists (read once per process and executable).

    Raises:
        SegmentationBackendError: ``mri_synthseg`` is missing, its help cannot be read, or it does not offer a flag
            the config asks for (``v1=True`` on a FreeSurfer without SynthSeg 1.0: the message says to set
            ``v1=False``, CLI ``--no-v1``, to use the installed version instead).
    """
    cfg = config_for("synthseg", config)
    wanted = [f for f, on in (("--v1", cfg.v1), ("--parc", cfg.parc), ("--robust", cfg.robust)) if on]
    if not wanted:
        return []
    exe = synthseg_executable()
    text = _synthseg_help(_stamp(exe))
    if cfg.v1 and not _offers(text, "--v1"):
        raise SegmentationBackendError(
            f"SynthSegConfig(v1=True) asks for SynthSeg 1.0, the version the paper used (`mri_synthseg --v1`), but "
            f"the installed {exe} (FreeSurfer {synthseg_version()}) does not list --v1 in its --help. Install a "
            "FreeSurfer whose mri_synthseg offers --v1 to segment as the paper did, or set v1=False (CLI: --no-v1) "
            "to use the installed version's own model (the version is recorded beside every table)")
    missing = [f for f in wanted if f != "--v1" and not _offers(text, f)]
    if missing:
        raise SegmentationBackendError(f"the installed {exe} does not offer {', '.join(missing)} (not in its "
                                       f"--help); leave the matching option off (parc=False, robust=False)")
    return wanted


@functools.lru_cache(maxsize=8)
def _synthseg_version(stamp: tuple) -> tuple[str, str]:
    exe, real, home = stamp[0], stamp[1], stamp[4]
    # the executable lives in $FREESURFER_HOME/bin: its install is found even when FREESURFER_HOME is not set
    for root in dict.fromkeys(p for p in (home, str(Path(exe).parent.parent), str(Path(real).parent.parent)) if p):
        stamp_file = Path(root) / "build-stamp.txt"
        if stamp_file.is_file():
            line = next((x.strip() for x in stamp_file.read_text(errors="replace").splitlines() if x.strip()), "")
            if line:
                return line, str(stamp_file)
    try:
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=600)
        out = (proc.stdout or "").strip()
        if proc.returncode == 0 and out:
            return out.splitlines()[0].strip(), "mri_synthseg --version"
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown", "neither $FREESURFER_HOME/build-stamp.txt nor `mri_synthseg --version`"


def synthseg_version(with_source: bool = False) -> Union[str, tuple[str, str]]:
    """The installed FreeSurfer/SynthSeg version: the first line of ``build-stamp.txt`` in ``$FREESURFER_HOME`` (or
    in the FreeSurfer folder that holds ``bin/mri_synthseg``), else what ``mri_synthseg --version`` prints, else
    ``"unknown"``. Cached per process and executable.

    Args:
        with_source: also return where the version was read (a path, or the command).

    Raises:
        SegmentationBackendError: ``mri_synthseg`` is not on PATH.
    """
    version, source = _synthseg_version(_stamp(synthseg_executable()))
    return (version, source) if with_source else version


def _segment_synthseg(data: np.ndarray, affine: np.ndarray, header, cfg: SynthSegConfig) -> np.ndarray:
    exe = synthseg_executable()
    flags = synthseg_flags(cfg)  # before any work: an unavailable --v1 is an error, never dropped
    with tempfile.TemporaryDirectory(prefix="synth7t-synthseg-") as tmp:
        src, dst = Path(tmp) / "input.nii.gz", Path(tmp) / "synthseg.nii.gz"
        sio.save_volume(src, data, affine, header=header, dtype=np.float32)
        cmd = [exe, "--i", str(src), "--o", str(dst), "--threads", str(int(cfg.threads)), *flags]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not dst.exists():
            tail = (proc.stderr or proc.stdout or "").strip()[-500:]
            raise SegmentationBackendError(f"mri_synthseg failed (exit {proc.returncode}): {tail}")
        out = sio.load_volume(dst, dtype=None)
    lab = np.rint(np.asarray(out.data)).astype(np.int16)
    same = lab.shape == data.shape and np.allclose(out.affine, affine, atol=1e-4)
    lab = lab if same else resample(lab, out.affine, data.shape, affine, order=0)
    lab[~np.isin(lab, list(label_table(cfg.parc)))] = 0  # e.g. SynthSeg's CSF (24)
    return lab.astype(np.int16)


# ----------------------------------------------------------------------------------------------- API


def segment(image, affine: Optional[np.ndarray] = None, *, backend: str = "atlas", mask=None,
            config: Optional[Union[AtlasConfig, SynthSegConfig, Mapping]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Segment a brain-extracted T1w volume into the regions of :data:`FREESURFER_LABELS` (with the config's
    ``parc``, the cortex divided into the cortical regions of :data:`APARC_LABELS`).

    Args:
        image: a NIfTI path, or an array ``(X, Y, Z)`` with ``affine``. The atlas backend expects a
            brain-extracted image (background exactly 0, e.g. the preprocessed 3T, 7T or a synthetic 7T) or an
            explicit ``mask``; any intensity scale works (it is rescaled inside the brain).
        affine: ``4x4`` voxel-to-world (RAS mm) matrix of an array ``image``.
        backend: ``"atlas"`` (offline default) or ``"synthseg"`` (FreeSurfer's ``mri_synthseg`` on PATH).
        mask: brain mask (array of the image's shape, or a NIfTI path resampled onto the image's grid); labels
            are kept inside it. Default: the image's non-zero voxels.
        config: :class:`AtlasConfig` or :class:`SynthSegConfig` (or a dict of its fields) for the backend. Both
            take ``parc``; SynthSeg's ``v1`` (default True) asks for SynthSeg 1.0, as in the paper.

    Returns:
        ``(labels, affine)``: int16 label map ``(X, Y, Z)`` on the image's own grid (FreeSurfer numbers, 0
        background) and that grid's affine. With ``parc`` the cortex is labelled 1000s (left) and 2000s (right)
        instead of 3 and 42 (:func:`aseg_from_aparc` merges them back).

    Raises:
        ValueError: an unknown backend or config; an array that is not 3D, all zero or non-finite; a mask of
            another shape or an empty mask (:class:`synth7t.data.io.NiftiError`, a ``ValueError``, for bad files).
        SegmentationBackendError: ``mri_synthseg`` is missing, lacks a flag the config asks for (e.g. ``--v1``)
            or failed; ANTs failed.

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


def aseg_from_aparc(labels: np.ndarray) -> np.ndarray:
    """A copy of a label map with the cortical parcels of :data:`APARC_LABELS` merged back into the cortex labels
    (1000s -> 3 left, 2000s -> 42 right), e.g. to score a ``parc`` segmentation against an aseg-level reference."""
    lab = np.array(labels, copy=True)
    parcels = np.isin(lab, list(APARC_LABELS))
    lab[parcels & (lab < 2000)] = 3
    lab[parcels & (lab >= 2000)] = 42
    return lab


def regional_volumes(labels: np.ndarray, affine: np.ndarray,
                     label_ids: Optional[Iterable[int]] = None) -> dict[str, float]:
    """Volume of each region in mL (voxel count times the voxel volume of ``affine``).

    The cerebral cortex (3 left, 42 right) also counts the cortical parcels of its hemisphere
    (:data:`APARC_LABELS`), as SynthSeg's own volumes do, so that a cortex volume is the same quantity with and
    without ``parc``.

    Args:
        labels: integer label map ``(X, Y, Z)``.
        affine: its ``4x4`` voxel-to-world matrix (only the voxel volume is used).
        label_ids: labels to measure (default every label of :data:`FREESURFER_LABELS`, and those of
            :data:`APARC_LABELS` when the map holds cortical parcels); a number missing from both tables is named
            ``label-<n>``. Absent labels measure 0.

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
    ids = None if label_ids is None else [int(i) for i in label_ids]
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, float)[:3, :3]))) / 1000.0
    counts = np.bincount(lab.ravel().astype(np.int64), minlength=max([max(APARC_LABELS), *(ids or [])]) + 1)
    parcels = np.array(list(APARC_LABELS))
    if ids is None:
        ids = list(label_table(bool(counts[parcels].any())))
    counts[3] += counts[parcels[parcels < 2000]].sum()
    counts[42] += counts[parcels[parcels >= 2000]].sum()
    names = {**FREESURFER_LABELS, **APARC_LABELS}
    return {names.get(i, f"label-{i}"): float(counts[i] * voxel_ml) for i in ids}
