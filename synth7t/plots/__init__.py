"""Figures of the book and the notebooks' widgets.

- :mod:`~synth7t.plots.figures`    three-plane views, the cohort's figures, training curves, the slice viewer
- :mod:`~synth7t.plots.multiview`  the multi-view sections' close-ups and uncertainty figures
"""
