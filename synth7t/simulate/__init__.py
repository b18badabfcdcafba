"""The simulated demo cohort and its checks (nothing on the real-data path imports this package).

- :mod:`~synth7t.simulate.demo`     paired 3T/7T images simulated from the template anatomy
- :mod:`~synth7t.simulate.traits`   the 7T's vessels and local artefacts
- :mod:`~synth7t.simulate.checks`   ground-truth premise checks: does the 7T hold anatomy the 3T lacks?
- :mod:`~synth7t.simulate.measure`  the 3T/7T differences measured on the images against their targets
- :mod:`~synth7t.simulate.lone`     the lone-3T sets of the two downstream studies
- :mod:`~synth7t.simulate.gallery`  bad and unusual inputs made from a demo 3T, and what ``synth7t predict`` does
"""
