"""synth7t: synthetic 7T-quality T1-weighted brain MRI from 3T.

The library computes; the notebooks under ``notebooks/`` orchestrate. One sub-package per stage of a study, in its
order: :mod:`~synth7t.data` (files, layout, templates), :mod:`~synth7t.simulate` (the demo cohort),
:mod:`~synth7t.runtime` (batches, SLURM), :mod:`~synth7t.preprocess`, :mod:`~synth7t.models`,
:mod:`~synth7t.training`, :mod:`~synth7t.released` (the authors' checkpoints), :mod:`~synth7t.inference`,
:mod:`~synth7t.segment`, :mod:`~synth7t.evaluation`, :mod:`~synth7t.studies` (rating, amygdala, diagnosis, the
paper), :mod:`~synth7t.plots`; around the science, and never imported by it, :mod:`~synth7t.workflow` (profiles,
run stages, the book) and :mod:`~synth7t.cli`. Every module with its one-line summary:
``python -m synth7t.workflow.modulemap`` (the book's API page).
"""

__version__ = "0.1.0"
