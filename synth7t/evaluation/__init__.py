"""Scoring images: the paper's metrics, structure Dice against a reference, the multi-view measures.

- :mod:`~synth7t.evaluation.metrics`           PSNR, global SSIM and Dice as the paper defines them
- :mod:`~synth7t.evaluation.regional`          structure segmentation against a reference (amygdala, hippocampus)
- :mod:`~synth7t.evaluation.slicing`           through-plane slicing artefacts, uncertainty against error
- :mod:`~synth7t.evaluation.multiview_design`  the multi-view design study's results, read by chapter 04
"""
