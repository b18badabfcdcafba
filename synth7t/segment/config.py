"""Segmentation settings: the backends, their configs and the module's constants and error type."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, Mapping, Optional, Union

from ..configbase import Config
from ..data.templates import APARC_LABELS as _APARC, LABELS

PathLike = Union[str, os.PathLike]

BACKENDS = ("atlas", "synthseg")
#: "2": sidecars carry ``provenance``; label maps with an older sidecar are made again
SIDECAR_VERSION = "2"

#: FreeSurfer label number -> name: the regions both backends report (one table with the demo cohort's ``dseg.tsv``).
FREESURFER_LABELS: dict[int, str] = dict(LABELS)
#: FreeSurfer's cortical parcellation (``aparc``, Desikan-Killiany numbering: 1000s left, 2000s right) -> names
#: (``ctx-lh-superiortemporal`` = 1030): the cortex labels of a ``parc`` segmentation, instead of 3 and 42. The
#: atlas backend has 31 of the 34 regions per hemisphere (:data:`synth7t.data.templates.APARC_NOT_IN_CEREBRA` absent).
APARC_LABELS: dict[int, str] = dict(_APARC)
#: column of :func:`segment_batch`'s ``volumes.tsv`` holding every labelled voxel (tissue and ventricles)
TOTAL_BRAIN = "Total-Brain"

SEGMENTATIONS_FILE = "segmentations.tsv"
VOLUMES_FILE = "volumes.tsv"
#: beside the two tables: which backend, tool, version and settings made the label maps they describe
PROVENANCE_FILE = "provenance.json"


def label_table(parc: bool = False) -> dict[int, str]:
    """The regions a segmentation reports: :data:`FREESURFER_LABELS`, plus :data:`APARC_LABELS` with ``parc``
    (the cortex labels 3 and 42 stay in the table: their volumes sum their hemisphere's parcels)."""
    return {**FREESURFER_LABELS, **APARC_LABELS} if parc else dict(FREESURFER_LABELS)


class SegmentationBackendError(RuntimeError):
    """A segmentation backend that is not installed or that failed; the message says what to do."""


# ------------------------------------------------------------------------------------------------- config


@dataclass
class AtlasConfig(Config):
    """Settings of the atlas backend (flat, documented defaults; measured trade-offs in the module docstring).

    Attributes:
        registration_spacing: voxel size (mm) at which the input is registered (it is smoothed and resampled to
            it; never upsampled). The labels are still warped onto the input's own grid.
        metric: SyN similarity, ``"cc"`` (local correlation of radius ``cc_radius`` voxels, default: the usual
            choice for a T1 template to a T1 image, and the one that uses an image's finer detail) or ``"mattes"``
            (mutual information; about half the time, but on the demo it segmented a blurrier 3T as well as the
            7T, see :mod:`synth7t.segment`).
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
        threads: ITK threads per segmented image in :func:`segment_batch` (default 1: byte-identical labels run
            to run; more threads are faster but vary). ITK reads its thread count once per process, so in the
            calling process this applies only when it is set before the first ANTs call
            (:func:`synth7t.preprocess.set_itk_threads`).
        fill_holes: fill enclosed holes of the brain taken from the non-zero voxels (dark CSF voxels that a
            clipped normalisation set to exactly 0 are still brain).
        parc: divide the cortex into CerebrA's cortical regions (:func:`synth7t.data.templates.load_mni_aparc`),
            numbered as FreeSurfer's ``aparc`` (:data:`APARC_LABELS`): the offline analogue of
            ``mri_synthseg --parc``. CerebrA follows the DKT31 protocol, so the banks of the superior temporal
            sulcus, the frontal pole and the temporal pole are absent (their cortex is in neighbouring regions).
            Cost: the registration is the same; warping 91 labels instead of 29 with ``genericLabel`` took 19 s
            instead of 7 s for a 0.7 mm brain box (218 x 270 x 232, one ITK thread, loaded cores).
    """

    registration_spacing: float = 2.0
    metric: str = "cc"
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
    parc: bool = False

    RUNTIME_FIELDS: ClassVar[tuple] = ("threads",)

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
        if not isinstance(self.parc, bool):
            raise ValueError(f"parc must be True or False, got {self.parc!r}")

    def registration_settings(self):
        """The template-to-image registration stages (:class:`synth7t.preprocess.ants.RegistrationSettings`)."""
        from ..preprocess.ants import RegistrationSettings

        return RegistrationSettings(
            aff_iterations=self.affine_iterations, aff_shrink_factors=self.affine_shrink_factors,
            aff_smoothing_sigmas=self.affine_smoothing_sigmas, aff_sampling_rate=self.affine_sampling_rate,
            mi_bins=self.mi_bins, syn_iterations=self.syn_iterations, syn_shrink_factors=self.syn_shrink_factors,
            syn_smoothing_sigmas=self.syn_smoothing_sigmas, syn_gradient_step=self.syn_gradient_step,
            syn_flow_sigma=self.syn_flow_sigma, syn_total_sigma=self.syn_total_sigma, syn_metric=self.metric,
            cc_radius=self.cc_radius, random_seed=self.random_seed)


@dataclass
class SynthSegConfig(Config):
    """Settings of the ``synthseg`` backend (FreeSurfer's ``mri_synthseg``).

    Attributes:
        v1: pass ``--v1``: SynthSeg 1.0, the version the paper used (default). Checked against the flags that the
            installed ``mri_synthseg --help`` lists; where it is missing, segmenting raises
            :class:`SegmentationBackendError` (never silently another model): set ``v1=False`` to use the
            installed version's own model (SynthSeg 2.0 in FreeSurfer 7.3 and later).
        parc: pass ``--parc``: the cortex is divided into FreeSurfer's ``aparc`` regions (:data:`APARC_LABELS`,
            1000s left, 2000s right) instead of the labels 3 and 42.
        robust: pass ``--robust`` (SynthSeg-robust: slower, better on low-quality or clinical scans). It exists
            only from SynthSeg 2.0, so it needs ``v1=False`` (``mri_synthseg`` refuses ``--v1 --robust``).
        threads: ``--threads`` of ``mri_synthseg``.
    """

    RUNTIME_FIELDS: ClassVar[tuple] = ("threads",)

    v1: bool = True
    parc: bool = False
    robust: bool = False
    threads: int = 1

    def __post_init__(self):
        if int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        for name in ("v1", "parc", "robust"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.v1 and self.robust:
            raise ValueError("robust=True (--robust) needs v1=False (--no-v1): SynthSeg-robust exists only from "
                             "SynthSeg 2.0, and mri_synthseg refuses --v1 with --robust; the paper used SynthSeg 1.0 "
                             "without --robust")


def config_for(backend: str, config) -> Union[AtlasConfig, SynthSegConfig]:
    """The backend's config from ``None`` (defaults), a dict of its fields or a config of the right type."""
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
