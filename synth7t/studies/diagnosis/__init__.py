"""Downstream diagnosis prediction from regional volumes (Gicquel et al., §2.8.4, §3.4 and Figure 6).

The paper segments every image type (3T, U-Net and GAN U-Net synthetic 7T), enters the regional volumes with age
and sex into a multiclass random forest that predicts the clinical diagnosis (CN, MCI or AD; SCD counted as CN),
and reports 10-fold cross-validated accuracy and balanced accuracy over 1000 repetitions per image type, the mean
impurity feature importances of the 3T models, and how much the synthetic types' importances deviate from the
3T's. This package computes each piece, one module per concern:

* :mod:`synth7t.studies.diagnosis.features`: :func:`read_volumes_table` / :func:`validate_volumes`, a table with one row
  per ``key, image_type`` and one column per region in mL (the ``volumes.tsv`` of
  :func:`synth7t.segment.segment_batch`, or an external table from SynthSeg, FastSurfer, ... so that a cohort of
  thousands can be analysed without its images); :func:`volume_features`, regions joined with the participants
  table (age, sex, diagnosis; head-size normalisation or a head-size feature as options), left/right kept or summed,
  diagnoses mapped to classes.
* :mod:`synth7t.studies.diagnosis.crossval`: :func:`cross_validated_scores`, repeated stratified k-fold random forest
  (unweighted, as the paper; balanced class weights as an option),
  per-repeat (pooled out-of-fold) accuracy and balanced accuracy, per-fold scores, mean impurity (and optionally
  permutation) importances, in a :class:`CVResult`.
* :mod:`synth7t.studies.diagnosis.compare`: :func:`compare_image_types`, each image type against the baseline with the
  corrected repeated k-fold t-test; :func:`importance_deviation`, per region, a type's importance minus the
  baseline's (Figure 6C analogue).
* :mod:`synth7t.studies.diagnosis.plots`: :func:`plot_accuracy_distributions`, :func:`plot_importances`, Figure 6A and
  6B/C analogues.

Every public name is importable from :mod:`synth7t.studies.diagnosis` itself.

**Pairing.** Every image type is cross-validated on the same subjects (:func:`volume_features` keeps only keys
present in every type, by default) with the same seed, so repeat ``r`` uses the *same folds* and the same forest
seeds for every type. Differences between types are then paired by repeat and fold, which is what the comparison
test needs; :class:`CVResult` carries a digest of each repeat's folds and :func:`compare_image_types` refuses
results whose folds differ.
"""

from .compare import compare_image_types, importance_deviation, score_table, summary_table
from .crossval import METRICS, CVResult, cached_cross_validated_scores, cross_validated_scores, fingerprint
from .features import (DEMOGRAPHICS, PAPER_CLASSES, TOTAL_COLUMNS, FeatureSet, VolumesTableError,
    combine_hemispheres, participant_of, read_volumes_table, validate_volumes, volume_features)
from .features import PathLike  # noqa: F401  (importable here as before the split; a type alias, not API)
from .plots import plot_accuracy_distributions, plot_importances

__all__ = [
    # features
    "PAPER_CLASSES", "TOTAL_COLUMNS", "DEMOGRAPHICS", "VolumesTableError", "validate_volumes", "read_volumes_table",
    "participant_of", "combine_hemispheres", "FeatureSet", "volume_features",
    # cross-validation
    "METRICS", "CVResult", "cross_validated_scores", "fingerprint", "cached_cross_validated_scores",
    # comparisons
    "compare_image_types", "importance_deviation", "score_table", "summary_table",
    # plots
    "plot_accuracy_distributions", "plot_importances",
]
