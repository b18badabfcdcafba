"""synth7t: synthetic 7T-quality T1-weighted brain MRI from 3T.

The library computes; the notebooks under ``notebooks/`` orchestrate. One module per concern:

- :mod:`synth7t.io`      NIfTI reading and writing with validation
- :mod:`synth7t.layout`  paired 3T/7T dataset discovery, participants table, artefact table, splits
- :mod:`synth7t.demo`    the embedded demo cohort, simulated from real template anatomy
- :mod:`synth7t.viz`     figures (three-plane views)
"""

__version__ = "0.1.0"
