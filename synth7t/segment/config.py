"""Segmentation settings: the backends, their configs and the module's constants and error type."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, Mapping, Optional, Union

from ..configbase import Config
from ..preprocess.config import RegistrationConfig
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


#: The atlas backend's template-to-image registration (:attr:`AtlasConfig.registration`): a short affine stage and
#: SyN with the local correlation (``cc``, the usual choice for a T1 template to a T1 image, and the one that uses an
#: image's finer detail; ``mattes`` takes about half the time but on the demo segmented a blurrier 3T as well as the
#: 7T, see :mod:`synth7t.segment`) at 2 mm (the input is smoothed and resampled to it; never upsampled; the labels
#: are still warped onto the input's own grid).
ATLAS_REGISTRATION = RegistrationConfig(
    affine_iterations=(200, 100), affine_shrink_factors=(4, 2), affine_smoothing_sigmas=(2, 1),
    affine_sampling_rate=0.25, syn_iterations=(40, 20, 5), syn_shrink_factors=(4, 2, 1),
    syn_smoothing_sigmas=(2, 1, 0), syn_metric="cc", cc_radius=1, seed=1, spacing=2.0)


@dataclass
class AtlasConfig(Config):
    """Settings of the atlas backend (documented defaults; measured trade-offs in the module docstring).

    Attributes:
        registration: the template-to-image registration (:class:`synth7t.preprocess.config.RegistrationConfig`,
            :data:`ATLAS_REGISTRATION` by default); its ``spacing`` (0.5-8 mm, required) is the voxel size at which
            the input is registered, its ``seed`` ANTs' ``--random-seed`` (``None`` lets ANTs pick one). With a
            seed and one ITK thread the labels are identical run to run; with several threads the order of ITK's
            floating-point sums varies and labels at region borders change (measured: about 1% of the brain voxels).
        label_interpolation: ``"genericLabel"`` (default: ANTs' per-label linear interpolation, smoother borders
            than nearest neighbour, about 0.01 more mean Dice for a few seconds more at 0.7 mm) or
            ``"nearestNeighbor"``.
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

    registration: RegistrationConfig = ATLAS_REGISTRATION
    label_interpolation: str = "genericLabel"
    threads: Optional[int] = None
    fill_holes: bool = True
    parc: bool = False

    RUNTIME_FIELDS: ClassVar[tuple] = ("threads",)
    #: settings written flat before the registration was one nested field (old sidecars read back)
    RENAMED: ClassVar[dict] = {
        "registration_spacing": "registration.spacing", "metric": "registration.syn_metric",
        "random_seed": "registration.seed",
        **{k: f"registration.{k}" for k in (
            "mi_bins", "cc_radius", "affine_iterations", "affine_shrink_factors", "affine_smoothing_sigmas",
            "affine_sampling_rate", "syn_iterations", "syn_shrink_factors", "syn_smoothing_sigmas",
            "syn_gradient_step", "syn_flow_sigma", "syn_total_sigma")}}

    def __post_init__(self):
        if isinstance(self.registration, Mapping):  # the settings it names over ATLAS_REGISTRATION
            self.registration = ATLAS_REGISTRATION.replace(**self.registration)
        if not isinstance(self.registration, RegistrationConfig):
            raise ValueError(f"registration must be a RegistrationConfig or a mapping of its fields, got "
                             f"{type(self.registration).__name__}")
        spacing = self.registration.spacing
        if not (isinstance(spacing, (int, float)) and 0.5 <= spacing <= 8):
            raise ValueError(f"the atlas registration's spacing must be a voxel size in mm between 0.5 and 8, got "
                             f"{spacing!r}")
        if self.label_interpolation not in ("nearestNeighbor", "genericLabel"):
            raise ValueError(f"label_interpolation must be 'nearestNeighbor' or 'genericLabel', got "
                             f"{self.label_interpolation!r}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if not isinstance(self.parc, bool):
            raise ValueError(f"parc must be True or False, got {self.parc!r}")


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
        return want().replace(**config)  # a nested mapping (``registration``) changes only the keys it names
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
