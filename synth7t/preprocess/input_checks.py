"""Content checks of a lone 3T before a model sees it: is this an adult T1w brain on a sane grid, and did it align?

A file check (shape, finite values, an invertible affine: :func:`synth7t.data.io.read_nifti`) lets through a volume of
negated noise, a T2-weighted scan, a child's head or a sheared header; a model then returns a confident "synthetic
7T" of it. :func:`preprocess_lone_3t` runs these checks at the first moment each can be made, so a bad input stops
before the costly steps:

===================  ============================  ========================================================  =======
check                when                          measure                                                   outcome
===================  ============================  ========================================================  =======
``affine``           on loading                    largest ``|cos|`` between the voxel axes (0: orthogonal)  refuse
``voxel_size``       on loading                    smallest and largest voxel edge (mm)                      refuse
``extent``           on loading                    smallest and largest field-of-view edge (mm)              refuse
``slice_thickness``  on loading                    largest voxel edge over the model's grid spacing          warn
``brain_volume``     after brain extraction        the brain mask's volume (mL)                              refuse
``tissue_order``     after N4                      rank correlation of intensity with depth (outer 15 mm)    refuse
``alignment``        after the template alignment  correlation of the aligned brain with the template's      refuse
===================  ============================  ========================================================  =======

Each limit is a field of :class:`InputCheckConfig`. A refusal raises :class:`InputRefused` (one line per failed
check, each naming its measure and limit) unless ``force``; with ``force`` it is kept as ``"forced"`` in the
record and the work goes on. Warnings go through :mod:`warnings` (category :class:`InputWarning`), one line each.

**Tissue order.** A T1w brain's white matter is brighter than its grey matter, which is brighter than CSF; grey
matter and CSF lie at the brain's surface and white matter below them. So within the outer 15 mm of the brain mask
a T1w's intensity rises with depth, and a T2w's or an inverted image's falls. The check is Spearman's rank
correlation of intensity with depth (mm below the mask's surface) there. Measured: the MNI 2009c T1 0.44; the demo's
3T images 0.48-0.50; a realistic 1 mm scan made from the MNI T1 (turned, bias field, noise; deepbet mask) 0.54 after
the quick preset's N4 and 0.36 after the paper's; with noise of 12 % of the brain's mean added 0.48; the same
images negated or with T2-like contrast -0.54; noise 0.00. A first version compared the mean depth of the brightest
of three k-means classes with the others' (T1w 1.3-1.4, T2-like 0.6, noise 1.0), but refused the realistic scan
after the paper's N4 (1.12): the k-means classes of a noisy, flattened image mix white and grey matter.

**Brain volume.** Adult intracranial volumes span about 1,100-1,900 mL (Buckner et al., NeuroImage 2004); brain
masks (which leave out part of the CSF) are smaller, and the MNI 2009c template, enlarged by its registration to
MNI space, masks about 1,900 mL, and the demo's simulated heads built from it reach 2,320 mL (deepbet's mask of a
coarse test cohort). Default range: 900-2,600 mL (a mask with the skull in it is larger still); a head scaled to
0.75 (about 800 mL) is refused.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import ClassVar, Iterable, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..configbase import Config
from .config import PreprocessError

OUTCOMES = ("ok", "warn", "refuse", "forced")
DEPTH_STEP_MM = 2.0  # the grid of the tissue measures (brain_depth)


class InputRefused(PreprocessError):
    """An input that is not what a model of synth7t can predict from (one line per failed check; ``--force`` goes
    on anyway)."""


class InputWarning(UserWarning):
    """An input a model predicts from, with a caveat the user must hear (one line)."""


@dataclass
class InputCheckConfig(Config):
    """Limits of the content checks (see the module docstring for how each was chosen).

    Attributes:
        max_shear: largest ``|cos|`` of the angle between two voxel axes of the affine; above it the header is
            sheared or broken (a scanner writes orthogonal axes; 0.05 is about 3 degrees off square).
        min_voxel_mm, max_voxel_mm: plausible voxel edges of a structural scan.
        min_extent_mm, max_extent_mm: plausible field-of-view edges (mm): a head is about 140 x 180 x 150 mm; a
            field of view under 100 mm cannot hold a brain, one over 600 mm is a body scan or a wrong voxel size.
        max_thickness_ratio: the thickest voxel edge over the model's grid spacing above which the prediction
            is warned about (a 1 x 1 x 5 mm scan lost detail across its slices that no model restores).
        min_brain_ml, max_brain_ml: the brain mask's volume range (adult).
        min_depth_correlation: the tissue-order measure (rank correlation of intensity with depth in the outer
            ``tissue_band_mm`` of the brain) below which the input is not a T1w brain.
        tissue_band_mm: the depth below the mask's surface within which the tissue order is measured.
        min_alignment_correlation: correlation of the aligned brain with the template brain (template alignment)
            below which the alignment failed. Measured: demo 3Ts aligned correctly 0.71-0.72 (given masks), a coarse
            2.3 mm demo 3T with its deepbet mask 0.43, a front-back flipped header 0.19-0.20.
        tissue_sample: voxels sampled for the tissue-order measure (seeded).
    """

    max_shear: float = 0.05
    min_voxel_mm: float = 0.2
    max_voxel_mm: float = 8.0
    min_extent_mm: float = 100.0
    max_extent_mm: float = 600.0
    max_thickness_ratio: float = 2.0
    min_brain_ml: float = 900.0
    max_brain_ml: float = 2600.0
    min_depth_correlation: float = 0.15
    tissue_band_mm: float = 15.0
    min_alignment_correlation: float = 0.3
    tissue_sample: int = 50_000

    RUNTIME_FIELDS: ClassVar[tuple] = ()

    def __post_init__(self):
        if not 0 < self.min_brain_ml < self.max_brain_ml:
            raise ValueError(f"need 0 < min_brain_ml < max_brain_ml, got {self.min_brain_ml}, {self.max_brain_ml}")
        if not 0 < self.min_voxel_mm < self.max_voxel_mm:
            raise ValueError(f"need 0 < min_voxel_mm < max_voxel_mm, got {self.min_voxel_mm}, {self.max_voxel_mm}")
        if not 0 < self.min_extent_mm < self.max_extent_mm:
            raise ValueError(f"need 0 < min_extent_mm < max_extent_mm, got {self.min_extent_mm}, "
                             f"{self.max_extent_mm}")
        if not 0 <= self.max_shear < 1 or self.max_thickness_ratio <= 0 or self.tissue_sample < 1000:
            raise ValueError("need 0 <= max_shear < 1, max_thickness_ratio > 0 and tissue_sample >= 1000")
        if not -1 <= self.min_depth_correlation <= 1 or self.tissue_band_mm <= 0:
            raise ValueError("need -1 <= min_depth_correlation <= 1 and tissue_band_mm > 0")


@dataclass
class Finding:
    """One check's result: ``outcome`` is ``ok``, ``warn``, ``refuse`` or ``forced`` (refused, gone on with
    ``force``); ``value`` the measure, ``limit`` what it was held against, ``message`` one line for the user."""

    check: str
    outcome: str
    value: float
    limit: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def _finding(check: str, bad: bool, value: float, limit: str, message: str, severity: str = "refuse") -> Finding:
    return Finding(check, severity if bad else "ok", round(float(value), 4), limit, message if bad else "")


# ------------------------------------------------------------------------------------------------ header


def check_header(affine: np.ndarray, shape: Sequence[int], grid_spacing: Optional[float],
                 cfg: Optional[InputCheckConfig] = None) -> list[Finding]:
    """The affine's shape (orthogonal axes, voxel sizes, a head's field of view) and the slice thickness against
    the model's grid spacing (``grid_spacing`` mm; ``None`` skips that check)."""
    cfg = cfg or InputCheckConfig()
    lin = np.asarray(affine, float)[:3, :3]
    vox = np.linalg.norm(lin, axis=0)
    unit = lin / vox
    cos = np.abs(unit.T @ unit)[np.triu_indices(3, 1)]
    shear = float(cos.max())
    extent = vox * np.asarray(shape[:3], float)
    out = [
        _finding("affine", shear > cfg.max_shear, shear, f"<= {cfg.max_shear}",
                 f"the header's voxel axes are {np.degrees(np.arccos(min(shear, 1.0))):.0f} degrees apart instead "
                 "of 90: a sheared or broken affine (check the scan's header; resampled images keep their axes "
                 "square)"),
        _finding("voxel_size", not cfg.min_voxel_mm <= vox.min() <= vox.max() <= cfg.max_voxel_mm,
                 vox.max() if vox.max() > cfg.max_voxel_mm else vox.min(),
                 f"{cfg.min_voxel_mm}-{cfg.max_voxel_mm} mm",
                 f"voxels of {' x '.join(f'{v:.2f}' for v in vox)} mm are not a structural brain scan's (or the "
                 "header's voxel sizes are wrong)"),
        _finding("extent", not cfg.min_extent_mm <= extent.min() <= extent.max() <= cfg.max_extent_mm,
                 extent.max() if extent.max() > cfg.max_extent_mm else extent.min(),
                 f"{cfg.min_extent_mm:.0f}-{cfg.max_extent_mm:.0f} mm",
                 f"a field of view of {' x '.join(f'{e:.0f}' for e in extent)} mm does not hold a head"),
    ]
    if grid_spacing:
        ratio = float(vox.max() / grid_spacing)
        out.append(_finding(
            "slice_thickness", ratio > cfg.max_thickness_ratio, ratio, f"<= {cfg.max_thickness_ratio}",
            f"voxels up to {vox.max():.1f} mm thick against the model's {grid_spacing:.2f} mm grid: the model cannot "
            "restore what the thick slices lost (the prediction is an interpolation across them)", "warn"))
    return out


# ------------------------------------------------------------------------------------------------- brain


def brain_depth(data: np.ndarray, mask: np.ndarray, affine: np.ndarray,
                step_mm: float = DEPTH_STEP_MM, *, depths: bool = True) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """``(intensities, depths)`` of the brain's voxels on a grid of about ``step_mm`` (every n-th voxel of the mask's
    bounding box; the depth in mm below the mask's surface): the tissue measures need no finer grid, and a 1 mm
    volume's distance transform costs 8 times as much as a 2 mm one's. ``depths=False``: the intensities only
    (depths None), without the distance transform."""
    m = np.asarray(mask, bool)
    if not m.any():
        return np.zeros(0), np.zeros(0)
    vox = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    step = max(1, int(step_mm // vox.min()))
    idx = np.argwhere(m)
    box = tuple(slice(int(a), int(b) + 1, step) for a, b in zip(idx.min(0), idx.max(0)))
    if not depths:
        return np.asarray(data, np.float64)[box][m[box]], None
    mb = np.pad(m[box], 1)  # outside the box is outside the brain
    depth = ndi.distance_transform_edt(mb, sampling=vox * step)[1:-1, 1:-1, 1:-1]
    mb = mb[1:-1, 1:-1, 1:-1]
    return np.asarray(data, np.float64)[box][mb], depth[mb]


def tissue_depth_ratio(data: np.ndarray, mask: np.ndarray, affine: np.ndarray, sample: int = 50_000,
                       seed: int = 0, *, depths: bool = True) -> tuple[float, dict]:
    """Three k-means intensity classes of the brain and their mean depth (mm below the mask's surface): the ratio of
    the brightest class's depth to the deeper of the other two (> 1 for a T1w: white matter lies deepest), and the
    classes' centres (:mod:`synth7t.inference.ood` measures contrast with them).

    Returns:
        ``(ratio, detail)`` with each class's mean depth (mm), fraction of the brain and centre (in ``data``'s
        units), darkest first. ``depths=False``: the centres only, the same (no distance transform; the ratio NaN,
        the depths and fractions empty).
    """
    from sklearn.cluster import KMeans

    vals, depth = brain_depth(data, mask, affine, depths=depths)
    if vals.size < 1000:
        return float("nan"), {"depth_mm": [], "fraction": [], "centre": []}
    lo, hi = np.percentile(vals, [1, 99])
    x = np.clip((vals - lo) / max(hi - lo, 1e-12), 0, 1)[:, None]
    rng = np.random.default_rng(seed)
    sub = x[rng.choice(len(x), min(len(x), sample), replace=False)]
    km = KMeans(3, n_init=3, random_state=seed).fit(sub)
    centres = np.sort(km.cluster_centers_[:, 0]) * (hi - lo) + lo
    if not depths:
        return float("nan"), {"depth_mm": [], "fraction": [], "centre": [float(c) for c in centres]}
    rank = np.argsort(np.argsort(km.cluster_centers_[:, 0]))  # cluster -> 0 darkest .. 2 brightest
    cls = rank[km.predict(x)]
    dep = np.array([depth[cls == k].mean() if np.any(cls == k) else 0.0 for k in range(3)])
    frac = [float(np.mean(cls == k)) for k in range(3)]
    ratio = float(dep[2] / max(dep[0], dep[1], 1e-9))
    return ratio, {"depth_mm": [round(float(d), 2) for d in dep], "fraction": [round(f, 3) for f in frac],
                   "centre": [float(c) for c in centres]}


def check_brain_volume(mask: np.ndarray, affine: np.ndarray, cfg: Optional[InputCheckConfig] = None) -> Finding:
    """The brain mask's volume against the adult range."""
    cfg = cfg or InputCheckConfig()
    ml = float(np.count_nonzero(mask) * abs(np.linalg.det(np.asarray(affine)[:3, :3])) / 1000.0)
    return _finding("brain_volume", not cfg.min_brain_ml <= ml <= cfg.max_brain_ml, ml,
                    f"{cfg.min_brain_ml:.0f}-{cfg.max_brain_ml:.0f} mL",
                    f"a brain mask of {ml:.0f} mL is outside the adult range: a child's or a non-human head, a failed "
                    "brain extraction or wrong voxel sizes")


def tissue_depth_correlation(data: np.ndarray, mask: np.ndarray, affine: np.ndarray, band_mm: float = 15.0,
                             sample: int = 50_000, seed: int = 0) -> float:
    """Spearman's rank correlation of intensity with depth (mm below the mask's surface) within the outer
    ``band_mm`` of the brain (on :func:`brain_depth`'s grid): positive for a T1w (see the module docstring), negative
    for a T2w or an inverted image, about 0 for noise. NaN for a brain of under 1000 voxels on that grid."""
    from scipy.stats import spearmanr

    vals, depth = brain_depth(data, mask, affine)
    if vals.size < 1000:
        return float("nan")
    band = np.flatnonzero(depth < band_mm)
    if band.size < 1000:
        band = np.arange(depth.size)
    take = np.random.default_rng(seed).choice(band, min(band.size, sample), replace=False)
    r = spearmanr(vals[take], depth[take]).correlation
    return float(r) if np.isfinite(r) else 0.0


def check_tissue_order(data: np.ndarray, mask: np.ndarray, affine: np.ndarray,
                       cfg: Optional[InputCheckConfig] = None) -> Finding:
    """T1w tissue order inside ``mask`` (:func:`tissue_depth_correlation`)."""
    cfg = cfg or InputCheckConfig()
    r = tissue_depth_correlation(data, mask, affine, cfg.tissue_band_mm, cfg.tissue_sample)
    return _finding("tissue_order", not r >= cfg.min_depth_correlation, r, f">= {cfg.min_depth_correlation}",
                    f"the intensity does not rise from the brain's surface inwards (rank correlation {r:.2f}): "
                    "not a T1-weighted brain (T2-weighted, inverted contrast, or noise)")


def check_brain(data: np.ndarray, mask: np.ndarray, affine: np.ndarray,
                cfg: Optional[InputCheckConfig] = None) -> list[Finding]:
    """:func:`check_brain_volume` and :func:`check_tissue_order`."""
    return [check_brain_volume(mask, affine, cfg), check_tissue_order(data, mask, affine, cfg)]


# --------------------------------------------------------------------------------------------- alignment


def alignment_correlation(image: np.ndarray, image_affine: np.ndarray, world_map: np.ndarray,
                          template: np.ndarray, template_affine: np.ndarray, template_mask: np.ndarray,
                          image_mask: Optional[np.ndarray] = None) -> float:
    """Pearson correlation, inside the template's brain, of the template with the image pulled onto its grid
    through ``world_map`` (template world -> image world); with ``image_mask`` only where the image's brain lands
    too (for a template that keeps its skull, such as the authors' 3T template: its skull would count otherwise)."""
    from .ants import resample

    moved = resample(image, image_affine, template.shape, template_affine, world_map=world_map, order=1)
    m = np.asarray(template_mask, bool)
    if image_mask is not None:
        m = m & (resample(np.asarray(image_mask, np.uint8), image_affine, template.shape, template_affine,
                          world_map=world_map, order=0) > 0)
    a, b = template[m].astype(np.float64), moved[m].astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def check_alignment(correlation: float, cfg: Optional[InputCheckConfig] = None) -> Finding:
    cfg = cfg or InputCheckConfig()
    return _finding("alignment", not correlation >= cfg.min_alignment_correlation, correlation,
                    f">= {cfg.min_alignment_correlation}",
                    f"the aligned brain correlates {correlation:.2f} with the template brain: the alignment failed "
                    "(a flipped or broken header, or not a brain)")


# ------------------------------------------------------------------------------------------------ verdict


def enforce(findings: Iterable, what: str, force: bool = False) -> list[Finding]:
    """Raise :class:`InputRefused` for the refused findings (one line each) unless ``force`` (then they become
    ``forced`` and are warned); warn each ``warn`` finding once. ``findings`` may be dicts of a record (a
    ``forced`` one counts as refused again). Returns the findings (outcomes updated)."""
    findings = [f if isinstance(f, Finding) else Finding(**f) for f in findings]
    for f in findings:
        if f.outcome == "forced":  # a record written with force, read again: refused unless forced again
            f.outcome = "refuse"
    refused = [f for f in findings if f.outcome == "refuse"]
    if refused and not force:
        lines = "\n".join(f"  {f.check}: {f.message} ({f.value:g}; limit {f.limit})" for f in refused)
        raise InputRefused(f"{what}: refused before prediction (--force to go on anyway):\n{lines}")
    for f in findings:
        if f.outcome == "refuse":
            f.outcome = "forced"
        if f.outcome in ("warn", "forced"):
            warnings.warn(f"{what}: {f.check}: {f.message} ({f.value:g}; limit {f.limit})"
                          + ("; going on (--force)" if f.outcome == "forced" else ""), InputWarning, stacklevel=2)
    return findings


def summarise(findings: Iterable) -> str:
    """One cell of a batch table: ``ok`` when every check passed, else ``check:outcome`` of the others."""
    bad = [f if isinstance(f, Finding) else Finding(**f) for f in findings]
    bad = [f"{f.check}:{f.outcome}" for f in bad if f.outcome != "ok"]
    return "; ".join(bad) or "ok"
