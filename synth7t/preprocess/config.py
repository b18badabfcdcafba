"""Preprocessing settings: :class:`PreprocessConfig` and its presets (``PreprocessConfig.from_preset``), the
registration's stages (:class:`RegistrationConfig`, which the atlas segmentation shares) and the pipeline's error
type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional

from ..configbase import Config

PIPELINE_NAME = "synth7t-preproc"
PIPELINE_VERSION = "1"
MASK_BACKENDS = ("deepbet", "synthstrip", "given")


class PreprocessError(ValueError):
    """An input that cannot be preprocessed; the message names the input and the fix."""


# ------------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class RegistrationConfig(Config):
    """The stages of one ``antsRegistration`` call (:func:`synth7t.preprocess.ants.register`): a linear stage, then
    (when ``syn_iterations`` is not empty) SyN. Preprocessing (3T to 7T, lone 3T to the template) and the atlas
    segmentation (template to image) each hold one as their ``registration``; the defaults are the paper's 3T-to-7T
    registration (ANTsPy's ``"SyN"``: Affine[0.25] 2100x1200x1200x0, then SyN[0.2,3,0] 40x20x0, Mattes 32 bins).

    Attributes:
        transform: the linear stage, ``"Affine"`` or ``"Rigid"``.
        affine_iterations, affine_shrink_factors, affine_smoothing_sigmas: the linear stage, one value per level
            (sigmas in voxels); its Mattes metric samples ``affine_sampling_rate`` of the voxels (``Regular``).
        mi_bins: histogram bins of the Mattes mutual information (both stages).
        syn_iterations, syn_shrink_factors, syn_smoothing_sigmas: the SyN stage per level; empty (or all zero
            iterations) skips SyN.
        syn_gradient_step, syn_flow_sigma, syn_total_sigma: SyN step and update/total field smoothing (voxels).
        syn_metric: ``"mattes"`` or ``"cc"`` (local correlation of radius ``cc_radius`` voxels).
        seed: ANTs' ``--random-seed`` (the affine stage's ``Regular`` sampling jitters its points at random);
            ``None`` lets ANTs seed from the clock, so every run differs.
        spacing: voxel size (mm) of the fixed image during the registration (smoothed and resampled to it, never
            upsampled); ``None`` registers on the fixed image's own grid. The transforms live in world coordinates,
            so the images are still resampled onto their full grids.
    """

    transform: str = "Affine"
    affine_iterations: tuple = (2100, 1200, 1200, 0)
    affine_shrink_factors: tuple = (4, 2, 2, 1)
    affine_smoothing_sigmas: tuple = (3.0, 2.0, 1.0, 0.0)
    affine_sampling_rate: float = 0.2
    mi_bins: int = 32
    syn_iterations: tuple = (40, 20, 0)
    syn_shrink_factors: tuple = (4, 2, 1)
    syn_smoothing_sigmas: tuple = (2.0, 1.0, 0.0)
    syn_gradient_step: float = 0.2
    syn_flow_sigma: float = 3.0
    syn_total_sigma: float = 0.0
    syn_metric: str = "mattes"
    cc_radius: int = 1
    seed: Optional[int] = 1
    spacing: Optional[float] = None

    def __post_init__(self):
        for name in ("affine_iterations", "affine_shrink_factors", "syn_iterations", "syn_shrink_factors"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("affine_smoothing_sigmas", "syn_smoothing_sigmas"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if self.transform not in ("Affine", "Rigid"):
            raise ValueError(f"registration transform must be 'Affine' or 'Rigid', got {self.transform!r}")
        if not (len(self.affine_iterations) == len(self.affine_shrink_factors) == len(self.affine_smoothing_sigmas)
                and len(self.affine_iterations) > 0):
            raise ValueError("registration affine_iterations, affine_shrink_factors and affine_smoothing_sigmas need "
                             f"one value per level, got {self.affine_iterations}, {self.affine_shrink_factors}, "
                             f"{self.affine_smoothing_sigmas}")
        if not len(self.syn_iterations) == len(self.syn_shrink_factors) == len(self.syn_smoothing_sigmas):
            raise ValueError("registration syn_iterations, syn_shrink_factors and syn_smoothing_sigmas need one value "
                             f"per level, got {self.syn_iterations}, {self.syn_shrink_factors}, "
                             f"{self.syn_smoothing_sigmas}")
        if any(f < 1 for f in self.affine_shrink_factors + self.syn_shrink_factors):
            raise ValueError("registration shrink factors must be >= 1")
        if not 0 < self.affine_sampling_rate <= 1:
            raise ValueError(f"registration affine_sampling_rate must be in (0, 1], got {self.affine_sampling_rate}")
        if self.syn_metric not in ("mattes", "cc"):
            raise ValueError(f"registration syn_metric must be 'mattes' or 'cc', got {self.syn_metric!r}")
        if self.spacing is not None and not 0.2 <= float(self.spacing) <= 8:
            raise ValueError(f"registration spacing must be a voxel size in mm (0.2-8) or None, got {self.spacing!r}")

    @property
    def has_syn(self) -> bool:
        """Whether the SyN stage runs (some level has iterations)."""
        return len(self.syn_iterations) > 0 and sum(self.syn_iterations) > 0

    def arguments(self, fixed: str, moving: str) -> list[str]:
        """The stage options of ``antsRegistration`` for two image pointers."""
        levels = lambda v: "x".join(f"{x:g}" for x in v)  # noqa: E731
        args = [
            "--metric", f"Mattes[{fixed},{moving},1,{self.mi_bins},Regular,{self.affine_sampling_rate}]",
            "--transform", f"{self.transform}[0.25]",
            "--convergence", f"[{levels(self.affine_iterations)},1e-6,10]",
            "--smoothing-sigmas", levels(self.affine_smoothing_sigmas) + "vox",
            "--shrink-factors", levels(self.affine_shrink_factors),
        ]
        if self.has_syn:
            metric = (f"Mattes[{fixed},{moving},1,{self.mi_bins}]" if self.syn_metric == "mattes"
                      else f"CC[{fixed},{moving},1,{self.cc_radius}]")
            args += [
                "--metric", metric,
                "--transform", f"SyN[{self.syn_gradient_step},{self.syn_flow_sigma},{self.syn_total_sigma}]",
                "--convergence", f"[{levels(self.syn_iterations)},1e-7,8]",
                "--smoothing-sigmas", levels(self.syn_smoothing_sigmas) + "vox",
                "--shrink-factors", levels(self.syn_shrink_factors),
            ]
        if self.seed is not None:
            args += ["--random-seed", str(int(self.seed))]
        return args


#: Where the registration settings of configs written before they were one nested ``registration`` field live now
#: (:attr:`synth7t.configbase.Config.RENAMED`): old preprocessing records and model cards read back.
PREPROCESS_RENAMED = {
    "aff_iterations": "registration.affine_iterations", "aff_shrink_factors": "registration.affine_shrink_factors",
    "aff_smoothing_sigmas": "registration.affine_smoothing_sigmas",
    "aff_sampling_rate": "registration.affine_sampling_rate", "mi_bins": "registration.mi_bins",
    "registration_seed": "registration.seed", "registration_spacing": "registration.spacing",
    **{f"syn_{k}": f"registration.syn_{k}" for k in ("iterations", "shrink_factors", "smoothing_sigmas",
                                                     "gradient_step", "flow_sigma", "total_sigma")},
}


@dataclass
class PreprocessConfig(Config):
    """All preprocessing settings (flat, nanoGPT style; the registration's stages nested as one
    :class:`RegistrationConfig`). Defaults are the ``paper`` preset; ``PreprocessConfig.from_preset(name,
    **overrides)`` makes a preset, ``PreprocessConfig.from_dict`` reads a record's settings back.

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
        n4_field: how the bias field fitted on the shrunk image reaches the full image: ``"bspline"`` (ANTs: N4
            shrinks the image itself and evaluates its B-spline at every voxel, the paper's) or ``"linear"`` (synth7t
            samples every ``n4_shrink_factor``-th voxel, N4 fits that image as it is and its log field is interpolated
            linearly onto the full grid: the ``lone`` preset; on a 1 mm head half of N4's time is the B-spline's
            evaluation at 10 M voxels, and a field of 4 control points per axis is linear at the scale of 6 mm).
            An image whose sample holds fewer than 1000 brain voxels (a small phantom), or a shrink factor of 1,
            takes ANTs' own field: there is nothing to save and too few voxels for N4's histogram.
        mask_backend: ``deepbet``, ``synthstrip`` or ``given`` (the layout's ``_desc-brain_mask`` files).
        remask_7t: extract the 7T brain again after N4 (the paper's order; a ``given`` mask is used as it is).
        remask_3t: the same for the 3T (off: the paper's 3T was stripped once, by FreeSurfer).
        mask_threshold: probability threshold of the deepbet mask.
        min_brain_ml, max_brain_ml: plausible brain-mask volumes; outside them the input is rejected as
            "not a brain T1w" (a wrong image, a failed extraction).
        registration: the 3T-to-7T registration (:class:`RegistrationConfig`; the paper's by default, on 7T space
            itself: ``spacing`` None). ``quick`` registers against the 7T at 1 mm (``spacing`` 1.0: the 3T's own
            detail at a third of the voxels) with fewer levels and iterations. The lone 3T's alignment to the
            template uses the same stages.
        registration_crop_mm: each brain-extracted image registers on its brain's bounding box plus this margin
            (mm; :func:`synth7t.preprocess.grid.crop_to_brain`), the far background left out: about half the time
            (``benchmarks/bench_speed.py``); the transforms live in world coordinates and still apply to the whole
            image. ``None`` registers the whole fields of view (the authors' code).
        clip_low_percentile, clip_high_percentile: normalisation bounds as brain-voxel percentiles.
        target_spacing: 7T-space voxel size in mm (0.7 in the paper); ``None`` keeps the 7T's own voxels
            (tests and coarse smoke runs).
        grid_inplane: ``(anterior-posterior, left-right)`` axial slice size in voxels (paper grid 288 x 224).
        grid_divisor: both in-plane sizes must be divisible by it (2^5: five U-Net poolings).
        axial_margin: slices kept below the lowest and above the highest brain slice.
        qc_figure: write a QC figure per subject (runtime option, does not change the images).
        threads_per_job: ITK/torch threads per worker process, and ITK threads when subjects run in the calling
            process (runtime option; each record stores the counts really used). Keep 1 for byte-identical
            reruns: with more ITK threads the Mattes mutual information, hence the registration, varies run to
            run, and N4's output depends on the count.
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
    n4_field: str = "bspline"
    # brain extraction
    mask_backend: str = "deepbet"
    remask_7t: bool = True
    remask_3t: bool = False
    mask_threshold: float = 0.5
    min_brain_ml: float = 600.0
    max_brain_ml: float = 3000.0
    # registration (paper: ANTsPy's "SyN" = Affine[0.25] 2100x1200x1200x0 then SyN[0.2,3,0] 40x20x0)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    registration_crop_mm: Optional[float] = 8.0
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

    RUNTIME_FIELDS: ClassVar[tuple] = ("preset", "qc_figure", "threads_per_job")
    RENAMED: ClassVar[dict] = PREPROCESS_RENAMED

    def __post_init__(self):
        for name in ("n4_iterations", "grid_inplane"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        if isinstance(self.registration, Mapping):  # the settings it names over the paper's
            self.registration = RegistrationConfig().replace(**self.registration)
        if not isinstance(self.registration, RegistrationConfig):
            raise ValueError(f"registration must be a RegistrationConfig or a mapping of its fields, got "
                             f"{type(self.registration).__name__}")
        if self.n4_field not in ("bspline", "linear"):
            raise ValueError(f"n4_field must be 'bspline' or 'linear', got {self.n4_field!r}")
        if self.mask_backend not in MASK_BACKENDS:
            raise ValueError(f"mask_backend must be one of {', '.join(MASK_BACKENDS)}, got {self.mask_backend!r}")
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

    def fingerprint_dict(self) -> dict:
        """The settings that change the output images (runtime options left out), with the pipeline version."""
        return {**super().fingerprint_dict(), "pipeline_version": PIPELINE_VERSION}


# Each preset is a set of overrides of the dataclass defaults (which are the paper's settings).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # the paper's saved run parameters clip intensities at percentiles (1, 99) rather than (min, 99)
    "paper-code": {"clip_low_percentile": 1.0},
    "quick": {
        "n4_iterations": (50, 50, 25),        # 3 fitting levels of at most 50/50/25 iterations instead of 4 x 150
        "n4_tolerance": 1e-5,                 # stop earlier
        "n4_shrink_factor": 4,                # as paper (N4 already works on a 4x shrunk image)
        "registration": {
            "affine_iterations": (500, 250, 50),   # affine: 3 levels instead of 4 and far fewer iterations ...
            "affine_shrink_factors": (8, 4, 2),    # ... never at full resolution (the last level is at half)
            "affine_smoothing_sigmas": (3, 2, 1),
            "affine_sampling_rate": 0.1,           # half the sampled voxels per metric evaluation
            "syn_iterations": (30, 10),            # SyN: 2 levels (1/4 and 1/2 resolution) instead of 40x20x0 ...
            "syn_shrink_factors": (4, 2),          # ... the deformation is smooth enough for the 3T's 1 mm detail
            "syn_smoothing_sigmas": (2, 1),
            "spacing": 1.0,                        # against the 7T at 1 mm (the 3T's resolution), ~3x fewer voxels
        },
    },
}
# the lone-3T default of ``synth7t predict``: ``quick`` with N4 on every 6th voxel for 20/20/10 iterations (its field
# interpolated linearly onto the scan's grid, ``n4_field``) and the rigid template alignment on both brains at 2 mm
# (levels at 8, 4 and 2 mm, 100/50/10 iterations).
# benchmarks/lone_settings.py measures both against a scan whose bias field and pose are known: N4 leaves less of the
# field than quick's 50/50/25 iterations (more iterations fit some anatomy into the field), and the pose lands as
# close to the truth as with 500/250/50 iterations (0.23 mm; within 0.29 mm for the scan turned a further 10-15
# degrees about each axis); at 2.5 or 3 mm it lands up to 0.44 mm off
PRESETS["lone"] = {
    **PRESETS["quick"],
    "n4_shrink_factor": 6,
    "n4_iterations": (20, 20, 10),
    "n4_field": "linear",
    "registration": {**PRESETS["quick"]["registration"], "spacing": 2.0, "affine_iterations": (100, 50, 10),
                     "affine_shrink_factors": (4, 2, 1), "affine_smoothing_sigmas": (2, 1, 0)},
}


# the presets are defined after the class they configure; from_preset reads them from here
PreprocessConfig.PRESETS = PRESETS

#: What ``synth7t preprocess --fast`` changes over any preset besides the threads: N4 on a 6x shrunk image (4.2 mm
#: voxels for a 0.7 mm 7T, where the ANTsPy default of 4 gives 1 mm images 4 mm; on a 1 mm scan of known bias field
#: it leaves less of the field than 4, benchmarks/lone_settings.py) and the registration against the 7T at 1 mm, the
#: 3T's own resolution (as the quick preset). Settings given with ``--set`` win.
FAST_SETTINGS: dict[str, Any] = {"n4_shrink_factor": 6, "registration": {"spacing": 1.0}}
