"""The authors' released checkpoints, read without running their pickled code, imported as model folders.

- :mod:`~synth7t.released.reader`    a PyTorch checkpoint read with an allow-list, nothing executed
- :mod:`~synth7t.released.importer`  ``synth7t import-model``: their weights, params and templates into a model folder
"""
